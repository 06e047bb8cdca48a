//! Black-box tests of the `seed` binary on the file store: every command of the table.

mod util;

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{Dir, DEADLINE};

const BASE: &str = "2026-04-16T12:00:00";

/// The n-th second after `BASE`, as an RFC 3339 time.
fn at(second: u32) -> String {
    format!("{BASE}Z").replace("12:00:00", &format!("12:00:{second:02}"))
}

/// Publishes `{"n": n}` to `topic` from source `s`, timestamped `n` seconds after `BASE`.
fn publish_at(dir: &Dir, topic: &str, n: u32) {
    let (payload, time) = (format!(r#"{{"n": {n}}}"#), at(n));
    dir.stdout(&[
        "publish",
        "--topic",
        topic,
        "--source",
        "s",
        "--payload",
        &payload,
        "--timestamp",
        &time,
    ]);
}

fn ns(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["payload"]["n"].as_u64().expect("payload.n")).collect()
}

fn topics_of(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["topic"].as_str().unwrap_or_default().to_string()).collect()
}

#[test]
fn publish_then_history_in_the_original_formats() {
    let dir = Dir::new();
    let out = dir.stdout(&[
        "publish",
        "--topic",
        "task.completed",
        "--source",
        "fenrir",
        "--payload",
        r#"{"task_id": "abc", "ü": [1, 2]}"#,
    ]);
    let id = out
        .strip_prefix("Published event ")
        .and_then(|r| r.strip_suffix(" to topic task.completed\n"));
    let id = id.unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    let text = dir.stdout(&["history"]);
    let line = text.trim_end();
    assert!(line.starts_with('['), "{text}");
    let (stamp, rest) = line[1..].split_once("] ").unwrap();
    seed_event::Timestamp::parse(stamp).unwrap();
    assert_eq!(rest, r#"task.completed from fenrir: {"task_id": "abc", "\u00fc": [1, 2]}"#);

    let events = dir.history(&[]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], id);
    assert_eq!(events[0]["payload"], json!({"task_id": "abc", "ü": [1, 2]}));
    assert_eq!(events[0]["correlation_id"], Value::Null);
    let keys: Vec<&str> = events[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["id", "topic", "payload", "source", "timestamp", "correlation_id", "metadata"]
    );
    assert_eq!(dir.stdout(&["history", "--json", "--topic", "nothing.here"]), "[]\n");
}

