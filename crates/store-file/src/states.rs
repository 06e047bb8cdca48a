//! Entity states on the file store: the [`StateBackend`] of [`FileStore`].
//!
//! The records of entity type `T` are the events of topic `state.T`, in its
//! ordinary log; the index `<dir>/.states/<stem>.idx` (see
//! [`crate::state_index`]) maps each entity to its newest record. A change is
//! written under the log's lock: bring the index up to the log's end, compare
//! the entity's version, append the line, update the slot and then the
//! header's covered end. A writer killed in between leaves a line past the
//! covered end: readers look at those lines too, and the next writer applies
//! them. An index that is missing, unreadable or of another log file (a
//! compaction or clear replaced the log) is rebuilt from the log under the lock.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use seed_event::support::lock;
use seed_event::{
    state_topic, version_conflict, Cursor, Error, EventStream, Result, StateBackend, StatePut,
    StoredEvent, Topic,
};

use crate::decode::{event_timestamp, try_decode};
use crate::fsutil::{write_atomic, Durability};
use crate::lines::{open_snapshot, read_at, read_err, LineReader};
use crate::names;
use crate::prefix::parse_prefix;
use crate::rewrite::Keep;
use crate::state_index::{hash_id, Head, Header, Index, Record, Slot, Table};
use crate::state_index::{HEADER, RECORD, SLOT};
use crate::store::FileStore;
use crate::version;
use crate::writer::{AppendSync, Locked};

/// Lines past the covered end a lock-free reader scans itself; beyond, it takes the lock.
const READER_TAIL: u64 = 1 << 20;

/// Per entity type: the index and log a process keeps open for reads.
#[derive(Default)]
pub(crate) struct TypeFiles {
    index: Option<Index>,
    log: Option<(File, (u64, u64))>,
}

/// The open files of every entity type a [`FileStore`] touched.
#[derive(Default)]
pub(crate) struct FileStates {
    types: Mutex<HashMap<String, Arc<Mutex<TypeFiles>>>>,
}

impl FileStates {
    fn files(&self, kind: &str) -> Arc<Mutex<TypeFiles>> {
        lock(&self.types).entry(kind.to_string()).or_default().clone()
    }
}

#[derive(Deserialize)]
struct LineView<'a> {
    #[serde(borrow)]
    payload: PayloadView<'a>,
}

#[derive(Deserialize)]
struct PayloadView<'a> {
    #[serde(borrow)]
    entity_id: Cow<'a, str>,
    version: u64,
}

/// The entity id and version a log line carries.
fn change_in(line: &[u8]) -> Option<(Cow<'_, str>, u64)> {
    if let Some((id, version)) = change_in_quickly(line) {
        return Some((Cow::Borrowed(id), version));
    }
    let view: LineView<'_> = serde_json::from_slice(line).ok()?;
    Some((view.payload.entity_id, view.payload.version))
}

/// [`change_in`] for a payload that starts `{"entity_id":"<id without
/// escapes>","version":<digits>` (as state changes are written); `None` otherwise.
///
/// The first `,"payload":{` of a line is the event's payload: only the
/// store fields, the id and the topic come before it, and no JSON string
/// holds a quote after a comma unescaped.
fn change_in_quickly(line: &[u8]) -> Option<(&str, u64)> {
    const PAYLOAD: &[u8] = b",\"payload\":{";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PAYLOAD));
    let at = FINDER.find(line)? + PAYLOAD.len();
    let rest = line[at..].strip_prefix(b"\"entity_id\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] != b'"' {
        return None;
    }
    let id = std::str::from_utf8(&rest[..end]).ok()?;
    let digits = rest[end + 1..].strip_prefix(b",\"version\":")?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 16 || !matches!(digits.get(n), Some(b',' | b'}')) {
        return None;
    }
    let version = std::str::from_utf8(&digits[..n]).ok()?.parse().ok()?;
    Some((id, version))
}

/// The whole line starting at `offset`, without its newline; `None` if it has none.
fn line_at(file: &File, offset: u64) -> io::Result<Option<Vec<u8>>> {
    let mut want = 1024;
    loop {
        let buf = read_at(file, offset, want)?;
        if let Some(nl) = memchr::memchr(b'\n', &buf) {
            let mut buf = buf;
            buf.truncate(nl);
            return Ok(Some(buf));
        }
        if buf.len() < want {
            return Ok(None);
        }
        want *= 4;
    }
}

/// Where an entity is in the table: `Ok((index, slot))`, or `Err(index)` of the empty slot it would take.
type Place = std::result::Result<(u64, Slot), u64>;

/// The index path of a type's log.
fn index_path(dir: &std::path::Path, topic: &Topic) -> PathBuf {
    dir.join(".states").join(format!("{}.idx", names::encode(topic.as_str())))
}

/// Where the greatest sequence number a compaction or clear removed is kept.
fn compacted_path(dir: &std::path::Path, topic: &Topic) -> PathBuf {
    dir.join(".states").join(format!("{}.compacted", names::encode(topic.as_str())))
}

/// The greatest sequence number removed from a type's log, if any was.
fn read_mark(path: &std::path::Path) -> Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::corrupt(path.display().to_string(), "not a sequence number")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(path, e)),
    }
}

