//! Benchmarks of the file store against plain system-call loops on the same disk.
//!
//! `cargo bench -p store-file` runs everything; `-- --quick` shortens the
//! criterion part, and `SEED_BENCH_EVENTS=100000` shrinks the big topic of
//! the query benchmarks (default 1,000,000 events). After criterion, the
//! cross-process follow latency (p50/p99) and the peak RSS of a publishing
//! and a reading process are printed. `SEED_BENCH_DIR` picks the disk
//! (default: the system temporary directory). `SEED_BENCH_SKIP_EXTRA=1` skips
//! the latency and RSS measurements.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, Criterion, Throughput};
use seed_event::{
    Clear, Event, EventStore, FollowFrom, Limit, Query, Start, Timestamp, Topic, TopicPattern,
};
use serde_json::json;
use store_file::{FileStore, FileStoreConfig, SyncPolicy};

const CHILD: &str = "STORE_FILE_BENCH_CHILD";

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// An event whose log line is about 390 bytes, like the measurements.
fn event(t: &Topic, n: u64) -> Event {
    let payload = json!({
        "task_id": "5b0c1f7e-2d4a-4f7b-9a55-2f0a6f1b8e21",
        "status": "completed",
        "n": n,
        "duration_ms": 1234,
        "worker": "fenrir-7",
        "note": "a short free-form note to fill the line up",
    });
    Event::new(t.clone(), "bench", payload.as_object().cloned().unwrap_or_default())
}

