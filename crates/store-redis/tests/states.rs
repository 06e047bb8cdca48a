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
    assert!(value.starts_with(&format!("1 {} L", v1.revision)), "{value}");
    assert!(value.contains(" {\"id\":"), "{value}");
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

/// A clear of a state topic removes the old records from the stream and
/// from the kept versions together: history and past versions go with them,
/// each entity's newest record stays.
#[test]
fn a_clear_prunes_the_kept_versions() {
    let server = RedisServer::start();
    let store = open(&server, 64);
    let states = StateStore::new(store.clone()).unwrap();
    let data = |n: i64| obj(json!({ "n": n }));
    for id in ["a", "b"] {
        let v1 = states.create(NewState::new(id, "job", "x").data(data(1))).unwrap();
        states.update("job", id, 1, Change::by("x").replace_data(data(2))).unwrap();
        states.update("job", id, 2, Change::by("x").replace_data(data(3))).unwrap();
        assert_eq!(states.get_version("job", id, 1).unwrap(), v1);
    }
    states.delete("job", "b", 3, Change::by("x")).unwrap();
    let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let versions = |con: &mut redis::Connection| -> i64 {
        redis::cmd("HLEN").arg("states:{state.job}:v").query(con).unwrap()
    };
    assert_eq!(versions(&mut con), 7);
    assert_eq!(store.clear(&seed_event::Clear::default()).unwrap(), 5);
    assert_eq!(versions(&mut con), 2, "one kept version per entity: its newest");
    let history: Vec<u64> =
        states.history("job", "a").unwrap().iter().map(|e| e.state.version()).collect();
    assert_eq!(history, vec![3]);
    let err = states.get_version("job", "a", 1).unwrap_err();
    assert_eq!(err.to_string(), "not found: job/a at version 1");
    assert_eq!(states.get("job", "a").unwrap().state.version(), 3);
    assert_eq!(states.history("job", "b").unwrap().len(), 1, "the tombstone stays");
}

/// How many scripts the server has run (not counting those it had to load first).
fn script_calls(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    let Some(stats) = info.lines().find_map(|l| l.strip_prefix("cmdstat_evalsha:")) else {
        return 0;
    };
    let field = |name: &str| -> u64 {
        let value = stats.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('='));
        value.map_or(0, |v| v.parse().unwrap())
    };
    field("calls") - field("failed_calls") - field("rejected_calls")
}

fn obj(value: serde_json::Value) -> seed_event::JsonObject {
    value.as_object().cloned().unwrap()
}

