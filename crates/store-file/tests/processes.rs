//! Many real processes on one events directory: racing writers, writers killed
//! mid-append, clears racing appends, followers across processes.
//!
//! This test binary has its own `main` (`harness = false`): run with
//! `STORE_FILE_CHILD=<role>` it plays that role as a child process (a writer,
//! a victim to kill); otherwise it runs the tests below, two at a time, each
//! named on the command line selecting it by substring. Every failure prints
//! the child's command and output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use seed_event::conformance::{obj, topic};
use seed_event::{
    Clear, Event, EventStore, FollowFrom, Query, Start, StoredEvent, Topic, TopicPattern,
};
use serde_json::json;
use store_file::FileStore;

const CHILD_ROLE: &str = "STORE_FILE_CHILD";
const DEADLINE: Duration = Duration::from_secs(60);

/// A command that runs this binary as a child playing `role`.
fn child(role: &str, dir: &Path, vars: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.env(CHILD_ROLE, role).env("STORE_FILE_DIR", dir);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// The command of an appender child: writer `writer` appends `count` events to `topic`.
fn appender(dir: &Path, topic: &Topic, writer: u64, count: u64, big: bool) -> Command {
    child(
        "append",
        dir,
        &[
            ("STORE_FILE_TOPIC", topic.to_string()),
            ("STORE_FILE_WRITER", writer.to_string()),
            ("STORE_FILE_COUNT", count.to_string()),
            ("STORE_FILE_BIG", big.to_string()),
        ],
    )
}

/// Starts `writers` appender children at once, with their output captured.
fn spawn_appenders(
    dir: &Path,
    topic: &Topic,
    writers: u64,
    count: u64,
    big: bool,
) -> Vec<(Command, Child)> {
    (0..writers)
        .map(|w| {
            let mut cmd = appender(dir, topic, w, count, big);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            let spawned = cmd.spawn().unwrap();
            (cmd, spawned)
        })
        .collect()
}

/// Waits for a child and panics with its command and output if it failed.
fn expect_success(what: &str, cmd: &Command, out: Output) -> Output {
    if !out.status.success() {
        panic!(
            "\n{what} failed ({})\ncommand: {cmd:?}\n--- stdout\n{}\n--- stderr\n{}\n",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn var<T: std::str::FromStr>(name: &str) -> T {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("child needs ${name}"));
    v.parse().unwrap_or_else(|_| panic!("${name}={v:?} does not parse"))
}

/// Plays `role` in a child process.
fn child_main(role: &str) {
    let dir: String = var("STORE_FILE_DIR");
    let store = FileStore::open(&dir).unwrap();
    let t = topic(&var::<String>("STORE_FILE_TOPIC"));
    match role {
        // Appends COUNT events, one per call, tagged with WRITER and their index.
        "append" => {
            let (w, count, big): (u64, u64, bool) =
                (var("STORE_FILE_WRITER"), var("STORE_FILE_COUNT"), var("STORE_FILE_BIG"));
            for i in 0..count {
                let payload = if big {
                    let len = big_len(w, i);
                    json!({"w": w, "i": i, "fill": fill(w, i, len)})
                } else {
                    json!({"w": w, "i": i})
                };
                store.append(&Event::new(t.clone(), format!("writer-{w}"), obj(payload))).unwrap();
            }
        }
        // Appends big events and batches until killed, printing `ack <id>` after each call returns.
        "append-until-killed" => {
            let mut out = std::io::stdout().lock();
            for round in 0u64.. {
                // A big single event, a small batch of big events and a big
                // batch of small ones.
                let (n, pad) = match round % 3 {
                    0 => (1, 100_000),
                    1 => (10, 10_000),
                    _ => (600, 300),
                };
                let events: Vec<Event> = (0..n)
                    .map(|i| {
                        let payload = json!({"round": round, "i": i, "pad": "z".repeat(pad)});
                        Event::new(t.clone(), "victim", obj(payload))
                    })
                    .collect();
                if n == 1 {
                    store.append(&events[0]).unwrap();
                } else {
                    let cursors = store.append_batch(&t, &events).unwrap();
                    assert_eq!(cursors.len(), events.len(), "one cursor per event");
                }
                // The call returned: every event it was given is stored.
                for e in &events {
                    writeln!(out, "ack {}", e.id).unwrap();
                }
                out.flush().unwrap();
            }
        }
        // With a file size limit of LIMIT bytes, appends batches of BATCH
        // events (round by round, then one single event) until one fails;
        // prints `ok <round>` or `err <round> <error>` for each call.
        "append-beyond-size-limit" => {
            let (limit, batch): (u64, u64) = (var("STORE_FILE_LIMIT"), var("STORE_FILE_BATCH"));
            // SAFETY: plain calls setting this process's signal disposition and limit.
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
            }
            let mut out = std::io::stdout().lock();
            for round in 0u64.. {
                let events: Vec<Event> = (0..batch)
                    .map(|i| {
                        let payload = json!({"round": round, "i": i, "pad": "p".repeat(300)});
                        Event::new(t.clone(), "limited", obj(payload))
                    })
                    .collect();
                let result = if batch == 1 {
                    store.append(&events[0]).map(|_| ())
                } else {
                    store.append_batch(&t, &events).map(|_| ())
                };
                match result {
                    Ok(()) => writeln!(out, "ok {round}").unwrap(),
                    Err(e) => {
                        writeln!(out, "err {round} {e}").unwrap();
                        break;
                    }
                }
            }
        }
        // Under a limit of 256 open files: appends EACH events to each of
        // TOPICS topics, round-robin; queries them all; follows them all from
        // the beginning; follows them live while one more event goes to each.
        // Prints `peak-fds <n>` at the end.
        "many-topics" => {
            let (topics, each): (u64, u64) = (var("STORE_FILE_TOPICS"), var("STORE_FILE_EACH"));
            // SAFETY: a plain call setting this process's limit.
            unsafe {
                let lim = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            }
            let names: Vec<Topic> =
                (0..topics).map(|i| topic(&format!("task.{i}.status"))).collect();
            let mut peak = open_fds();
            let publish = |round: u64, peak: &mut usize| {
                for (i, t) in names.iter().enumerate() {
                    let payload = obj(json!({"i": i, "round": round}));
                    store.append(&Event::new(t.clone(), "many", payload)).unwrap();
                    if i % 500 == 0 {
                        *peak = (*peak).max(open_fds());
                    }
                }
            };
            for round in 0..each {
                publish(round, &mut peak);
            }
            let all = TopicPattern::all();
            let queried: Vec<StoredEvent> =
                store.query(&Query::pattern(all.clone())).unwrap().into_iter().collect();
            check_every_event("the query", &queried, topics, 0..each);
            let mut from_start = store.follow(&all, FollowFrom::start(Start::Beginning)).unwrap();
            let followed = take(&mut *from_start, (topics * each) as usize, &mut peak);
            check_every_event("the follower from the beginning", &followed, topics, 0..each);
            let mut live = store.follow(&all, FollowFrom::start(Start::New)).unwrap();
            publish(each, &mut peak);
            let new = take(&mut *live, topics as usize, &mut peak);
            check_every_event("the live follower", &new, topics, each..each + 1);
            let rest = take(&mut *from_start, topics as usize, &mut peak);
            check_every_event(
                "the follower from the beginning, live",
                &rest,
                topics,
                each..each + 1,
            );
            println!("peak-fds {peak}");
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// How many files this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `n` events from `follower` (within [`DEADLINE`]), noting the open files.
fn take(follower: &mut dyn seed_event::Follower, n: usize, peak: &mut usize) -> Vec<StoredEvent> {
    let mut got = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while got.len() < n && Instant::now() < deadline {
        got.extend(follower.next_batch(n - got.len(), Duration::from_millis(200)).unwrap());
        *peak = (*peak).max(open_fds());
    }
    got
}

/// Checks that `events` are exactly one event of each round in `rounds` for
/// each of `topics` topics (as the `many-topics` child appends them), each
/// topic's in order.
fn check_every_event(
    what: &str,
    events: &[StoredEvent],
    topics: u64,
    rounds: std::ops::Range<u64>,
) {
    let mut per_topic: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in events {
        let i = e.event.payload["i"].as_u64().unwrap();
        assert_eq!(e.event.topic.as_str(), format!("task.{i}.status"), "{what}");
        per_topic.entry(i).or_default().push(e.event.payload["round"].as_u64().unwrap());
    }
    let want: Vec<u64> = rounds.collect();
    assert_eq!(per_topic.len() as u64, topics, "{what}: every topic's events");
    for (i, got) in &per_topic {
        assert_eq!(got, &want, "{what}: topic {i}: each event once, in order");
    }
}

/// The payload size of event `i` of writer `w` in the big-payload test: 64 KiB to 1 MiB.
fn big_len(w: u64, i: u64) -> usize {
    let spread = (w * 7919 + i * 104_729) % 961;
    (64 + spread as usize) * 1024
}

fn fill(w: u64, i: u64, len: usize) -> String {
    let c = (b'a' + ((w * 31 + i) % 26) as u8) as char;
    std::iter::repeat_n(c, len).collect()
}

/// Runs `writers` processes appending `count` events each, then checks every event once, intact.
fn race(writers: u64, count: u64, big: bool) {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("race.procs");
    let running = spawn_appenders(dir.path(), &t, writers, count, big);
    for (cmd, spawned) in running {
        expect_success("a writer", &cmd, spawned.wait_with_output().unwrap());
    }
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.verify().unwrap(), vec![], "no corrupt line");
    let all = store.query(&Query::topic(&t)).unwrap();
    assert_eq!(all.len() as u64, writers * count, "0 lost, 0 duplicated");
    let mut seen = BTreeSet::new();
    let mut last_per_writer = BTreeMap::new();
    for e in &all {
        let (w, i) =
            (e.event.payload["w"].as_u64().unwrap(), e.event.payload["i"].as_u64().unwrap());
        assert!(seen.insert((w, i)), "event {w}/{i} twice");
        if let Some(prev) = last_per_writer.insert(w, i) {
            assert!(prev < i, "writer {w}: {i} after {prev}");
        }
        assert_eq!(e.event.source, format!("writer-{w}"));
        if big {
            let fill_text = e.event.payload["fill"].as_str().unwrap();
            assert_eq!(fill_text.len(), big_len(w, i), "event {w}/{i} has its whole payload");
            assert!(
                fill_text == fill(w, i, big_len(w, i)),
                "event {w}/{i} is not mixed with another"
            );
        }
    }
    assert!(all.windows(2).all(|p| p[0].cursor < p[1].cursor));
    let stats = store.topics().unwrap();
    assert_eq!(stats[0].events, writers * count);
}

fn eight_processes_append_20000_events_each() {
    race(8, 20_000, false);
}

fn eight_processes_append_64k_to_1m_payloads() {
    race(8, 6, true);
}

/// Reads `ack <id>` lines of a child into a channel.
fn ack_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ack ") {
                if id.len() == 36 && tx.send(id.to_string()).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

/// Whether the log's last byte is not a newline: a write is under way (or was cut).
fn mid_line(log: &Path, size: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let Ok(file) = std::fs::File::open(log) else { return false };
    let mut last = [0u8];
    size > 0 && file.read_at(&mut last, size - 1).is_ok_and(|n| n == 1) && last[0] != b'\n'
}

/// The last 2 MiB of a file (more than the biggest append of the victim).
fn tail_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).unwrap();
    let size = file.metadata().unwrap().len();
    let start = size.saturating_sub(2 << 20);
    let mut buf = vec![0; (size - start) as usize];
    file.read_exact_at(&mut buf, start).unwrap();
    buf
}

fn writer_killed_mid_append_50_times() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("crash.victim");
    let log = dir.path().join("crash.victim.jsonl");
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut torn_tails = 0;
    let mut parent_events = BTreeSet::new();
    // A follower in its own thread, reading all the time through every kill and repair.
    let watcher = FileStore::open(dir.path()).unwrap();
    let mut follower = watcher
        .follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let following = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut followed: Vec<StoredEvent> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                followed.extend(follower.next_batch(100_000, Duration::from_millis(5)).unwrap());
            }
            followed.extend(follower.next_batch(100_000, Duration::from_millis(200)).unwrap());
            followed
        })
    };
    for round in 0..50u64 {
        let start = FileStore::open(dir.path()).unwrap().last_cursor(&t).unwrap();
        let mut cmd =
            child("append-until-killed", dir.path(), &[("STORE_FILE_TOPIC", t.to_string())]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut victim = cmd.spawn().unwrap();
        let acks = ack_reader(&mut victim);
        // Let it acknowledge an append or two, then kill it as soon as the log
        // ends inside a line, that is while it writes (or after a short while).
        let wanted = 1 + round % 3;
        let deadline = Instant::now() + DEADLINE;
        let mut got = 0;
        while got < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            match acks.recv_timeout(left) {
                Ok(id) => {
                    acked.insert(id);
                    got += 1;
                }
                Err(e) => {
                    panic!("round {round}: the victim acknowledged {got} events: {e} ({cmd:?})")
                }
            }
        }
        let give_up = Instant::now() + Duration::from_millis(500);
        while Instant::now() < give_up {
            let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            if mid_line(&log, size) {
                break;
            }
            std::thread::yield_now();
        }
        victim.kill().unwrap();
        victim.wait().unwrap();
        // Acknowledgements printed before the kill.
        while let Ok(id) = acks.recv_timeout(Duration::from_millis(500)) {
            acked.insert(id);
        }
        let bytes = tail_bytes(&log);
        let last_line = bytes.strip_suffix(b"\n").and_then(|b| b.rsplit(|c| *c == b'\n').next());
        let in_batch = last_line.is_some_and(|l| l.windows(12).any(|w| w == b"\"more\":true,"));
        if !bytes.ends_with(b"\n") || in_batch {
            torn_tails += 1;
        }
        let store = FileStore::open(dir.path()).unwrap();
        let stored = store.query(&Query { after: start, ..Query::topic(&t) }).unwrap();
        let ids: BTreeSet<String> = stored.iter().map(|e| e.event.id.to_string()).collect();
        assert_eq!(ids.len(), stored.len(), "round {round}: no event twice");
        let missing: Vec<_> =
            acked.iter().filter(|id| !ids.contains(*id) && !parent_events.contains(*id)).collect();
        assert!(missing.is_empty(), "round {round}: lost {missing:?}");
        assert!(stored.windows(2).all(|p| p[0].cursor < p[1].cursor));
        assert!(stored.iter().all(|e| e.event.source == "victim"), "round {round}");
        // The log takes appends again, and they are not glued to the torn line.
        let next = store
            .append_owned(Event::new(t.clone(), "parent", obj(json!({"round": round}))))
            .unwrap();
        parent_events.insert(next.event.id.to_string());
        let last = Query { limit: Some(seed_event::Limit::Last(1)), ..Query::topic(&t) };
        assert_eq!(store.query(&last).unwrap(), vec![next], "round {round}");
        let tail = tail_bytes(&log);
        assert!(tail.ends_with(b"\n"), "round {round}: the repaired log ends with a whole line");
        // Only this round's acknowledgements are checked above; the rest at the end.
        acked.retain(|id| !ids.contains(id));
    }
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.verify().unwrap(), vec![], "no torn line was ever taken for an event");
    let all = store.query(&Query::topic(&t)).unwrap();
    let ids: BTreeSet<String> = all.iter().map(|e| e.event.id.to_string()).collect();
    assert_eq!(ids.len(), all.len());
    assert!(acked.is_empty(), "acknowledged events lost: {acked:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let followed = following.join().unwrap();
    assert!(followed == all, "the follower saw exactly the stored events, once, in order");
    assert!(parent_events.is_subset(&ids));
    // Without a kill inside an append, the repair would go untested.
    assert!(torn_tails > 0, "none of 50 kills left a torn line or an incomplete batch behind");
    eprintln!("{torn_tails} of 50 kills left a torn line or an incomplete batch behind");
}

