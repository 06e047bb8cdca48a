//! Work groups on the file store: four member processes of the library
//! (`EventBus::join_group`) and four `seed subscribe --group` processes
//! sharing a stream of events, the peak memory of a member over its share,
//! and the time from the SIGKILL of a member holding events to the last of
//! them handled by another member.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::{EventBus, PublishOptions, WorkerConfig};
use seed_event::{ConsumerName, EventStore, GroupConfig, JsonObject, Start, Topic, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::proc::{mono_ns, proc_status_kib, say_ready, say_result, wait_for_go, ChildProc};
use super::{Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const LIBRARY: &str = "groups: 4 library member processes, file";
const CLI: &str = "groups: 4 seed subscribe --group processes, file";
const RSS: &str = "groups: member peak RSS growth over its share";
const REDELIVERY: &str = "groups: redelivery after SIGKILL of a member, file";

/// The scenarios of this group.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::with(LIBRARY, "events/s", Target::new(Op::AtLeast, 500_000.0, ">= 500k/s")),
        Spec::with(CLI, "events/s", Target::new(Op::AtLeast, 200_000.0, ">= 200k/s")),
        Spec::info(RSS, "KiB"),
        Spec::with(REDELIVERY, "ms", Target::new(Op::Below, 500.0, "< 0.5 s")),
    ]
}

fn spec(name: &str) -> Spec {
    specs().into_iter().find(|s| s.name == name).unwrap_or_else(|| unreachable!("{name}"))
}

fn group(name: &str, pattern: &str) -> Result<GroupConfig> {
    Ok(GroupConfig::new(ConsumerName::new(name)?, TopicPattern::new(pattern)?)?
        .start(Start::Beginning))
}

/// Publishes `n` events over 8 topics `bench.t0..7` in batches of 1,000.
pub(super) fn fill(bus: &EventBus, n: usize) -> Result<()> {
    let topics: Vec<Topic> =
        (0..8).map(|i| Topic::new(format!("bench.t{i}"))).collect::<Result<_, _>>()?;
    let payload: JsonObject = serde_json::from_str(r#"{"task": "bench", "n": 1}"#)?;
    let mut left = n;
    while left > 0 {
        for t in &topics {
            let k = left.min(1000);
            if k == 0 {
                break;
            }
            left -= k;
            bus.publish_batch(t, "bench", vec![payload.clone(); k], &PublishOptions::default())?;
        }
    }
    Ok(())
}

/// The store a member child works on: Redis at `args.url`, else the file
/// store at `args.dir`.
fn child_store(args: &serde_json::Value) -> Result<Arc<dyn EventStore>> {
    if let Some(url) = args["url"].as_str() {
        return Ok(Arc::new(store_redis::RedisStore::open(url)?));
    }
    let dir = args["dir"].as_str().context("a group child needs a dir or a url")?;
    Ok(Arc::new(store_file::FileStore::open(dir)?))
}

/// What a member child reports.
#[derive(Serialize, Deserialize)]
pub(super) struct Handled {
    handled: u64,
    first: u64,
    last: u64,
    rss_10k: u64,
    hwm: u64,
}

/// Child: a library member of group `bench` (on the store of
/// [`child_store`]); after `go` it handles events until none came for
/// 300 ms, then reports.
pub fn member(args: &serde_json::Value) -> Result<()> {
    let bus = EventBus::new(child_store(args)?);
    say_ready();
    wait_for_go()?;
    let handled = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let sub = {
        let (handled, span) = (handled.clone(), span.clone());
        bus.join_group(WorkerConfig::new(group("bench", "bench.*")?), move |_| {
            let n = handled.fetch_add(1, Ordering::Relaxed) + 1;
            let now = mono_ns();
            let mut s = span.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.0 == 0 {
                s.0 = now;
            }
            s.1 = now;
            if n == 10_000 {
                s.2 = proc_status_kib("VmRSS").unwrap_or(0);
            }
            Ok(())
        })?
    };
    loop {
        thread::sleep(Duration::from_millis(20));
        let last = span.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1;
        if last != 0 && mono_ns().saturating_sub(last) > 300_000_000 {
            break;
        }
    }
    sub.unsubscribe()?;
    let (first, last, rss_10k) = *span.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let hwm = proc_status_kib("VmHWM")?;
    say_result(&Handled { handled: handled.load(Ordering::Relaxed), first, last, rss_10k, hwm })
}

/// Four library member processes (`args`: their store, see [`child_store`])
/// share `n` events: events/s from the first event handled to the last, and
/// each member's report.
pub(super) fn library(args: &serde_json::Value, n: usize) -> Result<(f64, Vec<Handled>)> {
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(ChildProc::spawn("group-member", args)?);
    }
    for c in &mut children {
        c.ready(Duration::from_secs(30))?;
    }
    for c in &mut children {
        c.send("go")?;
    }
    let mut results = Vec::new();
    for c in children {
        results.push(c.result::<Handled>(Duration::from_secs(600))?);
    }
    let total: u64 = results.iter().map(|r| r.handled).sum();
    if total != n as u64 {
        bail!("the members handled {total} events, expected {n}");
    }
    let first = results.iter().map(|r| r.first).min().unwrap_or(0);
    let last = results.iter().map(|r| r.last).max().unwrap_or(0);
    Ok((n as f64 / (last.saturating_sub(first) as f64 / 1e9), results))
}

