//! Work-group members over the bus (`EventBus::join_group`), on the memory
//! and the file store (and Redis where a store's own script is at stake): members share the events, failing handlers' events
//! come back and are dead-lettered, a stopped member hands its events over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::{EventBus, PublishOptions, WorkerConfig};
use seed_event::{
    ConsumerName, EventStore, GroupConfig, JsonObject, MemoryStore, Query, Start, Topic,
    TopicPattern,
};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn group(name: &str, pattern: &str) -> GroupConfig {
    GroupConfig::new(ConsumerName::new(name).unwrap(), TopicPattern::new(pattern).unwrap())
        .unwrap()
        .start(Start::Beginning)
}

fn payload(n: u64) -> JsonObject {
    json!({ "n": n }).as_object().cloned().unwrap()
}

fn publish(bus: &EventBus, topic: &str, range: std::ops::Range<u64>) {
    let topic = Topic::new(topic).unwrap();
    let payloads: Vec<JsonObject> = range.map(payload).collect();
    for chunk in payloads.chunks(500) {
        bus.publish_batch(&topic, "test", chunk.to_vec(), &PublishOptions::default()).unwrap();
    }
}

/// Waits until `done` holds or the deadline passed.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// Three members share `events` events: each is handled once, every member handles some.
fn three_members_share(store: Arc<dyn EventStore>, events: u64) {
    let bus = EventBus::new(store);
    let handled: Arc<Mutex<BTreeMap<u64, Vec<usize>>>> = Arc::default();
    let config = WorkerConfig::new(group("share", "jobs.*").max_in_flight(16));
    let members: Vec<_> = (0..3)
        .map(|m| {
            let handled = handled.clone();
            bus.join_group(config.clone().member(format!("m{m}")), move |d| {
                let n = d.event.event.payload["n"].as_u64().unwrap();
                handled.lock().unwrap().entry(n).or_default().push(m);
                std::thread::sleep(Duration::from_micros(200));
                Ok(())
            })
            .unwrap()
        })
        .collect();
    publish(&bus, "jobs.a", 0..events / 2);
    publish(&bus, "jobs.b", events / 2..events);
    assert!(wait_until(|| handled.lock().unwrap().len() as u64 == events), "every event handled");
    let mut per_member = [0u64; 3];
    for m in members {
        m.unsubscribe().unwrap();
    }
    let handled = handled.lock().unwrap();
    for (n, by) in handled.iter() {
        assert_eq!(by.len(), 1, "event {n} handled by {by:?}");
        per_member[by[0]] += 1;
    }
    assert!(per_member.iter().all(|n| *n > 0), "every member handled some: {per_member:?}");
    let info = bus.groups().unwrap();
    assert_eq!((info[0].in_flight, info[0].waiting), (0, 0), "{info:?}");
}

#[test]
fn three_members_share_the_events_on_the_memory_store() {
    three_members_share(Arc::new(MemoryStore::new()), 1000);
}

#[test]
fn three_members_share_the_events_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    three_members_share(Arc::new(store_file::FileStore::open(dir.path()).unwrap()), 3000);
}

