//! The store: [`FileStore`], its configuration, the append path and the
//! [`EventStore`] implementation, which hands reads, clears and consumers to
//! their modules.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use seed_event::support::{lock, AppendCondition};
use seed_event::{
    Clear, ConsumerLock, ConsumerName, Cursor, Error, Event, EventStore, EventStream, Fence,
    FollowFrom, Follower, LockRequest, Query, Result, Retention, Topic, TopicPattern, TopicStats,
};

use crate::fsutil::Durability;
use crate::lines::open_snapshot;
use crate::paths::{list_logs, Paths};
use crate::query::{self, CorruptLine};
use crate::states::FileStates;
use crate::writer::AppendSync;
use crate::writers::Writers;
use crate::{consumer_lock, consumers, follow, retention, version, watch};

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
///
/// ```
/// use store_file::{FileStoreConfig, SyncPolicy};
/// let config = FileStoreConfig::default().sync(SyncPolicy::Batch);
/// assert_eq!(config.sync, SyncPolicy::Batch);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreConfig {
    /// When appends are synced to disk.
    pub sync: SyncPolicy,
    /// Retention limits, applied exactly by [`FileStore::enforce_retention`]; and
    /// the append whose sequence numbers reach a multiple of
    /// [`RETENTION_CHECK_EVERY`] applies them once its topic is a tenth past a
    /// limit (so that a big log is not rewritten for a handful of events).
    pub retention: Retention,
    /// Wake followers with inotify (when `false`, or when inotify is unavailable, they poll).
    pub inotify: bool,
    /// How often followers look for new events when they poll.
    pub poll_interval: Duration,
    /// How many topics' logs the store keeps open for appending (one file
    /// descriptor each); past it, the least recently appended-to is closed
    /// (once its append in progress, if any, returns), and the next append
    /// to it opens it again with the full check.
    pub open_writers: NonZeroUsize,
    /// How many versions of each entity the state store keeps (the newest;
    /// default [`seed_event::DEFAULT_STATE_HISTORY`]).
    pub state_history: u64,
}

impl Default for FileStoreConfig {
    fn default() -> FileStoreConfig {
        FileStoreConfig {
            sync: SyncPolicy::Never,
            retention: Retention::default(),
            inotify: true,
            poll_interval: Duration::from_millis(5),
            open_writers: DEFAULT_OPEN_WRITERS,
            state_history: seed_event::DEFAULT_STATE_HISTORY,
        }
    }
}

impl FileStoreConfig {
    /// This configuration with another sync policy.
    pub fn sync(mut self, sync: SyncPolicy) -> FileStoreConfig {
        self.sync = sync;
        self
    }

    /// This configuration with other retention limits.
    pub fn retention(mut self, retention: Retention) -> FileStoreConfig {
        self.retention = retention;
        self
    }

    /// This configuration keeping the newest `n` versions of each entity (at least 1).
    pub fn state_history(mut self, n: u64) -> FileStoreConfig {
        self.state_history = n.max(1);
        self
    }

    /// This configuration with inotify on or off (off: followers poll).
    pub fn inotify(mut self, inotify: bool) -> FileStoreConfig {
        self.inotify = inotify;
        self
    }

    /// This configuration keeping at most `n` topic writers open.
    pub fn open_writers(mut self, n: NonZeroUsize) -> FileStoreConfig {
        self.open_writers = n;
        self
    }
}

/// The default of [`FileStoreConfig::open_writers`]: 64 file descriptors,
/// a sixteenth of the usual soft limit of 1,024 open files.
pub const DEFAULT_OPEN_WRITERS: NonZeroUsize = match NonZeroUsize::new(64) {
    Some(n) => n,
    None => unreachable!(),
};

/// A topic's retention limits are checked by the append whose sequence
/// numbers reach a multiple of this (by whichever process makes it).
pub const RETENTION_CHECK_EVERY: u64 = 1024;

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

/// The file store: see the [crate documentation](crate).
pub struct FileStore {
    dir: PathBuf,
    config: FileStoreConfig,
    /// The topic writers kept open.
    writers: Writers,
    /// The inotify instance the store's followers share, while any is alive.
    pub(crate) watcher: Mutex<std::sync::Weak<watch::Watcher>>,
    /// The open state index files.
    pub(crate) states: FileStates,
}

