//! Cross-process latency: an append in this process, returned by a follower
//! (or delivered to a bus subscriber) in another; and the inotify limit.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use seed_event::{EventStore, FollowFrom, Start, Topic, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store_file::FileStore;

use super::events::{sent_at, Maker};
use super::proc::{mono_ns, say_ready, say_result, ChildProc};
use super::{limits, p50_p99, Plan, Spec};
use crate::bench::report::{Row, Target};

const INOTIFY: &str = "limit: inotify reader, cross-process";
const FILE_FOLLOW: &str = "file: follow latency, cross-process";
const BUS_SUBSCRIBE: &str = "bus: subscribe latency, cross-process";

/// The scenarios of [`file_and_bus`].
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::info(INOTIFY, "ms"),
        Spec::with(FILE_FOLLOW, "ms", Target::latency(0.1, 0.5, "p50 < 0.1, p99 < 0.5 ms")),
        Spec::with(BUS_SUBSCRIBE, "ms", Target::latency(0.2, 1.0, "p50 < 0.2, p99 < 1 ms")),
    ]
}

/// What a latency child reports: one delivery latency per event, in ns.
#[derive(Serialize, Deserialize)]
pub struct Latencies {
    /// The latencies, in the order delivered.
    pub ns: Vec<u64>,
}

/// Opens the store a follower child is told to use: `{"backend": "file", "dir": …}` or `{"backend": "redis", "url": …}`.
fn open_store(args: &Value) -> Result<Arc<dyn EventStore>> {
    match args["backend"].as_str() {
        Some("file") => {
            let dir = args["dir"].as_str().context("a file follower needs a dir")?;
            Ok(Arc::new(FileStore::open(dir)?))
        }
        Some("redis") => {
            let url = args["url"].as_str().context("a redis follower needs a url")?;
            Ok(Arc::new(store_redis::RedisStore::open(url)?))
        }
        other => bail!("unknown backend {other:?}"),
    }
}

/// Child: follows the topic from `New`; for each of `count` events, when it
/// came back minus when it was sent.
pub fn follower(args: &Value) -> Result<()> {
    let store = open_store(args)?;
    let topic = Topic::new(args["topic"].as_str().context("follower needs a topic")?)?;
    let count = args["count"].as_u64().context("follower needs a count")? as usize;
    let mut follower = store.follow(&TopicPattern::from(topic), FollowFrom::start(Start::New))?;
    say_ready();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let batch = follower.next_batch(1024, Duration::from_secs(30))?;
        let now = mono_ns();
        if batch.is_empty() {
            bail!("no event within 30 s after {} of {count}", out.len());
        }
        out.extend(batch.iter().map(|e| now.saturating_sub(sent_at(&e.event))));
    }
    say_result(&Latencies { ns: out })
}

/// Child: a bus subscription from `New` on the file store, timing each delivery.
pub fn bus_subscriber(args: &Value) -> Result<()> {
    let store = open_store(args)?;
    let pattern = TopicPattern::new(args["topic"].as_str().context("subscriber needs a topic")?)?;
    let count = args["count"].as_u64().context("subscriber needs a count")? as usize;
    let bus = bus::EventBus::new(store);
    let (tx, rx) = mpsc::channel();
    let sub = bus.subscribe(&pattern, bus::StartAt::New, move |e| {
        let now = mono_ns();
        tx.send(now.saturating_sub(sent_at(&e.event)))?;
        Ok(())
    })?;
    say_ready();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("no delivery within 30 s after {} of {count}", out.len()))?;
        out.push(got);
    }
    sub.unsubscribe()?;
    say_result(&Latencies { ns: out })
}

/// Starts `role` with `args`, then publishes `count` events with `publish`
/// (given each event's send time), one every `gap`; latencies in ms.
pub fn run_latency(
    role: &str,
    args: &Value,
    count: usize,
    gap: Duration,
    mut publish: impl FnMut(u64, u64) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut child = ChildProc::spawn(role, args)?;
    child.ready(Duration::from_secs(30))?;
    for i in 0..count as u64 {
        publish(mono_ns(), i)?;
        std::thread::sleep(gap);
    }
    let got: Latencies = child.result(Duration::from_secs(60))?;
    if got.ns.len() != count {
        bail!("{role} returned {} latencies for {count} events", got.ns.len());
    }
    Ok(got.ns.into_iter().map(|ns| ns as f64 / 1e6).collect())
}

/// Latency to a follower or subscriber (`role`) in another process reading
/// `topic_name` through `backend`, over `plan.runs.min(3)` runs; `publish`
/// appends one event given its send time and number.
pub fn store_latency(
    plan: &Plan,
    role: &str,
    backend: Value,
    topic_name: &str,
    mut publish: impl FnMut(u64, u64) -> Result<()>,
) -> Result<Vec<(f64, f64)>> {
    let mut args = backend;
    args["topic"] = json!(topic_name);
    args["count"] = json!(plan.latency_n);
    let mut runs = Vec::new();
    for _ in 0..plan.runs.min(3) {
        let samples = run_latency(role, &args, plan.latency_n, plan.latency_gap, &mut publish)?;
        runs.push(p50_p99(&samples));
    }
    Ok(runs)
}

/// The inotify limit, the file store's follow latency and the bus's subscribe latency.
pub fn file_and_bus(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let specs = specs();
    let note = format!(
        "{} runs of {} events, one every {} µs; p50 and p99 are medians over runs",
        plan.runs.min(3),
        plan.latency_n,
        plan.latency_gap.as_micros()
    );
    let dir = work.join("latency");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    for _ in 0..plan.runs.min(3) {
        runs.push(p50_p99(&limits::inotify_latency(&dir, plan.latency_n, plan.latency_gap)?));
    }
    rows.push(specs[0].row_of_latency_runs(&runs).with_note(note.clone()));

    let store: Arc<dyn EventStore> = Arc::new(FileStore::open(&dir)?);
    let backend = json!({"backend": "file", "dir": dir.to_string_lossy()});
    let topic = Topic::new("bench.follow")?;
    let maker = Maker::new(&topic);
    let runs = store_latency(plan, "follower", backend.clone(), topic.as_str(), |t, i| {
        store.append(&maker.event("bench", i, Some(t)))?;
        Ok(())
    })?;
    rows.push(specs[1].row_of_latency_runs(&runs).with_note(note.clone()));
    let bus = bus::EventBus::new(store.clone());
    let topic = Topic::new("bench.subscribe")?;
    let maker = Maker::new(&topic);
    let runs = store_latency(plan, "bus-subscriber", backend, topic.as_str(), |t, i| {
        let payload = maker.event("bench", i, Some(t)).payload;
        bus.publish(&topic, "bench", payload, bus::PublishOptions::default())?;
        Ok(())
    })?;
    rows.push(
        specs[2].row_of_latency_runs(&runs).with_note(format!("{note}; bus publish -> handler")),
    );
    drop(bus);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