/// A handler that fails on poison events: those are delivered
/// `max_deliveries` times, then dead-lettered once each; the rest are
/// handled once.
#[test]
fn failing_events_come_back_then_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(store_file::FileStore::open(dir.path()).unwrap());
    let bus = EventBus::new(store.clone());
    let calls: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let config = WorkerConfig::new(
        group("poison", "work").max_deliveries(3).backoff(Duration::from_millis(10)),
    );
    let member = {
        let calls = calls.clone();
        bus.join_group(config, move |d| {
            let n = d.event.event.payload["n"].as_u64().unwrap();
            *calls.lock().unwrap().entry(n).or_default() += 1;
            if n % 10 == 3 {
                return Err(format!("poison {n} (delivery {})", d.deliveries).into());
            }
            Ok(())
        })
        .unwrap()
    };
    publish(&bus, "work", 0..100);
    let dead = Topic::new("dead.poison").unwrap();
    assert!(
        wait_until(|| store.query(&Query::topic(&dead)).unwrap().len() == 10),
        "ten dead letters"
    );
    let summary = member.unsubscribe().unwrap();
    assert_eq!((summary.delivered, summary.failed), (90, 30));
    let calls = calls.lock().unwrap();
    for (n, count) in calls.iter() {
        assert_eq!(*count, if n % 10 == 3 { 3 } else { 1 }, "event {n}");
    }
    let letters = store.query(&Query::topic(&dead)).unwrap();
    let mut poisoned: Vec<u64> = letters
        .iter()
        .map(|l| l.event.payload["event"]["payload"]["n"].as_u64().unwrap())
        .collect();
    poisoned.sort();
    assert_eq!(poisoned, (0..10).map(|i| i * 10 + 3).collect::<Vec<_>>());
    assert!(letters
        .iter()
        .all(|l| l.event.payload["error"].as_str().unwrap().contains("delivery 3")));
    assert_eq!(bus.groups().unwrap()[0].dead_lettered, 10);
    // Redriven, they are back on their topic once, with their ids.
    let back = bus.redrive(&dead, None).unwrap();
    assert_eq!(back.len(), 10);
    let ids: Vec<_> = letters.iter().map(|l| l.event.payload["event"]["id"].clone()).collect();
    let back_ids: Vec<_> = back.iter().map(|e| serde_json::json!(e.event.id.to_string())).collect();
    assert_eq!(back_ids, ids);
    assert!(bus.redrive(&dead, None).unwrap().is_empty(), "redriven once");
    assert_eq!(store.query(&Query::topic(&Topic::new("work").unwrap())).unwrap().len(), 110);

    // A redrive stopped after putting an event back but before its marker
    // (here: the marker removed) puts it back no second time when run again.
    let markers = store.query(&Query::topic(&dead)).unwrap();
    let last_marker =
        markers.iter().rev().find(|m| m.event.payload.contains_key("redriven")).unwrap();
    let kept: Vec<seed_event::Event> = markers
        .iter()
        .filter(|m| m.event.id != last_marker.event.id)
        .map(|m| m.event.clone())
        .collect();
    let clear = seed_event::Clear { topic: Some(dead.clone()), before: None };
    store.clear(&clear).unwrap();
    store.append_batch(&dead, &kept).unwrap();
    let letter = markers
        .iter()
        .find(|m| {
            Some(m.event.id.to_string().as_str()) == last_marker.event.payload["redriven"].as_str()
        })
        .expect("the letter of the last marker");
    let again = bus.redrive(&dead, None).unwrap();
    assert_eq!(again.len(), 1, "the unmarked letter is taken up again");
    assert_eq!(
        json!(again[0].event.id.to_string()),
        letter.event.payload["event"]["id"],
        "its event"
    );
    assert_eq!(
        store.query(&Query::topic(&Topic::new("work").unwrap())).unwrap().len(),
        110,
        "but not appended twice"
    );
    assert!(bus.redrive(&dead, None).unwrap().is_empty(), "and now marked");
}