/// A table in memory being filled from a log.
struct Builder {
    table: Table,
    history: u64,
}

impl Builder {
    /// Puts version `version` of `id` at `offset` (a line later in the log than any before).
    fn add(&mut self, id: &str, version: u64, offset: u64) {
        if (self.table.header.count + 1) * 2 > self.table.header.capacity {
            self.table = grown(&self.table);
        }
        let h = hash_id(id);
        let mask = self.table.header.capacity - 1;
        let mut i = h.0 & mask;
        loop {
            let mut slot = self.table.slot(i);
            if slot.hash == 0 {
                let chain = self.table.push_record(&Record { version, offset, prev: 0 });
                let new = Slot { hash: h.0, tag: h.1, version, offset, first: version, chain };
                self.table.set(i, &new);
                self.table.header.count += 1;
                self.table.header.lines += 1;
                return;
            }
            if slot.holds(h) {
                if version > slot.version {
                    let prev = slot.chain;
                    slot.chain = self.table.push_record(&Record { version, offset, prev });
                    slot.version = version;
                    slot.offset = offset;
                    if version + 1 > slot.first + self.history {
                        self.table.header.excess += 1;
                    }
                    self.table.header.lines += 1;
                    self.table.set(i, &slot);
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// The same entries in a table twice the size.
fn grown(old: &Table) -> Table {
    let mut table = Table::with_room(old.header.capacity);
    table.header = Header { capacity: table.header.capacity, ..old.header };
    table.records.clone_from(&old.records);
    let mask = table.header.capacity - 1;
    for i in 0..old.header.capacity {
        let slot = old.slot(i);
        if slot.hash == 0 {
            continue;
        }
        let mut j = slot.hash & mask;
        while table.slot(j).hash != 0 {
            j = (j + 1) & mask;
        }
        table.set(j, &slot);
    }
    table
}

/// A type's log locked for a state operation, with its index brought up to its end.
struct Synced<'l, 'w> {
    locked: &'l mut Locked<'w>,
    index: Index,
    header: Header,
    history: u64,
}

impl FileStore {
    fn history(&self) -> u64 {
        self.config().state_history.max(1)
    }

    /// Brings the index of the locked log `locked` up to the log's end, rebuilding it if needed.
    fn sync_index<'l, 'w>(
        &self,
        topic: &Topic,
        locked: &'l mut Locked<'w>,
        files: &mut TypeFiles,
    ) -> Result<Synced<'l, 'w>> {
        let path = index_path(self.dir(), topic);
        let len = locked.w.cached_len.unwrap_or(0);
        let id = locked.w.identity();
        let ioerr = |e: io::Error| Error::io(format!("reading {}", path.display()), e);
        for _ in 0..2 {
            if files.index.is_none() {
                files.index = Index::open(&path).map_err(ioerr)?;
            }
            let Some(index) = files.index.take() else { break };
            match index.header().map_err(ioerr)? {
                Head::Stale => continue,
                Head::Current(h) if (h.dev, h.ino) == id && h.covered_end <= len => {
                    let mut synced = Synced { locked, index, header: h, history: self.history() };
                    if h.covered_end < len && synced.catch_up(len).is_err() {
                        let Synced { locked, index, .. } = synced;
                        return self.rebuild(topic, locked, Some(index));
                    }
                    return Ok(synced);
                }
                _ => return self.rebuild(topic, locked, Some(index)),
            }
        }
        self.rebuild(topic, locked, None)
    }

    /// Builds the index of the locked log from its lines and puts it in place.
    fn rebuild<'l, 'w>(
        &self,
        topic: &Topic,
        locked: &'l mut Locked<'w>,
        old: Option<Index>,
    ) -> Result<Synced<'l, 'w>> {
        let path = index_path(self.dir(), topic);
        let len = locked.w.cached_len.unwrap_or(0);
        let (dev, ino) = locked.w.identity();
        let estimate = match old.as_ref().map(Index::header) {
            Some(Ok(Head::Current(h))) => h.count,
            _ => 0,
        };
        let log = locked.file();
        let mut builder = Builder { table: Table::with_room(estimate), history: self.history() };
        let mut reader = LineReader::new(0, len);
        while let Some((offset, line)) =
            reader.next_line(log).map_err(|e| read_err(&locked.w.paths.log, e))?
        {
            if let Some((id, version)) = change_in(line) {
                builder.add(&id, version, offset);
            }
        }
        let mut table = builder.table;
        table.header.covered_end = len;
        table.header.dev = dev;
        table.header.ino = ino;
        let index = table
            .install(&path, old.as_ref(), self.config().sync != crate::SyncPolicy::Never)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let header = table.header;
        Ok(Synced { locked, index, header, history: self.history() })
    }

    /// Runs `f` on the type's log, locked, with its index synced.
    fn with_synced<T>(
        &self,
        kind: &str,
        f: impl FnOnce(&mut Synced<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let topic = state_topic(kind)?;
        let files = self.states.files(kind);
        let slot = self.writer(&topic);
        let mut guard = lock(&slot);
        let writer = &mut *guard;
        if !writer.is_open() {
            version::ensure_writable(self.dir(), self.config().sync != crate::SyncPolicy::Never)?;
        }
        let mut locked = writer.lock()?;
        let mut files = lock(&files);
        let mut synced = self.sync_index(&topic, &mut locked, &mut files)?;
        let out = f(&mut synced);
        files.index = Some(synced.index);
        out
    }

    /// The open log of a type for reads, matching the index's identity `id`.
    fn reader_log(&self, topic: &Topic, files: &mut TypeFiles, id: (u64, u64)) -> Result<bool> {
        if files.log.as_ref().is_some_and(|(_, have)| *have == id) {
            return Ok(true);
        }
        let path = self.paths(topic).log;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(read_err(&path, e)),
        };
        let m = file.metadata().map_err(|e| read_err(&path, e))?;
        let have = (m.dev(), m.ino());
        files.log = Some((file, have));
        Ok(have == id)
    }

    /// The newest record of `id` without the lock, or `None` if the lock is needed
    /// (no index, an index behind a replaced log, a long unindexed tail).
    fn latest_unlocked(
        &self,
        topic: &Topic,
        kind: &str,
        id: &str,
    ) -> Result<Option<Option<StoredEvent>>> {
        let files = self.states.files(kind);
        let mut files = lock(&files);
        let path = index_path(self.dir(), topic);
        let ioerr = |e: io::Error| Error::io(format!("reading {}", path.display()), e);
        for _ in 0..4 {
            if files.index.is_none() {
                // A process checks the format mark as it opens an index.
                version::check_readable(self.dir())?;
                files.index = Index::open(&path).map_err(ioerr)?;
            }
            let Some(index) = files.index.as_ref() else {
                // No index: no state was written, unless a log is there to index.
                return Ok(if self.paths(topic).log.exists() { None } else { Some(None) });
            };
            let header = match index.header().map_err(ioerr)? {
                Head::Current(h) => h,
                Head::Stale => {
                    files.index = None;
                    continue;
                }
                Head::Unreadable => continue,
            };
            if !self.reader_log(topic, &mut files, (header.dev, header.ino))? {
                return Ok(None);
            }
            let (Some(index), Some((log, _))) = (files.index.as_ref(), files.log.as_ref()) else {
                return Ok(None);
            };
            let logpath = &self.paths(topic).log;
            let size = log.metadata().map_err(|e| read_err(logpath, e))?.len();
            if size > header.covered_end + READER_TAIL || size < header.covered_end {
                return Ok(None);
            }
            let Some(found) = probe(index, log, &header, id).map_err(|e| read_err(logpath, e))?
            else {
                continue;
            };
            let mut newest = found;
            if size > header.covered_end {
                let tail =
                    crate::lines::inspect_tail(log, size).map_err(|e| read_err(logpath, e))?;
                let mut reader = LineReader::new(header.covered_end, tail.end);
                while let Some((offset, line)) =
                    reader.next_line(log).map_err(|e| read_err(logpath, e))?
                {
                    if change_in(line).is_some_and(|(i, _)| i == id) {
                        newest = Some((offset, line.to_vec()));
                    }
                }
            }
            return match newest {
                None => Ok(Some(None)),
                Some((offset, line)) => decode(topic, offset, &line).map(|e| Some(Some(e))),
            };
        }
        Ok(None)
    }

    /// The kept records of `id` (with `only`, that version), newest first,
    /// found through the index's version records under the lock; `None` if
    /// they do not hold together.
    fn chained(&self, kind: &str, id: &str, only: Option<u64>) -> Result<Option<Vec<StoredEvent>>> {
        let topic = state_topic(kind)?;
        if !self.paths(&topic).log.exists() {
            return Ok(Some(Vec::new()));
        }
        let limit = self.history();
        self.with_synced(kind, |s| s.chain_of(&topic, id, limit, only))
    }

    /// Every line of the type's log that is a record of `id`, oldest first
    /// (read when the index's version records do not hold together).
    fn records_of(&self, kind: &str, id: &str) -> Result<Vec<StoredEvent>> {
        let topic = state_topic(kind)?;
        version::check_readable(self.dir())?;
        let path = self.paths(&topic).log;
        let Some((file, tail)) = open_snapshot(&path)? else { return Ok(Vec::new()) };
        let needle = format!("\"entity_id\":{}", serde_json::Value::String(id.to_string()));
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let mut reader = LineReader::new(0, tail.end);
        let mut out = Vec::new();
        while let Some((offset, line)) = reader.next_line(&file).map_err(|e| read_err(&path, e))? {
            if finder.find(line).is_none() || change_in(line).is_none_or(|(i, _)| i != id) {
                continue;
            }
            out.push(decode(&topic, offset, line)?);
        }
        let keep = self.history() as usize;
        if out.len() > keep {
            out.drain(..out.len() - keep);
        }
        Ok(out)
    }

    /// Rewrites a type's log keeping the lines `keep` accepts (given the line's
    /// seq, the line, its version and the entity's newest version); the next
    /// state operation rebuilds the index against the new log.
    ///
    /// The greatest sequence number that goes is recorded in
    /// `.states/<stem>.compacted` once the new log is written and before it
    /// replaces the old one, so a watch that finds the lines gone also finds the mark.
    pub(crate) fn rewrite_states(
        &self,
        locked: &mut Locked<'_>,
        topic: &Topic,
        mut keep: impl FnMut(u64, &[u8], u64, u64) -> bool,
    ) -> Result<u64> {
        let kind = topic.as_str().trim_start_matches(seed_event::STATE_TOPIC_PREFIX).to_string();
        let files = self.states.files(&kind);
        let mut files = lock(&files);
        let synced = self.sync_index(topic, locked, &mut files)?;
        let bytes = read_at(&synced.index.file, HEADER, (synced.header.capacity * SLOT) as usize)
            .map_err(|e| read_err(&synced.index.path, e))?;
        let table = Table { header: synced.header, bytes, records: Vec::new() };
        files.index = Some(synced.index);
        let mut decide = |line: &[u8]| -> Option<(u64, bool)> {
            let (p, (id, version)) = (parse_prefix(line)?, change_in(line)?);
            let newest = newest_in(&table, &id).unwrap_or(version);
            Some((p.seq, keep(p.seq, line, version, newest)))
        };
        // One pass: the greatest sequence number that goes is known when the
        // new log is written, and recorded before it replaces the old one.
        let gone = std::cell::Cell::new(0);
        let mark = compacted_path(self.dir(), topic);
        let record_mark = || -> Result<()> {
            let before = read_mark(&mark)?.unwrap_or(0);
            let durability = if self.config().sync == crate::SyncPolicy::Never {
                Durability::None
            } else {
                Durability::Full
            };
            if let Some(dir) = mark.parent() {
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(dir)
                .map_err(|e| read_err(dir, e))?;
            }
            write_atomic(&mark, gone.get().max(before).to_string().as_bytes(), durability)
        };
        locked.rewrite_then(
            |_, line| match decide(line) {
                Some((seq, false)) => {
                    gone.set(gone.get().max(seq));
                    Keep::No(true)
                }
                _ => Keep::Yes,
            },
            record_mark,
        )
    }

    /// Compacts a type's log to the history limit.
    fn compact_type(&self, kind: &str) -> Result<u64> {
        let topic = state_topic(kind)?;
        let slot = self.writer(&topic);
        let mut guard = lock(&slot);
        if !self.paths(&topic).log.exists() {
            return Ok(0);
        }
        version::ensure_writable(self.dir(), self.config().sync != crate::SyncPolicy::Never)?;
        let history = self.history();
        let removed = {
            let mut locked = guard.lock_strict()?;
            self.rewrite_states(&mut locked, &topic, |_, _, version, newest| {
                version + history > newest
            })?
        };
        if removed > 0 {
            drop(guard);
            self.with_synced(kind, |_| Ok(()))?;
        }
        Ok(removed)
    }
}

/// The newest version of `id` in an in-memory table.
fn newest_in(table: &Table, id: &str) -> Option<u64> {
    let h = hash_id(id);
    let mask = table.header.capacity - 1;
    let mut i = h.0 & mask;
    loop {
        let slot = table.slot(i);
        if slot.hash == 0 {
            return None;
        }
        if slot.holds(h) {
            return Some(slot.version);
        }
        i = (i + 1) & mask;
    }
}

/// A record found: its offset and line.
type Found = (u64, Vec<u8>);

/// Looks `id` up in the index: `Some(None)` absent, `Some(Some((offset, line)))`
/// found, `None` a torn read (read again).
fn probe(
    index: &Index,
    log: &File,
    header: &Header,
    id: &str,
) -> io::Result<Option<Option<Found>>> {
    let h = hash_id(id);
    let mask = header.capacity - 1;
    let mut i = h.0 & mask;
    for _ in 0..header.capacity {
        let Some(slot) = index.slot(i)? else { return Ok(None) };
        if slot.hash == 0 {
            return Ok(Some(None));
        }
        if slot.holds(h) {
            if let Some(line) = line_at(log, slot.offset)? {
                if let Some((i2, version)) = change_in(&line) {
                    if i2 == id {
                        return Ok((version == slot.version).then_some(Some((slot.offset, line))));
                    }
                }
            }
        }
        i = (i + 1) & mask;
    }
    Ok(Some(None))
}

fn decode(topic: &Topic, offset: u64, line: &[u8]) -> Result<StoredEvent> {
    try_decode(topic, line)
        .map_err(|reason| Error::corrupt(format!("topic {topic}, byte {offset}"), reason))
}

impl Synced<'_, '_> {
    /// Applies the log's lines from the covered end to `len`.
    fn catch_up(&mut self, len: u64) -> Result<()> {
        let log =
            self.locked.file().try_clone().map_err(|e| read_err(&self.locked.w.paths.log, e))?;
        let mut reader = LineReader::new(self.header.covered_end, len);
        while let Some((offset, line)) =
            reader.next_line(&log).map_err(|e| read_err(&self.locked.w.paths.log, e))?
        {
            if let Some((id, version)) = change_in(line) {
                self.apply(&id, version, offset)?;
            }
        }
        self.header.covered_end = len;
        self.write_header()
    }

    fn io(&self, e: io::Error) -> Error {
        Error::io(format!("updating {}", self.index.path.display()), e)
    }

    fn write_header(&self) -> Result<()> {
        self.index.write_header(&self.header).map_err(|e| self.io(e))
    }

    /// The slot of `id`: `Ok((index, slot))` where it is, `Err(index)` of the empty slot it would take.
    fn find(&self, id: &str) -> Result<Place> {
        let h = hash_id(id);
        let mask = self.header.capacity - 1;
        let mut i = h.0 & mask;
        for _ in 0..self.header.capacity {
            let slot = self.index.slot(i).map_err(|e| self.io(e))?.ok_or_else(|| {
                Error::corrupt(self.index.path.display().to_string(), "a slot does not check")
            })?;
            if slot.hash == 0 {
                return Ok(Err(i));
            }
            if slot.holds(h) {
                return Ok(Ok((i, slot)));
            }
            i = (i + 1) & mask;
        }
        Err(Error::corrupt(self.index.path.display().to_string(), "the table is full"))
    }

    /// Records version `version` of `id` at `offset` (idempotent: older versions are ignored).
    fn apply(&mut self, id: &str, version: u64, offset: u64) -> Result<()> {
        let place = self.find(id)?;
        self.apply_at(place, id, version, offset)
    }

    /// [`Synced::apply`] at the place [`Synced::find`] found.
    fn apply_at(&mut self, place: Place, id: &str, version: u64, offset: u64) -> Result<()> {
        match place {
            Ok((i, mut slot)) => {
                if version <= slot.version {
                    // This line's slot was written and the header not (a writer
                    // stopped between them): its version record counts.
                    if slot.offset == offset {
                        self.header.records = self.header.records.max(slot.chain);
                    }
                    return Ok(());
                }
                let record = Record { version, offset, prev: slot.chain };
                slot.chain = self.write_record(&record)?;
                slot.version = version;
                slot.offset = offset;
                if version + 1 > slot.first + self.history {
                    self.header.excess += 1;
                }
                self.index.write_slot(i, &slot).map_err(|e| self.io(e))?;
            }
            Err(i) => {
                let h = hash_id(id);
                let chain = self.write_record(&Record { version, offset, prev: 0 })?;
                let slot = Slot { hash: h.0, tag: h.1, version, offset, first: version, chain };
                self.index.write_slot(i, &slot).map_err(|e| self.io(e))?;
                self.header.count += 1;
            }
        }
        self.header.lines += 1;
        Ok(())
    }

    /// Writes the next version record; returns its number. The header
    /// counts it when it is written next.
    fn write_record(&mut self, record: &Record) -> Result<u64> {
        let n = self.header.records + 1;
        self.index.write_record(&self.header, n, record).map_err(|e| self.io(e))?;
        self.header.records = n;
        Ok(n)
    }

    /// The kept records of `id` (the newest `limit`; with `only`, just that
    /// version), newest first, by its chain of version records; `None` if the
    /// chain does not hold together (then the log is read).
    fn chain_of(
        &self,
        topic: &Topic,
        id: &str,
        limit: u64,
        only: Option<u64>,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let Ok((_, slot)) = self.find(id)? else { return Ok(Some(Vec::new())) };
        let log = self.locked.file();
        let mut out = Vec::new();
        let mut at = slot.chain;
        let mut seen = 0;
        while at != 0 && seen < limit {
            seen += 1;
            if at > self.header.records {
                return Ok(None);
            }
            let Some(record) = self.index.record(&self.header, at).map_err(|e| self.io(e))? else {
                return Ok(None);
            };
            let Some(line) = line_at(log, record.offset).map_err(|e| self.io(e))? else {
                return Ok(None);
            };
            if change_in(&line).is_none_or(|(i, v)| i != id || v != record.version) {
                return Ok(None);
            }
            at = record.prev;
            match only {
                Some(v) if v > record.version => break,
                Some(v) if v != record.version => continue,
                _ => {}
            }
            out.push(decode(topic, record.offset, &line)?);
        }
        Ok(Some(out))
    }

    /// Doubles the table when it is half full, before an insert.
    fn make_room(&mut self, durable: bool) -> Result<bool> {
        if (self.header.count + 1) * 2 <= self.header.capacity {
            return Ok(false);
        }
        let bytes = read_at(&self.index.file, HEADER, (self.header.capacity * SLOT) as usize)
            .map_err(|e| self.io(e))?;
        let at = HEADER + self.header.capacity * SLOT;
        let records = read_at(&self.index.file, at, (self.header.records * RECORD) as usize)
            .map_err(|e| self.io(e))?;
        if records.len() as u64 != self.header.records * RECORD {
            return Err(Error::corrupt(
                self.index.path.display().to_string(),
                "the version records end early",
            ));
        }
        let table = grown(&Table { header: self.header, bytes, records });
        let index =
            table.install(&self.index.path, Some(&self.index), durable).map_err(|e| self.io(e))?;
        self.index = index;
        self.header = table.header;
        Ok(true)
    }
}

impl StateBackend for FileStore {
    fn put(&self, put: &StatePut<'_>) -> Result<Cursor> {
        put.validate()?;
        let durable = self.config().sync != crate::SyncPolicy::Never;
        let sync = if self.config().sync == crate::SyncPolicy::Always {
            AppendSync::Data
        } else {
            AppendSync::None
        };
        let change = put.change;
        let (cursor, compact) = self.with_synced(put.kind, |s| {
            let mut place = s.find(put.id)?;
            let actual = place.map_or(0, |(_, slot)| slot.version);
            if actual != put.version - 1 {
                return Err(version_conflict(put.kind, put.id, put.version - 1, actual));
            }
            if actual == 0 && s.make_room(durable)? {
                place = s.find(put.id)?;
            }
            let offset = s.locked.w.cached_len.unwrap_or(0);
            s.locked.w.prepare(change);
            let seq = s.locked.append(change, sync)?;
            s.apply_at(place, put.id, put.version, offset)?;
            s.header.covered_end = s.locked.w.cached_len.unwrap_or(0);
            s.write_header()?;
            let compact = s.header.excess >= (s.header.lines / 2).max(1024);
            Ok((Cursor::new(seq, 0), compact))
        })?;
        if compact {
            if let Err(e) = self.compact_type(put.kind) {
                log::warn!("compacting the states of {}: {e}", put.kind);
            }
        }
        Ok(cursor)
    }

    fn latest(&self, kind: &str, id: &str) -> Result<Option<StoredEvent>> {
        let topic = state_topic(kind)?;
        if let Some(found) = self.latest_unlocked(&topic, kind, id)? {
            return Ok(found);
        }
        if !self.paths(&topic).log.exists() {
            return Ok(None);
        }
        self.with_synced(kind, |s| {
            let log = s.locked.file();
            match s.find(id)? {
                Err(_) => Ok(None),
                Ok((_, slot)) => match line_at(log, slot.offset).map_err(|e| s.io(e))? {
                    Some(line) => decode(&topic, slot.offset, &line).map(Some),
                    None => Ok(None),
                },
            }
        })
    }

    fn at_version(&self, kind: &str, id: &str, version: u64) -> Result<Option<StoredEvent>> {
        if let Some(latest) = self.latest(kind, id)? {
            if seed_event::change_of(&latest.event).is_some_and(|(_, v)| v == version) {
                return Ok(Some(latest));
            }
        } else {
            return Ok(None);
        }
        let is_it =
            |e: &StoredEvent| seed_event::change_of(&e.event).is_some_and(|(_, v)| v == version);
        match self.chained(kind, id, Some(version))? {
            Some(found) => Ok(found.into_iter().find(is_it)),
            None => Ok(self.records_of(kind, id)?.into_iter().find(is_it)),
        }
    }

    fn history(&self, kind: &str, id: &str) -> Result<Vec<StoredEvent>> {
        match self.chained(kind, id, None)? {
            Some(mut found) => {
                found.reverse();
                Ok(found)
            }
            None => self.records_of(kind, id),
        }
    }

    fn list(&self, kind: &str) -> Result<EventStream<'_>> {
        let topic = state_topic(kind)?;
        version::check_readable(self.dir())?;
        let logpath = self.paths(&topic).log;
        if !logpath.exists() {
            return Ok(Box::new(std::iter::empty()));
        }
        // Index every line there now, then read the table and log as they are.
        let path = index_path(self.dir(), &topic);
        let (index, header) = self.with_synced(kind, |s| {
            let file = File::open(&path).map_err(|e| read_err(&path, e))?;
            Ok((file, s.header))
        })?;
        let log = File::open(&logpath).map_err(|e| read_err(&logpath, e))?;
        let m = log.metadata().map_err(|e| read_err(&logpath, e))?;
        if (m.dev(), m.ino()) != (header.dev, header.ino) {
            return Err(Error::unavailable(format!(
                "the states of {kind} were compacted while listing them; list again"
            )));
        }
        Ok(Box::new(Listing {
            topic,
            index,
            log,
            header,
            next: 0,
            first: 0,
            chunk: Vec::new(),
            at: 0,
            path,
        }))
    }

    fn history_limit(&self) -> u64 {
        self.history()
    }

    fn compact(&self, kind: &str) -> Result<u64> {
        self.compact_type(kind)
    }

    fn compacted_through(&self, kind: &str) -> Result<Option<Cursor>> {
        let topic = state_topic(kind)?;
        Ok(read_mark(&compacted_path(self.dir(), &topic))?.map(|seq| Cursor::new(seq, 0)))
    }
}

/// Streams the newest record of every entity, slot by slot.
struct Listing {
    topic: Topic,
    index: File,
    log: File,
    header: Header,
    /// The next slot to read into `chunk`.
    next: u64,
    /// The slot `chunk` starts with.
    first: u64,
    chunk: Vec<u8>,
    at: usize,
    path: PathBuf,
}

impl Listing {
    /// Slot `i` read again until it checks.
    fn reread(&self, i: u64) -> Result<Slot> {
        let index = Index {
            file: self.index.try_clone().map_err(|e| read_err(&self.path, e))?,
            path: self.path.clone(),
        };
        for _ in 0..100 {
            if let Some(slot) = index.slot(i).map_err(|e| read_err(&self.path, e))? {
                return Ok(slot);
            }
        }
        Err(Error::corrupt(self.path.display().to_string(), format!("slot {i} does not check")))
    }
}

impl Iterator for Listing {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            if self.at >= self.chunk.len() {
                if self.next >= self.header.capacity {
                    return None;
                }
                let n = (self.header.capacity - self.next).min(1024);
                match read_at(&self.index, HEADER + self.next * SLOT, (n * SLOT) as usize) {
                    Ok(b) => {
                        self.chunk = b;
                        self.first = self.next;
                    }
                    Err(e) => return Some(Err(read_err(&self.path, e))),
                }
                self.next += n;
                self.at = 0;
                if self.chunk.is_empty() {
                    return None;
                }
            }
            let raw = &self.chunk[self.at..(self.at + SLOT as usize).min(self.chunk.len())];
            self.at += SLOT as usize;
            // A torn slot (a writer is at it) is read again from the file.
            let slot = match Slot::decode(raw) {
                Some(slot) => slot,
                None => match self.reread(self.first + (self.at as u64 / SLOT) - 1) {
                    Ok(slot) => slot,
                    Err(e) => return Some(Err(e)),
                },
            };
            if slot.hash == 0 {
                continue;
            }
            let offset = slot.offset;
            return Some(match line_at(&self.log, offset) {
                Ok(Some(line)) => decode(&self.topic, offset, &line),
                Ok(None) => Err(Error::corrupt(
                    format!("topic {}, byte {offset}", self.topic),
                    "the index points past the end of the log",
                )),
                Err(e) => Err(read_err(&self.path, e)),
            });
        }
    }
}

/// Whether a state record line is kept by a clear up to `limit` (and before `before`):
/// lines after the limit, the newest record of each entity, and lines not older than `before`.
pub(crate) fn kept_by_clear(
    seq: u64,
    line: &[u8],
    version: u64,
    newest: u64,
    limit: u64,
    before: Option<i64>,
) -> bool {
    seq > limit
        || version >= newest
        || before.is_some_and(|b| event_timestamp(line).is_some_and(|ts| ts >= b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seed_event::{ChangeEvent, Event, EventStore, JsonObject};

    /// A change event of version `version` of `id`, as `seed-state` writes them.
    fn change(kind: &str, id: &str, version: u64) -> Event {
        let payload = serde_json::json!({"entity_id": id, "version": version, "n": version});
        let payload: JsonObject = payload.as_object().cloned().unwrap_or_default();
        Event::new(state_topic(kind).unwrap(), "test", payload)
    }

    /// The quick reading of a line's change agrees with the full one, and
    /// leaves what it cannot read for certain to it.
    #[test]
    fn changes_are_read_quickly_as_fully() {
        let mut encoder = crate::encode::BodyEncoder::default();
        let payloads = [
            serde_json::json!({"entity_id": "a-1", "version": 12, "state": {}}),
            serde_json::json!({"entity_id": "é\"q", "version": 3}),
            serde_json::json!({"entity_id": "x", "version": 9}),
            serde_json::json!({"version": 4, "entity_id": "late"}),
            serde_json::json!({"n": {"payload": {"entity_id": "inner", "version": 1}}, "entity_id": "outer", "version": 2}),
            serde_json::json!({"entity_id": "big", "version": 123456789012345678u64}),
            serde_json::json!({"n": 1, "m": {"x": 1, "payload": {"entity_id": "in", "version": 1}}, "entity_id": "out", "version": 2}),
        ];
        for payload in payloads {
            let event =
                Event::new(state_topic("k").unwrap(), "t", payload.as_object().cloned().unwrap());
            // The store's own encoder writes the body of appended events,
            // serde (through `seed-state`) the lines of state changes.
            let mut encoded = b"{\"seq\":5,\"hwm\":0,".to_vec();
            encoder.encode(&mut encoded, &event);
            encoded.pop();
            let mut written = b"{\"seq\":5,\"hwm\":0,".to_vec();
            written.extend_from_slice(&event.to_json_line().as_bytes()[1..]);
            for line in [encoded, written] {
                let view: LineView<'_> = serde_json::from_slice(&line).unwrap();
                let full = (view.payload.entity_id.to_string(), view.payload.version);
                let read = change_in(&line).map(|(i, v)| (i.to_string(), v));
                assert_eq!(read, Some(full.clone()), "{}", String::from_utf8_lossy(&line));
                if let Some((id, version)) = change_in_quickly(&line) {
                    assert_eq!((id.to_string(), version), full);
                }
            }
        }
    }

    fn put(store: &FileStore, id: &str, version: u64) -> Result<Cursor> {
        let change = ChangeEvent::from_event(&change("k", id, version))?;
        store.put(&StatePut { kind: "k", id, version, change: &change })
    }

    fn newest(store: &FileStore, id: &str) -> Option<u64> {
        store.latest("k", id).unwrap().and_then(|e| seed_event::change_of(&e.event).map(|c| c.1))
    }

    /// A writer killed after its line went out and before the index caught
    /// up is the same as an index of an older moment: readers still see the
    /// line, the next writer applies it, and versions continue.
    #[test]
    fn an_index_behind_the_log_is_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        put(&store, "a", 1).unwrap();
        let path = index_path(dir.path(), &state_topic("k").unwrap());
        let old = std::fs::read(&path).unwrap();
        put(&store, "a", 2).unwrap();
        put(&store, "b", 1).unwrap();
        // As if the index writes of the last two changes never happened.
        std::fs::write(&path, &old).unwrap();
        let fresh = FileStore::open(dir.path()).unwrap();
        assert_eq!((newest(&fresh, "a"), newest(&fresh, "b")), (Some(2), Some(1)));
        let err = put(&fresh, "a", 2).unwrap_err();
        assert_eq!(err.to_string(), "conflict: k/a is at version 2, expected 1");
        put(&fresh, "a", 3).unwrap();
        assert_eq!(newest(&FileStore::open(dir.path()).unwrap(), "a"), Some(3));
        let Head::Current(h) = Index::open(&path).unwrap().unwrap().header().unwrap() else {
            panic!("the index is not current")
        };
        assert_eq!((h.count, h.lines), (2, 4));
    }

    /// History and past versions follow the version records in the index
    /// and agree with a scan of the log: through growth of the table,
    /// compaction, and a writer stopped after a slot and before the header.
    #[test]
    fn versions_are_chained_in_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::FileStoreConfig::default().state_history(5);
        let store = FileStore::open_with(dir.path(), config.clone()).unwrap();
        for n in 0..3000u64 {
            put(&store, &format!("e{}", n % 1500), n / 1500 + 1).unwrap();
        }
        for v in 3..=12 {
            put(&store, "e7", v).unwrap();
        }
        let versions = |records: Vec<StoredEvent>| -> Vec<u64> {
            records.iter().map(|e| seed_event::change_of(&e.event).unwrap().1).collect()
        };
        let chained =
            |s: &FileStore, id: &str| versions(StateBackend::history(s, "k", id).unwrap());
        let scanned = |s: &FileStore, id: &str| versions(s.records_of("k", id).unwrap());
        assert_eq!(chained(&store, "e7"), (8..=12).collect::<Vec<_>>());
        for id in ["e7", "e8", "e1499"] {
            assert_eq!(chained(&store, id), scanned(&store, id), "{id}");
        }
        let at = |s: &FileStore, id: &str, v: u64| {
            s.at_version("k", id, v).unwrap().map(|e| versions(vec![e]))
        };
        assert_eq!(at(&store, "e7", 9), Some(vec![9]));
        assert_eq!(at(&store, "e7", 3), None, "past the history limit");
        assert_eq!(at(&store, "e8", 1), Some(vec![1]));
        assert_eq!(at(&store, "nobody", 1), None);
        assert!(store.compact("k").unwrap() > 0);
        let fresh = FileStore::open_with(dir.path(), config.clone()).unwrap();
        assert_eq!(chained(&fresh, "e7"), (8..=12).collect::<Vec<_>>());
        assert_eq!(chained(&fresh, "e8"), vec![1, 2]);
        // The version record and slot of e7's 13 are written, the header not.
        let path = index_path(dir.path(), &state_topic("k").unwrap());
        let header = std::fs::read(&path).unwrap()[..HEADER as usize].to_vec();
        put(&fresh, "e7", 13).unwrap();
        std::os::unix::fs::FileExt::write_all_at(
            &File::options().write(true).open(&path).unwrap(),
            &header,
            0,
        )
        .unwrap();
        let other = FileStore::open_with(dir.path(), config).unwrap();
        put(&other, "e8", 3).unwrap();
        assert_eq!(chained(&other, "e7"), (9..=13).collect::<Vec<_>>());
        assert_eq!(chained(&other, "e8"), vec![1, 2, 3]);
        assert_eq!(chained(&other, "e7"), scanned(&other, "e7"));
        let topic = state_topic("k").unwrap();
        for id in ["e7", "e8"] {
            let direct = other.with_synced("k", |s| s.chain_of(&topic, id, 5, None)).unwrap();
            assert!(direct.is_some(), "{id}'s chain holds together");
        }
    }

    /// Event retention limits leave state topics alone: states keep their own history limit.
    #[test]
    fn retention_limits_do_not_apply_to_state_topics() {
        let dir = tempfile::tempdir().unwrap();
        let retention = seed_event::Retention::new(seed_event::Limits::default().max_events(1));
        let config = crate::FileStoreConfig::default().retention(retention);
        let store = FileStore::open_with(dir.path(), config).unwrap();
        for n in 0..5 {
            put(&store, &format!("e{n}"), 1).unwrap();
        }
        assert_eq!(store.enforce_retention().unwrap(), 0);
        assert_eq!(store.list("k").unwrap().count(), 5);
    }

    /// An index that is garbage, missing or of a replaced log is rebuilt from the log.
    #[test]
    fn a_broken_or_missing_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for n in 0..3000u64 {
            put(&store, &format!("e{}", n % 1500), n / 1500 + 1).unwrap();
        }
        let path = index_path(dir.path(), &state_topic("k").unwrap());
        std::fs::write(&path, b"garbage").unwrap();
        let fresh = FileStore::open(dir.path()).unwrap();
        assert_eq!(newest(&fresh, "e7"), Some(2));
        std::fs::remove_file(&path).unwrap();
        let fresh = FileStore::open(dir.path()).unwrap();
        assert_eq!(fresh.list("k").unwrap().count(), 1500);
        put(&fresh, "e7", 3).unwrap();
        assert_eq!(newest(&store, "e7"), Some(3), "the first store reopens the new index");
        assert_eq!(fresh.clear(&seed_event::Clear::default()).unwrap(), 1501);
        assert_eq!(newest(&store, "e8"), Some(2), "a clear keeps the newest record");
        assert_eq!(newest(&store, "e7"), Some(3));
        assert_eq!(store.compacted_through("k").unwrap().map(|c| c.major() > 0), Some(true));
    }
}
