//! Redis-specific behaviour beyond the conformance suite: server restarts,
//! lost replies, prefixes, unreachable servers, passwords and bad input.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use seed_event::conformance::{event, numbers, topic};
use seed_event::{
    Clear, ConsumerName, Cursor, ErrorKind, Event, EventStore, FollowFrom, Query, Start,
    StoredEvent, Topic, TopicPattern,
};
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::{redact_url, RedisConfig, RedisStore};

const DEADLINE: Duration = Duration::from_secs(30);

/// What the store's byte count of `events` must be: their JSON lines and newlines.
fn line_bytes(events: &[StoredEvent]) -> u64 {
    events.iter().map(|e| e.event.to_json_line().len() as u64 + 1).sum()
}

fn store(url: &str, prefix: &str) -> RedisStore {
    RedisStore::open_with(RedisConfig::new(url).prefix(prefix)).unwrap()
}

/// Runs `f` on a thread and fails the test if it has not returned within `DEADLINE`.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what} did not return within {DEADLINE:?}"))
}

/// A raw connection for writing what the store never would.
fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

#[test]
fn follower_survives_a_server_restart_losing_and_repeating_nothing() {
    let mut server =
        RedisServer::start_with(ServerOptions { persistent: true, ..ServerOptions::default() });
    let url = server.url();
    let t = topic("restart.events");
    let publisher = store(&url, "seed:");
    let subscriber = store(&url, "seed:");
    let mut follower = subscriber
        .follow(&TopicPattern::new("restart.>").unwrap(), FollowFrom::start(Start::Beginning))
        .unwrap();

    // The follower runs on its own thread the whole time, reporting what it gets.
    let (tx, rx) = mpsc::channel::<Vec<u64>>();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut errors = 0;
            while !stop.load(Ordering::SeqCst) {
                match follower.next_batch(100, Duration::from_millis(100)) {
                    Ok(batch) if !batch.is_empty() => {
                        let _ = tx.send(numbers(&batch));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                        errors += 1;
                    }
                }
            }
            errors
        })
    };
    let mut seen = Vec::new();
    let wait_for = |n: usize, seen: &mut Vec<u64>| {
        let deadline = Instant::now() + DEADLINE;
        while seen.len() < n && Instant::now() < deadline {
            if let Ok(batch) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.extend(batch);
            }
        }
    };

    for n in 0..30 {
        publisher.append(&event(&t, n)).unwrap();
    }
    wait_for(30, &mut seen);
    assert_eq!(seen, (0..30).collect::<Vec<_>>());

    // Events published just before the kill are persisted (appendfsync always).
    for n in 30..40 {
        publisher.append(&event(&t, n)).unwrap();
    }
    server.stop();
    let err = publisher.append(&event(&t, 999)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{}", server.port())), "{err}");
    // The follower keeps trying while the server is down.
    thread::sleep(Duration::from_millis(300));
    server.restart();

    for n in 40..70 {
        publisher.append(&event(&t, n)).unwrap();
    }
    let last_ten: Vec<Event> = (70..80).map(|n| event(&t, n)).collect();
    publisher.append_batch(&t, &last_ten).unwrap();
    wait_for(80, &mut seen);
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    assert_eq!(seen, (0..80).collect::<Vec<_>>(), "every event once, in order");
    let stored = publisher.query(&Query::topic(&t)).unwrap();
    assert_eq!(numbers(&stored), (0..80).collect::<Vec<_>>(), "nothing lost by the restart");
}

/// A TCP proxy that can swallow the server's next reply and cut the connection,
/// as a network failure after the server ran a command would.
struct Proxy {
    port: u16,
    drop_next_reply: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let drop_next_reply = Arc::new(AtomicBool::new(false));
        let flag = drop_next_reply.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Both);
                });
                let flag = flag.clone();
                let (mut s_in, mut c_out) = (server, client);
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 || flag.swap(false, Ordering::SeqCst) {
                            break;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                    let _ = s_in.shutdown(Shutdown::Both);
                });
            }
        });
        Proxy { port, drop_next_reply }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn lose_next_reply(&self) {
        self.drop_next_reply.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_lost_reply_is_retried_without_writing_twice() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let store = store(&proxy.url(), "seed:");
    let t = topic("lost.replies");

    proxy.lose_next_reply();
    let one = store.append_owned(event(&t, 0)).unwrap();

    // The pipelined path (the store has appended to the topic before).
    proxy.lose_next_reply();
    let two = store.append_owned(event(&t, 100)).unwrap();

    proxy.lose_next_reply();
    let batch = store.append_batch_owned(&t, (1..6).map(|n| event(&t, n)).collect()).unwrap();

    let expected = Some(batch[4].cursor);
    proxy.lose_next_reply();
    let sixth = event(&t, 6);
    let cursor = store.append_expecting(&sixth, expected).unwrap();
    let conditional = StoredEvent { cursor, event: sixth };

    let stored = store.query(&Query::topic(&t)).unwrap();
    let mut expected_numbers = vec![0, 100];
    expected_numbers.extend(1..7);
    assert_eq!(numbers(&stored), expected_numbers, "each event stored once");
    let mut returned = vec![one, two];
    returned.extend(batch);
    returned.push(conditional);
    assert_eq!(returned, stored, "the retries answer with the stored cursors");
    assert_eq!(store.topics().unwrap()[0].events, 8);
    assert_eq!(store.topics().unwrap()[0].bytes, line_bytes(&stored));
}

