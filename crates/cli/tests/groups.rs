//! Exclusive `--group --exclusive` consumers across processes, on the file store and on
//! a private redis-server: a holder killed with SIGKILL is taken over by a
//! waiting subscriber and by a restarted one, with nothing lost and at most
//! the event in flight printed twice; and two processes racing for one group
//! never both deliver.
//!
//! Takeover times are printed (`--nocapture` shows them), never asserted.

mod util;

use std::collections::BTreeSet;
use std::time::Instant;

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

fn sigkill_takeover(dir: &Dir, store: &str) {
    const EVENTS: u64 = 3000;
    let group =
        ["subscribe", "--topic", "jobs", "--group", "g", "--exclusive", "--from", "beginning"];
    publish_range(dir, "jobs", 0, EVENTS);
    let first = dir.spawn(&group);
    first.wait_listening();
    let waiter = dir.spawn(&group);
    waiter.wait_stderr("Waiting for group g");
    let seen = first.lines(100);
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
    let c_first = third.line();
    let restarted = killed.elapsed();
    publish_range(dir, "jobs", EVENTS, EVENTS + 10);
    let mut c = ns(&[c_first]);
    while c.last() != Some(&(EVENTS + 9)) {
        c.extend(ns(&[third.line()]));
    }
    eprintln!(
        "{store}: SIGKILL to first event of the waiting subscriber {:.1} ms, of a restarted one {:.1} ms",
        waited.as_secs_f64() * 1e3,
        restarted.as_secs_f64() * 1e3
    );
    let a_set: BTreeSet<u64> = a.iter().copied().collect();
    let ab_set: BTreeSet<u64> = a.iter().chain(&b).copied().collect();
    assert!(repeated(&a_set, &b) <= 1, "{store}: the waiter printed again {:?}", b);
    assert!(repeated(&ab_set, &c) <= 1, "{store}: the restart printed again {:?}", &c[..5]);
    // In order within each process, and nothing lost across the three.
    for run in [&a, &b, &c] {
        assert!(run.windows(2).all(|w| w[0] < w[1]), "{store}: out of order or twice");
    }
    let all: BTreeSet<u64> = a.iter().chain(&b).chain(&c).copied().collect();
    assert_eq!(all, (0..EVENTS + 10).collect::<BTreeSet<u64>>(), "{store}: events lost");
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
