//! Appending to a topic's log under its lock, repairing what a killed writer left.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use seed_event::{ChangeEvent, Cursor, Error, Event, Result, Topic};

use crate::encode::BodyEncoder;
use crate::fsutil::{lock_exclusive, sync_data, sync_dir, unlock, Durability};
use crate::lines::{inspect_tail, Tail};
use crate::meta::{self, Meta};
use crate::paths::Paths;
use crate::prefix::{encode_prefix, Prefix};

/// The append side of one topic in this process: an open log and what is known of its tail.
/// Whether an append waits until its data is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendSync {
    /// Return once the bytes are written (they survive a process crash).
    None,
    /// fdatasync before returning (and, once per log file, sync its directory).
    Data,
}

pub(crate) struct TopicWriter {
    pub(crate) topic: Topic,
    pub(crate) paths: Paths,
    pub(crate) file: Option<File>,
    /// Device and inode of `file`.
    id: (u64, u64),
    /// The log's length after our last append, if nothing else may have changed it since.
    pub(crate) cached_len: Option<u64>,
    /// Quick checks left before the next full one (see [`TopicWriter::lock`]).
    quick_left: u32,
    /// When the last full check ran, on the coarse monotonic clock, in milliseconds.
    full_checked_ms: u64,
    /// How long after a full check the next append makes one (ms).
    full_check_after_ms: u64,
    /// Appends that took another writer's tail without a full check.
    adopted: u64,
    /// Whether this writer synced the directory since it opened `file` (an
    /// inode number is no test: a log deleted and created again often gets
    /// the old one back), and how many times it synced the directory.
    dir_synced: bool,
    dir_syncs: u64,
    /// The last sequence number ever used in the topic.
    pub(crate) seq: u64,
    /// The sequence number of the last event in the log.
    last_event: Option<u64>,
    /// The running maximum timestamp of the log.
    hwm: i64,
    meta_checked: bool,
    /// Whether the sidecar was read since this log file was opened.
    meta_read: bool,
    /// The lines to write, encoded before the lock is taken with store fields
    /// that continue `guess`.
    buf: Vec<u8>,
    /// The tail (`seq`, `hwm`) the store fields in `buf` continue.
    guess: (u64, i64),
    /// The `hwm` of the last line in `buf`.
    prepared_hwm: i64,
    /// Where each event's body (the line after its store fields) lies in `buf`.
    bodies: Vec<(usize, usize)>,
    /// Where lines are rebuilt when the guess was wrong.
    spare: Vec<u8>,
    /// Encodes the bodies, remembering the last second's text.
    encoder: BodyEncoder,
}

impl TopicWriter {
    /// A writer for `topic` in `dir`; opens nothing yet.
    pub(crate) fn new(dir: &Path, topic: Topic) -> TopicWriter {
        let paths = Paths::new(dir, topic.as_str());
        TopicWriter {
            topic,
            paths,
            file: None,
            id: (0, 0),
            cached_len: None,
            quick_left: 0,
            full_checked_ms: 0,
            full_check_after_ms: FULL_CHECK_AFTER_MS,
            adopted: 0,
            dir_synced: false,
            dir_syncs: 0,
            seq: 0,
            last_event: None,
            hwm: i64::MIN,
            meta_checked: false,
            meta_read: false,
            buf: Vec::new(),
            guess: (0, i64::MIN),
            prepared_hwm: i64::MIN,
            bodies: Vec::new(),
            spare: Vec::new(),
            encoder: BodyEncoder::default(),
        }
    }

    pub(crate) fn io(&self, what: &str, e: io::Error) -> Error {
        Error::io(format!("{what} {}", self.paths.log.display()), e)
    }

    /// The device and inode of the log file this writer last checked.
    pub(crate) fn identity(&self) -> (u64, u64) {
        self.id
    }

    /// Whether the log file is open (a write through a closed writer opens it first).
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Encodes the lines of `events` before the lock is taken, with store
    /// fields that continue the tail this process last saw; [`Locked::append`]
    /// writes them as they are if nobody else appended since, and otherwise
    /// rewrites only the store fields.
    pub(crate) fn prepare<L: Lines + ?Sized>(&mut self, lines: &L) {
        self.guess = (self.seq, self.hwm);
        self.buf.clear();
        self.bodies.clear();
        let (bodies, encoder) = (&mut self.bodies, &mut self.encoder);
        self.prepared_hwm = encode_lines(&mut self.buf, lines, self.guess, |out, i| {
            let start = out.len();
            lines.body(out, i, encoder);
            bodies.push((start, out.len()));
        });
    }

