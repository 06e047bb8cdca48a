//! Work groups across processes on the file store: `seed subscribe --group
//! NAME` processes share the events (each printed once, every process gets
//! some) and a member killed with SIGKILL while it holds events hands them
//! to the others at once, on the file store and on a private redis-server;
//! `--ordered per-topic` keeps each topic in order; `--exec` workers, Ctrl-C,
//! `groups` and `redrive`.
//!
//! Redelivery times are printed (`--nocapture` shows them), never asserted.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use seed_event::EventStore;
use util::{Dir, Running, DEADLINE};

/// `payload.n` of a printed line.
fn n_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["payload"]["n"].as_u64().expect("payload.n")
}

/// Publishes events `from..to` to `topic` in one `publish --payload -`.
fn publish_range(dir: &Dir, topic: &str, from: u64, to: u64) {
    let input: String = (from..to).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let mut cmd = dir.command(&["publish", "--topic", topic, "--source", "t", "--payload", "-"]);
    let output = cmd.output_with(input.as_bytes());
    cmd.expect_status(&output, 0);
}

/// A store for the tests: the file store of a [`Dir`], or a private redis-server.
struct Env {
    dir: Dir,
    /// The server, for Redis.
    redis: Option<store_redis::testing::RedisServer>,
}

impl Env {
    fn file() -> Env {
        Env { dir: Dir::new(), redis: None }
    }

    fn redis() -> Env {
        let server = store_redis::testing::RedisServer::start();
        Env { dir: Dir::with_redis(server.url()), redis: Some(server) }
    }

    /// The group's figures, read with the library.
    fn info(&self, name: &str) -> Option<seed_event::GroupInfo> {
        let store: Box<dyn EventStore> = match &self.redis {
            Some(server) => Box::new(store_redis::RedisStore::open(&server.url()).unwrap()),
            None => Box::new(store_file::FileStore::open(self.dir.path().join("events")).unwrap()),
        };
        let groups = store.groups().unwrap().list().unwrap();
        groups.into_iter().find(|g| g.name == name)
    }
}

/// The group's figures on the file store of `dir`.
fn group_info(dir: &Dir, name: &str) -> Option<seed_event::GroupInfo> {
    let store = store_file::FileStore::open(dir.path().join("events")).unwrap();
    let groups = store.groups().unwrap().list().unwrap();
    groups.into_iter().find(|g| g.name == name)
}

/// Reads the members' lines until `done` says so or the deadline passed.
fn collect_until(
    members: &[Running],
    got: &mut [Vec<String>],
    mut done: impl FnMut(&[Vec<String>]) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    while !done(got) && Instant::now() < deadline {
        for (m, lines) in members.iter().zip(got.iter_mut()) {
            lines.extend(m.lines_within(Duration::from_millis(10)));
        }
    }
}

fn total(got: &[Vec<String>]) -> usize {
    got.iter().map(Vec::len).sum()
}

#[test]
fn three_processes_share_3000_events_each_printed_once() {
    three_processes_share(&Env::file());
}

#[test]
fn three_processes_share_3000_events_each_printed_once_on_redis() {
    three_processes_share(&Env::redis());
}

fn three_processes_share(env: &Env) {
    let dir = &env.dir;
    let args = ["subscribe", "--topic", "jobs.*", "--group", "g", "--max-in-flight", "50"];
    let members: Vec<Running> = (0..3).map(|_| dir.spawn(&args)).collect();
    for m in &members {
        m.wait_listening();
    }
    for chunk in 0..6 {
        let topic = if chunk % 2 == 0 { "jobs.a" } else { "jobs.b" };
        publish_range(dir, topic, chunk * 500, (chunk + 1) * 500);
    }
    let mut got = vec![Vec::new(); 3];
    collect_until(&members, &mut got, |got| total(got) >= 3000);
    for m in &members {
        m.signal(libc::SIGINT);
    }
    for (mut m, lines) in members.into_iter().zip(got.iter_mut()) {
        m.expect_exit(0);
        lines.extend(m.rest());
    }
    let all: Vec<u64> = got.iter().flatten().map(|l| n_of(l)).collect();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct, (0..3000).collect(), "every event printed");
    assert_eq!(all.len(), 3000, "no event printed twice");
    let per_member: Vec<usize> = got.iter().map(Vec::len).collect();
    assert!(per_member.iter().all(|n| *n > 0), "every member printed some: {per_member:?}");
    let info = env.info("g").unwrap();
    assert_eq!((info.in_flight, info.waiting, info.members.len()), (0, 0, 0), "{info:?}");
}

