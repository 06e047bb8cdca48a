//! The state cases of the conformance suite: every promise of [`StateStore`],
//! checked against any store that keeps states.
//!
//! A store crate runs them with [`state_conformance_tests!`](crate::state_conformance_tests),
//! with the same [`Harness`] as the event cases. Every state a case gets back
//! is checked against `schema/state.json`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use seed_event::conformance::{Harness, DEADLINE};
use seed_event::{Clear, Cursor, ErrorKind, EventStore, JsonObject, Query, Topic};

use crate::{Cause, Change, Entry, NewState, StateStore, Status, Watch, WatchEvent, WatchFrom};

/// Expands to one `#[test]` per state case; `$harness` is an expression
/// that returns a fresh [`Harness`] each time it is evaluated.
#[macro_export]
macro_rules! state_conformance_tests {
    ($harness:expr) => {
        $crate::state_conformance_tests!(@cases $harness;
            state_lifecycle, state_conflicts_carry_the_current_version, state_create_race_has_one_winner,
            state_counter_threads, state_list_filters_and_skips_tombstones,
            state_changes_are_events, state_watch_snapshot_then_changes, state_watch_resumes_after_a_revision,
            state_watch_survives_clear, state_history_keeps_the_newest, state_bad_input_writes_nothing
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let harness = $harness;
                $crate::conformance::$case(&harness);
            }
        )*
    };
}

/// The JSON object `v`.
fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

/// The state store of a harness's store.
pub fn states(h: &dyn Harness) -> StateStore {
    StateStore::new(h.open()).unwrap()
}

/// Panics unless `entry`'s JSON form (and its state's) validates against `schema/state.json`.
pub fn check_schema(entry: &Entry) -> &Entry {
    static VALIDATOR: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
        let schema: Value = serde_json::from_str(crate::SCHEMA).unwrap();
        jsonschema::draft202012::options().should_validate_formats(true).build(&schema).unwrap()
    });
    for value in [entry.to_value(), entry.state.to_value()] {
        let errors: Vec<String> = VALIDATOR.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
    entry
}

fn checked(result: seed_event::Result<Entry>) -> Entry {
    let entry = result.unwrap();
    check_schema(&entry);
    entry
}

fn counter(n: i64) -> JsonObject {
    obj(json!({ "n": n }))
}

/// Increments entity `kind/id`'s `data.n` `times` times, reading and retrying
/// on conflicts; returns how many conflicts it met.
pub fn increment(states: &StateStore, kind: &str, id: &str, times: u64, by: &str) -> u64 {
    let mut conflicts = 0;
    for _ in 0..times {
        loop {
            let current = states.get(kind, id).unwrap();
            let n = current.state.data()["n"].as_i64().unwrap();
            let change = Change::by(by).replace_data(counter(n + 1));
            match states.update(kind, id, current.state.version(), change) {
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    assert!(e.to_string().contains(" is at version "), "{e}");
                    conflicts += 1;
                }
                Err(e) => panic!("increment: {e}"),
            }
        }
    }
    conflicts
}

/// Creates the counter `kind/id` at `n = 0`.
pub fn create_counter(states: &StateStore, kind: &str, id: &str) {
    checked(states.create(NewState::new(id, kind, "conformance").data(counter(0))));
}

/// Checks the counter after `total` increments by any number of writers:
/// final value `total`, and the change events on `state.<kind>` are versions
/// up to `total + 1`, each once, in order, with `n = version - 1`: all of
/// them from 1 when the store's history keeps that many, else a gap-free run
/// of at least the history limit.
pub fn check_counter(store: &Arc<dyn EventStore>, kind: &str, id: &str, total: u64) {
    let states = StateStore::new(store.clone()).unwrap();
    let last = checked(states.get(kind, id));
    assert_eq!(last.state.data()["n"], json!(total));
    assert_eq!(last.state.version(), total + 1);
    let topic = Topic::new(format!("state.{kind}")).unwrap();
    let events = store.query(&Query::topic(&topic)).unwrap();
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e.event.payload["entity_id"] == json!(id))
        .map(|e| {
            let entry = Entry::from_event(e).unwrap();
            assert_eq!(entry.state.data()["n"], json!(entry.state.version() - 1));
            entry.state.version()
        })
        .collect();
    let limit = store.states().unwrap().history_limit();
    let first = if limit > total { 1 } else { versions.first().copied().unwrap_or(1) };
    assert!(total + 2 - first >= limit.min(total + 1), "at least the history limit is kept");
    assert_eq!(versions, (first..=total + 1).collect::<Vec<_>>(), "every version once, in order");
    let history: Vec<u64> =
        states.history(kind, id).unwrap().iter().map(|e| e.state.version()).collect();
    let from = (total + 2).saturating_sub(limit).max(1);
    assert_eq!(history, (from..=total + 1).collect::<Vec<_>>());
}

