//! The bus over the in-memory reference store.

mod util;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bus::{
    BusConfig, Error, EventBus, PublishOptions, ReplayConfig, RetryPolicy, StartAt, SubscribeConfig,
};
use seed_event::{
    Clear, Cursor, ErrorKind, Event, EventStore, MemoryStore, Query, StoredEvent, Timestamp, Topic,
};
use serde_json::json;
use util::{
    collector, consumer, n_of, pattern, payload, take, take_only, topic, wait_for, DEADLINE,
};

fn new_bus() -> (EventBus, MemoryStore) {
    let store = MemoryStore::new();
    (EventBus::new(Arc::new(store.clone())), store)
}

fn publish(bus: &EventBus, t: &str, n: u64) -> StoredEvent {
    bus.publish(&topic(t), "test", payload(n), PublishOptions::default()).unwrap()
}

fn numbers(items: &[(String, u64)]) -> Vec<u64> {
    items.iter().map(|(_, n)| *n).collect()
}

#[test]
fn publish_and_query() {
    let (bus, _) = new_bus();
    let options = PublishOptions {
        correlation_id: Some("req-1".into()),
        metadata: json!({"k": "v"}).as_object().unwrap().clone(),
        ..PublishOptions::default()
    };
    let stored = bus.publish(&topic("task.done"), "fenrir", payload(1), options).unwrap();
    assert_eq!(stored.event.correlation_id.as_deref(), Some("req-1"));
    assert_eq!(stored.event.metadata["k"], "v");
    assert_eq!(stored.event.id.get_version_num(), 7);
    let read = bus.query(&Query::topic(&topic("task.done"))).unwrap();
    assert_eq!(read, vec![stored]);
    assert_eq!(bus.list_topics().unwrap(), vec![topic("task.done")]);
}

#[test]
fn bad_sources_are_rejected_and_nothing_is_written() {
    let (bus, store) = new_bus();
    for bad in ["", "a\nb"] {
        let err = bus.publish(&topic("a"), bad, payload(0), PublishOptions::default()).unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        assert!(err.to_string().contains("source"), "{err}");
        let err = bus.publish_batch(&topic("a"), bad, vec![payload(0)], &PublishOptions::default());
        assert!(err.unwrap_err().is_invalid_input());
    }
    assert!(store.query(&Query::default()).unwrap().is_empty());
}