#[test]
fn publish_options_and_history_filters() {
    let dir = Dir::new();
    let publish = |topic: &str, source: &str, n: u32, extra: &[&str]| {
        let payload = format!(r#"{{"n": {n}}}"#);
        let time = at(n);
        let mut args = vec![
            "publish",
            "--topic",
            topic,
            "--source",
            source,
            "--payload",
            &payload,
            "--timestamp",
            &time,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = dir.stdout(&args);
        let event: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!(event["payload"]["n"], n);
        event
    };
    let e = publish(
        "task.a",
        "fenrir",
        0,
        &["--correlation-id", "req-1", "--metadata", r#"{"k": "v"}"#],
    );
    assert_eq!((e["correlation_id"].as_str(), &e["metadata"]), (Some("req-1"), &json!({"k": "v"})));
    publish("task.b", "odin", 1, &[]);
    publish("task.a.deep", "fenrir", 2, &[]);
    publish("other", "fenrir", 3, &[]);
    publish("task.a", "odin", 4, &[]);

    assert_eq!(ns(&dir.history(&[])), vec![0, 1, 2, 3, 4], "by time across topics");
    assert_eq!(ns(&dir.history(&["--topic", "task.a"])), vec![0, 4]);
    assert_eq!(ns(&dir.history(&["--topic", "task.*"])), vec![0, 1, 4]);
    assert_eq!(ns(&dir.history(&["--topic", "task.>"])), vec![0, 1, 2, 4]);
    assert_eq!(ns(&dir.history(&["--topic", "task.b", "--topic", "other"])), vec![1, 3]);
    assert_eq!(ns(&dir.history(&["--source", "odin"])), vec![1, 4]);
    assert_eq!(ns(&dir.history(&["--correlation-id", "req-1"])), vec![0]);
    assert_eq!(
        ns(&dir.history(&["--since", &at(1), "--until", &at(3)])),
        vec![1, 2],
        "since inclusive, until exclusive"
    );
    assert_eq!(ns(&dir.history(&["--limit", "2"])), vec![0, 1]);
    assert_eq!(ns(&dir.history(&["--last", "2"])), vec![3, 4]);
    assert_eq!(
        ns(&dir.history(&["--since", "1h"])),
        Vec::<u64>::new(),
        "all are older than an hour"
    );
    assert_eq!(dir.stdout(&["history", "--last", "1"]).lines().count(), 1);

    // The hidden --id makes a publish idempotent.
    let id = "0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21";
    for _ in 0..2 {
        dir.stdout(&["publish", "--topic", "idem", "--source", "s", "--payload", "{}", "--id", id]);
    }
    let stored = dir.history(&["--topic", "idem"]);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], id);
}

#[test]
fn every_sync_policy_stores_what_it_acknowledges() {
    let dir = Dir::new();
    for (n, policy) in ["never", "batch", "always"].iter().enumerate() {
        let payload = format!(r#"{{"n": {n}}}"#);
        dir.stdout(&[
            "--sync",
            policy,
            "publish",
            "--topic",
            "durable",
            "--source",
            "s",
            "--payload",
            &payload,
        ]);
        let lines = format!("{{\"n\": {}}}\n{{\"n\": {}}}\n", 10 + n, 20 + n);
        let mut publish = dir.command(&[
            "--sync",
            policy,
            "publish",
            "--topic",
            "durable",
            "--source",
            "s",
            "--payload",
            "-",
        ]);
        let output = publish.output_with(lines.as_bytes());
        publish.expect_status(&output, 0);
    }
    assert_eq!(ns(&dir.history(&["--topic", "durable"])), vec![0, 10, 20, 1, 11, 21, 2, 12, 22]);
}

#[test]
fn bad_inputs_exit_2_and_write_nothing() {
    let dir = Dir::new();
    let cases: &[(&[&str], &str)] = &[
        (&["publish", "--topic", "a..b", "--source", "s", "--payload", "{}"], "empty token"),
        (&["publish", "--topic", "a b", "--source", "s", "--payload", "{}"], "whitespace"),
        (&["publish", "--topic", "task.*", "--source", "s", "--payload", "{}"], "reserved"),
        (&["publish", "--topic", "a", "--source", "s", "--payload", "{nope"], "not valid JSON"),
        (
            &["publish", "--topic", "a", "--source", "s", "--payload", "[1, 2]"],
            "expected a JSON object, got an array",
        ),
        (&["publish", "--topic", "a", "--source", "s", "--payload", "\"x\""], "got a string"),
        (
            &["publish", "--topic", "a", "--source", "s", "--payload", "{}", "--metadata", "3"],
            "invalid metadata",
        ),
        (&["publish", "--topic", "a", "--source", "", "--payload", "{}"], "invalid source"),
        (&["publish", "--topic", "a", "--source", "s"], "--payload"),
        (&["history", "--since", "yesterday"], "RFC 3339"),
        (&["history", "--until", "2026-13-01T00:00:00Z"], "RFC 3339"),
        (&["history", "--since", "1h", "--until", "2h"], "before since"),
        (&["history", "--limit", "1", "--last", "1"], "cannot be used with"),
        (&["history", "--topic", "a.>.b"], "topic pattern"),
        (&["subscribe", "--topic", "a", "--from", "old"], "expected new, beginning"),
        (&["subscribe", "--topic", "a", "--count", "0"], "--count"),
        (
            &["subscribe", "--topic", "a", "--timeout", "soon"],
            "invalid --timeout \"soon\": expected",
        ),
        (&["subscribe", "--topic", "a", "--group", "has space"], "group name"),
        (&["replay", "--topic", "a", "--since", "1h", "--speed", "-1"], "speed"),
        (&["replay", "--topic", "a"], "--since"),
        (&["stats", "--topic", "a.*"], "reserved"),
        (&["clear", "--before", "later", "--confirm"], "RFC 3339"),
        (&["completions", "tcsh"], "tcsh"),
        (&["frobnicate"], "unrecognized subcommand"),
        (&["--sync", "sometimes", "topics"], "not one of never, batch, always"),
    ];
    for (args, needle) in cases {
        let stderr = dir.command(args).fails_with(2);
        assert!(stderr.contains(needle), "seed {args:?}: expected {needle:?} in {stderr:?}");
    }
    // Value errors are one line.
    let stderr = dir.command(cases[3].0).fails_with(2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("seed: "), "{stderr}");
    assert!(dir.history(&[]).is_empty());
    assert_eq!(dir.stdout(&["topics"]), "");
}

#[test]
fn publish_from_stdin_in_batches_and_stop_at_a_bad_line() {
    let dir = Dir::new();
    let mut cmd = dir.command(&["publish", "--topic", "lines", "--source", "s", "--payload", "-"]);
    let input: String = (0..2500).map(|n| format!("{{\"n\": {n}}}\n")).collect::<String>() + "\n";
    let output = cmd.output_with(input.as_bytes());
    cmd.expect_status(&output, 0);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Published 2500 events to topic lines\n");
    assert_eq!(ns(&dir.history(&["--topic", "lines"])), (0..2500).collect::<Vec<_>>());

    let mut cmd = dir.command(&["publish", "--topic", "bad", "--source", "s", "--payload", "-"]);
    let output = cmd.output_with(b"{\"n\": 0}\n{\"n\": 1}\n[2]\n{\"n\": 3}\n");
    cmd.expect_status(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3 of standard input") && stderr.contains("got an array"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(ns(&dir.history(&["--topic", "bad"])), vec![0, 1], "before it all, after it none");

    let mut cmd = dir.command(&["publish", "--topic", "utf", "--source", "s", "--payload", "-"]);
    let output = cmd.output_with(b"{\"n\": 0}\n{\"n\": \"\xff\"}\n");
    cmd.expect_status(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("line 2 of standard input: not valid UTF-8"));
    assert_eq!(ns(&dir.history(&["--topic", "utf"])), vec![0]);

    let mut cmd = dir.command(&["publish", "--topic", "one", "--source", "s", "--payload", "-"]);
    let output = cmd.output_with(b"{\"n\": 0}\n");
    cmd.expect_status(&output, 0);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Published 1 event to topic one\n");

    let mut cmd =
        dir.command(&["publish", "--topic", "json", "--source", "s", "--payload", "-", "--json"]);
    let output = cmd.output_with(b"{\"n\": 7}");
    cmd.expect_status(&output, 0);
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["payload"]["n"], 7, "a last line without a newline counts");
}

#[test]
fn publish_from_a_slow_producer_holds_no_line_back() {
    let dir = Dir::new();
    let mut publisher =
        dir.spawn(&["publish", "--topic", "slow", "--source", "s", "--payload", "-"]);
    let mut stdin = publisher.stdin.take().unwrap();
    for n in 0..3u64 {
        writeln!(stdin, "{{\"n\": {n}}}").unwrap();
        stdin.flush().unwrap();
        // Published while stdin is still open.
        let deadline = Instant::now() + DEADLINE;
        while ns(&dir.history(&["--topic", "slow"])).len() < n as usize + 1 {
            assert!(Instant::now() < deadline, "line {n} was held back");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(stdin);
    assert_eq!(publisher.line(), "Published 3 events to topic slow");
    publisher.expect_exit(0);
}

#[test]
fn two_subscribers_on_patterns_get_what_a_third_process_publishes() {
    let dir = Dir::new();
    let mut all = dir.spawn(&["subscribe", "--topic", "task.>", "--count", "3"]);
    let mut one = dir.spawn(&["subscribe", "--topic", "task.*", "--count", "2"]);
    all.wait_listening();
    one.wait_listening();
    for topic in ["task.a", "task.b.c", "other.x", "task.d"] {
        dir.publish(topic, r#"{"n": 1}"#);
    }
    // Followers interleave topics: only the set each one gets is promised.
    let sorted = |mut v: Vec<String>| {
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(topics_of(&all.events(3))), ["task.a", "task.b.c", "task.d"]);
    assert_eq!(sorted(topics_of(&one.events(2))), ["task.a", "task.d"]);
    all.expect_exit(0);
    one.expect_exit(0);
}

#[test]
fn subscribe_then_publish_at_once_misses_nothing() {
    let dir = Dir::new();
    dir.publish("race", r#"{"n": 0}"#);
    for trial in 1..=50u64 {
        let mut sub = dir.spawn(&["subscribe", "--topic", "race", "--count", "1"]);
        sub.wait_listening();
        let id = dir.publish("race", &format!(r#"{{"n": {trial}}}"#));
        let event = &sub.events(1)[0];
        assert_eq!(
            (event["id"].as_str(), event["payload"]["n"].as_u64()),
            (Some(id.as_str()), Some(trial))
        );
        sub.expect_exit(0);
    }
}

#[test]
fn subscribe_from_the_beginning_a_time_or_a_duration_ago_with_a_timeout() {
    let dir = Dir::new();
    for n in 0..3u32 {
        publish_at(&dir, "h", n);
    }
    dir.publish("h", r#"{"n": 3}"#);
    let mut sub = dir.spawn(&["subscribe", "--topic", "h", "--from", "beginning", "--count", "4"]);
    assert_eq!(ns(&sub.events(4)), vec![0, 1, 2, 3]);
    sub.expect_exit(0);
    let mut sub = dir.spawn(&["subscribe", "--topic", "h", "--from", &at(1), "--count", "3"]);
    assert_eq!(ns(&sub.events(3)), vec![1, 2, 3]);
    sub.expect_exit(0);
    let mut sub = dir.spawn(&["subscribe", "--topic", "h", "--from", "15m", "--timeout", "300ms"]);
    assert_eq!(ns(&sub.events(1)), vec![3]);
    sub.expect_exit(0);
    assert!(sub.lines_within(Duration::ZERO).is_empty());
}

#[test]
fn a_durable_group_killed_with_sigkill_resumes_after_its_last_commit() {
    let dir = Dir::new();
    let mut first = dir.spawn(&[
        "subscribe",
        "--topic",
        "jobs.>",
        "--group",
        "workers",
        "--exclusive",
        "--from",
        "beginning",
    ]);
    first.wait_listening();
    for n in 1..=5 {
        dir.publish("jobs.a", &format!(r#"{{"n": {n}}}"#));
    }
    assert_eq!(ns(&first.events(5)), vec![1, 2, 3, 4, 5]);
    first.kill();
    for n in 6..=8 {
        dir.publish(if n == 7 { "jobs.new" } else { "jobs.a" }, &format!(r#"{{"n": {n}}}"#));
    }
    // The kernel released the killed process's lock on the group: no wait.
    let mut second = dir.spawn(&[
        "subscribe",
        "--topic",
        "jobs.>",
        "--group",
        "workers",
        "--exclusive",
        "--from",
        "new",
    ]);
    second.wait_listening();
    dir.publish("jobs.a", r#"{"n": 9}"#);
    let mut seen = Vec::new();
    while seen.last() != Some(&9) {
        seen.extend(ns(&second.events(1)));
    }
    // At least once: maybe what was printed and not acked when killed
    // (the events in flight) again, then every later event, none missing.
    let redelivered: BTreeSet<u64> = seen.iter().copied().filter(|n| *n <= 5).collect();
    assert!(
        seen.iter().filter(|n| **n <= 5).count() == redelivered.len(),
        "each in-flight event comes again once: {seen:?}"
    );
    let later: BTreeSet<u64> = seen.iter().copied().filter(|n| *n > 5).collect();
    assert_eq!(later, BTreeSet::from([6, 7, 8, 9]), "{seen:?}");
    assert_eq!(seen.len(), redelivered.len() + 4, "no duplicates after the restart: {seen:?}");
    second.signal(libc::SIGINT);
    second.expect_exit(0);
    let groups: Value = serde_json::from_str(&dir.stdout(&["groups", "--json"])).unwrap();
    let g = &groups[0];
    assert_eq!((g["in_flight"].as_u64(), g["waiting"].as_u64()), (Some(0), Some(0)), "{groups}");
    assert_eq!(g["exclusive"], Value::Bool(true), "{groups}");
}

#[test]
fn ctrl_c_commits_what_was_printed_and_lets_the_group_go() {
    let dir = Dir::new();
    let mut sub = dir.spawn(&["subscribe", "--topic", "cc", "--group", "g", "--exclusive"]);
    sub.wait_listening();
    for n in 0..3 {
        dir.publish("cc", &format!(r#"{{"n": {n}}}"#));
    }
    assert_eq!(ns(&sub.events(3)), vec![0, 1, 2]);
    sub.signal(libc::SIGINT);
    sub.expect_exit(0);
    dir.publish("cc", r#"{"n": 3}"#);
    // Released: the next one starts at once, right after what was printed.
    let mut next =
        dir.spawn(&["subscribe", "--topic", "cc", "--group", "g", "--exclusive", "--count", "1"]);
    assert_eq!(ns(&next.events(1)), vec![3]);
    next.expect_exit(0);
    // While a group is held, another subscriber waits, and stops at its timeout
    // with exit 0, as any subscriber does.
    let holder = dir.spawn(&["subscribe", "--topic", "cc", "--group", "g", "--exclusive"]);
    holder.wait_listening();
    let mut waiting = dir.spawn(&[
        "subscribe",
        "--topic",
        "cc",
        "--group",
        "g",
        "--exclusive",
        "--timeout",
        "500ms",
    ]);
    waiting.wait_stderr("Waiting for group g");
    waiting.wait_stderr("Group g is still held by another subscriber; --timeout reached");
    waiting.expect_exit(0);
    drop(holder);
}

#[test]
fn clear_while_subscribed_then_new_events_still_arrive() {
    let dir = Dir::new();
    let mut sub = dir.spawn(&["subscribe", "--topic", "c.>"]);
    sub.wait_listening();
    dir.publish("c.a", r#"{"n": 1}"#);
    dir.publish("c.b", r#"{"n": 2}"#);
    let mut first = ns(&sub.events(2));
    first.sort_unstable();
    assert_eq!(first, vec![1, 2]);
    assert_eq!(
        dir.stdout(&["clear", "--topic", "c.a", "--confirm"]),
        "Cleared 1 event from topic 'c.a'.\n"
    );
    dir.publish("c.a", r#"{"n": 3}"#);
    assert_eq!(ns(&sub.events(1)), vec![3]);
    assert_eq!(dir.stdout(&["clear", "--confirm"]), "Cleared 2 total events.\n");
    dir.publish("c.b", r#"{"n": 4}"#);
    dir.publish("c.new", r#"{"n": 5}"#);
    // Two topics: their relative order is not promised (followers interleave).
    let mut last = ns(&sub.events(2));
    last.sort_unstable();
    assert_eq!(last, vec![4, 5]);
    sub.signal(libc::SIGTERM);
    sub.expect_exit(0);
}

#[test]
fn clear_asks_refuses_without_a_terminal_and_clears_before_a_time() {
    let dir = Dir::new();
    for n in 0..4u32 {
        publish_at(&dir, "k", n);
    }
    let stderr = dir.command(&["clear", "--topic", "k"]).fails_with(2);
    assert!(stderr.contains("--confirm") && stderr.contains("not a terminal"), "{stderr}");
    assert_eq!(dir.history(&[]).len(), 4, "nothing removed");
    let out = dir.stdout(&["clear", "--topic", "k", "--before", &at(2), "--confirm"]);
    assert_eq!(out, "Cleared 2 events older than 2026-04-16T12:00:02+00:00 from topic 'k'.\n");
    assert_eq!(ns(&dir.history(&[])), vec![2, 3]);
    assert_eq!(
        dir.stdout(&["clear", "--topic", "none", "--confirm"]),
        "Cleared 0 events from topic 'none'.\n"
    );
    publish_at(&dir, "other", 4);
    assert_eq!(
        dir.stdout(&["clear", "--topic", "k", "--confirm"]),
        "Cleared 2 events from topic 'k'.\n"
    );
    assert_eq!(dir.stdout(&["clear", "--confirm"]), "Cleared 1 total event.\n");
}

#[test]
fn replay_paces_by_speed_and_counts() {
    let dir = Dir::new();
    for n in 0..5u32 {
        publish_at(&dir, "r.a", n);
    }
    dir.publish("r.b", r#"{"n": 99}"#);
    let started = Instant::now();
    let out = dir.stdout(&["replay", "--topic", "r.a", "--since", &at(0), "--speed", "10"]);
    // Four gaps of 1 s at speed 10: at least 0.4 s (never asserting an upper bound).
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    let events: Vec<Value> = lines[..5]
        .iter()
        .map(|l| {
            serde_json::from_str(l.strip_prefix("[REPLAY] ").expect("[REPLAY] prefix")).unwrap()
        })
        .collect();
    assert_eq!(ns(&events), vec![0, 1, 2, 3, 4]);
    assert_eq!(&lines[5..], ["", "Replayed 5 events."]);

    let out = dir.stdout(&[
        "replay",
        "--topic",
        "r.>",
        "--since",
        &at(1),
        "--until",
        &at(3),
        "--speed",
        "0",
    ]);
    assert!(out.ends_with("\nReplayed 2 events.\n"), "{out}");
    let out = dir.stdout(&["replay", "--topic", "r.>", "--since", "1h", "--speed", "0"]);
    assert!(out.ends_with("\nReplayed 1 event.\n"), "{out}");
}

#[test]
fn topics_and_stats() {
    let dir = Dir::new();
    assert_eq!(dir.stdout(&["topics"]), "");
    assert_eq!(dir.stdout(&["topics", "--json"]), "[]\n");
    dir.publish("b.two", r#"{"n": 1}"#);
    dir.publish("a.one", r#"{"n": 2}"#);
    dir.publish("a.one", r#"{"n": 3}"#);
    assert_eq!(dir.stdout(&["topics"]), "a.one\nb.two\n");
    assert_eq!(dir.stdout(&["topics", "--json"]), "[\"a.one\",\"b.two\"]\n");

    // A durable consumer of the library (or of `--exclusive` before groups
    // had the mode) past the first event.
    let consumer = seed_event::ConsumerName::new("g").unwrap();
    let topic = seed_event::Topic::new("a.one").unwrap();
    dir.store().commit_consumer(&consumer, &topic, seed_event::Cursor::new(1, 0)).unwrap();
    let text = dir.stdout(&["stats"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("TOPIC") && lines[0].contains("EVENTS"), "{text}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..2], ["a.one", "2"], "{text}");
    assert!(text.contains("CONSUMER"), "{text}");
    let consumer_row: Vec<&str> = lines.last().unwrap().split_whitespace().collect();
    assert_eq!(consumer_row, ["g", "a.one", "1-0", "1"], "{text}");

    let stats: Value =
        serde_json::from_str(&dir.stdout(&["stats", "--topic", "b.two", "--json"])).unwrap();
    assert_eq!(stats["topics"].as_array().unwrap().len(), 1);
    assert_eq!(stats["topics"][0]["events"], 1);
    assert!(stats["topics"][0]["bytes"].as_u64().unwrap() > 0);
    assert!(stats["consumers"].as_array().unwrap().is_empty());
}

#[test]
fn completions_and_help_with_examples() {
    let dir = Dir::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = dir.stdout(&["completions", shell]);
        assert!(script.contains("subscribe") && script.contains("seed"), "{shell}");
    }
    for command in [
        "publish",
        "subscribe",
        "history",
        "replay",
        "topics",
        "stats",
        "clear",
        "completions",
        "import",
    ] {
        let help = dir.stdout(&[command, "--help"]);
        assert!(help.contains("Example") && help.contains("seed "), "{command}: {help}");
    }
    assert!(dir.stdout(&["--help"]).contains("Examples:"));
}

#[test]
fn an_unreachable_redis_fails_clearly_without_falling_back() {
    let dir = Dir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let stderr = dir
        .command(&["--redis", &url, "publish", "--topic", "a", "--source", "s", "--payload", "{}"])
        .fails_with(1);
    assert!(stderr.contains(&format!("redis://:***@127.0.0.1:{port}/0")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("events").exists(), "nothing was written to files");
}

#[test]
fn import_reads_the_original_layout() {
    let dir = Dir::new();
    let legacy = dir.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    let line = |n: u32| {
        format!(
            r#"{{"id": "{}", "topic": "task.completed", "payload": {{"n": {n}}}, "source": "fenrir", "timestamp": "2026-04-16T12:00:0{n}.123456+00:00", "correlation_id": null, "metadata": {{}}}}"#,
            uuid::Uuid::new_v4()
        )
    };
    std::fs::write(legacy.join("task.completed.jsonl"), format!("{}\n{}\n", line(0), line(1)))
        .unwrap();
    let legacy_arg = legacy.to_str().unwrap();
    let out = dir.stdout(&["import", legacy_arg]);
    assert!(out.starts_with("Imported 2 events from 1 file into "), "{out}");
    assert_eq!(ns(&dir.history(&[])), vec![0, 1]);
    // Again: nothing twice. A bad line: listed, exit 1, the rest imported.
    std::fs::write(legacy.join("other.jsonl"), "not json\n").unwrap();
    let mut cmd = dir.command(&["import", legacy_arg]);
    let output = cmd.output();
    cmd.expect_status(&output, 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("other.jsonl:1"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("(2 already present)"));
    assert_eq!(dir.history(&[]).len(), 2);
    let stderr =
        dir.command(&["--redis", "redis://127.0.0.1:1", "import", legacy_arg]).fails_with(2);
    assert!(stderr.contains("file store"), "{stderr}");
}

#[test]
fn models_are_mounted() {
    let dir = Dir::new();
    let list = dir.stdout(&["models", "list"]);
    assert!(list.contains("gemma-4-31b-it"), "{list}");
    let picked = dir.stdout(&["models", "pick", "--needs", "vision,tools", "--json"]);
    let picked: Value = serde_json::from_str(&picked).unwrap();
    assert!(picked["model"].as_str().is_some_and(|m| m.contains("gemma-4")), "{picked}");
    let stderr = dir.command(&["models", "show", "no-such-model"]).fails_with(2);
    assert!(stderr.starts_with("seed: ") && stderr.contains("no-such-model"), "{stderr}");
    assert!(dir.stdout(&["models", "--help"]).contains("Examples:"));
}

/// The original skipped a line that reached the file in two writes; here the
/// subscriber waits for its end and delivers it once.
#[test]
fn a_line_written_in_two_parts_is_delivered_once() {
    let dir = Dir::new();
    dir.publish("split", r#"{"n": 1}"#);
    let log = dir.path().join("events").join("split.jsonl");
    let first = std::fs::read_to_string(&log).unwrap();
    assert!(first.starts_with("{\"seq\":1,"), "the file store's line format changed: {first}");
    let mut sub = dir.spawn(&["subscribe", "--topic", "split", "--count", "2"]);
    sub.wait_listening();
    let second =
        first.replacen("{\"seq\":1,", "{\"seq\":2,", 1).replace(r#""n":1"#, r#""n":2"#).replace(
            &first[first.find("\"id\":\"").unwrap() + 6..][..36],
            &uuid::Uuid::now_v7().to_string(),
        );
    let (head, tail) = second.split_at(second.len() / 2);
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(head.as_bytes()).unwrap();
    file.flush().unwrap();
    // A reader that looks now must wait for the rest of the line.
    std::thread::sleep(Duration::from_millis(200));
    file.write_all(tail.as_bytes()).unwrap();
    dir.publish("split", r#"{"n": 3}"#);
    assert_eq!(ns(&sub.events(2)), vec![2, 3]);
    sub.expect_exit(0);
    assert_eq!(ns(&dir.history(&["--topic", "split"])), vec![1, 2, 3]);
}

/// Two processes started at once with one group: one delivers, the other
/// waits, and takes over when the first stops; no event is printed by both.
#[test]
fn one_group_two_processes_one_deliverer() {
    let dir = Dir::new();
    let args =
        ["subscribe", "--topic", "work", "--group", "pool", "--exclusive", "--from", "beginning"];
    let a = dir.spawn(&args);
    let b = dir.spawn(&args);
    let deadline = Instant::now() + DEADLINE;
    let (mut holder, waiter) = loop {
        if a.try_stderr("Listening on", Duration::from_millis(20)).is_some() {
            break (a, b);
        }
        if b.try_stderr("Listening on", Duration::from_millis(20)).is_some() {
            break (b, a);
        }
        assert!(Instant::now() < deadline, "neither subscriber started listening");
    };
    for n in 1..=5 {
        dir.publish("work", &format!(r#"{{"n": {n}}}"#));
    }
    assert_eq!(ns(&holder.events(5)), vec![1, 2, 3, 4, 5]);
    assert!(waiter.lines_within(Duration::from_millis(200)).is_empty(), "the waiter delivered too");
    holder.signal(libc::SIGINT);
    holder.expect_exit(0);
    waiter.wait_listening();
    for n in 6..=8 {
        dir.publish("work", &format!(r#"{{"n": {n}}}"#));
    }
    assert_eq!(ns(&waiter.events(3)), vec![6, 7, 8], "it resumes after the holder's last commit");
}

#[test]
fn the_events_dir_option_goes_anywhere_on_the_line() {
    let dir = Dir::new();
    let other = dir.path().join("other");
    let other = other.to_str().unwrap();
    dir.stdout(&[
        "--events-dir",
        other,
        "publish",
        "--topic",
        "x",
        "--source",
        "s",
        "--payload",
        "{}",
    ]);
    assert_eq!(dir.stdout(&["topics", "--events-dir", other]), "x\n");
    assert_eq!(dir.stdout(&["topics"]), "", "SEED_EVENTS_DIR is a different directory");
    let mut cmd = dir.command(&["topics"]);
    cmd.cmd.env("SEED_REDIS_URL", "");
    assert_eq!(cmd.stdout(), "", "an empty SEED_REDIS_URL means the file store");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let stderr = dir.command(&["--events-dir", file.to_str().unwrap(), "topics"]).fails_with(1);
    assert!(stderr.contains("a-file") && stderr.lines().count() == 1, "{stderr}");
}

/// Four `publish --payload -` processes race on one topic: nothing lost,
/// duplicated or reordered within a process.
#[test]
fn racing_stdin_publishers_lose_nothing() {
    let dir = Dir::new();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let source = format!("p{p}");
            let mut publisher = dir.spawn(&[
                "publish",
                "--topic",
                "race.many",
                "--source",
                &source,
                "--payload",
                "-",
            ]);
            let mut stdin = publisher.stdin.take().unwrap();
            let input: String = (0..500).map(|n| format!("{{\"n\": {n}}}\n")).collect();
            let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
            (publisher, writer)
        })
        .collect();
    for (mut publisher, writer) in publishers {
        writer.join().unwrap().unwrap();
        assert_eq!(publisher.line(), "Published 500 events to topic race.many");
        publisher.expect_exit(0);
    }
    let events = dir.history(&["--topic", "race.many"]);
    assert_eq!(events.len(), 2000);
    for p in 0..4 {
        let source = format!("p{p}");
        let mine: Vec<Value> =
            events.iter().filter(|e| e["source"] == source.as_str()).cloned().collect();
        assert_eq!(ns(&mine), (0..500).collect::<Vec<_>>(), "{source}");
    }
}

/// A stdin publisher killed mid-stream leaves a clean prefix of its input.
#[test]
fn a_killed_stdin_publisher_leaves_a_clean_prefix() {
    let dir = Dir::new();
    let mut publisher =
        dir.spawn(&["publish", "--topic", "cut", "--source", "s", "--payload", "-"]);
    let mut stdin = publisher.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for n in 0..1_000_000u64 {
            if writeln!(stdin, "{{\"n\": {n}}}").is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + DEADLINE;
    while dir.history(&["--topic", "cut", "--last", "1"]).is_empty() {
        assert!(Instant::now() < deadline, "nothing was published");
        std::thread::sleep(Duration::from_millis(10));
    }
    publisher.kill();
    writer.join().unwrap();
    let got = ns(&dir.history(&["--topic", "cut"]));
    assert!(!got.is_empty());
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>(), "a prefix, in order, once each");
    dir.publish("cut", r#"{"n": -1}"#);
    assert_eq!(dir.history(&["--topic", "cut"]).len(), got.len() + 1, "the log takes new events");
}

/// Ctrl-C waits for the event being printed; when printing is stuck (nobody
/// reads stdout), a second signal ends the process at once.
#[test]
fn a_second_signal_ends_a_stuck_subscriber() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = Dir::new();
    let mut cmd = dir.command(&["publish", "--topic", "full", "--source", "s", "--payload", "-"]);
    let input: String = (0..2000).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let output = cmd.output_with(input.as_bytes());
    cmd.expect_status(&output, 0);

    let mut sub = dir.command(&["subscribe", "--topic", "full", "--from", "beginning"]);
    sub.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = sub.cmd.spawn().unwrap();
    let _unread_stdout = child.stdout.take();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Listening on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no Listening line");
    }
    // Wait until printing is stuck: the unread pipe is full.
    let fd = std::os::fd::AsRawFd::as_raw_fd(_unread_stdout.as_ref().unwrap());
    // SAFETY: fcntl and ioctl on our own pipe, with a valid out pointer.
    let capacity = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut ready: libc::c_int = 0;
        // SAFETY: as above.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut ready) };
        // Full but for less than a page: the pipe packs writes into pages.
        if ready > capacity - 4096 {
            break;
        }
        assert!(Instant::now() < deadline, "stdout never filled: {ready} of {capacity} bytes");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGINT and SIGTERM do not merge into one as two SIGINTs could.
    let pid = child.id() as i32;
    // SAFETY: signals to our own child.
    unsafe {
        libc::kill(pid, libc::SIGINT);
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "a second signal did not end the subscriber");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(130));
}

/// On a terminal, a replay that takes more than a couple of seconds shows a
/// progress bar on stderr (run under `script`, which gives it a terminal).
#[test]
fn replay_shows_progress_on_a_terminal() {
    let dir = Dir::new();
    for (n, second) in [(0u32, 0u32), (1, 30)] {
        let (payload, time) = (format!(r#"{{"n": {n}}}"#), at(second));
        dir.stdout(&[
            "publish",
            "--topic",
            "p",
            "--source",
            "s",
            "--payload",
            &payload,
            "--timestamp",
            &time,
        ]);
    }
    let replay =
        format!("{} replay --topic p --since {} --speed 12", env!("CARGO_BIN_EXE_seed"), at(0));
    let mut cmd = dir.command(&[]);
    cmd.cmd = std::process::Command::new("script");
    cmd.cmd
        .args(["-qec", &replay, "/dev/null"])
        .current_dir(dir.path())
        .env("SEED_EVENTS_DIR", dir.path().join("events"))
        .stdin(std::process::Stdio::null());
    let terminal = cmd.stdout();
    assert!(terminal.contains("] 2/2"), "no progress bar in {terminal:?}");
    assert!(terminal.contains("Replayed 2 events."), "{terminal:?}");
    // Not on a pipe.
    let mut piped = dir.command(&["replay", "--topic", "p", "--since", &at(0), "--speed", "12"]);
    let output = piped.output();
    piped.expect_status(&output, 0);
    assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// On a terminal, `clear` without `--confirm` asks, and only `y` clears.
#[test]
fn clear_asks_on_a_terminal() {
    let dir = Dir::new();
    dir.publish("k", r#"{"n": 0}"#);
    let clear = format!("{} clear --topic k", env!("CARGO_BIN_EXE_seed"));
    let run_answering = |answer: &str, status: i32| {
        let mut cmd = dir.command(&[]);
        cmd.cmd = std::process::Command::new("script");
        cmd.cmd
            .args(["-qec", &clear, "/dev/null"])
            .current_dir(dir.path())
            .env("SEED_EVENTS_DIR", dir.path().join("events"));
        let output = cmd.output_with(format!("{answer}\n").as_bytes());
        cmd.expect_status(&output, status);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // No clears nothing and exits 1.
    let out = run_answering("n", 1);
    assert!(
        out.contains("Clear all events for topic 'k'? [y/N]") && out.contains("Aborted."),
        "{out:?}"
    );
    assert_eq!(dir.history(&[]).len(), 1);
    let out = run_answering("y", 0);
    assert!(out.contains("Cleared 1 event from topic 'k'."), "{out:?}");
    assert!(dir.history(&[]).is_empty());
}

/// A bare number is neither a time nor a duration: it is rejected, not read as seconds.
#[test]
fn a_bare_number_is_not_a_time() {
    let dir = Dir::new();
    publish_at(&dir, "t", 0);
    let date = "a number needs a unit (2026s) or write a date (2026-01-01T00:00:00Z)";
    let cases: &[(&[&str], &str, &str)] = &[
        (&["history", "--since", "2026"], "--since", date),
        (&["history", "--until", "2026"], "--until", date),
        (&["subscribe", "--topic", "t", "--from", "2026", "--timeout", "1s"], "--from", date),
        (&["replay", "--topic", "t", "--since", "2026"], "--since", date),
        (&["clear", "--before", "2026", "--confirm"], "--before", date),
        (
            &["subscribe", "--topic", "t", "--timeout", "2026"],
            "--timeout",
            "a number needs a unit (2026s)",
        ),
    ];
    for (args, flag, reason) in cases {
        let stderr = dir.command(args).fails_with(2);
        assert_eq!(stderr, format!("seed: invalid {flag} \"2026\": {reason}\n"), "seed {args:?}");
    }
    assert_eq!(ns(&dir.history(&[])), vec![0], "the clear wrote nothing");
    // Units and dates still work.
    for since in ["90s", "15m", "2026-01-01T00:00:00Z"] {
        dir.stdout(&["history", "--since", since]);
    }
    assert_eq!(ns(&dir.history(&["--since", "2026-04-16T12:00:00Z"])), vec![0]);
    // A timeout too long for the clock is no deadline, not a crash.
    let mut sub = dir.spawn(&["subscribe", "--topic", "t", "--timeout", "10000000000000000000s"]);
    sub.wait_listening();
    sub.signal(libc::SIGINT);
    sub.expect_exit(0);
}

/// Every line of `text` parsed as JSON (NDJSON), failing on any that is not.
fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line {l:?}: {e}")))
        .collect()
}

fn cursors(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["cursor"].as_str().expect("cursor").to_string()).collect()
}

/// Runs `seed args…` with `input` on stdin; returns stdout and stderr of a success.
fn run_ok(dir: &Dir, args: &[&str], input: &str) -> (String, String) {
    let mut cmd = dir.command(args);
    let output = cmd.output_with(input.as_bytes());
    cmd.expect_status(&output, 0);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&output.stdout), text(&output.stderr))
}

/// The first three events of `topic` as `subscribe --output ndjson` prints them.
fn first_three(dir: &Dir, topic: &str) -> Vec<Value> {
    let args = [
        "subscribe",
        "--topic",
        topic,
        "--from",
        "beginning",
        "--count",
        "3",
        "--output",
        "ndjson",
    ];
    ndjson(&run_ok(dir, &args, "").0)
}

#[test]
fn json_and_ndjson_output_is_pure_data_on_stdout() {
    let dir = Dir::new();
    let publish = ["publish", "--topic", "f.a", "--source", "s", "--payload"];
    // publish: ndjson and its --json alias print the stored event with its cursor; json an array.
    let (out, err) =
        run_ok(&dir, &[&publish[..], &[r#"{"n": 0}"#, "--output", "ndjson"]].concat(), "");
    assert_eq!(
        (cursors(&ndjson(&out)), ns(&ndjson(&out)), err.as_str()),
        (vec!["1-0".into()], vec![0], "")
    );
    let (out, _) = run_ok(&dir, &[&publish[..], &[r#"{"n": 1}"#, "--json"]].concat(), "");
    assert_eq!(cursors(&ndjson(&out)), ["2-0"]);
    let (out, _) = run_ok(&dir, &[&publish[..], &[r#"{"n": 2}"#, "--output", "json"]].concat(), "");
    let array: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(ns(&array), vec![2]);
    // From stdin: data on stdout, the count on stderr.
    let stdin = ["publish", "--topic", "f.b", "--source", "s", "--payload", "-", "--output"];
    let (out, err) = run_ok(&dir, &[&stdin[..], &["ndjson"]].concat(), "{\"n\": 3}\n{\"n\": 4}\n");
    assert_eq!(
        (cursors(&ndjson(&out)), err.as_str()),
        (vec!["1-0".into(), "2-0".into()], "Published 2 events to topic f.b\n")
    );
    let (out, err) = run_ok(&dir, &[&stdin[..], &["json"]].concat(), "{\"n\": 5}\n");
    let array: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!((ns(&array), err.as_str()), (vec![5], "Published 1 event to topic f.b\n"));

    // history: ndjson lines with cursors; json is --json, the original's indented array.
    let (out, _) = run_ok(&dir, &["history", "--topic", "f.a", "--output", "ndjson"], "");
    let lines = ndjson(&out);
    assert_eq!(
        (ns(&lines), cursors(&lines)),
        (vec![0, 1, 2], vec!["1-0".into(), "2-0".into(), "3-0".into()])
    );
    let json = dir.stdout(&["history", "--output", "json"]);
    assert_eq!(json, dir.stdout(&["history", "--json"]));
    assert!(json.starts_with("[\n  {\n    \"id\": "), "{json}");
    assert_eq!(ns(&serde_json::from_str::<Vec<Value>>(&json).unwrap()), vec![0, 1, 2, 3, 4, 5]);
    let stderr = dir.command(&["history", "--json", "--output", "text"]).fails_with(2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    // replay: the count on stderr.
    let replay = ["replay", "--topic", "f.>", "--since", "1h", "--speed", "0", "--output"];
    let (out, err) = run_ok(&dir, &[&replay[..], &["ndjson"]].concat(), "");
    assert_eq!((ndjson(&out).len(), err.as_str()), (6, "Replayed 6 events.\n"));
    let (out, err) = run_ok(&dir, &[&replay[..], &["json"]].concat(), "");
    assert_eq!(
        (serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), err.as_str()),
        (6, "Replayed 6 events.\n")
    );

    // topics and stats: one compact document on one line.
    for format in ["json", "ndjson"] {
        assert_eq!(dir.stdout(&["topics", "--output", format]), "[\"f.a\",\"f.b\"]\n");
        let stats = dir.stdout(&["stats", "--output", format]);
        assert_eq!(ndjson(&stats).len(), 1, "{stats}");
        assert_eq!(ndjson(&stats)[0]["topics"][1]["events"], 3);
    }
    assert_eq!(dir.stdout(&["stats", "--json"]), dir.stdout(&["stats", "--output", "json"]));

    // subscribe: ndjson lines with cursors; json one array, closed when it stops.
    assert_eq!(cursors(&first_three(&dir, "f.a")), ["1-0", "2-0", "3-0"]);
    let (out, _) = run_ok(
        &dir,
        &["subscribe", "--topic", "f.>", "--from", "beginning", "--count", "2", "--output", "json"],
        "",
    );
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 2, "{out}");
    let (out, _) =
        run_ok(&dir, &["subscribe", "--topic", "f.a", "--timeout", "100ms", "--json"], "");
    assert_eq!(out, "[]\n");
}

/// The last cursor of each topic among NDJSON events, as `--after TOPIC=CURSOR` arguments.
fn resume_args(seen: &[Value]) -> Vec<String> {
    let mut last = std::collections::BTreeMap::new();
    for e in seen {
        last.insert(e["topic"].as_str().unwrap().to_string(), e["cursor"].as_str().unwrap());
    }
    last.into_iter().flat_map(|(t, c)| ["--after".to_string(), format!("{t}={c}")]).collect()
}

#[test]
fn history_resumes_after_the_last_cursor_it_printed() {
    let dir = Dir::new();
    let input: String = (0..10).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    run_ok(&dir, &["publish", "--topic", "r.one", "--source", "s", "--payload", "-"], &input);
    // One exact topic: --after CURSOR from the last line read.
    let all = ndjson(&dir.stdout(&["history", "--topic", "r.one", "--output", "ndjson"]));
    assert_eq!(ns(&all), (0..10).collect::<Vec<_>>());
    for k in [1, 4, 9, 10] {
        let first = ndjson(&dir.stdout(&[
            "history",
            "--topic",
            "r.one",
            "--limit",
            &k.to_string(),
            "--output",
            "ndjson",
        ]));
        let cursor = first.last().unwrap()["cursor"].as_str().unwrap();
        let rest = ndjson(
            &dir.stdout(&["history", "--topic", "r.one", "--after", cursor, "--output", "ndjson"]),
        );
        assert_eq!([first, rest].concat(), all, "split after {k}: none twice, none lost");
    }
    let rest = ndjson(&dir.stdout(&[
        "history",
        "--topic",
        "r.one",
        "--after",
        "r.one=3-0",
        "--last",
        "2",
        "--output",
        "ndjson",
    ]));
    assert_eq!(ns(&rest), vec![8, 9]);

    // A pattern: one TOPIC=CURSOR per topic seen; topics not seen are read from their start.
    for n in 0..8u32 {
        publish_at(&dir, if n % 3 == 0 { "p.a" } else { "p.b" }, n);
    }
    let all = ndjson(&dir.stdout(&["history", "--topic", "p.*", "--output", "ndjson"]));
    assert_eq!(ns(&all), (0..8).collect::<Vec<_>>());
    for k in 1..8 {
        let first = ndjson(&dir.stdout(&[
            "history",
            "--topic",
            "p.*",
            "--limit",
            &k.to_string(),
            "--output",
            "ndjson",
        ]));
        let mut args = vec!["history".to_string(), "--topic".into(), "p.*".into()];
        args.extend(resume_args(&first));
        args.extend(["--output".into(), "ndjson".into(), "--limit".into(), "3".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let next = ndjson(&dir.stdout(&args));
        assert_eq!([first, next].concat(), all[..(k + 3).min(8)], "split after {k}");
    }
    // Without --topic every topic is read; --after still names one.
    let rest = ndjson(&dir.stdout(&["history", "--after", "r.one=8-0", "--output", "ndjson"]));
    assert_eq!(rest.len(), 2 + 8, "r.one after its 8th event, and all of p.a and p.b");
}

#[test]
fn subscribe_resumes_after_the_last_cursor_it_printed() {
    let dir = Dir::new();
    let publish = |topic: &str, ns: std::ops::Range<u32>| {
        let input: String = ns.map(|n| format!("{{\"n\": {n}}}\n")).collect();
        run_ok(&dir, &["publish", "--topic", topic, "--source", "s", "--payload", "-"], &input);
    };
    publish("s.a", 0..5);
    let first = first_three(&dir, "s.a");
    assert_eq!(ns(&first), vec![0, 1, 2]);
    let cursor = first[2]["cursor"].as_str().unwrap().to_string();
    publish("s.a", 5..7);
    let mut sub = dir.spawn(&[
        "subscribe",
        "--topic",
        "s.a",
        "--after",
        &cursor,
        "--count",
        "6",
        "--output",
        "ndjson",
    ]);
    sub.wait_listening();
    publish("s.a", 7..9);
    assert_eq!(ns(&sub.events(6)), vec![3, 4, 5, 6, 7, 8], "published before and after the resume");
    sub.expect_exit(0);

    // A pattern: the named topic resumes after its cursor, the others start as --from says.
    publish("s.b", 100..102);
    let mut sub = dir.spawn(&[
        "subscribe",
        "--topic",
        "s.*",
        "--after",
        &format!("s.a={cursor}"),
        "--from",
        "beginning",
        "--count",
        "9",
        "--output",
        "ndjson",
    ]);
    sub.wait_listening();
    publish("s.b", 102..103);
    let mut got = ns(&sub.events(9));
    got.sort_unstable();
    assert_eq!(got, vec![3, 4, 5, 6, 7, 8, 100, 101, 102]);
    sub.expect_exit(0);
}

#[test]
fn after_forms_that_cannot_be_exact_are_rejected() {
    let dir = Dir::new();
    dir.publish("x.a", r#"{"n": 0}"#);
    let cases: &[(&[&str], &str)] = &[
        (&["history", "--after", "1-0"], "--after 1-0 needs exactly one --topic without wildcards"),
        (&["history", "--topic", "x.*", "--after", "1-0"], "otherwise write --after TOPIC=1-0"),
        (&["history", "--topic", "x.a", "--topic", "x.b", "--after", "1-0"], "exactly one --topic"),
        (&["history", "--topic", "x.a", "--after", "x.b=1-0"], "no --topic selects"),
        (&["history", "--after", "x.a=1-0", "--after", "x.a=2-0"], "twice"),
        (&["history", "--topic", "x.a", "--after", "soon"], "expected a cursor such as 42-0"),
        (&["subscribe", "--topic", "x.*", "--after", "1-0"], "exactly one --topic"),
        (&["subscribe", "--topic", "x.a", "--after", "1-0", "--group", "g"], "cannot be used with"),
        (
            &["subscribe", "--topic", "x.*", "--after", "x.a=1-0", "--from", "1h"],
            "expected --from new or beginning",
        ),
    ];
    for (args, needle) in cases {
        let stderr = dir.command(args).fails_with(2);
        assert!(stderr.contains(needle), "seed {args:?}: expected {needle:?} in {stderr:?}");
        assert!(stderr.lines().count() == 1 || needle.contains("cannot"), "{stderr}");
    }
}

/// Exit 2 on a bad stdin line does not mean nothing was written: every line
/// before it is published (across batches), none after it, and the error and
/// the NDJSON output say exactly which.
#[test]
fn a_bad_stdin_line_keeps_the_lines_before_it() {
    let dir = Dir::new();
    let mut input: String = (0..2500).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    input.push_str("\n   \nnot json\n");
    input.extend((2500..2510).map(|n| format!("{{\"n\": {n}}}\n")));
    let publish = ["publish", "--topic", "pin", "--source", "s", "--payload", "-"];
    let mut cmd = dir.command(&[&publish[..], &["--output", "ndjson"]].concat());
    let output = cmd.output_with(input.as_bytes());
    cmd.expect_status(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(lines[0], "Published 2500 events to topic pin");
    assert!(
        lines[1].starts_with("seed: line 2503 of standard input: invalid payload:")
            && lines[1].ends_with("; the 2500 events before it were published, none after it"),
        "{stderr}"
    );
    let printed = ndjson(&String::from_utf8_lossy(&output.stdout));
    let stored = ns(&dir.history(&["--topic", "pin"]));
    assert_eq!(stored, (0..2500).collect::<Vec<_>>());
    assert_eq!(ns(&printed), stored, "stdout lists exactly what was stored");
}

#[test]
fn ctrl_c_closes_a_subscribers_json_array() {
    let dir = Dir::new();
    let mut sub = dir.spawn(&["subscribe", "--topic", "cj", "--output", "json"]);
    sub.wait_listening();
    dir.publish("cj", r#"{"n": 1}"#);
    // The element's last line ("  }") ends only with what follows it.
    let mut lines = vec![sub.line()];
    while lines.last().map(String::as_str) != Some("    \"metadata\": {}") {
        lines.push(sub.line());
    }
    sub.signal(libc::SIGINT);
    sub.expect_exit(0);
    lines.extend(sub.lines(2));
    let array: Vec<Value> = serde_json::from_str(&lines.join("\n")).unwrap();
    assert_eq!(ns(&array), vec![1]);
}
