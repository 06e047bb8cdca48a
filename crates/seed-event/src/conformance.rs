//! The conformance suite: every promise of [`EventStore`], checked against any store.
//!
//! A store crate runs it from its tests with [`conformance_tests!`](crate::conformance_tests),
//! giving a function that makes a fresh, empty store location (a [`Harness`]).
//! Each case is a plain function here, so a failing one names itself.
//!
//! ```
//! use std::sync::{Arc, Barrier};
//! use seed_event::conformance::Harness;
//! use seed_event::{EventStore, MemoryStore};
//!
//! struct Mem(MemoryStore);
//! impl Harness for Mem {
//!     fn open(&self) -> Arc<dyn EventStore> {
//!         Arc::new(self.0.clone())
//!     }
//! }
//! seed_event::conformance::append_then_read(&Mem(MemoryStore::new()));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    Cancel, Clear, ConsumerLock, ConsumerName, Cursor, Error, ErrorKind, Event, EventStore, Fence,
    FollowFrom, Follower, JsonObject, Limit, LockRequest, Query, Start, StoredEvent, Timestamp,
    Topic, TopicPattern,
};

/// One store location for one test case.
pub trait Harness {
    /// Opens the store at this location; calling it again reopens the same data.
    fn open(&self) -> Arc<dyn EventStore>;
}

/// How long a case waits for something that should happen at once.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Expands to one `#[test]` per conformance case; `$harness` is an expression
/// that returns a fresh [`Harness`] each time it is evaluated.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            append_then_read, batches_are_ordered_and_checked, batches_are_all_or_nothing_to_readers,
            conditional_append, conditional_append_race_has_one_winner, query_filters,
            query_limits, query_orders_across_topics, out_of_order_timestamps,
            after_needs_one_topic, follow_times_out_then_wakes, follow_waits_past_the_clock,
            follow_start_modes,
            follow_patterns_and_new_topics, follow_survives_clear, cursors_survive_reopen,
            consumers_commit_and_reload, topic_stats, clear_scopes, topic_names_are_lossless,
            concurrent_appends_lose_nothing, count_after_cursor,
            consumer_lock_has_one_holder_in_a_race, consumer_lock_is_released_on_drop,
            consumer_lock_refuses_a_stale_commit, consumer_lock_is_taken_again_after_release
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

// Helpers for stores' own tests as well: events numbered by `payload.n`.

/// A topic from a name the test knows to be valid.
pub fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// A pattern the test knows to be valid.
pub fn pattern(p: &str) -> TopicPattern {
    TopicPattern::new(p).unwrap()
}

/// The JSON object `v` (empty if it is not one).
pub fn obj(v: serde_json::Value) -> JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

/// Event number `n` of `t`: payload `{"n": n}`, source `conformance`.
pub fn event(t: &Topic, n: u64) -> Event {
    Event::new(t.clone(), "conformance", obj(json!({ "n": n })))
}

/// [`event`] with its timestamp at `micros` since the Unix epoch.
pub fn event_at(t: &Topic, n: u64, micros: i64) -> Event {
    event(t, n).with_timestamp(Timestamp::from_unix_micros(micros))
}

/// The numbers (`payload.n`) of `events`, in order; `u64::MAX` for an event without one.
pub fn numbers(events: &[StoredEvent]) -> Vec<u64> {
    events.iter().map(|e| e.event.payload["n"].as_u64().unwrap_or(u64::MAX)).collect()
}

/// Reads from `follower` until `n` events came or [`DEADLINE`] passed.
pub fn collect(follower: &mut dyn Follower, n: usize) -> Vec<StoredEvent> {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let batch = follower.next_batch(n - out.len(), Duration::from_millis(200)).unwrap();
        out.extend(batch);
    }
    out
}

/// Asserts that `follower` has nothing more within a short wait.
fn assert_quiet(follower: &mut dyn Follower) {
    let extra = follower.next_batch(100, Duration::from_millis(150)).unwrap();
    assert!(extra.is_empty(), "unexpected events: {:?}", numbers(&extra));
}

/// Appended events come back equal, in order, with increasing cursors.
pub fn append_then_read(h: &dyn Harness) {
    let store = h.open();
    let t = topic("orders.created");
    let first = Event::new(
        t.clone(),
        "shop",
        obj(json!({"id": 1, "nested": {"b": [1, 2], "a": null}, "ü": "✓"})),
    )
    .with_correlation_id("req-9")
    .with_metadata(obj(json!({"trace": "x"})));
    let mut written = vec![store.append_owned(first.clone()).unwrap()];
    assert_eq!(written[0].event, first);
    for n in 1..20 {
        written.push(store.append_owned(event(&t, n)).unwrap());
    }
    assert!(written.windows(2).all(|w| w[0].cursor < w[1].cursor), "cursors must increase");
    assert!(written[0].cursor > Cursor::ZERO);
    let read = store.query(&Query::topic(&t)).unwrap();
    assert_eq!(read, written);
    assert_eq!(store.last_cursor(&t).unwrap(), Some(written[19].cursor));
    assert_eq!(store.last_cursor(&topic("orders.none")).unwrap(), None);
    assert!(store.query(&Query::topic(&topic("orders.none"))).unwrap().is_empty());
}

