//! The small sidecar `<stem>.meta` beside a log.
//!
//! It holds what the log alone cannot say: the exact topic of a hashed file
//! name, the sequence number to continue from after a clear emptied the log,
//! and how many sequence numbers a retention run left out between the first
//! and the last kept line (so counts stay exact without a scan).

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::{write_atomic, Durability};

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

/// Writes a sidecar atomically.
pub(crate) fn write(path: &Path, meta: &Meta, durability: Durability) -> seed_event::Result<()> {
    let bytes = serde_json::to_vec(meta).unwrap_or_default();
    write_atomic(path, &bytes, durability)
}
