//! Entity states from many real processes on one events directory: eight
//! processes incrementing one counter with compare-and-set, and writers killed
//! in the middle of state changes.
//!
//! This test binary has its own `main` (`harness = false`): run with
//! `STATE_CHILD=<role>` it plays that role as a child process; otherwise it
//! runs the cases below, each selected by a substring on the command line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seed_event::{EventStore, Query, Topic};
use seed_state::conformance::{check_counter, create_counter, increment};
use seed_state::{Change, Entry, NewState, StateStore};
use serde_json::json;
use store_file::{FileStore, FileStoreConfig};

const CHILD_ROLE: &str = "STATE_CHILD";
const DEADLINE: Duration = Duration::from_secs(120);

fn child(role: &str, dir: &Path, vars: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(CHILD_ROLE, role).env("STATE_DIR", dir);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The store at `dir`, keeping every version of the 8,001 the counter test checks.
fn states_at(dir: &str) -> (Arc<dyn EventStore>, StateStore) {
    let config = FileStoreConfig::default().state_history(10_000);
    let store: Arc<dyn EventStore> = Arc::new(FileStore::open_with(dir, config).unwrap());
    (store.clone(), StateStore::new(store).unwrap())
}

fn child_main(role: &str) {
    let (_, states) = states_at(&var("STATE_DIR"));
    match role {
        "increment" => {
            let times: u64 = var("STATE_TIMES").parse().unwrap();
            let conflicts = increment(&states, "counter", "c", times, &var("STATE_NAME"));
            println!("conflicts {conflicts}");
        }
        "churn" => {
            // Changes entities for ever, printing each acknowledged version.
            for i in 0u64.. {
                let id = format!("e{}", i % 40);
                let entry = match states.get("churn", &id) {
                    Ok(e) if i % 7 == 0 => {
                        states.delete("churn", &id, e.state.version(), Change::by("churn"))
                    }
                    Ok(e) => states.update(
                        "churn",
                        &id,
                        e.state.version(),
                        Change::by("churn").replace_data(
                            json!({"i": i, "pid": std::process::id()})
                                .as_object()
                                .cloned()
                                .unwrap(),
                        ),
                    ),
                    Err(_) => states.create(NewState::new(id.clone(), "churn", "churn")),
                };
                let entry = entry.unwrap();
                println!("ok {id} {}", entry.state.version());
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Eight processes increment one counter 1,000 times each with retry on
/// conflict: the counter ends at 8,000, versions 1..=8,001 each once.
fn eight_processes_increment_one_counter() {
    let dir = tempfile::tempdir().unwrap();
    let (store, states) = states_at(dir.path().to_str().unwrap());
    create_counter(&states, "counter", "c");
    let children: Vec<_> = (0..8)
        .map(|w| {
            let mut cmd = child(
                "increment",
                dir.path(),
                &[("STATE_TIMES", "1000".into()), ("STATE_NAME", format!("w{w}"))],
            );
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            (format!("{cmd:?}"), cmd.spawn().unwrap())
        })
        .collect();
    let mut conflicts = 0u64;
    for (cmd, c) in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        conflicts += stdout.trim().strip_prefix("conflicts ").unwrap().parse::<u64>().unwrap();
    }
    check_counter(&store, "counter", "c", 8000);
    println!("    {conflicts} conflicts met and retried");
}

/// The newest record of every entity, folded from the log itself.
fn newest_in_log(store: &Arc<dyn EventStore>) -> BTreeMap<String, Entry> {
    let topic = Topic::new("state.churn").unwrap();
    let mut out = BTreeMap::new();
    for e in store.query(&Query::topic(&topic)).unwrap() {
        let entry = Entry::from_event(&e).unwrap();
        out.insert(entry.state.entity_id().to_string(), entry);
    }
    out
}

/// Writers killed at random points of state changes: afterwards every entity's
/// state is its newest record in the log (the index is caught up or rebuilt),
/// nothing acknowledged is lost, and writing goes on with the next version.
fn writer_killed_mid_change_30_times() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..30u64 {
        assert!(started.elapsed() < DEADLINE, "took too long");
        let mut cmd = child("churn", dir.path(), &[]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut c = cmd.spawn().unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        // Kill after a varying number of acknowledged changes.
        for _ in 0..(5 + round * 13 % 50) {
            let line = lines.next().unwrap().unwrap();
            let mut parts = line.split(' ').skip(1);
            let (id, v) =
                (parts.next().unwrap().to_string(), parts.next().unwrap().parse().unwrap());
            acked.insert(id, v);
        }
        c.kill().unwrap();
        c.wait().unwrap();
        let (store, states) = states_at(dir.path().to_str().unwrap());
        let log = newest_in_log(&store);
        for (id, newest) in &log {
            let got = match states.get("churn", id) {
                Ok(e) => e,
                Err(e) if e.kind() == seed_event::ErrorKind::NotFound => {
                    states.history("churn", id).unwrap().pop().unwrap()
                }
                Err(e) => panic!("round {round}: {id}: {e}"),
            };
            assert_eq!(got.state.version(), newest.state.version(), "round {round}: {id}");
            assert_eq!(got.deleted, newest.deleted, "round {round}: {id}");
            assert!(
                got.state.version() >= acked.get(id).copied().unwrap_or(0),
                "round {round}: {id}"
            );
        }
        let listed = states.list("churn", None).unwrap().count();
        assert_eq!(listed, log.values().filter(|e| !e.deleted).count(), "round {round}");
    }
}

type Case = (&'static str, fn());

const CASES: &[Case] = &[
    ("eight_processes_increment_one_counter", eight_processes_increment_one_counter),
    ("writer_killed_mid_change_30_times", writer_killed_mid_change_30_times),
];

fn main() {
    if let Ok(role) = std::env::var(CHILD_ROLE) {
        child_main(&role);
        return;
    }
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut failed = Vec::new();
    for (name, case) in CASES {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        let ok = std::panic::catch_unwind(case).is_ok();
        println!("test {name} ... {} ({:.1?})", if ok { "ok" } else { "FAILED" }, t.elapsed());
        if !ok {
            failed.push(*name);
        }
    }
    println!(
        "\ntest result: {}. {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
