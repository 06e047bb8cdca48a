//! The small sidecar `<stem>.meta` beside a log, and atomic small-file writes.
//!
//! It holds what the log alone cannot say: the exact topic of a hashed file
//! name, the sequence number to continue from after a clear emptied the log,
//! and how many sequence numbers a retention run left out between the first
//! and the last kept line (so counts stay exact without a scan).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The contents of a `.meta` sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The exact topic name.
    pub topic: String,
    /// Every sequence number up to this one was used before (continue after it).
    #[serde(default)]
    pub seq_base: u64,
    /// Sequence numbers missing between the first and the last line of the log.
    #[serde(default)]
    pub gaps: u64,
    /// Sequence numbers used after the last kept line, up to `seq_base`, by
    /// events a clear removed: missing too once later events are appended.
    #[serde(default)]
    pub trailing: u64,
}

impl Meta {
    /// Sequence numbers missing between the first line and a last line numbered `last`.
    pub(crate) fn missing_before(&self, last: u64) -> u64 {
        self.gaps + if last > self.seq_base { self.trailing } else { 0 }
    }
}

/// Reads a sidecar; `Ok(None)` when there is none.
pub(crate) fn read(path: &Path) -> seed_event::Result<Option<Meta>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            seed_event::Error::corrupt(path.display().to_string(), format!("bad sidecar: {e}"))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(seed_event::Error::io(format!("reading {}", path.display()), e)),
    }
}

/// How far [`write`] and [`write_atomic`] go to make the new content survive a crash.
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

/// Writes a sidecar atomically.
pub(crate) fn write(path: &Path, meta: &Meta, durability: Durability) -> seed_event::Result<()> {
    let bytes = serde_json::to_vec(meta).unwrap_or_default();
    write_atomic(path, &bytes, durability)
}

/// Opens a new file with mode 0600 for writing.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// A temporary name beside `path`, hidden so it is never taken for a topic.
pub(crate) fn temp_path(path: &Path) -> std::path::PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let short: String = name.chars().take(40).collect();
    path.with_file_name(format!(".tmp.{}.{n}.{short}", std::process::id()))
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
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(seed_event::Error::io(format!("writing {}", path.display()), e));
    }
    if durability == Durability::Full {
        crate::writer::sync_dir(path).map_err(|e| {
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
