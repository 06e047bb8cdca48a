//! Where a topic's files are, and which topics a directory holds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use seed_event::{Error, Result, Topic};

use crate::{meta, names};

/// Where a topic's files are.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    /// The log, `<stem>.jsonl`.
    pub log: PathBuf,
    /// The sidecar, `<stem>.meta`.
    pub meta: PathBuf,
    /// Whether the stem is hashed (then the sidecar names the topic).
    pub hashed: bool,
}

impl Paths {
    /// The files of `topic` in `dir`.
    pub(crate) fn new(dir: &Path, topic: &str) -> Paths {
        let stem = names::encode(topic);
        Paths {
            log: dir.join(format!("{stem}.jsonl")),
            meta: dir.join(format!("{stem}.meta")),
            hashed: names::is_hashed(&stem),
        }
    }
}

/// Every topic log in `dir`, sorted by topic.
pub(crate) fn list_logs(dir: &Path) -> Result<Vec<(Topic, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // No directory yet: nothing was ever written.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".jsonl") else { continue };
        if stem.starts_with('.') {
            continue;
        }
        let topic = if names::is_hashed(stem) {
            match meta::read(&dir.join(format!("{stem}.meta"))) {
                Ok(Some(m)) => m.topic,
                _ => continue,
            }
        } else {
            match names::decode(stem) {
                Some(t) => t,
                None => continue,
            }
        };
        let Ok(topic) = Topic::new(topic) else { continue };
        if Paths::new(dir, topic.as_str()).log.file_name() != Some(entry.file_name().as_os_str()) {
            continue;
        }
        out.push((topic, entry.path()));
    }
    out.sort();
    Ok(out)
}