#[test]
fn batches_are_published_together_with_fresh_ids() {
    let (bus, store) = new_bus();
    let stored = bus
        .publish_batch(&topic("b"), "s", (0..10).map(payload).collect(), &PublishOptions::default())
        .unwrap();
    assert_eq!(stored.iter().map(n_of).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    let ids: std::collections::BTreeSet<_> = stored.iter().map(|e| e.event.id).collect();
    assert_eq!(ids.len(), 10);
    let with_id = PublishOptions { id: Some(uuid::Uuid::now_v7()), ..PublishOptions::default() };
    let err = bus.publish_batch(&topic("b"), "s", vec![payload(0)], &with_id).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert_eq!(store.query(&Query::default()).unwrap().len(), 10);
}

#[test]
fn publishing_an_id_twice_stores_it_once() {
    let (bus, store) = new_bus();
    let t = topic("idem");
    let id = uuid::Uuid::now_v7();
    let options = PublishOptions { id: Some(id), ..PublishOptions::default() };
    let first = bus.publish(&t, "s", payload(1), options.clone()).unwrap();
    publish(&bus, "idem", 2);
    let again = bus.publish(&t, "s", payload(99), options).unwrap();
    assert_eq!(again, first, "the stored event comes back unchanged");
    assert_eq!(numbers_of(&store, &t), vec![1, 2]);

    // Racing publishers of the same events store each one once.
    let events: Vec<Event> = (10..30).map(|n| Event::new(t.clone(), "s", payload(n))).collect();
    let bus = Arc::new(bus);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (bus, events) = (bus.clone(), events.clone());
            thread::spawn(move || {
                for e in events {
                    bus.publish_event(e).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut expected = vec![1, 2];
    expected.extend(10..30);
    assert_eq!(numbers_of(&store, &t), expected);
}

#[test]
fn the_idempotency_window_is_bounded() {
    let store = MemoryStore::new();
    let config = BusConfig::default().idempotency_window(2);
    let bus = EventBus::with_config(Arc::new(store.clone()), config);
    let t = topic("window");
    let event = Event::new(t.clone(), "s", payload(0));
    bus.publish_event(event.clone()).unwrap();
    publish(&bus, "window", 1);
    bus.publish_event(event.clone()).unwrap();
    assert_eq!(numbers_of(&store, &t), vec![0, 1], "within the window: a no-op");
    publish(&bus, "window", 2);
    bus.publish_event(event).unwrap();
    assert_eq!(numbers_of(&store, &t), vec![0, 1, 2, 0], "outside the window: stored again");
}

fn numbers_of(store: &MemoryStore, t: &Topic) -> Vec<u64> {
    store.query(&Query::topic(t)).unwrap().iter().map(n_of).collect()
}

#[test]
fn subscribe_new_gets_everything_published_after_it_returns() {
    let (bus, _) = new_bus();
    for trial in 0..50 {
        publish(&bus, "race", 1000 + trial);
        let (handler, rx) = collector();
        let sub = bus.subscribe(&pattern("race"), StartAt::New, handler).unwrap();
        publish(&bus, "race", trial);
        assert_eq!(numbers(&take_only(&rx, 1)), vec![trial], "trial {trial}");
        sub.unsubscribe().unwrap();
        assert!(rx.try_recv().is_err(), "trial {trial}: the older event came too");
    }
}

#[test]
fn start_modes() {
    let (bus, _) = new_bus();
    let base = 1_776_340_800_000_000;
    let t = topic("modes");
    let mut cursors = Vec::new();
    for n in 0..4 {
        let options = PublishOptions {
            timestamp: Some(Timestamp::from_unix_micros(base + n as i64 * 1000)),
            ..PublishOptions::default()
        };
        cursors.push(bus.publish(&t, "s", payload(n), options).unwrap().cursor);
    }
    let p = pattern("modes");
    let since = StartAt::Since(Timestamp::from_unix_micros(base + 2000));
    let starts = [
        (StartAt::Beginning, vec![0, 1, 2, 3, 9]),
        (StartAt::New, vec![9]),
        (since, vec![2, 3, 9]),
        (StartAt::After(cursors[0]), vec![1, 2, 3, 9]),
    ];
    let subs: Vec<_> = starts
        .into_iter()
        .map(|(start, want)| {
            let (handler, rx) = collector();
            (bus.subscribe(&p, start, handler).unwrap(), rx, want)
        })
        .collect();
    publish(&bus, "modes", 9);
    for (sub, rx, want) in subs {
        assert_eq!(numbers(&take(&rx, want.len())), want);
        sub.unsubscribe().unwrap();
    }
    let err =
        bus.subscribe(&pattern("modes.*"), StartAt::After(cursors[0]), |_| Ok(())).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

#[test]
fn patterns_match_new_topics_and_keep_order_per_topic() {
    let (bus, _) = new_bus();
    let (one, rx_one) = collector();
    let (all, rx_all) = collector();
    let s1 = bus.subscribe(&pattern("task.*"), StartAt::New, one).unwrap();
    let s2 = bus.subscribe(&pattern("task.>"), StartAt::New, all).unwrap();
    let bus = Arc::new(bus);
    let writers: Vec<_> = ["task.a", "task.b", "task.a.deep", "other"]
        .into_iter()
        .map(|t| {
            let bus = bus.clone();
            thread::spawn(move || {
                for n in 0..200 {
                    publish(&bus, t, n);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let per_topic = |items: Vec<(String, u64)>| {
        let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (t, n) in items {
            m.entry(t).or_default().push(n);
        }
        m
    };
    let all_n: Vec<u64> = (0..200).collect();
    let one = per_topic(take(&rx_one, 400));
    assert_eq!(one.keys().collect::<Vec<_>>(), vec!["task.a", "task.b"]);
    assert!(one.values().all(|v| *v == all_n), "in order, each once");
    let all = per_topic(take(&rx_all, 600));
    assert_eq!(all.keys().collect::<Vec<_>>(), vec!["task.a", "task.a.deep", "task.b"]);
    assert!(all.values().all(|v| *v == all_n), "in order, each once");
    s1.unsubscribe().unwrap();
    s2.unsubscribe().unwrap();
}

#[test]
fn delivery_goes_on_after_a_clear() {
    let (bus, _) = new_bus();
    let (handler, rx) = collector();
    let sub = bus.subscribe(&pattern("c.>"), StartAt::New, handler).unwrap();
    publish(&bus, "c.x", 1);
    assert_eq!(numbers(&take(&rx, 1)), vec![1]);
    assert_eq!(bus.clear(&Clear { topic: Some(topic("c.x")), before: None }).unwrap(), 1);
    publish(&bus, "c.x", 2);
    assert_eq!(numbers(&take(&rx, 1)), vec![2]);
    bus.clear(&Clear::default()).unwrap();
    publish(&bus, "c.x", 3);
    publish(&bus, "c.y", 4);
    let mut got = numbers(&take(&rx, 2));
    got.sort_unstable();
    assert_eq!(got, vec![3, 4]);
    sub.unsubscribe().unwrap();
}

#[test]
fn unsubscribe_stops_delivery() {
    let (bus, _) = new_bus();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let sub = bus
        .subscribe(&pattern("u"), StartAt::New, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    publish(&bus, "u", 0);
    wait_for("the first event", || count.load(Ordering::SeqCst) == 1);
    let summary = sub.unsubscribe().unwrap();
    assert_eq!(summary.delivered, 1);
    publish(&bus, "u", 1);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(count.load(Ordering::SeqCst), 1, "nothing after unsubscribe");
}

#[test]
fn a_panicking_or_blocked_handler_affects_only_its_subscription() {
    let (bus, _) = new_bus();
    let panicky = bus
        .subscribe(&pattern("p"), StartAt::New, |e| {
            if n_of(e).is_multiple_of(2) {
                panic!("boom on {}", n_of(e));
            }
            Ok(())
        })
        .unwrap();
    let (release, blocked_rx) = mpsc::channel::<()>();
    let blocked = bus
        .subscribe(&pattern("p"), StartAt::New, move |_| {
            let _ = blocked_rx.recv();
            Ok(())
        })
        .unwrap();
    let (handler, rx) = collector();
    let healthy = bus.subscribe(&pattern("p"), StartAt::New, handler).unwrap();
    for n in 0..10 {
        publish(&bus, "p", n);
    }
    assert_eq!(numbers(&take(&rx, 10)), (0..10).collect::<Vec<_>>());
    wait_for("the panicking handler to see every event", || {
        panicky.delivered() + panicky.failed() == 10
    });
    assert_eq!((panicky.delivered(), panicky.failed()), (5, 5));
    assert!(!panicky.is_finished(), "a plain subscription goes on after a panic");
    drop(release);
    let summary = blocked.unsubscribe().unwrap();
    assert!(summary.delivered >= 1);
    panicky.unsubscribe().unwrap();
    healthy.unsubscribe().unwrap();
}

#[test]
fn max_events_ends_the_subscription() {
    let (bus, _) = new_bus();
    for n in 0..10 {
        publish(&bus, "m", n);
    }
    let (handler, rx) = collector();
    let config = SubscribeConfig::new(pattern("m"), StartAt::Beginning).max_events(3);
    let sub = bus.subscribe_with(config, handler).unwrap();
    let summary = sub.wait().unwrap();
    assert_eq!(summary.delivered, 3);
    assert_eq!(numbers(&take(&rx, 3)), vec![0, 1, 2]);
}

fn durable_config(name: &str, p: &str, start: StartAt) -> SubscribeConfig {
    SubscribeConfig::new(pattern(p), start).consumer(consumer(name))
}

#[test]
fn durable_consumers_resume_after_their_last_commit() {
    let (bus, store) = new_bus();
    for n in 0..5 {
        publish(&bus, "d.a", n);
    }
    let (handler, rx) = collector();
    let config = durable_config("w", "d.>", StartAt::Beginning).max_events(3);
    bus.subscribe_with(config, handler).unwrap().wait().unwrap();
    assert_eq!(numbers(&take(&rx, 3)), vec![0, 1, 2]);
    let committed = store.load_consumer(&consumer("w")).unwrap();
    assert_eq!(committed.get(&topic("d.a")).map(|c| c.major()), Some(3));

    // Published while it is away, also to a new topic: delivered on restart.
    publish(&bus, "d.a", 5);
    publish(&bus, "d.b", 6);
    let (handler, rx) = collector();
    let sub =
        bus.subscribe_durable(&consumer("w"), &pattern("d.>"), StartAt::New, handler).unwrap();
    let mut got = numbers(&take(&rx, 4));
    got.sort_unstable();
    assert_eq!(got, vec![3, 4, 5, 6]);
    sub.unsubscribe().unwrap();

    let stats = bus.stats(None).unwrap();
    let names: Vec<_> = stats.consumers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["w"], "the metadata record is hidden");
    assert!(stats.consumers[0].positions.iter().all(|p| p.lag == 0));
    publish(&bus, "d.a", 7);
    let stats = bus.stats(Some(&topic("d.a"))).unwrap();
    assert_eq!(stats.topics.len(), 1);
    assert_eq!(stats.consumers[0].positions[0].lag, 1);
}

#[test]
fn a_new_durable_consumer_from_new_does_not_lose_what_comes_while_it_is_away() {
    let (bus, _) = new_bus();
    publish(&bus, "n.a", 0);
    let (handler, rx) = collector();
    let sub =
        bus.subscribe_durable(&consumer("late"), &pattern("n.>"), StartAt::New, handler).unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "history is skipped");
    sub.unsubscribe().unwrap();
    publish(&bus, "n.a", 1);
    publish(&bus, "n.b", 2);
    let (handler, rx) = collector();
    let sub =
        bus.subscribe_durable(&consumer("late"), &pattern("n.>"), StartAt::New, handler).unwrap();
    let mut got = numbers(&take(&rx, 2));
    got.sort_unstable();
    assert_eq!(got, vec![1, 2]);
    sub.unsubscribe().unwrap();
}

#[test]
fn a_durable_consumer_created_since_a_time_keeps_that_start() {
    let (bus, _) = new_bus();
    let base = 1_776_340_800_000_000;
    let at = |n: i64| PublishOptions {
        timestamp: Some(Timestamp::from_unix_micros(base + n)),
        ..PublishOptions::default()
    };
    bus.publish(&topic("s.a"), "s", payload(0), at(0)).unwrap();
    let since = StartAt::Since(Timestamp::from_unix_micros(base + 10));
    let (handler, rx) = collector();
    let sub = bus.subscribe_durable(&consumer("since"), &pattern("s.>"), since, handler).unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    sub.unsubscribe().unwrap();
    bus.publish(&topic("s.b"), "s", payload(1), at(5)).unwrap();
    bus.publish(&topic("s.b"), "s", payload(2), at(20)).unwrap();
    let (handler, rx) = collector();
    let sub = bus
        .subscribe_durable(&consumer("since"), &pattern("s.>"), StartAt::Beginning, handler)
        .unwrap();
    assert_eq!(numbers(&take(&rx, 1)), vec![2], "the consumer's own start still applies");
    sub.unsubscribe().unwrap();
}

#[test]
fn a_failing_durable_handler_is_retried_then_stops_visibly() {
    let store = MemoryStore::new();
    let retry = RetryPolicy { attempts: 3, backoff: Duration::from_millis(1) };
    let bus = EventBus::with_config(Arc::new(store.clone()), BusConfig::default().retry(retry));
    for n in 0..4 {
        publish(&bus, "f", n);
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let failures = Arc::new(AtomicU64::new(0));
    let f = failures.clone();
    let sub = bus
        .subscribe_durable(&consumer("f"), &pattern("f"), StartAt::Beginning, move |e| {
            c.lock().unwrap().push(n_of(e));
            match n_of(e) {
                1 if f.fetch_add(1, Ordering::SeqCst) == 0 => Err("transient".into()),
                2 => panic!("always"),
                _ => Ok(()),
            }
        })
        .unwrap();
    let err = sub.wait().unwrap_err();
    match &err {
        Error::HandlerFailed { attempts, reason, .. } => {
            assert_eq!(*attempts, 3);
            assert!(reason.contains("always"), "{reason}");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(*calls.lock().unwrap(), vec![0, 1, 1, 2, 2, 2], "retried, never skipped");
    let committed = store.load_consumer(&consumer("f")).unwrap();
    assert_eq!(committed[&topic("f")].major(), 2, "committed up to the last handled event");

    // A restart redelivers the failed event first.
    let (handler, rx) = collector();
    let sub =
        bus.subscribe_durable(&consumer("f"), &pattern("f"), StartAt::Beginning, handler).unwrap();
    assert_eq!(numbers(&take(&rx, 2)), vec![2, 3]);
    sub.unsubscribe().unwrap();
}

#[test]
fn one_holder_per_durable_consumer() {
    let store = MemoryStore::new();
    let bus = EventBus::new(Arc::new(store.clone()));
    let (handler, rx) = collector();
    let first =
        bus.subscribe_durable(&consumer("x"), &pattern("x"), StartAt::New, handler).unwrap();
    let err =
        bus.subscribe_durable(&consumer("x"), &pattern("x"), StartAt::New, |_| Ok(())).unwrap_err();
    assert!(matches!(err, Error::ConsumerBusy { .. }), "{err}");
    assert_eq!(err.to_string(), "consumer x is held by another subscriber");
    publish(&bus, "x", 1);
    assert_eq!(numbers(&take(&rx, 1)), vec![1]);
    // A subscriber waiting without limit takes over as soon as the holder lets go.
    let (handler, rx) = collector();
    let config = durable_config("x", "x", StartAt::New).lease_wait(Duration::MAX);
    let waiting = {
        let bus = EventBus::new(Arc::new(store.clone()));
        thread::spawn(move || (bus.subscribe_with(config, handler), bus))
    };
    first.unsubscribe().unwrap();
    let (second, _bus) = waiting.join().unwrap();
    let second = second.unwrap();
    publish(&bus, "x", 2);
    assert_eq!(numbers(&take(&rx, 1)), vec![2]);
    // A cancelled wait ends with ConsumerBusy.
    let cancel = seed_event::Cancel::new();
    let config = durable_config("x", "x", StartAt::New)
        .lease_wait(Duration::MAX)
        .lease_cancel(cancel.clone());
    let bus2 = EventBus::new(Arc::new(store.clone()));
    let waiting = thread::spawn(move || bus2.subscribe_with(config, |_| Ok(())).map(|_| ()));
    cancel.cancel();
    let err = waiting.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::ConsumerBusy { .. }), "{err}");
    second.unsubscribe().unwrap();
    let names = ["ends~meta", &"a".repeat(251)];
    for bad in names {
        let err = bus.subscribe_durable(&consumer(bad), &pattern("y"), StartAt::New, |_| Ok(()));
        assert!(err.unwrap_err().is_invalid_input(), "{bad}");
    }
}

/// On Redis, where a holder can lose its lock while alive (its connection
/// dropped and another subscriber took over): it stops at its next commit,
/// and what it delivered after the takeover is not committed.
#[test]
fn a_holder_that_lost_its_lock_stops_before_committing() {
    let server = store_redis::testing::RedisServer::start();
    let store: Arc<dyn EventStore> =
        Arc::new(store_redis::RedisStore::open(&server.url()).unwrap());
    let config = BusConfig::default().lease_ttl(Duration::from_secs(600));
    let bus = EventBus::with_config(store.clone(), config);
    let (handler, rx) = collector();
    let sub = bus.subscribe_with(durable_config("y", "y", StartAt::New), handler).unwrap();
    publish(&bus, "y", 1);
    assert_eq!(numbers(&take(&rx, 1)), vec![1]);
    let first = store.last_cursor(&topic("y")).unwrap();
    let committed = || store.load_consumer(&consumer("y")).unwrap().get(&topic("y")).copied();
    let deadline = Instant::now() + DEADLINE;
    while committed() != first && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    // The holder's lock connection drops; another subscriber takes the lock over.
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_connection().unwrap();
    let value: String = redis::cmd("GET").arg("seed:lock:y").query(&mut raw).unwrap();
    let id = value.split(' ').nth(1).unwrap();
    let _: redis::Value =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(&mut raw).unwrap();
    let other = store_redis::RedisStore::open(&server.url()).unwrap();
    let request = seed_event::LockRequest::new(Duration::from_secs(600));
    let taken = other.lock_consumer(&consumer("y"), &request).unwrap().expect("taken over");
    publish(&bus, "y", 2);
    let err = sub.wait().unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    // Event 2 came after the takeover: it is not committed.
    assert_eq!(committed(), first);
    drop(taken);
}

#[test]
fn replay_paces_counts_and_goes_on_after_failures() {
    let (bus, _) = new_bus();
    let base = 1_776_340_800_000_000;
    for n in 0..5u64 {
        let options = PublishOptions {
            timestamp: Some(Timestamp::from_unix_micros(base + n as i64 * 1_000_000)),
            ..PublishOptions::default()
        };
        bus.publish(&topic("r.a"), "s", payload(n), options).unwrap();
    }
    publish(&bus, "other", 9);
    let config = ReplayConfig::new(pattern("r.>"))
        .since(Timestamp::from_unix_micros(base + 1_000_000))
        .until(Timestamp::from_unix_micros(base + 4_000_000))
        .speed(20.0);
    let estimate = bus.replay_estimate(&config).unwrap();
    assert_eq!(estimate.events, 3);
    assert_eq!(estimate.duration, Duration::from_millis(100));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let started = Instant::now();
    let report = bus
        .replay(&config, move |e| {
            s.lock().unwrap().push(n_of(e));
            if n_of(e) == 2 {
                return Err("bad event".into());
            }
            Ok(())
        })
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100), "2 gaps of 1 s at speed 20");
    assert_eq!((report.delivered, report.failed), (2, 1));
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);

    let fast = ReplayConfig::new(pattern(">"));
    assert_eq!(bus.replay(&fast, |_| panic!("counted, not fatal")).unwrap().failed, 6);
    for speed in [-1.0, f64::NAN, f64::INFINITY] {
        let err = bus.replay(&fast.clone().speed(speed), |_| Ok(())).unwrap_err();
        assert!(err.is_invalid_input() && err.to_string().contains("speed"), "{err}");
    }
}

#[test]
fn close_stops_subscriptions_and_refuses_more_work() {
    let (bus, _) = new_bus();
    let sub = bus.subscribe(&pattern(">"), StartAt::New, |_| Ok(())).unwrap();
    bus.close();
    assert!(sub.is_finished());
    assert!(matches!(
        bus.publish(&topic("a"), "s", payload(0), PublishOptions::default()),
        Err(Error::Closed)
    ));
    assert!(matches!(bus.subscribe(&pattern(">"), StartAt::New, |_| Ok(())), Err(Error::Closed)));
    sub.unsubscribe().unwrap();
    bus.close();
}

#[test]
fn store_errors_keep_their_kind() {
    let (bus, _) = new_bus();
    let err = bus
        .query(&Query { after: Some(Cursor::ZERO), ..Query::pattern(pattern("a.*")) })
        .unwrap_err();
    assert_eq!(err.store_kind(), Some(ErrorKind::InvalidInput));
}

/// `after` cursors resume named topics exactly; `start` applies to the others.
#[test]
fn a_plain_subscription_resumes_named_topics_after_their_cursors() {
    let (bus, _) = new_bus();
    let a: Vec<StoredEvent> = (0..3).map(|n| publish(&bus, "r.a", n)).collect();
    publish(&bus, "r.b", 10);
    let (handler, rx) = collector();
    let after = BTreeMap::from([(topic("r.a"), a[1].cursor)]);
    let config = SubscribeConfig::new(pattern("r.>"), StartAt::New).after(after.clone());
    let sub = bus.subscribe_with(config, handler).unwrap();
    publish(&bus, "r.b", 11);
    publish(&bus, "r.a", 3);
    let mut got = take(&rx, 3);
    got.sort();
    assert_eq!(got, [("r.a".into(), 2), ("r.a".into(), 3), ("r.b".into(), 11)]);
    sub.unsubscribe().unwrap();
    let (handler, _rx) = collector();
    let durable =
        SubscribeConfig::new(pattern("r.>"), StartAt::New).consumer(consumer("d")).after(after);
    let err = bus.subscribe_with(durable, handler).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

/// Waits past what the clock can represent are waits without a deadline, not panics.
#[test]
fn waits_longer_than_the_clock_can_represent_do_not_panic() {
    let (bus, _) = new_bus();
    publish(&bus, "max", 0);
    let config = SubscribeConfig::new(pattern("max"), StartAt::Beginning).max_events(1);
    let sub = bus.subscribe_with(config, |_| Ok(())).unwrap();
    assert!(sub.wait_timeout(Duration::MAX), "it ends after one event");
    assert_eq!(sub.wait().unwrap().delivered, 1);

    let config =
        durable_config("max", "max", StartAt::Beginning).lease_wait(Duration::MAX).max_events(1);
    let sub = bus.subscribe_with(config, |_| Ok(())).unwrap();
    assert_eq!(sub.wait().unwrap().delivered, 1);

    // A lease that never expires is held, renewed and released.
    let store = MemoryStore::new();
    let config = BusConfig::default().lease_ttl(Duration::MAX);
    let bus = EventBus::with_config(Arc::new(store), config);
    publish(&bus, "max", 0);
    let config = durable_config("forever", "max", StartAt::Beginning).max_events(1);
    let sub = bus.subscribe_with(config, |_| Ok(())).unwrap();
    assert_eq!(sub.wait().unwrap().delivered, 1);
    let again = durable_config("forever", "max", StartAt::Beginning);
    bus.subscribe_with(again, |_| Ok(())).unwrap().unsubscribe().unwrap();
}