#[test]
fn stores_with_different_prefixes_do_not_see_each_other() {
    let server = RedisServer::start();
    let (a, b) = (store(&server.url(), "alpha:"), store(&server.url(), "beta:"));
    let shared = topic("shared.name");
    let only_b = topic("only.beta");
    let mut a_follower =
        a.follow(&TopicPattern::new(">").unwrap(), FollowFrom::start(Start::Beginning)).unwrap();
    a.append(&event(&shared, 1)).unwrap();
    b.append(&event(&shared, 2)).unwrap();
    b.append(&event(&only_b, 3)).unwrap();
    let consumer = ConsumerName::new("worker").unwrap();
    b.commit_consumer(&consumer, &shared, Cursor::new(5, 0)).unwrap();

    let names = |s: &RedisStore| -> Vec<String> {
        s.topics().unwrap().into_iter().map(|t| t.topic.to_string()).collect()
    };
    assert_eq!(names(&a), vec!["shared.name"]);
    assert_eq!(names(&b), vec!["only.beta", "shared.name"]);
    assert_eq!(numbers(&a.query(&Query::default()).unwrap()), vec![1]);
    assert_eq!(numbers(&b.query(&Query::default()).unwrap()), vec![2, 3]);
    assert!(a.consumers().unwrap().is_empty());
    assert!(a.load_consumer(&consumer).unwrap().is_empty());
    assert_eq!(b.consumers().unwrap(), vec![consumer]);

    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        got = a_follower.next_batch(10, Duration::from_millis(100)).unwrap();
    }
    assert_eq!(numbers(&got), vec![1]);
    assert!(a_follower.next_batch(10, Duration::from_millis(150)).unwrap().is_empty());

    assert_eq!(a.clear(&Clear::default()).unwrap(), 1);
    assert_eq!(numbers(&b.query(&Query::default()).unwrap()), vec![2, 3], "b untouched");

    // The URL's database number separates stores too.
    let db = |n: u8| store(&format!("redis://127.0.0.1:{}/{n}", server.port()), "seed:");
    let (one, two) = (db(1), db(2));
    one.append(&event(&shared, 10)).unwrap();
    assert_eq!(numbers(&one.query(&Query::default()).unwrap()), vec![10]);
    assert!(two.query(&Query::default()).unwrap().is_empty());
    assert!(two.topics().unwrap().is_empty());
}

/// A command expected to fail, for a table of them.
type Check = Box<dyn FnOnce(&RedisStore) -> seed_event::Error + Send>;