/// A member whose output nobody reads blocks with events in flight; killed
/// with SIGKILL, its unacked events go to the other member at once.
#[test]
fn a_killed_members_events_go_to_the_others() {
    killed_members_events_go_to_the_others(&Env::file());
}

#[test]
fn a_killed_members_events_go_to_the_others_on_redis() {
    killed_members_events_go_to_the_others(&Env::redis());
}

fn killed_members_events_go_to_the_others(env: &Env) {
    const EVENTS: u64 = 3000;
    let dir = &env.dir;
    publish_range(dir, "jobs", 0, EVENTS);
    let args = [
        "subscribe",
        "--topic",
        "jobs",
        "--group",
        "g",
        "--from",
        "beginning",
        "--max-in-flight",
        "256",
    ];
    // Its stdout is a pipe nobody reads: once the pipe is full, it blocks
    // in a write with its batch in flight.
    let mut stuck =
        dir.command(&args).cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        let info = env.info("g");
        let now = info.as_ref().map(|i| (i.in_flight, i.waiting));
        if now.is_some_and(|(in_flight, _)| in_flight > 0) && now == last {
            break;
        }
        assert!(Instant::now() < deadline, "the first member never got stuck: {info:?}");
        last = now;
        std::thread::sleep(Duration::from_millis(200));
    }
    let other = dir.spawn(&args);
    other.wait_listening();
    let mut printed = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while env.info("g").unwrap().waiting > 0 {
        printed.extend(other.lines_within(Duration::from_millis(20)));
        assert!(Instant::now() < deadline, "the other member did not take the waiting events");
    }
    printed.extend(other.lines_within(Duration::from_millis(100)));
    let held = env.info("g").unwrap().in_flight;
    assert!(held > 0, "the stuck member still holds events");

    let killed = Instant::now();
    stuck.kill().unwrap();
    stuck.wait().unwrap();
    let mut stuck_out = String::new();
    stuck.stdout.take().unwrap().read_to_string(&mut stuck_out).unwrap();
    let by_stuck: BTreeSet<u64> =
        stuck_out.lines().filter(|l| l.ends_with('}')).map(n_of).collect();
    let mut seen: BTreeSet<u64> = printed.iter().map(|l| n_of(l)).collect();
    let mut redelivered = 0;
    let mut last_at = killed;
    while seen.union(&by_stuck).count() < EVENTS as usize {
        assert!(killed.elapsed() < DEADLINE, "the killed member's events never came back");
        for line in other.lines_within(Duration::from_millis(5)) {
            redelivered += 1;
            last_at = Instant::now();
            seen.insert(n_of(&line));
        }
    }
    eprintln!(
        "{}: SIGKILL of a member holding {held} events: the other printed {redelivered} of them, the last {:.0} ms after the kill",
        if env.redis.is_some() { "redis" } else { "file" },
        (last_at - killed).as_secs_f64() * 1000.0
    );
    let all: BTreeSet<u64> = seen.union(&by_stuck).copied().collect();
    assert_eq!(all, (0..EVENTS).collect(), "nothing lost");
    // Printed twice: only events the killed member had printed and not acked.
    let twice: Vec<u64> = seen.intersection(&by_stuck).copied().collect();
    assert!(twice.len() as u64 <= held, "{} printed twice, {held} were in flight", twice.len());
}

#[test]
fn per_topic_order_across_four_members() {
    per_topic_order_across_members(&Env::file());
}

#[test]
fn per_topic_order_across_four_members_on_redis() {
    per_topic_order_across_members(&Env::redis());
}

/// Four `subscribe --group --ordered per-topic` processes and 20 topics of
/// 25 events: each topic's events are printed once each, and every member
/// prints its share of a topic in order.
fn per_topic_order_across_members(env: &Env) {
    let dir = &env.dir;
    let args = ["subscribe", "--topic", "t.*", "--group", "o", "--ordered", "per-topic"];
    let members: Vec<Running> = (0..4).map(|_| dir.spawn(&args)).collect();
    for m in &members {
        m.wait_listening();
    }
    for t in 0..20 {
        publish_range(dir, &format!("t.{t}"), 0, 25);
    }
    let mut got = vec![Vec::new(); 4];
    collect_until(&members, &mut got, |got| total(got) >= 500);
    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for lines in &got {
        let mut mine: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let topic = v["topic"].as_str().unwrap().to_string();
            mine.entry(topic.clone()).or_default().push(n_of(l));
            per_topic.entry(topic).or_default().push(n_of(l));
        }
        for (t, ns) in mine {
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "one member printed {t} out of order: {ns:?}"
            );
        }
    }
    assert_eq!(per_topic.len(), 20);
    for (t, mut ns) in per_topic {
        ns.sort();
        assert_eq!(ns, (0..25).collect::<Vec<_>>(), "topic {t}: each event once");
    }
    let busy = got.iter().filter(|l| !l.is_empty()).count();
    eprintln!("{busy} of 4 members printed events");
}