/// A batch lands in order; a mixed-topic batch is rejected whole; an empty one is a no-op.
pub fn batches_are_ordered_and_checked(h: &dyn Harness) {
    let store = h.open();
    let t = topic("batch.a");
    let events: Vec<Event> = (0..500).map(|n| event(&t, n)).collect();
    let cursors = store.append_batch(&t, &events).unwrap();
    assert_eq!(cursors.len(), 500, "one cursor per event");
    let stored = StoredEvent::zip(cursors, events);
    assert_eq!(numbers(&stored), (0..500).collect::<Vec<_>>());
    assert!(stored.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(store.query(&Query::topic(&t)).unwrap(), stored);

    let mixed = vec![event(&t, 1000), event(&topic("batch.b"), 1001)];
    let err = store.append_batch(&t, &mixed).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(store.query(&Query::topic(&t)).unwrap().len(), 500, "nothing written on rejection");
    assert!(store.query(&Query::topic(&topic("batch.b"))).unwrap().is_empty());

    assert!(store.append_batch(&t, &[]).unwrap().is_empty());
    assert_eq!(store.query(&Query::topic(&t)).unwrap().len(), 500);
}

/// Readers running beside a batch writer see whole batches only: every query,
/// and every prefix a follower has returned, holds a whole number of batches
/// of each topic, and the reads overlap the writes.
pub fn batches_are_all_or_nothing_to_readers(h: &dyn Harness) {
    let store = h.open();
    let topics = [topic("batch.atomic.a"), topic("batch.atomic.b")];
    const BATCH: usize = 200;
    const BATCHES: u64 = 30;
    let per_topic = BATCH * BATCHES as usize;
    let total = per_topic * topics.len();
    let mut follower =
        store.follow(&pattern("batch.atomic.*"), FollowFrom::start(Start::Beginning)).unwrap();
    let reader_saw_some = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = h.open();
        let topics = topics.clone();
        let reader_saw_some = reader_saw_some.clone();
        thread::spawn(move || {
            for b in 0..BATCHES {
                for t in &topics {
                    let events: Vec<Event> =
                        (0..BATCH as u64).map(|i| event(t, b * BATCH as u64 + i)).collect();
                    store.append_batch(t, &events).unwrap();
                }
                // Half way, wait for the reader, so that reads overlap writes.
                let deadline = Instant::now() + DEADLINE;
                while b == BATCHES / 2
                    && !reader_saw_some.load(Ordering::SeqCst)
                    && Instant::now() < deadline
                {
                    thread::yield_now();
                }
            }
        })
    };
    let mut seen: BTreeMap<Topic, Vec<u64>> = BTreeMap::new();
    let mut overlapped = false;
    let deadline = Instant::now() + DEADLINE * 3;
    while seen.values().map(Vec::len).sum::<usize>() < total && Instant::now() < deadline {
        for t in &topics {
            let n = store.query(&Query::topic(t)).unwrap().len();
            assert_eq!(n % BATCH, 0, "a query of {t} saw {n} events, not whole batches");
        }
        let got = follower.next_batch(total, Duration::from_millis(50)).unwrap();
        for e in &got {
            let n = e.event.payload["n"].as_u64().unwrap_or(u64::MAX);
            seen.entry(e.event.topic.clone()).or_default().push(n);
        }
        for (t, numbers) in &seen {
            let n = numbers.len();
            assert_eq!(n % BATCH, 0, "a follower returned {n} events of {t}, not whole batches");
        }
        if !got.is_empty() && seen.values().map(Vec::len).sum::<usize>() < total {
            overlapped = true;
            reader_saw_some.store(true, Ordering::SeqCst);
        }
    }
    writer.join().unwrap();
    assert!(overlapped, "the follower read while the writer was writing");
    for t in &topics {
        let expected: Vec<u64> = (0..per_topic as u64).collect();
        assert_eq!(seen.get(t), Some(&expected), "every event of {t} once, in order");
    }
    assert_quiet(follower.as_mut());
}

