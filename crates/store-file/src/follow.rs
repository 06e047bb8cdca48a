//! Following topics: tail their logs, woken by inotify (or by polling where it is missing).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seed_event::{
    Cursor, Error, FollowFrom, Follower, Interrupt, Result, Start, StoredEvent, Timestamp, Topic,
    TopicPattern,
};

use crate::decode::decode_line;
use crate::lines::{inspect_tail, open_snapshot, LineReader};
use crate::meta;
use crate::paths::{list_logs, Paths};
use crate::prefix::parse_prefix;
use crate::search::search;
use crate::watch::{Wakeup, Watch};

/// One followed topic's log: open while it is among the follower's
/// [`OPEN_LOGS`] most recently read, and opened again when it is read next.
struct Tailer {
    path: PathBuf,
    /// Its inotify watch, given back when another file takes its place.
    wd: Option<i32>,
    file: Option<File>,
    reader: LineReader,
    /// What the log looked like when it was last read.
    stamp: Option<Stamp>,
    /// Whether it may hold lines not read yet.
    dirty: bool,
}

impl Tailer {
    /// A log known by name only, to be opened and read.
    fn unopened(path: PathBuf) -> Tailer {
        Tailer {
            path,
            wd: None,
            file: None,
            reader: LineReader::new(0, 0),
            stamp: None,
            dirty: true,
        }
    }

    /// Closes the log, giving its buffer back; it is opened again, by name, when read next.
    fn close(&mut self) {
        self.file = None;
        self.reader.free();
    }
}

/// A log file's identity, length and modification time: a log whose stamp
/// is what it was when last read holds nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    id: (u64, u64),
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp { id: (m.dev(), m.ino()), len: m.len(), mtime: (m.mtime(), m.mtime_nsec()) }
    }
}

/// How many logs a follower keeps open at most (one file descriptor each);
/// it opens the others again when it reads them.
const OPEN_LOGS: usize = 8;

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
    /// Every followed topic's log.
    tailers: BTreeMap<Topic, Tailer>,
    /// The topics whose logs are open, least recently read first.
    open: VecDeque<Topic>,
    /// The topic of each log watch.
    watched: HashMap<i32, Topic>,
    inotify: Option<Watch>,
    /// Cuts its waits short from other threads.
    wakeup: Arc<Wakeup>,
    rescan: bool,
    settings: FollowSettings,
    /// Which topic is read first next time.
    turn: usize,
    /// How many times inotify woke the follower.
    wakes: u64,
    /// When the directory was last listed.
    listed: Instant,
}

/// How often a follower with inotify lists the directory and rereads its
/// logs anyway where the file system is not known to send an event for
/// every change (a network or FUSE mount): that is how it finds appends and
/// new topics there. On local file systems it waits for inotify alone.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

impl FileFollower {
    /// Starts following `pattern` in `dir`; `inotify` is the watch, made
    /// before this looks at the directory so that nothing appended in
    /// between is missed.
    pub(crate) fn start(
        dir: &Path,
        pattern: &TopicPattern,
        from: FollowFrom,
        inotify: Option<Watch>,
        settings: FollowSettings,
    ) -> Result<FileFollower> {
        let mut heads = BTreeMap::new();
        for (topic, path) in list_logs(dir)? {
            if pattern.matches(&topic) {
                let head = head(dir, &topic, &path)?;
                heads.insert(topic, head);
            }
        }
        Ok(FileFollower::new(
            dir.to_path_buf(),
            pattern.clone(),
            from.start,
            from.positions,
            heads,
            inotify,
            settings,
        ))
    }