fn clear_racing_appends_from_other_processes_loses_nothing_later() {
    // Three writers pass the lock around; a lone writer appends on the quick
    // path (its length check alone must notice each replacement).
    clear_race(3, 3000);
    clear_race(1, 20_000);
}

/// `writers` processes append `count` events each while this one clears the
/// topic three times: every event is either cleared or kept, and the kept
/// ones are exactly the newest, in order.
fn clear_race(writers: u64, count: u64) {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("clear.race");
    let total = writers * count;
    let running = spawn_appenders(dir.path(), &t, writers, count, false);
    let store = FileStore::open(dir.path()).unwrap();
    let mut removed = 0;
    for threshold in [total / 8, total / 4, total / 2] {
        // Clear once that many events are there, while the writers go on.
        let deadline = Instant::now() + DEADLINE;
        while store.last_cursor(&t).unwrap().is_none_or(|c| c.major() < threshold) {
            assert!(Instant::now() < deadline, "the writers did not reach {threshold}");
            std::thread::sleep(Duration::from_millis(1));
        }
        removed += store.clear(&Clear { topic: Some(t.clone()), before: None }).unwrap();
    }
    for (cmd, spawned) in running {
        expect_success("a writer", &cmd, spawned.wait_with_output().unwrap());
    }
    let rest = store.query(&Query::topic(&t)).unwrap();
    assert_eq!(removed + rest.len() as u64, total, "every event was either cleared or kept");
    let seqs: Vec<u64> = rest.iter().map(|e| e.cursor.major()).collect();
    let expected: Vec<u64> = (removed + 1..=total).collect();
    assert_eq!(seqs, expected, "exactly the events up to the clear went, every later one stayed");
}

