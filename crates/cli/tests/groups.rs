//! Exclusive groups (`--group --exclusive`) across processes, on the file store and on
//! a private redis-server: a holder killed with SIGKILL is taken over by a
//! waiting subscriber and by a restarted one, with nothing lost and only
//! the events it held in flight printed twice; two processes racing for one
//! group never both deliver; a standby ends at its timeout; a group created
//! over the positions of an old exclusive consumer goes on after them.
//!
//! Takeover times are printed (`--nocapture` shows them), never asserted.

mod util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use store_redis::testing::RedisServer;
use util::{Dir, Running};

/// `payload.n` of each printed line.
fn ns(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["payload"]["n"].as_u64().expect("payload.n")
        })
        .collect()
}

/// Publishes events `from..to` to `topic` in one `publish --payload -`.
fn publish_range(dir: &Dir, topic: &str, from: u64, to: u64) {
    let input: String = (from..to).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let mut cmd = dir.command(&["publish", "--topic", topic, "--source", "t", "--payload", "-"]);
    let output = cmd.output_with(input.as_bytes());
    cmd.expect_status(&output, 0);
}

/// Kills `sub` with SIGKILL and returns what it printed in all, `seen` first.
fn kill_and_collect(mut sub: Running, mut seen: Vec<String>) -> Vec<u64> {
    sub.kill();
    seen.extend(sub.rest());
    ns(&seen)
}

/// How many events of `later` were printed before (redelivered).
fn repeated(before: &BTreeSet<u64>, later: &[u64]) -> usize {
    later.iter().filter(|n| before.contains(n)).count()
}

/// Events a member holds unacked at most (`--max-in-flight`): what a
/// SIGKILL may print twice.
const IN_FLIGHT: usize = 32;

fn sigkill_takeover(dir: &Dir, store: &str) {
    const EVENTS: u64 = 3000;
    let group = [
        "subscribe",
        "--topic",
        "jobs",
        "--group",
        "g",
        "--exclusive",
        "--from",
        "beginning",
        "--max-in-flight",
        "32",
    ];
    let first = dir.spawn(&group);
    first.wait_listening();
    let waiter = dir.spawn(&group);
    waiter.wait_stderr("Waiting for group g");
    std::thread::scope(|scope| {
        // Events keep coming in batches while the members are killed.
        let publisher = scope.spawn(|| {
            for batch in 0..EVENTS / 100 {
                publish_range(dir, "jobs", batch * 100, batch * 100 + 100);
            }
        });
        let seen = first.lines(100);
        assert!(waiter.lines_within(Duration::ZERO).is_empty(), "{store}: the standby printed");
        // A waiting subscriber takes over from a holder killed mid-stream.
        let killed = Instant::now();
        let a = kill_and_collect(first, seen);
        let b_first = waiter.line();
        let waited = killed.elapsed();
        waiter.wait_listening();
        let seen = {
            let mut seen = vec![b_first];
            seen.extend(waiter.lines(100));
            seen
        };
        let b = kill_and_collect(waiter, seen);
        // A subscriber started after the holder was killed.
        let killed = Instant::now();
        let third = dir.spawn(&group);
        third.wait_listening();
        let restarted = killed.elapsed();
        publisher.join().unwrap();
        let all = |c: &[u64]| -> BTreeSet<u64> { a.iter().chain(&b).chain(c).copied().collect() };
        let mut c = Vec::new();
        let deadline = Instant::now() + util::DEADLINE;
        while all(&c).len() < EVENTS as usize && Instant::now() < deadline {
            c.extend(ns(&third.lines_within(Duration::from_millis(100))));
        }
        eprintln!(
            "{store}: SIGKILL to first event of the waiting subscriber {:.1} ms, to a restarted one listening {:.1} ms",
            waited.as_secs_f64() * 1e3,
            restarted.as_secs_f64() * 1e3
        );
        // Printed again: only what a killed member held in flight.
        let a_set: BTreeSet<u64> = a.iter().copied().collect();
        let ab_set: BTreeSet<u64> = a.iter().chain(&b).copied().collect();
        assert!(repeated(&a_set, &b) <= IN_FLIGHT, "{store}: the waiter printed again {b:?}");
        assert!(repeated(&ab_set, &c) <= 2 * IN_FLIGHT, "{store}: the restart printed again {c:?}");
        // Nothing twice within one process, nothing lost across the three.
        for run in [&a, &b, &c] {
            let distinct: BTreeSet<u64> = run.iter().copied().collect();
            assert_eq!(distinct.len(), run.len(), "{store}: a process printed an event twice");
        }
        let missing: Vec<u64> = (0..EVENTS).filter(|n| !all(&c).contains(n)).collect();
        assert!(missing.is_empty(), "{store}: events lost: {missing:?}");
    });
}

#[test]
fn a_killed_group_holder_is_taken_over_on_the_file_store() {
    sigkill_takeover(&Dir::new(), "file");
}

#[test]
fn a_killed_group_holder_is_taken_over_on_redis() {
    let server = RedisServer::start();
    sigkill_takeover(&Dir::with_redis(server.url()), "redis");
}