    /// Starts following; `heads` are the matching topics' last sequence numbers now.
    pub(crate) fn new(
        dir: PathBuf,
        pattern: TopicPattern,
        start: Start,
        positions: BTreeMap<Topic, Cursor>,
        heads: BTreeMap<Topic, u64>,
        inotify: Option<Watch>,
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
        let wakeup = Arc::new(Wakeup::new(inotify.as_ref().map(Watch::watcher)));
        FileFollower {
            dir,
            pattern,
            positions,
            since,
            tailers: BTreeMap::new(),
            open: VecDeque::new(),
            watched: HashMap::new(),
            inotify,
            wakeup,
            rescan: true,
            settings,
            turn: 0,
            wakes: 0,
            listed: Instant::now(),
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

    /// Opens the log of `topic` at `path`, at the first line it may want:
    /// the first after the last sequence number handled, whichever file the
    /// name holds now (never an offset into the file read before, which a
    /// clear may have replaced, even by one with the same inode number).
    fn open_log(&mut self, topic: &Topic, path: &Path) -> Result<Option<Tailer>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        // Watch the file opened, then read it: an append after the read wakes the follower.
        let wd = self.inotify.as_mut().and_then(|i| i.watch_log(&file, path));
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
            wd,
            file: Some(file),
            reader: LineReader::new(start, size),
            stamp: None,
            dirty: true,
        }))
    }

    /// Opens the log of `topic` again; `false` if there is none now.
    fn reopen(&mut self, topic: &Topic) -> Result<bool> {
        let Some(old) = self.tailers.get_mut(topic) else { return Ok(false) };
        let (path, old_wd) = (old.path.clone(), old.wd);
        let Some(new) = self.open_log(topic, &path)? else {
            // Removed: a log created under the name later is found by a rescan.
            if let Some(t) = self.tailers.get_mut(topic) {
                t.dirty = false;
            }
            return Ok(false);
        };
        // The old file's watch goes after the new one's came: no gap. The
        // same inode gives the same watch back.
        if let (Some(wd), true) = (old_wd, old_wd != new.wd) {
            self.watched.remove(&wd);
            if let Some(inotify) = &mut self.inotify {
                inotify.unwatch(wd);
            }
        }
        if let Some(wd) = new.wd {
            self.watched.insert(wd, topic.clone());
        }
        self.tailers.insert(topic.clone(), new);
        self.opened(topic);
        Ok(true)
    }

    /// Counts the log of `topic` as the most recently read open one, and
    /// closes the least recently read past [`OPEN_LOGS`].
    fn opened(&mut self, topic: &Topic) {
        self.unlist(topic);
        self.open.push_back(topic.clone());
        while self.open.len() > OPEN_LOGS {
            let Some(oldest) = self.open.pop_front() else { break };
            if let Some(t) = self.tailers.get_mut(&oldest) {
                t.close();
            }
        }
    }

    /// Closes the log of `topic` if it is open.
    fn close(&mut self, topic: &Topic) {
        self.unlist(topic);
        if let Some(t) = self.tailers.get_mut(topic) {
            t.close();
        }
    }

    /// Takes `topic` off the list of open logs.
    fn unlist(&mut self, topic: &Topic) {
        if let Some(i) = self.open.iter().position(|t| t == topic) {
            self.open.remove(i);
        }
    }

    /// Lists the directory: takes in new matching topics, and marks for
    /// reading the logs that changed since they were last read (a log
    /// replaced by a clear is closed, to be opened again by name).
    fn rescan(&mut self) -> Result<()> {
        let logs = list_logs(&self.dir)?;
        for (topic, path) in logs {
            if !self.pattern.matches(&topic) {
                continue;
            }
            let Some(t) = self.tailers.get_mut(&topic) else {
                self.tailers.insert(topic, Tailer::unopened(path));
                continue;
            };
            let Ok(now) = std::fs::metadata(&t.path).map(|m| Stamp::of(&m)) else { continue };
            match t.stamp {
                Some(seen) if seen == now => {}
                Some(seen) if seen.id != now.id => {
                    t.dirty = true;
                    self.close(&topic);
                }
                _ => t.dirty = true,
            }
        }
        Ok(())
    }

    /// Marks for reading the logs inotify saw appended to; where it cannot
    /// tell which (its queue overflowed, or logs are not watched one by
    /// one), the next rescan looks at them all.
    fn note_appends(&mut self) {
        let Some(inotify) = &mut self.inotify else { return };
        match inotify.take_appended() {
            Some(wds) => {
                for wd in wds {
                    let topic = self.watched.get(&wd);
                    if let Some(t) = topic.and_then(|topic| self.tailers.get_mut(topic)) {
                        t.dirty = true;
                    }
                }
            }
            None => self.rescan = true,
        }
    }

    /// Reads what is complete in the logs that may have changed, up to `max`
    /// events, starting one topic further each call so that a busy topic
    /// cannot starve the rest.
    fn read_available(&mut self, max: usize, out: &mut Vec<StoredEvent>) -> Result<()> {
        let mut topics: Vec<Topic> =
            self.tailers.iter().filter(|(_, t)| t.dirty).map(|(topic, _)| topic.clone()).collect();
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
        let open = self.tailers.get(topic).map(|t| t.file.is_some());
        match open {
            None => return Ok(()),
            Some(false) if !self.reopen(topic)? => return Ok(()),
            Some(false) => {}
            Some(true) if self.open.back() != Some(topic) => self.opened(topic),
            Some(true) => {}
        }
        let Some(tailer) = self.tailers.get_mut(topic) else { return Ok(()) };
        let Some(file) = tailer.file.as_ref() else { return Ok(()) };
        let io_err = |e: io::Error| Error::io(format!("following {}", tailer.path.display()), e);
        let stat = file.metadata().map_err(io_err)?;
        let size = stat.len();
        // Read only up to the end of the last complete append: bytes past it
        // (a torn line, a batch without its last line) may be cut off by the
        // next writer and their offsets written again, and a half line read
        // before the cut would be glued to what comes after it.
        let committed = inspect_tail(file, size).map_err(io_err)?.end;
        tailer.reader.set_limit(committed);
        // Lines of a batch whose last line is not there yet are held back.
        let mut pending: Vec<(u64, u64, Option<StoredEvent>)> = Vec::new();
        let mut last_seq = None;
        let mut resume = None;
        while let Some((off, line)) = tailer.reader.next_line(file).map_err(io_err)? {
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
        // Read to its committed end unless `max` stopped it: then it stays to be read.
        tailer.dirty = resume.is_some() || out.len() >= max;
        tailer.stamp = Some(Stamp::of(&stat));
        if let Some(seq) = last_seq {
            let pos = self.positions.entry(topic.clone()).or_insert(0);
            *pos = (*pos).max(seq);
        }
        Ok(())
    }
}

