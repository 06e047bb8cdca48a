//! Entity states: the file store's get (warm, and a fresh process) among many
//! entities, update with compare-and-set, opening a store of many entities,
//! Redis get and update, and watch delivery across processes.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use seed_event::{state_topic, ChangeEvent, Event, EventStore, JsonObject, StatePut, Timestamp};
use seed_state::{Change, NewState, StateStore, WatchEvent, WatchFrom};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store_file::FileStore;
use store_redis::testing::{find_program, state_put_command, RedisServer, ServerOptions};
use store_redis::RedisStore;

use super::latency::{run_latency, Latencies};
use super::limits::LINE_BYTES;
use super::proc::{mono_ns, proc_status_kib, say_ready, say_result, ChildProc};
use super::redis::{redis_benchmark, redis_benchmark_command};
use super::{p50_p99, Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const GET_WARM: &str = "state file: get, warm process";
const GET_PROCESS: &str = "state file: a fresh process opens the store and gets one";
const UPDATE: &str = "state file: update with compare-and-set, one process";
const OPEN: &str = "state file: open the store and get one, in a new process";
const OPEN_RSS: &str = "state file: peak RSS of that process";
const REDIS_GET: &str = "state redis: get";
const REDIS_UPDATE: &str = "state redis: update with compare-and-set, one thread";
const REDIS_RATIO: &str = "state redis: update / redis-benchmark -c 1 XADD";
const WATCH: &str = "state: watch delivery across processes (file)";
const REDIS_WRITES: &str = "state redis: limit: a script of an update's reads and writes / XADD";
const REDIS_EMPTY: &str = "state redis: limit: an empty script / XADD";
const REDIS_SCRIPT_ONLY: &str =
    "state redis: limit: the update's script with its arguments made beforehand / XADD";

/// What an update's script does at least, with nothing computed: read the
/// newest record, append, set the latest and kept versions, count bytes.
const WRITES: &str = "local cur = redis.call('HGET', KEYS[3], 'e')
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1], 'k', 'e')
redis.call('HSET', KEYS[3], 'e', '2 ' .. id .. ' ' .. ARGV[1])
redis.call('HSET', KEYS[4], 'e', id .. ' ' .. (#ARGV[1] + 1))
redis.call('HINCRBY', KEYS[2], 'bytes', #ARGV[1])
return {1, id}";

/// A script that does nothing: what running any script costs.
const EMPTY: &str = "return 1";

/// The entity type the big population lives in.
const KIND: &str = "bench";

/// The state scenarios.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::with(GET_WARM, "ms", Target::new(Op::Below, 0.05, "< 0.05 ms")),
        Spec::with(GET_PROCESS, "ms", Target::new(Op::Below, 5.0, "< 5 ms")),
        Spec::with(UPDATE, "updates/s", Target::new(Op::AtLeast, 100_000.0, ">= 100k/s")),
        Spec::with(OPEN, "ms", Target::new(Op::Below, 1000.0, "< 1 s")),
        Spec::with(OPEN_RSS, "MiB", Target::new(Op::Below, 150.0, "< 150 MiB")),
        Spec::with(REDIS_GET, "ms", Target::new(Op::Below, 0.3, "< 0.3 ms")),
        Spec::info(REDIS_UPDATE, "updates/s"),
        Spec::with(REDIS_RATIO, "x", Target::new(Op::AtLeast, 0.7, ">= 0.7x")),
        Spec::with(WATCH, "ms", Target::latency(1.0, 1.0, "p99 < 1 ms")),
        Spec::info(REDIS_WRITES, "x"),
        Spec::info(REDIS_EMPTY, "x"),
        Spec::info(REDIS_SCRIPT_ONLY, "x"),
    ]
}

fn data(value: Value) -> JsonObject {
    value.as_object().cloned().unwrap_or_default()
}

/// What a child that opened the store reports.
#[derive(Debug, Serialize, Deserialize)]
struct Opened {
    /// From before opening the store to after the get, in ms.
    ms: f64,
    /// Peak RSS, KiB.
    hwm_kib: u64,
}

/// Child: opens the file store, gets one entity, reports the time and its peak RSS.
pub fn getter(args: &Value) -> Result<()> {
    let dir = args["dir"].as_str().context("state-get needs a dir")?;
    let id = args["id"].as_str().context("state-get needs an id")?;
    let start = Instant::now();
    let states = StateStore::new(Arc::new(FileStore::open(dir)?))?;
    let entry = states.get(KIND, id)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if entry.state.entity_id() != id {
        bail!("got {} for {id}", entry.state.entity_id());
    }
    if args["quiet"].as_bool() == Some(true) {
        return Ok(());
    }
    say_result(&Opened { ms, hwm_kib: proc_status_kib("VmHWM")? })
}

/// Child: watches one entity; for each change, when it came minus when it was made.
pub fn watcher(args: &Value) -> Result<()> {
    let dir = args["dir"].as_str().context("state-watcher needs a dir")?;
    let count = args["count"].as_u64().context("state-watcher needs a count")? as usize;
    let states = StateStore::new(Arc::new(FileStore::open(dir)?))?;
    let mut watch = states.watch("watched", Some("w"), WatchFrom::Now)?;
    loop {
        match watch.next(Duration::from_secs(30))? {
            Some(WatchEvent::Ready) => break,
            Some(_) => {}
            None => bail!("the watch was not ready within 30 s"),
        }
    }
    say_ready();
    let mut ns = Vec::with_capacity(count);
    while ns.len() < count {
        match watch.next(Duration::from_secs(30))? {
            Some(WatchEvent::Entry(entry)) => {
                let now = mono_ns();
                let sent = entry.state.data()["t"].as_u64().unwrap_or(now);
                ns.push(now.saturating_sub(sent));
            }
            Some(other) => bail!("unexpected {other:?}"),
            None => bail!("no change within 30 s after {} of {count}", ns.len()),
        }
    }
    say_result(&Latencies { ns })
}

/// Creates `n` entities `e0…` of [`KIND`], each with a little data.
fn populate(states: &StateStore, n: usize) -> Result<()> {
    for i in 0..n {
        let new = NewState::new(format!("e{i}"), KIND, "bench")
            .data(data(json!({"i": i, "title": "an entity of the benchmark"})));
        states.create(new)?;
    }
    Ok(())
}

/// A cheap pseudo-random sequence (xorshift), so lookups do not walk the table in order.
fn picks(n: usize, count: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

/// Every state scenario.
pub fn all(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let specs = specs();
    let n = plan.history_n;
    let dir = work.join("states");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn EventStore> = Arc::new(FileStore::open(&dir)?);
    let states = StateStore::new(store.clone())?;
    let start = Instant::now();
    populate(&states, n)?;
    eprintln!("bench:   {n} entities created in {:.1}s", start.elapsed().as_secs_f64());

    // Get, warm.
    let mut runs = Vec::new();
    for run in 0..plan.runs {
        let mut samples = Vec::with_capacity(plan.query_iters);
        for i in picks(n, plan.query_iters + run) {
            let id = format!("e{i}");
            let t = Instant::now();
            let entry = states.get(KIND, &id)?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
            if entry.state.version() != 1 {
                bail!("{id} is at version {}", entry.state.version());
            }
        }
        runs.push(p50_p99(&samples));
    }
    rows.push(specs[0].row_of_latency_runs(&runs).with_note(format!(
        "{} gets of random entities among {n} per run, one process",
        plan.query_iters
    )));

    // A fresh process: spawn, open, get, exit.
    let exe = std::env::current_exe()?;
    let mut samples = Vec::new();
    for i in picks(n, 50) {
        let args = json!({"dir": dir.to_string_lossy(), "id": format!("e{i}"), "quiet": true});
        let t = Instant::now();
        let status = Command::new(&exe)
            .args(["bench-scenario", "child", "state-get", &args.to_string()])
            .status()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        if !status.success() {
            bail!("state-get failed: {status}");
        }
    }
    let (p50, p99) = p50_p99(&samples);
    rows.push(specs[1].row(p50, Some(p99), samples.len()).with_note(format!(
        "50 runs of the runner as a child (fork, exec, open, get, exit) among {n} entities"
    )));

    // Opening the store in a new process: time and peak memory.
    let mut times = Vec::new();
    let mut hwm = Vec::new();
    for i in picks(n, plan.runs) {
        let args = json!({"dir": dir.to_string_lossy(), "id": format!("e{i}")});
        let opened: Opened =
            ChildProc::spawn("state-get", &args)?.result(Duration::from_secs(60))?;
        times.push(opened.ms);
        hwm.push(opened.hwm_kib as f64 / 1024.0);
    }
    rows.push(specs[3].row_of_runs(&times).with_note(format!("{n} entities of one type")));
    rows.push(specs[4].row_of_runs(&hwm).with_note("VmHWM of the child".to_string()));

    // Update with compare-and-set: 1,000 entities of another type, in turn.
    let cas = StateStore::new(store.clone())?;
    let entities = 1000usize;
    for i in 0..entities {
        cas.create(NewState::new(format!("c{i}"), "cas", "bench").data(data(json!({"n": 0}))))?;
    }
    let mut per_run = Vec::new();
    let updates = plan.publish_n;
    let mut versions = vec![1u64; entities];
    for _ in 0..plan.runs {
        let start = Instant::now();
        for u in 0..updates {
            let e = u % entities;
            let change = Change::by("bench").replace_data(data(json!({"n": versions[e]})));
            cas.update("cas", &format!("c{e}"), versions[e], change)?;
            versions[e] += 1;
        }
        per_run.push(updates as f64 / start.elapsed().as_secs_f64());
    }
    rows.push(specs[2].row_of_runs(&per_run).with_note(format!(
        "{updates} updates per run over {entities} entities (each a get and a put), with compaction"
    )));

    // Watch delivery across processes.
    states.create(NewState::new("w", "watched", "bench"))?;
    let mut version = 1u64;
    let args = json!({"dir": dir.to_string_lossy(), "count": plan.latency_n});
    let mut runs = Vec::new();
    for _ in 0..plan.runs.min(3) {
        let samples =
            run_latency("state-watcher", &args, plan.latency_n, plan.latency_gap, |t, i| {
                let change = Change::by("bench").replace_data(data(json!({"t": t, "i": i})));
                states.update("watched", "w", version, change)?;
                version += 1;
                Ok(())
            })?;
        runs.push(p50_p99(&samples));
    }
    rows.push(specs[8].row_of_latency_runs(&runs).with_note(format!(
        "{} changes of one entity per run, one every {} µs",
        plan.latency_n,
        plan.latency_gap.as_micros()
    )));
    drop(states);
    drop(cas);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    redis(plan, &specs, rows)
}

/// `redis-benchmark`'s arguments for EVALSHA of `sha` with an update's four keys and `line`.
fn evalsha<'a>(sha: &'a str, line: &'a str) -> [&'a str; 8] {
    ["EVALSHA", sha, "4", "bench:{w}:s", "bench:{w}:m", "bench:{w}:latest", "bench:{w}:v", line]
}

/// The entity type of the updates sent with arguments made beforehand.
const FLOOR_KIND: &str = "floor";

/// A change event of `FLOOR_KIND/f<e>` at `version`, shaped like the
/// events `StateStore` writes (same fields, same size).
fn floor_event(e: usize, version: u64, now: Timestamp) -> Result<Event> {
    let id = format!("f{e}");
    let payload = json!({
        "entity_id": id, "version": version, "deleted": false, "caused_by": null,
        "state": {
            "entity_id": id, "entity_type": FLOOR_KIND, "version": version,
            "status": "pending", "data": {"n": version},
            "created_at": now.to_string(), "updated_at": now.to_string(),
            "updated_by": "bench", "metadata": {}
        }
    });
    Ok(Event::new(state_topic(FLOOR_KIND)?, "bench", data(payload)).with_timestamp(now))
}

/// Sends `n` updates of the floor entities (1,000, round robin), their
/// script invocations made before the clock starts; returns updates/s.
fn floor_updates(
    store: &RedisStore,
    con: &mut redis::Connection,
    versions: &mut [u64],
    n: usize,
) -> Result<f64> {
    let now = Timestamp::now();
    let mut puts = Vec::with_capacity(n);
    for u in 0..n {
        let e = u % versions.len();
        versions[e] += 1;
        puts.push((format!("f{e}"), versions[e], floor_event(e, versions[e], now)?));
    }
    let commands = puts
        .iter()
        .map(|(id, version, event)| {
            let change = ChangeEvent::from_event(event)?;
            let put = StatePut { kind: FLOOR_KIND, id, version: *version, change: &change };
            state_put_command(store, &put)
        })
        .collect::<seed_event::Result<Vec<_>>>()?;
    let start = Instant::now();
    for (command, (id, version, _)) in commands.iter().zip(&puts) {
        let reply: redis::Value = command.query(con)?;
        let applied = matches!(&reply, redis::Value::Array(items)
            if items.first() == Some(&redis::Value::Int(1)));
        if !applied {
            bail!("the update of {FLOOR_KIND}/{id} to version {version} was refused: {reply:?}");
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Redis: get latency, and update throughput against `redis-benchmark -c 1` XADD.
fn redis(plan: &Plan, specs: &[Spec], rows: &mut Vec<Row>) -> Result<()> {
    let server = RedisServer::try_start_with(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!("no private redis-server: {e}"))?;
    let store = Arc::new(RedisStore::open(&server.url())?);
    let states = StateStore::new(store.clone())?;
    let n = 10_000usize;
    populate(&states, n)?;
    let mut floor_versions = vec![1u64; 1000];
    for e in 0..floor_versions.len() {
        states.create(NewState::new(format!("f{e}"), FLOOR_KIND, "bench"))?;
    }
    let mut floor_con = redis::Client::open(server.url())?.get_connection()?;
    let mut floors = Vec::new();
    let mut runs = Vec::new();
    let mut rates = Vec::new();
    let mut ratios = Vec::new();
    let mut limits = Vec::new();
    let benchmark = find_program("redis-benchmark");
    let (writes, empty) = (redis::Script::new(WRITES), redis::Script::new(EMPTY));
    {
        let mut con = redis::Client::open(server.url())?.get_connection()?;
        for script in [WRITES, EMPTY] {
            redis::cmd("SCRIPT").arg("LOAD").arg(script).query::<String>(&mut con)?;
        }
    }
    let line = "v".repeat(LINE_BYTES);
    let (script_call, empty_call) =
        (evalsha(writes.get_hash(), &line), evalsha(empty.get_hash(), &line));
    let mut empties = Vec::new();
    let mut versions = vec![1u64; 1000];
    for run in 0..plan.runs {
        let mut samples = Vec::new();
        for i in picks(n, plan.query_iters + run) {
            let t = Instant::now();
            states.get(KIND, &format!("e{i}"))?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        runs.push(p50_p99(&samples));
        let c1 = match &benchmark {
            Ok(program) => {
                let n = plan.redis_one_n;
                let xadd = redis_benchmark(program, server.port(), n, &["-c", "1"], "bench:rb")?;
                let script =
                    redis_benchmark_command(program, server.port(), n, &["-c", "1"], &script_call)?;
                limits.push(script / xadd);
                let nothing =
                    redis_benchmark_command(program, server.port(), n, &["-c", "1"], &empty_call)?;
                empties.push(nothing / xadd);
                Some(xadd)
            }
            Err(_) => None,
        };
        let start = Instant::now();
        for u in 0..plan.redis_one_n {
            let e = u % versions.len();
            let change = Change::by("bench").replace_data(data(json!({"n": versions[e]})));
            states.update(KIND, &format!("e{e}"), versions[e], change)?;
            versions[e] += 1;
        }
        let rate = plan.redis_one_n as f64 / start.elapsed().as_secs_f64();
        rates.push(rate);
        let floor = floor_updates(&store, &mut floor_con, &mut floor_versions, plan.redis_one_n)?;
        if let Some(c1) = c1 {
            ratios.push(rate / c1);
            floors.push(floor / c1);
        }
    }
    rows.push(specs[5].row_of_latency_runs(&runs).with_note(format!(
        "{} gets of random entities among {n} per run: one HGET",
        plan.query_iters
    )));
    rows.push(specs[6].row_of_runs(&rates).with_note(format!(
        "{} updates per run over 1,000 entities; each one script computing the change",
        plan.redis_one_n
    )));
    if ratios.is_empty() {
        rows.push(specs[7].skipped("redis-benchmark not found"));
        rows.push(specs[9].skipped("redis-benchmark not found"));
        rows.push(specs[10].skipped("redis-benchmark not found"));
        rows.push(specs[11].skipped("redis-benchmark not found"));
    } else {
        rows.push(specs[7].row_of_runs(&ratios).with_note(
            "median of per-run ratios; an update and an XADD are one round trip each".to_string(),
        ));
        rows.push(specs[9].row_of_runs(&limits).with_note(
            "redis-benchmark -c 1 of EVALSHA of a script that only reads the newest record and \
             does an update's four writes (XADD, two HSET, HINCRBY), over XADD: the most an \
             update can reach"
                .to_string(),
        ));
        rows.push(
            specs[10].row_of_runs(&empties).with_note(
                "redis-benchmark -c 1 of EVALSHA of `return 1` with an update's keys and a line, \
             over XADD: what running any script costs"
                    .to_string(),
            ),
        );
        rows.push(specs[11].row_of_runs(&floors).with_note(format!(
            "{} updates per run over 1,000 other entities, each the update script exactly as \
             the store sends it, its arguments (line, layout, keys) made before the clock \
             starts: the most any client of this script can reach",
            plan.redis_one_n
        )));
    }
    Ok(())
}
