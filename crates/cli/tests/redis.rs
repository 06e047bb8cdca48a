//! Black-box tests of the `seed` binary on the Redis store (`SEED_REDIS_URL`),
//! against a private redis-server on a free loopback port.

mod util;

use std::time::Duration;

use serde_json::Value;
use store_redis::testing::RedisServer;
use util::Dir;

fn ns(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["payload"]["n"].as_u64().expect("payload.n")).collect()
}

#[test]
fn every_command_works_on_redis() {
    let server = RedisServer::start();
    let dir = Dir::with_redis(server.url());

    let mut sub = dir.spawn(&["subscribe", "--topic", "task.>", "--count", "3"]);
    let mut group = dir.spawn(&[
        "subscribe",
        "--topic",
        "task.*",
        "--group",
        "g",
        "--exclusive",
        "--count",
        "2",
    ]);
    sub.wait_listening();
    group.wait_listening();
    let id = dir.publish("task.a", r#"{"n": 0}"#);
    dir.publish("task.b.c", r#"{"n": 1}"#);
    dir.publish("other", r#"{"n": 2}"#);
    dir.publish("task.a", r#"{"n": 3}"#);
    let got = sub.events(3);
    assert_eq!(ns(&got), vec![0, 1, 3]);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(ns(&group.events(2)), vec![0, 3]);
    sub.expect_exit(0);
    group.expect_exit(0);

    let text = dir.stdout(&["history", "--topic", "task.a"]);
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| l.contains("] task.a from test: {\"n\": ")), "{text}");
    assert_eq!(ns(&dir.history(&["--last", "2"])), vec![2, 3]);
    assert_eq!(dir.stdout(&["topics"]), "other\ntask.a\ntask.b.c\n");

    let stats: Value = serde_json::from_str(&dir.stdout(&["stats", "--json"])).unwrap();
    assert_eq!(stats["topics"].as_array().unwrap().len(), 3);
    let groups: Value = serde_json::from_str(&dir.stdout(&["groups", "--json"])).unwrap();
    assert_eq!(
        (groups[0]["name"].as_str(), groups[0]["exclusive"].as_bool()),
        (Some("g"), Some(true))
    );
    assert_eq!(groups[0]["waiting"], 0, "{groups}");

    let out = dir.stdout(&["replay", "--topic", "task.>", "--since", "1h", "--speed", "0"]);
    assert!(out.ends_with("\nReplayed 3 events.\n"), "{out}");

    // Clear while subscribed: later events still arrive.
    let mut live = dir.spawn(&["subscribe", "--topic", "task.a", "--count", "1"]);
    live.wait_listening();
    assert_eq!(
        dir.stdout(&["clear", "--topic", "task.a", "--confirm"]),
        "Cleared 2 events from topic 'task.a'.\n"
    );
    dir.publish("task.a", r#"{"n": 4}"#);
    assert_eq!(ns(&live.events(1)), vec![4]);
    live.expect_exit(0);
    assert_eq!(dir.stdout(&["clear", "--confirm"]), "Cleared 3 total events.\n");
    assert!(dir.history(&[]).is_empty());

    // Redis selected: nothing went to the events directory.
    assert!(!dir.path().join("events").exists());
}

#[test]
fn subscribe_then_publish_at_once_misses_nothing_on_redis() {
    let server = RedisServer::start();
    let dir = Dir::with_redis(server.url());
    dir.publish("race", r#"{"n": 0}"#);
    for trial in 1..=20u64 {
        let mut sub = dir.spawn(&["subscribe", "--topic", "race", "--count", "1"]);
        sub.wait_listening();
        let id = dir.publish("race", &format!(r#"{{"n": {trial}}}"#));
        let event = &sub.events(1)[0];
        assert_eq!(event["id"].as_str(), Some(id.as_str()), "trial {trial}");
        sub.expect_exit(0);
    }
}

#[test]
fn a_durable_group_resumes_on_redis() {
    let server = RedisServer::start();
    let dir = Dir::with_redis(server.url());
    let mut sub = dir.spawn(&["subscribe", "--topic", "jobs.>", "--group", "w", "--exclusive"]);
    sub.wait_listening();
    for n in 0..3 {
        dir.publish("jobs.a", &format!(r#"{{"n": {n}}}"#));
    }
    assert_eq!(ns(&sub.events(3)), vec![0, 1, 2]);
    sub.signal(libc::SIGINT);
    sub.expect_exit(0);
    dir.publish("jobs.a", r#"{"n": 3}"#);
    dir.publish("jobs.b", r#"{"n": 4}"#);
    let mut sub = dir.spawn(&[
        "subscribe",
        "--topic",
        "jobs.>",
        "--group",
        "w",
        "--exclusive",
        "--count",
        "2",
    ]);
    let mut got = ns(&sub.events(2));
    got.sort_unstable();
    assert_eq!(got, vec![3, 4]);
    sub.expect_exit(0);
}

#[test]
fn history_and_subscribe_resume_after_a_redis_cursor() {
    let server = RedisServer::start();
    let dir = Dir::with_redis(server.url());
    for n in 0..5 {
        dir.publish("r", &format!(r#"{{"n": {n}}}"#));
    }
    let lines = |out: String| -> Vec<Value> {
        out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    };
    let first =
        lines(dir.stdout(&["history", "--topic", "r", "--limit", "2", "--output", "ndjson"]));
    let cursor = first[1]["cursor"].as_str().unwrap().to_string();
    assert!(cursor.contains('-') && cursor != "2-0", "a stream id: {cursor}");
    let rest =
        lines(dir.stdout(&["history", "--topic", "r", "--after", &cursor, "--output", "ndjson"]));
    assert_eq!(ns(&rest), vec![2, 3, 4]);
    let mut sub = dir.spawn(&[
        "subscribe",
        "--topic",
        "r",
        "--after",
        &cursor,
        "--count",
        "4",
        "--output",
        "ndjson",
    ]);
    sub.wait_listening();
    dir.publish("r", r#"{"n": 5}"#);
    assert_eq!(ns(&sub.events(4)), vec![2, 3, 4, 5]);
    sub.expect_exit(0);
}

#[test]
fn give_up_after_exits_1_naming_the_url_without_its_password() {
    use store_redis::testing::ServerOptions;
    let password = "s3cret-pw";
    let mut server = RedisServer::start_with(ServerOptions {
        password: Some(password.to_string()),
        ..ServerOptions::default()
    });
    let dir = Dir::with_redis(server.url());
    let mut sub = dir.spawn(&["subscribe", "--topic", "g.>", "--give-up-after", "2s"]);
    sub.wait_listening();
    server.stop();
    let warning = sub.wait_stderr("[WARN ] subscription g.>: lost Redis store at ");
    let line = sub.wait_stderr("seed: ");
    sub.expect_exit(1);
    let shown = format!("redis://:***@127.0.0.1:{}/0", server.port());
    assert!(warning.contains(&shown) && !warning.contains(password), "{warning}");
    assert!(line.starts_with(&format!("seed: gave up on Redis store at {shown}")), "{line}");
    assert!(!line.contains(password), "{line}");
}

/// Publishes event `n` to `topic` with a fixed id, retrying while the
/// server is down (exit 1), so a retry after a lost reply stores nothing twice.
fn publish_until_stored(dir: &Dir, topic: &str, n: u64) {
    let id = format!("00000000-0000-4000-8000-{n:012}");
    let payload = format!(r#"{{"n": {n}}}"#);
    let args =
        ["publish", "--topic", topic, "--source", "test", "--payload", &payload, "--id", &id];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = dir.command(&args).output();
        match out.status.code() {
            Some(0) => return,
            Some(1) => assert!(std::time::Instant::now() < deadline, "publishing {n} kept failing"),
            other => panic!("publish exited {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `outage` has passed since `start` (the outage's length is
/// the scenario, not a wait for something to happen).
fn let_pass(start: std::time::Instant, outage: Duration) {
    while start.elapsed() < outage {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes events `range` round-robin to `rr.a` and `rr.b`.
fn publish_range(dir: &Dir, range: std::ops::Range<u64>) {
    for n in range {
        publish_until_stored(dir, if n.is_multiple_of(2) { "rr.a" } else { "rr.b" }, n);
    }
}

/// `seed subscribe` (plain, or with `--group`) across Redis restarts after
/// each of `outages`, with events published before, during (retried until
/// the server is back) and after each: every event delivered, none twice
/// (a `--group` subscriber at most the one in flight per outage); the
/// subscriber says when the store is back.
fn subscriber_survives_restarts(extra: &[&str], outages: &[Duration]) {
    // Log lines name a group member by its group and id, a plain subscriber by its pattern.
    let label = match extra.iter().skip_while(|a| **a != "--group").nth(1) {
        Some(group) => format!("group member {group}/"),
        None => "subscription rr.>: ".to_string(),
    };
    use std::collections::BTreeSet;
    use store_redis::testing::ServerOptions;
    let mut server =
        RedisServer::start_with(ServerOptions { persistent: true, ..ServerOptions::default() });
    let dir = Dir::with_redis(server.url());
    let mut args = vec!["subscribe", "--topic", "rr.>"];
    args.extend_from_slice(extra);
    let mut sub = dir.spawn(&args);
    sub.wait_listening();
    let mut got = Vec::new();
    let take_until = |got: &mut Vec<u64>, n: u64| {
        while got.iter().collect::<BTreeSet<_>>().len() < n as usize {
            got.extend(ns(&sub.events(1)));
        }
    };
    let mut n = 0u64;
    for outage in outages {
        publish_range(&dir, n..n + 3);
        n += 3;
        take_until(&mut got, n);
        server.stop();
        let down = std::time::Instant::now();
        let lost = sub.wait_stderr(&format!("[WARN ] {label}"));
        assert!(lost.contains(": lost Redis store at "), "{lost}");
        let publisher = {
            let (url, during) = (server.url(), n..n + 3);
            std::thread::spawn(move || publish_range(&Dir::with_redis(url), during))
        };
        n += 3;
        let_pass(down, *outage);
        server.restart();
        let back = sub.wait_stderr(&format!("[INFO ] {label}"));
        assert!(back.contains(" is back after "), "{back}");
        publisher.join().unwrap();
        publish_range(&dir, n..n + 3);
        n += 3;
        take_until(&mut got, n);
    }
    sub.signal(libc::SIGINT);
    sub.expect_exit(0);
    got.extend(ns(&sub
        .lines_within(Duration::from_secs(5))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect::<Vec<Value>>()));
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct, (0..n).collect(), "every event delivered: {got:?}");
    let twice = got.len() - distinct.len();
    let allowed = if extra.contains(&"--group") { outages.len() } else { 0 };
    assert!(twice <= allowed, "{twice} delivered twice: {got:?}");
    // An exclusive member's lock renewals failing through an outage are one
    // warning, not one a try (the 10 s outage outlasts the 5 s lease: its
    // renewals fail several times).
    if extra.contains(&"--exclusive") {
        let transcript = sub.transcript();
        let renewals = transcript.matches("renewing its lock failed (trying again").count();
        assert!(
            (1..=outages.len()).contains(&renewals),
            "{renewals} renewal warnings: {transcript}"
        );
    }
}

#[test]
fn a_plain_subscriber_survives_redis_restarts() {
    subscriber_survives_restarts(&[], &[Duration::from_secs(1), Duration::from_secs(10)]);
}

#[test]
fn a_group_subscriber_survives_redis_restarts() {
    subscriber_survives_restarts(
        &["--group", "g", "--exclusive"],
        &[Duration::from_secs(1), Duration::from_secs(10)],
    );
}