/// The last sequence number used in a topic (0 for none), read without the lock.
fn head(dir: &Path, topic: &Topic, path: &Path) -> Result<u64> {
    let last = match open_snapshot(path)? {
        Some((_, tail)) => tail.last.map(|p| p.seq),
        None => None,
    };
    match last {
        Some(seq) => Ok(seq),
        None => Ok(meta::read(&Paths::new(dir, topic.as_str()).meta)?.map_or(0, |m| m.seq_base)),
    }
}

impl Follower for FileFollower {
    fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<StoredEvent>> {
        // A timeout past what the clock can hold means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut out = Vec::new();
        loop {
            if self.wakeup.take() {
                return Ok(out);
            }
            self.note_appends();
            let by_clock = match &self.inotify {
                Some(inotify) => !inotify.watcher().is_local(),
                None => true,
            };
            if self.rescan
                || self.inotify.is_none()
                || (by_clock && self.listed.elapsed() >= RESCAN_EVERY)
            {
                self.rescan()?;
                self.rescan = false;
                self.listed = Instant::now();
            }
            self.read_available(max, &mut out)?;
            if !out.is_empty() || max == 0 {
                return Ok(out);
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(out);
            }
            match &mut self.inotify {
                Some(inotify) => {
                    let until_rescan = match by_clock {
                        true => RESCAN_EVERY.saturating_sub(self.listed.elapsed()),
                        false => Duration::MAX,
                    };
                    let wake = inotify
                        .wait(left.min(until_rescan), &self.wakeup)
                        .map_err(|e| Error::io(format!("waiting on {}", self.dir.display()), e))?;
                    self.rescan |= wake.rescan;
                    self.wakes += u64::from(wake.any());
                }
                None => self.wakeup.sleep(left.min(self.settings.poll_interval)),
            }
        }
    }