/// Appends that fail part-way (the file size limit cuts a write short) are
/// taken back whole, for single events and for batches of 100 and 1,000:
/// every acknowledged call's events are there, no event of a failed call is,
/// no line is torn, and the log takes appends again afterwards.
fn appends_cut_short_by_the_file_size_limit_are_taken_back_whole() {
    for batch in [1u64, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let t = topic("size.limit");
        let mut cmd = child(
            "append-beyond-size-limit",
            dir.path(),
            &[
                ("STORE_FILE_TOPIC", t.to_string()),
                ("STORE_FILE_LIMIT", (2_000_000 + batch * 37).to_string()),
                ("STORE_FILE_BATCH", batch.to_string()),
            ],
        );
        let out = cmd.output().unwrap();
        let out = expect_success("the limited appender", &cmd, out);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let acked: BTreeSet<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ok ").and_then(|r| r.parse().ok()))
            .collect();
        let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("err ")).collect();
        assert_eq!(failed.len(), 1, "batch {batch}: one call failed: {text}");
        assert!(!acked.is_empty(), "batch {batch}: calls succeeded before: {text}");

        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.verify().unwrap().is_empty(), "batch {batch}: no torn or corrupt line");
        let mut rounds: BTreeMap<u64, u64> = BTreeMap::new();
        for e in store.query(&Query::topic(&t)).unwrap() {
            *rounds.entry(e.event.payload["round"].as_u64().unwrap()).or_default() += 1;
        }
        assert_eq!(rounds.keys().copied().collect::<BTreeSet<_>>(), acked, "batch {batch}");
        assert!(rounds.values().all(|&n| n == batch), "batch {batch}: whole calls: {rounds:?}");
        let bytes = std::fs::read(dir.path().join("size.limit.jsonl")).unwrap();
        assert_eq!(bytes.last(), Some(&b'\n'), "batch {batch}: the log ends with a whole line");

        let again: Vec<Event> = (0..batch.max(300))
            .map(|i| Event::new(t.clone(), "after", obj(json!({"round": u64::MAX, "i": i}))))
            .collect();
        store.append_batch(&t, &again).unwrap();
        let after = store.query(&Query { source: Some("after".into()), ..Query::topic(&t) });
        assert_eq!(after.unwrap().len(), again.len(), "batch {batch}: appendable afterwards");
    }
}

