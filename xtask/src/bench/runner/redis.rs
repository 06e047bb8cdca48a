//! Redis scenarios against a private `redis-server`, each beside
//! `redis-benchmark` measured in the same run on the same server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use seed_event::{EventStore, Limit, Query, Topic};
use serde_json::json;
use store_redis::testing::{find_program, RedisServer, ServerOptions};
use store_redis::RedisStore;

use super::events::Maker;
use super::latency::store_latency;
use super::limits::LINE_BYTES;
use super::{p50_p99, Plan, Spec};
use crate::bench::report::{parse_csv_rps, Op, Row, Target};

const RB: &str = "limit: redis-benchmark XADD";
const RB_C1: &str = "limit: redis-benchmark XADD -c 1";
const RB_P16: &str = "limit: redis-benchmark XADD -P 16";
const ONE: &str = "redis: publish one per call, 1 thread";
const ONE_RATIO: &str = "redis: 1 thread / redis-benchmark -c 1";
const THREADS: &str = "redis: publish one per call, 50 threads";
const THREADS_RATIO: &str = "redis: 50 threads / redis-benchmark (50 clients)";
const BATCH: &str = "redis: publish batches of 1,000";
const BATCH_RATIO: &str = "redis: batches / redis-benchmark -P 16";
const LAST10: &str = "redis: history last 10";
const FOLLOW: &str = "redis: follow latency, cross-process";

/// The Redis scenarios.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::info(RB, "requests/s"),
        Spec::info(RB_C1, "requests/s"),
        Spec::info(RB_P16, "requests/s"),
        Spec::info(ONE, "events/s"),
        Spec::with(ONE_RATIO, "ratio", Target::new(Op::AtLeast, 0.8, ">= 0.8x")),
        Spec::info(THREADS, "events/s"),
        Spec::with(THREADS_RATIO, "ratio", Target::new(Op::AtLeast, 0.8, ">= 0.8x")),
        Spec::info(BATCH, "events/s"),
        Spec::with(BATCH_RATIO, "ratio", Target::new(Op::AtLeast, 0.5, ">= 0.5x")),
        Spec::with(LAST10, "ms", Target::new(Op::Below, 0.3, "< 0.3 ms")),
        Spec::with(FOLLOW, "ms", Target::latency(0.6, 1.0, "p50 < 0.6, p99 < 1 ms")),
    ]
}

fn spec(name: &str) -> Spec {
    specs().into_iter().find(|s| s.name == name).unwrap_or(Spec::info("unknown", "-"))
}

/// Requests per second of `redis-benchmark … XADD <key> * f <~390-byte value>`.
pub fn redis_benchmark(
    program: &Path,
    port: u16,
    n: usize,
    extra: &[&str],
    key: &str,
) -> Result<f64> {
    let value = "v".repeat(LINE_BYTES);
    redis_benchmark_command(program, port, n, extra, &["XADD", key, "*", "f", &value])
}