    /// Takes the topic's lock on the file its path names now, with the tail
    /// repaired and known, for an append.
    ///
    /// Under the lock the writer must learn whether anybody else changed the
    /// log since its own last append. Usually one `lseek(SEEK_END)` answers:
    /// if the length is what this writer left, nobody appended, repaired or
    /// replaced it, because a clear or retention run lengthens the old log by
    /// a tombstone byte before it renames the new one over it (see
    /// [`Locked::rewrite`]). If the length changed and the tail is whole,
    /// other writers appended: their tail is taken as it is. What that cannot
    /// see is a log deleted or renamed over by hand, so at least every
    /// [`FULL_CHECK_EVERY`] appends, and for the first append after
    /// [`FULL_CHECK_AFTER_MS`] without one, the writer reads the link count
    /// and identity with `statx` as well.
    pub(crate) fn lock(&mut self) -> Result<Locked<'_>> {
        let now = coarse_now_ms();
        let quick = self.cached_len.is_some()
            && self.quick_left > 0
            && now.wrapping_sub(self.full_checked_ms) < self.full_check_after_ms;
        if quick {
            if let Some(file) = self.file.as_ref() {
                lock_exclusive(file).map_err(|e| self.io("locking", e))?;
                let seen = match end_of(file) {
                    Ok(len) if Some(len) == self.cached_len => Seen::Unchanged,
                    // Somebody else changed the log. If its tail is whole, they
                    // appended (or cut off a torn tail): take the new tail as it
                    // is. A replaced log keeps its tombstone, a torn tail, for
                    // good, and so goes the full way below.
                    Ok(len) => match inspect_tail(file, len) {
                        Ok(tail) if tail.end == len => Seen::Appended(tail),
                        _ => Seen::Unknown,
                    },
                    Err(_) => Seen::Unknown,
                };
                match seen {
                    Seen::Unchanged => {
                        self.quick_left -= 1;
                        return Ok(Locked { w: self });
                    }
                    Seen::Appended(tail) => {
                        self.quick_left -= 1;
                        self.adopted += 1;
                        let mut locked = Locked { w: self };
                        locked.adopt(tail)?;
                        return Ok(locked);
                    }
                    Seen::Unknown => {
                        let _ = unlock(file);
                    }
                }
            }
        }
        self.lock_checked(now)
    }

    /// [`TopicWriter::lock`] with the full check: link count, identity and length.
    pub(crate) fn lock_strict(&mut self) -> Result<Locked<'_>> {
        self.lock_checked(coarse_now_ms())
    }

    fn lock_checked(&mut self, now: u64) -> Result<Locked<'_>> {
        self.quick_left = FULL_CHECK_EVERY - 1;
        self.full_checked_ms = now;
        loop {
            if self.file.is_none() {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&self.paths.log)
                    .map_err(|e| self.io("opening", e))?;
                self.file = Some(file);
                self.dir_synced = false;
                self.cached_len = None;
            }
            let Some(file) = self.file.as_ref() else { continue };
            lock_exclusive(file).map_err(|e| self.io("locking", e))?;
            let stat = match LogStat::of(file) {
                Ok(m) => m,
                Err(e) => {
                    let _ = unlock(file);
                    return Err(self.io("inspecting", e));
                }
            };
            if stat.nlink == 0 {
                // A clear or retention run replaced the log: follow the path to the new one.
                let _ = unlock(file);
                self.file = None;
                continue;
            }
            let id = (stat.dev, stat.ino);
            if id != self.id {
                self.id = id;
                self.cached_len = None;
                self.meta_read = false;
            }
            let mut locked = Locked { w: self };
            if locked.w.cached_len != Some(stat.len) {
                locked.refresh(stat.len)?;
            }
            return Ok(locked);
        }
    }
}