#[test]
fn an_unreachable_server_is_unavailable_within_bounded_time_without_the_password() {
    let config = |url: String| RedisConfig::new(url).connect_timeout(Duration::from_millis(300));
    // Nobody listens.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Someone listens but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for port in [closed, silent_port] {
        let url = format!("redis://admin:hunter2@127.0.0.1:{port}/3");
        let cfg = config(url.clone());
        let err = bounded("open", move || RedisStore::open_with(cfg)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("redis://admin:***@127.0.0.1:{port}/3")), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    drop(silent);

    // A server that goes away after the store opened.
    let mut server = RedisServer::start_with(ServerOptions {
        password: Some("s3cret-pass".to_string()),
        ..ServerOptions::default()
    });
    let store = RedisStore::open_with(config(server.url())).unwrap();
    let t = topic("gone");
    store.append(&event(&t, 0)).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::New)).unwrap();
    server.stop();
    let checks: Vec<Check> = vec![
        Box::new(|s| s.append(&event(&topic("gone"), 1)).unwrap_err()),
        Box::new(|s| s.query(&Query::default()).unwrap_err()),
        Box::new(|s| s.topics().unwrap_err()),
        Box::new(|s| {
            s.follow(&TopicPattern::new("gone").unwrap(), FollowFrom::start(Start::New))
                .err()
                .unwrap()
        }),
    ];
    for check in checks {
        let s = store.clone();
        let err = bounded("a command", move || check(&s));
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(!err.to_string().contains("s3cret-pass"), "{err}");
        assert!(err.to_string().contains(&format!(":{}", server.port())), "{err}");
    }
    let err = bounded("a follower", move || {
        follower.next_batch(10, Duration::from_millis(200)).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!err.to_string().contains("s3cret-pass"), "{err}");

    // A wrong or missing password is refused as invalid input (retrying
    // cannot help), and not shown either.
    server.restart();
    let wrong = format!("redis://:wrong-pass@127.0.0.1:{}/0", server.port());
    let missing = format!("redis://127.0.0.1:{}/0", server.port());
    for url in [wrong, missing] {
        let err = RedisStore::open(&url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("credentials"), "{err}");
        assert!(!err.to_string().contains("wrong-pass"), "{err}");
    }
    assert!(RedisStore::open(&server.url()).is_ok());
    let with_user = format!("redis://default:s3cret-pass@127.0.0.1:{}/0", server.port());
    let store = RedisStore::open(&with_user).unwrap();
    assert!(store.describe().contains("redis://default:***@127.0.0.1"), "{}", store.describe());
    assert!(!format!("{store:?}").contains("s3cret-pass"));
    assert!(!format!("{:?}", store.config()).contains("s3cret-pass"));
    assert!(format!("{:?}", store.config()).contains("default:***@"));
}

