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
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use seed_event::{Topic, TopicPattern};

use crate::names;

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
    dir: CString,
    /// The directory's watch descriptor.
    dir_wd: i32,
    state: Mutex<State>,
    /// Signalled when a reader recorded events or stopped reading.
    changed: Condvar,
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
    /// Whether a follower is reading the instance now.
    reading: bool,
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

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watcher {
    /// The watcher of `dir` that `slot` holds, made if there is none alive;
    /// `None` where inotify is unavailable.
    pub(crate) fn shared(slot: &Mutex<Weak<Watcher>>, dir: &Path) -> Option<Arc<Watcher>> {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = slot.upgrade() {
            return Some(w);
        }
        let w = Arc::new(Watcher::new(dir)?);
        *slot = Arc::downgrade(&w);
        Some(w)
    }

    fn new(dir: &Path) -> Option<Watcher> {
        // SAFETY: plain system call; the result is checked.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            log::warn!(
                "no inotify instance for {} ({}); its followers poll",
                dir.display(),
                io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: `dir` is a valid C string and `fd` an inotify descriptor.
        let dir_wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), NAMES) };
        (dir_wd >= 0).then(|| Watcher {
            fd,
            dir,
            dir_wd,
            state: Mutex::default(),
            changed: Condvar::new(),
        })
    }

    /// Reads what the instance holds, waiting up to `timeout` for something;
    /// records it and wakes the waiting followers.
    fn read(&self, timeout: Duration) -> io::Result<()> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
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
                    if mask & NAMES != 0 && is_log_name(name) {
                        if st.names.len() == NAMES_KEPT {
                            st.names.pop_front();
                            st.lost = generation;
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
            drop(st);
            self.changed.notify_all();
        }
    }
}

/// Whether `name` is a log's file name (not a sidecar, a temporary file or `.consumers`).
fn is_log_name(name: &[u8]) -> bool {
    name.ends_with(b".jsonl") && !name.starts_with(b".")
}

/// One follower's view of its store's [`Watcher`].
pub(crate) struct Watch {
    watcher: Arc<Watcher>,
    /// The topics the follower follows: only their logs' names matter.
    pattern: TopicPattern,
    /// The watches of the logs it follows.
    logs: HashSet<i32>,
    /// The generation up to which it has looked.
    seen: u64,
}

impl Watch {
    /// A view of `watcher` for a follower of `pattern`, which from now on
    /// sees every change (watch first, then look).
    pub(crate) fn new(watcher: Arc<Watcher>, pattern: &TopicPattern) -> Watch {
        let seen = lock(&watcher.state).generation;
        Watch { watcher, pattern: pattern.clone(), logs: HashSet::new(), seen }
    }

    /// Watches the log at `path` for appends; call it before reading the log,
    /// so that no append after the read goes unnoticed.
    pub(crate) fn watch_log(&mut self, path: &Path) {
        let w = &self.watcher;
        if lock(&w.state).dir_content {
            return;
        }
        let wd = CString::new(path.as_os_str().as_bytes()).ok().map_or(-1, |p| {
            // SAFETY: `p` is a valid C string and `fd` an inotify descriptor.
            unsafe { libc::inotify_add_watch(w.fd.as_raw_fd(), p.as_ptr(), CONTENT) }
        });
        if wd >= 0 {
            self.logs.insert(wd);
            return;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            // Removed in between: the directory watch reports it.
            return;
        }
        log::warn!(
            "cannot watch {} ({e}); followers wake on appends to any file of the directory instead",
            path.display()
        );
        // SAFETY: as in `Watcher::new`; the same watch, with a wider mask.
        let wd =
            unsafe { libc::inotify_add_watch(w.fd.as_raw_fd(), w.dir.as_ptr(), NAMES | CONTENT) };
        if wd >= 0 {
            lock(&w.state).dir_content = true;
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

    /// Whether the log `name` may be one of a followed topic (a hashed name
    /// says no topic, so it may be).
    fn may_follow(&self, name: &[u8]) -> bool {
        let Some(stem) = std::str::from_utf8(name).ok().and_then(|n| n.strip_suffix(".jsonl"))
        else {
            return false;
        };
        names::is_hashed(stem)
            || names::decode(stem)
                .and_then(|t| Topic::new(t).ok())
                .is_some_and(|t| self.pattern.matches(&t))
    }

    /// Waits until one of the follower's logs changes or `timeout` passes.
    pub(crate) fn wait(&mut self, timeout: Duration) -> io::Result<Wake> {
        let deadline = Instant::now() + timeout;
        let w = Arc::clone(&self.watcher);
        let mut st = lock(&w.state);
        // Whether this call read the instance at least once: even with no
        // time left, what is queued already is looked at.
        let mut looked = false;
        loop {
            let wake = self.news(&st);
            let now = Instant::now();
            let late = now >= deadline;
            if wake.any() || (late && (looked || st.reading)) {
                self.seen = st.generation;
                return Ok(wake);
            }
            if st.reading {
                st = w
                    .changed
                    .wait_timeout(st, deadline - now)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
                continue;
            }
            st.reading = true;
            drop(st);
            let read = w.read(deadline.saturating_duration_since(now));
            looked = true;
            st = lock(&w.state);
            st.reading = false;
            // Another follower may have to take over reading.
            w.changed.notify_all();
            read?;
        }
    }
}
