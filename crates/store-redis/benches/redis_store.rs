//! Benchmarks of the Redis store against a throwaway redis-server, beside
//! `redis-benchmark` on the same server in the same run.
//!
//! `cargo bench -p store-redis --bench redis_store` runs the criterion groups
//! (publish one per call, batches of 1,000, last 10 of a large topic), then a
//! ratio report: our throughput next to `redis-benchmark XADD` (unpipelined
//! and `-P 16`, ~390-byte values) and the cross-process follow latency
//! (a child process follows while this one publishes). Environment:
//! `SEED_BENCH_LARGE_TOPIC` sets the size of the large topic (default 1,000,000),
//! `SEED_BENCH_NO_RATIOS` skips the ratio report.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput};
use seed_event::{
    Event, EventStore, FollowFrom, JsonObject, Limit, Query, Start, Topic, TopicPattern,
};
use store_redis::testing::{find_program, RedisServer};
use store_redis::RedisStore;

const FOLLOWER_ENV: &str = "SEED_REDIS_BENCH_FOLLOWER";
const EVENT_BYTES: usize = 390;

fn obj(v: serde_json::Value) -> JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

/// An event whose JSON line is about `EVENT_BYTES` long, like the bus's.
fn sample_event(topic: &Topic) -> Event {
    let make = |pad: usize| {
        Event::new(
            topic.clone(),
            "archon.fenrir",
            obj(serde_json::json!({
                "task_id": "7f9c2ad4-1b3e-4c55-9a0e-5d2f8c1b7e44",
                "status": "completed",
                "detail": "x".repeat(pad),
            })),
        )
        .with_correlation_id("req-2b7e1c")
        .with_metadata(obj(serde_json::json!({"host": "node-3", "attempt": 1})))
    };
    let base = make(0).to_json_line().len();
    make(EVENT_BYTES.saturating_sub(base))
}

fn publish(c: &mut Criterion, store: &RedisStore) {
    let topic = Topic::new("bench.publish").unwrap();
    let event = sample_event(&topic);
    let mut group = c.benchmark_group("redis_publish");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_per_call", |b| b.iter(|| store.append(&event).unwrap()));
    for threads in [8usize, 50] {
        group.bench_with_input(
            BenchmarkId::new("one_per_call_threads", threads),
            &threads,
            |b, &threads| b.iter_custom(|iters| parallel_appends(store, &event, threads, iters)),
        );
    }
    group.throughput(Throughput::Elements(1000));
    let batch: Vec<Event> = (0..1000).map(|_| sample_event(&topic)).collect();
    group.bench_function("batch_1000", |b| b.iter(|| store.append_batch(&topic, &batch).unwrap()));
    group.finish();
}

/// `iters` appends spread over `threads` threads; returns the wall time.
fn parallel_appends(store: &RedisStore, event: &Event, threads: usize, iters: u64) -> Duration {
    let per = iters.div_ceil(threads as u64);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per {
                    store.append(event).unwrap();
                }
            });
        }
    });
    start.elapsed()
}

