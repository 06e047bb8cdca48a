//! The file store's own promises beyond the shared suite: torn and corrupt
//! lines, exact `since` under skewed clocks, safe file names, retention,
//! sync policies and the legacy import.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use fs2::FileExt;
use seed_event::conformance::{collect, event, numbers, topic};
use seed_event::{
    Clear, ErrorKind, Event, EventStore, FollowFrom, Limit, Query, Start, StoredEvent, Timestamp,
    Topic, TopicPattern,
};
use serde_json::json;
use store_file::{FileStore, FileStoreConfig, Limits, Retention, SyncPolicy};

const DEADLINE: Duration = Duration::from_secs(10);
const BASE: i64 = 1_776_340_800_000_000; // 2026-04-16T12:00:00Z

/// Event `n` of `t` at `BASE + off` microseconds.
fn event_at(t: &Topic, n: u64, off: i64) -> Event {
    event(t, n).with_timestamp(Timestamp::from_unix_micros(BASE + off))
}

/// Clears the events of `topic` (every topic for `None`) older than `BASE + off`.
fn clear_before(store: &FileStore, topic: Option<&Topic>, off: i64) -> u64 {
    let before = Some(Timestamp::from_unix_micros(BASE + off));
    store.clear(&Clear { topic: topic.cloned(), before }).unwrap()
}

/// The line the store would write for `event` at `seq` (see the crate docs for the format).
fn line(event: &Event, seq: u64, hwm: i64, more: bool) -> Vec<u8> {
    let json = event.to_json_line();
    let more = if more { "\"more\":true," } else { "" };
    format!("{{\"seq\":{seq},\"hwm\":{hwm},{more}{}\n", &json[1..]).into_bytes()
}

/// Writes `parts` into the log of `t` under its lock, pausing between them like a slow writer.
fn slow_write(dir: &Path, t: &str, parts: &[&[u8]], pause: Duration, during: impl FnOnce()) {
    let mut log = OpenOptions::new().append(true).open(dir.join(format!("{t}.jsonl"))).unwrap();
    log.lock_exclusive().unwrap();
    log.write_all(parts[0]).unwrap();
    during();
    thread::sleep(pause);
    for part in &parts[1..] {
        log.write_all(part).unwrap();
    }
    FileExt::unlock(&log).unwrap();
}

#[test]
fn a_line_written_in_two_parts_is_delivered_once_and_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("slow.writer");
    let first = store.append_owned(event(&t, 1)).unwrap();
    let follower_store = FileStore::open(dir.path()).unwrap();
    let mut follower = follower_store
        .follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::New))
        .unwrap();
    // A follower that keeps looking while the line is half there.
    let watcher = thread::spawn(move || {
        let mut got = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while got.len() < 2 && Instant::now() < deadline {
            got.extend(follower.next_batch(10, Duration::from_millis(20)).unwrap());
        }
        // Nothing more comes after the two events.
        got.extend(follower.next_batch(10, Duration::from_millis(200)).unwrap());
        got
    });
    let second = event(&t, 2);
    let whole = line(&second, 2, second.timestamp.unix_micros(), false);
    let (a, b) = whole.split_at(whole.len() / 2);
    slow_write(dir.path(), "slow.writer", &[a, b], Duration::from_millis(300), || {
        let seen = store.query(&Query::topic(&t)).unwrap();
        assert_eq!(seen, vec![first.clone()], "readers do not see half a line");
        assert_eq!(store.last_cursor(&t).unwrap(), Some(first.cursor));
    });
    // A batch written in two parts: its first line is complete long before its last.
    let (b1, b2) = (event(&t, 3), event(&t, 4));
    let part1 = line(&b1, 3, b1.timestamp.unix_micros(), true);
    let part2 = line(&b2, 4, b2.timestamp.unix_micros(), false);
    slow_write(dir.path(), "slow.writer", &[&part1, &part2], Duration::from_millis(300), || {
        let seen = store.query(&Query::topic(&t)).unwrap();
        assert_eq!(numbers(&seen), vec![1, 2], "readers do not see part of a batch");
    });
    let got = watcher.join().unwrap();
    assert_eq!(numbers(&got), vec![2, 3, 4], "each event once, whole, in order");
    assert_eq!(got[0].event, second);
    assert_eq!(store.verify().unwrap(), vec![]);
}