/// What an append writes: for each line its event's time (for the store
/// fields) and its body (the line after them).
pub(crate) trait Lines {
    /// How many lines.
    fn count(&self) -> usize;
    /// The timestamp of line `i`'s event, in microseconds.
    fn micros(&self, i: usize) -> i64;
    /// Appends the body of line `i`, newline included.
    fn body(&self, out: &mut Vec<u8>, i: usize, encoder: &mut BodyEncoder);
}

impl Lines for [Event] {
    fn count(&self) -> usize {
        self.len()
    }

    fn micros(&self, i: usize) -> i64 {
        self[i].timestamp.unix_micros()
    }

    fn body(&self, out: &mut Vec<u8>, i: usize, encoder: &mut BodyEncoder) {
        encoder.encode(out, &self[i]);
    }
}

/// A state change's event, its line written by the change's maker: the
/// body is that line after its `{`.
impl Lines for ChangeEvent {
    fn count(&self) -> usize {
        1
    }

    fn micros(&self, _: usize) -> i64 {
        self.timestamp().unix_micros()
    }

    fn body(&self, out: &mut Vec<u8>, _: usize, _: &mut BodyEncoder) {
        let line = self.line().as_bytes();
        out.extend_from_slice(line.strip_prefix(b"{").unwrap_or(line));
        out.push(b'\n');
    }
}

/// Writes each line of `lines` into `out`: store fields continuing the
/// tail (`seq`, `hwm`), then `body(out, i)` for line `i`; returns the `hwm`
/// of the last line.
fn encode_lines<L: Lines + ?Sized>(
    out: &mut Vec<u8>,
    lines: &L,
    (seq, hwm): (u64, i64),
    mut body: impl FnMut(&mut Vec<u8>, usize),
) -> i64 {
    let n = lines.count();
    let mut hwm = hwm;
    for i in 0..n {
        hwm = hwm.max(lines.micros(i));
        encode_prefix(out, Prefix { seq: seq + 1 + i as u64, hwm, more: i + 1 < n });
        body(out, i);
    }
    hwm
}

/// Appends between two full checks of the locked log at most (see [`TopicWriter::lock`]).
const FULL_CHECK_EVERY: u32 = 64;
/// An append this long (in ms) after the last full check makes a full check.
const FULL_CHECK_AFTER_MS: u64 = 10;

/// The coarse monotonic clock in milliseconds: a read of the vDSO page, no
/// system call, ticking every few milliseconds, which is all the full-check
/// timer needs.
fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        // No clock: behave as if the last full check was long ago.
        return u64::MAX / 2;
    }
    (ts.tv_sec as u64).wrapping_mul(1000).wrapping_add(ts.tv_nsec as u64 / 1_000_000)
}

/// The length of an open file through `lseek(SEEK_END)`, the cheapest way to ask.
/// The file position it moves is not used: appends go through `O_APPEND`, reads through `pread`.
fn end_of(file: &File) -> io::Result<u64> {
    // SAFETY: a plain system call on an open descriptor.
    let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
    u64::try_from(end).map_err(|_| io::Error::last_os_error())
}

/// What the quick check of [`TopicWriter::lock`] learnt of the locked log.
enum Seen {
    /// The length this writer left: nobody else changed it.
    Unchanged,
    /// Another length and a whole tail: other writers appended.
    Appended(Tail),
    /// Anything else: the full check must tell.
    Unknown,
}

/// What the append path needs to know of the locked log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogStat {
    /// Its link count: 0 once a clear or retention run renamed a new log over it.
    nlink: u64,
    /// Its device and inode.
    dev: u64,
    ino: u64,
    /// Its length in bytes.
    len: u64,
}

/// Whether `statx` accepts a NULL path with `AT_EMPTY_PATH` (Linux 6.11 and later).
static STATX_NULL_PATH: AtomicBool = AtomicBool::new(true);

impl LogStat {
    /// Reads the link count, identity and length of an open file. It asks
    /// `statx` with a NULL path where the kernel allows it: `File::metadata`
    /// (like `fstat`) passes an empty path, which the kernel copies and
    /// looks up first. The answer is the same; older kernels fall back to
    /// `metadata`.
    fn of(file: &File) -> io::Result<LogStat> {
        if STATX_NULL_PATH.load(Ordering::Relaxed) {
            match statx_null_path(file) {
                Ok(Some(stat)) => return Ok(stat),
                // EFAULT from kernels before 6.11, ENOSYS or EPERM where
                // statx is missing or filtered, or a file system that leaves
                // a field out: stop trying; `metadata` answers (or reports a
                // real error) from now on.
                Ok(None) | Err(_) => STATX_NULL_PATH.store(false, Ordering::Relaxed),
            }
        }
        LogStat::from_metadata(file)
    }

