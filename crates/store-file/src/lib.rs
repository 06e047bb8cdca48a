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
//! - The directory is created with mode 0700, files with 0600.
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
//! there. (The lead's sketch put these fields last; first is better because a
//! probe in the middle of a file then reads them from the few bytes after a
//! newline, whatever the size of the event.)
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
//! A follower keeps each topic's log open with a byte offset, and waits on
//! inotify: a watch on the directory for logs of its topics created, renamed
//! in or removed, and one on each followed log for appends, so that appends
//! to other topics never wake it. All followers of a `FileStore` share one
//! inotify instance (a user may have as few as 128, for all programs): one
//! waiting follower reads it, the others sleep until it records something
//! for them. Where inotify is missing followers poll every
//! [`FileStoreConfig::poll_interval`]; where a log cannot be watched they wake
//! on appends to any file of the directory. A clear or
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
//! position is synced with its directory (a commit then costs two syncs,
//! 0.38–0.44 ms a commit here instead of 0.25).
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
//! - A query over several topics keeps one open file per topic while it
//!   streams; last-N over several topics reads them forwards (bounded memory,
//!   not bounded time). Last-N over one topic reads backwards.
//! - Append throughput is bounded by one `flock`, `lseek`, `write` and
//!   unlock per call plus encoding the event; batches amortise all but the
//!   encoding. Processes appending to one topic in turn add one `pread` of
//!   the tail per append, under the lock.
//! - A log deleted or renamed over by hand while a process appends to it is
//!   noticed at its next full check: up to 63 appends, within 10 ms of the
//!   coarse monotonic clock (up to two of its ticks, 20 ms on a kernel with
//!   HZ=100), can land in the old, unlinked file. Use `clear` (or stop the
//!   writers) instead.
//! - Every process writing to one events directory must run this version or
//!   a later one: a clear or retention run by an earlier version replaces a
//!   log without the tombstone byte, which the quick check relies on.

mod civil;
mod consumers;
mod digits;
mod encode;
mod escape;
mod follow;
mod legacy;
mod lines;
mod meta;
mod names;
mod prefix;
mod search;
mod watch;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use seed_event::{
    apply_limit, merge_by_timestamp, Clear, ConsumerName, Cursor, Error, Event, EventStore,
    EventStream, FollowFrom, Follower, Limit, Query, Result, StoredEvent, Timestamp, Topic,
    TopicPattern, TopicStats,
};

use crate::lines::{inspect_tail, LineReader, RevLines, Tail};
use crate::prefix::{parse_prefix, Prefix};
use crate::search::search;
use crate::writer::{Keep, Paths, TopicWriter};

pub use legacy::{import_legacy, BadLine, ImportReport};
pub use seed_event::{Limits, Retention};

/// When appends reach the disk (not just the page cache) before they return.
///
/// Without a sync an acknowledged event survives the crash of any process but
/// not of the machine (power loss, kernel panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Never fdatasync: the fastest; survives process crashes, not machine crashes (the default,
    /// like the original implementation).
    #[default]
    Never,
    /// fdatasync once per [`EventStore::append_batch`] call; single appends are not synced.
    Batch,
    /// fdatasync every append call (single or batch) before it returns: acknowledged means on disk.
    Always,
}

/// How a [`FileStore`] behaves; `Default` gives no sync, no retention and inotify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStoreConfig {
    /// When appends are synced to disk.
    pub sync: SyncPolicy,
    /// Retention limits, applied exactly by [`FileStore::enforce_retention`]; and
    /// every [`RETENTION_CHECK_EVERY`] appends to a topic, the appending process
    /// applies them once a topic is a tenth past a limit (so that a big log is
    /// not rewritten for a handful of events).
    pub retention: Retention,
    /// Wake followers with inotify (when `false`, or when inotify is unavailable, they poll).
    pub inotify: bool,
    /// How often followers look for new events when they poll.
    pub poll_interval: Duration,
}

impl Default for FileStoreConfig {
    fn default() -> FileStoreConfig {
        FileStoreConfig {
            sync: SyncPolicy::Never,
            retention: Retention::default(),
            inotify: true,
            poll_interval: Duration::from_millis(5),
        }
    }
}

/// How many appends to a topic pass between two retention checks by one process.
pub const RETENTION_CHECK_EVERY: u64 = 1024;

