//! Queries: forward scans, last-N read backwards, counts, statistics and verification.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use seed_event::support::{apply_limit, merge_by_timestamp};
use seed_event::{
    Cursor, Error, Event, EventStream, Limit, Query, Result, StoredEvent, Timestamp, Topic,
    TopicStats,
};

use crate::decode::{decode_line, try_decode};
use crate::lines::{inspect_tail, open_snapshot, read_err, LineReader, RevLines, Tail};
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
    let keep_open = topics.len() <= OPEN_SCANS;
    let mut streams: Vec<EventStream<'static>> = Vec::new();
    for (topic, path) in &topics {
        if let Some(scan) = scan(topic, path, query, keep_open, None)? {
            streams.push(Box::new(scan));
        }
    }
    let merged = match keep_open {
        true => merge_by_timestamp(streams),
        false => merge_many(streams),
    };
    apply_limit(merged, query.limit)
}

/// The cursors of a query of one topic, with no filter but `after` and a
/// first-events limit, without decoding the events: each comes with
/// `template` for its event. `None` for any other query (read it whole).
pub(crate) fn read_cursors(
    dir: &Path,
    query: &Query,
    template: &Event,
) -> Result<Option<EventStream<'static>>> {
    let plain = query.source.is_none()
        && query.correlation_id.is_none()
        && query.since.is_none()
        && query.until.is_none()
        && !matches!(query.limit, Some(Limit::Last(_)));
    let Some(topic) = query.single_topic().filter(|_| plain) else { return Ok(None) };
    query.validate()?;
    let path = Paths::new(dir, topic.as_str()).log;
    let stream: EventStream<'static> =
        match scan(&topic, &path, query, true, Some(template.clone()))? {
            Some(scan) => Box::new(scan),
            None => Box::new(std::iter::empty()),
        };
    Ok(Some(apply_limit(stream, query.limit)?))
}

/// Up to this many topics, a query keeps each one's log open while it
/// streams; past it, each topic's log is opened only to read its next block
/// (8 KiB), so a query holds at most one file open however many topics it spans.
const OPEN_SCANS: usize = 16;

/// [`merge_by_timestamp`] for many streams: the same order (by timestamp,
/// then by stream), from a heap instead of a look at every stream's head.
/// A stream that fails is not read further; its error comes next.
fn merge_many(streams: Vec<EventStream<'static>>) -> EventStream<'static> {
    let n = streams.len();
    let mut merge = Merge {
        streams,
        heads: (0..n).map(|_| None).collect(),
        heap: BinaryHeap::with_capacity(n),
        errors: VecDeque::new(),
    };
    for i in 0..n {
        merge.advance(i);
    }
    Box::new(merge)
}

/// The state of [`merge_many`].
struct Merge {
    streams: Vec<EventStream<'static>>,
    /// Each stream's next event.
    heads: Vec<Option<StoredEvent>>,
    /// The heads' timestamps and streams, earliest on top.
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
    errors: VecDeque<Error>,
}

impl Merge {
    /// Reads stream `i`'s next event into its head.
    fn advance(&mut self, i: usize) {
        match self.streams[i].next() {
            Some(Ok(e)) => {
                self.heap.push(Reverse((e.event.timestamp, i)));
                self.heads[i] = Some(e);
            }
            Some(Err(e)) => self.errors.push_back(e),
            None => {}
        }
    }
}

impl Iterator for Merge {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            if let Some(e) = self.errors.pop_front() {
                return Some(Err(e));
            }
            let Reverse((_, i)) = self.heap.pop()?;
            let Some(event) = self.heads[i].take() else { continue };
            self.advance(i);
            return Some(Ok(event));
        }
    }
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

