//! Work groups on the file store: `<dir>/.groups/<group>/` holds
//!
//! - `.lock`, the group's `flock`: every change of the group happens under it;
//! - `state.0.json` and `state.1.json`, the group's [`GroupState`]
//!   (positions, pending events in runs, delivery counts, counters; its
//!   `version` first). Version `v` is written in place to slot `v % 2`,
//!   synced as the store's sync policy says, so a write cut short (its
//!   process killed) spoils only that slot and readers take the newest slot
//!   that parses. Writing in place spares the creation of a file per change
//!   (a temporary file and a rename cost ext4 an inode each time);
//! - `members/<id>.lock`, one per live member, `flock`ed by its member for
//!   its lifetime. Whoever holds the group lock tests the locks of the
//!   members holding events: a lock it can take belongs to a member that
//!   died (the kernel released it, also on SIGKILL), whose events are
//!   delivered to the others at once.
//!
//! An idle member waits on a follower of the group's pattern (inotify), cut
//! short by its interrupt and by the group's own inotify watch (a state
//! written, a member's files closed: acks and deaths free events for it),
//! for at most the time until the next pending event becomes due; without
//! inotify, at most [`WATCH_OTHERS`] while other members hold events.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
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

use crate::fsutil::{self, Durability};
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

    /// The two files the state alternates between: version `v` goes to slot `v % 2`.
    fn slot(&self, i: u64) -> PathBuf {
        self.dir.join(format!("state.{}.json", i % 2))
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

    /// The newest whole saved state, if any: the slot with the greater
    /// version that parses (a write cut short leaves the other one whole).
    fn read(&self) -> Result<Option<GroupState>> {
        let mut found = Vec::new();
        for i in 0..2 {
            let path = self.slot(i);
            match fs::read(&path) {
                // Made but never written (a crash between the two): no state.
                Ok(bytes) if bytes.is_empty() => {}
                Ok(bytes) => found.push((head_version(&bytes), bytes, path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("reading", &path)(e)),
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        let mut first_error = None;
        for (_, bytes, path) in &found {
            // A write cut short can leave new bytes then old ones that still
            // parse: only a slot whose trailer matches its body is whole.
            let Some(body) = checked_body(bytes) else {
                first_error.get_or_insert_with(|| {
                    Error::corrupt(
                        path.display().to_string(),
                        "a group state whose length or checksum does not match (a write cut short)",
                    )
                });
                continue;
            };
            match serde_json::from_slice::<GroupState>(body) {
                Ok(state) => return Ok(Some(state)),
                Err(e) => {
                    first_error.get_or_insert_with(|| {
                        Error::corrupt(path.display().to_string(), format!("bad group state: {e}"))
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Whether the member `id` is alive: its lock file is there and locked.
    fn alive(&self, id: &str) -> Result<bool> {
        let path = self.member(id);
        // Read-only: closing it then raises no IN_CLOSE_WRITE, which would
        // wake every idle member (whose reaping would wake the others again).
        let file = match OpenOptions::new().read(true).open(&path) {
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

    /// [`GroupFiles::alive`] on the lock file of `id` kept open in `open`
    /// (one open and close fewer per look at a member holding events).
    fn alive_kept(&self, id: &str, open: &mut HashMap<String, File>) -> Result<bool> {
        if !open.contains_key(id) {
            let path = self.member(id);
            // Read-only, as in `alive`.
            match OpenOptions::new().read(true).open(&path) {
                Ok(f) => open.insert(id.to_string(), f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(io_err("opening", &path)(e)),
            };
        }
        let Some(file) = open.get(id) else { return Ok(false) };
        let free =
            fsutil::try_lock_exclusive(file).map_err(|e| io_err("locking", &self.member(id))(e))?;
        if free {
            // Its holder died: nobody will use the file again (a file
            // another member removed meanwhile is free too: its holder died).
            let _ = fs::remove_file(self.member(id));
            open.remove(id);
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

/// The version a state file starts with (`{"version":N,`), if it does.
/// FNV-1a, 64 bits: enough to tell a slot written whole from one whose
/// write was cut short (not a defence against anyone).
fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// A state slot's bytes: the JSON, a newline, then `<length> <checksum>`
/// and a newline, so a slot cut short or mixed with older bytes is seen.
fn with_trailer(mut json: Vec<u8>) -> Vec<u8> {
    let trailer = format!("\n{} {:016x}\n", json.len(), checksum(&json));
    json.extend_from_slice(trailer.as_bytes());
    json
}

/// The JSON of a slot written by [`with_trailer`], if its trailer matches it.
fn checked_body(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_suffix(b"\n")?;
    let at = rest.iter().rposition(|b| *b == b'\n')?;
    let (body, trailer) = (&rest[..at], std::str::from_utf8(&rest[at + 1..]).ok()?);
    let (len, sum) = trailer.split_once(' ')?;
    let whole = len.parse::<usize>().ok()? == body.len()
        && u64::from_str_radix(sum, 16).ok()? == checksum(body);
    whole.then_some(body)
}

fn head_version(bytes: &[u8]) -> Option<u64> {
    let rest = bytes.strip_prefix(b"{\"version\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A member's id: its label, its process, a number of its process and a
/// random part, since processes in different PID namespaces (containers
/// sharing the events directory) can have the same process id.
fn member_id(label: &str, pid: u32, n: u64) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}-{pid}-{n}-{}", &random[..12])
}

/// Creates and locks the member lock file at `path`, never replacing one
/// that is there: it is made locked under a name of its own, then linked to
/// `path` (which fails if `path` exists), so a member's file is never there
/// unlocked while the member lives (whoever takes its lock takes it for dead).
fn claim_member_lock(path: &Path) -> Result<File> {
    let tmp = fsutil::temp_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    let claimed = match fsutil::try_lock_exclusive(&file) {
        Ok(true) => fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Error::invalid(
                    "group member",
                    format!(
                        "{} exists: another member has this id; expected an id of its own",
                        path.display()
                    ),
                )
            } else {
                io_err("naming", path)(e)
            }
        }),
        Ok(false) => Err(Error::invalid(
            "group member",
            format!("{} is locked by another process", tmp.display()),
        )),
        Err(e) => Err(io_err("locking", &tmp)(e)),
    };
    let _ = fs::remove_file(&tmp);
    claimed.map(|()| file)
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

/// A member's hold of the group lock on the file it keeps open (no open
/// and close per change, which would also wake the group's watchers).
struct GroupLockGuard<'a> {
    file: &'a File,
}

impl<'a> GroupLockGuard<'a> {
    fn take(file: &'a File, path: &Path) -> Result<GroupLockGuard<'a>> {
        fsutil::lock_exclusive(file).map_err(io_err("locking", path))?;
        Ok(GroupLockGuard { file })
    }
}

impl Drop for GroupLockGuard<'_> {
    fn drop(&mut self) {
        let _ = fsutil::unlock(self.file);
    }
}

/// Wakes an idle member when its group changes: a state slot written, a
/// file opened for writing closed (as the kernel does for every file of a
/// member whose process died: its lock, its state slots) or a member's lock
/// removed. A thread reads the group's own inotify instance and cuts the
/// member's follower's wait short. The watches are armed only while the
/// member is about to wait: a busy member is not woken by every change of
/// the others.
struct GroupWatch {
    fd: std::os::fd::OwnedFd,
    /// The group's directory and its `members/`.
    dirs: [std::ffi::CString; 2],
    armed: bool,
    stop: std::os::fd::OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What an armed watch reports.
const ARMED: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_DELETE | libc::IN_MOVED_TO;
/// What a disarmed watch reports: only its directory going away.
const DISARMED: u32 = libc::IN_DELETE_SELF;

impl GroupWatch {
    fn start(files: &GroupFiles, wakeup: Arc<Wakeup>) -> Option<GroupWatch> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let owned = |raw: i32| (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
        // SAFETY: plain system calls; their results are checked.
        let fd = owned(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: as above.
        let stop = owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        let dir = |p: PathBuf| std::ffi::CString::new(p.as_os_str().as_bytes()).ok();
        let mut watch = GroupWatch {
            fd,
            dirs: [dir(files.dir.clone())?, dir(files.members())?],
            armed: true,
            stop,
            thread: None,
        };
        watch.set(false).then_some(())?;
        let (fd, stop_fd) = (watch.fd.as_raw_fd(), watch.stop.as_raw_fd());
        let thread = std::thread::Builder::new()
            .name("group-watch".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let mut pfds = [fd, stop_fd].map(|fd| libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    // SAFETY: two valid pollfds (closed only after this thread is joined).
                    let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
                    if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        return;
                    }
                    if pfds[1].revents != 0 {
                        return;
                    }
                    let mut any = false;
                    // SAFETY: `buf` is writable for its length; the descriptor is non-blocking.
                    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {
                        any = true;
                    }
                    if any {
                        let follower = seed_event::support::lock(&wakeup.follower).clone();
                        if let Some(f) = follower {
                            f.interrupt();
                        }
                    }
                }
            })
            .ok()?;
        watch.thread = Some(thread);
        Some(watch)
    }

    /// Arms or disarms the watches; false when the kernel refused.
    fn set(&mut self, armed: bool) -> bool {
        use std::os::fd::AsRawFd;
        if self.armed == armed {
            return true;
        }
        let mask = if armed { ARMED } else { DISARMED };
        for dir in &self.dirs {
            // SAFETY: a valid C string and an inotify descriptor.
            if unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), dir.as_ptr(), mask) } < 0 {
                return false;
            }
        }
        self.armed = armed;
        true
    }
}

impl Drop for GroupWatch {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The store as [`GroupState::fetch`] sees it under the group lock: a query
/// of one topic yields the cursors of its events without decoding them
/// (each with a stand-in event); [`FileMember::decode`] reads the events
/// after the lock is released, so that members decode in parallel.
struct CursorsOnly<'a>(&'a FileStore);

impl EventStore for CursorsOnly<'_> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn append(&self, event: &seed_event::Event) -> Result<seed_event::Cursor> {
        self.0.append(event)
    }
    fn append_batch(
        &self,
        topic: &Topic,
        events: &[seed_event::Event],
    ) -> Result<Vec<seed_event::Cursor>> {
        self.0.append_batch(topic, events)
    }
    fn append_expecting(
        &self,
        event: &seed_event::Event,
        expected: Option<seed_event::Cursor>,
    ) -> Result<seed_event::Cursor> {
        self.0.append_expecting(event, expected)
    }
    fn last_cursor(&self, topic: &Topic) -> Result<Option<seed_event::Cursor>> {
        self.0.last_cursor(topic)
    }
    fn read(&self, query: &seed_event::Query) -> Result<seed_event::EventStream<'_>> {
        version::check_readable(self.0.dir())?;
        let Some(topic) = query.single_topic() else { return self.0.read(query) };
        let template = seed_event::Event::new(topic, "", seed_event::JsonObject::new());
        match crate::query::read_cursors(self.0.dir(), query, &template)? {
            Some(stream) => Ok(stream),
            None => self.0.read(query),
        }
    }
    fn count_after(&self, topic: &Topic, cursor: seed_event::Cursor) -> Result<u64> {
        self.0.count_after(topic, cursor)
    }
    fn follow(
        &self,
        pattern: &seed_event::TopicPattern,
        from: FollowFrom,
    ) -> Result<Box<dyn Follower>> {
        self.0.follow(pattern, from)
    }
    fn load_consumer(
        &self,
        name: &ConsumerName,
    ) -> Result<std::collections::BTreeMap<Topic, seed_event::Cursor>> {
        self.0.load_consumer(name)
    }
    fn commit_consumer(
        &self,
        name: &ConsumerName,
        topic: &Topic,
        cursor: seed_event::Cursor,
    ) -> Result<()> {
        self.0.commit_consumer(name, topic, cursor)
    }
    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        self.0.consumers()
    }
    fn topics(&self) -> Result<Vec<seed_event::TopicStats>> {
        self.0.topics()
    }
    fn clear(&self, what: &seed_event::Clear) -> Result<u64> {
        self.0.clear(what)
    }
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
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = member_id(member, std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let member_lock = claim_member_lock(&files.member(&id))?;
        let store = FileStore::open_with(self.dir(), self.config().clone())?;
        // Watch first, then look: nothing appended in between is missed.
        let follower = store.follow(&config.pattern, FollowFrom::start(Start::New))?;
        let interrupt = Arc::new(Wakeup {
            flag: AtomicBool::new(false),
            follower: std::sync::Mutex::new(follower.interrupter()),
        });
        let lock_path = files.lock_file();
        let group_lock =
            Arc::new(open_lock(&lock_path, true).map_err(io_err("opening", &lock_path))?);
        let watch = match store.config().inotify {
            true => GroupWatch::start(&files, interrupt.clone()),
            false => None,
        };
        let mut joined = FileMember {
            group_lock,
            watch,
            store,
            config: config.clone(),
            files,
            id,
            member_lock: Some(member_lock),
            follower,
            interrupt,
            cached: None,
            slots: [None, None],
            durability,
            peers: HashMap::new(),
            acks: Vec::new(),
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

/// A member's interrupt: a flag, and the wait of its current follower cut short.
struct Wakeup {
    flag: AtomicBool,
    follower: std::sync::Mutex<Option<Arc<dyn Interrupt>>>,
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let follower = seed_event::support::lock(&self.follower).clone();
        if let Some(f) = follower {
            f.interrupt();
        }
    }
}

/// How many appended events one wait reads at most; a wait that returns
/// this many means the follower fell behind while the member was busy, and
/// a new one takes its place (rather than decoding the backlog).
const WAKE_BATCH: usize = 4096;

struct FileMember {
    store: FileStore,
    config: GroupConfig,
    files: GroupFiles,
    id: String,
    /// The member's own lock, held while it lives.
    member_lock: Option<File>,
    /// The group's lock file, kept open.
    group_lock: Arc<File>,
    /// Wakes it when the group changes; `None` without inotify (then an
    /// idle member looks again every [`WATCH_OTHERS`] while others hold events).
    watch: Option<GroupWatch>,
    /// Wakes the member when events are appended.
    follower: Box<dyn Follower>,
    interrupt: Arc<Wakeup>,
    /// The state as this member last saved or read it.
    cached: Option<GroupState>,
    /// The two state files, once opened.
    slots: [Option<File>; 2],
    durability: Durability,
    /// The lock files of the other members holding events, kept open to
    /// test whether they live.
    peers: HashMap<String, File>,
    /// Acks of the next change, applied before events past their ack wait
    /// are taken back, so an ack a little late for an event nobody else
    /// took yet still counts.
    acks: Vec<DeliveryToken>,
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
        let group_lock = self.group_lock.clone();
        let _locked = GroupLockGuard::take(&group_lock, &self.files.lock_file())?;
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
        let acks = std::mem::take(&mut self.acks);
        let acked = !acks.is_empty() && state.ack(&me, &acks) > 0;
        let mut changed = acked;
        let mut peers = std::mem::take(&mut self.peers);
        let mut asked = Vec::new();
        changed |= state.reap(&self.config, group_engine::now(), &mut |m| {
            if m == me {
                return Ok(true);
            }
            asked.push(m.to_string());
            files.alive_kept(m, &mut peers)
        })?;
        // Only the files of members holding events stay open.
        if peers.len() > asked.len() {
            peers.retain(|id, _| asked.contains(id));
        }
        self.peers = peers;
        let value = op(&mut state, &self.store)?;
        changed |= value.changed();
        if state.has_dead() {
            self.save(&mut state)?;
            state.settle_dead(&self.store, &self.config)?;
            // The dead letters are made as durable as the state that no
            // longer holds their events, before it is saved.
            self.store.sync_single_appends(&self.config.dead_letter)?;
            changed = true;
        }
        if changed {
            self.save(&mut state)?;
        }
        debug_assert!(state.version >= before);
        self.cached = Some(state);
        Ok(value)
    }

    /// The saved state: the cached one when the newest slot holds its version.
    fn load(&mut self) -> Result<Option<GroupState>> {
        let mut newest = None;
        for i in 0..2 {
            let path = self.files.slot(i);
            let mut head = [0u8; 40];
            let n = match self.slot_file(i, false)? {
                Some(f) => std::os::unix::fs::FileExt::read_at(f, &mut head, 0)
                    .map_err(io_err("reading", &path))?,
                None => continue,
            };
            newest = newest.max(head_version(&head[..n]));
        }
        if newest.is_none() && self.slots.iter().all(Option::is_none) {
            return Ok(None);
        }
        if let Some(cached) = self.cached.take() {
            if newest == Some(cached.version) {
                return Ok(Some(cached));
            }
        }
        self.files.read()
    }

    /// Slot `i`'s file, kept open (created when `create`); `None` when it is not there.
    fn slot_file(&mut self, i: u64, create: bool) -> Result<Option<&File>> {
        let k = (i % 2) as usize;
        if self.slots[k].is_none() {
            let path = self.files.slot(i);
            let opened =
                OpenOptions::new().read(true).write(true).create(create).mode(0o600).open(&path);
            match opened {
                Ok(f) => {
                    if create && self.durability != Durability::None {
                        fsutil::sync_dir(&path)
                            .map_err(io_err("syncing the directory of", &path))?;
                    }
                    self.slots[k] = Some(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("opening", &path)(e)),
            }
        }
        Ok(self.slots[k].as_ref())
    }

    /// Writes the next version to the slot that does not hold the newest
    /// one, in place (so a write cut short spoils only that slot), synced as
    /// the sync policy says.
    fn save(&mut self, state: &mut GroupState) -> Result<()> {
        state.version += 1;
        let bytes = with_trailer(
            serde_json::to_vec(state).map_err(|e| Error::invalid("group state", e.to_string()))?,
        );
        let path = self.files.slot(state.version);
        let durable = self.durability != Durability::None;
        let Some(file) = self.slot_file(state.version, true)? else {
            return Err(Error::io(
                format!("opening {}", path.display()),
                io::ErrorKind::NotFound.into(),
            ));
        };
        std::os::unix::fs::FileExt::write_all_at(file, &bytes, 0)
            .map_err(io_err("writing", &path))?;
        file.set_len(bytes.len() as u64).map_err(io_err("writing", &path))?;
        if durable {
            fsutil::sync_data(file).map_err(io_err("syncing", &path))?;
        }
        Ok(())
    }

    fn fetch_now(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<Duration>)> {
        let id = self.id.clone();
        let config = self.config.clone();
        let dir = self.store.dir().to_path_buf();
        let watched = self.watch.is_some();
        self.acks.extend_from_slice(acks);
        // Listed before the group lock, not under it: a topic made meanwhile
        // is taken at the next fetch (its first append wakes this member).
        let topics = topics(&dir)?;
        let (got, wait) = self
            .with_state(|state, store| {
                let now = group_engine::now();
                let got = state.fetch(&CursorsOnly(store), &config, &id, max, now, &topics)?;
                let mut wait = state.next_change().map(|at| {
                    Duration::from_micros(
                        u64::try_from(at.saturating_sub(group_engine::now())).unwrap_or(0),
                    )
                });
                if !watched && state.others_hold(&id) {
                    wait = Some(wait.map_or(WATCH_OTHERS, |w| w.min(WATCH_OTHERS)));
                }
                Ok(Fetched { changed: !got.is_empty(), got, wait })
            })
            .map(|f| (f.got, f.wait))?;
        Ok((self.decode(got)?, wait))
    }

    /// The deliveries of a fetch with their events read from the logs (the
    /// fetch under the lock only took their cursors). One whose event is
    /// gone meanwhile (cleared, or its line unreadable, which a query skips)
    /// is acked: there is nothing to deliver.
    fn decode(&mut self, got: Vec<Delivery>) -> Result<Vec<Delivery>> {
        if got.is_empty() {
            return Ok(got);
        }
        let mut by_topic: std::collections::BTreeMap<&Topic, Vec<seed_event::Cursor>> =
            std::collections::BTreeMap::new();
        for d in &got {
            by_topic.entry(&d.token.topic).or_default().push(d.token.cursor);
        }
        // Per topic (in order) its events read, by cursor; each taken once.
        type Read = Vec<(seed_event::Cursor, Option<seed_event::Event>)>;
        let mut events: Vec<(Topic, Read)> = Vec::with_capacity(by_topic.len());
        for (topic, mut cursors) in by_topic {
            cursors.sort_unstable();
            let mut read = Vec::with_capacity(cursors.len());
            // Runs of near cursors, one query each.
            let mut i = 0;
            while i < cursors.len() {
                let mut j = i;
                while j + 1 < cursors.len()
                    && cursors[j + 1].major().saturating_sub(cursors[j].major()) <= 64
                {
                    j += 1;
                }
                let (first, last) = (cursors[i], cursors[j]);
                let span = last.major().saturating_sub(first.major()).saturating_add(1);
                let query = seed_event::Query {
                    after: (first > seed_event::Cursor::ZERO)
                        .then(|| group_engine::cursor_before(first)),
                    limit: Some(seed_event::Limit::First(
                        usize::try_from(span).unwrap_or(usize::MAX),
                    )),
                    ..seed_event::Query::topic(topic)
                };
                read.extend(
                    self.store
                        .query(&query)?
                        .into_iter()
                        .filter(|e| e.cursor >= first && e.cursor <= last),
                );
                i = j + 1;
            }
            // Queries come in cursor order; a duplicate cursor would be a store's fault.
            read.sort_by_key(|e| e.cursor);
            read.dedup_by_key(|e| e.cursor);
            events.push((
                topic.clone(),
                read.into_iter().map(|e| (e.cursor, Some(e.event))).collect(),
            ));
        }
        let mut out = Vec::with_capacity(got.len());
        let mut gone = Vec::new();
        for mut d in got {
            let found =
                events.binary_search_by(|(t, _)| t.cmp(&d.token.topic)).ok().and_then(|k| {
                    let read = &mut events[k].1;
                    let at = read.binary_search_by_key(&d.token.cursor, |e| e.0).ok()?;
                    read[at].1.take()
                });
            match found {
                Some(e) => {
                    d.event = seed_event::StoredEvent { cursor: d.token.cursor, event: e };
                    out.push(d);
                }
                None => gone.push(d.token),
            }
        }
        if !gone.is_empty() {
            self.ack(&gone)?;
        }
        Ok(out)
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
            let fetched = self.fetch_now(acks, max);
            acks = &[];
            let (got, due) = match fetched {
                Ok((got, _)) if !got.is_empty() => {
                    if let Some(w) = &mut self.watch {
                        w.set(false);
                    }
                    return Ok(got);
                }
                Ok(f) => f,
                Err(e) => return Err(e),
            };
            if max == 0 || self.interrupt.flag.swap(false, Ordering::SeqCst) {
                return Ok(got);
            }
            // About to wait: arm the group's watch, then look once more, so
            // that a change between the look and the arming is not missed.
            if let Some(w) = &mut self.watch {
                if !w.armed {
                    if !w.set(true) {
                        // No watch after all: look every WATCH_OTHERS instead.
                        self.watch = None;
                    }
                    continue;
                }
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(got);
            }
            let wait = due.map_or(left, |d| d.max(Duration::from_millis(1)).min(left));
            // Appended events only wake the member: the group hands them out.
            let woke = self.follower.next_batch(WAKE_BATCH, wait)?;
            if woke.len() >= WAKE_BATCH {
                self.follower =
                    self.store.follow(&self.config.pattern, FollowFrom::start(Start::New))?;
                *seed_event::support::lock(&self.interrupt.follower) = self.follower.interrupter();
            }
        }
    }

    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.acks.extend_from_slice(tokens);
        self.with_state(|_, _| Ok(false)).map(drop)
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

    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        let (id, config) = (self.id.clone(), self.config.clone());
        self.with_state(|state, _| {
            let now = group_engine::now();
            Ok(tokens.iter().fold(false, |c, t| state.in_progress(&config, &id, t, now) | c))
        })
        .map(drop)
    }

    fn release(&mut self, tokens: &[DeliveryToken]) -> Result<bool> {
        let id = self.id.clone();
        self.with_state(|state, _| Ok(state.release(&id, tokens, group_engine::now()) > 0))?;
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use seed_event::{Event, JsonObject, TopicPattern};

    /// A slot whose write was cut short over an older version, leaving
    /// bytes that still parse, is refused by its trailer: the other slot,
    /// the last one written whole, is used.
    #[test]
    fn a_slot_mixed_with_older_bytes_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let t = Topic::new("mixed").unwrap();
        let config =
            GroupConfig::new(ConsumerName::new("g").unwrap(), TopicPattern::new("mixed").unwrap())
                .unwrap()
                .start(seed_event::Start::Beginning);
        store.append(&Event::new(t.clone(), "test", JsonObject::new())).unwrap();
        let mut m = GroupBackend::join(&store, &config, "m").unwrap();
        let got = m.fetch(1, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 1);
        drop(m);
        let files = GroupFiles::new(dir.path(), "g");
        let newest = files.read().unwrap().unwrap().version;
        let older =
            (0..2).filter_map(|i| head_version(&fs::read(files.slot(i)).ok()?)).min().unwrap();
        assert!(older < newest);
        // One digit of the newest slot's body changed: still JSON, not whole.
        let path = files.slot(newest);
        let mut bytes = fs::read(&path).unwrap();
        let body_len = checked_body_unchecked(&bytes).len();
        let at = bytes[..body_len].iter().rposition(u8::is_ascii_digit).unwrap();
        bytes[at] = if bytes[at] == b'9' { b'8' } else { bytes[at] + 1 };
        assert_eq!(head_version(&bytes), Some(newest), "the head still says newest");
        fs::write(&path, &bytes).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(checked_body_unchecked(&bytes)).is_ok());
        assert_eq!(files.read().unwrap().unwrap().version, older, "the older, whole slot");
    }

    /// Two members with the same label, process id and number (processes
    /// in two PID namespaces sharing the events directory) get different ids.
    #[test]
    fn member_ids_differ_across_pid_namespaces() {
        assert_ne!(member_id("m", 7, 0), member_id("m", 7, 0));
    }

    /// Claiming a member lock file that exists fails and leaves it as it was
    /// (a rename would have put an unlocked file in a live member's place).
    #[test]
    fn a_member_lock_file_is_never_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.lock");
        let theirs = claim_member_lock(&path).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let err = claim_member_lock(&path).expect_err("a second claim of the same file");
        assert!(err.to_string().contains("another member has this id"), "{err}");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "the file is the first claim's");
        let again = OpenOptions::new().read(true).open(&path).unwrap();
        assert!(!fsutil::try_lock_exclusive(&again).unwrap(), "still locked by its member");
        drop(theirs);
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["m.lock"], "no temporary file is left");
    }

    /// Under `SyncPolicy::Batch` a single append is not synced, so the dead
    /// letter (appended as one) is synced before the state without its event
    /// is: three fdatasyncs (the state with its mark, the dead letter, the
    /// state without the event), not two.
    #[test]
    fn a_dead_letter_is_synced_before_its_event_leaves_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::FileStoreConfig::default().sync(crate::SyncPolicy::Batch);
        let store = FileStore::open_with(dir.path(), config).unwrap();
        let t = Topic::new("poison").unwrap();
        store.append(&Event::new(t.clone(), "test", JsonObject::new())).unwrap();
        let config =
            GroupConfig::new(ConsumerName::new("g").unwrap(), TopicPattern::new("poison").unwrap())
                .unwrap()
                .start(Start::Beginning)
                .max_deliveries(1);
        let mut m = GroupBackend::join(&store, &config, "m").unwrap();
        let got = m.fetch(1, Duration::ZERO).unwrap();
        fsutil::take_syncs();
        m.nack(&got[0].token, None, "bad").unwrap();
        assert_eq!(fsutil::take_syncs()[0], 3, "state with the mark, dead letter, state without");
        let dead = store.query(&seed_event::Query::topic(&config.dead_letter)).unwrap();
        assert_eq!(dead.len(), 1);
    }

    /// A fetch takes cursors under the group lock and reads the events
    /// after it: an event whose line turns out unreadable (which a query
    /// skips) is acked, neither delivered as a stand-in nor left in flight.
    #[test]
    fn an_unreadable_line_is_skipped_not_left_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let t = Topic::new("t").unwrap();
        {
            let store = FileStore::open(dir.path()).unwrap();
            let events: Vec<Event> = (0..3)
                .map(|n| {
                    let payload = serde_json::json!({ "n": n }).as_object().unwrap().clone();
                    Event::new(t.clone(), "test", payload)
                })
                .collect();
            store.append_batch(&t, &events).unwrap();
        }
        let path = dir.path().join("t.jsonl");
        let text = fs::read_to_string(&path).unwrap();
        let second = text.find('\n').unwrap() + 1;
        let (head, tail) = text.split_at(second);
        let stamp = tail.find("\"timestamp\":\"").unwrap() + "\"timestamp\":\"".len();
        let end = stamp + tail[stamp..].find('"').unwrap();
        let changed =
            format!("{head}{}9999-12-31T23:59:59.999999-01:00{}", &tail[..stamp], &tail[end..]);
        fs::write(&path, changed).unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let config =
            GroupConfig::new(ConsumerName::new("g").unwrap(), TopicPattern::new("t").unwrap())
                .unwrap()
                .start(Start::Beginning);
        let mut m = GroupBackend::join(&store, &config, "m").unwrap();
        let got = m.fetch(10, Duration::ZERO).unwrap();
        let ns: Vec<_> = got.iter().map(|d| d.event.event.payload["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, vec![0, 2]);
        let info = GroupBackend::list(&store).unwrap();
        assert_eq!((info[0].in_flight, info[0].waiting), (2, 0), "{info:?}");
    }

    /// The JSON of a slot without checking its trailer, for the test above.
    fn checked_body_unchecked(bytes: &[u8]) -> &[u8] {
        let rest = bytes.strip_suffix(b"\n").unwrap();
        &rest[..rest.iter().rposition(|b| *b == b'\n').unwrap()]
    }

    /// A crash between making a group's first state file and writing it
    /// leaves an empty file, which is no state, not a corrupt one.
    #[test]
    fn an_empty_state_file_is_no_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let config =
            GroupConfig::new(ConsumerName::new("g").unwrap(), TopicPattern::new("t").unwrap())
                .unwrap();
        let files = GroupFiles::new(dir.path(), "g");
        fs::create_dir_all(files.members()).unwrap();
        fs::write(files.slot(0), b"").unwrap();
        let mut m =
            GroupBackend::join(&store, &config, "m").expect("a group with an empty state file");
        assert!(m.fetch(10, Duration::ZERO).unwrap().is_empty());
        drop(m);
        assert_eq!(GroupBackend::list(&store).unwrap().len(), 1);
    }

    /// A member that was busy while thousands of events were appended takes
    /// a new follower instead of reading the backlog, and is still woken by
    /// an append and by its interrupt.
    #[test]
    fn a_member_whose_follower_fell_behind_takes_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let t = Topic::new("behind").unwrap();
        let config =
            GroupConfig::new(ConsumerName::new("g").unwrap(), TopicPattern::new("behind").unwrap())
                .unwrap()
                .max_in_flight(10_000);
        let mut m = GroupBackend::join(&store, &config, "m").unwrap();
        let events: Vec<Event> =
            (0..5000).map(|_| Event::new(t.clone(), "test", JsonObject::new())).collect();
        store.append_batch(&t, &events).unwrap();
        let got = m.fetch(10_000, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 5000);
        m.ack(&got.iter().map(|d| d.token.clone()).collect::<Vec<_>>()).unwrap();
        assert!(m.fetch(10, Duration::from_millis(100)).unwrap().is_empty());
        let writer = {
            let store = FileStore::open(dir.path()).unwrap();
            let t = t.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                store.append(&Event::new(t, "test", JsonObject::new())).unwrap();
            })
        };
        assert_eq!(m.fetch(10, Duration::from_secs(30)).unwrap().len(), 1, "woken by the append");
        writer.join().unwrap();
        let interrupt = m.interrupter();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            interrupt.interrupt();
        });
        assert!(
            m.fetch(10, Duration::MAX).unwrap().is_empty(),
            "the interrupt reaches the new follower"
        );
        stopper.join().unwrap();
    }

    /// A state write cut short (here: the newest slot with a torn tail) spoils
    /// only its slot: the group goes on from the other, one change earlier.
    #[test]
    fn a_torn_state_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let t = Topic::new("torn").unwrap();
        for _ in 0..3 {
            store.append(&Event::new(t.clone(), "test", JsonObject::new())).unwrap();
        }
        let config =
            GroupConfig::new(ConsumerName::new("g").unwrap(), TopicPattern::new("torn").unwrap())
                .unwrap()
                .start(Start::Beginning);
        let mut m = GroupBackend::join(&store, &config, "m").unwrap();
        let first = m.fetch(1, Duration::ZERO).unwrap();
        m.ack(&[first[0].token.clone()]).unwrap();
        let files = GroupFiles::new(dir.path(), "g");
        let newest = files.read().unwrap().unwrap();
        // Tear the slot holding the newest version: the version before it
        // (the fetch of event 1, not yet acked) is what the group has.
        let path = files.slot(newest.version);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let before = files.read().unwrap().unwrap();
        assert_eq!(before.version, newest.version - 1);
        drop(m);
        let mut again = GroupBackend::join(&store, &config, "m").unwrap();
        let got = again.fetch(10, Duration::ZERO).unwrap();
        let cursors: Vec<_> = got.iter().map(|d| d.token.cursor.major()).collect();
        assert_eq!(cursors, vec![1, 2, 3], "the ack was in the torn version; event 1 comes again");
    }
}