/// Two processes start at once for one group, 200 times; each prints one
/// event and exits. If both held the group at once they would start from
/// the same committed position and print the same event.
fn race(dir: &Dir, store: &str, rounds: u64) {
    let args = [
        "subscribe",
        "--topic",
        "race",
        "--group",
        "g",
        "--exclusive",
        "--from",
        "beginning",
        "--count",
        "1",
    ];
    let begun = Instant::now();
    for round in 0..rounds {
        publish_range(dir, "race", 2 * round, 2 * round + 2);
        let (a, b) = (dir.spawn(&args), dir.spawn(&args));
        let (ea, eb) = (ns(&[a.line()]), ns(&[b.line()]));
        let got: BTreeSet<u64> = ea.iter().chain(&eb).copied().collect();
        assert_eq!(
            got,
            BTreeSet::from([2 * round, 2 * round + 1]),
            "{store}, round {round}: both delivered {ea:?} / {eb:?}"
        );
        for mut p in [a, b] {
            p.expect_exit(0);
        }
    }
    eprintln!("{store}: {rounds} rounds in {:.1} s", begun.elapsed().as_secs_f64());
}

#[test]
fn two_processes_racing_for_a_group_never_both_deliver_on_the_file_store() {
    race(&Dir::new(), "file", 200);
}

#[test]
fn two_processes_racing_for_a_group_never_both_deliver_on_redis() {
    let server = RedisServer::start();
    race(&Dir::with_redis(server.url()), "redis", 200);
}

#[test]
fn the_lease_ttl_must_be_a_positive_duration() {
    let dir = Dir::new();
    for bad in ["0s", "5", "soon"] {
        let stderr = dir
            .command(&[
                "subscribe",
                "--topic",
                "a",
                "--group",
                "g",
                "--exclusive",
                "--lease-ttl",
                bad,
            ])
            .fails_with(2);
        assert!(stderr.contains("--lease-ttl"), "{stderr}");
    }
}

#[test]
fn ctrl_c_ends_the_wait_for_a_held_group() {
    let dir = Dir::new();
    let holder = dir.spawn(&["subscribe", "--topic", "w", "--group", "g", "--exclusive"]);
    holder.wait_listening();
    let mut waiting = dir.spawn(&["subscribe", "--topic", "w", "--group", "g", "--exclusive"]);
    waiting.wait_stderr("Waiting for group g");
    waiting.signal(libc::SIGINT);
    waiting.expect_exit(0);
    drop(holder);
}

/// An exclusive consumer of the old `--exclusive` (a durable consumer with
/// committed positions) is continued by the exclusive group of its name:
/// it prints what came after, nothing before; `seed groups` shows the mode.
fn old_positions_are_continued(dir: &Dir, store: &str) {
    publish_range(dir, "legacy", 0, 10);
    {
        let bus = bus::EventBus::new(dir.store());
        let name = seed_event::ConsumerName::new("g").unwrap();
        let pattern = seed_event::TopicPattern::new("legacy").unwrap();
        let mut config = bus::SubscribeConfig::new(pattern, bus::StartAt::Beginning).consumer(name);
        config.max_events = Some(6);
        let old = bus.subscribe_with(config, |_| Ok(())).unwrap();
        assert!(old.wait_timeout(util::DEADLINE), "{store}: the old consumer handled 6 events");
        old.unsubscribe().unwrap();
    }
    let args = ["subscribe", "--topic", "legacy", "--group", "g", "--exclusive", "--count", "4"];
    let mut sub = dir.spawn(&args);
    assert_eq!(ns(&sub.lines(4)), vec![6, 7, 8, 9], "{store}: after the old positions");
    sub.expect_exit(0);
    let groups: serde_json::Value =
        serde_json::from_str(&dir.stdout(&["groups", "--json"])).unwrap();
    assert_eq!(groups[0]["exclusive"], true, "{store}: {groups}");
    assert_eq!(groups[0]["waiting"], 0, "{store}: {groups}");
    let table = dir.stdout(&["groups"]);
    assert!(table.contains("MODE") && table.contains("exclusive"), "{store}: {table}");
    // Joined in the other mode: refused, naming both.
    let err = dir.command(&["subscribe", "--topic", "legacy", "--group", "g"]).fails_with(2);
    assert!(err.contains("exclusive") && err.contains("shared"), "{store}: {err}");
}

#[test]
fn old_exclusive_positions_are_continued_on_the_file_store() {
    old_positions_are_continued(&Dir::new(), "file");
}

#[test]
fn old_exclusive_positions_are_continued_on_redis() {
    let server = RedisServer::start();
    old_positions_are_continued(&Dir::with_redis(server.url()), "redis");
}

/// Two exclusive members of one group, one on each side: only the active one
/// prints, the standby exits 0 at its --timeout without printing.
#[test]
fn a_standby_prints_nothing_and_exits_0_at_its_timeout() {
    let dir = Dir::new();
    let active = dir.spawn(&["subscribe", "--topic", "s", "--group", "g", "--exclusive"]);
    active.wait_listening();
    let args = ["subscribe", "--topic", "s", "--group", "g", "--exclusive", "--timeout", "1s"];
    let mut standby = dir.spawn(&args);
    standby.wait_stderr("Waiting for group g");
    dir.publish("s", r#"{"n": 1}"#);
    assert_eq!(ns(&active.lines(1)), vec![1]);
    standby.expect_exit(0);
    assert!(standby.rest().is_empty(), "the standby printed");
    let groups: serde_json::Value =
        serde_json::from_str(&dir.stdout(&["groups", "--json"])).unwrap();
    let member = groups[0]["members"][0]["id"].clone();
    assert_eq!(groups[0]["active"], member, "{groups}");
}