fn large_topic_size() -> usize {
    std::env::var("SEED_BENCH_LARGE_TOPIC").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn read_last(c: &mut Criterion, store: &RedisStore) {
    let topic = Topic::new("bench.large").unwrap();
    let size = large_topic_size();
    let batch: Vec<Event> = (0..1000).map(|_| sample_event(&topic)).collect();
    let filled = Instant::now();
    for _ in 0..size.div_ceil(1000) {
        store.append_batch(&topic, &batch).unwrap();
    }
    eprintln!("filled bench.large with {size} events in {:?}", filled.elapsed());
    let query = Query { limit: Some(Limit::Last(10)), ..Query::topic(&topic) };
    let mut group = c.benchmark_group("redis_read");
    group.bench_function(BenchmarkId::new("last_10_of", size), |b| {
        b.iter(|| {
            let got = store.query(&query).unwrap();
            assert_eq!(got.len(), 10);
        })
    });
    group.finish();
}

/// Runs `redis-benchmark -q` with `args`; returns requests per second.
fn redis_benchmark(port: u16, args: &[&str]) -> Option<f64> {
    let program = find_program("redis-benchmark").ok()?;
    let mut cmd = Command::new(program);
    cmd.args(["-p", &port.to_string(), "-q"]).args(args);
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "XADD bench:rb * f xxx…: 91743.12 requests per second, p50=0.279 msec"
    let line = text.lines().rev().find(|l| l.contains("requests per second"))?;
    let before = line.split(" requests per second").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn throughput(n: u64, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    n as f64 / start.elapsed().as_secs_f64()
}

/// The median of `values` (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Our throughput beside `redis-benchmark`'s, measured in alternation
/// (three times each, medians reported) so both see the same machine load.
fn ratios(server: &RedisServer, store: &RedisStore) {
    // `SEED_BENCH_QUICK` (set by `cargo xtask bench --quick`): one short round.
    let quick = std::env::var_os("SEED_BENCH_QUICK").is_some();
    let rounds = if quick { 1 } else { 3 };
    let port = server.port();
    let value = "x".repeat(EVENT_BYTES);
    let topic = Topic::new("bench.ratio").unwrap();
    let event = sample_event(&topic);
    let n = if quick { 10_000u64 } else { 50_000 };
    let xadd = ["XADD", "bench:rb", "*", "f", value.as_str()];
    let with = |extra: &[&str]| -> Vec<String> {
        extra.iter().chain(xadd.iter()).map(|s| s.to_string()).collect()
    };
    let (rb_n, rb_p16_n) = if quick { ("20000", "200000") } else { ("100000", "1000000") };
    let (plain_args, c1_args, p16_args) =
        (with(&["-n", rb_n]), with(&["-n", rb_n, "-c", "1"]), with(&["-n", rb_p16_n, "-P", "16"]));
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis_benchmark(port, &args)
    };
    let batch: Vec<Event> = (0..1000).map(|_| sample_event(&topic)).collect();
    let mut m: [Vec<f64>; 6] = Default::default();
    for _ in 0..rounds {
        m[0].extend(run(&plain_args));
        m[1].push(throughput(n, || {
            parallel_appends(store, &event, 50, n);
        }));
        m[2].extend(run(&c1_args));
        m[3].push(throughput(n, || {
            for _ in 0..n {
                store.append(&event).unwrap();
            }
        }));
        m[4].extend(run(&p16_args));
        m[5].push(throughput(n, || {
            for _ in 0..n / 1000 {
                store.append_batch(&topic, &batch).unwrap();
            }
        }));
    }
    let [rb_plain, fifty, rb_c1, one, rb_p16, batches] = m.map(median);
    let (p50, p99) = follow_latency(server).unwrap_or((f64::NAN, f64::NAN));

    println!(
        "\n== store-redis vs redis-benchmark: same server (port {port}), ~{EVENT_BYTES}-byte \
         events, medians of {rounds} alternating rounds =="
    );
    println!("redis-benchmark -n {rb_n} XADD (50 clients): {rb_plain:.0}/s");
    println!("redis-benchmark -n {rb_n} -c 1 XADD:         {rb_c1:.0}/s");
    println!("redis-benchmark -n {rb_p16_n} -P 16 XADD:       {rb_p16:.0}/s");
    println!("append, 50 threads: {fifty:.0}/s = {:.2}x of 50 clients", fifty / rb_plain);
    println!("append, 1 thread:   {one:.0}/s = {:.2}x of -c 1", one / rb_c1);
    println!("append_batch 1000:  {batches:.0}/s = {:.2}x of -P 16", batches / rb_p16);
    println!("cross-process follow latency: p50 {p50:.3} ms, p99 {p99:.3} ms");
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Publishes spaced events while a child process follows them; returns its p50/p99 in ms.
fn follow_latency(server: &RedisServer) -> Option<(f64, f64)> {
    const COUNT: usize = 2000;
    let exe = std::env::current_exe().ok()?;
    let mut child = Command::new(exe)
        .env(FOLLOWER_ENV, server.url())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let mut lines = BufReader::new(child.stdout.take()?).lines();
    if lines.next()?.ok()? != "ready" {
        return None;
    }
    let store = RedisStore::open(&server.url()).ok()?;
    let topic = Topic::new("bench.latency").unwrap();
    for n in 0..COUNT {
        let sent = now_ns().to_string();
        let e =
            Event::new(topic.clone(), "bench", obj(serde_json::json!({"n": n, "sent_ns": sent})));
        store.append(&e).ok()?;
        thread::sleep(Duration::from_micros(500));
    }
    let result = lines.next()?.ok()?;
    let _ = child.wait();
    let mut parts = result.split_whitespace().map(|p| p.parse::<f64>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The child side of [`follow_latency`]: prints `ready`, then `p50 p99` in ms.
fn follower_child(url: &str) {
    const COUNT: usize = 2000;
    let store = RedisStore::open(url).unwrap();
    let pattern = TopicPattern::new("bench.latency").unwrap();
    let mut follower = store.follow(&pattern, FollowFrom::start(Start::New)).unwrap();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut latencies = Vec::with_capacity(COUNT);
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.len() < COUNT && Instant::now() < deadline {
        for e in follower.next_batch(100, Duration::from_secs(1)).unwrap() {
            let now = now_ns();
            let sent: u128 =
                e.event.payload["sent_ns"].as_str().and_then(|s| s.parse().ok()).unwrap_or(now);
            latencies.push((now - sent.min(now)) as f64 / 1e6);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied();
    let _ = writeln!(out, "{} {}", at(0.5).unwrap_or(f64::NAN), at(0.99).unwrap_or(f64::NAN));
}

fn main() {
    if let Ok(url) = std::env::var(FOLLOWER_ENV) {
        follower_child(&url);
        return;
    }
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url()).unwrap();
    let store = Arc::new(store);
    let mut c = Criterion::default().configure_from_args();
    publish(&mut c, &store);
    read_last(&mut c, &store);
    c.final_summary();
    if std::env::var_os("SEED_BENCH_NO_RATIOS").is_none() {
        ratios(&server, &store);
    }
}
