//! Queries: forward scans, last-N read backwards, counts, statistics and verification.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use seed_event::support::{apply_limit, merge_by_timestamp};
use seed_event::{Cursor, EventStream, Limit, Query, Result, StoredEvent, Topic, TopicStats};

use crate::decode::{decode_line, try_decode};
use crate::lines::{open_snapshot, read_err, LineReader, RevLines, Tail};
use crate::meta;
use crate::paths::{list_logs, Paths};
use crate::prefix::{parse_prefix, Prefix};
use crate::search::search;

/// A line that is not a readable event, found by [`FileStore::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptLine {
    /// The topic whose log holds it.
    pub topic: Topic,
    /// Its byte offset in the log.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The events `query` selects in the store at `dir`.
pub(crate) fn read(dir: &Path, query: &Query) -> Result<EventStream<'static>> {
    query.validate()?;
    let topics: Vec<(Topic, PathBuf)> = match query.single_topic() {
        Some(t) => {
            let path = Paths::new(dir, t.as_str()).log;
            vec![(t, path)]
        }
        None => list_logs(dir)?.into_iter().filter(|(t, _)| query.selects_topic(t)).collect(),
    };
    if let (Some(Limit::Last(n)), [(topic, path)]) = (query.limit, topics.as_slice()) {
        let events = last_n(topic, path, query, n)?;
        return Ok(Box::new(events.into_iter().map(Ok)));
    }
    let mut streams: Vec<EventStream<'static>> = Vec::new();
    for (topic, path) in &topics {
        if let Some(scan) = scan(topic, path, query)? {
            streams.push(Box::new(scan));
        }
    }
    apply_limit(merge_by_timestamp(streams), query.limit)
}

/// The cursor of the last event in the log at `path`.
pub(crate) fn last_cursor(path: &Path) -> Result<Option<Cursor>> {
    Ok(open_snapshot(path)?.and_then(|(_, tail)| tail.last).map(|p| Cursor::new(p.seq, 0)))
}

/// How many events of the log at `path` come after `cursor`.
pub(crate) fn count_after(path: &Path, cursor: Cursor) -> Result<u64> {
    let Some((file, tail)) = open_snapshot(path)? else { return Ok(0) };
    let start = search(&file, 0, tail.end, tail.end, |p| p.seq > cursor.major())
        .map_err(|e| read_err(path, e))?;
    let mut reader = LineReader::new(start, tail.end);
    let mut n = 0;
    while let Some((_, line)) = reader.next_line(&file).map_err(|e| read_err(path, e))? {
        n += u64::from(parse_prefix(line).is_some());
    }
    Ok(n)
}

/// The statistics of every topic in `dir`.
pub(crate) fn topics(dir: &Path) -> Result<Vec<TopicStats>> {
    let mut out = Vec::new();
    for (topic, path) in list_logs(dir)? {
        if let Some(stats) = stats(dir, topic, &path)? {
            out.push(stats);
        }
    }
    Ok(out)
}

/// Every line of every topic that is not a readable event, with its topic and byte offset.
pub(crate) fn verify(dir: &Path) -> Result<Vec<CorruptLine>> {
    let mut out = Vec::new();
    for (topic, path) in list_logs(dir)? {
        let Some((file, tail)) = open_snapshot(&path)? else { continue };
        let mut reader = LineReader::new(0, tail.end);
        while let Some((offset, line)) = reader.next_line(&file).map_err(|e| read_err(&path, e))? {
            if let Err(reason) = try_decode(&topic, line) {
                out.push(CorruptLine { topic: topic.clone(), offset, reason });
            }
        }
    }
    Ok(out)
}

/// A forward scan of one topic, from the first line that can match.
fn scan(topic: &Topic, path: &Path, query: &Query) -> Result<Option<TopicScan>> {
    let Some((file, tail)) = open_snapshot(path)? else { return Ok(None) };
    let start = start_offset(&file, &tail, query).map_err(|e| read_err(path, e))?;
    let field = |name: &str, value: &Option<String>| {
        value.as_ref().map(|v| {
            let needle = format!("\"{name}\":{}", serde_json::Value::String(v.clone()));
            memchr::memmem::Finder::new(needle.as_bytes()).into_owned()
        })
    };
    let needles = [field("source", &query.source), field("correlation_id", &query.correlation_id)]
        .into_iter()
        .flatten()
        .collect();
    Ok(Some(TopicScan {
        topic: topic.clone(),
        path: path.to_path_buf(),
        file,
        reader: LineReader::new(start, tail.end),
        query: query.clone(),
        needles,
    }))
}

