//! Consumer locks on Redis beyond the conformance suite: takeover when the
//! holder's connection is gone, expiry, and the holder taking back a lock
//! that expired while nobody took it.

use std::time::Duration;

use seed_event::{ConsumerName, Cursor, EventStore, LockRequest, Topic};
use store_redis::testing::RedisServer;
use store_redis::RedisStore;

fn lock_value(server: &RedisServer, name: &str) -> Option<String> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    redis::cmd("GET").arg(format!("seed:lock:{name}")).query(&mut con).unwrap()
}

fn redis_cmd(server: &RedisServer, args: &[&str]) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(&mut con).unwrap();
}

#[test]
fn a_lock_whose_holder_connection_closed_is_taken_over_at_once() {
    let server = RedisServer::start();
    let (a, b) =
        (RedisStore::open(&server.url()).unwrap(), RedisStore::open(&server.url()).unwrap());
    let name = ConsumerName::new("w").unwrap();
    let long = LockRequest::new(Duration::from_secs(600));
    let held = a.lock_consumer(&name, &long).unwrap().expect("free");
    assert!(b.lock_consumer(&name, &long).unwrap().is_none(), "held, connection alive");
    let value = lock_value(&server, "w").unwrap();
    let id = value.split(' ').nth(1).unwrap();
    // As when the holder's process dies: the server drops its connection.
    redis_cmd(&server, &["CLIENT", "KILL", "ID", id]);
    let taken = b.lock_consumer(&name, &long).unwrap().expect("taken over without waiting the TTL");
    assert!(taken.fence() > held.fence());
    let t = Topic::new("t").unwrap();
    assert!(a.commit_fenced(&name, held.fence(), &t, Cursor::new(1, 0)).is_err());
    b.commit_fenced(&name, taken.fence(), &t, Cursor::new(2, 0)).unwrap();
    // The old holder finds out at its next renewal and does not release the new holder's lock.
    drop(held);
    assert!(lock_value(&server, "w").is_some_and(|v| v.starts_with(&format!("{} ", taken.fence()))));
}

#[test]
fn an_expired_lock_is_free_and_its_holder_takes_it_back_while_nobody_else_did() {
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let name = ConsumerName::new("x").unwrap();
    let t = Topic::new("t").unwrap();
    let held =
        store.lock_consumer(&name, &LockRequest::new(Duration::from_secs(600))).unwrap().unwrap();
    // The key vanishes as if its TTL ran out during an outage: the holder may still commit.
    redis_cmd(&server, &["DEL", "seed:lock:x"]);
    store.commit_fenced(&name, held.fence(), &t, Cursor::new(1, 0)).unwrap();
    // Somebody else takes the free lock: now the old holder is refused.
    let other = RedisStore::open(&server.url()).unwrap();
    let short = LockRequest::new(Duration::from_millis(300)).wait(Duration::from_secs(10));
    let next = other.lock_consumer(&name, &short).unwrap().expect("a free lock is taken");
    assert!(store.commit_fenced(&name, held.fence(), &t, Cursor::new(2, 0)).is_err());
    assert!(!next.is_lost());
}
