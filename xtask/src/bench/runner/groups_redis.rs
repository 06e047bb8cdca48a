//! Work groups on Redis, against a private `redis-server`: four member
//! processes of the library (`EventBus::join_group`) sharing a stream of
//! events, beside a raw loop of `XREADGROUP COUNT 256` + pipelined `XACK`
//! from four clients of the same `redis` crate on the same events, measured
//! in the same run; and the time from the SIGKILL of a member holding events
//! to the last of them handled by another member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::EventBus;
use redis::Value;
use seed_event::Topic;
use serde_json::json;
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::RedisStore;

use super::{groups, Plan, Spec};
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

fn topics() -> Result<Vec<Topic>> {
    Ok((0..TOPICS).map(|i| Topic::new(format!("bench.t{i}"))).collect::<Result<_, _>>()?)
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

/// [`groups::redelivery`] of run `run`'s own group and topic.
fn redelivery(store: &RedisStore, url: &str, run: usize) -> Result<f64> {
    let bus = EventBus::new(Arc::new(store.clone()));
    let args =
        json!({ "url": url, "group": format!("redeliver{run}"), "topic": format!("bench.r{run}") });
    groups::redelivery(&bus, &args)
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
        groups::fill(&EventBus::new(Arc::new(store.clone())), n)?;
        let before = server_cpu(&url)?;
        let (rate, _) = groups::library(&json!({ "url": url }), n)?;
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
