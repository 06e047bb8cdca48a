//! Following topics: tail their logs, woken by inotify (or by polling where it is missing).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use seed_event::{
    Cursor, Error, Follower, Result, Start, StoredEvent, Timestamp, Topic, TopicPattern,
};

use crate::format::{inspect_tail, parse_prefix, search, LineReader};
use crate::{decode_line, list_logs, names};

/// Changes to the directory's names (logs created, renamed in, removed).
const NAMES: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE;
/// Changes to a file's content.
const CONTENT: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;

/// Inotify watches for one follower: the events directory for changes to its
/// names, and each followed log for appends. Appends to other topics' logs do
/// not wake the follower. Where a log cannot be watched (the per-user watch
/// limit), the directory watch takes appends to every file instead.
pub(crate) struct Inotify {
    fd: OwnedFd,
    dir: CString,
    /// The directory's watch descriptor.
    dir_wd: i32,
    /// Whether the directory watch also reports appends (a log could not be watched).
    dir_content: std::cell::Cell<bool>,
    /// The topics the follower follows: only their logs' names matter.
    pattern: TopicPattern,
}

/// What a wake-up said.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wake {
    /// Logs appeared, were replaced or removed: list the directory again.
    pub rescan: bool,
    /// A watched log was appended to (or, where logs are not watched, any file was).
    pub appended: bool,
}

impl Wake {
    fn any(self) -> bool {
        self.rescan || self.appended
    }
}

impl Inotify {
    /// A watch on `dir` for changes to the names of logs of `pattern`'s
    /// topics; `None` where inotify is unavailable.
    pub(crate) fn new(dir: &Path, pattern: &TopicPattern) -> Option<Inotify> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: `dir` is a valid C string and `fd` an inotify descriptor.
        let dir_wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), NAMES) };
        (dir_wd >= 0).then(|| Inotify {
            fd,
            dir,
            dir_wd,
            dir_content: false.into(),
            pattern: pattern.clone(),
        })
    }

    /// Watches the log at `path` for appends; call it before reading the log,
    /// so that no append after the read goes unnoticed.
    pub(crate) fn watch_log(&self, path: &Path) {
        if self.dir_content.get() {
            return;
        }
        let wd = CString::new(path.as_os_str().as_bytes()).ok().map_or(-1, |p| {
            // SAFETY: `p` is a valid C string and `fd` an inotify descriptor.
            unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), p.as_ptr(), CONTENT) }
        });
        if wd >= 0 {
            return;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            // Removed in between: the directory watch reports it.
            return;
        }
        log::warn!(
            "cannot watch {} ({e}); waking on appends to any file of the directory instead",
            path.display()
        );
        // SAFETY: as in `new`; the same watch, with a wider mask.
        let wd = unsafe {
            libc::inotify_add_watch(self.fd.as_raw_fd(), self.dir.as_ptr(), NAMES | CONTENT)
        };
        if wd >= 0 {
            self.dir_content.set(true);
        }
    }

    /// Waits until something the follower cares for happens or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<Wake> {
        let deadline = Instant::now() + timeout;
        loop {
            let wake = self.drain()?;
            let now = Instant::now();
            if wake.any() || now >= deadline {
                return Ok(wake);
            }
            let mut pfd =
                libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = (deadline - now).as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    /// Whether the file `name` may be the log of a followed topic: not a
    /// sidecar, a temporary file, `.consumers` or another topic's log (a
    /// hashed name says no topic, so it may be).
    fn may_follow(&self, name: &[u8]) -> bool {
        let Some(stem) = std::str::from_utf8(name).ok().and_then(|n| n.strip_suffix(".jsonl"))
        else {
            return false;
        };
        if stem.starts_with('.') {
            return false;
        }
        if names::is_hashed(stem) {
            return true;
        }
        names::decode(stem)
            .and_then(|t| Topic::new(t).ok())
            .is_some_and(|t| self.pattern.matches(&t))
    }

    /// Reads every queued event.
    fn drain(&self) -> io::Result<Wake> {
        let mut wake = Wake::default();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(wake),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let n = n as usize;
            if n == 0 {
                return Ok(wake);
            }
            // struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[]; }
            let mut i = 0;
            while i + 16 <= n {
                let field = |at: usize| {
                    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
                };
                let (wd, mask, len) = (field(i) as i32, field(i + 4), field(i + 12) as usize);
                let name = buf.get(i + 16..(i + 16 + len).min(n)).unwrap_or_default();
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    // Events were lost: look at everything.
                    wake.rescan = true;
                    wake.appended = true;
                } else if wd == self.dir_wd {
                    wake.rescan |= mask & NAMES != 0 && self.may_follow(name);
                    wake.appended |= mask & CONTENT != 0 && self.dir_content.get();
                } else {
                    wake.appended |= mask & CONTENT != 0;
                }
                i += 16 + len;
            }
        }
    }
}