    fn interrupter(&self) -> Option<Arc<dyn Interrupt>> {
        Some(self.wakeup.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_past_the_clock_is_no_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let t = seed_event::Topic::new("max").unwrap();
        store.append(&Event::new(t.clone(), "s", JsonObject::new())).unwrap();
        let pattern = seed_event::TopicPattern::new("max").unwrap();
        let mut f =
            store.follow(&pattern, FollowFrom::start(seed_event::Start::Beginning)).unwrap();
        assert_eq!(f.next_batch(10, Duration::MAX).unwrap().len(), 1);
    }

    use seed_event::{Event, EventStore, JsonObject};

    use crate::{FileStore, FileStoreConfig};

    /// An interrupt ends the one follower's wait without a deadline (or its
    /// next one, when it comes first); the others sharing its inotify
    /// instance go on waiting and get the next event.
    #[test]
    fn an_interrupt_ends_one_wait_without_a_deadline() {
        use std::sync::mpsc;
        use std::thread;
        const DEADLINE: Duration = Duration::from_secs(10);
        for inotify in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let config = FileStoreConfig::default().inotify(inotify);
            let store = FileStore::open_with(dir.path(), config).unwrap();
            let t = Topic::new("idle").unwrap();
            let pattern = TopicPattern::from(t.clone());
            let (tx, rx) = mpsc::channel();
            let mut interrupts = Vec::new();
            let threads: Vec<_> = (0..3)
                .map(|i| {
                    let mut f = store.follow(&pattern, FollowFrom::start(Start::New)).unwrap();
                    interrupts.push(f.interrupter().expect("file followers can be interrupted"));
                    let tx = tx.clone();
                    thread::spawn(move || {
                        let first = f.next_batch(10, Duration::MAX).unwrap();
                        tx.send((i, first.len())).unwrap();
                        if first.is_empty() {
                            // Interrupted first: the next event still comes.
                            let next = f.next_batch(10, Duration::MAX).unwrap();
                            tx.send((i, next.len())).unwrap();
                        }
                    })
                })
                .collect();
            interrupts[1].interrupt();
            assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), (1, 0), "inotify {inotify}");
            assert!(rx.try_recv().is_err(), "the others still wait (inotify {inotify})");
            store.append(&Event::new(t.clone(), "s", JsonObject::new())).unwrap();
            let mut got: Vec<_> = (0..3).map(|_| rx.recv_timeout(DEADLINE).unwrap()).collect();
            got.sort();
            assert_eq!(got, vec![(0, 1), (1, 1), (2, 1)], "inotify {inotify}");
            threads.into_iter().for_each(|t| t.join().unwrap());