impl FileStore {
    /// Opens the events directory `dir` with the default configuration; the
    /// first write creates it (mode 0700), reads of a missing one see an empty store.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::open_with(dir, FileStoreConfig::default())
    }

    /// Opens the events directory `dir`; the first write creates it (mode
    /// 0700), reads of a missing one see an empty store.
    pub fn open_with(dir: impl AsRef<Path>, config: FileStoreConfig) -> Result<FileStore> {
        let dir = dir.as_ref().to_path_buf();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::io(
                format!("opening the events directory {}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        Ok(FileStore {
            writers: Writers::new(&dir, config.open_writers),
            dir,
            config,
            watcher: Mutex::new(std::sync::Weak::new()),
            states: FileStates::default(),
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

    pub(crate) fn writer(
        &self,
        topic: &Topic,
    ) -> std::sync::Arc<Mutex<crate::writer::TopicWriter>> {
        self.writers.get(topic)
    }

    pub(crate) fn paths(&self, topic: &Topic) -> Paths {
        Paths::new(&self.dir, topic.as_str())
    }

    /// Appends under the topic's lock; `expected` makes it conditional. Returns the first seq.
    fn write(
        &self,
        topic: &Topic,
        events: &[Event],
        condition: AppendCondition,
        sync: AppendSync,
    ) -> Result<u64> {
        let slot = self.writers.get(topic);
        let mut writer = lock(&slot);
        if !writer.is_open() {
            version::ensure_writable(&self.dir, self.durable())?;
        }
        writer.prepare(events);
        let first = {
            let mut locked = writer.lock()?;
            condition.check(topic, locked.last_cursor())?;
            locked.append(events, sync)?
        };
        let last = first + events.len() as u64 - 1;
        let check = (first - 1) / RETENTION_CHECK_EVERY != last / RETENTION_CHECK_EVERY;
        // State topics keep their own history limit instead.
        let states = seed_event::entity_type_of(topic).is_some();
        if check && !self.config.retention.is_unlimited() && !states {
            let limits = self.config.retention.limits(topic).clone();
            let due = retention::retention_due(&self.paths(topic), &limits);
            if let Err(e) = due.and_then(|due| {
                if due {
                    retention::enforce_limits(&mut writer, &limits)
                } else {
                    Ok(0)
                }
            }) {
                log::warn!("retention of topic {topic} failed: {e}");
            }
        }
        Ok(first)
    }

    /// Applies the configured retention limits to every topic now; returns how many events went.
    pub fn enforce_retention(&self) -> Result<u64> {
        let mut removed = 0;
        let logs = list_logs(&self.dir)?;
        if !logs.is_empty() {
            version::ensure_writable(&self.dir, self.durable())?;
        }
        for (topic, _) in logs {
            let limits = self.config.retention.limits(&topic).clone();
            // State topics keep their own history limit instead.
            if limits.is_unlimited() || seed_event::entity_type_of(&topic).is_some() {
                continue;
            }
            let slot = self.writers.get(&topic);
            removed += retention::enforce_limits(&mut lock(&slot), &limits)?;
        }
        Ok(removed)
    }

    /// Every line of every topic that is not a readable event, with its topic and byte offset.
    pub fn verify(&self) -> Result<Vec<CorruptLine>> {
        version::check_readable(&self.dir)?;
        query::verify(&self.dir)
    }

    /// Whether writes sync (then a new events directory is synced into its parent too).
    fn durable(&self) -> bool {
        self.config.sync != SyncPolicy::Never
    }

    /// How consumer positions and lock generations are written under the policy.
    fn consumer_durability(&self) -> Durability {
        if self.durable() {
            Durability::Full
        } else {
            Durability::None
        }
    }

    /// Makes the single appends of `topic` so far durable where the policy
    /// did not sync them ([`SyncPolicy::Batch`]): for a write that must not
    /// be lost once something else is saved after it (a dead letter before
    /// its event leaves its group).
    pub(crate) fn sync_single_appends(&self, topic: &Topic) -> Result<()> {
        if self.config.sync != SyncPolicy::Batch {
            return Ok(());
        }
        let log = self.paths(topic).log;
        let file = std::fs::File::open(&log)
            .map_err(|e| seed_event::Error::io(format!("opening {}", log.display()), e))?;
        crate::fsutil::sync_data(&file)
            .map_err(|e| seed_event::Error::io(format!("syncing {}", log.display()), e))
    }

    /// What an append of one event (not a batch) syncs under the policy.
    fn single_append_sync(&self) -> AppendSync {
        if self.config.sync == SyncPolicy::Always {
            AppendSync::Data
        } else {
            AppendSync::None
        }
    }
}

impl EventStore for FileStore {
    fn describe(&self) -> String {
        format!("file store at {}", self.dir.display())
    }

    fn append(&self, event: &Event) -> Result<Cursor> {
        let first = self.write(
            &event.topic,
            std::slice::from_ref(event),
            AppendCondition::Always,
            self.single_append_sync(),
        )?;
        Ok(Cursor::new(first, 0))
    }

    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        seed_event::support::check_batch_topic(topic, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let sync = if self.durable() { AppendSync::Data } else { AppendSync::None };
        let first = self.write(topic, events, AppendCondition::Always, sync)?;
        Ok((first..first + events.len() as u64).map(|seq| Cursor::new(seq, 0)).collect())
    }

    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        let first = self.write(
            &event.topic,
            std::slice::from_ref(event),
            AppendCondition::LastIs(expected),
            self.single_append_sync(),
        )?;
        Ok(Cursor::new(first, 0))
    }

    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>> {
        version::check_readable(&self.dir)?;
        query::last_cursor(&self.paths(topic).log)
    }

    fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        version::check_readable(&self.dir)?;
        query::read(&self.dir, query)
    }

    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64> {
        version::check_readable(&self.dir)?;
        query::count_after(&self.paths(topic).log, cursor)
    }

    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>> {
        version::check_readable(&self.dir)?;
        // Watch first, then look: nothing appended in between is missed.
        let inotify = match self.config.inotify {
            true => watch::Watcher::shared(&self.watcher, &self.dir)
                .map(|w| watch::Watch::new(w, pattern)),
            false => None,
        };
        let settings = follow::FollowSettings { poll_interval: self.config.poll_interval };
        let follower = follow::FileFollower::start(&self.dir, pattern, from, inotify, settings)?;
        Ok(Box::new(follower))
    }

    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
        version::check_readable(&self.dir)?;
        consumers::load(&self.dir, name)
    }

    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()> {
        version::ensure_writable(&self.dir, self.durable())?;
        consumers::commit(&self.dir, name, topic, cursor, self.consumer_durability())
    }

    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        version::check_readable(&self.dir)?;
        consumers::list(&self.dir)
    }

    fn lock_consumer(
        &self,
        name: &ConsumerName,
        request: &LockRequest,
    ) -> Result<Option<Box<dyn ConsumerLock>>> {
        version::ensure_writable(&self.dir, self.durable())?;
        consumer_lock::lock(&self.dir, name, request, self.consumer_durability())
    }

    fn commit_fenced(
        &self,
        name: &ConsumerName,
        fence: Fence,
        topic: &Topic,
        cursor: Cursor,
    ) -> Result<()> {
        version::ensure_writable(&self.dir, self.durable())?;
        consumer_lock::check_fence(&self.dir, name, fence)?;
        consumers::commit(&self.dir, name, topic, cursor, self.consumer_durability())
    }

    fn topics(&self) -> Result<Vec<TopicStats>> {
        version::check_readable(&self.dir)?;
        query::topics(&self.dir)
    }

    fn clear(&self, what: &Clear) -> Result<u64> {
        version::check_readable(&self.dir)?;
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
        if !limits.is_empty() {
            version::ensure_writable(&self.dir, self.durable())?;
        }
        let before = what.before.map(|t| t.unix_micros());
        let mut removed = 0;
        for (topic, limit) in limits {
            let slot = self.writers.get(&topic);
            let mut writer = lock(&slot);
            let mut locked = writer.lock_strict()?;
            if seed_event::entity_type_of(&topic).is_some() {
                // A state topic keeps each entity's newest record.
                removed += self.rewrite_states(&mut locked, &topic, |seq, line, v, newest| {
                    crate::states::kept_by_clear(seq, line, v, newest, limit, before)
                })?;
            } else {
                removed += retention::clear_up_to(&mut locked, limit, before)?;
            }
        }
        Ok(removed)
    }

    fn states(&self) -> Option<&dyn seed_event::StateBackend> {
        Some(self)
    }

    fn groups(&self) -> Option<&dyn seed_event::GroupBackend> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::take_syncs;
    use seed_event::JsonObject;

    fn store(dir: &Path, sync: SyncPolicy) -> FileStore {
        FileStore::open_with(dir, FileStoreConfig::default().sync(sync)).unwrap()
    }

    fn event(t: &Topic) -> Event {
        Event::new(t.clone(), "test", JsonObject::new())
    }

    /// `always` fdatasyncs every append call, `batch` each batch call and no
    /// single append, `never` nothing; counted syncs of this thread.
    #[test]
    fn appends_fdatasync_as_the_policy_says() {
        let t = Topic::new("sync.count").unwrap();
        let batch = [event(&t), event(&t), event(&t)];
        for (policy, per_append, per_batch) in
            [(SyncPolicy::Always, 1, 1), (SyncPolicy::Batch, 0, 1), (SyncPolicy::Never, 0, 0)]
        {
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path(), policy);
            s.append(&event(&t)).unwrap(); // opens the log, marks and syncs the directory
            take_syncs();
            for _ in 0..5 {
                s.append(&event(&t)).unwrap();
            }
            s.append_expecting(&event(&t), Some(Cursor::new(6, 0))).unwrap();
            assert_eq!(take_syncs(), [6 * per_append, 0, 0], "{policy:?}: six appends");
            s.append_batch(&t, &batch).unwrap();
            s.append_batch(&t, &batch).unwrap();
            // The first synced append to a log file also syncs its directory:
            // under `batch` that is the first batch.
            let first_synced = usize::from(policy == SyncPolicy::Batch);
            assert_eq!(take_syncs(), [2 * per_batch, 0, first_synced], "{policy:?}: two batches");
        }
    }

    /// A store keeps at most `open_writers` topic writers: the least recently
    /// used goes (its log closed), and the next append to its topic opens the
    /// log again with the full check. A clear by another process (here
    /// another store) that replaced the log in between is seen: numbering
    /// goes on after the cleared events, and the event lands in the new log.
    #[test]
    fn writers_past_the_limit_are_closed_and_reopened_with_the_full_check() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileStoreConfig {
            open_writers: NonZeroUsize::new(2).unwrap(),
            ..FileStoreConfig::default()
        };
        let s = FileStore::open_with(dir.path(), config).unwrap();
        let [a, b, c] = ["lru.a", "lru.b", "lru.c"].map(|t| Topic::new(t).unwrap());
        for _ in 0..3 {
            s.append(&event(&a)).unwrap();
        }
        s.append(&event(&b)).unwrap();
        s.append(&event(&a)).unwrap();
        s.append(&event(&c)).unwrap();
        assert_eq!(s.writers.len(), 2);
        assert!(s.writers.holds(&a) && s.writers.holds(&c), "b was the least recently used");
        s.append(&event(&b)).unwrap();
        assert!(!s.writers.holds(&a), "then a was");

        let other = FileStore::open(dir.path()).unwrap();
        assert_eq!(other.clear(&Clear { topic: Some(a.clone()), before: None }).unwrap(), 4);
        let log = dir.path().join("lru.a.jsonl");
        let replaced = std::fs::metadata(&log).unwrap().len();
        assert_eq!(replaced, 0, "the clear renamed an empty log in");
        assert_eq!(s.append(&event(&a)).unwrap(), Cursor::new(5, 0));
        let got = s.query(&Query::topic(&a)).unwrap();
        assert_eq!(got.iter().map(|e| e.cursor).collect::<Vec<_>>(), vec![Cursor::new(5, 0)]);
        assert_eq!(s.last_cursor(&b).unwrap(), Some(Cursor::new(2, 0)));
    }

    /// Under `batch` and `always` a consumer commit syncs its position file
    /// and its directory (and, the first time, the directories it created);
    /// under `never` it syncs nothing.
    #[test]
    fn consumer_commits_sync_their_file_and_directory() {
        let t = Topic::new("sync.commit").unwrap();
        let name = ConsumerName::new("c").unwrap();
        for (policy, file, dir_syncs) in
            [(SyncPolicy::Always, 1, 1), (SyncPolicy::Batch, 1, 1), (SyncPolicy::Never, 0, 0)]
        {
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path(), policy);
            s.append(&event(&t)).unwrap();
            s.commit_consumer(&name, &t, Cursor::new(1, 0)).unwrap();
            take_syncs();
            for n in 2..5 {
                s.append(&event(&t)).unwrap();
                take_syncs();
                s.commit_consumer(&name, &t, Cursor::new(n, 0)).unwrap();
                assert_eq!(take_syncs(), [0, file, dir_syncs], "{policy:?}: commit {n}");
            }
        }
    }
}