/// One followed topic's open log.
struct Tailer {
    path: PathBuf,
    file: File,
    id: (u64, u64),
    reader: LineReader,
}

/// Settings a follower takes from its store.
#[derive(Debug, Clone)]
pub(crate) struct FollowSettings {
    /// How often to look when there is no inotify.
    pub poll_interval: Duration,
}

/// A [`Follower`] of the file store.
pub(crate) struct FileFollower {
    dir: PathBuf,
    pattern: TopicPattern,
    /// The last sequence number handled per topic.
    positions: BTreeMap<Topic, u64>,
    /// For [`Start::Since`]: the time, and each topic's last sequence number when following began.
    since: Option<(Timestamp, BTreeMap<Topic, u64>)>,
    open: BTreeMap<Topic, Tailer>,
    inotify: Option<Inotify>,
    rescan: bool,
    settings: FollowSettings,
    /// Which topic is read first next time.
    turn: usize,
    /// How many times inotify woke the follower.
    wakes: u64,
}

impl FileFollower {
    /// Starts following; `heads` are the matching topics' last sequence numbers now.
    pub(crate) fn new(
        dir: PathBuf,
        pattern: TopicPattern,
        start: Start,
        positions: BTreeMap<Topic, Cursor>,
        heads: BTreeMap<Topic, u64>,
        inotify: Option<Inotify>,
        settings: FollowSettings,
    ) -> FileFollower {
        // After a cursor (s, m): every event with a greater cursor, i.e. sequence > s.
        let mut positions: BTreeMap<Topic, u64> =
            positions.into_iter().map(|(t, c)| (t, c.major())).collect();
        if start == Start::New {
            for (topic, head) in &heads {
                positions.entry(topic.clone()).or_insert(*head);
            }
        }
        let since = match start {
            Start::Since(t) => Some((t, heads)),
            _ => None,
        };
        FileFollower {
            dir,
            pattern,
            positions,
            since,
            open: BTreeMap::new(),
            inotify,
            rescan: true,
            settings,
            turn: 0,
            wakes: 0,
        }
    }

    /// Whether a line of `topic` at `seq` with `hwm` may hold a wanted event (monotone along the log).
    fn wanted(&self, topic: &Topic) -> impl Fn(u64, i64) -> bool {
        let pos = self.positions.get(topic).copied().unwrap_or(0);
        let since = self.since.as_ref().map(|(t, heads)| {
            (t.unix_micros(), heads.get(topic).copied().unwrap_or(0), heads.contains_key(topic))
        });
        move |seq, hwm| {
            seq > pos && since.is_none_or(|(t, head, known)| !known || seq > head || hwm >= t)
        }
    }