    /// The same through `File::metadata`.
    fn from_metadata(file: &File) -> io::Result<LogStat> {
        let m = file.metadata()?;
        Ok(LogStat { nlink: m.nlink(), dev: m.dev(), ino: m.ino(), len: m.len() })
    }
}

/// `statx(fd, NULL, AT_EMPTY_PATH)`; `Ok(None)` if it did not fill every field needed.
fn statx_null_path(file: &File) -> io::Result<Option<LogStat>> {
    let want = libc::STATX_NLINK | libc::STATX_INO | libc::STATX_SIZE;
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `file` is an open descriptor, the path may be NULL with
    // AT_EMPTY_PATH (older kernels answer EFAULT), and `buf` is a writable
    // `statx` the kernel fills.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            std::ptr::null(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            want,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised plain data, filled by a successful call.
    let buf = unsafe { buf.assume_init() };
    if buf.stx_mask & want != want {
        return Ok(None);
    }
    Ok(Some(LogStat {
        nlink: u64::from(buf.stx_nlink),
        // As the standard library computes `MetadataExt::dev`.
        dev: libc::makedev(buf.stx_dev_major, buf.stx_dev_minor),
        ino: buf.stx_ino,
        len: buf.stx_size,
    }))
}

/// A topic writer holding the log's exclusive lock; dropping it unlocks.
pub(crate) struct Locked<'a> {
    pub(crate) w: &'a mut TopicWriter,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(f) = &self.w.file {
            let _ = unlock(f);
        }
    }
}

