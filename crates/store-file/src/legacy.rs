//! Importing an events directory written by the original Python implementation.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use seed_event::{Error, Event, EventStore, Query, Result, Topic};
use uuid::Uuid;

use crate::FileStore;

/// How many events go into one atomic append while importing.
const IMPORT_BATCH: usize = 1000;

/// What [`import_legacy`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// `.jsonl` files read.
    pub files: usize,
    /// Events appended to the store.
    pub imported: u64,
    /// Events skipped because an event with the same id was already in the topic.
    pub already_present: u64,
    /// Lines that are not events, with where they are and why.
    pub bad_lines: Vec<BadLine>,
}

/// A line of a legacy file that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The file it is in.
    pub file: PathBuf,
    /// Its line number, from 1.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Imports every `<topic>.jsonl` file of `legacy_dir` (the original Python
/// layout) into `store`, keeping each file's order.
///
/// Each line's topic comes from its own `topic` field, not from the file
/// name. Blank lines are passed over; every other line that is not an event
/// is listed in [`ImportReport::bad_lines`] with its file and line number, and
/// the rest is still imported. Importing again is safe: events whose id is
/// already in their topic are skipped, so an interrupted import can simply be
/// run again. `legacy_dir` must not be the store's own directory.
///
/// ```
/// let legacy = tempfile::tempdir()?;
/// std::fs::write(
///     legacy.path().join("task.completed.jsonl"),
///     r#"{"id": "0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21", "topic": "task.completed", "payload": {"n": 1}, "source": "fenrir", "timestamp": "2026-04-16T12:00:00.123456+00:00", "correlation_id": null, "metadata": {}}
/// not json
/// "#,
/// )?;
/// let events = tempfile::tempdir()?;
/// let store = store_file::FileStore::open(events.path())?;
/// let report = store_file::import_legacy(&store, legacy.path())?;
/// assert_eq!((report.imported, report.bad_lines.len()), (1, 1));
/// assert_eq!(report.bad_lines[0].line, 2);
/// let again = store_file::import_legacy(&store, legacy.path())?;
/// assert_eq!((again.imported, again.already_present), (0, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_legacy(store: &FileStore, legacy_dir: &Path) -> Result<ImportReport> {
    let canonical = |p: &Path| {
        fs::canonicalize(p).map_err(|e| Error::io(format!("opening {}", p.display()), e))
    };
    // A store directory not created yet cannot be the legacy one.
    if store.dir().exists() && canonical(legacy_dir)? == canonical(store.dir())? {
        return Err(Error::invalid(
            "legacy directory",
            format!(
                "{} is the store's own directory; import into another directory",
                legacy_dir.display()
            ),
        ));
    }
    let mut files: Vec<PathBuf> = fs::read_dir(legacy_dir)
        .map_err(|e| Error::io(format!("listing {}", legacy_dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "jsonl")
                && p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    let mut import = Import {
        store,
        report: ImportReport::default(),
        ids: HashMap::new(),
        pending: HashMap::new(),
    };
    for path in files {
        import.report.files += 1;
        import.file(&path)?;
    }
    let topics: Vec<Topic> = import.pending.keys().cloned().collect();
    for topic in topics {
        import.flush(&topic)?;
    }
    Ok(import.report)
}

struct Import<'a> {
    store: &'a FileStore,
    report: ImportReport,
    /// Ids already in the store (or imported now), per topic, loaded on first use.
    ids: HashMap<Topic, HashSet<Uuid>>,
    pending: HashMap<Topic, Vec<Event>>,
}

impl Import<'_> {
    fn file(&mut self, path: &Path) -> Result<()> {
        let io_err = |e: io::Error| Error::io(format!("reading {}", path.display()), e);
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io_err)? == 0 {
                return Ok(());
            }
            number += 1;
            let bad = |reason: String| BadLine { file: path.to_path_buf(), line: number, reason };
            let text = match std::str::from_utf8(&line) {
                Ok(t) => t.trim(),
                Err(e) => {
                    self.report.bad_lines.push(bad(format!("not UTF-8: {e}")));
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            match Event::from_json_line(text) {
                Ok(event) => self.event(event)?,
                Err(e) => self.report.bad_lines.push(bad(e.to_string())),
            }
        }
    }

    fn event(&mut self, event: Event) -> Result<()> {
        let topic = event.topic.clone();
        if !self.ids.contains_key(&topic) {
            let mut ids = HashSet::new();
            for stored in self.store.read(&Query::topic(&topic))? {
                ids.insert(stored?.event.id);
            }
            self.ids.insert(topic.clone(), ids);
        }
        let fresh = self.ids.get_mut(&topic).is_some_and(|ids| ids.insert(event.id));
        if !fresh {
            self.report.already_present += 1;
            return Ok(());
        }
        let batch = self.pending.entry(topic.clone()).or_default();
        batch.push(event);
        if batch.len() >= IMPORT_BATCH {
            self.flush(&topic)?;
        }
        Ok(())
    }

    fn flush(&mut self, topic: &Topic) -> Result<()> {
        let events = self.pending.remove(topic).unwrap_or_default();
        if !events.is_empty() {
            self.report.imported += self.store.append_batch(topic, &events)?.len() as u64;
        }
        Ok(())
    }
}