/// A line that is not a readable event, found by [`FileStore::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptLine {
    /// The topic whose log holds it.
    pub topic: Topic,
    /// Its byte offset in the log.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The default events directory: `$SEED_EVENTS_DIR`, else
/// `$XDG_DATA_HOME/seed/events`, else `~/.local/share/seed/events`.
pub fn default_events_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("SEED_EVENTS_DIR") {
        return dir;
    }
    if let Some(data) = non_empty("XDG_DATA_HOME") {
        return data.join("seed").join("events");
    }
    let home = non_empty("HOME").unwrap_or_else(|| PathBuf::from("."));
    home.join(".local").join("share").join("seed").join("events")
}

type WriterSlot = Arc<Mutex<(TopicWriter, u64)>>;

/// The file store: see the [crate documentation](crate).
pub struct FileStore {
    dir: PathBuf,
    config: FileStoreConfig,
    /// Per topic: the writer and the appends since the last retention check.
    writers: Mutex<HashMap<Topic, WriterSlot>>,
    /// The inotify instance the store's followers share, while any is alive.
    watcher: Mutex<std::sync::Weak<watch::Watcher>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FileStore {
    /// Opens (creating it, mode 0700) the events directory `dir` with the default configuration.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::open_with(dir, FileStoreConfig::default())
    }