#[test]
fn an_interrupted_append_is_cut_off_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("torn");
    store.append(&event(&t, 1)).unwrap();
    let log = dir.path().join("torn.jsonl");
    let (e2, e3) = (event(&t, 2), event(&t, 3));
    // What a killed writer leaves: a batch without its last line, then half a line.
    let mut junk = line(&e2, 2, e2.timestamp.unix_micros(), true);
    let half = line(&e3, 3, e3.timestamp.unix_micros(), true);
    junk.extend_from_slice(&half[..half.len() / 2]);
    OpenOptions::new().append(true).open(&log).unwrap().write_all(&junk).unwrap();
    let other = FileStore::open(dir.path()).unwrap();
    assert_eq!(numbers(&other.query(&Query::topic(&t)).unwrap()), vec![1]);
    assert_eq!(other.topics().unwrap()[0].events, 1);
    let next = other.append(&event(&t, 4)).unwrap();
    assert_eq!(next.major(), 2, "the cut-off events never had a place");
    assert_eq!(numbers(&store.query(&Query::topic(&t)).unwrap()), vec![1, 4]);
    assert_eq!(store.verify().unwrap(), vec![]);
    assert!(std::fs::read(&log).unwrap().ends_with(b"}\n"));
}

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn since_is_exact_with_out_of_order_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("skewed.clock");
    let mut rng = Lcg(7);
    let mut written = Vec::new();
    let mut n = 0;
    while n < 10_000u64 {
        // Mostly rising time with jitter and some far-off stragglers.
        let batch: Vec<Event> = (0..1 + rng.next() % 50)
            .map(|_| {
                let jitter = (rng.next() % 2_000_000) as i64 - 1_000_000;
                let straggle = if rng.next().is_multiple_of(100) { -500_000_000 } else { 0 };
                n += 1;
                event(&t, n).with_timestamp(Timestamp::from_unix_micros(
                    BASE + n as i64 * 10_000 + jitter + straggle,
                ))
            })
            .collect();
        written.extend(store.append_batch_owned(&t, batch).unwrap());
    }
    let check = |q: Query, expected: Vec<&StoredEvent>| {
        let got = store.query(&q).unwrap();
        let expected: Vec<StoredEvent> = expected.into_iter().cloned().collect();
        assert!(got == expected, "{q:?}: got {} events, expected {}", got.len(), expected.len());
    };
    for k in 0..24 {
        let since =
            Timestamp::from_unix_micros(BASE + (rng.next() % 105_000_000) as i64 - 5_000_000);
        let base = Query { since: Some(since), ..Query::topic(&t) };
        let matching: Vec<&StoredEvent> =
            written.iter().filter(|e| e.event.timestamp >= since).collect();
        check(base.clone(), matching.clone());
        let last = (k % 7) * 3;
        let tail = matching[matching.len().saturating_sub(last)..].to_vec();
        check(Query { limit: Some(Limit::Last(last)), ..base.clone() }, tail);
        let first = matching.iter().take(5).copied().collect();
        check(Query { limit: Some(Limit::First(5)), ..base.clone() }, first);
        let after = written[(rng.next() % written.len() as u64) as usize].cursor;
        let both = matching.iter().filter(|e| e.cursor > after).copied().collect();
        check(Query { after: Some(after), ..base.clone() }, both);
        let until = since.add_micros(3_000_000);
        let window = matching.iter().filter(|e| e.event.timestamp < until).copied().collect();
        check(Query { until: Some(until), ..base }, window);
        // `until` alone: the stragglers after a later `hwm` are still found.
        let before = written.iter().filter(|e| e.event.timestamp < since).collect();
        check(Query { until: Some(since), ..Query::topic(&t) }, before);
    }
    // The 10th-last event's time, as the benchmark asks.
    let tenth = written[written.len() - 10].event.timestamp;
    let q = Query { since: Some(tenth), ..Query::topic(&t) };
    let expected = written.iter().filter(|e| e.event.timestamp >= tenth).collect();
    check(q, expected);
}

/// A scan for `until` looks at an event's own timestamp only: a payload or
/// metadata carrying a later `"timestamp"` (an event inside an event) does
/// not hide it, nor does a later event before it in the log.
#[test]
fn until_reads_the_events_own_timestamp_not_one_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("nested.time");
    let late = Timestamp::from_unix_micros(BASE + 10_000_000).to_string();
    let mut nested = event_at(&t, 1, 1_000);
    nested.payload.insert("timestamp".into(), json!(late));
    nested.payload.insert("caused_by".into(), json!({ "timestamp": late, "id": "x" }));
    nested.metadata.insert("timestamp".into(), json!(late));
    store.append(&event_at(&t, 0, 9_000_000)).unwrap();
    store.append(&nested).unwrap();
    store.append(&event_at(&t, 2, 8_000_000)).unwrap();
    let until =
        Query { until: Some(Timestamp::from_unix_micros(BASE + 5_000_000)), ..Query::topic(&t) };
    let got = store.query(&until).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].event.id, nested.id);
}

