//! The on-disk format version mark, `<dir>/.format`: one line holding the
//! version of the log format the directory is written in.
//!
//! Version 1 is the format with store fields and tombstones. A directory
//! without a mark is version 1 (it was written before the mark existed, or
//! not at all); the first write through this crate marks it. A directory
//! marked with another version, or with a mark that is not a version, is
//! refused for reading and writing: its lines may mean something else, and a
//! writer that does not know its rules could lose events.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use seed_event::{Error, Result};

use crate::fsutil::{create_private, sync_all, sync_dir, temp_path};

/// The format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// The mark's file name in the events directory.
const MARK: &str = ".format";

fn mark_path(dir: &Path) -> PathBuf {
    dir.join(MARK)
}

/// What the mark says: `Ok(None)` without one.
fn read_mark(dir: &Path) -> Result<Option<u32>> {
    let path = mark_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    match text.trim().parse::<u32>() {
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(unsupported(dir, &format!("an unreadable format mark {:?}", text.trim()))),
    }
}

fn unsupported(dir: &Path, found: &str) -> Error {
    Error::invalid(
        "events directory",
        format!(
            "{} holds {found} in {MARK}; this build reads and writes format version \
             {FORMAT_VERSION} only (use the seed build that wrote it)",
            dir.display()
        ),
    )
}

/// Checks that this build may read `dir`: no mark, or the mark of [`FORMAT_VERSION`].
pub(crate) fn check_readable(dir: &Path) -> Result<()> {
    match read_mark(dir)? {
        None => Ok(()),
        Some(FORMAT_VERSION) => Ok(()),
        Some(v) => Err(unsupported(dir, &format!("format version {v}"))),
    }
}

/// Makes `dir` ready for a write by this build: creates it (mode 0700, synced
/// into its parent when `durable`) if it is missing, marks it with
/// [`FORMAT_VERSION`] if it has no mark, and refuses it if it has another.
pub(crate) fn ensure_writable(dir: &Path, durable: bool) -> Result<()> {
    if !dir.is_dir() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
            Error::io(format!("creating the events directory {}", dir.display()), e)
        })?;
        if durable {
            // Synced appends are durable only if the directory they go to is.
            sync_dir(dir).map_err(|e| {
                Error::io(format!("syncing the directory holding {}", dir.display()), e)
            })?;
        }
    }
    check_readable(dir)?;
    if mark_path(dir).exists() {
        return Ok(());
    }
    write_mark(dir)?;
    // Another process may have marked it first, with its own version.
    check_readable(dir)
}

/// Creates the mark atomically: written and synced under a temporary name,
/// then linked to its name, which fails if another process made it first.
fn write_mark(dir: &Path) -> Result<()> {
    let path = mark_path(dir);
    let tmp = temp_path(&path);
    let result = (|| {
        use std::io::Write as _;
        let mut f = create_private(&tmp)?;
        f.write_all(format!("{FORMAT_VERSION}\n").as_bytes())?;
        sync_all(&f)?;
        match fs::hard_link(&tmp, &path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => sync_dir(&path),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result.map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