/// Conditional append succeeds on the expected last cursor and conflicts otherwise.
pub fn conditional_append(h: &dyn Harness) {
    let store = h.open();
    let t = topic("account.42");
    let first = store.append_expecting(&event(&t, 0), None).unwrap();
    let err = store.append_expecting(&event(&t, 1), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let second = store.append_expecting(&event(&t, 1), Some(first)).unwrap();
    let err = store.append_expecting(&event(&t, 2), Some(first)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string().contains(&second.to_string()),
        "the conflict names the actual cursor: {err}"
    );
    assert_eq!(
        numbers(&store.query(&Query::topic(&t)).unwrap()),
        vec![0, 1],
        "a lost append writes nothing"
    );
    let err = store.append_expecting(&event(&topic("account.43"), 0), Some(first)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

/// Racing conditional appends on one expected cursor: each round every
/// thread reads the last cursor, then all append expecting it at once, and
/// exactly one wins; the winners form a chain, each expecting the one before.
pub fn conditional_append_race_has_one_winner(h: &dyn Harness) {
    let t = topic("race.cas");
    let rounds = 20u64;
    let threads = 4usize;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads as u64)
        .map(|w| {
            let store = h.open();
            let t = t.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut tries = Vec::new();
                for round in 0..rounds {
                    // Every append of the round before has returned.
                    barrier.wait();
                    let expected = store.last_cursor(&t).unwrap();
                    // Nobody appends before everybody has read `expected`.
                    barrier.wait();
                    let result = store.append_expecting(&event(&t, round * 1000 + w), expected);
                    match &result {
                        Ok(cursor) => {
                            assert!(Some(*cursor) > expected, "{cursor} after {expected:?}")
                        }
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
                    }
                    tries.push((round, expected, result.ok()));
                }
                tries
            })
        })
        .collect();
    let tries: Vec<_> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let mut chain = None;
    let mut winners = Vec::new();
    for round in 0..rounds {
        let this: Vec<_> = tries.iter().filter(|(r, _, _)| *r == round).collect();
        assert!(this.iter().all(|(_, expected, _)| *expected == chain), "round {round}: {this:?}");
        let won: Vec<Cursor> = this.iter().filter_map(|(_, _, won)| *won).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one append expecting {chain:?} wins");
        chain = Some(won[0]);
        winners.push(won[0]);
    }
    let stored = h.open().query(&Query::topic(&t)).unwrap();
    let cursors: Vec<Cursor> = stored.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, winners, "every winner is stored once, every loser not at all");
    let rounds_stored: Vec<u64> = numbers(&stored).iter().map(|n| n / 1000).collect();
    assert_eq!(rounds_stored, (0..rounds).collect::<Vec<_>>());
}