            let mut f = store.follow(&pattern, FollowFrom::start(Start::New)).unwrap();
            f.interrupter().unwrap().interrupt();
            assert!(f.next_batch(10, Duration::MAX).unwrap().is_empty(), "taken before the wait");
        }
    }

    /// A follower of `topic` from its next event, as `FileStore::follow` makes it.
    fn follower(store: &FileStore, topic: &Topic) -> FileFollower {
        let watcher = crate::watch::Watcher::shared(&store.watcher, store.dir());
        let inotify = watcher.map(|w| Watch::new(w, &TopicPattern::from(topic.clone())));
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

    /// A follower of `pattern` in `dir` from `start`, waking through `watcher`.
    fn pattern_follower(
        dir: &Path,
        pattern: &TopicPattern,
        start: Start,
        watcher: Arc<crate::watch::Watcher>,
    ) -> FileFollower {
        let inotify = Some(Watch::new(watcher, pattern));
        let settings = FollowSettings { poll_interval: Duration::from_millis(50) };
        FileFollower::start(dir, pattern, FollowFrom::start(start), inotify, settings).unwrap()
    }

    /// Three times [`OPEN_LOGS`] topics `<prefix>.t<n>`, each given `each` events.
    fn more_topics_than_open_logs(store: &FileStore, prefix: &str, each: usize) -> Vec<Topic> {
        let topics: Vec<Topic> =
            (0..3 * OPEN_LOGS).map(|i| Topic::new(format!("{prefix}.t{i}")).unwrap()).collect();
        for t in &topics {
            for _ in 0..each {
                store.append(&Event::new(t.clone(), "test", JsonObject::new())).unwrap();
            }
        }
        topics
    }

    /// What the follower's inotify has queued now (appends are queued as they return).
    fn queued(f: &mut FileFollower) -> crate::watch::Wake {
        f.inotify.as_mut().unwrap().wait(Duration::ZERO, &Wakeup::new(None)).unwrap()
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
        assert!(!queued(&mut f).any(), "woken by another topic");
        assert!(f.next_batch(10, Duration::from_millis(50)).unwrap().is_empty());
        assert_eq!(f.wakes, 0);

        let sent = event(&a);
        store.append(&sent).unwrap();
        assert!(queued(&mut f).appended, "an append to the followed log is seen");
        let got = f.next_batch(10, Duration::from_secs(5)).unwrap();
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![sent.id]);

        // A clear of the followed topic renames a new log in.
        store.clear(&seed_event::Clear { topic: Some(a.clone()), before: None }).unwrap();
        assert!(queued(&mut f).rescan, "the rename of the followed log is seen");
        f.rescan = true; // `queued` took the signal from the follower
        let after = event(&a);
        store.append(&after).unwrap();
        let got = f.next_batch(10, Duration::from_secs(5)).unwrap();
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![after.id]);
        let _ = queued(&mut f);
        store.append(&event(&a)).unwrap();
        assert!(queued(&mut f).appended, "the new log is watched");
        store.append(&event(&b)).unwrap();
        assert!(!queued(&mut f).any(), "and another topic's still is not");
    }

    /// A store's followers share one inotify instance (a user gets few: often
    /// 128 for all programs), let go of when the last follower goes; and
    /// followers waiting in many threads at once are each woken for, and get
    /// exactly, their own topic's events.
    #[test]
    fn followers_of_a_store_share_one_inotify_instance() {
        use std::sync::mpsc;

        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let topics: Vec<Topic> =
            (0..150).map(|i| Topic::new(format!("share.t{i}")).unwrap()).collect();
        // The logs exist before the followers start, so that every wake-up
        // below is for an append.
        for t in &topics {
            store.append(&Event::new(t.clone(), "test", JsonObject::new())).unwrap();
        }
        let followers: Vec<FileFollower> = topics.iter().map(|t| follower(&store, t)).collect();
        let watcher = store.watcher.lock().unwrap().upgrade().expect("one shared watcher");
        assert_eq!(Arc::strong_count(&watcher), 151, "150 followers and this test");
        drop(watcher);

        // Eight of them in eight threads, in step with the appender: each
        // round's events are appended once every thread has the last round's,
        // so the threads are mostly waiting when they come.
        let rounds = 50u64;
        let (ack, acks) = mpsc::channel::<()>();
        let wakes: u64 = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (t, mut f) in topics.iter().zip(followers).take(8) {
                let ack = ack.clone();
                handles.push(s.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut got = Vec::new();
                    while (got.len() as u64) < rounds && Instant::now() < deadline {
                        for e in f.next_batch(100, Duration::from_millis(500)).unwrap() {
                            assert_eq!(&e.event.topic, t);
                            got.push(e.event.payload["n"].as_u64().unwrap());
                            ack.send(()).unwrap();
                        }
                    }
                    assert_eq!(got, (0..rounds).collect::<Vec<_>>(), "topic {t}");
                    f.wakes
                }));
            }
            for n in 0..rounds {
                for t in topics.iter().take(8) {
                    let mut payload = JsonObject::new();
                    payload.insert("n".into(), n.into());
                    store.append(&Event::new(t.clone(), "test", payload)).unwrap();
                }
                for _ in 0..8 {
                    acks.recv_timeout(Duration::from_secs(30)).expect("every thread got it");
                }
            }
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert!(wakes > 0, "the waiting followers were woken by inotify, not by their timeouts");
        assert!(store.watcher.lock().unwrap().upgrade().is_none(), "freed with the last follower");
    }

    /// A topic whose file name is hashed (past 200 bytes) is listed only
    /// once its sidecar is there, after the log was created: a follower of a
    /// pattern still finds it when it first appears, woken by inotify.
    #[test]
    fn a_new_topic_with_a_hashed_file_name_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let pattern = TopicPattern::new("long.>").unwrap();
        let watcher = crate::watch::Watcher::shared(&store.watcher, store.dir()).unwrap();
        let mut f = FileFollower::new(
            store.dir().to_path_buf(),
            pattern.clone(),
            Start::New,
            BTreeMap::new(),
            BTreeMap::new(),
            Some(Watch::new(watcher, &pattern)),
            FollowSettings { poll_interval: Duration::from_millis(50) },
        );
        assert!(f.next_batch(10, Duration::ZERO).unwrap().is_empty());
        let t = Topic::new(format!("long.{}", "x".repeat(250))).unwrap();
        let sent = Event::new(t.clone(), "test", JsonObject::new());
        store.append(&sent).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            got = f.next_batch(10, Duration::from_secs(1)).unwrap();
        }
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![sent.id]);
        assert!(f.wakes > 0, "woken by the log's name, not found by chance");
    }

    /// A follower whose inotify never reports anything for its directory
    /// (here: its watch is on another directory, as on a file system that
    /// sends no events) still finds a topic created after it started, and
    /// its events, by listing the directory now and then.
    #[test]
    fn a_follower_without_events_from_the_file_system_finds_new_topics() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let other = FileStore::open(elsewhere.path()).unwrap();
        let pattern = TopicPattern::new("a.>").unwrap();
        let deaf = crate::watch::Watcher::shared(&other.watcher, elsewhere.path()).unwrap();
        deaf.distrust_events();
        let mut f = pattern_follower(dir.path(), &pattern, Start::New, deaf);
        assert!(f.next_batch(10, Duration::ZERO).unwrap().is_empty());
        let sent = Event::new(Topic::new("a.new").unwrap(), "test", JsonObject::new());
        store.append(&sent).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            got = f.next_batch(10, Duration::from_millis(200)).unwrap();
        }
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![sent.id]);
        assert_eq!(f.wakes, 0, "found by listing, not woken");
    }

    /// On a local file system a waiting follower trusts inotify alone: it
    /// does not list the directory by the clock (what 1,000 idle followers
    /// would otherwise do 1,000 times a second).
    #[test]
    fn on_a_local_file_system_an_idle_follower_does_not_list_by_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let t = Topic::new("quiet").unwrap();
        let mut f = follower(&store, &t);
        assert!(f.inotify.as_ref().unwrap().watcher().is_local(), "{}", dir.path().display());
        assert!(f.next_batch(10, Duration::ZERO).unwrap().is_empty());
        let listed = f.listed;
        assert!(f.next_batch(10, RESCAN_EVERY * 2).unwrap().is_empty());
        assert_eq!(f.listed, listed, "not listed again");
        let sent = Event::new(t.clone(), "test", JsonObject::new());
        store.append(&sent).unwrap();
        let got = f.next_batch(10, Duration::MAX).unwrap();
        assert_eq!(got.iter().map(|e| e.event.id).collect::<Vec<_>>(), vec![sent.id]);
    }

    /// A follower of more topics than it keeps open closes the least
    /// recently read logs and opens them again by name when they grow. It
    /// goes on after the last sequence number it handled, never at a byte
    /// offset: here a closed log is rewritten in place (as when a clear's new
    /// log gets the old inode number back) and appended to, and the follower
    /// returns exactly the kept events it had not returned, whole, once.
    #[test]
    fn a_follower_of_many_topics_reopens_logs_by_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let topics = more_topics_than_open_logs(&store, "many", 3);
        let event = |t: &Topic| Event::new(t.clone(), "test", JsonObject::new());
        let pattern = TopicPattern::new("many.>").unwrap();
        let watcher = crate::watch::Watcher::shared(&store.watcher, store.dir()).unwrap();
        let mut f = pattern_follower(dir.path(), &pattern, Start::Beginning, watcher);
        let collect = |f: &mut FileFollower, n: usize| {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut got: BTreeMap<Topic, Vec<u64>> = BTreeMap::new();
            let mut count = 0;
            while count < n && Instant::now() < deadline {
                for e in f.next_batch(7, Duration::from_millis(200)).unwrap() {
                    got.entry(e.event.topic.clone()).or_default().push(e.cursor.major());
                    count += 1;
                }
            }
            got
        };
        let got = collect(&mut f, 3 * topics.len());
        assert_eq!(got.len(), topics.len());
        assert!(got.values().all(|seqs| seqs == &[1, 2, 3]), "{got:?}");
        let open = f.tailers.values().filter(|t| t.file.is_some()).count();
        assert!(open <= OPEN_LOGS, "{open} logs open");

        let closed = topics.iter().find(|t| f.tailers[*t].file.is_none()).unwrap().clone();
        for _ in 0..3 {
            store.append(&event(&closed)).unwrap();
        }
        let log = Paths::new(dir.path(), closed.as_str()).log;
        let text = std::fs::read(&log).unwrap();
        let kept: Vec<u8> = text
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| parse_prefix(l).is_some_and(|p| p.seq >= 5))
            .flatten()
            .copied()
            .collect();
        std::fs::write(&log, kept).unwrap();
        store.append(&event(&closed)).unwrap();
        let got = collect(&mut f, 3);
        assert_eq!(got, BTreeMap::from([(closed.clone(), vec![5, 6, 7])]));
        assert!(f.next_batch(10, Duration::from_millis(100)).unwrap().is_empty(), "nothing twice");
    }

    /// Where logs cannot be watched one by one (the user's inotify watches
    /// are used up), a follower of many topics is woken by appends to any
    /// file of the directory, reads the logs whose length changed, and so
    /// still returns every event once.
    #[test]
    fn a_follower_whose_logs_cannot_be_watched_gets_every_append() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let topics = more_topics_than_open_logs(&store, "nowatch", 1);
        let event = |t: &Topic| Event::new(t.clone(), "test", JsonObject::new());
        let pattern = TopicPattern::new("nowatch.>").unwrap();
        let watcher = crate::watch::Watcher::shared(&store.watcher, store.dir()).unwrap();
        watcher.stop_watching_logs();
        let mut f = pattern_follower(dir.path(), &pattern, Start::New, watcher);
        assert!(f.next_batch(100, Duration::ZERO).unwrap().is_empty());
        assert!(f.tailers.values().all(|t| t.wd.is_none()), "no log is watched");
        // No listing by the clock: only what inotify says makes it read.
        f.listed = Instant::now() + Duration::from_secs(3600);
        let mut sent = Vec::new();
        for round in 0..3 {
            for t in topics.iter().skip(round).step_by(2) {
                let e = event(t);
                sent.push(e.id);
                store.append(&e).unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < sent.len() && Instant::now() < deadline {
            got.extend(
                f.next_batch(100, Duration::from_millis(200))
                    .unwrap()
                    .into_iter()
                    .map(|e| e.event.id),
            );
        }
        got.sort();
        sent.sort();
        assert_eq!(got, sent);
        assert!(f.wakes > 0, "woken by inotify");
        assert!(f.next_batch(10, Duration::from_millis(100)).unwrap().is_empty(), "nothing twice");
    }
}