#[test]
fn bad_urls_and_prefixes_are_rejected_with_the_password_hidden() {
    for url in [
        "http://127.0.0.1:6380/",
        "redis://user:pw-123@127.0.0.1:notaport/",
        "not a url",
        "redis://user:pw-123@127.0.0.1:1/notadb",
    ] {
        let err = RedisStore::open(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}: {err}");
        assert!(err.to_string().contains("redis URL"), "{err}");
        assert!(!err.to_string().contains("pw-123"), "{err}");
    }
    let server = RedisServer::start();
    for prefix in ["", "a b", "x{y}:", "tab\t"] {
        let config = RedisConfig::new(server.url()).prefix(prefix);
        let err = RedisStore::open_with(config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{prefix:?}: {err}");
        assert!(err.to_string().contains("prefix"), "{err}");
    }
    assert_eq!(redact_url("redis://:p@h/0?password=x&db=1"), "redis://:***@h/0?password=***&db=1");
    assert_eq!(
        redact_url("redis+unix:///run/redis.sock?pass=x"),
        "redis+unix:///run/redis.sock?pass=***"
    );
}

#[test]
fn a_rejected_batch_writes_nothing_not_even_the_topic() {
    let server = RedisServer::start();
    let store = store(&server.url(), "seed:");
    let (a, b) = (topic("batch.a"), topic("batch.b"));
    let err = store.append_batch(&a, &[event(&a, 0), event(&b, 1)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("batch.b"), "{err}");
    assert!(store.topics().unwrap().is_empty());
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw(&server)).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let err = store.append_expecting(&event(&a, 2), Some(Cursor::new(1, 0))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().contains("expected last position 1-0, found none"), "{err}");
}

#[test]
fn corrupt_entries_are_reported_with_their_key_and_id() {
    let server = RedisServer::start();
    let store = store(&server.url(), "seed:");
    let t = topic("corrupt.one");
    store.append(&event(&t, 0)).unwrap();
    let mut con = raw(&server);
    let bad_id: String = redis::cmd("XADD")
        .arg("seed:{corrupt.one}:s")
        .arg("*")
        .arg("e")
        .arg("{not json")
        .query(&mut con)
        .unwrap();
    let err = store.query(&Query::topic(&t)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&format!("seed:{{corrupt.one}}:s, entry {bad_id}")), "{err}");

    // An event filed under another topic is corrupt too.
    let other = event(&topic("corrupt.other"), 1).to_json_line();
    let _: String = redis::cmd("XADD")
        .arg("seed:{corrupt.two}:s")
        .arg("*")
        .arg("e")
        .arg(other)
        .query(&mut con)
        .unwrap();
    let err = store.query(&Query::topic(&topic("corrupt.two"))).unwrap_err();
    assert!(err.to_string().contains("expected \"corrupt.two\""), "{err}");

    // A follower reports the bad entry once, then goes on.
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning)).unwrap();
    store.append(&event(&t, 2)).unwrap();
    let mut good = Vec::new();
    let mut errors = 0;
    let deadline = Instant::now() + DEADLINE;
    while good.len() < 2 && Instant::now() < deadline {
        match follower.next_batch(10, Duration::from_millis(100)) {
            Ok(batch) => good.extend(numbers(&batch)),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
                errors += 1;
            }
        }
    }
    assert_eq!((good, errors), (vec![0, 2], 1));

    // Consumer positions that are not a topic and a cursor.
    let _: i64 = redis::cmd("HSET")
        .arg("seed:consumer:worker")
        .arg("corrupt.one")
        .arg("not-a-cursor")
        .query(&mut con)
        .unwrap();
    let err = store.load_consumer(&ConsumerName::new("worker").unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("seed:consumer:worker"), "{err}");

    // A key of the store that holds another type.
    let _: () = redis::cmd("SET").arg("seed:{wrong.type}:s").arg("x").query(&mut con).unwrap();
    let err = store.query(&Query::topic(&topic("wrong.type"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("another type"), "{err}");

    // Also on the write paths, once the store knows the topic.
    let kind = topic("wrong.kind");
    store.append(&event(&kind, 0)).unwrap();
    let _: () = redis::cmd("DEL").arg("seed:{wrong.kind}:s").query(&mut con).unwrap();
    let _: () = redis::cmd("SET").arg("seed:{wrong.kind}:s").arg("x").query(&mut con).unwrap();
    let err = store.append(&event(&kind, 1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let err = store.append_batch(&kind, &[event(&kind, 2), event(&kind, 3)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let err = store.append_expecting(&event(&kind, 4), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    // Also inside a pipeline (the stats of every topic).
    let err = store.topics().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("another type"), "{err}");

    // A member of the topic set that is not a topic name.
    let _: i64 = redis::cmd("SADD").arg("seed:topics").arg("bad name").query(&mut con).unwrap();
    let err = store.topics().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("\"bad name\""), "{err}");
}

#[test]
fn cursors_keep_growing_after_clears_and_late_events() {
    let server = RedisServer::start();
    let store = store(&server.url(), "seed:");
    let t = topic("ids");
    let now = store.append(&event(&t, 0)).unwrap();
    // An event from the past still gets a greater cursor, never below its own time.
    let late = store
        .append(&event(&t, 1).with_timestamp(seed_event::Timestamp::from_unix_micros(1_000_000)))
        .unwrap();
    assert!(late > now);
    store.clear(&Clear { topic: Some(t.clone()), before: None }).unwrap();
    let after = store.append(&event(&t, 2)).unwrap();
    assert!(after > late);
    // Far-future and pre-1970 timestamps are accepted too.
    let future = event(&t, 3).with_timestamp(seed_event::Timestamp::from_unix_micros(i64::MAX / 2));
    let past = event(&t, 4).with_timestamp(seed_event::Timestamp::from_unix_micros(-5_000_000));
    let cursors = store.append_batch(&t, &[future, past]).unwrap();
    assert!(cursors[0] > after && cursors[1] > cursors[0]);
    let all: BTreeSet<u64> =
        numbers(&store.query(&Query::topic(&t)).unwrap()).into_iter().collect();
    assert_eq!(all, BTreeSet::from([2, 3, 4]));
    assert_eq!(store.count_after(&t, after).unwrap(), 2);

    // Late events through the pipelined path still count their bytes once.
    let skew = topic("ids.skew");
    for (n, secs) in [(0, 50), (1, 10), (2, 30), (3, 5)] {
        let at = seed_event::Timestamp::from_unix_micros(1_700_000_000_000_000 + secs * 1_000_000);
        store.append(&event(&skew, n).with_timestamp(at)).unwrap();
    }
    // A batch that starts below the stream's top continues from the top.
    let late: Vec<Event> = [(4, 1), (5, 40), (6, 2)]
        .into_iter()
        .map(|(n, secs)| {
            let at =
                seed_event::Timestamp::from_unix_micros(1_700_000_000_000_000 + secs * 1_000_000);
            event(&skew, n).with_timestamp(at)
        })
        .collect();
    let returned = store.append_batch_owned(&skew, late).unwrap();
    let stored = store.query(&Query::topic(&skew)).unwrap();
    assert_eq!(numbers(&stored), vec![0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(returned, stored[4..].to_vec());
    let stats = store.topics().unwrap().into_iter().find(|s| s.topic == skew).unwrap();
    assert_eq!(stats.bytes, line_bytes(&stored));

    // Another writer ahead in time: this store's pipelined append falls back to the script.
    let other = self::store(&server.url(), "seed:");
    let ahead = seed_event::Timestamp::from_unix_micros(1_900_000_000_000_000);
    let far = other.append(&event(&skew, 7).with_timestamp(ahead)).unwrap();
    let behind = store.append_owned(event(&skew, 8)).unwrap();
    assert!(behind.cursor > far);
    let stored = store.query(&Query::topic(&skew)).unwrap();
    assert_eq!(numbers(&stored), vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(stored.last(), Some(&behind));
    let stats = store.topics().unwrap().into_iter().find(|s| s.topic == skew).unwrap();
    assert_eq!(stats.bytes, line_bytes(&stored), "the fallback does not count twice");

    // The same for a batch: refused whole by XADD, then stored whole by the script.
    let further = seed_event::Timestamp::from_unix_micros(1_950_000_000_000_000);
    other.append(&event(&skew, 9).with_timestamp(further)).unwrap();
    let returned =
        store.append_batch_owned(&skew, (10..13).map(|n| event(&skew, n)).collect()).unwrap();
    let stored = store.query(&Query::topic(&skew)).unwrap();
    assert_eq!(numbers(&stored), (0..13).collect::<Vec<_>>());
    assert_eq!(returned, stored[10..].to_vec());
    let stats = store.topics().unwrap().into_iter().find(|s| s.topic == skew).unwrap();
    assert_eq!(stats.bytes, line_bytes(&stored));
}

#[test]
fn threads_sharing_one_store_lose_and_repeat_nothing_even_when_replies_are_lost() {
    let server = RedisServer::start();
    let proxy = Arc::new(Proxy::start(server.port()));
    let store = Arc::new(store(&proxy.url(), "seed:"));
    let t = topic("shared.store");
    store.append(&event(&t, 1_000_000)).unwrap();
    let (threads, per) = (8u64, 250u64);
    let done = Arc::new(AtomicBool::new(false));
    let saboteur = {
        let (proxy, done) = (proxy.clone(), done.clone());
        thread::spawn(move || {
            let mut cuts = 0;
            while !done.load(Ordering::SeqCst) && cuts < 20 {
                proxy.lose_next_reply();
                cuts += 1;
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let writers: Vec<_> = (0..threads)
        .map(|w| {
            let (store, t) = (store.clone(), t.clone());
            thread::spawn(move || {
                (0..per)
                    .map(|i| (w * per + i, store.append(&event(&t, w * per + i))))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    saboteur.join().unwrap();

    // An append that failed (its retry's reply was cut too) may or may not have
    // landed; every acknowledged one landed once, and none landed twice.
    let stored = store.query(&Query::topic(&t)).unwrap();
    let got = numbers(&stored[1..]);
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), got.len(), "nothing twice");
    for w in 0..threads {
        let mine: Vec<_> = got.iter().filter(|n| **n / per == w).collect();
        assert!(mine.windows(2).all(|p| p[0] < p[1]), "writer {w} kept its order");
    }
    let by_cursor: std::collections::BTreeMap<Cursor, u64> =
        stored.iter().map(|e| (e.cursor, e.event.payload["n"].as_u64().unwrap())).collect();
    let mut failed = 0;
    for (n, result) in &results {
        match result {
            Ok(cursor) => assert_eq!(by_cursor.get(cursor), Some(n), "acknowledged means stored"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                failed += 1;
            }
        }
    }
    assert!(failed < results.len() / 10, "{failed} of {} appends failed", results.len());
    let stats = store.topics().unwrap();
    assert_eq!(stats[0].bytes, line_bytes(&stored), "bytes counted once per event");
}

#[test]
fn retention_trims_by_count_and_age_with_exact_bytes() {
    use store_redis::{Limits, Retention};
    let server = RedisServer::start();
    let (busy, aged, free) = (topic("ret.busy"), topic("ret.aged"), topic("ret.free"));
    let mut retention = Retention::default();
    let newest_10 = Limits::default().max_events(10);
    let one_hour = Limits::default().max_age(Duration::from_secs(3600));
    retention.per_topic.insert(busy.clone(), newest_10);
    retention.per_topic.insert(aged.clone(), one_hour);
    let config = RedisConfig::new(server.url()).retention(retention);
    let store = RedisStore::open_with(config).unwrap();
    let count = |t: &Topic| numbers(&store.query(&Query::topic(t)).unwrap());
    let stats = |t: &Topic| store.topics().unwrap().into_iter().find(|s| s.topic == *t).unwrap();

    // By count, automatically: checks after 1,024 and 2,048 appends trim to the newest 10.
    for n in 0..2100 {
        store.append(&event(&busy, n)).unwrap();
    }
    assert_eq!(count(&busy), (2038..2100).collect::<Vec<_>>());
    // By age, automatically: 500 old events go at the check after 1,024.
    let two_hours_ago = seed_event::Timestamp::now().add_micros(-7_200_000_000);
    let old: Vec<Event> = (0..500).map(|n| event(&aged, n).with_timestamp(two_hours_ago)).collect();
    store.append_batch(&aged, &old).unwrap();
    let new: Vec<Event> = (500..1024).map(|n| event(&aged, n)).collect();
    store.append_batch(&aged, &new).unwrap();
    assert_eq!(count(&aged), (500..1024).collect::<Vec<_>>());
    // A late old event sits after new ones: only the exact run finds it.
    store.append(&event(&aged, 9999).with_timestamp(two_hours_ago)).unwrap();
    for n in 0..20 {
        store.append(&event(&free, n)).unwrap();
    }
    assert_eq!(store.enforce_retention().unwrap(), 52 + 1);
    assert_eq!(count(&busy), (2090..2100).collect::<Vec<_>>());
    assert_eq!(count(&aged), (500..1024).collect::<Vec<_>>());
    assert_eq!(count(&free).len(), 20, "topics without limits are untouched");
    for t in [&busy, &aged, &free] {
        let stored = store.query(&Query::topic(t)).unwrap();
        assert_eq!(stats(t).bytes, line_bytes(&stored), "bytes of {t}");
    }
    let last = store.last_cursor(&busy).unwrap().unwrap();
    assert!(store.append(&event(&busy, 3000)).unwrap() > last);
}

#[test]
fn a_follower_goes_on_after_a_server_restart_that_lost_the_data() {
    let mut server = RedisServer::start();
    let (a, b) = (topic("np.a"), topic("np.b"));
    let subscriber = store(&server.url(), "seed:");
    let mut follower = subscriber
        .follow(&TopicPattern::new("np.>").unwrap(), FollowFrom::start(Start::Beginning))
        .unwrap();
    let collect = |follower: &mut Box<dyn seed_event::Follower>, n: usize| {
        let mut got = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while got.len() < n && Instant::now() < deadline {
            if let Ok(batch) = follower.next_batch(100, Duration::from_millis(100)) {
                got.extend(numbers(&batch));
            }
        }
        got
    };
    {
        let publisher = store(&server.url(), "seed:");
        for n in 0..5 {
            publisher.append(&event(&a, n)).unwrap();
        }
    }
    assert_eq!(collect(&mut follower, 5), vec![0, 1, 2, 3, 4]);
    server.restart(); // without persistence: every key is gone
    let publisher = store(&server.url(), "seed:");
    for n in 5..10 {
        publisher.append(&event(&a, n)).unwrap();
    }
    publisher.append(&event(&b, 10)).unwrap();
    let mut got = collect(&mut follower, 6);
    got.sort_unstable();
    assert_eq!(got, vec![5, 6, 7, 8, 9, 10]);
    let extra = follower.next_batch(100, Duration::from_millis(300)).unwrap();
    assert!(extra.is_empty(), "nothing twice: {:?}", numbers(&extra));
}

#[test]
fn reads_across_many_pages_match_the_reference_store() {
    use seed_event::{Limit, MemoryStore, Timestamp};
    let server = RedisServer::start();
    let redis = store(&server.url(), "seed:");
    let memory = MemoryStore::new();
    let (t, u) = (topic("pages.t"), topic("pages.u"));
    let base = 1_776_340_800_000_000i64;
    // 2,500 events over two topics; every 97th is late by a second, sources alternate.
    let make = |topic: &Topic, n: u64| {
        let late = if n.is_multiple_of(97) { 1_000_000 } else { 0 };
        let mut e = event(topic, n)
            .with_timestamp(Timestamp::from_unix_micros(base + n as i64 * 1_000 - late));
        e.source = if n.is_multiple_of(3) { "three".into() } else { "other".into() };
        e
    };
    let mut cursors = (Vec::new(), Vec::new());
    for chunk in (0..2000u64).collect::<Vec<_>>().chunks(250) {
        let events: Vec<Event> = chunk.iter().map(|n| make(&t, *n)).collect();
        cursors.0.extend(redis.append_batch(&t, &events).unwrap());
        cursors.1.extend(memory.append_batch(&t, &events).unwrap());
    }
    for n in 2000..2500u64 {
        redis.append(&make(&u, n)).unwrap();
        memory.append(&make(&u, n)).unwrap();
    }
    let at = |n: i64| Some(Timestamp::from_unix_micros(base + n * 1_000));
    let queries = vec![
        Query::default(),
        Query::topic(&t),
        Query { source: Some("three".into()), ..Query::default() },
        Query { limit: Some(Limit::Last(7)), source: Some("three".into()), ..Query::topic(&t) },
        Query { limit: Some(Limit::Last(700)), ..Query::topic(&t) },
        Query { limit: Some(Limit::First(600)), ..Query::topic(&t) },
        Query { limit: Some(Limit::First(5)), ..Query::default() },
        Query { limit: Some(Limit::Last(5)), ..Query::default() },
        Query { since: at(1000), ..Query::topic(&t) },
        Query { until: at(1500), ..Query::topic(&t) },
        Query {
            since: at(700),
            until: at(1900),
            limit: Some(Limit::Last(900)),
            ..Query::topic(&t)
        },
        Query { since: at(2100), ..Query::default() },
    ];
    for q in &queries {
        let (r, m) = (redis.query(q).unwrap(), memory.query(q).unwrap());
        assert_eq!(numbers(&r), numbers(&m), "{q:?}");
    }
    let after =
        |c: Cursor| Query { after: Some(c), limit: Some(Limit::First(900)), ..Query::topic(&t) };
    assert_eq!(
        numbers(&redis.query(&after(cursors.0[1200])).unwrap()),
        numbers(&memory.query(&after(cursors.1[1200])).unwrap())
    );
    assert_eq!(redis.count_after(&t, cursors.0[150]).unwrap(), 1849);

    let before = Clear { topic: Some(t.clone()), before: at(1500) };
    assert_eq!(redis.clear(&before).unwrap(), memory.clear(&before).unwrap());
    assert_eq!(
        numbers(&redis.query(&Query::default()).unwrap()),
        numbers(&memory.query(&Query::default()).unwrap())
    );
    let stats = redis.topics().unwrap();
    let stored = redis.query(&Query::topic(&t)).unwrap();
    assert_eq!(stats[0].events, stored.len() as u64);
    assert_eq!(stats[0].bytes, line_bytes(&stored));
}

#[test]
fn count_after_counts_past_its_chunks() {
    let server = RedisServer::start();
    let store = store(&server.url(), "seed:");
    let t = topic("lag.many");
    let mut cursors = Vec::new();
    for b in 0..25u64 {
        let events: Vec<Event> = (0..1000).map(|i| event(&t, b * 1000 + i)).collect();
        cursors.extend(store.append_batch(&t, &events).unwrap());
    }
    assert_eq!(store.count_after(&t, Cursor::ZERO).unwrap(), 25_000);
    assert_eq!(store.count_after(&t, cursors[4_999]).unwrap(), 20_000);
    assert_eq!(store.count_after(&t, cursors[24_999]).unwrap(), 0);
}

/// Timeouts past what the clock can represent, in the configuration and in
/// `next_batch`, are long waits, not overflows.
#[test]
fn timeouts_past_the_clock_do_not_panic() {
    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url()).connect_timeout(Duration::MAX);
    config.command_timeout = Duration::MAX;
    let store = RedisStore::open_with(config).unwrap();
    let t = topic("forever");
    store.append(&event(&t, 0)).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning)).unwrap();
    let got = bounded("next_batch", move || {
        let first = follower.next_batch(10, Duration::MAX).unwrap();
        let none = follower.next_batch(10, Duration::from_millis(20)).unwrap();
        (numbers(&first), none.len())
    });
    assert_eq!(got, (vec![0], 0));
}

/// The calls of `command` (as `INFO commandstats` names it, e.g. `xread`) the server has seen.
fn calls(con: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// A follower waiting without a deadline blocks in one `XREAD` at a time
/// and is woken by its interrupt through `CLIENT UNBLOCK`, without an
/// error; an interrupt that comes first ends the next wait; afterwards it
/// goes on with the next event.
#[test]
fn an_interrupt_unblocks_a_waiting_follower() {
    let server = RedisServer::start();
    let store = store(&server.url(), "seed");
    let mut admin = raw(&server);
    let t = topic("idle.t");
    let pattern = TopicPattern::from(t.clone());
    let mut follower = store.follow(&pattern, FollowFrom::start(Start::New)).unwrap();
    let interrupt = follower.interrupter().expect("Redis followers can be interrupted");

    interrupt.interrupt();
    assert!(bounded("an interrupted wait", move || {
        let first = follower.next_batch(10, Duration::MAX).unwrap();
        (first, follower)
    })
    .0
    .is_empty());

    let mut follower = store.follow(&pattern, FollowFrom::start(Start::New)).unwrap();
    let interrupt = follower.interrupter().unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let first = follower.next_batch(10, Duration::MAX).unwrap();
        tx.send(first.len()).unwrap();
        let next = follower.next_batch(10, Duration::MAX).unwrap();
        tx.send(next.len()).unwrap();
    });
    let blocked = |admin: &mut redis::Connection| {
        let info: String = redis::cmd("INFO").arg("clients").query(admin).unwrap();
        info.lines().any(|l| l.strip_prefix("blocked_clients:").is_some_and(|n| n != "0"))
    };
    let start = Instant::now();
    while !blocked(&mut admin) {
        assert!(start.elapsed() < DEADLINE, "the follower never blocked");
        thread::sleep(Duration::from_millis(5));
    }
    let unblocks = calls(&mut admin, "client|unblock");
    interrupt.interrupt();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), 0, "interrupted without an event");
    assert!(calls(&mut admin, "client|unblock") > unblocks, "through CLIENT UNBLOCK");
    store.append(&event(&t, 1)).unwrap();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), 1, "the next event still comes");
    waiter.join().unwrap();
}

/// A work-group member outlives a restart of the server: its calls fail as
/// unavailable while the server is gone, then it connects again and goes on.
#[test]
fn a_group_member_goes_on_after_a_server_restart() {
    use seed_event::{ConsumerName, GroupBackend, GroupConfig, Start, TopicPattern};
    let options = ServerOptions { persistent: true, ..ServerOptions::default() };
    let mut server = RedisServer::start_with(options);
    let store = store(&server.url(), "seed:");
    let t = topic("restart.jobs");
    let config = GroupConfig::new(
        ConsumerName::new("jobs").unwrap(),
        TopicPattern::new("restart.jobs").unwrap(),
    )
    .unwrap()
    .start(Start::Beginning);
    store.append(&event(&t, 1)).unwrap();
    let mut member = GroupBackend::join(&store, &config, "m").unwrap();
    let first = member.fetch(1, Duration::from_secs(5)).unwrap();
    assert_eq!(numbers(&first.iter().map(|d| d.event.clone()).collect::<Vec<_>>()), vec![1]);
    member.ack(&[first[0].token.clone()]).unwrap();
    server.restart();
    let deadline = Instant::now() + DEADLINE;
    while store.append(&event(&t, 2)).is_err() {
        assert!(Instant::now() < deadline, "the server did not come back");
        thread::sleep(Duration::from_millis(20));
    }
    let mut errors = 0;
    let got = loop {
        match member.fetch(1, Duration::from_millis(200)) {
            Ok(got) if !got.is_empty() => break got,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                errors += 1;
            }
        }
        assert!(Instant::now() < deadline, "the member never worked again ({errors} errors)");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(numbers(&got.iter().map(|d| d.event.clone()).collect::<Vec<_>>()), vec![2]);
    member.ack(&[got[0].token.clone()]).unwrap();
    assert!(member.fetch(1, Duration::ZERO).unwrap().is_empty(), "event 1 stayed acked");
}

/// Deliveries a member hands back come out again in stream order, also past
/// ten entries of one millisecond (`<ms>-10` sorts before `<ms>-9` as text),
/// and leave no mark in the group's `released` hash.
#[test]
fn released_deliveries_come_back_in_stream_order() {
    use seed_event::{ConsumerName, GroupBackend, GroupConfig, Start, TopicPattern};
    let server = RedisServer::start();
    let store = store(&server.url(), "seed:");
    let t = topic("release.order");
    let events: Vec<_> = (0..12).map(|n| event(&t, n)).collect();
    store.append_batch(&t, &events).unwrap();
    let config = GroupConfig::new(
        ConsumerName::new("orderly").unwrap(),
        TopicPattern::new("release.order").unwrap(),
    )
    .unwrap()
    .start(Start::Beginning);
    let mut a = GroupBackend::join(&store, &config, "a").unwrap();
    let mut b = GroupBackend::join(&store, &config, "b").unwrap();
    let got = a.fetch(12, Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 12);
    let rest: Vec<_> = got[1..].iter().map(|d| d.token.clone()).collect();
    assert!(a.release(&rest).unwrap());
    let deadline = Instant::now() + DEADLINE;
    let mut taken = Vec::new();
    while taken.len() < 11 && Instant::now() < deadline {
        taken.extend(b.fetch(11 - taken.len(), Duration::from_millis(200)).unwrap());
    }
    let taken: Vec<_> = taken.iter().map(|d| d.event.clone()).collect();
    assert_eq!(numbers(&taken), (1..12).collect::<Vec<_>>());
    // Their marks went with them: nothing is left in the released hash.
    let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
    let marks: usize =
        redis::cmd("HLEN").arg("seed:group:{orderly}:released").query(&mut con).unwrap();
    assert_eq!(marks, 0);
}