/// Source, correlation id, since (inclusive), until (exclusive) and after filter exactly.
pub fn query_filters(h: &dyn Harness) {
    let store = h.open();
    let t = topic("filters");
    let base = 1_776_340_800_000_000; // 2026-04-16T12:00:00Z
    let mut cursors = Vec::new();
    for n in 0..10u64 {
        let mut e = event_at(&t, n, base + n as i64 * 1_000_000);
        e.source = if n % 2 == 0 { "even".into() } else { "odd".into() };
        if n == 3 {
            e.correlation_id = Some("corr-3".into());
        }
        cursors.push(store.append(&e).unwrap());
    }
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query::topic(&t);
        f(&mut q);
        numbers(&store.query(&q).unwrap())
    };
    assert_eq!(q(&|q| q.source = Some("odd".into())), vec![1, 3, 5, 7, 9]);
    assert_eq!(q(&|q| q.source = Some("nobody".into())), Vec::<u64>::new());
    assert_eq!(q(&|q| q.correlation_id = Some("corr-3".into())), vec![3]);
    let at = |n: i64| Timestamp::from_unix_micros(base + n * 1_000_000);
    assert_eq!(q(&|q| q.since = Some(at(7))), vec![7, 8, 9], "since is inclusive");
    assert_eq!(q(&|q| q.until = Some(at(2))), vec![0, 1], "until is exclusive");
    assert_eq!(
        q(&|q| {
            q.since = Some(at(2));
            q.until = Some(at(5))
        }),
        vec![2, 3, 4]
    );
    assert_eq!(q(&|q| q.since = Some(at(2).add_micros(1))), vec![3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(q(&|q| q.since = Some(at(100))), Vec::<u64>::new());
    assert_eq!(q(&|q| q.after = Some(cursors[6])), vec![7, 8, 9]);
    assert_eq!(q(&|q| q.after = Some(cursors[9])), Vec::<u64>::new());
    assert_eq!(q(&|q| q.after = Some(Cursor::ZERO)).len(), 10);
    assert_eq!(
        q(&|q| {
            q.after = Some(cursors[2]);
            q.source = Some("even".into())
        }),
        vec![4, 6, 8]
    );
    let err = store
        .query(&Query { since: Some(at(5)), until: Some(at(1)), ..Query::topic(&t) })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// First-N and last-N at their edges, alone and with filters.
pub fn query_limits(h: &dyn Harness) {
    let store = h.open();
    let t = topic("limits");
    store.append_batch_owned(&t, (0..50).map(|n| event(&t, n)).collect()).unwrap();
    let q = |limit: Limit| {
        numbers(&store.query(&Query { limit: Some(limit), ..Query::topic(&t) }).unwrap())
    };
    assert_eq!(q(Limit::First(3)), vec![0, 1, 2]);
    assert_eq!(q(Limit::Last(3)), vec![47, 48, 49], "last N comes oldest first");
    assert_eq!(q(Limit::First(0)), Vec::<u64>::new());
    assert_eq!(q(Limit::Last(0)), Vec::<u64>::new());
    assert_eq!(q(Limit::First(500)).len(), 50);
    assert_eq!(q(Limit::Last(500)).len(), 50);
    assert_eq!(q(Limit::Last(1)), vec![49]);
    let mut filtered = Query::topic(&t);
    filtered.limit = Some(Limit::Last(2));
    filtered.after = store
        .query(&Query { limit: Some(Limit::First(10)), ..Query::topic(&t) })
        .unwrap()
        .last()
        .map(|e| e.cursor);
    assert_eq!(numbers(&store.query(&filtered).unwrap()), vec![48, 49]);
    let timestamps: Vec<_> =
        store.query(&Query::topic(&t)).unwrap().iter().map(|e| e.event.timestamp).collect();
    let since_tenth_last = Query { since: Some(timestamps[40]), ..Query::topic(&t) };
    // `since` is inclusive: events appended in the same microsecond as the
    // 41st come with it.
    let first = timestamps.iter().position(|t| *t == timestamps[40]).unwrap_or(40) as u64;
    assert_eq!(numbers(&store.query(&since_tenth_last).unwrap()).first(), Some(&first));
}

/// Across topics results merge by timestamp; patterns select topics; each topic keeps append order.
pub fn query_orders_across_topics(h: &dyn Harness) {
    let store = h.open();
    let (a, b, c) = (topic("task.a"), topic("task.b.deep"), topic("other"));
    let base = 1_776_340_800_000_000;
    store.append_owned(event_at(&a, 0, base)).unwrap();
    store.append_owned(event_at(&b, 1, base + 10)).unwrap();
    store.append_owned(event_at(&c, 2, base + 20)).unwrap();
    store.append_owned(event_at(&a, 3, base + 30)).unwrap();
    store.append_owned(event_at(&b, 4, base + 25)).unwrap();
    let all = store.query(&Query::default()).unwrap();
    assert_eq!(numbers(&all), vec![0, 1, 2, 4, 3]);
    let q = |p: &str| numbers(&store.query(&Query::pattern(pattern(p))).unwrap());
    assert_eq!(q("task.*"), vec![0, 3]);
    assert_eq!(q("task.>"), vec![0, 1, 4, 3]);
    assert_eq!(q("*"), vec![2]);
    assert_eq!(q("nothing.>"), Vec::<u64>::new());
    let two = Query { topics: vec![pattern("task.a"), pattern("other")], ..Query::default() };
    assert_eq!(numbers(&store.query(&two).unwrap()), vec![0, 2, 3]);
    let last = Query { limit: Some(Limit::Last(2)), ..Query::default() };
    assert_eq!(numbers(&store.query(&last).unwrap()), vec![4, 3]);
    let first = Query { limit: Some(Limit::First(2)), ..Query::default() };
    assert_eq!(numbers(&store.query(&first).unwrap()), vec![0, 1]);
}

/// With timestamps out of append order, `since`/`until` are still exact and append order is kept.
pub fn out_of_order_timestamps(h: &dyn Harness) {
    let store = h.open();
    let t = topic("skewed");
    let base = 1_776_340_800_000_000;
    let offsets = [5, 1, 9, 3, 7, 2, 8, 0, 6, 4];
    for (n, off) in offsets.iter().enumerate() {
        store.append_owned(event_at(&t, n as u64, base + off * 1_000)).unwrap();
    }
    for since in 0..11 {
        let q = Query {
            since: Some(Timestamp::from_unix_micros(base + since * 1_000)),
            ..Query::topic(&t)
        };
        let expected: Vec<u64> = offsets
            .iter()
            .enumerate()
            .filter(|(_, o)| **o >= since)
            .map(|(n, _)| n as u64)
            .collect();
        assert_eq!(numbers(&store.query(&q).unwrap()), expected, "since offset {since}");
        let q = Query {
            until: Some(Timestamp::from_unix_micros(base + since * 1_000)),
            ..Query::topic(&t)
        };
        let expected: Vec<u64> = offsets
            .iter()
            .enumerate()
            .filter(|(_, o)| **o < since)
            .map(|(n, _)| n as u64)
            .collect();
        assert_eq!(numbers(&store.query(&q).unwrap()), expected, "until offset {since}");
    }
}

/// An `after` cursor with a pattern or several topics is rejected, not guessed.
pub fn after_needs_one_topic(h: &dyn Harness) {
    let store = h.open();
    for q in [
        Query { after: Some(Cursor::ZERO), ..Query::default() },
        Query { after: Some(Cursor::ZERO), ..Query::pattern(pattern("a.*")) },
        Query {
            after: Some(Cursor::ZERO),
            topics: vec![pattern("a"), pattern("b")],
            ..Query::default()
        },
    ] {
        let err = store.query(&q).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("after"), "{err}");
    }
}

/// Follow returns empty when the time runs out, wakes for an append from
/// another thread, and goes on after a wait that ran out without rereading.
pub fn follow_times_out_then_wakes(h: &dyn Harness) {
    let store = h.open();
    let t = topic("follow.wake");
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::New)).unwrap();
    assert!(follower.next_batch(10, Duration::from_millis(100)).unwrap().is_empty());
    let writer = {
        let store = h.open();
        let t = t.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            store.append_owned(event(&t, 7)).unwrap();
        })
    };
    let got = collect(follower.as_mut(), 1);
    writer.join().unwrap();
    assert_eq!(numbers(&got), vec![7]);
    assert_quiet(follower.as_mut());
    // After a wait that ran out it goes on where it was: the next event, once.
    store.append_owned(event(&t, 8)).unwrap();
    assert_eq!(numbers(&collect(follower.as_mut(), 1)), vec![8]);
    assert_quiet(follower.as_mut());
}

