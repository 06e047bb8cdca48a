//! Following topics: tail their logs, woken by inotify (or by polling where it is missing).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use seed_event::{
    Cursor, Error, FollowFrom, Follower, Result, Start, StoredEvent, Timestamp, Topic, TopicPattern,
};

use crate::decode::decode_line;
use crate::lines::{inspect_tail, open_snapshot, LineReader};
use crate::meta;
use crate::paths::{list_logs, Paths};
use crate::prefix::parse_prefix;
use crate::search::search;
use crate::watch::Watch;

/// One followed topic's open log.
struct Tailer {
    path: PathBuf,
    /// Its inotify watch, given back when it is closed.
    wd: Option<i32>,
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
    inotify: Option<Watch>,
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
/// logs anyway: on a file system that sends no events (a network or FUSE
/// mount), that is how it finds appends and new topics.
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

    /// Opens the log of `topic` at `path`, at the first line it may want.
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
                let old = match self.open_log(&topic, &path)? {
                    Some(t) => self.open.insert(topic, t),
                    None => self.open.remove(&topic),
                };
                // The old log's watch goes after the new one's came: no gap.
                if let (Some(wd), Some(inotify)) = (old.and_then(|t| t.wd), &mut self.inotify) {
                    inotify.unwatch(wd);
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
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            if self.rescan || self.inotify.is_none() || self.listed.elapsed() >= RESCAN_EVERY {
                self.rescan()?;
                self.rescan = false;
                self.listed = Instant::now();
            }
            self.read_available(max, &mut out)?;
            if !out.is_empty() || max == 0 {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(out);
            }
            match &mut self.inotify {
                Some(inotify) => {
                    let until_rescan = RESCAN_EVERY.saturating_sub(self.listed.elapsed());
                    let wake = inotify
                        .wait((deadline - now).min(until_rescan))
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

    /// What the follower's inotify has queued now (appends are queued as they return).
    fn queued(f: &mut FileFollower) -> crate::watch::Wake {
        f.inotify.as_mut().unwrap().wait(Duration::ZERO).unwrap()
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
        use std::sync::{mpsc, Arc};

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
        let mut f = FileFollower::start(
            dir.path(),
            &pattern,
            FollowFrom::start(Start::New),
            Some(Watch::new(deaf, &pattern)),
            FollowSettings { poll_interval: Duration::from_millis(50) },
        )
        .unwrap();
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
}
