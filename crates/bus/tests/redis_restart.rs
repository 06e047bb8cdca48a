//! A plain subscription across a restart of a real `redis-server` (with an
//! append-only file, so the streams survive): nothing lost, nothing twice.

mod util;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bus::{EventBus, StartAt, Status, Subscription};
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::RedisStore;
use util::{
    assert_each_once_in_order, collector, pattern, publish_retrying, take, try_publish, wait_for,
};

fn topic_of(n: u64) -> &'static str {
    if n.is_multiple_of(2) {
        "rr.a"
    } else {
        "rr.b"
    }
}

fn outage_age(sub: &Subscription) -> Option<Duration> {
    match sub.status() {
        Status::Reconnecting { since, .. } => Some(since.elapsed().unwrap_or_default()),
        _ => None,
    }
}

#[test]
fn a_plain_subscription_survives_a_redis_restart() {
    let mut server =
        RedisServer::start_with(ServerOptions { persistent: true, ..Default::default() });
    let bus = Arc::new(EventBus::new(Arc::new(RedisStore::open(&server.url()).unwrap())));
    let (handler, rx) = collector();
    let sub = bus.subscribe(&pattern("rr.>"), StartAt::New, handler).unwrap();
    for n in 0..10 {
        publish_retrying(&bus, topic_of(n), n);
    }
    let mut got = take(&rx, 10);

    server.stop();
    wait_for("the subscription to notice", || outage_age(&sub).is_some());
    let publisher = {
        let bus = bus.clone();
        thread::spawn(move || (10..20).for_each(|n| publish_retrying(&bus, topic_of(n), n)))
    };
    wait_for("a one-second outage", || {
        outage_age(&sub).is_some_and(|age| age >= Duration::from_secs(1))
    });
    assert!(try_publish(&bus, "rr.a", 99).is_err(), "Redis is down");
    server.restart();
    publisher.join().unwrap();
    for n in 20..30 {
        publish_retrying(&bus, topic_of(n), n);
    }
    got.extend(take(&rx, 20));
    wait_for("the subscription to be live", || sub.status() == Status::Live);
    assert_each_once_in_order(&got, 30);
    assert_eq!(sub.unsubscribe().unwrap().delivered, 30);
}

/// While the server is silent (a listener that takes connections and never
/// answers, as a host that went away behind a proxy), unsubscribing does not
/// wait for the reconnect under way: it returns at once with what was
/// delivered. The time it took is printed, not asserted.
#[test]
fn unsubscribing_while_redis_is_silent_returns_at_once() {
    let mut server = RedisServer::start();
    let port = server.port();
    let store = RedisStore::open(&server.url()).unwrap();
    let bus = Arc::new(EventBus::new(Arc::new(store)));
    for (idle, label) in [(true, "idle"), (false, "reconnecting")] {
        let (handler, rx) = collector();
        let sub = bus.subscribe(&pattern("silent.>"), StartAt::New, handler).unwrap();
        publish_retrying(&bus, "silent.a", 0);
        take(&rx, 1);
        if idle {
            let start = std::time::Instant::now();
            assert_eq!(sub.unsubscribe().unwrap().delivered, 1);
            println!("unsubscribe of an idle subscription: {:?}", start.elapsed());
            continue;
        }
        server.stop();
        let silent = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        wait_for("the subscription to notice", || outage_age(&sub).is_some());
        // Let it get into its next reconnect, waiting for the silent server.
        let until = std::time::Instant::now() + Duration::from_millis(300);
        wait_for("a moment into the reconnect", || std::time::Instant::now() >= until);
        let start = std::time::Instant::now();
        assert_eq!(sub.unsubscribe().unwrap().delivered, 1);
        println!("unsubscribe during an outage ({label}): {:?}", start.elapsed());
        drop(silent);
    }
}