/// A timeout past what the clock can represent ([`Duration::MAX`]) returns
/// what is there at once, and otherwise waits without limit for an append.
pub fn follow_waits_past_the_clock(h: &dyn Harness) {
    let store = h.open();
    let t = topic("follow.forever");
    store.append_owned(event(&t, 0)).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning)).unwrap();
    assert_eq!(numbers(&follower.next_batch(10, Duration::MAX).unwrap()), vec![0]);
    // The wait runs on its own thread so that a store that never wakes fails, not hangs.
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let got = follower.next_batch(10, Duration::MAX);
        let _ = tx.send(got.map(|events| numbers(&events)));
    });
    store.append_owned(event(&t, 1)).unwrap();
    match rx.recv_timeout(DEADLINE) {
        Ok(got) => assert_eq!(got.unwrap(), vec![1]),
        Err(_) => panic!("next_batch(.., Duration::MAX) did not return an event appended later"),
    }
    waiter.join().unwrap();
}

/// Beginning, New, Since and per-topic positions start where they promise.
pub fn follow_start_modes(h: &dyn Harness) {
    let store = h.open();
    let t = topic("follow.modes");
    let p = TopicPattern::from(t.clone());
    let base = 1_776_340_800_000_000;
    let mut history = Vec::new();
    for n in 0..5u64 {
        history.push(store.append_owned(event_at(&t, n, base + n as i64 * 1_000)).unwrap());
    }
    let mut beginning = store.follow(&p, FollowFrom::start(Start::Beginning)).unwrap();
    let mut new = store.follow(&p, FollowFrom::start(Start::New)).unwrap();
    let mut since = store
        .follow(&p, FollowFrom::start(Start::Since(Timestamp::from_unix_micros(base + 3_000))))
        .unwrap();
    let mut after = store.follow(&p, FollowFrom::after(t.clone(), history[1].cursor)).unwrap();
    // A live event older than `since` is still delivered: since filters history only.
    store.append_owned(event_at(&t, 5, base)).unwrap();
    assert_eq!(numbers(&collect(beginning.as_mut(), 6)), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(numbers(&collect(new.as_mut(), 1)), vec![5]);
    assert_eq!(numbers(&collect(since.as_mut(), 3)), vec![3, 4, 5]);
    assert_eq!(numbers(&collect(after.as_mut(), 4)), vec![2, 3, 4, 5]);
    for f in [&mut beginning, &mut new, &mut since, &mut after] {
        assert_quiet(f.as_mut());
    }
}

/// A pattern follower sees matching topics created after it began, and nothing else.
pub fn follow_patterns_and_new_topics(h: &dyn Harness) {
    let store = h.open();
    store.append_owned(event(&topic("task.old"), 0)).unwrap();
    let mut one = store.follow(&pattern("task.*"), FollowFrom::start(Start::New)).unwrap();
    let mut all = store.follow(&pattern("task.>"), FollowFrom::start(Start::New)).unwrap();
    store.append_owned(event(&topic("task.new"), 1)).unwrap();
    store.append_owned(event(&topic("task.new.deep"), 2)).unwrap();
    store.append_owned(event(&topic("other.new"), 3)).unwrap();
    store.append_owned(event(&topic("task.old"), 4)).unwrap();
    let mut got_one = numbers(&collect(one.as_mut(), 2));
    got_one.sort_unstable();
    assert_eq!(got_one, vec![1, 4]);
    let mut got_all = numbers(&collect(all.as_mut(), 3));
    got_all.sort_unstable();
    assert_eq!(got_all, vec![1, 2, 4]);
    assert_quiet(one.as_mut());
    assert_quiet(all.as_mut());
}

/// After a clear, a follower continues with the next new event: nothing reread, nothing skipped.
pub fn follow_survives_clear(h: &dyn Harness) {
    let store = h.open();
    let t = topic("follow.clear");
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning)).unwrap();
    let before: Vec<_> = (0..3).map(|n| store.append_owned(event(&t, n)).unwrap()).collect();
    assert_eq!(numbers(&collect(follower.as_mut(), 3)), vec![0, 1, 2]);
    assert_eq!(store.clear(&Clear { topic: Some(t.clone()), before: None }).unwrap(), 3);
    assert_eq!(store.last_cursor(&t).unwrap(), None);
    let after: Vec<_> = (3..5).map(|n| store.append_owned(event(&t, n)).unwrap()).collect();
    assert!(after[0].cursor > before[2].cursor, "cursors keep growing across a clear");
    assert_eq!(numbers(&collect(follower.as_mut(), 2)), vec![3, 4]);
    assert_quiet(follower.as_mut());
    // Clearing everything, too.
    store.clear(&Clear::default()).unwrap();
    store.append_owned(event(&t, 5)).unwrap();
    assert_eq!(numbers(&collect(follower.as_mut(), 1)), vec![5]);
}