/// Requests per second of `redis-benchmark` sending `command` `n` times to the server on `port`.
pub fn redis_benchmark_command(
    program: &Path,
    port: u16,
    n: usize,
    extra: &[&str],
    command: &[&str],
) -> Result<f64> {
    let n = n.to_string();
    let port = port.to_string();
    let mut cmd = Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p", &port, "-n", &n, "--csv"]);
    cmd.args(extra);
    cmd.args(command);
    let out = cmd.output().with_context(|| format!("running {}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_csv_rps(&stdout).with_context(|| format!("reading redis-benchmark's output {stdout:?}"))
}

fn del(url: &str, key: &str) -> Result<()> {
    let client = redis::Client::open(url).context("opening a redis client")?;
    let mut con = client.get_connection().context("connecting to redis")?;
    redis::cmd("DEL").arg(key).query::<i64>(&mut con).context("DEL")?;
    Ok(())
}

fn flushall(url: &str) -> Result<()> {
    let client = redis::Client::open(url).context("opening a redis client")?;
    let mut con = client.get_connection().context("connecting to redis")?;
    redis::cmd("FLUSHALL").query::<()>(&mut con).context("FLUSHALL")?;
    Ok(())
}

/// Events per second appending `n` events one per call from `threads` threads at once.
///
/// The events are built before the clock starts and freed after it stops:
/// the threads only borrow them.
fn append_in_threads(store: &RedisStore, t: &Topic, threads: usize, n: usize) -> Result<f64> {
    let maker = Maker::new(t);
    let each = n.div_ceil(threads);
    let work: Vec<_> =
        (0..threads).map(|k| maker.batch("bench", (k * each) as u64, each)).collect();
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = work
            .iter()
            .map(|events| {
                s.spawn(move || -> Result<()> {
                    for event in events {
                        store.append(event)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("an appending thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    drop(work);
    Ok((each * threads) as f64 / elapsed.as_secs_f64())
}

/// Every Redis scenario, or all of them skipped when there is no redis-server.
pub fn all(plan: &Plan, rows: &mut Vec<Row>) -> Result<()> {
    let server = RedisServer::try_start_with(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!("no private redis-server: {e}"))?;
    let url = server.url();
    let port = server.port();
    let store = RedisStore::open(&url)?;
    // Without redis-benchmark the store's own figures are still measured.
    let benchmark = find_program("redis-benchmark");
    let mut v: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for run in 0..plan.runs {
        eprintln!("bench:   redis run {}/{}", run + 1, plan.runs);
        let rb = |n: usize, extra: &[&str]| -> Result<Option<f64>> {
            let Ok(program) = &benchmark else { return Ok(None) };
            let rps = redis_benchmark(program, port, n, extra, "bench:rb")?;
            del(&url, "bench:rb")?;
            Ok(Some(rps))
        };
        let plain = rb(plan.redis_bench_n, &[])?;
        let c1 = rb(plan.redis_bench_n / 5, &["-c", "1"])?;
        let p16 = rb(plan.redis_bench_n, &["-P", "16"])?;
        let mut put = |name: &'static str, x: f64| v.entry(name).or_default().push(x);
        for (name, rps) in [(RB, plain), (RB_C1, c1), (RB_P16, p16)] {
            if let Some(rps) = rps {
                put(name, rps);
            }
        }
        let t = Topic::new(format!("bench.redis.one.{run}"))?;
        // Built before the clock starts, freed after it stops.
        let events = Maker::new(&t).batch("bench", 0, plan.redis_one_n);
        let start = Instant::now();
        for event in &events {
            store.append(event)?;
        }
        let one = plan.redis_one_n as f64 / start.elapsed().as_secs_f64();
        drop(events);
        put(ONE, one);
        if let Some(c1) = c1 {
            put(ONE_RATIO, one / c1);
        }
        let t = Topic::new(format!("bench.redis.threads.{run}"))?;
        let threads = append_in_threads(&store, &t, 50, plan.redis_one_n)?;
        put(THREADS, threads);
        if let Some(plain) = plain {
            put(THREADS_RATIO, threads / plain);
        }

        let t = Topic::new(format!("bench.redis.batch.{run}"))?;
        let maker = Maker::new(&t);
        let mut elapsed = Duration::ZERO;
        for b in 0..plan.redis_batches as u64 {
            let batch = maker.batch("bench", b * 1000, 1000);
            let start = Instant::now();
            store.append_batch(&t, &batch)?;
            elapsed += start.elapsed();
            drop(batch);
        }
        let batch = (plan.redis_batches * 1000) as f64 / elapsed.as_secs_f64();
        put(BATCH, batch);
        if let Some(p16) = p16 {
            put(BATCH_RATIO, batch / p16);
        }
        flushall(&url)?;
    }
    let notes: &[(&str, String)] = &[
        (
            RB,
            format!(
                "-n {} with 50 clients (the default), {LINE_BYTES}-byte value",
                plan.redis_bench_n
            ),
        ),
        (RB_C1, format!("-n {}, one client: one round trip at a time", plan.redis_bench_n / 5)),
        (RB_P16, format!("-n {}, 16 commands per round trip", plan.redis_bench_n)),
        (ONE, format!("{} events per run from one thread", plan.redis_one_n)),
        (ONE_RATIO, "median of per-run ratios; one client each".to_string()),
        (THREADS, format!("{} events per run from 50 threads sharing one store", plan.redis_one_n)),
        (
            THREADS_RATIO,
            "median of per-run ratios; the issue's `redis-benchmark -n XADD` uses 50 clients"
                .to_string(),
        ),
        (BATCH, format!("{} batches per run", plan.redis_batches)),
        (BATCH_RATIO, "median of per-run ratios to redis-benchmark -P 16 XADD".to_string()),
    ];
    for s in specs().iter().filter(|s| ![LAST10, FOLLOW].contains(&s.name)) {
        let Some(values) = v.get(s.name) else {
            let reason = match &benchmark {
                Err(e) => e.to_string(),
                Ok(_) => "not measured".to_string(),
            };
            rows.push(s.skipped(reason));
            continue;
        };
        let mut row = s.row_of_runs(values);
        if let Some((_, note)) = notes.iter().find(|(n, _)| *n == s.name) {
            row = row.with_note(note.clone());
        }
        rows.push(row);
    }

    // Last 10 of a large topic.
    let t = Topic::new("bench.redis.history")?;
    let maker = Maker::new(&t);
    let start = Instant::now();
    let mut done = 0;
    while done < plan.redis_history_n {
        let k = (plan.redis_history_n - done).min(1000);
        store.append_batch(&t, &maker.batch("bench", done as u64, k))?;
        done += k;
    }
    eprintln!("bench:   wrote {done} entries to redis in {:.1}s", start.elapsed().as_secs_f64());
    let query = Query { limit: Some(Limit::Last(10)), ..Query::topic(&t) };
    let mut runs = Vec::new();
    for _ in 0..3 {
        let mut samples = Vec::with_capacity(plan.query_iters);
        for _ in 0..plan.query_iters {
            let start = Instant::now();
            let got = store.query(&query)?.len();
            samples.push(start.elapsed().as_secs_f64() * 1e3);
            ensure!(got == 10, "redis last 10 returned {got} events");
        }
        runs.push(p50_p99(&samples));
    }
    rows.push(spec(LAST10).row_of_latency_runs(&runs).with_note(format!(
        "topic of {} entries; 3 rounds of {} queries",
        plan.redis_history_n, plan.query_iters
    )));
    flushall(&url)?;

    // Cross-process follow.
    let t = Topic::new("bench.redis.follow")?;
    let maker = Maker::new(&t);
    let backend = json!({"backend": "redis", "url": url});
    let runs = store_latency(plan, "follower", backend, t.as_str(), |sent, i| {
        store.append(&maker.event("bench", i, Some(sent)))?;
        Ok(())
    })?;
    rows.push(spec(FOLLOW).row_of_latency_runs(&runs).with_note(format!(
        "{} runs of {} events, one every {} µs; XADD -> follower in another process",
        plan.runs.min(3),
        plan.latency_n,
        plan.latency_gap.as_micros()
    )));
    drop(store);
    drop(server);
    Ok(())
}