#[test]
fn topic_names_stay_distinct_and_inside_the_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("events");
    let store = FileStore::open(&dir).unwrap();
    let long_ascii = "a".repeat(255);
    let long_utf8 = "ü".repeat(127) + "x";
    assert_eq!(long_utf8.len(), 255);
    let names = [
        "service/api.health",
        "service_api.health",
        "service\\api.health",
        "/etc/passwd",
        "%2e%2e",
        long_ascii.as_str(),
        long_utf8.as_str(),
    ];
    for (n, name) in names.iter().enumerate() {
        store.append(&event(&topic(name), n as u64)).unwrap();
    }
    // The first write created the directory.
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let listed: Vec<String> =
        store.topics().unwrap().into_iter().map(|s| s.topic.to_string()).collect();
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for (n, name) in names.iter().enumerate() {
        assert_eq!(numbers(&store.query(&Query::topic(&topic(name))).unwrap()), vec![n as u64]);
    }
    let err = Topic::new("../../etc/passwd").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Everything stayed in the events directory, with private permissions.
    let outside: Vec<_> =
        std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("events")]);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert_eq!(entry.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        if name == ".format" {
            continue; // the format version mark
        }
        assert!(name.len() <= 255 && !name.starts_with('.'), "{name}");
        assert!(name.ends_with(".jsonl") || name.ends_with(".meta"), "{name}");
        assert_eq!(entry.metadata().unwrap().permissions().mode() & 0o777, 0o600, "{name}");
    }
    // The long names keep working through a clear and a follow.
    let t = topic(&long_utf8);
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::New)).unwrap();
    store.clear(&Clear { topic: Some(t.clone()), before: None }).unwrap();
    store.append(&event(&t, 99)).unwrap();
    assert_eq!(numbers(&collect(follower.as_mut(), 1)), vec![99]);
}

