//! Work groups on Redis, against a private `redis-server`: four member
//! processes of the library (`EventBus::join_group`) sharing a stream of
//! events, beside a raw loop of `XREADGROUP COUNT 256` + pipelined `XACK`
//! from four clients of the same `redis` crate on the same events, measured
//! in the same run; and the time from the SIGKILL of a member holding events
//! to the last of them handled by another member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::{EventBus, PublishOptions, WorkerConfig};
use redis::Value;
use seed_event::{ConsumerName, GroupConfig, JsonObject, Start, Topic, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::RedisStore;

use super::proc::{mono_ns, say_ready, say_result, wait_for_go, ChildProc};
use super::{Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const LIBRARY: &str = "groups: 4 library member processes, redis";
const RAW: &str = "groups: raw XREADGROUP COUNT 256 + pipelined XACK, 4 clients, redis";
const RATIO: &str = "groups: redis members / raw XREADGROUP loop";
const REDELIVERY: &str = "groups: redelivery after SIGKILL of a member, redis";

/// Topics the events are spread over.
const TOPICS: usize = 8;

/// The scenarios of this group.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::info(LIBRARY, "events/s"),
        Spec::info(RAW, "events/s"),
        Spec::with(RATIO, "ratio", Target::new(Op::AtLeast, 0.5, ">= 0.5x")),
        Spec::with(REDELIVERY, "ms", Target::new(Op::Below, 1000.0, "< 1 s")),
    ]
}

fn spec(name: &str) -> Spec {
    specs().into_iter().find(|s| s.name == name).unwrap_or_else(|| unreachable!("{name}"))
}

fn group(name: &str, pattern: &str) -> Result<GroupConfig> {
    Ok(GroupConfig::new(ConsumerName::new(name)?, TopicPattern::new(pattern)?)?
        .start(Start::Beginning))
}

fn topics() -> Result<Vec<Topic>> {
    Ok((0..TOPICS).map(|i| Topic::new(format!("bench.t{i}"))).collect::<Result<_, _>>()?)
}

