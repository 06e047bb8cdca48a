//! Durable consumer positions: `<dir>/.consumers/<consumer>/<topic>.json`, one small file per
//! consumer and topic, each replaced atomically (write to a temporary file, rename), so two
//! processes committing different topics of one consumer never lose each other's update.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use seed_event::{ConsumerName, Cursor, Error, Result, Topic};

use crate::fsutil::{self, write_atomic, Durability};
use crate::names;

/// The directory of consumer positions.
pub(crate) fn root(dir: &Path) -> PathBuf {
    dir.join(".consumers")
}

#[derive(Serialize, Deserialize)]
struct Position {
    consumer: ConsumerName,
    topic: Topic,
    cursor: Cursor,
}

/// The directory of `name`'s positions (and its lock).
pub(crate) fn consumer_dir(dir: &Path, name: &ConsumerName) -> PathBuf {
    root(dir).join(names::encode(name.as_str()))
}

/// Records `cursor` for `name` in `topic`.
pub(crate) fn commit(
    dir: &Path,
    name: &ConsumerName,
    topic: &Topic,
    cursor: Cursor,
    durability: Durability,
) -> Result<()> {
    let cdir = consumer_dir(dir, name);
    let creating = durability != Durability::None && !cdir.is_dir();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cdir)
        .map_err(|e| Error::io(format!("creating {}", cdir.display()), e))?;
    if creating {
        // The consumer's directory (and `.consumers`, if it is new too) must
        // survive a crash with the first position in it.
        for made in [&cdir, &root(dir)] {
            fsutil::sync_dir(made).map_err(|e| {
                Error::io(format!("syncing the directory of {}", made.display()), e)
            })?;
        }
    }
    let path = cdir.join(format!("{}.json", names::encode(topic.as_str())));
    let position = Position { consumer: name.clone(), topic: topic.clone(), cursor };
    let bytes = serde_json::to_vec(&position).unwrap_or_default();
    write_atomic(&path, &bytes, durability)
}

fn positions_in(cdir: &Path) -> Result<Vec<Position>> {
    let entries = match fs::read_dir(cdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", cdir.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", cdir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let position: Position = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(path.display().to_string(), format!("bad consumer position: {e}"))
        })?;
        out.push(position);
    }
    Ok(out)
}

/// Every committed position of `name`.
pub(crate) fn load(dir: &Path, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
    Ok(positions_in(&consumer_dir(dir, name))?
        .into_iter()
        .filter(|p| p.consumer == *name)
        .map(|p| (p.topic, p.cursor))
        .collect())
}

/// Every consumer with at least one committed position, sorted.
pub(crate) fn list(dir: &Path) -> Result<Vec<ConsumerName>> {
    let root = root(dir);
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", root.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
        if let Some(p) = positions_in(&entry.path())?.into_iter().next() {
            out.push(p.consumer);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