impl Locked<'_> {
    pub(crate) fn file(&self) -> &File {
        // `lock` only hands out a `Locked` with an open file.
        self.w.file.as_ref().unwrap_or_else(|| unreachable!("a locked writer has a file"))
    }

    /// Rereads the tail after another process wrote, cutting off an interrupted append.
    fn refresh(&mut self, len: u64) -> Result<()> {
        let tail =
            inspect_tail(self.file(), len).map_err(|e| self.w.io("reading the tail of", e))?;
        if tail.end < len {
            log::warn!(
                "topic {}: removing {} bytes of an interrupted append at byte {} of {}",
                self.w.topic,
                len - tail.end,
                tail.end,
                self.w.paths.log.display()
            );
            self.file().set_len(tail.end).map_err(|e| self.w.io("repairing", e))?;
        }
        self.adopt(tail)
    }

    /// Takes `tail`, whole, as the log's tail: sequence numbers, high-water mark, length.
    fn adopt(&mut self, tail: Tail) -> Result<()> {
        let w = &mut *self.w;
        // The sidecar says where numbering continues after a clear: read it
        // for every log file this writer opens (a clear may have removed the
        // newest events, whose numbers must not be used again), and when the
        // log holds no event.
        let need_meta = !w.meta_read || tail.last.is_none() || (w.paths.hashed && !w.meta_checked);
        let sidecar = if need_meta { meta::read(&w.paths.meta)? } else { None };
        if w.paths.hashed && !w.meta_checked {
            match &sidecar {
                Some(m) if m.topic != w.topic.as_str() => {
                    return Err(Error::corrupt(
                        w.paths.meta.display().to_string(),
                        format!(
                            "the file name of topic {:?} is taken by topic {:?} (hash collision)",
                            w.topic.as_str(),
                            m.topic
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    let m = Meta { topic: w.topic.to_string(), ..Meta::default() };
                    meta::write(&w.paths.meta, &m, Durability::Full)?;
                }
            }
            w.meta_checked = true;
        }
        if need_meta {
            w.meta_read = true;
        }
        let base = sidecar.map_or(0, |m| m.seq_base);
        // Never below what this writer has used: a log deleted by hand and
        // created anew continues the topic's numbers instead of restarting them.
        w.seq = tail.last.map_or(base, |p| p.seq.max(base)).max(w.seq);
        w.last_event = tail.last.map(|p| p.seq);
        w.hwm = tail.last.map_or(i64::MIN, |p| p.hwm);
        w.cached_len = Some(tail.end);
        Ok(())
    }

    /// The cursor of the last event in the log.
    pub(crate) fn last_cursor(&self) -> Option<Cursor> {
        self.w.last_event.map(|s| Cursor::new(s, 0))
    }

    /// Appends `events`, [prepared](TopicWriter::prepare) just before, in one
    /// write; returns the first sequence number used.
    pub(crate) fn append<L: Lines + ?Sized>(&mut self, lines: &L, sync: AppendSync) -> Result<u64> {
        let w = &mut *self.w;
        let first = w.seq + 1;
        let n = lines.count();
        let mut hwm = w.prepared_hwm;
        if (w.seq, w.hwm) != w.guess {
            // Another writer appended since this process last did: the bodies
            // stand, the store fields are written again.
            w.spare.clear();
            let (buf, bodies) = (&w.buf, &w.bodies);
            hwm = encode_lines(&mut w.spare, lines, (w.seq, w.hwm), |out, i| {
                let (start, end) = bodies[i];
                out.extend_from_slice(&buf[start..end]);
            });
            std::mem::swap(&mut w.buf, &mut w.spare);
        }
        let Some(file) = w.file.as_ref() else {
            return Err(Error::io("appending", io::Error::other("the log is not open")));
        };
        let before = w.cached_len.unwrap_or(0);
        if let Err(e) = (&*file).write_all(&w.buf) {
            // Take back a partial write, so the next event is not glued to it.
            let _ = file.set_len(before);
            w.cached_len = None;
            return Err(Error::io(format!("appending to {}", w.paths.log.display()), e));
        }
        if sync == AppendSync::Data {
            // A synced append is on disk only if the log's name is too: the
            // first synced append to a log file (new, or renamed in by a
            // clear or retention run) also syncs the directory.
            if let Err(e) = sync_data(file) {
                w.cached_len = None;
                return Err(Error::io(
                    format!(
                        "syncing {} (the events were written, not synced)",
                        w.paths.log.display()
                    ),
                    e,
                ));
            }
            if !w.dir_synced {
                if let Err(e) = sync_dir(&w.paths.log) {
                    w.cached_len = None;
                    return Err(Error::io(
                        format!(
                            "syncing the directory of {} (the events were written and synced, \
                             the log's directory entry not)",
                            w.paths.log.display()
                        ),
                        e,
                    ));
                }
                w.dir_synced = true;
                w.dir_syncs += 1;
            }
        }
        w.cached_len = Some(before + w.buf.len() as u64);
        w.seq += n as u64;
        w.last_event = Some(w.seq);
        w.hwm = hwm;
        if w.buf.capacity() > 1 << 20 {
            w.buf = Vec::new();
            w.bodies = Vec::new();
        }
        if w.spare.capacity() > 1 << 20 {
            w.spare = Vec::new();
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::Keep;
    use std::fs;
    use std::path::PathBuf;

    use seed_event::Timestamp;

    /// Two writers of one topic (as two processes would be) take turns with
    /// single events and batches whose timestamps go backwards: each line
    /// written from a stale guess of the tail gets its store fields rewritten,
    /// so seq counts 1, 2, 3, … and hwm is the running maximum, line by line.
    #[test]
    fn store_fields_follow_the_real_tail_when_another_writer_appended() {
        let dir = tempfile::tempdir().unwrap();
        let topic = Topic::new("two.writers").unwrap();
        let mut writers = [
            TopicWriter::new(dir.path(), topic.clone()),
            TopicWriter::new(dir.path(), topic.clone()),
        ];
        for w in &mut writers {
            // Only the count rule for full checks, whatever the machine's speed.
            w.full_check_after_ms = u64::MAX / 4;
        }
        let base = 1_776_340_800_000_000i64;
        let mut expected_ts = Vec::new();
        let mut expected_more = Vec::new();
        for round in 0..12i64 {
            let w = &mut writers[(round % 2) as usize];
            let size = 1 + (round % 3) as usize;
            let events: Vec<Event> = (0..size as i64)
                .map(|i| {
                    // Every third round goes back in time.
                    let t = base + round * 1_000 - if round % 3 == 2 { 5_000 } else { 0 } + i;
                    let mut e = Event::new(topic.clone(), "w", Default::default());
                    e.timestamp = Timestamp::from_unix_micros(t);
                    e
                })
                .collect();
            expected_ts.extend(events.iter().map(|e| e.timestamp.unix_micros()));
            expected_more.extend((0..size).map(|i| i + 1 < size));
            w.prepare(events.as_slice());
            let mut locked = w.lock().unwrap();
            let first = locked.append(events.as_slice(), AppendSync::None).unwrap();
            assert_eq!(first, expected_ts.len() as u64 - size as u64 + 1);
        }
        for w in &writers {
            // Each appended 6 times, the first with a full check, then 5
            // times after the other writer: whole tails, taken as they are.
            assert_eq!(w.adopted, 5, "appends after another writer's took its tail");
        }
        let text = fs::read_to_string(dir.path().join("two.writers.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), expected_ts.len());
        let mut hwm = i64::MIN;
        for (i, line) in lines.iter().enumerate() {
            let p = crate::prefix::parse_prefix(line.as_bytes()).unwrap();
            hwm = hwm.max(expected_ts[i]);
            assert_eq!(
                (p.seq, p.hwm, p.more),
                (i as u64 + 1, hwm, expected_more[i]),
                "line {i}: {line}"
            );
            let e = Event::from_json_line(line).unwrap();
            assert_eq!(e.timestamp.unix_micros(), expected_ts[i], "line {i}");
        }
    }

    fn append_one(w: &mut TopicWriter, topic: &Topic) -> u64 {
        append_one_synced(w, topic, AppendSync::None)
    }

    fn append_one_synced(w: &mut TopicWriter, topic: &Topic, sync: AppendSync) -> u64 {
        let events = [Event::new(topic.clone(), "w", Default::default())];
        w.prepare(events.as_slice());
        let mut locked = w.lock().unwrap();
        locked.append(events.as_slice(), sync).unwrap()
    }

    /// A synced append is durable only with the log's directory entry: the
    /// first synced append to each log file (a new one, or one a clear
    /// renamed in) syncs the directory too; unsynced appends never do.
    #[test]
    fn the_first_synced_append_to_a_log_file_syncs_its_directory() {
        let (_dir, topic, path, mut a) = one_writer("sync.dir");
        append_one(&mut a, &topic);
        assert_eq!(a.dir_syncs, 0, "unsynced appends leave the directory alone");
        append_one_synced(&mut a, &topic, AppendSync::Data);
        assert_eq!(a.dir_syncs, 1);
        append_one_synced(&mut a, &topic, AppendSync::Data);
        append_one_synced(&mut a, &topic, AppendSync::Data);
        assert_eq!(a.dir_syncs, 1, "once per log file");
        a.lock_strict().unwrap().rewrite(|_, _| Keep::No(true)).unwrap();
        assert_eq!(append_one_synced(&mut a, &topic, AppendSync::Data), 5);
        assert_eq!(a.dir_syncs, 2, "the log a clear renamed in is a new file");
        // Deleted by hand and created again: often with the same inode
        // number, still a new directory entry to sync.
        fs::remove_file(&path).unwrap();
        while !path.exists() {
            append_one_synced(&mut a, &topic, AppendSync::Data);
        }
        assert_eq!(a.dir_syncs, 3, "the log created after a deletion by hand");
    }

    /// A fresh directory with one writer of `topic`, and the log's path.
    fn one_writer(topic: &str) -> (tempfile::TempDir, Topic, PathBuf, TopicWriter) {
        let dir = tempfile::tempdir().unwrap();
        let t = Topic::new(topic).unwrap();
        let path = dir.path().join(format!("{topic}.jsonl"));
        let w = TopicWriter::new(dir.path(), t.clone());
        (dir, t, path, w)
    }

    fn seqs_in(path: &Path) -> Vec<u64> {
        let text = fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| crate::prefix::parse_prefix(l.as_bytes()))
            .map(|p| p.seq)
            .collect()
    }

    /// A writer whose appends pass the quick (length only) check notices a
    /// log that another writer replaced, by the tombstone byte the replacer
    /// put on the old log, and appends to the new one: nothing is lost.
    #[test]
    fn the_quick_check_sees_a_log_replaced_by_a_clear() {
        let dir = tempfile::tempdir().unwrap();
        let topic = Topic::new("quick.clear").unwrap();
        let mut a = TopicWriter::new(dir.path(), topic.clone());
        let mut b = TopicWriter::new(dir.path(), topic.clone());
        for _ in 0..3 {
            append_one(&mut a, &topic);
        }
        assert!(a.quick_left < FULL_CHECK_EVERY - 1, "the later appends took the quick path");
        let removed = b.lock_strict().unwrap().rewrite(|_, _| Keep::No(true)).unwrap();
        assert_eq!(removed, 3);
        let left = a.quick_left;
        assert_eq!(append_one(&mut a, &topic), 4);
        assert_eq!(a.quick_left, FULL_CHECK_EVERY - 1, "the changed length led to a full check");
        assert_ne!(left, a.quick_left);
        assert_eq!(seqs_in(&dir.path().join("quick.clear.jsonl")), vec![4]);
    }

    /// A replacer that dies between the tombstone and the rename leaves a
    /// torn byte on the live log: the next append cuts it off and nothing
    /// is glued to it.
    #[test]
    fn a_tombstone_left_on_the_live_log_is_cut_off() {
        let (_dir, topic, path, mut a) = one_writer("quick.tombstone");
        append_one(&mut a, &topic);
        append_one(&mut a, &topic);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len + 1).unwrap();
        assert_eq!(append_one(&mut a, &topic), 3);
        let text = fs::read(&path).unwrap();
        assert!(!text.contains(&0), "the tombstone byte is gone");
        assert_eq!(seqs_in(&path), vec![1, 2, 3]);
    }

    /// A log deleted by hand is noticed by the next full check: after at most
    /// [`FULL_CHECK_EVERY`] appends, or at once after a pause of
    /// [`FULL_CHECK_AFTER_MS`].
    #[test]
    fn a_log_deleted_by_hand_is_noticed_by_the_next_full_check() {
        let (_dir, topic, path, mut a) = one_writer("quick.deleted");
        append_one(&mut a, &topic);
        fs::remove_file(&path).unwrap();
        let mut n = 0;
        while !path.exists() {
            append_one(&mut a, &topic);
            n += 1;
            assert!(n <= FULL_CHECK_EVERY, "still appending to the deleted log after {n} appends");
        }
        let seqs = seqs_in(&path);
        assert_eq!(seqs.len(), 1, "the append after the full check went to a new log");
        assert_eq!(seqs[0], n as u64 + 1, "and continued the topic's sequence numbers");

        fs::remove_file(&path).unwrap();
        let start = coarse_now_ms();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while coarse_now_ms().wrapping_sub(start) <= FULL_CHECK_AFTER_MS {
            assert!(std::time::Instant::now() < deadline, "the coarse clock did not move");
            std::thread::yield_now();
        }
        append_one(&mut a, &topic);
        assert!(path.exists(), "the first append after a pause checks fully");
    }

    /// The fast `statx` and `File::metadata` agree on a live log, a grown
    /// one, and one a clear replaced (link count 0), on whichever path this
    /// kernel takes.
    #[test]
    fn log_stat_matches_metadata_and_sees_a_replaced_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut file = OpenOptions::new().append(true).create(true).open(&path).unwrap();
        let check = |file: &File, nlink: u64, len: u64| {
            let fast = LogStat::of(file).unwrap();
            assert_eq!(fast, LogStat::from_metadata(file).unwrap());
            assert_eq!((fast.nlink, fast.len), (nlink, len));
            if let Ok(Some(direct)) = statx_null_path(file) {
                assert_eq!(direct, fast);
            }
        };
        check(&file, 1, 0);
        file.write_all(b"{\"seq\":1}\n").unwrap();
        check(&file, 1, 10);
        let other = dir.path().join("new.jsonl");
        fs::write(&other, b"x\n").unwrap();
        fs::rename(&other, &path).unwrap();
        check(&file, 0, 10);
        let new = File::open(&path).unwrap();
        check(&new, 1, 2);
        assert_ne!(LogStat::of(&new).unwrap().ino, LogStat::of(&file).unwrap().ino);
    }
}
