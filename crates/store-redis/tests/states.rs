//! Entity states on Redis beyond the conformance cases: eight connections
//! incrementing one counter, a watch across a restart of the server, and the
//! key layout.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use seed_event::EventStore;
use seed_state::conformance::{check_counter, create_counter, increment, summary, watch_until};
use seed_state::{Change, NewState, StateStore, WatchEvent, WatchFrom};
use serde_json::json;
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::{RedisConfig, RedisStore};

fn open(server: &RedisServer, history: u64) -> Arc<dyn EventStore> {
    let config = RedisConfig::new(server.url()).prefix("states:").state_history(history);
    Arc::new(RedisStore::open_with(config).unwrap())
}

/// Eight stores (each with its own connections) increment one counter 1,000
/// times each with retry on conflict: 8,000 at the end, versions 1..=8,001 once each.
#[test]
fn eight_connections_increment_one_counter() {
    let server = RedisServer::start();
    let store = open(&server, 10_000);
    create_counter(&StateStore::new(store.clone()).unwrap(), "counter", "c");
    let conflicts: u64 = (0..8)
        .map(|w| {
            let states = StateStore::new(open(&server, 10_000)).unwrap();
            thread::spawn(move || increment(&states, "counter", "c", 1000, &format!("w{w}")))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    check_counter(&store, "counter", "c", 8000);
    println!("{conflicts} conflicts met and retried");
}

/// A watch from a revision goes on across a restart of the server (with its
/// data), delivering every change after the revision once, in order.
#[test]
fn watch_from_a_revision_survives_a_server_restart() {
    let mut server =
        RedisServer::start_with(ServerOptions { persistent: true, ..ServerOptions::default() });
    let states = StateStore::new(open(&server, 64)).unwrap();
    let data = |n: i64| json!({ "n": n }).as_object().cloned().unwrap();
    let v1 = states.create(NewState::new("r", "job", "a").data(data(1))).unwrap();
    for v in 1..3 {
        states.update("job", "r", v, Change::by("a").replace_data(data(v as i64 + 1))).unwrap();
    }
    let mut watch = states.watch("job", None, WatchFrom::After(v1.revision)).unwrap();
    let got = watch_until(&mut watch, |g| g.contains(&WatchEvent::Ready));
    assert_eq!(summary(&got), vec![("r".into(), 2), ("r".into(), 3), ("READY".into(), 0)]);
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while watch.reconnecting() == 0 {
        assert!(Instant::now() < deadline, "the watch never noticed the outage");
        assert_eq!(watch.next(Duration::from_millis(100)).unwrap(), None);
    }
    server.restart();
    let writer = StateStore::new(open(&server, 64)).unwrap();
    for v in 3..6 {
        writer.update("job", "r", v, Change::by("b").replace_data(data(v as i64 + 1))).unwrap();
    }
    let got = watch_until(&mut watch, |g| g.len() == 3);
    assert_eq!(summary(&got), vec![("r".into(), 4), ("r".into(), 5), ("r".into(), 6)]);
    assert_eq!(watch.reconnecting(), 0);
}

/// The latest states are one hash under the store's prefix and the type's
/// hash tag; one `HGET` reads an entity.
#[test]
fn latest_states_are_one_hash_under_the_prefix_and_hash_tag() {
    let server = RedisServer::start();
    let states = StateStore::new(open(&server, 64)).unwrap();
    let v1 = states.create(NewState::new("t-1", "task", "a")).unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "states:topics",
            "states:topics:new",
            "states:{state.task}:latest",
            "states:{state.task}:m",
            "states:{state.task}:s",
            "states:{state.task}:v"
        ]
    );
    let value: String =
        redis::cmd("HGET").arg("states:{state.task}:latest").arg("t-1").query(&mut con).unwrap();
    assert!(value.starts_with(&format!("1 {} {{", v1.revision)), "{value}");
}

/// Event retention limits leave state topics alone: states keep their own history limit.
#[test]
fn retention_limits_do_not_apply_to_state_topics() {
    let server = RedisServer::start();
    let retention = seed_event::Retention::new(seed_event::Limits::default().max_events(1));
    let config = RedisConfig::new(server.url()).retention(retention);
    let store = RedisStore::open_with(config).unwrap();
    let states = StateStore::new(Arc::new(store.clone())).unwrap();
    for n in 0..5 {
        states.create(NewState::new(format!("e{n}"), "job", "a")).unwrap();
    }
    assert_eq!(store.enforce_retention().unwrap(), 0);
    let topic = seed_event::Topic::new("state.job").unwrap();
    assert_eq!(store.query(&seed_event::Query::topic(&topic)).unwrap().len(), 5);
    assert_eq!(states.list("job", None).unwrap().count(), 5);
}