/// Cursors, data and consumer positions survive closing and reopening the store.
pub fn cursors_survive_reopen(h: &dyn Harness) {
    let t = topic("reopen");
    let consumer = ConsumerName::new("reopen-worker").unwrap();
    let written: Vec<_> = {
        let store = h.open();
        let w = (0..5).map(|n| store.append_owned(event(&t, n)).unwrap()).collect::<Vec<_>>();
        store.commit_consumer(&consumer, &t, w[2].cursor).unwrap();
        w
    };
    let store = h.open();
    assert_eq!(store.last_cursor(&t).unwrap(), Some(written[4].cursor));
    let text = written[1].cursor.to_string();
    let cursor: Cursor = text.parse().unwrap();
    let q = Query { after: Some(cursor), ..Query::topic(&t) };
    assert_eq!(numbers(&store.query(&q).unwrap()), vec![2, 3, 4]);
    let positions = store.load_consumer(&consumer).unwrap();
    assert_eq!(positions.get(&t), Some(&written[2].cursor));
    let mut follower = store
        .follow(&TopicPattern::from(t.clone()), FollowFrom { start: Start::Beginning, positions })
        .unwrap();
    assert_eq!(numbers(&collect(follower.as_mut(), 2)), vec![3, 4]);
    let next = store.append_owned(event(&t, 5)).unwrap();
    assert!(next.cursor > written[4].cursor);
    assert_eq!(numbers(&collect(follower.as_mut(), 1)), vec![5]);
}

/// Consumer positions: empty when new, per topic, overwritten by later commits, listed.
pub fn consumers_commit_and_reload(h: &dyn Harness) {
    let store = h.open();
    let (a, b) = (ConsumerName::new("worker-a").unwrap(), ConsumerName::new("worker/b:1").unwrap());
    let (t1, t2) = (topic("c.one"), topic("c.two"));
    assert!(store.load_consumer(&a).unwrap().is_empty());
    assert!(store.consumers().unwrap().is_empty());
    store.commit_consumer(&a, &t1, Cursor::new(3, 0)).unwrap();
    store.commit_consumer(&a, &t2, Cursor::new(1, 0)).unwrap();
    store.commit_consumer(&a, &t1, Cursor::new(4, 0)).unwrap();
    store.commit_consumer(&b, &t1, Cursor::new(9, 1)).unwrap();
    let loaded = store.load_consumer(&a).unwrap();
    assert_eq!(loaded, BTreeMap::from([(t1.clone(), Cursor::new(4, 0)), (t2, Cursor::new(1, 0))]));
    assert_eq!(store.load_consumer(&b).unwrap(), BTreeMap::from([(t1, Cursor::new(9, 1))]));
    assert_eq!(store.consumers().unwrap(), vec![a, b]);
}

/// Topic stats: counts, bytes, first and last timestamps, sorted names.
pub fn topic_stats(h: &dyn Harness) {
    let store = h.open();
    let base = 1_776_340_800_000_000;
    let (a, b) = (topic("stats.b"), topic("stats.a"));
    for n in 0..3 {
        store.append_owned(event_at(&a, n, base + n as i64)).unwrap();
    }
    let last_b = store.append_owned(event_at(&b, 9, base + 100)).unwrap();
    let stats = store.topics().unwrap();
    let names: Vec<_> = stats.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(names, vec!["stats.a", "stats.b"]);
    assert_eq!(stats[0].events, 1);
    assert_eq!(stats[1].events, 3);
    assert!(stats[1].bytes > stats[0].bytes && stats[0].bytes > 0);
    assert_eq!(stats[1].first, Some(Timestamp::from_unix_micros(base)));
    assert_eq!(stats[1].last, Some(Timestamp::from_unix_micros(base + 2)));
    assert_eq!(stats[0].last_cursor, Some(last_b.cursor));
}

