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
use crate::{decode_line, list_logs};

/// An inotify watch on the events directory.
pub(crate) struct Inotify {
    fd: OwnedFd,
}

/// What a wake-up said.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wake {
    /// Files appeared, were replaced or removed: list the directory again.
    pub rescan: bool,
}

impl Inotify {
    /// A watch on `dir` for appends, new files and renames; `None` where inotify is unavailable.
    pub(crate) fn new(dir: &Path) -> Option<Inotify> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM
            | libc::IN_DELETE;
        // SAFETY: `path` is a valid C string and `fd` an inotify descriptor.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        (wd >= 0).then_some(Inotify { fd })
    }

    /// Waits until something happens in the directory or `timeout` passes.
    pub(crate) fn wait(&self, timeout: Duration) -> io::Result<Wake> {
        let mut wake = self.drain()?;
        if wake.rescan {
            return Ok(wake);
        }
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let more = self.drain()?;
        wake.rescan |= more.rescan;
        Ok(wake)
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
                let mask = field(i + 4);
                let len = field(i + 12) as usize;
                if mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != mask {
                    wake.rescan = true;
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
                }
                None => std::thread::sleep((deadline - now).min(self.settings.poll_interval)),
            }
        }
    }
}
