//! One inotify instance per store, shared by all its followers in the process.
//!
//! The kernel allows few inotify instances per user (`fs.inotify.max_user_instances`,
//! often 128, for every program of the user), so a process with many
//! followers must not take one each. A [`Watcher`] holds the store's one
//! instance: a watch on the events directory for changes to log names, and a
//! watch on each followed log for appends. Whichever waiting follower finds
//! nobody reading the instance reads it and records what it saw, numbered by
//! a generation; the other followers sleep on a condition variable and, when
//! woken, look only for changes to their own logs newer than the last they
//! saw. Appends to other topics' logs wake nobody in the kernel's sense and
//! no follower in ours.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use seed_event::{Interrupt, Topic, TopicPattern};

use crate::names;
use seed_event::support::{lock, wait_timeout};

/// Changes to the directory's names (logs created, renamed in, removed).
const NAMES: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_MOVED_FROM | libc::IN_DELETE;
/// Changes to a file's content.
const CONTENT: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;
/// Changes of names kept for followers that have not looked yet; past this
/// many, the oldest go and every follower lists the directory again.
const NAMES_KEPT: usize = 1024;

/// The store's inotify instance.
pub(crate) struct Watcher {
    fd: OwnedFd,
    /// An eventfd in the reader's `poll` beside `fd`: written to cut the read short.
    wake_fd: OwnedFd,
    dir: CString,
    /// The directory's watch descriptor.
    dir_wd: i32,
    state: Mutex<State>,
    /// Whether the directory is on a local file system, whose inotify
    /// events can be trusted; on others followers list it now and then.
    local: AtomicBool,
}

/// `statfs` magic numbers of local file systems that send inotify events
/// for every change (ext2/3/4, XFS, Btrfs, tmpfs, overlayfs, ZFS, F2FS,
/// ReiserFS, JFS). Network and FUSE mounts, and any file system not named
/// here, may change without events.
const LOCAL_FILE_SYSTEMS: [i64; 9] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x794C_7630,
    0x2FC1_2FC1,
    0xF2F5_2010,
    0x5265_4973,
    0x3153_464A,
];

/// Whether `dir` is on one of [`LOCAL_FILE_SYSTEMS`].
fn is_local(dir: &CString) -> bool {
    // SAFETY: statfs fills the zeroed struct; `dir` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(dir.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // the field's type differs between targets
    let magic = st.f_type as i64;
    LOCAL_FILE_SYSTEMS.contains(&magic)
}

/// What the readers of a [`Watcher`] saw.
#[derive(Default)]
struct State {
    /// Bumped for every read that found events.
    generation: u64,
    /// Per log watch: the generation of its last append.
    appended: HashMap<i32, u64>,
    /// Log names created, renamed or removed, with their generation.
    names: VecDeque<(u64, Vec<u8>)>,
    /// The generation of the last loss (queue overflow, names dropped): everybody looks again.
    lost: u64,
    /// Whether the directory watch reports appends to any file (a log could not be watched).
    dir_content: bool,
    /// In that case, the generation of the last such append.
    any_append: u64,
    /// Per log watch: how many followers' open logs use it (it goes at zero).
    refs: HashMap<i32, usize>,
    /// Whether a follower is reading the instance now.
    reading: bool,
    /// The condition variables of the followers waiting for the reader,
    /// each its own so that an interrupt wakes only its follower.
    waiting: Vec<Arc<Condvar>>,
}

impl State {
    /// Wakes every waiting follower: a reader recorded events.
    fn wake_waiting(&self) {
        for cv in &self.waiting {
            cv.notify_all();
        }
    }

    /// Called by a follower leaving its wait: when nobody reads the instance
    /// now, one waiting follower is woken to take over (the others sleep on).
    fn pass_reading(&self) {
        if !self.reading {
            if let Some(cv) = self.waiting.last() {
                cv.notify_all();
            }
        }
    }
}

/// What a wake-up said.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wake {
    /// Logs of the follower's topics appeared, were replaced or removed: list the directory again.
    pub rescan: bool,
    /// A followed log was appended to (or, where logs are not watched, any file was).
    pub appended: bool,
}

impl Wake {
    /// Whether anything happened.
    pub(crate) fn any(self) -> bool {
        self.rescan || self.appended
    }
}