fn follower_in_another_process_sees_appends_clears_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("follow.procs");
    let store = FileStore::open(dir.path()).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::Beginning)).unwrap();
    let mut seen: Vec<StoredEvent> = Vec::new();
    let collect = |follower: &mut Box<dyn seed_event::Follower>, n: usize| {
        let mut got = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while got.len() < n && Instant::now() < deadline {
            got.extend(follower.next_batch(n - got.len(), Duration::from_millis(200)).unwrap());
        }
        got
    };
    for step in 0..4u64 {
        let mut cmd = appender(dir.path(), &t, step, 50, false);
        let out = cmd.output().unwrap();
        expect_success("a writer", &cmd, out);
        let got = collect(&mut follower, 50);
        assert_eq!(got.len(), 50, "step {step}");
        assert!(got.iter().all(|e| e.event.payload["w"] == step), "step {step}: only new events");
        seen.extend(got);
        // Alternately clear the topic and apply a retention limit, from another store.
        let other = FileStore::open_with(
            dir.path(),
            store_file::FileStoreConfig::default()
                .retention(store_file::Retention::new(store_file::Limits::default().max_events(7))),
        )
        .unwrap();
        if step % 2 == 0 {
            other.clear(&Clear { topic: Some(t.clone()), before: None }).unwrap();
        } else {
            assert!(other.enforce_retention().unwrap() > 0);
            assert_eq!(other.query(&Query::topic(&t)).unwrap().len(), 7);
        }
        let extra = follower.next_batch(100, Duration::from_millis(100)).unwrap();
        assert!(extra.is_empty(), "step {step}: reread after a clear: {extra:?}");
    }
    assert!(seen.windows(2).all(|p| p[0].cursor < p[1].cursor), "in order, nothing twice");
}

