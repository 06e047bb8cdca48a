//! Consumer locks: an `flock` on `<dir>/.consumers/<consumer>/.lock`, held
//! while the lock lives; the kernel releases it when the holder's file closes,
//! also when the process dies (SIGKILL included).
//!
//! Each acquisition writes the next generation to `.generation` beside it
//! while holding the flock; that number is the lock's [`Fence`]. A fenced
//! commit first checks that somebody holds the flock (a try-lock from a new
//! open file fails) and that `.generation` still holds its fence, so a
//! released or taken-over holder cannot commit. Removing `.consumers` by hand
//! while a holder runs defeats both checks.
//!
//! A waiter tries the lock every [`POLL`]: a blocking `flock` cannot be
//! cancelled (a helper thread blocked in it would take the lock after its
//! caller gave up), and a try-lock every 20 ms costs about 50 system calls a
//! second while waiting and bounds a takeover at that interval.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use seed_event::{ConsumerLock, ConsumerName, Error, Fence, LockRequest, Result};

use crate::consumers::consumer_dir;
use crate::fsutil::{self, write_atomic, Durability};

/// How often a waiter tries the lock.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// A held flock of one consumer; closing its file lets go.
struct FileLock {
    _file: File,
    fence: Fence,
}

impl ConsumerLock for FileLock {
    fn fence(&self) -> Fence {
        self.fence
    }

    /// A flock is held until its file closes: never lost while this lives.
    fn is_lost(&self) -> bool {
        false
    }
}

fn lock_path(cdir: &Path) -> PathBuf {
    cdir.join(".lock")
}

fn generation_path(cdir: &Path) -> PathBuf {
    cdir.join(".generation")
}

/// The generation in `.generation` (0 when there is none yet).
fn generation(cdir: &Path) -> Result<u64> {
    let path = generation_path(cdir);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            Error::corrupt(path.display().to_string(), format!("{text:?} is not a lock generation"))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn open_lock(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(create).mode(0o600).open(path)
}

/// Takes `name`'s lock, waiting as `request` says.
pub(crate) fn lock(
    dir: &Path,
    name: &ConsumerName,
    request: &LockRequest,
    durability: Durability,
) -> Result<Option<Box<dyn ConsumerLock>>> {
    let cdir = consumer_dir(dir, name);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cdir)
        .map_err(|e| Error::io(format!("creating {}", cdir.display()), e))?;
    let path = lock_path(&cdir);
    let file =
        open_lock(&path, true).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let try_lock = || match fsutil::try_lock_exclusive(&file) {
        Ok(held) => Ok(held.then_some(())),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    };
    let taken = request.retry(try_lock, |_| POLL)?;
    if taken.is_none() {
        return Ok(None);
    }
    let fence = Fence(generation(&cdir)? + 1);
    write_atomic(&generation_path(&cdir), fence.0.to_string().as_bytes(), durability)?;
    Ok(Some(Box::new(FileLock { _file: file, fence })))
}

/// Fails with [`Error::StaleLock`] unless `fence` is the current holder's.
pub(crate) fn check_fence(dir: &Path, name: &ConsumerName, fence: Fence) -> Result<()> {
    let cdir = consumer_dir(dir, name);
    let stale = || Error::StaleLock { consumer: name.to_string(), fence: fence.0 };
    let path = lock_path(&cdir);
    let probe = match open_lock(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(stale()),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let free = fsutil::try_lock_exclusive(&probe)
        .map_err(|e| Error::io(format!("locking {}", path.display()), e))?;
    // Nobody holds it (the probe closes with its lock), or somebody else does.
    if free || generation(&cdir)? != fence.0 {
        return Err(stale());
    }
    Ok(())
}