#[test]
fn a_corrupt_line_is_reported_with_its_place_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("bit.rot");
    let cursors: Vec<_> =
        (0..10).map(|n| store.append(&event_at(&t, n, n as i64)).unwrap()).collect();
    let log = dir.path().join("bit.rot.jsonl");
    let mut bytes = std::fs::read(&log).unwrap();
    let starts: Vec<usize> = std::iter::once(0)
        .chain(bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1))
        .collect();
    let (from, to) = (starts[5], starts[6] - 1);
    bytes[from..to].fill(b'#');
    std::fs::write(&log, &bytes).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning)).unwrap();
    let all = store.query(&Query::topic(&t)).unwrap();
    assert_eq!(numbers(&all), vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
    let corrupt = store.verify().unwrap();
    assert_eq!(corrupt.len(), 1);
    assert_eq!((corrupt[0].topic.clone(), corrupt[0].offset), (t.clone(), from as u64));
    assert!(corrupt[0].reason.contains("store fields"), "{}", corrupt[0].reason);
    let q = |q: Query| numbers(&store.query(&q).unwrap());
    assert_eq!(q(Query { limit: Some(Limit::Last(5)), ..Query::topic(&t) }), vec![4, 6, 7, 8, 9]);
    assert_eq!(q(Query { after: Some(cursors[4]), ..Query::topic(&t) }), vec![6, 7, 8, 9]);
    let since = Some(Timestamp::from_unix_micros(BASE + 5));
    assert_eq!(q(Query { since, ..Query::topic(&t) }), vec![6, 7, 8, 9]);
    assert_eq!(numbers(&collect(follower.as_mut(), 9)), vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(store.count_after(&t, cursors[4]).unwrap(), 4);
    // The store's own rewrites keep the line (it can still be inspected by hand).
    let removed = clear_before(&store, Some(&t), 2);
    assert_eq!(removed, 2);
    assert_eq!(store.verify().unwrap().len(), 1);
    store.append(&event(&t, 10)).unwrap();
    assert_eq!(q(Query::topic(&t)), vec![2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!(store.topics().unwrap()[0].events, 8, "the kept corrupt line is not an event");
}

#[test]
fn retention_by_age_and_count_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (busy, old, free) = (topic("keep.few"), topic("keep.recent"), topic("keep.all"));
    let config = FileStoreConfig::default().retention(
        Retention::default()
            .with_topic(busy.clone(), Limits::default().max_events(100))
            .with_topic(old.clone(), Limits::default().max_age(Duration::from_secs(3600))),
    );
    let store = FileStore::open_with(dir.path(), config).unwrap();
    let now = Timestamp::now().unix_micros();
    for n in 0..300 {
        store
            .append(
                &event(&old, n).with_timestamp(Timestamp::from_unix_micros(
                    now - (300 - n as i64) * 60_000_000,
                )),
            )
            .unwrap();
        store.append(&event(&free, n)).unwrap();
    }
    let events: Vec<Event> = (0..250).map(|n| event(&busy, n)).collect();
    store.append_batch(&busy, &events).unwrap();
    let removed = store.enforce_retention().unwrap();
    assert_eq!(
        numbers(&store.query(&Query::topic(&busy)).unwrap()),
        (150..250).collect::<Vec<_>>()
    );
    let recent = numbers(&store.query(&Query::topic(&old)).unwrap());
    assert_eq!(recent.first(), Some(&241), "events older than an hour are gone");
    assert_eq!(removed, 150 + 241);
    assert_eq!(store.query(&Query::topic(&free)).unwrap().len(), 300);
    let stats = store.topics().unwrap();
    assert_eq!(stats.iter().map(|s| s.events).collect::<Vec<_>>(), vec![300, 100, 59]);
    // Appending checks the limits now and then by itself.
    for chunk in 0..3 {
        let batch: Vec<Event> = (0..store_file::RETENTION_CHECK_EVERY)
            .map(|n| event(&busy, 1000 + chunk * 10_000 + n))
            .collect();
        store.append_batch(&busy, &batch).unwrap();
    }
    assert_eq!(store.query(&Query::topic(&busy)).unwrap().len(), 100);
}

#[test]
fn counts_stay_exact_after_clearing_out_of_order_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("holes");
    let offsets = [5, 1, 9, 3, 7, 2, 8, 0, 6, 4];
    for (n, off) in offsets.iter().enumerate() {
        store.append(&event_at(&t, n as u64, *off)).unwrap();
    }
    let removed = clear_before(&store, None, 5);
    assert_eq!(removed, 5);
    assert_eq!(numbers(&store.query(&Query::topic(&t)).unwrap()), vec![0, 2, 4, 6, 8]);
    assert_eq!(store.topics().unwrap()[0].events, 5);
    store.append(&event(&t, 10)).unwrap();
    assert_eq!(store.topics().unwrap()[0].events, 6);
    assert_eq!(store.count_after(&t, seed_event::Cursor::new(3, 0)).unwrap(), 4);
}

/// A clear by time that removes a topic's newest events leaves their
/// numbers used: a writer in another process (here another store on the
/// directory) continues after them, so a consumer that saw them skips nothing.
#[test]
fn numbers_of_cleared_newest_events_are_not_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("newest.cleared");
    let first = FileStore::open(dir.path()).unwrap();
    for n in 0..6u64 {
        // The last two are the oldest.
        let off = if n >= 4 { 0 } else { 10 + n as i64 };
        first.append(&event_at(&t, n, off)).unwrap();
    }
    let removed = clear_before(&first, Some(&t), 5);
    assert_eq!(removed, 2);
    let other = FileStore::open(dir.path()).unwrap();
    let next = other.append(&event(&t, 6)).unwrap();
    assert_eq!(next, seed_event::Cursor::new(7, 0), "seq 5 and 6 were used by the cleared events");
    let again = first.append(&event(&t, 7)).unwrap();
    assert_eq!(again, seed_event::Cursor::new(8, 0));
    assert_eq!(numbers(&other.query(&Query::topic(&t)).unwrap()), vec![0, 1, 2, 3, 6, 7]);
    assert_eq!(other.topics().unwrap()[0].events, 6);
    assert_eq!(other.count_after(&t, seed_event::Cursor::new(4, 0)).unwrap(), 2);
}