    /// Opens the log of `topic` at `path`, at the first line it may want.
    fn open_log(&self, topic: &Topic, path: &Path) -> Result<Option<Tailer>> {
        // Watch first, then open: an append after the watch wakes the follower.
        if let Some(inotify) = &self.inotify {
            inotify.watch_log(path);
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let stat =
            file.metadata().map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
        let size = stat.len();
        let tail = inspect_tail(&file, size)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let wanted = self.wanted(topic);
        let start = search(&file, 0, tail.end, tail.end, |p| wanted(p.seq, p.hwm))
            .map_err(|e| Error::io(format!("searching {}", path.display()), e))?;
        Ok(Some(Tailer {
            path: path.to_path_buf(),
            file,
            id: (stat.dev(), stat.ino()),
            reader: LineReader::new(start, size),
        }))
    }

    /// Lists the directory: opens new matching topics, reopens replaced logs.
    fn rescan(&mut self) -> Result<()> {
        let logs = list_logs(&self.dir)?;
        for (topic, path) in logs {
            if !self.pattern.matches(&topic) {
                continue;
            }
            let replaced = match self.open.get(&topic) {
                None => true,
                Some(t) => match std::fs::metadata(&t.path) {
                    Ok(m) => (m.dev(), m.ino()) != t.id,
                    Err(_) => false,
                },
            };
            if replaced {
                match self.open_log(&topic, &path)? {
                    Some(t) => {
                        self.open.insert(topic, t);
                    }
                    None => {
                        self.open.remove(&topic);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what is complete in every open log, up to `max` events, starting
    /// one topic further each call so that a busy topic cannot starve the rest.
    fn read_available(&mut self, max: usize, out: &mut Vec<StoredEvent>) -> Result<()> {
        let mut topics: Vec<Topic> = self.open.keys().cloned().collect();
        if !topics.is_empty() {
            self.turn = (self.turn + 1) % topics.len();
            topics.rotate_left(self.turn);
        }
        for topic in topics {
            if out.len() >= max {
                break;
            }
            self.read_topic(&topic, max, out)?;
        }
        Ok(())
    }

    fn read_topic(&mut self, topic: &Topic, max: usize, out: &mut Vec<StoredEvent>) -> Result<()> {
        let wanted = self.wanted(topic);
        // For `Start::Since`: events up to the head must have `timestamp >= since`.
        let floor = match &self.since {
            Some((t, heads)) => heads.get(topic).map(|h| (*h, t.unix_micros())),
            None => None,
        };
        let Some(tailer) = self.open.get_mut(topic) else { return Ok(()) };
        let io_err = |e: io::Error| Error::io(format!("following {}", tailer.path.display()), e);
        let size = tailer.file.metadata().map_err(io_err)?.len();
        // Read only up to the end of the last complete append: bytes past it
        // (a torn line, a batch without its last line) may be cut off by the
        // next writer and their offsets written again, and a half line read
        // before the cut would be glued to what comes after it.
        let committed = inspect_tail(&tailer.file, size).map_err(io_err)?.end;
        tailer.reader.set_limit(committed);
        // Lines of a batch whose last line is not there yet are held back.
        let mut pending: Vec<(u64, u64, Option<StoredEvent>)> = Vec::new();
        let mut last_seq = None;
        let mut resume = None;
        while let Some((off, line)) = tailer.reader.next_line(&tailer.file).map_err(io_err)? {
            let Some(prefix) = parse_prefix(line) else {
                // A corrupt line: reported and passed over (it holds no position).
                let _ = decode_line(topic, off, line);
                continue;
            };
            let event =
                if wanted(prefix.seq, prefix.hwm) { decode_line(topic, off, line) } else { None };
            pending.push((off, prefix.seq, event));
            if prefix.more {
                continue;
            }
            for (off, seq, event) in pending.drain(..) {
                if out.len() >= max {
                    resume.get_or_insert(off);
                    continue;
                }
                if resume.is_some() {
                    continue;
                }
                last_seq = Some(seq);
                if let Some(e) = event {
                    let ts = e.event.timestamp.unix_micros();
                    if floor.is_none_or(|(head, since)| seq > head || ts >= since) {
                        out.push(e);
                    }
                }
            }
            if resume.is_some() || out.len() >= max {
                break;
            }
        }
        // Continue at the first line not handled (the start of a held-back
        // batch, or where `max` stopped), rereading from the file next time.
        let next = resume.or(pending.first().map(|p| p.0)).unwrap_or(tailer.reader.pos());
        tailer.reader.rewind(next);
        if let Some(seq) = last_seq {
            let pos = self.positions.entry(topic.clone()).or_insert(0);
            *pos = (*pos).max(seq);
        }
        Ok(())
    }
}

impl Follower for FileFollower {
    fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<StoredEvent>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            if self.rescan || self.inotify.is_none() {
                self.rescan()?;
                self.rescan = false;
            }
            self.read_available(max, &mut out)?;
            if !out.is_empty() || max == 0 {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            match &self.inotify {
                Some(inotify) => {
                    let wake = inotify
                        .wait(deadline - now)
                        .map_err(|e| Error::io(format!("waiting on {}", self.dir.display()), e))?;
                    self.rescan |= wake.rescan;
                    self.wakes += u64::from(wake.any());
                }
                None => std::thread::sleep((deadline - now).min(self.settings.poll_interval)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use seed_event::{Event, EventStore, JsonObject};

    use crate::FileStore;

    /// A follower of `topic` from its next event, as `FileStore::follow` makes it.
    fn follower(store: &FileStore, topic: &Topic) -> FileFollower {
        let inotify = Inotify::new(store.dir(), &TopicPattern::from(topic.clone()));
        assert!(inotify.is_some(), "these tests need inotify");
        let head = store.last_cursor(topic).unwrap().map_or(0, |c| c.major());
        FileFollower::new(
            store.dir().to_path_buf(),
            TopicPattern::from(topic.clone()),
            Start::New,
            BTreeMap::new(),
            BTreeMap::from([(topic.clone(), head)]),
            inotify,
            FollowSettings { poll_interval: Duration::from_millis(50) },
        )
    }

    /// What the follower's inotify has queued now (appends are queued as they return).
    fn queued(f: &FileFollower) -> Wake {
        f.inotify.as_ref().unwrap().wait(Duration::ZERO).unwrap()
    }

    /// Appends to other topics' logs, their sidecars and a clear of another
    /// topic do not wake a follower; an append to its own topic does, and a
    /// clear of it (a log renamed in) makes it read the directory again and
    /// watch the new log.
    #[test]
    fn only_the_followed_logs_wake_a_follower() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let (a, b) = (Topic::new("wake.a").unwrap(), Topic::new("wake.b").unwrap());
        let event = |t: &Topic| Event::new(t.clone(), "test", JsonObject::new());
        store.append(&event(&a)).unwrap();
        store.append(&event(&b)).unwrap();
        let mut f = follower(&store, &a);
        assert!(f.next_batch(10, Duration::ZERO).unwrap().is_empty());

        for _ in 0..200 {
            store.append(&event(&b)).unwrap();
        }
        store.clear(&seed_event::Clear { topic: Some(b.clone()), before: None }).unwrap();
        store.append(&event(&b)).unwrap();
        assert!(!queued(&f).any(), "woken by another topic");
        assert!(f.next_batch(10, Duration::from_millis(50)).unwrap().is_empty());
        assert_eq!(f.wakes, 0);

        let sent = event(&a);
        store.append(&sent).unwrap();
        assert!(queued(&f).appended, "an append to the followed log is seen");
        let got = f.next_batch(10, Duration::from_secs(5)).unwrap();
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![sent.id]);

        // A clear of the followed topic renames a new log in.
        store.clear(&seed_event::Clear { topic: Some(a.clone()), before: None }).unwrap();
        assert!(queued(&f).rescan, "the rename of the followed log is seen");
        f.rescan = true; // `queued` took the signal from the follower
        let after = event(&a);
        store.append(&after).unwrap();
        let got = f.next_batch(10, Duration::from_secs(5)).unwrap();
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![after.id]);
        let _ = queued(&f);
        store.append(&event(&a)).unwrap();
        assert!(queued(&f).appended, "the new log is watched");
        store.append(&event(&b)).unwrap();
        assert!(!queued(&f).any(), "and another topic's still is not");
    }
}