fn bench_root() -> PathBuf {
    std::env::var_os("SEED_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(bench_root()).unwrap()
}

fn line_len() -> usize {
    let dir = tempdir();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("bench.line");
    store.append(&event(&t, 123_456)).unwrap();
    std::fs::metadata(dir.path().join("bench.line.jsonl")).unwrap().len() as usize
}

/// The reference: `flock` + `write` + unlock per line, straight system calls.
fn syscall_loop(c: &mut Criterion, len: usize) {
    let dir = tempdir();
    let mut line = vec![b'x'; len - 1];
    line.push(b'\n');
    let file = OpenOptions::new().create(true).append(true).open(dir.path().join("c.log")).unwrap();
    let fd = file.as_raw_fd();
    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("flock_write_unlock", |b| {
        b.iter(|| {
            // SAFETY: plain system calls on an open descriptor and a live buffer.
            unsafe {
                libc::flock(fd, libc::LOCK_EX);
                libc::write(fd, line.as_ptr().cast(), line.len());
                libc::flock(fd, libc::LOCK_UN);
            }
        })
    });
    g.bench_function("write_fdatasync", |b| {
        b.iter(|| {
            // SAFETY: as above.
            unsafe {
                libc::write(fd, line.as_ptr().cast(), line.len());
                libc::fdatasync(fd);
            }
        })
    });
    let thousand = line.repeat(1000);
    // Truncated outside the timing once past KEEP_UNDER, as the publish benches do.
    let keep_small = || {
        if file.metadata().map_or(0, |m| m.len()) >= KEEP_UNDER {
            file.set_len(0).unwrap();
        }
    };
    g.throughput(Throughput::Elements(1000));
    g.bench_function("write_1000", |b| {
        b.iter_batched(
            keep_small,
            // SAFETY: as above.
            |()| unsafe { libc::write(fd, thousand.as_ptr().cast(), thousand.len()) },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("write_1000_fdatasync", |b| {
        b.iter_batched(
            keep_small,
            |()| {
                // SAFETY: as above.
                unsafe {
                    libc::write(fd, thousand.as_ptr().cast(), thousand.len());
                    libc::fdatasync(fd);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Logs grow by gigabytes during a criterion run, and on the reference
/// machine (a VM) fresh page-cache pages cost several times what reused ones
/// do, for the store and the plain-`write` baselines alike; the publish
/// benches keep their file under this size between timed calls, so they
/// measure appending, not the host's memory.
const KEEP_UNDER: u64 = 64 << 20;

/// Clears `t` (outside the timing) once its log has reached [`KEEP_UNDER`].
fn keep_small(store: &FileStore, t: &Topic) {
    let log = store.dir().join(format!("{t}.jsonl"));
    if std::fs::metadata(&log).map_or(0, |m| m.len()) >= KEEP_UNDER {
        store.clear(&Clear { topic: Some(t.clone()), before: None }).unwrap();
    }
}

fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish");
    for sync in [SyncPolicy::Never, SyncPolicy::Always, SyncPolicy::Batch] {
        let dir = tempdir();
        let config = FileStoreConfig::default().sync(sync);
        let store = FileStore::open_with(dir.path(), config).unwrap();
        let t = topic("bench.publish");
        if sync != SyncPolicy::Batch {
            g.throughput(Throughput::Elements(1));
            // The event is made and freed outside the timing: the store's share of a publish.
            g.bench_function(format!("one_per_call_sync_{sync:?}").to_lowercase(), |b| {
                b.iter_batched_ref(
                    || {
                        keep_small(&store, &t);
                        event(&t, 1)
                    },
                    |e| store.append(e).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
        if sync == SyncPolicy::Never {
            // With `Event::new` (a UUID v7 from the OS random source, the clock, the payload)
            // and freeing the event, both inside the timing.
            g.bench_function("one_per_call_sync_never_with_event_new", |b| {
                let mut n = 0;
                b.iter(|| {
                    n += 1;
                    store.append(&event(&t, n)).unwrap()
                })
            });
        }
        if sync != SyncPolicy::Always {
            g.throughput(Throughput::Elements(1000));
            g.bench_function(format!("batch_1000_sync_{sync:?}").to_lowercase(), |b| {
                b.iter_batched_ref(
                    || {
                        keep_small(&store, &t);
                        (0..1000).map(|n| event(&t, n)).collect::<Vec<_>>()
                    },
                    |events| store.append_batch(&t, events).unwrap(),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

/// Appends `n` events to `t` in batches of 1,000.
fn fill(store: &FileStore, t: &Topic, n: u64) {
    let mut done = 0;
    let mut events = Vec::with_capacity(1000);
    while done < n {
        let k = (n - done).min(1000);
        events.clear();
        events.extend((done..done + k).map(|i| event(t, i)));
        store.append_batch(t, &events).unwrap();
        done += k;
    }
}

fn big_topic_size() -> u64 {
    std::env::var("SEED_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn queries(c: &mut Criterion) {
    let n = big_topic_size();
    let dir = tempdir();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("bench.big");
    let started = Instant::now();
    fill(&store, &t, n);
    eprintln!("filled a {n}-event topic in {:?}", started.elapsed());
    let last = store.query(&Query { limit: Some(Limit::Last(10)), ..Query::topic(&t) }).unwrap();
    let tenth = last[0].clone();
    let mut g = c.benchmark_group(format!("query_{n}"));
    g.bench_function("last_10", |b| {
        b.iter(|| {
            let r =
                store.query(&Query { limit: Some(Limit::Last(10)), ..Query::topic(&t) }).unwrap();
            assert_eq!(r.len(), 10);
        })
    });
    g.bench_function("since_10th_last", |b| {
        let q = Query { since: Some(tenth.event.timestamp), ..Query::topic(&t) };
        b.iter(|| assert!(store.query(&q).unwrap().len() >= 10))
    });
    g.bench_function("after_cursor_10th_last", |b| {
        let q = Query { after: Some(tenth.cursor), ..Query::topic(&t) };
        b.iter(|| assert_eq!(store.query(&q).unwrap().len(), 9))
    });
    g.sample_size(10);
    g.bench_function("source_filter_full_scan", |b| {
        let q = Query { source: Some("nobody".into()), ..Query::topic(&t) };
        b.iter(|| assert!(store.query(&q).unwrap().is_empty()))
    });
    g.bench_function("time_filter_full_scan", |b| {
        // An `until` before everything: every event is parsed and none kept.
        let q = Query { until: Some(Timestamp::from_unix_micros(0)), ..Query::topic(&t) };
        b.iter(|| assert!(store.query(&q).unwrap().is_empty()))
    });
    g.finish();
}

/// Four processes publishing one event per call to one topic.
fn processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("processes");
    g.sample_size(10);
    g.throughput(Throughput::Elements(200_000));
    g.bench_function("4_publishers_200k_events", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempdir();
                // Time enough for the four to start and build their events.
                let start_at = now_nanos() + 2_000_000_000;
                let children: Vec<_> = (0..4)
                    .map(|_| {
                        Command::new(std::env::current_exe().unwrap())
                            .env(CHILD, "publish")
                            .env("BENCH_DIR", dir.path())
                            .env("BENCH_COUNT", "50000")
                            .env("BENCH_START_AT", start_at.to_string())
                            .stdout(Stdio::piped())
                            .spawn()
                            .unwrap()
                    })
                    .collect();
                let spans: Vec<(u128, u128)> = children
                    .into_iter()
                    .map(|ch| {
                        let out = ch.wait_with_output().unwrap();
                        let text = String::from_utf8_lossy(&out.stdout).to_string();
                        let mut it = text.split_whitespace().map(|x| x.parse::<u128>().unwrap());
                        (it.next().unwrap(), it.next().unwrap())
                    })
                    .collect();
                let start = spans.iter().map(|s| s.0).min().unwrap();
                let end = spans.iter().map(|s| s.1).max().unwrap();
                total += Duration::from_nanos((end - start) as u64);
                let store = FileStore::open(dir.path()).unwrap();
                let stats = store.topics().unwrap();
                assert_eq!(stats[0].events, 200_000, "0 lost");
            }
            total
        })
    });
    g.finish();
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// Append in one process, follow in another: the delay from before `append` to `next_batch` returning.
fn follow_latency() {
    let dir = tempdir();
    let store = FileStore::open(dir.path()).unwrap();
    let t = topic("bench.follow");
    store.append(&event(&t, 0)).unwrap();
    let mut follower =
        store.follow(&TopicPattern::from(t.clone()), FollowFrom::start(Start::New)).unwrap();
    let count = 2000;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "paced")
        .env("BENCH_DIR", dir.path())
        .env("BENCH_COUNT", count.to_string())
        .spawn()
        .unwrap();
    let mut lat = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lat.len() < count && Instant::now() < deadline {
        for e in follower.next_batch(100, Duration::from_millis(500)).unwrap() {
            let sent = e.event.payload["sent"].as_str().unwrap_or("0").parse::<u128>().unwrap_or(0);
            lat.push(now_nanos().saturating_sub(sent));
        }
    }
    child.wait().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "follow latency across processes ({} events, 1 ms apart): p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

/// Peak RSS of a process that publishes N events, and of one that reads the last 10.
fn peak_rss() {
    let n = big_topic_size();
    let dir = tempdir();
    for role in ["publish-rss", "last10-rss"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, role)
            .env("BENCH_DIR", dir.path())
            .env("BENCH_COUNT", n.to_string())
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn vm_hwm() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?").to_string()
}

fn child(role: &str) {
    let dir = PathBuf::from(std::env::var_os("BENCH_DIR").unwrap());
    let count: u64 = std::env::var("BENCH_COUNT").unwrap().parse().unwrap();
    let store = FileStore::open(&dir).unwrap();
    match role {
        "publish" => {
            let t = topic("bench.procs");
            // Built before the clock runs, as in the single-process benches;
            // all four start at the same moment, so they contend from the first event.
            let events: Vec<Event> = (0..count).map(|n| event(&t, n)).collect();
            let start_at: u128 = std::env::var("BENCH_START_AT").unwrap().parse().unwrap();
            while now_nanos() < start_at {
                std::thread::sleep(Duration::from_micros(100));
            }
            let start = now_nanos();
            for e in &events {
                store.append(e).unwrap();
            }
            println!("{start} {}", now_nanos());
        }
        "paced" => {
            let t = topic("bench.follow");
            for n in 0..count {
                std::thread::sleep(Duration::from_millis(1));
                let mut e = event(&t, n);
                e.payload.insert("sent".into(), json!(now_nanos().to_string()));
                store.append(&e).unwrap();
            }
        }
        "publish-rss" => {
            let t = topic("bench.rss");
            for n in 0..count {
                store.append(&event(&t, n)).unwrap();
            }
            println!("peak RSS publishing {count} events one per call: {}", vm_hwm());
        }
        "last10-rss" => {
            let t = topic("bench.rss");
            let q = Query { limit: Some(Limit::Last(10)), ..Query::topic(&t) };
            assert_eq!(store.query(&q).unwrap().len(), 10);
            println!("peak RSS reading the last 10 of {count} events: {}", vm_hwm());
        }
        other => panic!("unknown role {other}"),
    }
}

fn main() {
    if let Ok(role) = std::env::var(CHILD) {
        child(&role);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let len = line_len();
    println!("log line length of the benchmark event: {len} bytes");
    syscall_loop(&mut c, len);
    publish(&mut c);
    queries(&mut c);
    processes(&mut c);
    c.final_summary();
    if std::env::var_os("SEED_BENCH_SKIP_EXTRA").is_none() {
        follow_latency();
        peak_rss();
    }
}