    /// Opens (creating it, mode 0700) the events directory `dir`.
    pub fn open_with(dir: impl AsRef<Path>, config: FileStoreConfig) -> Result<FileStore> {
        let dir = dir.as_ref().to_path_buf();
        let creating = !dir.exists();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| {
            Error::io(format!("creating the events directory {}", dir.display()), e)
        })?;
        if !dir.is_dir() {
            return Err(Error::invalid(
                "events directory",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if creating && config.sync != SyncPolicy::Never {
            // Synced appends are durable only if the directory they go to is.
            writer::sync_dir(&dir).map_err(|e| {
                Error::io(format!("syncing the directory holding {}", dir.display()), e)
            })?;
        }
        Ok(FileStore {
            dir,
            config,
            writers: Mutex::new(HashMap::new()),
            watcher: Mutex::new(std::sync::Weak::new()),
        })
    }

    /// The events directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &FileStoreConfig {
        &self.config
    }

    fn writer(&self, topic: &Topic) -> WriterSlot {
        let mut writers = lock(&self.writers);
        // Look up before `entry`, which would copy the topic name on every append.
        if let Some(slot) = writers.get(topic) {
            return slot.clone();
        }
        writers
            .entry(topic.clone())
            .or_insert_with(|| {
                Arc::new(Mutex::new((TopicWriter::new(&self.dir, topic.clone()), 0)))
            })
            .clone()
    }

    fn paths(&self, topic: &Topic) -> Paths {
        Paths::new(&self.dir, topic.as_str())
    }

    /// Appends under the topic's lock; `expected` makes it conditional. Returns the first seq.
    fn write(
        &self,
        topic: &Topic,
        events: &[Event],
        expected: Option<Option<Cursor>>,
        sync: bool,
    ) -> Result<u64> {
        let slot = self.writer(topic);
        let mut guard = lock(&slot);
        let (writer, since_check) = &mut *guard;
        writer.prepare(events);
        let first = {
            let mut locked = writer.lock()?;
            if let Some(expected) = expected {
                let actual = locked.last_cursor();
                if actual != expected {
                    return Err(seed_event::conflict(topic, expected, actual));
                }
            }
            locked.append(events, sync)?
        };
        *since_check += events.len() as u64;
        if *since_check >= RETENTION_CHECK_EVERY && !self.config.retention.is_unlimited() {
            *since_check = 0;
            let limits = self.config.retention.limits(topic).clone();
            let due = retention_due(&self.paths(topic), &limits);
            if let Err(e) =
                due.and_then(|due| if due { enforce_limits(writer, &limits) } else { Ok(0) })
            {
                log::warn!("retention of topic {topic} failed: {e}");
            }
        }
        Ok(first)
    }

    /// Applies the configured retention limits to every topic now; returns how many events went.
    pub fn enforce_retention(&self) -> Result<u64> {
        let mut removed = 0;
        for (topic, _) in list_logs(&self.dir)? {
            let limits = self.config.retention.limits(&topic).clone();
            if limits.is_unlimited() {
                continue;
            }
            let slot = self.writer(&topic);
            let mut guard = lock(&slot);
            removed += enforce_limits(&mut guard.0, &limits)?;
        }
        Ok(removed)
    }

    /// Every line of every topic that is not a readable event, with its topic and byte offset.
    pub fn verify(&self) -> Result<Vec<CorruptLine>> {
        let mut out = Vec::new();
        for (topic, path) in list_logs(&self.dir)? {
            let Some((file, tail)) = open_snapshot(&path)? else { continue };
            let mut reader = LineReader::new(0, tail.end);
            while let Some((offset, line)) =
                reader.next_line(&file).map_err(|e| read_err(&path, e))?
            {
                if let Err(reason) = try_decode(&topic, line) {
                    out.push(CorruptLine { topic: topic.clone(), offset, reason });
                }
            }
        }
        Ok(out)
    }

    /// A forward scan of one topic, from the first line that can match.
    fn scan(&self, topic: &Topic, path: &Path, query: &Query) -> Result<Option<TopicScan>> {
        let Some((file, tail)) = open_snapshot(path)? else { return Ok(None) };
        let start = start_offset(&file, &tail, query).map_err(|e| read_err(path, e))?;
        let field = |name: &str, value: &Option<String>| {
            value.as_ref().map(|v| {
                let needle = format!("\"{name}\":{}", serde_json::Value::String(v.clone()));
                memchr::memmem::Finder::new(needle.as_bytes()).into_owned()
            })
        };
        let needles =
            [field("source", &query.source), field("correlation_id", &query.correlation_id)]
                .into_iter()
                .flatten()
                .collect();
        Ok(Some(TopicScan {
            topic: topic.clone(),
            path: path.to_path_buf(),
            file,
            reader: LineReader::new(start, tail.end),
            query: query.clone(),
            needles,
        }))
    }

    /// The last `n` matching events of one topic, read backwards.
    fn last_n(
        &self,
        topic: &Topic,
        path: &Path,
        query: &Query,
        n: usize,
    ) -> Result<Vec<StoredEvent>> {
        let Some((file, tail)) = open_snapshot(path)? else { return Ok(Vec::new()) };
        if n == 0 {
            return Ok(Vec::new());
        }
        let start = start_offset(&file, &tail, query).map_err(|e| read_err(path, e))?;
        let mut rev = RevLines::new(&file, start, tail.end).map_err(|e| read_err(path, e))?;
        let mut out = Vec::new();
        while let Some((offset, line)) = rev.next_line().map_err(|e| read_err(path, e))? {
            if let Some(e) = decode_line(topic, offset, line) {
                if query.matches(e.cursor, &e.event) {
                    out.push(e);
                    if out.len() == n {
                        break;
                    }
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    fn stats(&self, topic: Topic, path: &Path) -> Result<Option<TopicStats>> {
        let Some((file, tail)) = open_snapshot(path)? else { return Ok(None) };
        let mut first = None;
        let mut reader = LineReader::new(0, tail.end);
        while let Some((offset, line)) = reader.next_line(&file).map_err(|e| read_err(path, e))? {
            if let Some(e) = decode_line(&topic, offset, line) {
                first = Some(e);
                break;
            }
        }
        let mut last = None;
        let mut rev = RevLines::new(&file, 0, tail.end).map_err(|e| read_err(path, e))?;
        while let Some((offset, line)) = rev.next_line().map_err(|e| read_err(path, e))? {
            if let Some(e) = decode_line(&topic, offset, line) {
                last = Some(e);
                break;
            }
        }
        let sidecar = meta::read(&self.paths(&topic).meta)?;
        let gaps = match (&sidecar, &last) {
            (Some(m), Some(l)) => m.missing_before(l.cursor.major()),
            _ => 0,
        };
        let events = match (&first, &last) {
            (Some(f), Some(l)) => {
                (l.cursor.major() + 1).saturating_sub(f.cursor.major()).saturating_sub(gaps).max(1)
            }
            _ => 0,
        };
        Ok(Some(TopicStats {
            topic,
            events,
            bytes: tail.end,
            first: first.as_ref().map(|e| e.event.timestamp),
            last: last.as_ref().map(|e| e.event.timestamp),
            last_cursor: tail.last.map(|p| Cursor::new(p.seq, 0)),
        }))
    }

    /// The last sequence number used in a topic (0 for none), read without the lock.
    fn head(&self, topic: &Topic, path: &Path) -> Result<u64> {
        let last = match open_snapshot(path)? {
            Some((_, tail)) => tail.last.map(|p| p.seq),
            None => None,
        };
        match last {
            Some(seq) => Ok(seq),
            None => Ok(meta::read(&self.paths(topic).meta)?.map_or(0, |m| m.seq_base)),
        }
    }
}

/// Whether a topic is far enough past its limits (by a tenth) to be worth rewriting:
/// appends check now and then, and must not rewrite a big log for a few events.
fn retention_due(paths: &Paths, limits: &Limits) -> Result<bool> {
    if limits.is_unlimited() {
        return Ok(false);
    }
    let Some((file, tail)) = open_snapshot(&paths.log)? else { return Ok(false) };
    let Some(last) = tail.last else { return Ok(false) };
    let mut reader = LineReader::new(0, tail.end);
    let mut first = None;
    while let Some((_, line)) = reader.next_line(&file).map_err(|e| read_err(&paths.log, e))? {
        if let (Some(p), Some(ts)) = (parse_prefix(line), event_timestamp(line)) {
            first = Some((p.seq, ts));
            break;
        }
    }
    let Some((first_seq, first_ts)) = first else { return Ok(false) };
    if let Some(max) = limits.max_events {
        let gaps = meta::read(&paths.meta)?.map_or(0, |m| m.missing_before(last.seq));
        let count = (last.seq + 1).saturating_sub(first_seq).saturating_sub(gaps);
        if count > max + (max / 10).max(1) {
            return Ok(true);
        }
    }
    if let Some(age) = limits.max_age {
        let slack = age + age / 10;
        let limit = Timestamp::now().add_micros(-(slack.as_micros().min(i64::MAX as u128) as i64));
        if first_ts < limit.unix_micros() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes what `limits` do not allow from the log of `writer`.
fn enforce_limits(writer: &mut TopicWriter, limits: &Limits) -> Result<u64> {
    let mut locked = writer.lock_strict()?;
    let too_old = limits.max_age.map(|age| {
        Timestamp::now().add_micros(-(age.as_micros().min(i64::MAX as u128) as i64)).unix_micros()
    });
    // With a count limit, find how many readable lines there are first.
    let mut drop_first = 0u64;
    if let Some(max) = limits.max_events {
        let count = locked.count_lines()?;
        drop_first = count.saturating_sub(max);
    }
    if drop_first == 0 && too_old.is_none() {
        return Ok(0);
    }
    let mut seen = 0u64;
    locked.rewrite(|_, line| {
        let Some(_) = parse_prefix(line) else { return Keep::Yes };
        seen += 1;
        if seen <= drop_first {
            return Keep::No(true);
        }
        match too_old {
            Some(limit) => match event_timestamp(line) {
                Some(ts) if ts < limit => Keep::No(true),
                _ => Keep::Yes,
            },
            None => Keep::Yes,
        }
    })
}

/// The timestamp of a line's event, if it is readable.
fn event_timestamp(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    Event::from_json_line(text).ok().map(|e| e.timestamp.unix_micros())
}

fn read_err(path: &Path, e: io::Error) -> Error {
    Error::io(format!("reading {}", path.display()), e)
}

/// Opens a log and finds its committed end; `None` if there is no log.
fn open_snapshot(path: &Path) -> Result<Option<(File, Tail)>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let size = file.metadata().map_err(|e| read_err(path, e))?.len();
    let tail = inspect_tail(&file, size).map_err(|e| read_err(path, e))?;
    Ok(Some((file, tail)))
}

/// The first line that can match the query's `after` and `since`, by bisection.
fn start_offset(file: &File, tail: &Tail, query: &Query) -> io::Result<u64> {
    if query.after.is_none() && query.since.is_none() {
        return Ok(0);
    }
    let after = query.after.map(|c| c.major());
    let since = query.since.map(|t| t.unix_micros());
    let pred = |p: &Prefix| after.is_none_or(|a| p.seq > a) && since.is_none_or(|s| p.hwm >= s);
    search(file, 0, tail.end, tail.end, pred)
}

/// Decodes a log line, or says why it is not an event of `topic`.
fn try_decode(topic: &Topic, line: &[u8]) -> std::result::Result<StoredEvent, String> {
    let Some(prefix) = parse_prefix(line) else {
        let legacy = std::str::from_utf8(line).ok().and_then(|t| Event::from_json_line(t).ok());
        return Err(if legacy.is_some() {
            "an event without store fields, as the original implementation wrote them; \
             import such a directory into a store with `import_legacy` instead of opening it"
                .to_string()
        } else {
            "no store fields (expected a line starting with {\"seq\":N,\"hwm\":T,)".to_string()
        });
    };
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let event = Event::from_json_line(text).map_err(|e| e.to_string())?;
    if event.topic != *topic {
        return Err(format!(
            "the event's topic is {:?}, not {:?}",
            event.topic.as_str(),
            topic.as_str()
        ));
    }
    Ok(StoredEvent { cursor: Cursor::new(prefix.seq, 0), event })
}

/// Decodes a log line; a corrupt one is logged with its topic and offset and gives `None`.
pub(crate) fn decode_line(topic: &Topic, offset: u64, line: &[u8]) -> Option<StoredEvent> {
    match try_decode(topic, line) {
        Ok(e) => Some(e),
        Err(reason) => {
            log::warn!("skipping corrupt line of topic {topic} at byte {offset}: {reason}");
            None
        }
    }
}

/// Every topic log in `dir`, sorted by topic.
pub(crate) fn list_logs(dir: &Path) -> Result<Vec<(Topic, PathBuf)>> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".jsonl") else { continue };
        if stem.starts_with('.') {
            continue;
        }
        let topic = if names::is_hashed(stem) {
            match meta::read(&dir.join(format!("{stem}.meta"))) {
                Ok(Some(m)) => m.topic,
                _ => continue,
            }
        } else {
            match names::decode(stem) {
                Some(t) => t,
                None => continue,
            }
        };
        let Ok(topic) = Topic::new(topic) else { continue };
        if Paths::new(dir, topic.as_str()).log.file_name() != Some(entry.file_name().as_os_str()) {
            continue;
        }
        out.push((topic, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// A forward stream of one topic's matching events.
struct TopicScan {
    topic: Topic,
    path: PathBuf,
    file: File,
    reader: LineReader,
    query: Query,
    /// Texts every matching line contains (the source, the correlation id).
    needles: Vec<memchr::memmem::Finder<'static>>,
}

/// Whether `line` is an event at or after `query`'s `until`, told without
/// building the event. `hwm` bounds the event's time from above, so only a
/// line whose `hwm` reaches `until` is looked at, and then only its top-level
/// `timestamp` is parsed. A line that does not parse is not skipped here: the
/// full decode reports it.
fn past_until(query: &Query, line: &[u8]) -> bool {
    let Some(until) = query.until else { return false };
    match parse_prefix(line) {
        Some(p) if p.hwm >= until.unix_micros() => {}
        _ => return false,
    }
    #[derive(serde::Deserialize)]
    struct TimeOnly {
        timestamp: seed_event::Timestamp,
    }
    serde_json::from_slice::<TimeOnly>(line).is_ok_and(|t| t.timestamp >= until)
}

impl Iterator for TopicScan {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            let (offset, line) = match self.reader.next_line(&self.file) {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => return Some(Err(read_err(&self.path, e))),
            };
            // The store writes events compactly, so a line without the source's
            // (or correlation id's) exact text cannot match: skip it without parsing.
            if self.needles.iter().any(|f| f.find(line).is_none()) {
                continue;
            }
            if past_until(&self.query, line) {
                continue;
            }
            if let Some(e) = decode_line(&self.topic, offset, line) {
                if self.query.matches(e.cursor, &e.event) {
                    return Some(Ok(e));
                }
            }
        }
    }
}

impl EventStore for FileStore {
    fn describe(&self) -> String {
        format!("file store at {}", self.dir.display())
    }

    fn append(&self, event: &Event) -> Result<Cursor> {
        let sync = self.config.sync == SyncPolicy::Always;
        let first = self.write(&event.topic, std::slice::from_ref(event), None, sync)?;
        Ok(Cursor::new(first, 0))
    }

    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        seed_event::check_batch_topic(topic, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sync = self.config.sync != SyncPolicy::Never;
        let first = self.write(topic, events, None, sync)?;
        Ok((first..first + events.len() as u64).map(|seq| Cursor::new(seq, 0)).collect())
    }

    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        let sync = self.config.sync == SyncPolicy::Always;
        let first = self.write(&event.topic, std::slice::from_ref(event), Some(expected), sync)?;
        Ok(Cursor::new(first, 0))
    }

    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>> {
        let path = self.paths(topic).log;
        Ok(open_snapshot(&path)?.and_then(|(_, tail)| tail.last).map(|p| Cursor::new(p.seq, 0)))
    }

    fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        query.validate()?;
        let topics: Vec<(Topic, PathBuf)> = match query.single_topic() {
            Some(t) => {
                let path = self.paths(&t).log;
                vec![(t, path)]
            }
            None => {
                list_logs(&self.dir)?.into_iter().filter(|(t, _)| query.selects_topic(t)).collect()
            }
        };
        if let (Some(Limit::Last(n)), [(topic, path)]) = (query.limit, topics.as_slice()) {
            let events = self.last_n(topic, path, query, n)?;
            return Ok(Box::new(events.into_iter().map(Ok)));
        }
        let mut streams: Vec<EventStream<'_>> = Vec::new();
        for (topic, path) in &topics {
            if let Some(scan) = self.scan(topic, path, query)? {
                streams.push(Box::new(scan));
            }
        }
        apply_limit(merge_by_timestamp(streams), query.limit)
    }

    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64> {
        let path = self.paths(topic).log;
        let Some((file, tail)) = open_snapshot(&path)? else { return Ok(0) };
        let start = search(&file, 0, tail.end, tail.end, |p| p.seq > cursor.major())
            .map_err(|e| read_err(&path, e))?;
        let mut reader = LineReader::new(start, tail.end);
        let mut n = 0;
        while let Some((_, line)) = reader.next_line(&file).map_err(|e| read_err(&path, e))? {
            n += u64::from(parse_prefix(line).is_some());
        }
        Ok(n)
    }

    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>> {
        // Watch first, then look: nothing appended in between is missed.
        let inotify = match self.config.inotify {
            true => watch::Watcher::shared(&self.watcher, &self.dir)
                .map(|w| watch::Watch::new(w, pattern)),
            false => None,
        };
        let mut heads = BTreeMap::new();
        for (topic, path) in list_logs(&self.dir)? {
            if pattern.matches(&topic) {
                let head = self.head(&topic, &path)?;
                heads.insert(topic, head);
            }
        }
        Ok(Box::new(follow::FileFollower::new(
            self.dir.clone(),
            pattern.clone(),
            from.start,
            from.positions,
            heads,
            inotify,
            follow::FollowSettings { poll_interval: self.config.poll_interval },
        )))
    }

    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
        consumers::load(&self.dir, name)
    }

    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()> {
        consumers::commit(&self.dir, name, topic, cursor, self.config.sync != SyncPolicy::Never)
    }

    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        consumers::list(&self.dir)
    }

    fn topics(&self) -> Result<Vec<TopicStats>> {
        let mut out = Vec::new();
        for (topic, path) in list_logs(&self.dir)? {
            if let Some(stats) = self.stats(topic, &path)? {
                out.push(stats);
            }
        }
        Ok(out)
    }

    fn clear(&self, what: &Clear) -> Result<u64> {
        let targets: Vec<(Topic, PathBuf)> = match &what.topic {
            Some(t) => vec![(t.clone(), self.paths(t).log)],
            None => list_logs(&self.dir)?,
        };
        // Only what was there when the clear began goes: note each topic's last sequence number.
        let mut limits = Vec::new();
        for (topic, path) in targets {
            if let Some((_, tail)) = open_snapshot(&path)? {
                if let Some(last) = tail.last {
                    limits.push((topic, last.seq));
                }
            }
        }
        let before = what.before.map(|t| t.unix_micros());
        let mut removed = 0;
        for (topic, limit) in limits {
            let slot = self.writer(&topic);
            let mut guard = lock(&slot);
            let mut locked = guard.0.lock_strict()?;
            removed += locked.rewrite(|_, line| match parse_prefix(line) {
                Some(p) if p.seq <= limit => match before {
                    None => Keep::No(true),
                    Some(b) => match event_timestamp(line) {
                        Some(ts) if ts < b => Keep::No(true),
                        _ => Keep::Yes,
                    },
                },
                Some(_) => Keep::Yes,
                // Unreadable lines go with a whole clear and stay otherwise.
                None => {
                    if before.is_none() {
                        Keep::No(false)
                    } else {
                        Keep::Yes
                    }
                }
            })?;
        }
        Ok(removed)
    }
}
