//! Work groups on the file store: `<dir>/.groups/<group>/` holds
//!
//! - `.lock`, the group's `flock`: every change of the group happens under it;
//! - `state.json`, the group's [`GroupState`] (positions, pending events,
//!   delivery counts, counters), replaced atomically by every change and
//!   synced as the store's sync policy says;
//! - `members/<id>.lock`, one per live member, `flock`ed by its member for
//!   its lifetime. Whoever holds the group lock tests the locks of the
//!   members holding events: a lock it can take belongs to a member that
//!   died (the kernel released it, also on SIGKILL), whose events are
//!   delivered to the others at once.
//!
//! An idle member waits on a follower of the group's pattern (inotify), cut
//! short by its interrupt, for at most the time until the next pending event
//! becomes due, and for at most [`WATCH_OTHERS`] while other members hold
//! events (their acks, or their death, can free events for it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seed_event::group_engine::{self, GroupState};
use seed_event::{
    ConsumerName, Delivery, DeliveryToken, Error, EventStore, FollowFrom, Follower, GroupBackend,
    GroupConfig, GroupInfo, GroupMember, Interrupt, Result, Start, Topic,
};

use crate::fsutil::{self, write_atomic, Durability};
use crate::paths::list_logs;
use crate::store::FileStore;
use crate::{names, version};

/// How long an idle member waits at most while other members hold events.
pub const WATCH_OTHERS: Duration = Duration::from_millis(100);

/// The directory of every group.
fn root(dir: &Path) -> PathBuf {
    dir.join(".groups")
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

fn mkdir(path: &Path) -> Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(io_err("creating", path))
}

fn open_lock(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(create).mode(0o600).open(path)
}

/// One group's files.
#[derive(Clone)]
struct GroupFiles {
    dir: PathBuf,
}

impl GroupFiles {
    fn new(store_dir: &Path, name: &str) -> GroupFiles {
        GroupFiles { dir: root(store_dir).join(names::encode(name)) }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn lock_file(&self) -> PathBuf {
        self.dir.join(".lock")
    }

    fn members(&self) -> PathBuf {
        self.dir.join("members")
    }

    fn member(&self, id: &str) -> PathBuf {
        self.members().join(format!("{}.lock", names::encode(id)))
    }

    /// The saved state, if any.
    fn read(&self) -> Result<Option<GroupState>> {
        let path = self.state();
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut bytes).map_err(io_err("reading", &path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let state = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(path.display().to_string(), format!("bad group state: {e}"))
        })?;
        Ok(Some(state))
    }