/// A clear by time that removes a batch's last line but keeps earlier ones
/// (a batch whose timestamps go backwards) ends the batch at the last kept
/// line: the kept events stay readable and survive the next append, which
/// would otherwise cut off a batch without its last line as torn.
#[test]
fn a_clear_that_removes_the_end_of_a_batch_keeps_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("batch.cut");
    let store = FileStore::open(dir.path()).unwrap();
    store.append(&event_at(&t, 0, 20)).unwrap();
    let offsets = [10, 11, 1, 12, 2];
    let batch: Vec<Event> =
        offsets.iter().enumerate().map(|(i, off)| event_at(&t, 1 + i as u64, *off)).collect();
    store.append_batch(&t, &batch).unwrap();
    let removed = clear_before(&store, Some(&t), 5);
    assert_eq!(removed, 2);
    assert_eq!(numbers(&store.query(&Query::topic(&t)).unwrap()), vec![0, 1, 2, 4]);
    let other = FileStore::open(dir.path()).unwrap();
    other.append(&event(&t, 6)).unwrap();
    assert_eq!(numbers(&other.query(&Query::topic(&t)).unwrap()), vec![0, 1, 2, 4, 6]);
    assert!(other.verify().unwrap().is_empty());
    assert_eq!(other.topics().unwrap()[0].events, 5);
}

#[test]
fn sync_policies_write_the_same_events() {
    for sync in [SyncPolicy::Never, SyncPolicy::Batch, SyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let store =
            FileStore::open_with(dir.path(), FileStoreConfig::default().sync(sync)).unwrap();
        let t = topic("durable");
        store.append(&event(&t, 0)).unwrap();
        let events: Vec<Event> = (1..4).map(|n| event(&t, n)).collect();
        store.append_batch(&t, &events).unwrap();
        let name = seed_event::ConsumerName::new("worker").unwrap();
        store.commit_consumer(&name, &t, seed_event::Cursor::new(2, 0)).unwrap();
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            numbers(&reopened.query(&Query::topic(&t)).unwrap()),
            vec![0, 1, 2, 3],
            "{sync:?}"
        );
        assert_eq!(reopened.load_consumer(&name).unwrap()[&t], seed_event::Cursor::new(2, 0));
    }
    assert_eq!(FileStoreConfig::default().sync, SyncPolicy::Never);
}

#[test]
fn default_events_dir_follows_the_environment() {
    // This is the only test that touches these variables.
    std::env::set_var("SEED_EVENTS_DIR", "/x/events");
    assert_eq!(store_file::default_events_dir(), Path::new("/x/events"));
    std::env::remove_var("SEED_EVENTS_DIR");
    std::env::set_var("XDG_DATA_HOME", "/data");
    assert_eq!(store_file::default_events_dir(), Path::new("/data/seed/events"));
    std::env::remove_var("XDG_DATA_HOME");
    std::env::set_var("HOME", "/home/u");
    assert_eq!(store_file::default_events_dir(), Path::new("/home/u/.local/share/seed/events"));
}