/// The largest peak RSS growth past 10k events among the members' reports.
fn rss_growth(results: &[Handled]) -> f64 {
    results
        .iter()
        .filter(|r| r.rss_10k > 0)
        .map(|r| r.hwm.saturating_sub(r.rss_10k) as f64)
        .fold(0.0, f64::max)
}

/// Four `seed subscribe --group` processes share `n` events: events/s from
/// the first line printed to the last.
fn cli(seed: &Path, dir: &Path, n: usize) -> Result<f64> {
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    for _ in 0..4 {
        let mut child = Command::new(seed)
            .args(["subscribe", "--topic", "bench.*", "--group", "cli", "--from", "beginning"])
            .env("SEED_EVENTS_DIR", dir)
            .env_remove("SEED_REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", seed.display()))?;
        let out = child.stdout.take().context("a piped stdout")?;
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 16, out);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).map(|k| k > 0).unwrap_or(false) {
                line.clear();
                if tx.send(Instant::now()).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    let mut first = None;
    let mut last = Instant::now();
    let mut got = 0;
    while got < n {
        let at =
            rx.recv_timeout(Duration::from_secs(60)).context("the subscribers stopped printing")?;
        first.get_or_insert(at);
        last = at;
        got += 1;
    }
    for child in &mut children {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    for mut child in children {
        let _ = child.wait();
    }
    let first = first.context("no line")?;
    Ok(n as f64 / last.saturating_duration_since(first).as_secs_f64())
}

/// Child: a member of group `args.group` (default `redeliver`) over
/// `args.topic` (default `bench.r`) that fetches 10 events and holds them
/// until it is killed (through the store's groups directly: a bus member
/// hands back what its handler has not started).
pub fn holder(args: &serde_json::Value) -> Result<()> {
    let store = child_store(args)?;
    let groups = store.groups().context("the store has work groups")?;
    let name = args["group"].as_str().unwrap_or("redeliver");
    let topic = args["topic"].as_str().unwrap_or("bench.r");
    let mut member = groups.join(&group(name, topic)?.max_in_flight(10), "holder")?;
    let mut held = 0;
    while held < 10 {
        held += member.fetch(10 - held, Duration::from_secs(30))?.len();
    }
    say_ready();
    loop {
        thread::park();
    }
}

/// Milliseconds from the SIGKILL of a member holding 10 events of `topic`
/// (a [`holder`] child started with `args`) to the last of them handled by
/// a member of this process that waited idle.
pub(super) fn redelivery(bus: &EventBus, args: &serde_json::Value) -> Result<f64> {
    let name = args["group"].as_str().unwrap_or("redeliver");
    let topic = args["topic"].as_str().unwrap_or("bench.r");
    let t = Topic::new(topic)?;
    bus.publish_batch(&t, "bench", vec![JsonObject::new(); 10], &PublishOptions::default())?;
    let mut child = ChildProc::spawn("group-holder", args)?;
    child.ready(Duration::from_secs(30))?;
    let (tx, rx) = mpsc::channel();
    let _waiter = bus.join_group(WorkerConfig::new(group(name, topic)?), move |_| {
        let _ = tx.send(Instant::now());
        Ok(())
    })?;
    if rx.recv_timeout(Duration::from_millis(300)).is_ok() {
        bail!("the waiting member got an event the holder holds");
    }
    let killed = Instant::now();
    drop(child);
    let mut last = killed;
    for _ in 0..10 {
        last = rx.recv_timeout(Duration::from_secs(30)).context("an event never came back")?;
    }
    Ok(last.saturating_duration_since(killed).as_secs_f64() * 1e3)
}

/// [`redelivery`] on a new file store in `dir`.
fn file_redelivery(dir: &Path) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let bus = EventBus::new(Arc::new(store_file::FileStore::open(dir)?));
    redelivery(&bus, &json!({ "dir": dir }))
}

/// Runs the scenarios.
pub fn all(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let n = plan.group_n;
    let dir = work.join("groups");
    let (mut rates, mut growths, mut cli_rates) = (Vec::new(), Vec::new(), Vec::new());
    let seed = std::env::current_exe()?.with_file_name("seed");
    for _ in 0..plan.runs {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        fill(&EventBus::new(Arc::new(store_file::FileStore::open(&dir)?)), n)?;
        let (rate, results) = library(&json!({ "dir": dir }), n)?;
        rates.push(rate);
        growths.push(rss_growth(&results));
        if seed.exists() {
            cli_rates.push(cli(&seed, &dir, n)?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "bench: group members (events/s): {rates:.0?}; seed subscribe --group: {cli_rates:.0?}"
    );
    let note = format!("{n} events over 8 topics, from the first handled to the last");
    rows.push(spec(LIBRARY).row_of_runs(&rates).with_note(note.clone()));
    if cli_rates.is_empty() {
        rows.push(spec(CLI).skipped(format!("no seed binary at {}", seed.display())));
    } else {
        rows.push(spec(CLI).row_of_runs(&cli_rates).with_note(note));
    }
    rows.push(spec(RSS).row_of_runs(&growths).with_note(format!(
        "VmHWM at the end minus VmRSS after 10k events, largest of 4 members sharing {n}"
    )));
    let times = (0..plan.runs.max(11))
        .map(|_| file_redelivery(&work.join("groups-redelivery")))
        .collect::<Result<Vec<f64>>>()?;
    eprintln!("bench: group redelivery after SIGKILL (ms): {times:.1?}");
    rows.push(
        spec(REDELIVERY)
            .row_of_runs(&times)
            .with_note(format!("{} runs, 10 events held by the killed member", times.len())),
    );
    Ok(())
}