    /// Whether the member `id` is alive: its lock file is there and locked.
    fn alive(&self, id: &str) -> Result<bool> {
        let path = self.member(id);
        let file = match open_lock(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        let free = fsutil::try_lock_exclusive(&file).map_err(io_err("locking", &path))?;
        if free {
            // Its holder died: nobody will use the file again.
            let _ = fs::remove_file(&path);
        }
        Ok(!free)
    }

    /// The live members' ids.
    fn live_members(&self) -> Result<Vec<String>> {
        let dir = self.members();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else { continue };
            let Some(id) = names::decode(id) else { continue };
            if self.alive(&id)? {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The group lock, held while it lives.
struct Locked {
    _file: File,
}

fn lock_group(files: &GroupFiles) -> Result<Locked> {
    let path = files.lock_file();
    let file = open_lock(&path, true).map_err(io_err("opening", &path))?;
    fsutil::lock_exclusive(&file).map_err(io_err("locking", &path))?;
    Ok(Locked { _file: file })
}

/// The topics of the store's directory.
fn topics(dir: &Path) -> Result<Vec<Topic>> {
    Ok(list_logs(dir)?.into_iter().map(|(t, _)| t).collect())
}

impl FileStore {
    fn group_durability(&self) -> Durability {
        if self.config().sync == crate::SyncPolicy::Never {
            Durability::None
        } else {
            Durability::Full
        }
    }
}

impl GroupBackend for FileStore {
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>> {
        config.validate()?;
        let durability = self.group_durability();
        version::ensure_writable(self.dir(), durability != Durability::None)?;
        let files = GroupFiles::new(self.dir(), config.name.as_str());
        mkdir(&files.members())?;
        // A member's id: its label, this process and a number of this process.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id =
            format!("{member}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        // Locked before it gets its name: a member's file is never there unlocked
        // while the member lives (whoever takes its lock takes it for dead).
        let path = files.member(&id);
        let tmp = fsutil::temp_path(&path);
        let member_lock = open_lock(&tmp, true).map_err(io_err("creating", &tmp))?;
        let locked = fsutil::try_lock_exclusive(&member_lock).map_err(io_err("locking", &tmp));
        if !matches!(locked, Ok(true)) {
            let _ = fs::remove_file(&tmp);
            return Err(locked.err().unwrap_or_else(|| {
                Error::invalid(
                    "group member",
                    format!("{} is locked by another process", tmp.display()),
                )
            }));
        }
        fs::rename(&tmp, &path).map_err(io_err("naming", &path))?;
        let store = FileStore::open_with(self.dir(), self.config().clone())?;
        // Watch first, then look: nothing appended in between is missed.
        let follower = store.follow(&config.pattern, FollowFrom::start(Start::New))?;
        let interrupt =
            Arc::new(Wakeup { flag: AtomicBool::new(false), follower: follower.interrupter() });
        let mut joined = FileMember {
            store,
            config: config.clone(),
            files,
            id,
            member_lock: Some(member_lock),
            follower,
            interrupt,
            cached: None,
            durability,
        };
        joined.with_state(|_, _| Ok(false))?;
        Ok(Box::new(joined))
    }

    fn list(&self) -> Result<Vec<GroupInfo>> {
        version::check_readable(self.dir())?;
        let dir = root(self.dir());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", &dir)(e)),
        };
        let topics = topics(self.dir())?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().and_then(names::decode) else { continue };
            let files = GroupFiles { dir: entry.path() };
            let Some(state) = files.read()? else { continue };
            out.push(state.info(self, &name, files.live_members()?, &topics)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &ConsumerName) -> Result<bool> {
        let files = GroupFiles::new(self.dir(), name.as_str());
        if !files.dir.is_dir() {
            return Ok(false);
        }
        version::ensure_writable(self.dir(), self.group_durability() != Durability::None)?;
        let _locked = lock_group(&files)?;
        let live = files.live_members()?;
        if !live.is_empty() {
            return Err(seed_event::group_in_use(name, &live));
        }
        fs::remove_dir_all(&files.dir).map_err(io_err("removing", &files.dir))?;
        if self.group_durability() != Durability::None {
            fsutil::sync_dir(&files.dir).map_err(io_err("syncing the directory of", &files.dir))?;
        }
        Ok(true)
    }
}

/// A member's interrupt: a flag, and the follower's wait cut short.
struct Wakeup {
    flag: AtomicBool,
    follower: Option<Arc<dyn Interrupt>>,
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Some(f) = &self.follower {
            f.interrupt();
        }
    }
}

struct FileMember {
    store: FileStore,
    config: GroupConfig,
    files: GroupFiles,
    id: String,
    /// The member's own lock, held while it lives.
    member_lock: Option<File>,
    /// Wakes the member when events are appended.
    follower: Box<dyn Follower>,
    interrupt: Arc<Wakeup>,
    /// The state as this member last saved it.
    cached: Option<GroupState>,
    durability: Durability,
}

impl FileMember {
    /// Runs `op` on the group's state under the group lock (creating the
    /// group the first time), after taking back the events of dead members
    /// and those past their ack wait; saves the state if anything changed
    /// and settles dead letters (their marks saved before they are appended).
    fn with_state<T>(
        &mut self,
        op: impl FnOnce(&mut GroupState, &FileStore) -> Result<T>,
    ) -> Result<T>
    where
        T: Changed,
    {
        let _locked = lock_group(&self.files)?;
        let mut state = match self.load()? {
            Some(state) => {
                state.check(&self.config)?;
                state
            }
            None => {
                let mut state =
                    GroupState::create(&self.store, &self.config, &topics(self.store.dir())?)?;
                state.version = 0;
                self.save(&mut state)?;
                state
            }
        };
        let before = state.version;
        let files = self.files.clone();
        let me = self.id.clone();
        let mut changed = state.reap(&self.config, group_engine::now(), &mut |m| {
            if m == me {
                return Ok(true);
            }
            files.alive(m)
        })?;
        let value = op(&mut state, &self.store)?;
        changed |= value.changed();
        if state.has_dead() {
            self.save(&mut state)?;
            state.settle_dead(&self.store, &self.config)?;
            changed = true;
        }
        if changed {
            self.save(&mut state)?;
        }
        debug_assert!(state.version >= before);
        self.cached = Some(state);
        Ok(value)
    }

    /// The saved state: the cached one when nobody saved since this member did.
    fn load(&mut self) -> Result<Option<GroupState>> {
        let path = self.files.state();
        let mut head = [0u8; 40];
        let n = match File::open(&path) {
            Ok(mut f) => f.read(&mut head).map_err(io_err("reading", &path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        if let Some(cached) = self.cached.take() {
            let prefix = format!("{{\"version\":{},", cached.version);
            if head[..n].starts_with(prefix.as_bytes()) {
                return Ok(Some(cached));
            }
        }
        self.files.read()
    }

    fn save(&self, state: &mut GroupState) -> Result<()> {
        state.version += 1;
        let bytes =
            serde_json::to_vec(state).map_err(|e| Error::invalid("group state", e.to_string()))?;
        write_atomic(&self.files.state(), &bytes, self.durability)
    }

    fn fetch_now(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<Duration>)> {
        let id = self.id.clone();
        let config = self.config.clone();
        let dir = self.store.dir().to_path_buf();
        let (got, wait) = self
            .with_state(|state, store| {
                let acked = state.ack(&id, acks) > 0;
                let got =
                    state.fetch(store, &config, &id, max, group_engine::now(), &topics(&dir)?)?;
                let mut wait = state.next_change().map(|at| {
                    Duration::from_micros(
                        u64::try_from(at.saturating_sub(group_engine::now())).unwrap_or(0),
                    )
                });
                if state.others_hold(&id) {
                    wait = Some(wait.map_or(WATCH_OTHERS, |w| w.min(WATCH_OTHERS)));
                }
                Ok(Fetched { changed: acked || !got.is_empty(), got, wait })
            })
            .map(|f| (f.got, f.wait))?;
        Ok((got, wait))
    }
}

/// What an operation under the group lock tells about its change.
trait Changed {
    fn changed(&self) -> bool;
}

impl Changed for bool {
    fn changed(&self) -> bool {
        *self
    }
}

struct Fetched {
    changed: bool,
    got: Vec<Delivery>,
    wait: Option<Duration>,
}

impl Changed for Fetched {
    fn changed(&self) -> bool {
        self.changed
    }
}

impl GroupMember for FileMember {
    fn id(&self) -> &str {
        &self.id
    }

    fn fetch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        self.ack_and_fetch(&[], max, timeout)
    }

    fn ack_and_fetch(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut acks = acks;
        loop {
            let (got, due) = self.fetch_now(acks, max)?;
            acks = &[];
            if !got.is_empty() || max == 0 {
                return Ok(got);
            }
            if self.interrupt.flag.swap(false, Ordering::SeqCst) {
                return Ok(got);
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(got);
            }
            let wait = due.map_or(left, |d| d.max(Duration::from_millis(1)).min(left));
            // Appended events only wake the member: the group hands them out.
            let _ = self.follower.next_batch(4096, wait)?;
        }
    }

    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let id = self.id.clone();
        self.with_state(|state, _| Ok(state.ack(&id, tokens) > 0)).map(drop)
    }

    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()> {
        let (id, config) = (self.id.clone(), self.config.clone());
        self.with_state(|state, _| {
            Ok(state.nack(&config, &id, token, delay, error, group_engine::now()))
        })
        .map(drop)
    }

    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()> {
        let (id, config) = (self.id.clone(), self.config.clone());
        self.with_state(|state, _| Ok(state.in_progress(&config, &id, token, group_engine::now())))
            .map(drop)
    }

    fn interrupter(&self) -> Arc<dyn Interrupt> {
        self.interrupt.clone()
    }
}

impl Drop for FileMember {
    fn drop(&mut self) {
        let id = self.id.clone();
        if let Err(e) = self.with_state(|state, _| Ok(state.leave(&id, group_engine::now()))) {
            log::warn!("group {}: member {id} could not hand its events back ({e}); they come back after their ack wait", self.config.name);
        }
        let _ = fs::remove_file(self.files.member(&self.id));
        self.member_lock = None;
    }
}