#[test]
fn legacy_import_loses_nothing_and_names_bad_lines() {
    let legacy = tempfile::tempdir().unwrap();
    let py = |id: &str, topic: &str, n: u64, ts: &str, corr: &str| {
        format!(
            r#"{{"id": "{id}", "topic": "{topic}", "payload": {{"n": {n}, "nested": {{"a": [1, 2.5, null]}}}}, "source": "fenrir", "timestamp": "{ts}", "correlation_id": {corr}, "metadata": {{"k": "v"}}}}"#
        )
    };
    let a = [
        py(
            "0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21",
            "task.completed",
            1,
            "2026-04-16T12:00:00.123456+00:00",
            "null",
        ),
        py(
            "1b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21",
            "task.completed",
            2,
            "2026-04-16T12:00:01Z",
            "\"req-1\"",
        ),
        String::new(),
        "{not json".to_string(),
        py(
            "2b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21",
            "task.completed",
            3,
            "2026-04-16T11:00:00.5+00:00",
            "null",
        ),
    ];
    std::fs::write(legacy.path().join("task.completed.jsonl"), a.join("\n") + "\n").unwrap();
    let b = [
        py(
            "3b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21",
            "service/api.health",
            4,
            "2026-04-16T12:00:02+00:00",
            "null",
        ),
        py(
            "4b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21",
            "bad topic",
            5,
            "2026-04-16T12:00:02+00:00",
            "null",
        ),
        py(
            "5b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21",
            "user-events",
            6,
            "2026-04-16T14:00:03+02:00",
            "null",
        ),
    ];
    // The last line has no newline: it still counts.
    std::fs::write(legacy.path().join("misc.jsonl"), b.join("\n")).unwrap();
    std::fs::write(legacy.path().join("notes.txt"), "not a log").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let report = store_file::import_legacy(&store, legacy.path()).unwrap();
    assert_eq!((report.files, report.imported, report.already_present), (2, 5, 0));
    let bad: Vec<(String, u64)> = report
        .bad_lines
        .iter()
        .map(|b| (b.file.file_name().unwrap().to_string_lossy().into_owned(), b.line))
        .collect();
    assert_eq!(bad, vec![("misc.jsonl".to_string(), 2), ("task.completed.jsonl".to_string(), 4)]);
    assert!(report.bad_lines[0].reason.contains("whitespace"), "{}", report.bad_lines[0]);
    let originals: Vec<Event> =
        a.iter().chain(&b).filter_map(|l| Event::from_json_line(l).ok()).collect();
    assert_eq!(originals.len(), 5);
    let stored: Vec<Event> =
        store.query(&Query::default()).unwrap().into_iter().map(|e| e.event).collect();
    let by_id = |events: &[Event]| {
        events.iter().map(|e| (e.id, e.clone())).collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(by_id(&stored), by_id(&originals), "every event, field for field");
    let tc = store.query(&Query::topic(&topic("task.completed"))).unwrap();
    assert_eq!(numbers(&tc), vec![1, 2, 3], "each file's order is kept");
    let again = store_file::import_legacy(&store, legacy.path()).unwrap();
    assert_eq!((again.imported, again.already_present), (0, 5));
    assert_eq!(store.query(&Query::default()).unwrap().len(), 5);
    // Opened as a store by mistake, the legacy directory explains itself.
    let wrong = FileStore::open(legacy.path()).unwrap();
    assert!(wrong.query(&Query::topic(&topic("task.completed"))).unwrap().is_empty());
    let reasons: Vec<String> = wrong.verify().unwrap().into_iter().map(|c| c.reason).collect();
    assert!(reasons.iter().any(|r| r.contains("import_legacy")), "{reasons:?}");
    let err = store_file::import_legacy(&store, dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let ids: BTreeSet<_> = stored.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 5);
}

#[test]
fn a_busy_topic_does_not_starve_a_follower_of_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let (busy, quiet) = (topic("fair.a"), topic("fair.b"));
    let events: Vec<Event> = (0..1000).map(|n| event(&busy, n)).collect();
    store.append_batch(&busy, &events).unwrap();
    store.append(&event(&quiet, 5000)).unwrap();
    let mut follower = store
        .follow(&TopicPattern::new("fair.*").unwrap(), FollowFrom::start(Start::Beginning))
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.extend(follower.next_batch(10, Duration::from_secs(1)).unwrap());
    }
    assert!(seen.iter().any(|e| e.event.topic == quiet), "{:?}", numbers(&seen));
    let rest = collect(follower.as_mut(), 1001 - seen.len());
    let mut all = numbers(&seen);
    all.extend(numbers(&rest));
    all.sort_unstable();
    let mut expected: Vec<u64> = (0..1000).collect();
    expected.push(5000);
    assert_eq!(all, expected, "every event once");
}

#[test]
fn a_follower_never_glues_what_a_repair_cut_off_to_what_came_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("repair.follow");
    store.append(&event(&t, 1)).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::New)).unwrap();
    let log = dir.path().join("repair.follow.jsonl");
    for round in 0..2u64 {
        // A killed writer's leftovers: whole lines of an unfinished batch, then half a line.
        let (a, b) = (event(&t, 100 + round), event(&t, 200 + round));
        let seq = store.last_cursor(&t).unwrap().unwrap().major() + 1;
        let mut junk = line(&a, seq, a.timestamp.unix_micros(), true);
        if round == 0 {
            let half = line(&b, seq + 1, b.timestamp.unix_micros(), false);
            junk.extend_from_slice(&half[..half.len() / 2]);
        }
        OpenOptions::new().append(true).open(&log).unwrap().write_all(&junk).unwrap();
        // The follower reads the leftovers and holds them back.
        assert!(follower.next_batch(10, Duration::from_millis(100)).unwrap().is_empty());
        // Another process's store repairs the log and appends something else.
        let next =
            FileStore::open(dir.path()).unwrap().append_owned(event(&t, 300 + round)).unwrap();
        assert_eq!(next.cursor.major(), seq, "the leftovers had no place");
        let got = collect(follower.as_mut(), 1);
        assert_eq!(got, vec![next], "round {round}: only the new event, whole");
        assert!(follower.next_batch(10, Duration::from_millis(100)).unwrap().is_empty());
    }
    assert_eq!(store.verify().unwrap(), vec![]);
}