/// Publishes `n` events over the topics `bench.t0..7` in batches of 1,000.
fn fill(store: &RedisStore, n: usize) -> Result<()> {
    let bus = EventBus::new(Arc::new(store.clone()));
    let payload: JsonObject = serde_json::from_str(r#"{"task": "bench", "n": 1}"#)?;
    let mut left = n;
    while left > 0 {
        for t in &topics()? {
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

/// What a member child reports.
#[derive(Serialize, Deserialize)]
struct Handled {
    handled: u64,
    first: u64,
    last: u64,
}

/// Child: a library member of group `bench` on Redis; after `go` it handles
/// events until none came for 300 ms, then reports.
pub fn member(args: &serde_json::Value) -> Result<()> {
    let url = args["url"].as_str().context("redis-group-member needs a url")?;
    let bus = EventBus::new(Arc::new(RedisStore::open(url)?));
    say_ready();
    wait_for_go()?;
    let handled = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new((0u64, 0u64)));
    let sub = {
        let (handled, span) = (handled.clone(), span.clone());
        bus.join_group(WorkerConfig::new(group("bench", "bench.*")?), move |_| {
            handled.fetch_add(1, Ordering::Relaxed);
            let now = mono_ns();
            let mut s = span.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.0 == 0 {
                s.0 = now;
            }
            s.1 = now;
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
    let (first, last) = *span.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    say_result(&Handled { handled: handled.load(Ordering::Relaxed), first, last })
}

/// Four library members share `n` events: events/s from the first event
/// handled to the last.
fn library(url: &str, n: usize) -> Result<f64> {
    let mut children = Vec::new();
    for _ in 0..4 {
        children.push(ChildProc::spawn("redis-group-member", &json!({ "url": url }))?);
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
    Ok(n as f64 / (last.saturating_sub(first) as f64 / 1e9))
}

/// The ids of the entries of an `XREADGROUP` reply, per stream key.
fn reply_ids(reply: Value) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    let Value::Array(streams) = reply else { return out };
    for stream in streams {
        let Value::Array(pair) = stream else { continue };
        let mut pair = pair.into_iter();
        let (Some(Value::BulkString(key)), Some(Value::Array(entries))) =
            (pair.next(), pair.next())
        else {
            continue;
        };
        let ids = entries
            .into_iter()
            .filter_map(|e| match e {
                Value::Array(mut parts) if !parts.is_empty() => match parts.swap_remove(0) {
                    Value::BulkString(id) => Some(id),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        out.push((key, ids));
    }
    out
}

/// Four clients (threads, a connection each) read the `n` events with
/// `XREADGROUP COUNT 256` over the 8 streams and ack each reply with one
/// pipeline of `XACK`s: events/s from the first read to the last ack.
fn raw(url: &str, n: usize) -> Result<f64> {
    let keys: Vec<String> =
        topics()?.iter().map(|t| format!("seed:{{{}}}:s", t.as_str())).collect();
    let client = redis::Client::open(url).context("opening a redis client")?;
    let mut con = client.get_connection().context("connecting to redis")?;
    for k in &keys {
        let _ = redis::cmd("XGROUP").arg("DESTROY").arg(k).arg("raw").query::<Value>(&mut con);
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k)
            .arg("raw")
            .arg("0")
            .query::<()>(&mut con)
            .context("XGROUP CREATE")?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let ends: Vec<Result<Instant>> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (client, keys, done) = (client.clone(), keys.clone(), done.clone());
                s.spawn(move || -> Result<Instant> {
                    let mut con = client.get_connection().context("connecting to redis")?;
                    let mut last = Instant::now();
                    while done.load(Ordering::Relaxed) < n as u64 {
                        let mut cmd = redis::cmd("XREADGROUP");
                        cmd.arg("GROUP").arg("raw").arg(format!("c{i}")).arg("COUNT").arg(256);
                        cmd.arg("STREAMS").arg(&keys);
                        for _ in &keys {
                            cmd.arg(">");
                        }
                        let reply: Value = cmd.query(&mut con).context("XREADGROUP")?;
                        let streams = reply_ids(reply);
                        let got: usize = streams.iter().map(|(_, ids)| ids.len()).sum();
                        if got == 0 {
                            if start.elapsed() > Duration::from_secs(600) {
                                bail!("the raw loop stalled");
                            }
                            continue;
                        }
                        let mut pipe = redis::pipe();
                        for (key, ids) in &streams {
                            pipe.cmd("XACK").arg(key).arg("raw").arg(ids).ignore();
                        }
                        pipe.query::<()>(&mut con).context("XACK")?;
                        done.fetch_add(got as u64, Ordering::Relaxed);
                        last = Instant::now();
                    }
                    Ok(last)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a raw client panicked"))?)
            .collect()
    });
    let mut end = start;
    for e in ends {
        end = end.max(e?);
    }
    Ok(n as f64 / end.saturating_duration_since(start).as_secs_f64())
}

/// Child: a member of group `args.group` over topic `args.topic` that
/// fetches 10 events and holds them until it is killed (through the store's
/// groups directly: a bus member hands back what its handler has not started).
pub fn holder(args: &serde_json::Value) -> Result<()> {
    use seed_event::EventStore;
    let url = args["url"].as_str().context("redis-group-holder needs a url")?;
    let name = args["group"].as_str().context("redis-group-holder needs a group")?;
    let topic = args["topic"].as_str().context("redis-group-holder needs a topic")?;
    let store = RedisStore::open(url)?;
    let groups = store.groups().context("the Redis store has work groups")?;
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

/// Milliseconds from the SIGKILL of a member holding 10 events to the last
/// of them handled by a member of this process that waited idle.
fn redelivery(store: &RedisStore, url: &str, run: usize) -> Result<f64> {
    let bus = EventBus::new(Arc::new(store.clone()));
    let (name, topic) = (format!("redeliver{run}"), format!("bench.r{run}"));
    let t = Topic::new(topic.as_str())?;
    bus.publish_batch(&t, "bench", vec![JsonObject::new(); 10], &PublishOptions::default())?;
    let args = json!({ "url": url, "group": name, "topic": topic });
    let mut child = ChildProc::spawn("redis-group-holder", &args)?;
    child.ready(Duration::from_secs(30))?;
    let (tx, rx) = mpsc::channel();
    let _waiter = bus.join_group(WorkerConfig::new(group(&name, &topic)?), move |_| {
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

/// The median of `values` (0 when there are none).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The CPU seconds the server used so far (`INFO cpu`: user + system).
fn server_cpu(url: &str) -> Result<f64> {
    let mut con = redis::Client::open(url)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("cpu").query(&mut con)?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == "used_cpu_user" || k == "used_cpu_sys").then(|| v.trim().parse::<f64>().ok())?
        })
        .sum())
}

/// Runs the scenarios.
pub fn all(plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let server = RedisServer::try_start_with(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!("no private redis-server: {e}"))?;
    let url = server.url();
    let store = RedisStore::open(&url)?;
    // A quarter of the file store's count: Redis keeps the events in memory.
    let n = (plan.group_n / 4).max(10_000);
    let (mut rates, mut raws, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_members, mut cpu_raw) = (Vec::new(), Vec::new());
    for run in 0..plan.runs {
        eprintln!("bench:   redis groups run {}/{}", run + 1, plan.runs);
        redis::cmd("FLUSHALL")
            .query::<()>(&mut redis::Client::open(url.as_str())?.get_connection()?)?;
        fill(&store, n)?;
        let before = server_cpu(&url)?;
        let rate = library(&url, n)?;
        let between = server_cpu(&url)?;
        let raw_rate = raw(&url, n)?;
        let after = server_cpu(&url)?;
        cpu_members.push((between - before) / n as f64 * 1e6);
        cpu_raw.push((after - between) / n as f64 * 1e6);
        rates.push(rate);
        raws.push(raw_rate);
        ratios.push(rate / raw_rate);
    }
    eprintln!(
        "bench: redis group members (events/s): {rates:.0?}; raw XREADGROUP loop: {raws:.0?}; \
         server CPU per event (us): members {cpu_members:.2?}, raw {cpu_raw:.2?}"
    );
    let note = format!("{n} events over {TOPICS} topics, from the first handled to the last");
    rows.push(spec(LIBRARY).row_of_runs(&rates).with_note(note.clone()));
    rows.push(spec(RAW).row_of_runs(&raws).with_note(note));
    rows.push(spec(RATIO).row_of_runs(&ratios).with_note(format!(
        "4 member processes / 4 raw clients, same server, same run; server CPU per event: \
         members {:.2} us, raw loop {:.2} us (medians)",
        median(&cpu_members),
        median(&cpu_raw)
    )));
    let times = (0..plan.runs.max(11))
        .map(|run| redelivery(&store, &url, run))
        .collect::<Result<Vec<f64>>>()?;
    eprintln!("bench: redis group redelivery after SIGKILL (ms): {times:.1?}");
    rows.push(
        spec(REDELIVERY)
            .row_of_runs(&times)
            .with_note(format!("{} runs, 10 events held by the killed member", times.len())),
    );
    Ok(())
}