/// With at most 256 open files, one process appends three events to each of
/// 10,000 topics, round-robin; a query over them all returns every event; a
/// follower from the beginning returns every event once; a live follower of
/// them all sees one more event appended to each, as does the first.
fn ten_thousand_topics_with_256_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("STORE_FILE_TOPIC", "unused".to_string()),
        ("STORE_FILE_TOPICS", "10000".to_string()),
        ("STORE_FILE_EACH", "3".to_string()),
    ];
    let mut cmd = child("many-topics", dir.path(), &vars);
    let out = cmd.output().unwrap();
    let out = expect_success("the process of 10,000 topics", &cmd, out);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let peak: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("peak-fds ").and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no peak-fds line in {text:?}"));
    println!("10,000 topics: at most {peak} files open");
}

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("eight_processes_append_20000_events_each", eight_processes_append_20000_events_each),
    ("writer_killed_mid_append_50_times", writer_killed_mid_append_50_times),
    ("eight_processes_append_64k_to_1m_payloads", eight_processes_append_64k_to_1m_payloads),
    (
        "clear_racing_appends_from_other_processes_loses_nothing_later",
        clear_racing_appends_from_other_processes_loses_nothing_later,
    ),
    (
        "follower_in_another_process_sees_appends_clears_and_retention",
        follower_in_another_process_sees_appends_clears_and_retention,
    ),
    (
        "appends_cut_short_by_the_file_size_limit_are_taken_back_whole",
        appends_cut_short_by_the_file_size_limit_are_taken_back_whole,
    ),
    ("ten_thousand_topics_with_256_open_files", ten_thousand_topics_with_256_open_files),
];

fn main() {
    if let Ok(role) = std::env::var(CHILD_ROLE) {
        child_main(&role);
        return;
    }
    // Arguments that are not flags select cases by substring, like libtest's filter.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("running {} tests", cases.len());
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some((name, case)) = cases.get(i) else { break };
                let t = Instant::now();
                let ok = std::panic::catch_unwind(case).is_ok();
                println!(
                    "test {name} ... {} ({:.1?})",
                    if ok { "ok" } else { "FAILED" },
                    t.elapsed()
                );
                if !ok {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).push(*name);
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    println!(
        "\ntest result: {}. {} passed; {} failed; finished in {:.2?}",
        if failed.is_empty() { "ok" } else { "FAILED" },
        cases.len() - failed.len(),
        failed.len(),
        started.elapsed()
    );
    if !failed.is_empty() {
        eprintln!("failed: {failed:?}");
        std::process::exit(101);
    }
}
