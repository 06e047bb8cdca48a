//! Helpers shared by the bus's integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bus::{EventBus, PublishOptions};
use seed_event::{ConsumerName, ErrorKind, JsonObject, StoredEvent, Topic, TopicPattern};
use serde_json::json;

/// How long a test waits for something that should happen soon.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn topic(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

pub fn pattern(s: &str) -> TopicPattern {
    TopicPattern::new(s).unwrap()
}

pub fn consumer(s: &str) -> ConsumerName {
    ConsumerName::new(s).unwrap()
}

pub fn payload(n: u64) -> JsonObject {
    json!({ "n": n }).as_object().unwrap().clone()
}

pub fn n_of(e: &StoredEvent) -> u64 {
    e.event.payload["n"].as_u64().unwrap()
}

/// Publishes `{"n": n}` to `t`.
pub fn try_publish(bus: &EventBus, t: &str, n: u64) -> bus::Result<StoredEvent> {
    bus.publish(&topic(t), "test", payload(n), PublishOptions::default())
}

/// Publishes, retrying while the store is unavailable (as a caller would).
pub fn publish_retrying(bus: &EventBus, t: &str, n: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match try_publish(bus, t, n) {
            Ok(_) => return,
            Err(e) if e.store_kind() == Some(ErrorKind::Unavailable) => {
                assert!(Instant::now() < deadline, "publishing {n} kept failing: {e}");
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("publishing {n}: {e}"),
        }
    }
}

/// Waits until `cond` holds, failing the test with `what` at the deadline.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A handler that sends every event's `(topic, n)` into a channel.
pub fn collector(
) -> (impl FnMut(&StoredEvent) -> bus::HandlerResult + Send + 'static, mpsc::Receiver<(String, u64)>)
{
    let (tx, rx) = mpsc::channel();
    let handler = move |e: &StoredEvent| {
        tx.send((e.event.topic.to_string(), n_of(e)))?;
        Ok(())
    };
    (handler, rx)
}

/// Receives exactly `n` items, then checks that nothing more arrives soon.
pub fn take(rx: &mpsc::Receiver<(String, u64)>, n: usize) -> Vec<(String, u64)> {
    let out = take_only(rx, n);
    if let Ok(extra) = rx.recv_timeout(Duration::from_millis(150)) {
        panic!("unexpected extra event {extra:?} after {out:?}");
    }
    out
}

/// Receives exactly `n` items.
pub fn take_only(rx: &mpsc::Receiver<(String, u64)>, n: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_timeout(DEADLINE) {
            Ok(item) => out.push(item),
            Err(_) => panic!("got only {} of {n} events: {out:?}", out.len()),
        }
    }
    out
}

/// Asserts that `got` holds `0..n`, each once, in order within each topic.
pub fn assert_each_once_in_order(got: &[(String, u64)], n: u64) {
    let mut per_topic: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (t, k) in got {
        per_topic.entry(t).or_default().push(*k);
    }
    for (t, ns) in &per_topic {
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "topic {t} out of order or twice: {ns:?}");
    }
    let mut all: Vec<u64> = got.iter().map(|(_, k)| *k).collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every event once");
}
