//! The embedded default [`EventStore`]: a directory of append-only JSON-lines
//! logs that many processes on one machine publish into and read from at once,
//! with no server.
//!
//! ```
//! use seed_event::{Event, EventStore, Query, Topic};
//! use store_file::FileStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! let topic = Topic::new("task.completed")?;
//! let payload = seed_event::parse_json_object("payload", r#"{"task_id": "abc"}"#)?;
//! let stored = store.append_owned(Event::new(topic.clone(), "fenrir", payload))?;
//! assert_eq!(store.query(&Query::topic(&topic))?, vec![stored]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - `<dir>/<stem>.jsonl`: one log per topic. The stem is the topic
//!   percent-encoded (every byte outside `[A-Za-z0-9._-]`, and a leading `.`,
//!   becomes `%XX`), so `service/api.health`, `service_api.health` and
//!   `service\api.health` are three files and no topic reaches outside the
//!   directory. An encoding longer than 200 bytes becomes a readable prefix,
//!   `~` and a 128-bit hash; the exact topic is then kept in the sidecar.
//! - `<dir>/<stem>.meta`: an optional JSON sidecar (topic, the sequence number
//!   to continue after, numbers missing between the first and the last kept
//!   line, and numbers of removed events after the last kept line), replaced
//!   atomically. Every writer reads it for each log file it opens.
//! - `<dir>/.consumers/<consumer>/<topic>.json`: durable consumer positions,
//!   one file per consumer and topic, replaced atomically.
//! - `<dir>/.groups/<group>/`: a work group (see [`seed_event::GroupBackend`]):
//!   `state.0.json` and `state.1.json` (its positions, pending events and
//!   counters; each change, under the group's `flock` on `.lock`, writes the
//!   next version in place to the slot that does not hold the newest, synced
//!   as the sync policy says, and readers take the newest slot that parses) and `members/<id>.lock`, each `flock`ed by its live member,
//!   so that whoever holds the group lock sees a dead member (the kernel
//!   released its lock) and delivers its events to the others at once.
//! - `<dir>/.states/<stem>.idx`: the index of the entity states of topic
//!   `state.<type>` (see [Entity states](#entity-states)), and
//!   `<dir>/.states/<stem>.compacted`: the greatest sequence number a
//!   compaction or clear removed from that log.
//! - `<dir>/.format`: the on-disk format version, `1` (see
//!   [Format version](#format-version)).
//! - The first write creates the directory, with mode 0700; files get 0600.
//!   Reads of a missing directory see an empty store and create nothing.
//!
//! # Line format
//!
//! Each line is the event's JSON with the field names and order of the
//! original implementation, with the store's fields placed first:
//! `{"seq":12,"hwm":1776340800123456,"id":…,"topic":…,"payload":…,"source":…,"timestamp":…,"correlation_id":…,"metadata":…}`.
//! `seq` numbers a topic's events from 1 and never restarts, also after a
//! clear or retention (cursors are `seq-0`). `hwm` is the largest timestamp
//! (Unix microseconds) of this line and every earlier one: it never
//! decreases, so `since` bisects on it and then filters `timestamp >= since`,
//! exact even when timestamps are out of order. Every line of a batch but the
//! last carries `"more":true`: readers show a batch only once its last line is
//! there. The store fields come first so that a probe in the middle of a
//! file reads them from the few bytes after a newline, whatever the size of
//! the event.
//!
//! # Appending
//!
//! An append, under a per-topic mutex in the process: encode the events'
//! lines, with store fields that continue the tail this process last saw;
//! take the log's `flock` (via `fs2`, sleeping in the kernel while another
//! process holds it); make sure the picture of the log is current; write
//! every line in one `write`; fdatasync as [`SyncPolicy`] says (and, the first
//! time for a log file, fsync the directory); unlock.
//! Readers never lock: they stop before a line without its newline and
//! before an incomplete batch.
//!
//! A store keeps the logs of at most [`FileStoreConfig::open_writers`]
//! topics open for appending (64 by default), one file descriptor each,
//! and closes the least recently appended-to past that. The next append to
//! a closed topic opens its log by name and makes the full check described
//! below, so closing costs that append a few system calls and nothing else.
//!
//! Making sure takes one `lseek(SEEK_END)` in the common case: if the log's
//! length is what this process left, nobody appended, repaired or replaced
//! it, and the prepared lines go out as they are. If the length changed and
//! the log ends with a whole line (another process appended), the writer
//! takes the new tail's numbers from one small `pread` and rewrites the
//! store fields of its lines. A clear or retention run that replaces a log
//! first lengthens the old one by a tombstone byte, a torn tail that stays
//! for good, so a writer of a replaced log always sees a changed length and
//! a torn tail. Then, and whenever the tail is torn, the writer reads the
//! link count, identity and length with one `statx` (with a NULL path where
//! the kernel allows it, Linux 6.11 and later: `fstat` passes an empty path
//! that is copied and looked up first); if the locked file was replaced
//! (link count 0) it reopens the path and retries; otherwise it cuts off
//! what a killed writer left (a line without its newline, the lines of a
//! batch without its last line, or a tombstone whose replacement never
//! happened), so the next event is never glued to garbage. The `statx` also
//! runs at least every 64th append and on the first append after 10 ms
//! without one: that is what notices a log deleted or renamed over by hand,
//! which changes nothing in the old file.
//!
//! # Reading
//!
//! `after` bisects on `seq`, `since` on `hwm`, last-N reads backwards from
//! the end in blocks, so these touch O(log n + k) bytes. Other filters stream
//! the log in 64 KiB reads; lines without the wanted source's (or correlation
//! id's) exact JSON text are skipped without being parsed. A line that is not an event (bit rot, a hand edit)
//! is logged as a warning with its topic and byte offset and skipped;
//! [`FileStore::verify`] lists them all.
//!
//! # Following
//!
//! A follower waits on inotify: a watch on the directory for logs of its
//! topics created, renamed in or removed, and one on each followed log for
//! appends, so that appends to other topics never wake it, and it reads
//! only the logs inotify saw appended to. All followers of a `FileStore`
//! share one inotify instance (a user may have as few as 128, for all
//! programs): one waiting follower reads it, the others sleep until it
//! records something for them.
//!
//! A follower keeps at most 8 logs open, the most recently read; it opens
//! another by name when it has to read it, and starts after the last
//! sequence number it handled, never at a remembered byte offset, so a log
//! replaced while it was closed (even by a file with the old inode number)
//! is read from the right place. Its watch stays while it is closed:
//! watches take no file descriptors, but each counts against the user's
//! `fs.inotify.max_user_watches` (8,192 on kernels before 5.11, more on
//! later ones with enough memory; for every program of the user). Once a log
//! cannot be watched (a warning says so, once), followers wake on appends to
//! any file of the directory and then compare every followed log's length
//! and modification time with what they read.
//!
//! Where inotify is missing followers poll every
//! [`FileStoreConfig::poll_interval`], listing the directory and comparing
//! the logs each time. With inotify, a follower on a file system not known
//! to send an event for every change (a network or FUSE mount, anything but
//! ext2/3/4, XFS, Btrfs, tmpfs, overlayfs, ZFS, F2FS, ReiserFS and JFS)
//! still does so once a second, so it finds appends and new topics all the
//! same; on the local ones an idle follower waits on inotify alone, without
//! waking. Its wait can be cut short from another thread
//! ([`Follower::interrupter`](seed_event::Follower::interrupter)). A clear or
//! retention run writes the kept lines to a new file and renames it over the
//! log; the follower sees the new inode, reopens it and continues after the
//! last sequence number it returned.
//!
//! # Durability
//!
//! [`SyncPolicy::Never`] (the default, as in the original implementation):
//! an acknowledged event is in the page cache and survives the crash of any
//! process, not a power loss. [`SyncPolicy::Batch`]: every `append_batch` is
//! fdatasync'd before it returns (single appends are not). [`SyncPolicy::Always`]:
//! every append call is fdatasync'd before it returns. Under either, the first
//! synced append to a log file (a new one, or one a clear renamed in) also
//! syncs the events directory, so the log's name survives with its events.
//! Clears and retention always sync the new log and the sidecar before the
//! renames and the directory after them. Unless the policy is `Never`, a
//! new events directory is synced into its parent, and each consumer
//! position is synced with its directory (a commit then costs two syncs).
//!
//! # Clear and retention
//!
//! [`EventStore::clear`] first notes each topic's last sequence number, then
//! rewrites each log under its lock without the events up to that number
//! (and, with `before`, only those older than it): an event appended after
//! the clear began is never removed. The sequence number to continue from is
//! kept in the sidecar, so cursors keep growing. Limits by age and count per
//! topic ([`Retention`]) are applied by [`FileStore::enforce_retention`] and,
//! now and then, by appends. Lines that are not events are kept by these
//! rewrites (a whole clear of a topic removes them too).
//!
//! # Modules
//!
//! Each module imports only from the rows above its own (test code aside):
//!
//! 1. `fsutil` (private files, atomic writes, syncs, the one `flock` helper),
//!    `names`, `digits`, `escape`: nothing from the crate.
//! 2. `civil`, `prefix` (the store fields), `meta` (the sidecar), `version`.
//! 3. `encode` (a line, byte for byte as serde_json writes the event),
//!    `lines` (forward and backward readers, the committed tail), `paths`.
//! 4. `search` (bisection), `decode` (a line back into an event).
//! 5. `writer` (a topic's append side and its lock), `consumers`.
//! 6. `rewrite` (a log rewritten without some lines), `writers` (the topic
//!    writers a store keeps open, least recently used closed first).
//! 7. `retention` (what clear and retention remove), `query`, `watch` (inotify).
//! 8. `follow`.
//! 9. `store` ([`FileStore`] and the [`EventStore`] implementation), `legacy`,
//!    `states` (the state backend) over `state_index` (its file format,
//!    which imports only `fsutil`).
//!
//! # Format version
//!
//! The format described here is version 1. The first write to a directory
//! creates `.format` holding `1` (written under a temporary name and linked
//! into place, so it appears whole or not at all); a directory without it is
//! version 1. Every read, clear, retention run and consumer commit, and each
//! process's first append to each log it opens, refuses a directory marked
//! with another version, or with a mark that is not a version, with an error
//! naming the directory, the version found and this build's; nothing is
//! written then.
//!
//! # Entity states
//!
//! [`FileStore`] is also a [`seed_event::StateBackend`]: the records of
//! entity type `T` are the lines of the log of topic `state.T`, and
//! `.states/<stem>.idx` is an open-addressing hash table on disk (a 128-byte
//! header, 56-byte slots, each with a check word) from entity id to its
//! newest record's version and byte offset, with the log offset it covers,
//! followed by a 32-byte version record per indexed line (version, offset,
//! the entity's record before), which chain each entity's versions.
//! A change is written under the log's lock: the index is brought up to the
//! log's end (caught up from the lines after its covered end, or rebuilt from
//! the whole log when it is missing, unreadable or made for a log file since
//! replaced), the version compared, the line appended, then the slot and the
//! covered end written (version record, slot, header). A writer killed in between leaves lines past the
//! covered end, which readers scan too and the next writer applies. A read
//! takes no lock: a header, a slot and a line (`pread`s), plus the lines past
//! the covered end; a torn slot fails its check and is read again. The table
//! doubles when half full, written beside the old one and renamed over it
//! after the old one was marked stale.
//!
//! Each entity keeps its newest [`FileStoreConfig::state_history`] records:
//! once half of a log's lines are past that, the appending process rewrites
//! it without them ([`seed_event::StateBackend::compact`] does it at once).
//! A clear of a state topic removes old records but keeps each entity's
//! newest. Retention limits do not apply to state topics. History and one
//! past version follow the entity's chain of version records under the
//! log's lock (a `pread` of a record and of its line per version, at most
//! the history limit of them); only a chain that does not hold together
//! (its lines are not the entity's) falls back to a scan of the log. The
//! current state and listings use the table.
//!
//! # Importing the Python layout
//!
//! [`import_legacy`] reads a directory of `<topic>.jsonl` files written by the
//! original implementation into a store (`seed` exposes it as one command);
//! see its documentation for what happens to bad lines and re-runs.
//!
//! # Known limits
//!
//! - A topic's event count ([`TopicStats::events`]) is computed from sequence
//!   numbers, so an unreadable line in the middle still counts.
//! - A query over up to 16 topics keeps their logs open while it streams.
//!   Over more, it holds one 8 KiB block and one event of each topic in
//!   memory and opens a log again (one at a time) for each block it reads,
//!   going on after the last sequence number it read: if a clear or
//!   retention run replaces a log meanwhile, the query returns the events of
//!   the new log it had not reached, not the ones removed. Last-N over
//!   several topics reads them forwards (bounded memory, not bounded time).
//!   Last-N over one topic reads backwards.
//! - Append throughput is bounded by one `flock`, `lseek`, `write` and
//!   unlock per call plus encoding the event; batches amortise all but the
//!   encoding. Processes appending to one topic in turn add one `pread` of
//!   the tail per append, under the lock.
//! - A log deleted or renamed over by hand while a process appends to it is
//!   noticed at its next full check: up to 63 appends, within 10 ms of the
//!   coarse monotonic clock (up to two of its ticks, 20 ms on a kernel with
//!   HZ=100), can land in the old, unlinked file. Use `clear` (or stop the
//!   writers) instead.
//! - Every process writing to one events directory must run a build with the
//!   tombstone: a clear or retention run by a build older than the format
//!   version mark replaces a log without the tombstone byte, which the quick
//!   check relies on. Builds that know the mark refuse directories of other
//!   versions; a mark written while a process already has a log open is seen
//!   by that process at its next clear, retention run, commit or read, and
//!   by its appends once it reopens the log.

mod civil;
mod consumer_lock;
mod consumers;
mod decode;
mod digits;
mod encode;
mod escape;
mod follow;
mod fsutil;
mod groups;
mod legacy;
mod lines;
mod meta;
mod names;
mod paths;
mod prefix;
mod query;
mod retention;
mod rewrite;
mod search;
mod state_index;
mod states;
mod store;
mod version;
mod watch;
mod writer;
mod writers;

pub use legacy::{import_legacy, BadLine, ImportReport};
pub use query::CorruptLine;
pub use seed_event::{Limits, Retention};
pub use store::{
    default_events_dir, FileStore, FileStoreConfig, SyncPolicy, DEFAULT_OPEN_WRITERS,
    RETENTION_CHECK_EVERY,
};