/// Create, get, update, delete, re-create: versions, tombstones, history.
pub fn state_lifecycle(h: &dyn Harness) {
    let states = states(h);
    let v1 = checked(
        states.create(NewState::new("t-1", "task", "fenrir").data(obj(json!({"title": "a"})))),
    );
    assert_eq!((v1.state.version(), v1.deleted), (1, false));
    assert_eq!(checked(states.get("task", "t-1")), v1);
    let v2 = checked(states.update("task", "t-1", 1, Change::by("odin").status(Status::Active)));
    assert_eq!(v2.state.version(), 2);
    assert!(v2.revision > v1.revision);
    let v3 = checked(states.update(
        "task",
        "t-1",
        2,
        Change::by("odin").merge_data(obj(json!({"step": 1}))),
    ));
    assert_eq!(v3.state.data(), &obj(json!({"title": "a", "step": 1})));
    assert_eq!(checked(states.get_version("task", "t-1", 2)).state, v2.state);
    let gone = checked(states.delete("task", "t-1", 3, Change::by("thor")));
    assert_eq!((gone.state.version(), gone.deleted), (4, true));
    assert_eq!(gone.state.data(), v3.state.data());
    let err = states.get("task", "t-1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("task/t-1"), "{err}");
    let err = states.update("task", "t-1", 4, Change::by("x").status(Status::Paused)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let again = checked(states.create(NewState::new("t-1", "task", "freya")));
    assert_eq!((again.state.version(), again.deleted), (5, false));
    assert_eq!(again.state.updated_by(), "freya");
    let history: Vec<(u64, bool)> = states
        .history("task", "t-1")
        .unwrap()
        .iter()
        .map(|e| (check_schema(e).state.version(), e.deleted))
        .collect();
    assert_eq!(history, vec![(1, false), (2, false), (3, false), (4, true), (5, false)]);
    assert!(checked(states.get_version("task", "t-1", 4)).deleted);
    let err = states.get("task", "never").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), "not found: task/never");
    // Reopening the store finds the same states.
    let reopened = StateStore::new(h.open()).unwrap();
    assert_eq!(checked(reopened.get("task", "t-1")), again);
}

