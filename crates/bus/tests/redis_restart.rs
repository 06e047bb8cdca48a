//! A plain subscription across a restart of a real `redis-server` (with an
//! append-only file, so the streams survive): nothing lost, nothing twice.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bus::{EventBus, PublishOptions, StartAt, Status, Subscription};
use seed_event::{ErrorKind, StoredEvent, Topic, TopicPattern};
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::RedisStore;

const DEADLINE: Duration = Duration::from_secs(30);

fn publish(bus: &EventBus, n: u64) -> bus::Result<StoredEvent> {
    let topic = Topic::new(if n % 2 == 0 { "rr.a" } else { "rr.b" }).unwrap();
    let payload = serde_json::json!({ "n": n }).as_object().unwrap().clone();
    bus.publish(&topic, "test", payload, PublishOptions::default())
}

/// Publishes, retrying while Redis is unavailable (as a caller would).
fn publish_retrying(bus: &EventBus, n: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match publish(bus, n) {
            Ok(_) => return,
            Err(e) if e.store_kind() == Some(ErrorKind::Unavailable) => {
                assert!(Instant::now() < deadline, "publishing {n} kept failing: {e}");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("publishing {n}: {e}"),
        }
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn outage_age(sub: &Subscription) -> Option<Duration> {
    match sub.status() {
        Status::Reconnecting { since, .. } => Some(since.elapsed().unwrap_or_default()),
        _ => None,
    }
}

fn take(rx: &mpsc::Receiver<(String, u64)>, n: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_timeout(DEADLINE) {
            Ok(item) => out.push(item),
            Err(_) => panic!("got only {} of {n} events: {out:?}", out.len()),
        }
    }
    if let Ok(extra) = rx.recv_timeout(Duration::from_millis(200)) {
        panic!("unexpected extra event {extra:?} after {out:?}");
    }
    out
}

#[test]
fn a_plain_subscription_survives_a_redis_restart() {
    let mut server =
        RedisServer::start_with(ServerOptions { persistent: true, ..Default::default() });
    let bus = Arc::new(EventBus::new(Arc::new(RedisStore::open(&server.url()).unwrap())));
    let (tx, rx) = mpsc::channel();
    let sub = bus
        .subscribe(&TopicPattern::new("rr.>").unwrap(), StartAt::New, move |e| {
            tx.send((e.event.topic.to_string(), e.event.payload["n"].as_u64().unwrap()))?;
            Ok(())
        })
        .unwrap();
    for n in 0..10 {
        publish_retrying(&bus, n);
    }
    let mut got = take(&rx, 10);

    server.stop();
    wait_for("the subscription to notice", || outage_age(&sub).is_some());
    let publisher = {
        let bus = bus.clone();
        thread::spawn(move || (10..20).for_each(|n| publish_retrying(&bus, n)))
    };
    wait_for("a one-second outage", || {
        outage_age(&sub).is_some_and(|a| a >= Duration::from_secs(1))
    });
    assert!(publish(&bus, 99).is_err(), "Redis is down");
    server.restart();
    publisher.join().unwrap();
    for n in 20..30 {
        publish_retrying(&bus, n);
    }
    got.extend(take(&rx, 20));
    wait_for("the subscription to be live", || sub.status() == Status::Live);

    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (t, n) in &got {
        per_topic.entry(t.clone()).or_default().push(*n);
    }
    for (t, ns) in &per_topic {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "{t}: out of order or twice: {ns:?}");
    }
    let mut all: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
    assert_eq!(sub.unsubscribe().unwrap().delivered, 30);
}