impl Watcher {
    /// The watcher of `dir` that `slot` holds, made if there is none alive;
    /// `None` where inotify is unavailable.
    pub(crate) fn shared(slot: &Mutex<Weak<Watcher>>, dir: &Path) -> Option<Arc<Watcher>> {
        let mut slot = lock(slot);
        if let Some(w) = slot.upgrade() {
            return Some(w);
        }
        let w = Arc::new(Watcher::new(dir)?);
        *slot = Arc::downgrade(&w);
        Some(w)
    }

    fn new(dir: &Path) -> Option<Watcher> {
        // A descriptor a system call just returned, or why there is none.
        let owned = |raw: i32, what: &str| {
            if raw < 0 {
                let e = io::Error::last_os_error();
                log::warn!("no {what} for {} ({e}); its followers poll", dir.display());
                return None;
            }
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            Some(unsafe { OwnedFd::from_raw_fd(raw) })
        };
        // SAFETY: plain system calls; their results are checked.
        let fd = owned(
            unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) },
            "inotify instance",
        )?;
        // SAFETY: as above.
        let wake_fd =
            owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }, "eventfd")?;
        let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: `dir` is a valid C string and `fd` an inotify descriptor.
        let dir_wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), NAMES) };
        if dir_wd < 0 {
            log::warn!(
                "cannot watch {} ({}); its followers poll",
                dir.to_string_lossy(),
                io::Error::last_os_error()
            );
        }
        let local = AtomicBool::new(is_local(&dir));
        (dir_wd >= 0).then(|| Watcher { fd, wake_fd, local, dir, dir_wd, state: Mutex::default() })
    }

    /// Makes the directory's watch report appends to any file, for logs
    /// that cannot be watched one by one (the user's watches are used up).
    fn watch_any_file(&self, st: &mut State) {
        // SAFETY: as in `Watcher::new`; the same watch, with a wider mask.
        let wd = unsafe {
            libc::inotify_add_watch(self.fd.as_raw_fd(), self.dir.as_ptr(), NAMES | CONTENT)
        };
        if wd >= 0 {
            st.dir_content = true;
        }
    }

    /// Whether every change to the directory sends an event: then its
    /// followers need not list it by the clock.
    pub(crate) fn is_local(&self) -> bool {
        self.local.load(Ordering::Relaxed)
    }

    /// Takes the directory for one whose changes may send no events.
    #[cfg(test)]
    pub(crate) fn distrust_events(&self) {
        self.local.store(false, Ordering::Relaxed);
    }

    /// Watches no more logs one by one, as when the user's watches are used up.
    #[cfg(test)]
    pub(crate) fn stop_watching_logs(&self) {
        self.watch_any_file(&mut lock(&self.state));
    }

    /// Wakes the follower waiting on `cv`, or reading the instance, to look
    /// at its [`Wakeup`].
    fn wake(&self, cv: &Condvar) {
        drop(lock(&self.state));
        cv.notify_all();
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our eventfd; a full
        // counter (EAGAIN) still leaves it readable, which is all we need.
        unsafe { libc::write(self.wake_fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Reads what the instance holds, waiting up to `timeout` for something
    /// (or a [`Watcher::wake`]); records it and wakes the waiting followers.
    fn read(&self, timeout: Duration) -> io::Result<()> {
        let mut pfds = [self.fd.as_raw_fd(), self.wake_fd.as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if pfds[1].revents != 0 {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a valid buffer from our non-blocking eventfd.
            unsafe { libc::read(self.wake_fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        }
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if n == 0 {
                return Ok(());
            }
            let mut st = lock(&self.state);
            st.generation += 1;
            let generation = st.generation;
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
                    st.lost = generation;
                } else if wd == self.dir_wd {
                    if mask & NAMES != 0 && names_a_log(name) {
                        if st.names.len() == NAMES_KEPT {
                            // Who has not seen the dropped name must look again.
                            if let Some((dropped, _)) = st.names.pop_front() {
                                st.lost = st.lost.max(dropped);
                            }
                        }
                        st.names.push_back((generation, name.to_vec()));
                    }
                    if mask & CONTENT != 0 && st.dir_content {
                        st.any_append = generation;
                    }
                } else if mask & CONTENT != 0 {
                    st.appended.insert(wd, generation);
                } else if mask & libc::IN_IGNORED != 0 {
                    // The log is gone; its watch with it.
                    st.appended.remove(&wd);
                }
                i += 16 + len;
            }
            st.wake_waiting();
        }
    }
}

/// Whether a change to the file `name` may change which logs the directory
/// holds: a log, or the sidecar of a hashed name (such a log is listed only
/// once its sidecar is there); not a temporary file or `.consumers`.
fn names_a_log(name: &[u8]) -> bool {
    !name.starts_with(b".")
        && (name.ends_with(b".jsonl") || (name.ends_with(b".meta") && name.contains(&b'~')))
}

/// Cuts one follower's wait short: its [`Interrupt`].
///
/// The request stays until the follower takes it, so an interrupt that
/// comes before the wait still ends it.
pub(crate) struct Wakeup {
    requested: AtomicBool,
    /// For followers without inotify, which sleep on `slept`.
    sleep: Mutex<()>,
    slept: Condvar,
    /// What the follower waits on, under its watcher's lock, while another reads.
    woken: Arc<Condvar>,
    /// Weak: a handle kept after its follower went does not keep the instance open.
    watcher: Weak<Watcher>,
}

impl Wakeup {
    /// A wakeup for a follower that waits on `watcher` (or sleeps, without one).
    pub(crate) fn new(watcher: Option<&Arc<Watcher>>) -> Wakeup {
        Wakeup {
            requested: AtomicBool::new(false),
            sleep: Mutex::new(()),
            slept: Condvar::new(),
            woken: Arc::new(Condvar::new()),
            watcher: watcher.map_or_else(Weak::new, Arc::downgrade),
        }
    }

    /// Whether an interrupt is waiting to be taken.
    pub(crate) fn is_set(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Takes the interrupt waiting, if any.
    pub(crate) fn take(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }

    /// Sleeps up to `duration`, less if interrupted.
    pub(crate) fn sleep(&self, duration: Duration) {
        let guard = lock(&self.sleep);
        if !self.is_set() {
            drop(wait_timeout(&self.slept, guard, duration));
        }
    }
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        self.requested.store(true, Ordering::SeqCst);
        drop(lock(&self.sleep));
        self.slept.notify_all();
        if let Some(w) = self.watcher.upgrade() {
            w.wake(&self.woken);
        }
    }
}

/// One follower's view of its store's [`Watcher`].
pub(crate) struct Watch {
    watcher: Arc<Watcher>,
    /// The topics the follower follows: only their logs' names matter.
    pattern: TopicPattern,
    /// The watches of the logs it has open.
    logs: HashSet<i32>,
    /// The generation up to which it has looked.
    seen: u64,
    /// The watches of its logs appended to since [`Watch::take_appended`]
    /// last gave them; `None` if it cannot tell which.
    appended: Option<Vec<i32>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for wd in self.logs.clone() {
            self.unwatch(wd);
        }
    }
}

impl Watch {
    /// A view of `watcher` for a follower of `pattern`, which from now on
    /// sees every change (watch first, then look).
    pub(crate) fn new(watcher: Arc<Watcher>, pattern: &TopicPattern) -> Watch {
        let seen = lock(&watcher.state).generation;
        Watch {
            watcher,
            pattern: pattern.clone(),
            logs: HashSet::new(),
            seen,
            appended: Some(Vec::new()),
        }
    }

    /// The store's watcher this view is of.
    pub(crate) fn watcher(&self) -> &Arc<Watcher> {
        &self.watcher
    }

    /// Watches the log `file`, opened at `path`, for appends; call it before
    /// reading the log, so that no append after the read goes unnoticed.
    /// Returns the watch, to give back with [`Watch::unwatch`] when the log
    /// is closed. The watch is made through `/proc/self/fd`, on the very file
    /// opened: through `path` it could land on a log a clear renamed in
    /// between.
    pub(crate) fn watch_log(&mut self, file: &File, path: &Path) -> Option<i32> {
        let w = &self.watcher;
        // Under the lock: an `unwatch` of the same inode by another follower
        // must not remove the watch between our add and our count.
        let mut st = lock(&w.state);
        if st.dir_content {
            return None;
        }
        // The error is taken at once, before anything else can change errno.
        let add = |p: &Path| -> io::Result<i32> {
            let p = CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: `p` is a valid C string and `fd` an inotify descriptor.
            let wd = unsafe { libc::inotify_add_watch(w.fd.as_raw_fd(), p.as_ptr(), CONTENT) };
            if wd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(wd)
            }
        };
        let added = match add(&PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))) {
            // No /proc: by name (the rename of a new log over it still makes a rescan).
            Err(e) if e.kind() == io::ErrorKind::NotFound => add(path),
            other => other,
        };
        let e = match added {
            Ok(wd) => {
                if self.logs.insert(wd) {
                    *st.refs.entry(wd).or_default() += 1;
                }
                return Some(wd);
            }
            // Removed in between: the directory watch reports it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => e,
        };
        log::warn!(
            "cannot watch {} ({e}); followers wake on appends to any file of the directory \
             instead (fs.inotify.max_user_watches is the usual limit)",
            path.display()
        );
        w.watch_any_file(&mut st);
        None
    }

    /// Gives back a watch of [`Watch::watch_log`]: the log is closed. The
    /// last follower to give it back removes it.
    pub(crate) fn unwatch(&mut self, wd: i32) {
        if !self.logs.remove(&wd) {
            return;
        }
        let w = &self.watcher;
        let mut st = lock(&w.state);
        let Some(n) = st.refs.get_mut(&wd) else { return };
        *n -= 1;
        if *n == 0 {
            st.refs.remove(&wd);
            st.appended.remove(&wd);
            // SAFETY: a plain system call on our inotify descriptor; a watch
            // the kernel already dropped (its log deleted) fails harmlessly.
            unsafe { libc::inotify_rm_watch(w.fd.as_raw_fd(), wd) };
        }
    }

    /// What changed for this follower since it last looked.
    fn news(&self, st: &State) -> Wake {
        if st.lost > self.seen {
            return Wake { rescan: true, appended: true };
        }
        let appended = (st.dir_content && st.any_append > self.seen)
            || self.logs.iter().any(|wd| st.appended.get(wd).is_some_and(|&g| g > self.seen));
        let rescan = st
            .names
            .iter()
            .rev()
            .take_while(|(g, _)| *g > self.seen)
            .any(|(_, name)| self.may_follow(name));
        Wake { rescan, appended }
    }

    /// Whether the log (or sidecar) `name` may be one of a followed topic (a
    /// hashed name says no topic, so it may be).
    fn may_follow(&self, name: &[u8]) -> bool {
        let Some(name) = std::str::from_utf8(name).ok() else { return false };
        let Some(stem) = name.strip_suffix(".jsonl").or_else(|| name.strip_suffix(".meta")) else {
            return false;
        };
        names::is_hashed(stem)
            || names::decode(stem)
                .and_then(|t| Topic::new(t).ok())
                .is_some_and(|t| self.pattern.matches(&t))
    }

    /// The watches of the follower's logs appended to since the last call,
    /// as [`Watch::wait`] found them; `None` if it could not tell which (the
    /// kernel's queue overflowed, or logs are not watched one by one).
    pub(crate) fn take_appended(&mut self) -> Option<Vec<i32>> {
        self.appended.replace(Vec::new())
    }

    /// Notes which of the follower's logs were appended to since it last looked.
    fn note_appended(&mut self, st: &State) {
        let Some(appended) = &mut self.appended else { return };
        if st.lost > self.seen || (st.dir_content && st.any_append > self.seen) {
            self.appended = None;
            return;
        }
        let seen = self.seen;
        appended
            .extend(self.logs.iter().filter(|wd| st.appended.get(wd).is_some_and(|&g| g > seen)));
    }

    /// Waits until one of the follower's logs changes, `timeout` passes or
    /// `wakeup` is interrupted.
    pub(crate) fn wait(&mut self, timeout: Duration, wakeup: &Wakeup) -> io::Result<Wake> {
        let deadline = Instant::now().checked_add(timeout);
        let w = Arc::clone(&self.watcher);
        let mut st = lock(&w.state);
        // Whether this call read the instance at least once: even with no
        // time left, what is queued already is looked at.
        let mut looked = false;
        loop {
            let wake = self.news(&st);
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            let late = left.is_zero() || wakeup.is_set();
            if wake.any() || (late && (looked || st.reading)) {
                if wake.appended {
                    self.note_appended(&st);
                }
                self.seen = st.generation;
                st.pass_reading();
                return Ok(wake);
            }
            if st.reading {
                st.waiting.push(wakeup.woken.clone());
                st = wait_timeout(&wakeup.woken, st, left).0;
                if let Some(at) = st.waiting.iter().position(|cv| Arc::ptr_eq(cv, &wakeup.woken)) {
                    st.waiting.swap_remove(at);
                }
                continue;
            }
            st.reading = true;
            drop(st);
            let read = w.read(if wakeup.is_set() { Duration::ZERO } else { left });
            looked = true;
            st = lock(&w.state);
            st.reading = false;
            if let Err(e) = read {
                st.pass_reading();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::{self, OpenOptions};
    use std::io::Write as _;

    fn watch(slot: &Mutex<Weak<Watcher>>, dir: &Path, pattern: &str) -> Watch {
        let w = Watcher::shared(slot, dir).expect("these tests need inotify");
        Watch::new(w, &TopicPattern::new(pattern).unwrap())
    }

    fn now(w: &mut Watch) -> Wake {
        w.wait(Duration::ZERO, &Wakeup::new(None)).unwrap()
    }

    /// A clear may rename a new log over the name between the follower's
    /// open and its watch: the watch is on the file it opened, whose appends
    /// it reads, not on the newcomer (which the rename's event tells about).
    #[test]
    fn a_watch_is_on_the_file_opened_not_on_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Mutex::new(Weak::new());
        let mut w = watch(&slot, dir.path(), ">");
        let path = dir.path().join("t.jsonl");
        let mut opened = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let reader = File::open(&path).unwrap();
        fs::write(dir.path().join("new"), b"").unwrap();
        fs::rename(dir.path().join("new"), &path).unwrap();
        assert!(now(&mut w).rescan, "the rename is seen");
        let wd = w.watch_log(&reader, &path).expect("a watch");
        opened.write_all(b"x\n").unwrap();
        assert!(now(&mut w).appended, "an append to the file opened wakes");
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"y\n").unwrap();
        assert!(!now(&mut w).any(), "an append to the newcomer does not");
        w.unwatch(wd);
    }

    /// Followers of one log share its watch; the last to close the log
    /// removes it, so appends to logs nobody follows wake nobody.
    #[test]
    fn a_log_watch_goes_with_the_last_follower_using_it() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Mutex::new(Weak::new());
        let mut keeper = watch(&slot, dir.path(), "other");
        let (mut a, mut b) = (watch(&slot, dir.path(), "t"), watch(&slot, dir.path(), "t"));
        let path = dir.path().join("t.jsonl");
        let mut log = OpenOptions::new().create(true).append(true).open(&path).unwrap();
        for w in [&mut keeper, &mut a, &mut b] {
            let _ = now(w); // the log's creation
        }
        let file = File::open(&path).unwrap();
        let wd = a.watch_log(&file, &path).unwrap();
        assert_eq!(b.watch_log(&file, &path), Some(wd), "one inode, one watch");
        let refs = |k: &Watch| lock(&k.watcher.state).refs.get(&wd).copied();
        assert_eq!(refs(&keeper), Some(2));
        a.unwatch(wd);
        assert_eq!(refs(&keeper), Some(1));
        log.write_all(b"x\n").unwrap();
        assert!(now(&mut b).appended);
        drop(b);
        assert_eq!(refs(&keeper), None, "removed with the last user");
        let _ = now(&mut keeper); // the removal's IN_IGNORED
        let before = lock(&keeper.watcher.state).generation;
        log.write_all(b"y\n").unwrap();
        assert!(!now(&mut keeper).any());
        assert_eq!(lock(&keeper.watcher.state).generation, before, "not even read: no watch");
    }

    /// Past the names kept, only a follower that missed a dropped name
    /// looks at the directory again; later changes to other topics' logs
    /// still do not wake it.
    #[test]
    fn names_dropped_past_the_limit_wake_only_who_missed_them() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Mutex::new(Weak::new());
        let mut w = watch(&slot, dir.path(), "keep.a");
        for i in 0..NAMES_KEPT + 100 {
            File::create(dir.path().join(format!("n{i}.jsonl"))).unwrap();
        }
        assert!(now(&mut w).rescan, "it missed dropped names");
        File::create(dir.path().join("keep.b.jsonl")).unwrap();
        assert!(!now(&mut w).any(), "another topic's log");
        File::create(dir.path().join("keep.a.jsonl")).unwrap();
        assert!(now(&mut w).rescan, "its own topic's log");
    }

    /// A hashed name is listed once its sidecar is there: the sidecar's
    /// arrival makes a rescan; temporary files and other sidecars do not.
    #[test]
    fn the_sidecar_of_a_hashed_name_makes_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let slot = Mutex::new(Weak::new());
        let mut w = watch(&slot, dir.path(), "long.>");
        File::create(dir.path().join(".tmp.1.2.x~abc.meta")).unwrap();
        File::create(dir.path().join("plain.meta")).unwrap();
        assert!(!now(&mut w).any());
        File::create(dir.path().join("long.x~abc.meta")).unwrap();
        assert!(now(&mut w).rescan);
    }
}