#[test]
fn group_options_are_checked() {
    let dir = Dir::new();
    for (args, expected) in [
        (&["subscribe", "--topic", "a", "--ack-wait", "30s"][..], "--group"),
        (&["subscribe", "--topic", "a", "--group", "g", "--max-deliveries", "0"], "max-deliveries"),
        (&["subscribe", "--topic", "a", "--group", "g", "--max-in-flight", "0"], "max-in-flight"),
        (&["subscribe", "--topic", "a", "--group", "g", "--ack-wait", "0s"], "ack-wait"),
        (&["subscribe", "--topic", "a", "--group", "g", "--ordered", "total"], "ordered"),
        (
            &[
                "subscribe",
                "--topic",
                "a",
                "--group",
                "g",
                "--exclusive",
                "--exec",
                "true",
                "--concurrency",
                "2",
            ],
            "expected --concurrency 1",
        ),
        (&["subscribe", "--topic", "a", "--group", "a*b"], "--dead-letter"),
    ] {
        let err = dir.command(args).fails_with(2);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // A group with another pattern is refused, nothing changed.
    let mut first = dir.spawn(&["subscribe", "--topic", "a", "--group", "g", "--count", "1"]);
    first.wait_listening();
    let err = dir.command(&["subscribe", "--topic", "b", "--group", "g"]).fails_with(2);
    assert!(err.contains("follows a, not b"), "{err}");
    dir.publish("a", "{}");
    first.expect_exit(0);
}

#[test]
fn groups_lists_and_deletes_work_groups() {
    let dir = Dir::new();
    assert_eq!(dir.stdout(&["groups", "--json"]), "[]\n");
    let mut member = dir.spawn(&["subscribe", "--topic", "jobs.*", "--group", "g"]);
    member.wait_listening();
    publish_range(&dir, "jobs.a", 0, 3);
    assert_eq!(member.lines(3).len(), 3);
    let json: serde_json::Value = serde_json::from_str(&dir.stdout(&["groups", "--json"])).unwrap();
    let g = &json[0];
    assert_eq!((g["name"].as_str(), g["pattern"].as_str()), (Some("g"), Some("jobs.*")), "{json}");
    assert_eq!(g["members"].as_array().unwrap().len(), 1, "{json}");
    assert!(g["members"][0]["id"].as_str().unwrap().starts_with("cli-"), "{json}");
    for field in ["in_flight", "waiting", "redelivered", "dead_lettered"] {
        assert!(g[field].is_u64(), "{field} in {json}");
    }
    let text = dir.stdout(&["groups"]);
    assert!(text.starts_with("GROUP  PATTERN  MODE    MEMBERS"), "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("g      jobs.*   shared  1"), "{text}");
    assert_eq!((g["exclusive"].as_bool(), g["active"].is_null()), (Some(false), true), "{json}");

    let err = dir.command(&["groups", "delete", "g", "--confirm"]).fails_with(2);
    assert!(err.contains("live member"), "{err}");
    member.signal(libc::SIGINT);
    member.expect_exit(0);
    let err = dir.command(&["groups", "delete", "g"]).fails_with(2);
    assert!(err.contains("--confirm"), "{err}");
    assert_eq!(dir.stdout(&["groups", "delete", "g", "--confirm"]), "Deleted group 'g'.\n");
    assert_eq!(dir.stdout(&["groups", "--json"]), "[]\n");
    let err = dir.command(&["groups", "delete", "g", "--confirm"]).fails_with(2);
    assert!(err.contains("no group g"), "{err}");
}

/// `--exec` with a command that fails for payloads marked poison: those land
/// on `dead.<group>` after their last delivery, with the command's last
/// stderr line; every other event is handled once, by one of two processes
/// running two commands each.
#[test]
fn exec_workers_handle_each_event_once_and_dead_letter_poison() {
    exec_workers_and_poison(&Env::file());
}

#[test]
fn exec_workers_handle_each_event_once_and_dead_letter_poison_on_redis() {
    exec_workers_and_poison(&Env::redis());
}

fn exec_workers_and_poison(env: &Env) {
    let dir = &env.dir;
    let handled = dir.path().join("handled.txt");
    let cmd = format!(
        r#"read line; case "$line" in *poison*) echo "cannot handle $SEED_EVENT_ID" >&2; echo "poison at delivery $SEED_DELIVERY" >&2; exit 3;; esac; echo "$SEED_TOPIC $SEED_CURSOR $SEED_DELIVERY $line" >> {}"#,
        handled.display()
    );
    let args = [
        "subscribe",
        "--topic",
        "tasks",
        "--group",
        "w",
        "--exec",
        &cmd,
        "--concurrency",
        "2",
        "--max-deliveries",
        "3",
        "--backoff",
        "10ms",
    ];
    let workers: Vec<Running> = (0..2).map(|_| dir.spawn(&args)).collect();
    for w in &workers {
        w.wait_listening();
    }
    let input: String = (0..60)
        .map(|n| {
            if n % 20 == 7 {
                format!("{{\"n\": {n}, \"poison\": true}}\n")
            } else {
                format!("{{\"n\": {n}}}\n")
            }
        })
        .collect();
    let mut publish =
        dir.command(&["publish", "--topic", "tasks", "--source", "t", "--payload", "-"]);
    let output = publish.output_with(input.as_bytes());
    publish.expect_status(&output, 0);
    let deadline = Instant::now() + DEADLINE;
    let letters = loop {
        let letters = dir.history(&["--topic", "dead.w"]);
        let lines = std::fs::read_to_string(&handled).unwrap_or_default();
        if letters.len() >= 3 && lines.lines().count() >= 57 {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "{} dead letters, {} handled",
            letters.len(),
            lines.lines().count()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for mut w in workers {
        w.signal(libc::SIGINT);
        w.expect_exit(0);
    }
    let lines = std::fs::read_to_string(&handled).unwrap();
    let mut ns: Vec<u64> = lines
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!((parts[0], parts[2]), ("tasks", "1"), "{l}");
            n_of(parts[3])
        })
        .collect();
    ns.sort();
    let expected: Vec<u64> = (0..60).filter(|n| n % 20 != 7).collect();
    assert_eq!(ns, expected, "every other event handled once");
    assert_eq!(letters.len(), 3, "{letters:?}");
    let mut poisoned: Vec<u64> =
        letters.iter().map(|l| l["payload"]["event"]["payload"]["n"].as_u64().unwrap()).collect();
    poisoned.sort();
    assert_eq!(poisoned, vec![7, 27, 47]);
    for l in &letters {
        assert_eq!(l["payload"]["deliveries"], 3, "{l}");
        assert_eq!(l["payload"]["error"], "poison at delivery 3", "{l}");
        assert_eq!(l["payload"]["group"], "w");
        assert_eq!(l["payload"]["topic"], "tasks");
    }
}

/// Ctrl-C while a command runs: no new work is taken, the command finishes
/// and its event is acked, the worker exits 0.
#[test]
fn ctrl_c_waits_for_the_running_command_and_acks_it() {
    let dir = Dir::new();
    let started = dir.path().join("started");
    let done = dir.path().join("done");
    let cmd = format!("touch {}; sleep 0.3; cat >> {}", started.display(), done.display());
    let mut worker = dir.spawn(&["subscribe", "--topic", "slow", "--group", "s", "--exec", &cmd]);
    worker.wait_listening();
    dir.publish("slow", r#"{"n": 0}"#);
    dir.publish("slow", r#"{"n": 1}"#);
    let deadline = Instant::now() + DEADLINE;
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    worker.signal(libc::SIGINT);
    worker.expect_exit(0);
    let out = std::fs::read_to_string(&done).unwrap();
    assert_eq!(out.lines().count(), 1, "one command ran to its end, no other started: {out}");
    assert_eq!(n_of(out.trim()), 0);
    let info = group_info(&dir, "s").unwrap();
    assert_eq!((info.in_flight, info.waiting), (0, 1), "event 0 acked, event 1 waits: {info:?}");
}

/// Ctrl-C at a terminal reaches the whole foreground job: the running
/// command, in a process group of its own, is not killed with the worker but
/// runs to its end and is acked.
#[test]
fn ctrl_c_at_a_terminal_does_not_kill_the_running_command() {
    let dir = Dir::new();
    let started = dir.path().join("started");
    let done = dir.path().join("done");
    let cmd = format!("touch {}; sleep 0.3; cat >> {}", started.display(), done.display());
    let mut worker =
        dir.spawn_leader(&["subscribe", "--topic", "slow", "--group", "s", "--exec", &cmd]);
    worker.wait_listening();
    dir.publish("slow", r#"{"n": 0}"#);
    let deadline = Instant::now() + DEADLINE;
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    worker.signal_group(libc::SIGINT);
    worker.expect_exit(0);
    let out = std::fs::read_to_string(&done).expect("the command ran to its end");
    assert_eq!(n_of(out.trim()), 0);
    let info = group_info(&dir, "s").unwrap();
    assert_eq!((info.in_flight, info.waiting, info.dead_lettered), (0, 0, 0), "acked: {info:?}");
}

/// A dead letter redriven goes back to its topic and is handled by its
/// group; a second redrive puts nothing back; an unknown id is refused.
#[test]
fn redrive_puts_dead_letters_back_and_they_are_handled() {
    redrive_and_handle(&Env::file());
}

#[test]
fn redrive_puts_dead_letters_back_and_they_are_handled_on_redis() {
    redrive_and_handle(&Env::redis());
}

fn redrive_and_handle(env: &Env) {
    let dir = &env.dir;
    let failing =
        ["subscribe", "--topic", "r", "--group", "g", "--exec", "exit 1", "--max-deliveries", "1"];
    let mut worker = dir.spawn(&failing);
    worker.wait_listening();
    dir.publish("r", r#"{"n": 5}"#);
    let deadline = Instant::now() + DEADLINE;
    while dir.history(&["--topic", "dead.g"]).is_empty() {
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.signal(libc::SIGINT);
    worker.expect_exit(0);
    let letter = dir.history(&["--topic", "dead.g"]).remove(0);
    let id = letter["id"].as_str().unwrap().to_string();
    let err = dir
        .command(&["redrive", "--topic", "dead.g", "--id", "0199a3c4-5b6e-7f80-9a1b-2c3d4e5f6a7b"])
        .fails_with(2);
    assert!(err.contains("no dead letter"), "{err}");
    assert_eq!(
        dir.stdout(&["redrive", "--topic", "dead.g", "--id", &id]),
        "Redrove 1 dead letter from dead.g.\n"
    );
    assert_eq!(
        dir.stdout(&["redrive", "--topic", "dead.g"]),
        "Redrove 0 dead letters from dead.g.\n"
    );
    let back = dir.history(&["--topic", "r"]);
    assert_eq!(back.len(), 2, "{back:?}");
    assert_eq!(back[1]["id"], letter["payload"]["event"]["id"], "the original event, same id");
    let handled = dir.path().join("handled");
    let ok = format!("cat >> {}", handled.display());
    let mut worker =
        dir.spawn(&["subscribe", "--topic", "r", "--group", "g", "--exec", &ok, "--count", "1"]);
    worker.expect_exit(0);
    let line = std::fs::read_to_string(&handled).unwrap();
    assert_eq!(n_of(line.trim()), 5, "the redriven event was handled");
}

/// `--ordered per-topic` with four `--exec` workers and 20 topics: the
/// commands append to one file as they run, and every topic's events are
/// there in order, each once (the next event of a topic is handed out only
/// once the command of the one before exited).
#[test]
fn per_topic_order_is_kept_across_exec_workers() {
    per_topic_order_of_exec_workers(&Env::file());
}

#[test]
fn per_topic_order_is_kept_across_exec_workers_on_redis() {
    per_topic_order_of_exec_workers(&Env::redis());
}

fn per_topic_order_of_exec_workers(env: &Env) {
    let dir = &env.dir;
    let handled = dir.path().join("handled");
    let cmd = format!("cat >> {}", handled.display());
    let args = [
        "subscribe",
        "--topic",
        "o.*",
        "--group",
        "ordered",
        "--ordered",
        "per-topic",
        "--exec",
        &cmd,
    ];
    let workers: Vec<Running> = (0..4).map(|_| dir.spawn(&args)).collect();
    for w in &workers {
        w.wait_listening();
    }
    for t in 0..20 {
        publish_range(dir, &format!("o.{t}"), 0, 10);
    }
    let deadline = Instant::now() + DEADLINE;
    let text = loop {
        let text = std::fs::read_to_string(&handled).unwrap_or_default();
        if text.lines().count() >= 200 {
            break text;
        }
        assert!(Instant::now() < deadline, "{} of 200 handled", text.lines().count());
        std::thread::sleep(Duration::from_millis(20));
    };
    for mut w in workers {
        w.signal(libc::SIGINT);
        w.expect_exit(0);
    }
    let mut per_topic: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        per_topic.entry(v["topic"].as_str().unwrap().to_string()).or_default().push(n_of(line));
    }
    assert_eq!(per_topic.len(), 20);
    for (t, ns) in per_topic {
        assert_eq!(ns, (0..10).collect::<Vec<_>>(), "topic {t} in order, each once");
    }
}
