//! File-level helpers every other module builds on: private files, atomic
//! small-file writes, syncs, and the one lock helper through which every
//! `flock` of the crate goes (so the locking crate can be swapped here alone).
//!
//! This module imports nothing from the rest of the crate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Takes `file`'s exclusive lock, sleeping in the kernel until it is free.
///
/// It does not spin first: with more writer processes than cores, spinning
/// takes the cores the holder needs to finish its write.
#[inline]
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    fs2::FileExt::lock_exclusive(file)
}

/// Takes `file`'s exclusive lock if it is free: false when another open
/// file (in this or another process) holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match fs2::FileExt::try_lock_exclusive(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lets go of `file`'s lock.
#[inline]
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    fs2::FileExt::unlock(file)
}

/// Opens a new file with mode 0600 for writing.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// A temporary name beside `path`, hidden so it is never taken for a topic.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let short: String = name.chars().take(40).collect();
    path.with_file_name(format!(".tmp.{}.{n}.{short}", std::process::id()))
}

/// fdatasyncs `file`: its data and the metadata needed to read it back.
#[inline]
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    count(Sync::Data);
    file.sync_data()
}

/// fsyncs `file`: its data and all its metadata.
pub(crate) fn sync_all(file: &File) -> io::Result<()> {
    count(Sync::File);
    file.sync_all()
}

/// Syncs the directory holding `path`, so that a file created or renamed there stays after a crash.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    count(Sync::Dir);
    File::open(dir)?.sync_all()
}

/// How far [`write_atomic`] goes to make the new content survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Nothing is synced: the content survives a process crash, not a power loss.
    None,
    /// The file is synced before the rename; the caller syncs the directory
    /// after it (one sync for several renames).
    FileOnly,
    /// The file before the rename and the directory after it.
    Full,
}

/// Writes `bytes` to a temporary file and renames it over `path`, syncing as
/// `durability` says.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> seed_event::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        if durability != Durability::None {
            sync_all(&f)?;
            return fs::rename(&tmp, path);
        }
        replace_unsynced(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(seed_event::Error::io(format!("writing {}", path.display()), e));
    }
    if durability == Durability::Full {
        sync_dir(path).map_err(|e| {
            seed_event::Error::io(
                format!(
                    "syncing the directory of {} (its new content is in place and synced, \
                     the directory entry not)",
                    path.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Puts `tmp` in `path`'s place for a write that is not synced.
///
/// ext4 writes a file's data back before a rename that replaces another
/// file (its `auto_da_alloc` guard for unsynced replace-by-rename), which
/// costs a disk write per call; swapping the two names (`RENAME_EXCHANGE`)
/// and removing the old content is as atomic to readers and skips that.
/// Where the exchange is not possible (no file at `path` yet, a file system
/// without it) it is a plain rename.
fn replace_unsynced(tmp: &Path, path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let (Ok(from), Ok(to)) = (
        std::ffi::CString::new(tmp.as_os_str().as_bytes()),
        std::ffi::CString::new(path.as_os_str().as_bytes()),
    ) else {
        return fs::rename(tmp, path);
    };
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let swapped = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if swapped == 0 {
        // `tmp` now holds the old content.
        return fs::remove_file(tmp);
    }
    fs::rename(tmp, path)
}

/// What a sync call synced, counted in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// An fdatasync of a file.
    Data,
    /// An fsync of a file.
    File,
    /// An fsync of a directory.
    Dir,
}

#[cfg(test)]
thread_local! {
    static SYNCS: std::cell::Cell<[usize; 3]> = const { std::cell::Cell::new([0; 3]) };
}

#[cfg(test)]
fn count(kind: Sync) {
    SYNCS.with(|s| {
        let mut n = s.get();
        n[kind as usize] += 1;
        s.set(n);
    });
}

#[cfg(not(test))]
#[inline(always)]
fn count(_: Sync) {}

/// The syncs this thread made since the last call: fdatasyncs, file fsyncs, directory fsyncs.
#[cfg(test)]
pub(crate) fn take_syncs() -> [usize; 3] {
    SYNCS.with(|s| s.replace([0; 3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsynced_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pos.json");
        for content in ["first", "second, longer", "3"] {
            write_atomic(&path, content.as_bytes(), Durability::None).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
        }
        let names: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["pos.json"], "no temporary file is left");
    }
}