/// An update is computed by the edit script on the server; the record it
/// writes is byte for byte the one the client would write (the state and
/// its event line), and every change it refuses fails as on the client.
#[test]
fn updates_computed_on_the_server_match_the_client_byte_for_byte() {
    use seed_state::{Cause, Status};
    let server = RedisServer::start();
    let store = open(&server, 64);
    let states = StateStore::new(store.clone()).unwrap();
    let start =
        obj(json!({"b": 1, "a": {"x": [1, {"q": null}], "y": "é\"\\\n"}, "c": 2.5, "d": true}));
    let mut entry = states
        .create(NewState::new("e-1", "job", "a").data(start).metadata(obj(json!({"m": 1}))))
        .unwrap();
    let cause = Cause { caused_by: Some(entry.event_id), correlation_id: Some("corr".into()) };
    let changes = vec![
        Change::by("b").status(Status::Active),
        Change::by("c")
            .merge_data(obj(json!({"b": null, "z": {"n": null, "k": 1}, "a": {"y": 3}}))),
        Change::by("c").merge_data(obj(json!({"d": {"e": 1}, "new": [null], "c": null}))),
        Change::by("d").replace_data(obj(json!({"only": "one", "x": {"y": {}}}))).cause(cause),
        Change::by("d").metadata(obj(json!({}))),
        Change::by("e").status(Status::Paused).merge_data(obj(json!({"only": null}))),
        Change::by("e").status(Status::Completed),
        Change::by("f").status(Status::Archived),
    ];
    let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    for change in changes {
        let scripts = script_calls(&mut con);
        // A new handle remembers no record: the script computes the update.
        let fresh = StateStore::new(store.clone()).unwrap();
        let next = fresh.update("job", "e-1", entry.state.version(), change.clone()).unwrap();
        assert_eq!(script_calls(&mut con), scripts + 1, "one round trip: {change:?}");
        let expected = entry.state.update_at(change.clone(), next.state.updated_at()).unwrap();
        assert_eq!(next.state.to_json(), expected.to_json(), "{change:?}");
        let event = json!({
            "id": next.event_id.to_string(),
            "topic": "state.job",
            "payload": {
                "entity_id": "e-1",
                "version": expected.version(),
                "deleted": false,
                "caused_by": next.caused_by.map(|u| u.to_string()),
                "state": expected.to_value(),
            },
            "source": expected.updated_by(),
            "timestamp": expected.updated_at().to_string(),
            "correlation_id": next.correlation_id,
            "metadata": {},
        });
        let value: String =
            redis::cmd("HGET").arg("states:{state.job}:latest").arg("e-1").query(&mut con).unwrap();
        let line = value.splitn(4, ' ').nth(3).unwrap();
        assert_eq!(line, event.to_string(), "{change:?}");
        assert!(next.state.updated_at() >= entry.state.updated_at());
        entry = next;
    }
    assert_eq!(entry.correlation_id, None);
    // Refused on the server, reported as the client reports them.
    let fresh =
        states.create(NewState::new("e-2", "job", "a").data(obj(json!({"a": 1, "b": 2})))).unwrap();
    let cases = vec![
        ("e-1", 9, Change::by("x").status(Status::Active)),
        ("e-3", 1, Change::by("x").status(Status::Active)),
        ("e-3", 1, Change::by("x").status(Status::Completed)),
        ("e-2", 1, Change::by("x").replace_data(obj(json!({"b": 2, "a": 1})))),
        ("e-2", 1, Change::by("x").merge_data(obj(json!({"c": null})))),
        ("e-2", 2, Change::by("x").status(Status::Active)),
        ("e-2", 1, Change::by("").status(Status::Active)),
        ("nope", 1, Change::by("x").status(Status::Active)),
    ];
    let memory = StateStore::new(Arc::new(seed_event::MemoryStore::new())).unwrap();
    memory.create(NewState::new("e-2", "job", "a").data(fresh.state.data().clone())).unwrap();
    for s in [&states, &memory] {
        s.create(NewState::new("e-3", "job", "a").status(Status::Completed)).unwrap();
    }
    for (id, expected, change) in cases {
        let fresh = StateStore::new(store.clone()).unwrap();
        let err = fresh.update("job", id, expected, change.clone()).unwrap_err().to_string();
        if id != "e-1" {
            let want = memory.update("job", id, expected, change.clone()).unwrap_err().to_string();
            assert_eq!(err, want, "{change:?}");
        }
        assert!(!err.is_empty());
    }
    assert_eq!(states.get("job", "e-1").unwrap().state.status(), Status::Archived);
    let err = states.update("job", "e-1", 9, Change::by("x").status(Status::Active)).unwrap_err();
    assert!(err.to_string().contains("archived"), "{err}");
    assert_eq!(states.get("job", "e-2").unwrap(), fresh);
    // A tombstone is not updated; the conflict or not found is the client's.
    let gone = states.delete("job", "e-2", 1, Change::by("x")).unwrap();
    let err = states.update("job", "e-2", 2, Change::by("x").status(Status::Active)).unwrap_err();
    assert_eq!(err.to_string(), "not found: job/e-2 (deleted at version 2)");
    assert_eq!(states.get_version("job", "e-2", 2).unwrap(), gone);
}
