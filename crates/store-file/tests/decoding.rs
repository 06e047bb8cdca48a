//! Property tests of reading logs that hold anything: arbitrary bytes, and
//! valid logs with bytes changed, removed, added or cut off. Reading (queries,
//! counts, stats, verify, a follower) and appending never panic; a line that
//! is not an event is reported by `verify` with its topic and the offset of
//! the line's start, and is never returned as an event.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use seed_event::conformance::{event, topic};
use seed_event::{
    Cursor, EventStore, FollowFrom, Limit, Query, Start, Timestamp, Topic, TopicPattern,
};
use store_file::FileStore;

/// The bytes of a log the store wrote for `t`: two single appends and a batch of three.
fn valid_log(t: &Topic) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.append(&event(t, 0)).unwrap();
    store.append(&event(t, 1).with_correlation_id("c")).unwrap();
    store.append_batch(t, &[event(t, 2), event(t, 3), event(t, 4)]).unwrap();
    std::fs::read(dir.path().join(format!("{t}.jsonl"))).unwrap()
}

/// One change to a log's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Cut(prop::sample::Index),
    Splice(prop::sample::Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>();
    let byte = prop_oneof![any::<u8>(), prop::sample::select(b"{}\",:-0123456789\n\\".to_vec())];
    prop_oneof![
        (at.clone(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        at.clone().prop_map(Mutation::Remove),
        (at.clone(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        at.clone().prop_map(Mutation::Cut),
        (at, fragment()).prop_map(|(i, f)| Mutation::Splice(i, f)),
    ]
}

/// Pieces of lines: whole lines the store wrote, store fields with odd
/// numbers, JSON fragments, newlines, any bytes.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    static LINES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let lines = LINES.get_or_init(|| {
        valid_log(&topic("t")).split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
    });
    prop_oneof![
        prop::sample::select(lines.clone()),
        (any::<u64>(), any::<i64>())
            .prop_map(|(s, h)| format!("{{\"seq\":{s},\"hwm\":{h},").into_bytes()),
        Just(b"\"more\":true,".to_vec()),
        Just(b"\"timestamp\":\"9999-12-31T23:59:59.999999-01:00\"".to_vec()),
        Just(b"\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Replace(i, b) if len > 0 => bytes[i.index(len)] = *b,
        Mutation::Remove(i) if len > 0 => {
            bytes.remove(i.index(len));
        }
        Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
        Mutation::Cut(i) => bytes.truncate(i.index(len + 1)),
        Mutation::Splice(i, f) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, f.iter().copied());
        }
        _ => {}
    }
}

/// Reads and appends to a log of topic `t` holding `bytes`, asserting what must hold whatever they are.
fn read_everything(dir: &Path, t: &Topic, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{t}.jsonl")), bytes).unwrap();
    let store = FileStore::open(dir).unwrap();
    let lines = bytes.iter().filter(|b| **b == b'\n').count();

    let corrupt = store.verify().unwrap();
    for c in &corrupt {
        assert_eq!(&c.topic, t);
        let at = usize::try_from(c.offset).unwrap();
        assert!(at < bytes.len() && (at == 0 || bytes[at - 1] == b'\n'), "{c:?} is a line start");
        assert!(!c.reason.is_empty() && !c.reason.contains('\n'), "{c:?}");
    }
    let offsets: std::collections::BTreeSet<u64> = corrupt.iter().map(|c| c.offset).collect();
    assert_eq!(offsets.len(), corrupt.len(), "each line reported once");

    // A read may fail (an error, never a panic); what it returns are events of `t`.
    if let Ok(events) = store.query(&Query::topic(t)) {
        assert!(events.iter().all(|e| e.event.topic == *t));
        assert!(events.len() + corrupt.len() <= lines, "no line is both, or made up");
    }
    let queries = [
        Query { limit: Some(Limit::Last(2)), ..Query::topic(t) },
        Query { since: Some(Timestamp::now()), ..Query::topic(t) },
        Query { until: Some(Timestamp::MAX), after: Some(Cursor::new(2, 0)), ..Query::topic(t) },
        Query::default(),
    ];
    for q in queries {
        let _ = store.query(&q);
    }
    let _ = store.count_after(t, Cursor::new(1, 0));
    let _ = store.last_cursor(t);
    let _ = store.topics();
    if let Ok(mut follower) =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning))
    {
        let _ = follower.next_batch(100, Duration::ZERO);
    }
    // An append checks the tail (and repairs a torn one) first.
    if store.append(&event(t, 99)).is_ok() {
        let last = store.query(&Query { limit: Some(Limit::Last(1)), ..Query::topic(t) });
        let last = last.unwrap();
        assert_eq!(last.last().map(|e| e.event.payload["n"].as_u64()), Some(Some(99)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_log_of_arbitrary_bytes_never_panics(
        pieces in prop::collection::vec(fragment(), 0..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = pieces.concat();
        read_everything(dir.path(), &topic("t"), &bytes);
    }

    #[test]
    fn a_changed_log_never_panics_and_reports_lines_where_they_start(
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let t = topic("t");
        let mut bytes = valid_log(&t);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let dir = tempfile::tempdir().unwrap();
        read_everything(dir.path(), &t, &bytes);
    }
}

/// A line whose timestamp is past year 9999 once its offset is applied is
/// not an event: `verify` reports it where it starts, and reads skip it.
#[test]
fn a_timestamp_outside_the_calendar_is_a_corrupt_line() {
    let t = topic("t");
    let bytes = valid_log(&t);
    let text = String::from_utf8(bytes).unwrap();
    let second = text.find('\n').unwrap() + 1;
    let (head, tail) = text.split_at(second);
    let stamp = tail.find("\"timestamp\":\"").unwrap() + "\"timestamp\":\"".len();
    let end = stamp + tail[stamp..].find('"').unwrap();
    let changed =
        format!("{head}{}9999-12-31T23:59:59.999999-01:00{}", &tail[..stamp], &tail[end..]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.jsonl"), &changed).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let corrupt = store.verify().unwrap();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!((&corrupt[0].topic, corrupt[0].offset), (&t, second as u64));
    assert!(corrupt[0].reason.contains("is outside"), "{}", corrupt[0].reason);
    let numbers: Vec<_> = store
        .query(&Query::topic(&t))
        .unwrap()
        .iter()
        .map(|e| e.event.payload["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![0, 2, 3, 4]);
}