/// Clear one topic, events before a time, or everything; counts are exact and others untouched.
pub fn clear_scopes(h: &dyn Harness) {
    let store = h.open();
    let base = 1_776_340_800_000_000;
    let (a, b) = (topic("clear.a"), topic("clear.b"));
    for n in 0..10 {
        store.append_owned(event_at(&a, n, base + n as i64 * 10)).unwrap();
        store.append_owned(event_at(&b, n, base + n as i64 * 10)).unwrap();
    }
    let before = Some(Timestamp::from_unix_micros(base + 40));
    assert_eq!(store.clear(&Clear { topic: Some(a.clone()), before }).unwrap(), 4);
    assert_eq!(numbers(&store.query(&Query::topic(&a)).unwrap()), vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(store.query(&Query::topic(&b)).unwrap().len(), 10);
    assert_eq!(store.clear(&Clear { topic: None, before }).unwrap(), 4);
    assert_eq!(numbers(&store.query(&Query::topic(&b)).unwrap()), vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(store.clear(&Clear { topic: Some(b.clone()), before: None }).unwrap(), 6);
    assert!(store.query(&Query::topic(&b)).unwrap().is_empty());
    assert_eq!(store.clear(&Clear { topic: Some(topic("clear.none")), before: None }).unwrap(), 0);
    assert_eq!(store.clear(&Clear::default()).unwrap(), 6);
    assert!(store.query(&Query::default()).unwrap().is_empty());
    let stats = store.topics().unwrap();
    assert!(stats.iter().all(|s| s.events == 0), "{stats:?}");
    store.append_owned(event(&a, 100)).unwrap();
    assert_eq!(numbers(&store.query(&Query::topic(&a)).unwrap()), vec![100]);
}

/// Names that look alike stay distinct, long and non-ASCII names work, and are
/// listed exactly; names that climb out of a directory are not topics at all.
pub fn topic_names_are_lossless(h: &dyn Harness) {
    let store = h.open();
    let long = "x".repeat(250) + ".long";
    let long_unicode = "é".repeat(127);
    let names = [
        "service/api.health",
        "service_api.health",
        "service\\api.health",
        "service%2Fapi.health",
        "%2e%2e",
        "/etc/passwd",
        "CON",
        "a.b",
        "A.b",
        "größe.ändern",
        "日本.語",
        "x.jsonl",
        "x.meta",
        long.as_str(),
        long_unicode.as_str(),
    ];
    for refused in ["..", "..%2e", "../../etc/passwd", "a/../b"] {
        let err = Topic::new(refused).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{refused:?} is not a topic");
    }
    for (n, name) in names.iter().enumerate() {
        store.append_owned(event(&topic(name), n as u64)).unwrap();
    }
    let listed: BTreeSet<String> =
        store.topics().unwrap().into_iter().map(|s| s.topic.to_string()).collect();
    let expected: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(listed.len(), 15, "all 15 names are distinct topics");
    assert_eq!(listed, expected);
    for (n, name) in names.iter().enumerate() {
        let got = store.query(&Query::topic(&topic(name))).unwrap();
        assert_eq!(numbers(&got), vec![n as u64], "topic {name:?}");
        assert_eq!(got[0].event.topic.as_str(), *name);
    }
}

/// Threads appending at once: nothing lost, nothing duplicated, each writer's order kept.
pub fn concurrent_appends_lose_nothing(h: &dyn Harness) {
    let t = topic("concurrent");
    let writers = 6u64;
    let per = 300u64;
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let store = h.open();
            let t = t.clone();
            thread::spawn(move || {
                for i in 0..per {
                    if i % 3 == 0 {
                        store.append_batch(&t, &[event(&t, w * per + i)]).unwrap();
                    } else {
                        store.append_owned(event(&t, w * per + i)).unwrap();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let all = h.open().query(&Query::topic(&t)).unwrap();
    assert_eq!(all.len() as u64, writers * per);
    let got = numbers(&all);
    let unique: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(unique.len() as u64, writers * per, "no duplicates");
    for w in 0..writers {
        let mine: Vec<_> = got.iter().copied().filter(|n| n / per == w).collect();
        assert!(mine.windows(2).all(|p| p[0] < p[1]), "writer {w} kept its order");
    }
    assert!(all.windows(2).all(|p| p[0].cursor < p[1].cursor));
}

/// `count_after` counts the events past a cursor (a consumer's lag).
pub fn count_after_cursor(h: &dyn Harness) {
    let store = h.open();
    let t = topic("lag");
    let written: Vec<_> = (0..7).map(|n| store.append_owned(event(&t, n)).unwrap()).collect();
    assert_eq!(store.count_after(&t, Cursor::ZERO).unwrap(), 7);
    assert_eq!(store.count_after(&t, written[3].cursor).unwrap(), 3);
    assert_eq!(store.count_after(&t, written[6].cursor).unwrap(), 0);
    assert_eq!(store.count_after(&topic("lag.none"), Cursor::ZERO).unwrap(), 0);
}

// Consumer locks.

/// The time to live the lock cases ask for: long enough never to run out in a case.
const LOCK_TTL: Duration = Duration::from_secs(30);

fn try_lock(store: &dyn EventStore, name: &ConsumerName) -> Option<Box<dyn ConsumerLock>> {
    store.lock_consumer(name, &LockRequest::new(LOCK_TTL)).unwrap()
}

/// Threads (each with its own handle on the store) started together by a
/// barrier race for one consumer's lock, round after round: exactly one wins
/// each round, while the winner still holds it.
pub fn consumer_lock_has_one_holder_in_a_race(h: &dyn Harness) {
    const RACERS: usize = 8;
    const ROUNDS: usize = 20;
    let name = ConsumerName::new("racer").unwrap();
    let start = Arc::new(Barrier::new(RACERS));
    let tried = Arc::new(Barrier::new(RACERS));
    let released = Arc::new(Barrier::new(RACERS));
    let threads: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, name) = (h.open(), name.clone());
            let (start, tried, released) = (start.clone(), tried.clone(), released.clone());
            thread::spawn(move || {
                let mut wins = Vec::new();
                for _ in 0..ROUNDS {
                    start.wait();
                    let held = try_lock(store.as_ref(), &name);
                    wins.push(held.as_ref().map(|l| l.fence()));
                    tried.wait();
                    drop(held);
                    released.wait();
                }
                wins
            })
        })
        .collect();
    let wins: Vec<Vec<Option<Fence>>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut fences = Vec::new();
    for round in 0..ROUNDS {
        let winners: Vec<Fence> = wins.iter().filter_map(|w| w[round]).collect();
        assert_eq!(winners.len(), 1, "round {round}: {} holders at once", winners.len());
        fences.push(winners[0]);
    }
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fences must grow: {fences:?}");
}

/// A held lock keeps others out (also other handles on the store) until it
/// is dropped; a waiter takes it as soon as it is, and a cancelled wait ends.
pub fn consumer_lock_is_released_on_drop(h: &dyn Harness) {
    let (store, other) = (h.open(), h.open());
    let name = ConsumerName::new("worker/one").unwrap();
    let held = try_lock(store.as_ref(), &name).expect("a free lock is taken");
    assert!(!held.is_lost());
    assert!(try_lock(other.as_ref(), &name).is_none(), "a held lock is refused");
    assert!(try_lock(other.as_ref(), &ConsumerName::new("worker/two").unwrap()).is_some());
    assert!(store.consumers().unwrap().is_empty(), "a lock is not a committed position");
    let waited = Duration::from_millis(200);
    let begun = Instant::now();
    let request = LockRequest::new(LOCK_TTL).wait(waited);
    assert!(other.lock_consumer(&name, &request).unwrap().is_none());
    assert!(begun.elapsed() >= waited, "gave up before the wait ran out");
    // A wait without limit, cancelled from another thread.
    let cancel = Cancel::new();
    let request = LockRequest::new(LOCK_TTL).wait(Duration::MAX).cancel(cancel.clone());
    let (store2, name2) = (other.clone(), name.clone());
    let waiter = thread::spawn(move || store2.lock_consumer(&name2, &request).unwrap().is_none());
    cancel.cancel();
    assert!(waiter.join().unwrap(), "a cancelled wait returns no lock");
    // A waiter without limit takes it once it is dropped.
    let (store2, name2) = (other.clone(), name.clone());
    let request = LockRequest::new(LOCK_TTL).wait(Duration::MAX);
    let waiter = thread::spawn(move || store2.lock_consumer(&name2, &request).unwrap());
    let fence = held.fence();
    drop(held);
    let next = waiter.join().unwrap().expect("the waiter takes the released lock");
    assert!(next.fence() > fence);
}

/// A holder whose lock was taken over cannot commit: its fence is refused
/// with [`Error::StaleLock`] and nothing is written; the new holder commits.
pub fn consumer_lock_refuses_a_stale_commit(h: &dyn Harness) {
    let store = h.open();
    let name = ConsumerName::new("fenced").unwrap();
    let t = topic("fenced.t");
    let first = try_lock(store.as_ref(), &name).unwrap();
    let old = first.fence();
    store.commit_fenced(&name, old, &t, Cursor::new(1, 0)).unwrap();
    drop(first);
    let refused = store.commit_fenced(&name, old, &t, Cursor::new(2, 0)).unwrap_err();
    assert!(matches!(refused, Error::StaleLock { .. }), "{refused}");
    let second = try_lock(h.open().as_ref(), &name).unwrap();
    let refused = store.commit_fenced(&name, old, &t, Cursor::new(3, 0)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(refused.to_string().contains("fenced"), "names the consumer: {refused}");
    assert_eq!(
        store.load_consumer(&name).unwrap(),
        BTreeMap::from([(t.clone(), Cursor::new(1, 0))])
    );
    store.commit_fenced(&name, second.fence(), &t, Cursor::new(4, 0)).unwrap();
    assert_eq!(
        store.load_consumer(&name).unwrap(),
        BTreeMap::from([(t.clone(), Cursor::new(4, 0))])
    );
    // A fence never handed out is refused too.
    let never = ConsumerName::new("never-locked").unwrap();
    assert!(store.commit_fenced(&never, Fence(1), &t, Cursor::new(1, 0)).is_err());
    assert!(store.load_consumer(&never).unwrap().is_empty());
}

/// Taken, released and taken again, also through a reopened store: each
/// acquisition has a greater fence.
pub fn consumer_lock_is_taken_again_after_release(h: &dyn Harness) {
    let name = ConsumerName::new("again").unwrap();
    let mut last = None;
    for _ in 0..5 {
        let store = h.open();
        let held = try_lock(store.as_ref(), &name).expect("a released lock is free");
        assert!(last.is_none_or(|l| held.fence() > l), "{:?} after {last:?}", held.fence());
        last = Some(held.fence());
    }
}