/// A stale expected version, or a create of an existing entity, is a conflict
/// that names the entity and the current version, and writes nothing.
pub fn state_conflicts_carry_the_current_version(h: &dyn Harness) {
    let states = states(h);
    checked(states.create(NewState::new("c", "job", "a")));
    checked(states.update("job", "c", 1, Change::by("a").status(Status::Active)));
    let err = states.update("job", "c", 1, Change::by("b").status(Status::Paused)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.to_string(), "conflict: job/c is at version 2, expected 1");
    let err = states.delete("job", "c", 3, Change::by("b")).unwrap_err();
    assert_eq!(err.to_string(), "conflict: job/c is at version 2, expected 3");
    let err = states.create(NewState::new("c", "job", "b")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(err.to_string(), "conflict: job/c already exists");
    assert_eq!(states.history("job", "c").unwrap().len(), 2, "nothing written");
}

/// Many threads create one entity at once, also after a delete: exactly one wins.
pub fn state_create_race_has_one_winner(h: &dyn Harness) {
    for round in 0..2u64 {
        let winners: Vec<bool> = (0..8)
            .map(|w| {
                let states = states(h);
                thread::spawn(move || {
                    match states.create(NewState::new("race", "lock", format!("w{w}"))) {
                        Ok(_) => true,
                        Err(e) if e.kind() == ErrorKind::Conflict => false,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "round {round}: {winners:?}");
        let states = states(h);
        let current = checked(states.get("lock", "race"));
        assert_eq!(current.state.version(), 2 * round + 1);
        checked(states.delete("lock", "race", current.state.version(), Change::by("x")));
    }
}

/// Eight threads, each with its own store handle, increment one counter with
/// retry-on-conflict: nothing lost, every version once.
pub fn state_counter_threads(h: &dyn Harness) {
    let per = 100u64;
    create_counter(&states(h), "counter", "c");
    let conflicts: u64 = (0..8)
        .map(|w| {
            let states = states(h);
            thread::spawn(move || increment(&states, "counter", "c", per, &format!("w{w}")))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    check_counter(&h.open(), "counter", "c", 8 * per);
    // Every conflict was a retry: writes = increments + conflicts met.
    let _ = conflicts;
}

/// `list` gives the current state of every live entity, filtered by status.
pub fn state_list_filters_and_skips_tombstones(h: &dyn Harness) {
    let states = states(h);
    for n in 0..30 {
        checked(states.create(NewState::new(format!("e{n}"), "item", "a")));
    }
    for n in 0..10 {
        checked(states.update("item", &format!("e{n}"), 1, Change::by("a").status(Status::Active)));
    }
    for n in 25..30 {
        checked(states.delete("item", &format!("e{n}"), 1, Change::by("a")));
    }
    checked(states.create(NewState::new("other", "thing", "a")));
    let ids = |status: Option<Status>| -> BTreeSet<String> {
        states
            .list("item", status)
            .unwrap()
            .map(|e| check_schema(&e.unwrap()).state.entity_id().to_string())
            .collect()
    };
    assert_eq!(ids(None).len(), 25);
    assert_eq!(ids(Some(Status::Active)), (0..10).map(|n| format!("e{n}")).collect());
    assert_eq!(ids(Some(Status::Pending)).len(), 15);
    assert!(ids(Some(Status::Failed)).is_empty());
    assert_eq!(states.list("none", None).unwrap().count(), 0);
}

/// Every change is one event on `state.<type>`: state, version, cause.
pub fn state_changes_are_events(h: &dyn Harness) {
    let states = states(h);
    let cause =
        Cause { caused_by: Some(uuid::Uuid::now_v7()), correlation_id: Some("req-7".to_string()) };
    let v1 = checked(states.create(NewState::new("e", "order", "shop").cause(cause.clone())));
    let v2 = checked(states.update("order", "e", 1, Change::by("pay").status(Status::Active)));
    let gone = checked(states.delete("order", "e", 2, Change::by("pay").cause(cause.clone())));
    let topic = Topic::new("state.order").unwrap();
    let events = h.open().query(&Query::topic(&topic)).unwrap();
    assert_eq!(events.len(), 3);
    let entries: Vec<Entry> = events.iter().map(|e| Entry::from_event(e).unwrap()).collect();
    assert_eq!(entries, vec![v1.clone(), v2, gone]);
    let first = &events[0].event;
    assert_eq!(first.payload["entity_id"], "e");
    assert_eq!(first.payload["version"], 1);
    assert_eq!(first.payload["deleted"], false);
    assert_eq!(first.payload["caused_by"], json!(cause.caused_by.unwrap().to_string()));
    assert_eq!(first.payload["state"], v1.state.to_value());
    assert_eq!(first.correlation_id.as_deref(), Some("req-7"));
    assert_eq!(first.source, "shop");
    assert_eq!(events[1].event.payload["caused_by"], Value::Null);
    assert_eq!(events[2].event.payload["deleted"], true);
}

/// Reads a watch until `pred` holds for what it gave, or the deadline.
pub fn watch_until(
    watch: &mut Watch,
    mut pred: impl FnMut(&[WatchEvent]) -> bool,
) -> Vec<WatchEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while !pred(&got) {
        assert!(Instant::now() < deadline, "watch gave only {got:?}");
        if let Some(e) = watch.next(Duration::from_millis(200)).unwrap() {
            if let WatchEvent::Entry(entry) = &e {
                check_schema(entry);
            }
            got.push(e);
        }
    }
    got
}

/// `(id, version)` of the entries, `("READY", 0)` for the marker.
pub fn summary(events: &[WatchEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Entry(e) => (e.state.entity_id().to_string(), e.state.version()),
            WatchEvent::Ready => ("READY".to_string(), 0),
            WatchEvent::Compacted { .. } => ("COMPACTED".to_string(), 0),
        })
        .collect()
}

fn ready(events: &[WatchEvent]) -> bool {
    events.contains(&WatchEvent::Ready)
}

/// A watch gives the current states, the marker, then each change in order.
pub fn state_watch_snapshot_then_changes(h: &dyn Harness) {
    let states = states(h);
    for n in 0..5 {
        checked(states.create(NewState::new(format!("w{n}"), "wt", "a")));
    }
    checked(states.delete("wt", "w4", 1, Change::by("a")));
    checked(states.update("wt", "w0", 1, Change::by("a").status(Status::Active)));
    let mut watch = states.watch("wt", None, WatchFrom::Now).unwrap();
    let mut one = states.watch("wt", Some("w1"), WatchFrom::Now).unwrap();
    let got = watch_until(&mut watch, ready);
    let mut initial = summary(&got);
    let marker = initial.pop();
    assert_eq!(marker, Some(("READY".to_string(), 0)));
    initial.sort();
    assert_eq!(
        initial,
        vec![("w0".into(), 2), ("w1".into(), 1), ("w2".into(), 1), ("w3".into(), 1)]
    );
    let other = states.clone();
    let writer = thread::spawn(move || {
        for v in 1..=20 {
            let n = json!({ "v": v });
            checked(other.update("wt", "w1", v, Change::by("b").replace_data(obj(n))));
        }
        checked(other.create(NewState::new("w9", "wt", "b")));
    });
    let live = watch_until(&mut watch, |g| g.len() == 21);
    writer.join().unwrap();
    let mut expected: Vec<(String, u64)> = (2..=21).map(|v| ("w1".to_string(), v)).collect();
    expected.push(("w9".to_string(), 1));
    assert_eq!(summary(&live), expected);
    let only = watch_until(&mut one, |g| g.len() == 22);
    let mut expected: Vec<(String, u64)> = (1..=21).map(|v| ("w1".to_string(), v)).collect();
    expected.insert(1, ("READY".to_string(), 0));
    assert_eq!(summary(&only), expected);
    assert_eq!(watch.next(Duration::from_millis(100)).unwrap(), None);
    // A pattern of types sees them all.
    checked(states.create(NewState::new("x", "wu", "a")));
    let mut all = states.watch("*", None, WatchFrom::Now).unwrap();
    let got = watch_until(&mut all, ready);
    assert_eq!(got.len(), 7, "{:?}", summary(&got));
}

/// A watch after a revision gives exactly the later changes, then the marker.
pub fn state_watch_resumes_after_a_revision(h: &dyn Harness) {
    let states = states(h);
    let v1 = checked(states.create(NewState::new("r", "rt", "a").data(counter(0))));
    let mut revisions = vec![v1.revision];
    for v in 1..=5 {
        let e =
            checked(states.update("rt", "r", v, Change::by("a").replace_data(counter(v as i64))));
        revisions.push(e.revision);
    }
    let mut watch = states.watch("rt", None, WatchFrom::After(revisions[2])).unwrap();
    let got = watch_until(&mut watch, ready);
    assert_eq!(
        summary(&got),
        vec![("r".into(), 4), ("r".into(), 5), ("r".into(), 6), ("READY".into(), 0)]
    );
    checked(states.update("rt", "r", 6, Change::by("a").status(Status::Active)));
    assert_eq!(summary(&watch_until(&mut watch, |g| !g.is_empty())), vec![("r".into(), 7)]);
    let mut at_end = states.watch("rt", None, WatchFrom::After(revisions[5])).unwrap();
    let got = watch_until(&mut at_end, ready);
    assert_eq!(summary(&got), vec![("r".into(), 7), ("READY".into(), 0)]);
    let err = states.watch("*", None, WatchFrom::After(revisions[0])).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// A clear of the store keeps every current state; a live watch goes on
/// gap-free, and a watch from a revision before the clear is told it was compacted.
pub fn state_watch_survives_clear(h: &dyn Harness) {
    let states = states(h);
    let v1 = checked(states.create(NewState::new("k", "kt", "a").data(counter(0))));
    checked(states.create(NewState::new("gone", "kt", "a")));
    checked(states.delete("kt", "gone", 1, Change::by("a")));
    let mut watch = states.watch("kt", None, WatchFrom::Now).unwrap();
    watch_until(&mut watch, ready);
    checked(states.update("kt", "k", 1, Change::by("a").replace_data(counter(1))));
    h.open().clear(&Clear::default()).unwrap();
    let after = checked(states.get("kt", "k"));
    assert_eq!(after.state.version(), 2, "a clear keeps the current state");
    assert!(states.history("kt", "gone").unwrap().last().unwrap().deleted, "and tombstones");
    checked(states.update("kt", "k", 2, Change::by("a").replace_data(counter(2))));
    checked(states.update("kt", "k", 3, Change::by("a").replace_data(counter(3))));
    let got = watch_until(&mut watch, |g| g.len() == 3);
    assert_eq!(summary(&got), vec![("k".into(), 2), ("k".into(), 3), ("k".into(), 4)]);
    let mut old = states.watch("kt", None, WatchFrom::After(v1.revision)).unwrap();
    let got = watch_until(&mut old, ready);
    assert!(
        matches!(got[0], WatchEvent::Compacted { through } if through >= v1.revision),
        "{got:?}"
    );
    assert_eq!(summary(&got[1..]), vec![("k".into(), 4), ("READY".into(), 0)]);
    // A clear of changes a live watch had not read yet: the watch still
    // gives them (a follower that read them before the clear took effect),
    // or says they were compacted and starts again from the current states.
    checked(states.update("kt", "k", 4, Change::by("a").replace_data(counter(4))));
    checked(states.update("kt", "k", 5, Change::by("a").replace_data(counter(5))));
    h.open().clear(&Clear::default()).unwrap();
    let got = watch_until(&mut watch, |g| {
        ready(g) || (g.len() == 2 && !matches!(g[0], WatchEvent::Compacted { .. }))
    });
    match got[0] {
        WatchEvent::Compacted { .. } => {
            assert_eq!(summary(&got[1..]), vec![("k".into(), 6), ("READY".into(), 0)])
        }
        _ => assert_eq!(summary(&got), vec![("k".into(), 5), ("k".into(), 6)]),
    }
}

/// History keeps the newest versions up to the store's limit; compaction
/// never removes the newest record or a tombstone.
pub fn state_history_keeps_the_newest(h: &dyn Harness) {
    let states = states(h);
    let limit = h.open().states().unwrap().history_limit();
    let total = limit + 10;
    create_counter(&states, "hist", "h");
    create_counter(&states, "hist", "d");
    checked(states.delete("hist", "d", 1, Change::by("a")));
    for v in 1..total {
        checked(states.update("hist", "h", v, Change::by("a").replace_data(counter(v as i64))));
    }
    states.compact("hist").unwrap();
    let history = states.history("hist", "h").unwrap();
    let versions: Vec<u64> = history.iter().map(|e| check_schema(e).state.version()).collect();
    assert_eq!(versions, (total - limit + 1..=total).collect::<Vec<_>>());
    assert_eq!(checked(states.get("hist", "h")).state.version(), total);
    assert!(states.get_version("hist", "h", 1).is_err());
    let tomb = states.history("hist", "d").unwrap();
    assert_eq!(tomb.last().map(|e| (e.state.version(), e.deleted)), Some((2, true)));
    let again = checked(states.create(NewState::new("d", "hist", "a")));
    assert_eq!(again.state.version(), 3);
}

/// Invalid names, changes and versions are rejected naming the field; nothing is written.
pub fn state_bad_input_writes_nothing(h: &dyn Harness) {
    let states = states(h);
    let cases = [
        (states.create(NewState::new("a b", "task", "x")).err(), "entity_id"),
        (states.create(NewState::new("a", "ta.sk", "x")).err(), "entity_type"),
        (states.create(NewState::new("a", "task", "")).err(), "updated_by"),
        (states.get("t*", "a").err(), "entity_type"),
    ];
    for (err, field) in cases {
        let err = err.unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().starts_with(&format!("invalid {field}")), "{err}");
    }
    checked(states.create(NewState::new("a", "task", "x")));
    let err = states.update("task", "a", 1, Change::by("x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = states.update("task", "a", 0, Change::by("x").status(Status::Active)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = states.delete("task", "a", 1, Change::by("x").status(Status::Active)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(states.history("task", "a").unwrap().len(), 1);
    let topic = Topic::new("state.task").unwrap();
    assert_eq!(h.open().last_cursor(&topic).unwrap().map(|c| c > Cursor::ZERO), Some(true));
    assert_eq!(h.open().query(&Query::topic(&topic)).unwrap().len(), 1);
}