/// The last `n` matching events of one topic, read backwards.
pub(crate) fn last_n(
    topic: &Topic,
    path: &Path,
    query: &Query,
    n: usize,
) -> Result<Vec<StoredEvent>> {
    let Some((file, tail)) = open_snapshot(path)? else { return Ok(Vec::new()) };
    if n == 0 {
        return Ok(Vec::new());
    }
    let start = start_offset(&file, &tail, query).map_err(|e| read_err(path, e))?;
    let mut rev = RevLines::new(&file, start, tail.end).map_err(|e| read_err(path, e))?;
    let mut out = Vec::new();
    while let Some((offset, line)) = rev.next_line().map_err(|e| read_err(path, e))? {
        if let Some(e) = decode_line(topic, offset, line) {
            if query.matches(e.cursor, &e.event) {
                out.push(e);
                if out.len() == n {
                    break;
                }
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// The statistics of one topic, from its first and last readable events.
fn stats(dir: &Path, topic: Topic, path: &Path) -> Result<Option<TopicStats>> {
    let Some((file, tail)) = open_snapshot(path)? else { return Ok(None) };
    let mut first = None;
    let mut reader = LineReader::new(0, tail.end);
    while let Some((offset, line)) = reader.next_line(&file).map_err(|e| read_err(path, e))? {
        if let Some(e) = decode_line(&topic, offset, line) {
            first = Some(e);
            break;
        }
    }
    let mut last = None;
    let mut rev = RevLines::new(&file, 0, tail.end).map_err(|e| read_err(path, e))?;
    while let Some((offset, line)) = rev.next_line().map_err(|e| read_err(path, e))? {
        if let Some(e) = decode_line(&topic, offset, line) {
            last = Some(e);
            break;
        }
    }
    let sidecar = meta::read(&Paths::new(dir, topic.as_str()).meta)?;
    let gaps = match (&sidecar, &last) {
        (Some(m), Some(l)) => m.missing_before(l.cursor.major()),
        _ => 0,
    };
    let events = match (&first, &last) {
        (Some(f), Some(l)) => {
            (l.cursor.major() + 1).saturating_sub(f.cursor.major()).saturating_sub(gaps).max(1)
        }
        _ => 0,
    };
    Ok(Some(TopicStats {
        topic,
        events,
        bytes: tail.end,
        first: first.as_ref().map(|e| e.event.timestamp),
        last: last.as_ref().map(|e| e.event.timestamp),
        last_cursor: tail.last.map(|p| Cursor::new(p.seq, 0)),
    }))
}

/// The first line that can match the query's `after` and `since`, by bisection.
fn start_offset(file: &File, tail: &Tail, query: &Query) -> io::Result<u64> {
    if query.after.is_none() && query.since.is_none() {
        return Ok(0);
    }
    let after = query.after.map(|c| c.major());
    let since = query.since.map(|t| t.unix_micros());
    let pred = |p: &Prefix| after.is_none_or(|a| p.seq > a) && since.is_none_or(|s| p.hwm >= s);
    search(file, 0, tail.end, tail.end, pred)
}

/// A forward stream of one topic's matching events.
struct TopicScan {
    topic: Topic,
    path: PathBuf,
    file: File,
    reader: LineReader,
    query: Query,
    /// Texts every matching line contains (the source, the correlation id).
    needles: Vec<memchr::memmem::Finder<'static>>,
}

/// Whether `line` is an event at or after `query`'s `until`, told without
/// building the event. `hwm` bounds the event's time from above, so only a
/// line whose `hwm` reaches `until` is looked at, and then only its top-level
/// `timestamp` is parsed. A line that does not parse is not skipped here: the
/// full decode reports it.
fn past_until(query: &Query, line: &[u8]) -> bool {
    let Some(until) = query.until else { return false };
    match parse_prefix(line) {
        Some(p) if p.hwm >= until.unix_micros() => {}
        _ => return false,
    }
    #[derive(serde::Deserialize)]
    struct TimeOnly {
        timestamp: seed_event::Timestamp,
    }
    serde_json::from_slice::<TimeOnly>(line).is_ok_and(|t| t.timestamp >= until)
}

impl Iterator for TopicScan {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            let (offset, line) = match self.reader.next_line(&self.file) {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => return Some(Err(read_err(&self.path, e))),
            };
            // The store writes events compactly, so a line without the source's
            // (or correlation id's) exact text cannot match: skip it without parsing.
            if self.needles.iter().any(|f| f.find(line).is_none()) {
                continue;
            }
            if past_until(&self.query, line) {
                continue;
            }
            if let Some(e) = decode_line(&self.topic, offset, line) {
                if self.query.matches(e.cursor, &e.event) {
                    return Some(Ok(e));
                }
            }
        }
    }
}