/// A forward scan of one topic, from the first line that can match; with
/// `keep_open` false, the log is closed once the first block is read.
fn scan(
    topic: &Topic,
    path: &Path,
    query: &Query,
    keep_open: bool,
    template: Option<Event>,
) -> Result<Option<TopicScan>> {
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
    let mut reader = LineReader::new(start, tail.end);
    let source = match keep_open {
        true => Source::Open(file),
        false => {
            reader = reader.in_blocks();
            reader.fill(&file).map_err(|e| read_err(path, e))?;
            Source::Reopened { last_seq: None, ceiling: tail.last.map_or(0, |p| p.seq) }
        }
    };
    Ok(Some(TopicScan {
        topic: topic.clone(),
        path: path.to_path_buf(),
        source,
        reader,
        query: query.clone(),
        needles,
        template,
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
    source: Source,
    reader: LineReader,
    query: Query,
    /// Texts every matching line contains (the source, the correlation id).
    needles: Vec<memchr::memmem::Finder<'static>>,
    /// Set for [`read_cursors`]: each line's event is this one, not its own.
    template: Option<Event>,
}

/// Where a [`TopicScan`] reads its log from.
enum Source {
    /// The log opened when the query began, kept open.
    Open(File),
    /// The log opened again for each block, by name. The file found may be
    /// another one by then (a clear or retention run renamed a new log in),
    /// so it is read on after the last sequence number read, never by offset.
    Reopened {
        /// The sequence number of the last line read.
        last_seq: Option<u64>,
        /// The log's last sequence number when the query began: later events are not part of it.
        ceiling: u64,
    },
    /// Nothing more to read.
    Done,
}

impl TopicScan {
    /// Reopens the log and buffers its next block; `false` when there is none.
    fn refill(&mut self) -> Result<bool> {
        let Source::Reopened { last_seq, .. } = self.source else { return Ok(false) };
        if self.reader.pos() >= self.reader.limit() {
            // Everything up to the query's end was read (in this file or one it replaced).
            return Ok(false);
        }
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("opening {}", self.path.display()), e)),
        };
        let err = |e| read_err(&self.path, e);
        let size = file.metadata().map_err(err)?.len();
        let tail = inspect_tail(&file, size).map_err(err)?;
        let start = match last_seq {
            Some(last) => search(&file, 0, tail.end, tail.end, |p| p.seq > last),
            None => start_offset(&file, &tail, &self.query),
        }
        .map_err(err)?;
        self.reader.rewind(start);
        self.reader.set_limit(tail.end);
        self.reader.fill(&file).map_err(err)
    }
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
            if matches!(self.source, Source::Reopened { .. }) && !self.reader.buffered() {
                match self.refill() {
                    Ok(true) => {}
                    done => {
                        self.source = Source::Done;
                        return done.err().map(Err);
                    }
                }
            }
            let read = match &self.source {
                Source::Open(file) => self.reader.next_line(file),
                Source::Reopened { .. } => Ok(self.reader.next_buffered()),
                Source::Done => return None,
            };
            let (offset, line) = match read {
                Ok(Some(x)) => x,
                Ok(None) => return None,
                Err(e) => return Some(Err(read_err(&self.path, e))),
            };
            if let Source::Reopened { last_seq, ceiling } = &mut self.source {
                if let Some(p) = parse_prefix(line) {
                    if p.seq > *ceiling {
                        self.source = Source::Done;
                        return None;
                    }
                    *last_seq = Some(p.seq);
                }
            }
            // The store writes events compactly, so a line without the source's
            // (or correlation id's) exact text cannot match: skip it without parsing.
            if self.needles.iter().any(|f| f.find(line).is_none()) {
                continue;
            }
            if past_until(&self.query, line) {
                continue;
            }
            if let Some(template) = &self.template {
                let Some(p) = parse_prefix(line) else { continue };
                let cursor = Cursor::new(p.seq, 0);
                if self.query.after.is_none_or(|a| cursor > a) {
                    return Some(Ok(StoredEvent { cursor, event: template.clone() }));
                }
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

#[cfg(test)]
mod tests {
    use seed_event::{Event, EventStore, JsonObject, Timestamp, TopicPattern};

    use super::*;
    use crate::FileStore;

    /// A query over more topics than it keeps open reads each log a block at
    /// a time, opening it again by name, and goes on after the last sequence
    /// number it read, never at a byte offset: here a log is rewritten in
    /// place between two blocks (as when a clear's new log gets the old
    /// inode number back), and the query still returns whole events in
    /// order, every kept one, none twice, none appended after it began.
    #[test]
    fn a_query_over_many_topics_goes_on_by_sequence_number_after_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let base = 1_776_340_800_000_000i64;
        let event = |t: &Topic, n: i64| {
            let mut payload = JsonObject::new();
            payload.insert("n".into(), n.into());
            payload.insert("pad".into(), "p".repeat(400).into());
            Event::new(t.clone(), "test", payload)
                .with_timestamp(Timestamp::from_unix_micros(base + n))
        };
        for i in 0..OPEN_SCANS as i64 {
            store.append(&event(&Topic::new(format!("q.small{i}")).unwrap(), i)).unwrap();
        }
        let big = Topic::new("q.big").unwrap();
        for n in 1..=100 {
            store.append(&event(&big, 1000 + n)).unwrap();
        }
        let mut stream = store.read(&Query::pattern(TopicPattern::all())).unwrap();
        let mut seqs = Vec::new();
        for _ in 0..OPEN_SCANS + 30 {
            let e = stream.next().unwrap().unwrap();
            if e.event.topic == big {
                seqs.push(e.cursor.major());
            }
        }
        assert_eq!(seqs, (1..=30).collect::<Vec<_>>());

        let log = dir.path().join("q.big.jsonl");
        let text = std::fs::read(&log).unwrap();
        let kept: Vec<u8> = text
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| parse_prefix(l).is_some_and(|p| p.seq > 40))
            .flatten()
            .copied()
            .collect();
        std::fs::write(&log, kept).unwrap();
        for n in 101..=105 {
            store.append(&event(&big, 1000 + n)).unwrap();
        }

        for e in stream {
            let e = e.unwrap();
            assert_eq!(e.event.topic, big);
            assert_eq!(e.event.payload["n"], 1000 + e.cursor.major() as i64, "whole events");
            seqs.push(e.cursor.major());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, none twice: {seqs:?}");
        assert!((41..=100).all(|s| seqs.contains(&s)), "every kept event: {seqs:?}");
        assert_eq!(seqs.last(), Some(&100), "nothing appended after the query began");
    }
}