/// A member stopped while it holds events hands them to another member;
/// an idle member stops at once.
#[test]
fn a_stopped_member_hands_its_events_over() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let bus = EventBus::new(store);
    publish(&bus, "slow", 0..20);
    let config = WorkerConfig::new(group("handover", "slow").max_in_flight(20));
    let (entered, release) = (Arc::new(Mutex::new(0u32)), Arc::new(Mutex::new(false)));
    let first = {
        let (entered, release) = (entered.clone(), release.clone());
        bus.join_group(config.clone().member("first"), move |_| {
            *entered.lock().unwrap() += 1;
            while !*release.lock().unwrap() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| *entered.lock().unwrap() == 1), "the first member is busy");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let second = {
        let handled = handled.clone();
        bus.join_group(config.member("second"), move |d| {
            handled.lock().unwrap().push(d.event.event.payload["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap()
    };
    // The first member holds the event in its handler (it fetches what it
    // gets through soon, one event at first): the second handles the other
    // nineteen, and stopping the first ends it after that event.
    let stopper = std::thread::spawn(move || first.unsubscribe().unwrap());
    std::thread::sleep(Duration::from_millis(50));
    *release.lock().unwrap() = true;
    assert_eq!(stopper.join().unwrap().delivered, 1);
    assert!(wait_until(|| handled.lock().unwrap().len() == 19), "the second member got the rest");
    let started = Instant::now();
    second.unsubscribe().unwrap();
    eprintln!("an idle member stopped in {:?}", started.elapsed());
}

/// `before_ack` runs before each batch's ack; when it fails, the member
/// stops with its error and the batch is not acked: another member gets it.
#[test]
fn a_failing_before_ack_stops_the_member_without_acking() {
    let bus = EventBus::new(Arc::new(MemoryStore::new()));
    publish(&bus, "flush", 0..5);
    let config = WorkerConfig::new(group("flushing", "flush"));
    let failing = bus
        .join_group_with(config.clone(), |_| Ok(()), || Err("the output is gone".into()))
        .unwrap();
    assert!(wait_until(|| failing.is_finished()), "the member stops");
    let err = failing.unsubscribe().unwrap_err();
    assert!(err.to_string().contains("the output is gone"), "{err}");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let other = {
        let handled = handled.clone();
        bus.join_group(config, move |d| {
            handled.lock().unwrap().push(d.event.event.payload["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| handled.lock().unwrap().len() == 5), "the batch was not acked");
    other.unsubscribe().unwrap();
}

/// A slow handler does not hoard: its member fetches what it gets through
/// soon (one event at a time here), so a member that joins later gets work
/// at once instead of idling while the slow one sits on a batch.
#[test]
fn a_slow_handler_does_not_hoard() {
    let bus = EventBus::new(Arc::new(MemoryStore::new()));
    publish(&bus, "slowly", 0..12);
    let config = WorkerConfig::new(
        group("slow", "slowly").ack_wait(Duration::from_secs(10)).max_in_flight(12),
    );
    let handled: Arc<Mutex<Vec<(u64, &'static str)>>> = Arc::default();
    let slow = {
        let handled = handled.clone();
        bus.join_group(config.clone().member("slow"), move |d| {
            std::thread::sleep(Duration::from_millis(100));
            handled.lock().unwrap().push((d.event.event.payload["n"].as_u64().unwrap(), "slow"));
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| !handled.lock().unwrap().is_empty()), "the slow member is at it");
    let idle = {
        let handled = handled.clone();
        bus.join_group(config.member("idle"), move |d| {
            handled.lock().unwrap().push((d.event.event.payload["n"].as_u64().unwrap(), "idle"));
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| handled.lock().unwrap().len() >= 12), "all handled");
    slow.unsubscribe().unwrap();
    idle.unsubscribe().unwrap();
    let handled = handled.lock().unwrap();
    let mut ns: Vec<u64> = handled.iter().map(|(n, _)| *n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..12).collect::<Vec<_>>(), "each once: {handled:?}");
    let by_idle = handled.iter().filter(|(_, by)| *by == "idle").count();
    assert!(by_idle >= 6, "the member that joined later did most: {handled:?}");
}

/// A handler that runs longer than the ack wait keeps its event: its ack
/// wait starts again while the call runs, so the idle member never gets it.
#[test]
fn a_long_handler_keeps_its_event() {
    let bus = EventBus::new(Arc::new(MemoryStore::new()));
    publish(&bus, "long", 0..1);
    let config = WorkerConfig::new(group("long", "long").ack_wait(Duration::from_millis(300)));
    let handled: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let (entered, done) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(false)));
    let slow = {
        let (handled, entered, done) = (handled.clone(), entered.clone(), done.clone());
        bus.join_group(config.clone().member("slow"), move |_| {
            *entered.lock().unwrap() = true;
            std::thread::sleep(Duration::from_millis(1200));
            handled.lock().unwrap().push("slow");
            *done.lock().unwrap() = true;
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| *entered.lock().unwrap()), "the slow member is at it");
    let idle = {
        let handled = handled.clone();
        bus.join_group(config.member("idle"), move |_| {
            handled.lock().unwrap().push("idle");
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| *done.lock().unwrap()), "the long call ended");
    slow.unsubscribe().unwrap();
    idle.unsubscribe().unwrap();
    assert_eq!(*handled.lock().unwrap(), vec!["slow"], "handled once, by the slow member");
}

/// A member whose handler blocks in the middle of a batch hands the batch's
/// unstarted events back while the call runs: another member handles them.
#[test]
fn unstarted_events_go_back_while_a_call_blocks() {
    unstarted_events_go_back_while_a_call_blocks_on(Arc::new(MemoryStore::new()));
}

/// The same on Redis, whose members hand deliveries back with a script
/// (the ack wait, 30 s, would otherwise keep them with the blocked member).
#[test]
fn unstarted_events_go_back_while_a_call_blocks_on_redis() {
    let server = store_redis::testing::RedisServer::start();
    let store = store_redis::RedisStore::open(&server.url()).unwrap();
    unstarted_events_go_back_while_a_call_blocks_on(Arc::new(store));
}

fn unstarted_events_go_back_while_a_call_blocks_on(store: Arc<dyn EventStore>) {
    let bus = EventBus::new(store);
    publish(&bus, "mixed", 0..100);
    let config = WorkerConfig::new(group("mixed", "mixed").max_in_flight(16));
    let handled: Arc<Mutex<Vec<(u64, &'static str)>>> = Arc::default();
    let (entered, go) = (Arc::new(Mutex::new(false)), Arc::new(Mutex::new(false)));
    let blocking = {
        let (handled, entered, go) = (handled.clone(), entered.clone(), go.clone());
        bus.join_group(config.clone().member("blocking"), move |d| {
            let n = d.event.event.payload["n"].as_u64().unwrap();
            if n == 50 {
                *entered.lock().unwrap() = true;
                while !*go.lock().unwrap() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            handled.lock().unwrap().push((n, "blocking"));
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| *entered.lock().unwrap()), "the member blocks on event 50");
    let other = {
        let handled = handled.clone();
        bus.join_group(config.member("other"), move |d| {
            handled.lock().unwrap().push((d.event.event.payload["n"].as_u64().unwrap(), "other"));
            Ok(())
        })
        .unwrap()
    };
    let all_but_50 = wait_until(|| handled.lock().unwrap().len() == 99);
    *go.lock().unwrap() = true;
    assert!(
        all_but_50,
        "the others were handled while event 50 blocked: {:?}",
        handled.lock().unwrap()
    );
    assert!(wait_until(|| handled.lock().unwrap().len() == 100), "then event 50");
    blocking.unsubscribe().unwrap();
    other.unsubscribe().unwrap();
    let mut ns: Vec<u64> = handled.lock().unwrap().iter().map(|(n, _)| *n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..100).collect::<Vec<_>>(), "each once");
}

/// A letter whose original is still its topic's last event is put back (the
/// search for an earlier redrive looks after the original, and finds nothing).
#[test]
fn a_letter_of_a_topics_last_event_is_redriven() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let bus = EventBus::new(store.clone());
    let solo = Topic::new("solo").unwrap();
    let original = bus.publish(&solo, "s", JsonObject::new(), PublishOptions::default()).unwrap();
    let dead = Topic::new("dead.solo").unwrap();
    let letter = json!({
        "event": serde_json::to_value(&original.event).unwrap(),
        "topic": "solo",
        "cursor": original.cursor.to_string(),
        "deliveries": 5,
        "error": "boom",
        "group": "solo",
    });
    let letter =
        seed_event::Event::new(dead.clone(), "group:solo", letter.as_object().unwrap().clone());
    store.append(&letter).unwrap();
    let back = bus.redrive(&dead, None).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].event.id, original.event.id);
    assert!(back[0].cursor > original.cursor, "a new copy after the original");
    assert_eq!(store.query(&Query::topic(&solo)).unwrap().len(), 2);
}

/// A member of an exclusive group that another member holds fails with
/// `ConsumerBusy` at once, or stands by and becomes active when the first
/// one stops: every event handled once.
#[test]
fn an_exclusive_group_has_one_active_member_and_a_standby_takes_over() {
    let bus = Arc::new(EventBus::new(Arc::new(MemoryStore::new())));
    publish(&bus, "solo.a", 0..50);
    let config = WorkerConfig::new(group("solo", "solo.*").exclusive(true).max_in_flight(4));
    let handled: Arc<Mutex<Vec<(u64, &str)>>> = Arc::default();
    let handler = |who: &'static str| {
        let handled = handled.clone();
        move |d: &seed_event::Delivery| {
            handled.lock().unwrap().push((d.event.event.payload["n"].as_u64().unwrap(), who));
            Ok(())
        }
    };
    let first = bus.join_group(config.clone().member("first"), handler("first")).unwrap();
    assert!(wait_until(|| handled.lock().unwrap().len() == 50), "the active member handles them");
    let err = bus.join_group(config.clone().member("second"), handler("second")).unwrap_err();
    assert!(matches!(err, bus::Error::ConsumerBusy { .. }), "{err}");
    let standby = {
        let (bus, config, handler) = (bus.clone(), config.clone(), handler("second"));
        std::thread::spawn(move || {
            let config = config.member("second").standby(DEADLINE, seed_event::Cancel::new());
            bus.join_group(config, handler).unwrap()
        })
    };
    let info = bus.groups().unwrap();
    assert!(info[0].exclusive && info[0].active.is_some(), "{info:?}");
    first.unsubscribe().unwrap();
    let second = standby.join().unwrap();
    publish(&bus, "solo.a", 50..60);
    assert!(wait_until(|| handled.lock().unwrap().len() == 60), "the standby took over");
    second.unsubscribe().unwrap();
    let handled = handled.lock().unwrap();
    let mut ns: Vec<u64> = handled.iter().map(|(n, _)| *n).collect();
    ns.sort();
    assert_eq!(ns, (0..60).collect::<Vec<_>>(), "each once");
    assert!(handled[50..].iter().all(|(_, who)| *who == "second"), "{handled:?}");
}

/// An exclusive group created over a durable consumer of its name (what
/// `subscribe --group --exclusive` was) goes on after its positions, and in
/// a topic it never saw from the beginning; a group created again later
/// does not go back to them.
#[test]
fn an_exclusive_group_goes_on_from_the_durable_consumer_of_its_name() {
    let bus = EventBus::new(Arc::new(MemoryStore::new()));
    let name = ConsumerName::new("legacy").unwrap();
    let pattern = TopicPattern::new("old.*").unwrap();
    publish(&bus, "old.a", 0..5);
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let durable = {
        let seen = seen.clone();
        bus.subscribe_durable(&name, &pattern, bus::StartAt::Beginning, move |e| {
            seen.lock().unwrap().push(e.event.payload["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap()
    };
    assert!(wait_until(|| seen.lock().unwrap().len() == 5));
    durable.unsubscribe().unwrap();
    publish(&bus, "old.a", 5..8);
    publish(&bus, "old.b", 100..102);
    let handled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let join = |config: GroupConfig| {
        let handled = handled.clone();
        bus.join_group(WorkerConfig::new(config), move |d| {
            handled.lock().unwrap().push(d.event.event.payload["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap()
    };
    let config = group("legacy", "old.*").exclusive(true).start(Start::New);
    let member = join(config.clone());
    assert!(wait_until(|| handled.lock().unwrap().len() >= 5));
    member.unsubscribe().unwrap();
    let mut got = std::mem::take(&mut *handled.lock().unwrap());
    got.sort();
    assert_eq!(got, vec![5, 6, 7, 100, 101], "after the consumer's positions, nothing twice");
    assert!(bus.delete_group(&name).unwrap());
    publish(&bus, "old.a", 8..9);
    let member = join(config);
    publish(&bus, "old.a", 9..10);
    assert!(wait_until(|| !handled.lock().unwrap().is_empty()));
    member.unsubscribe().unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        vec![9],
        "a new group starts new, not at the old positions"
    );
}
