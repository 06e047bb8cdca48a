//! The optimised scenario runner: `target/release/xtask bench-scenario …`,
//! built with the `bench-runner` feature by `cargo xtask bench`.
//!
//! - `bench-scenario all --work DIR --out FILE [--quick] [--only GROUPS]`
//!   runs every scenario (or the comma-separated [`GROUPS`]) and writes its
//!   rows (see [`super::report::Row`]) as a JSON array to FILE.
//! - `bench-scenario child <role> <json>` is one of the processes a
//!   multi-process scenario starts (see [`proc`]).

mod events;
mod file;
mod groups;
mod groups_redis;
mod http;
mod idle;
mod latency;
mod limits;
mod proc;
mod redis;
mod sse;
mod states;
mod takeover;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::report::{Row, Target};

/// The sizes of one run: `--quick` or full.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Runs per throughput scenario (the median is reported).
    pub runs: usize,
    /// Events published one per call, and lines of the write/flock limits.
    pub publish_n: usize,
    /// Events published in batches of 1,000.
    pub batch_n: usize,
    /// Events published with `sync=always`, and lines of fdatasync-per-line.
    pub sync_n: usize,
    /// Batches of 1,000 with `sync=batch`, and of fdatasync-per-1,000.
    pub sync_batches: usize,
    /// Events each of the 4 publishing processes appends.
    pub procs_each: usize,
    /// Events of the history topic (1M in the full run).
    pub history_n: usize,
    /// Queries per round of the history latencies.
    pub query_iters: usize,
    /// Events per cross-process latency run.
    pub latency_n: usize,
    /// The pause between two events of a latency run.
    pub latency_gap: Duration,
    /// Events published by the process whose peak RSS is measured.
    pub rss_publish_n: usize,
    /// Events published to Redis one per call, per run.
    pub redis_one_n: usize,
    /// Batches of 1,000 published to Redis, per run.
    pub redis_batches: usize,
    /// `redis-benchmark -n`.
    pub redis_bench_n: usize,
    /// Entries of the Redis history topic.
    pub redis_history_n: usize,
    /// Events published over HTTP one per request, per run (all connections).
    pub http_one_n: usize,
    /// NDJSON batches of 1,000 published over HTTP, per run (all connections).
    pub http_batches: usize,
    /// How long idle subscriptions are watched for their CPU.
    pub idle_window: Duration,
    /// Events published at 1,000/s to the 1,000 event streams.
    pub sse_events: usize,
    /// Events shared by the 4 members of a work group, per run.
    pub group_n: usize,
}

impl Plan {
    /// The sizes for a full or a `--quick` run.
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                runs: 3,
                publish_n: 50_000,
                batch_n: 200_000,
                sync_n: 300,
                sync_batches: 10,
                procs_each: 25_000,
                history_n: 100_000,
                query_iters: 300,
                latency_n: 1_000,
                latency_gap: Duration::from_micros(1000),
                rss_publish_n: 100_000,
                redis_one_n: 5_000,
                redis_batches: 20,
                redis_bench_n: 50_000,
                redis_history_n: 100_000,
                http_one_n: 40_000,
                http_batches: 200,
                idle_window: Duration::from_secs(3),
                sse_events: 3_000,
                group_n: 200_000,
            }
        } else {
            Plan {
                runs: 5,
                publish_n: 200_000,
                batch_n: 1_000_000,
                sync_n: 2_000,
                sync_batches: 50,
                procs_each: 100_000,
                history_n: 1_000_000,
                query_iters: 2_000,
                latency_n: 2_000,
                latency_gap: Duration::from_micros(1000),
                rss_publish_n: 1_000_000,
                redis_one_n: 20_000,
                redis_batches: 100,
                redis_bench_n: 100_000,
                redis_history_n: 1_000_000,
                http_one_n: 200_000,
                http_batches: 1_000,
                idle_window: Duration::from_secs(10),
                sse_events: 10_000,
                group_n: 1_000_000,
            }
        }
    }
}

/// A scenario's name, unit and target, known before it runs (so it can be
/// reported as skipped if it cannot run).
#[derive(Debug, Clone)]
pub struct Spec {
    /// The row's name.
    pub name: &'static str,
    /// The row's unit.
    pub unit: &'static str,
    /// The target from the issues.
    pub target: Option<Target>,
}

impl Spec {
    /// A scenario without a target of its own.
    pub fn info(name: &'static str, unit: &'static str) -> Spec {
        Spec { name, unit, target: None }
    }

    /// A scenario with a target.
    pub fn with(name: &'static str, unit: &'static str, target: Target) -> Spec {
        Spec { name, unit, target: Some(target) }
    }

    /// The row of a measured median (and p99).
    pub fn row(&self, median: f64, p99: Option<f64>, runs: usize) -> Row {
        Row::measured(self.name, self.unit, median, p99, self.target.clone(), runs)
    }

    /// The row of per-run values: their median.
    pub fn row_of_runs(&self, values: &[f64]) -> Row {
        let m = super::report::median(values).unwrap_or(f64::NAN);
        self.row(m, None, values.len())
    }

    /// The row of per-run (p50, p99) pairs: the median of each.
    pub fn row_of_latency_runs(&self, runs: &[(f64, f64)]) -> Row {
        let p50: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let p99: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let m = super::report::median(&p50).unwrap_or(f64::NAN);
        self.row(m, super::report::median(&p99), runs.len())
    }

    /// The row of a scenario that could not run.
    pub fn skipped(&self, reason: impl Into<String>) -> Row {
        Row::skipped(self.name, self.unit, self.target.clone(), reason)
    }
}

/// p50 and p99 of one run's samples.
pub fn p50_p99(samples: &[f64]) -> (f64, f64) {
    (
        super::report::percentile(samples, 50.0).unwrap_or(f64::NAN),
        super::report::percentile(samples, 99.0).unwrap_or(f64::NAN),
    )
}

/// Runs `group`; if it fails, every scenario of `specs` it did not report is
/// reported as skipped with the error.
fn guarded(
    rows: &mut Vec<Row>,
    title: &str,
    specs: &[Spec],
    group: impl FnOnce(&mut Vec<Row>) -> Result<()>,
) {
    let started = Instant::now();
    eprintln!("bench: {title}…");
    let mut got = Vec::new();
    let outcome = group(&mut got);
    if let Err(e) = outcome {
        let reason = format!("{e:#}");
        eprintln!("bench: {title} stopped: {reason}");
        for spec in specs {
            if !got.iter().any(|r| r.name == spec.name) {
                got.push(spec.skipped(reason.clone()));
            }
        }
    }
    eprintln!("bench: {title} took {:.1}s", started.elapsed().as_secs_f64());
    rows.extend(got);
}

/// `bench-scenario …`: see the module documentation.
pub fn main(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("all") => {
            let mut quick = false;
            let mut work = None;
            let mut out = None;
            let mut only = None;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--quick" => quick = true,
                    "--work" => work = it.next().map(PathBuf::from),
                    "--out" => out = it.next().map(PathBuf::from),
                    "--only" => only = Some(it.next().context("--only needs GROUPS")?.clone()),
                    other => bail!("bench-scenario all: unknown argument {other:?}"),
                }
            }
            let work = work.context("bench-scenario all needs --work DIR")?;
            let out = out.context("bench-scenario all needs --out FILE")?;
            let groups = match &only {
                Some(list) => parse_groups(list)?,
                None => GROUPS.to_vec(),
            };
            let rows = all(&Plan::new(quick), &work, &groups);
            let text = serde_json::to_string_pretty(&rows)?;
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))
        }
        Some("child") => {
            let role = args.get(1).context("bench-scenario child needs a role")?;
            let json = args.get(2).map(String::as_str).unwrap_or("{}");
            let value: serde_json::Value =
                serde_json::from_str(json).with_context(|| format!("child arguments {json:?}"))?;
            child(role, &value).with_context(|| format!("child {role}"))
        }
        _ => bail!("usage: bench-scenario all --work DIR --out FILE [--quick] [--only GROUPS] | child ROLE JSON"),
    }
}

fn child(role: &str, args: &serde_json::Value) -> Result<()> {
    match role {
        "inotify-reader" => limits::inotify_reader(args),
        "follower" => latency::follower(args),
        "bus-subscriber" => latency::bus_subscriber(args),
        "publisher" => file::publisher(args),
        "flock-loop" => file::flock_loop(args),
        "rss-publisher" => file::rss_publisher(args),
        "rss-reader" => file::rss_reader(args),
        "rss-subscriber" => file::rss_subscriber(args),
        "idle-subscriptions" => idle::subscriptions(args),
        "state-get" => states::getter(args),
        "state-watcher" => states::watcher(args),
        "lock-holder" => takeover::holder(args),
        "group-member" => groups::member(args),
        "group-holder" => groups::holder(args),
        "sse-server" => sse::server(args),
        other => bail!("unknown child role {other:?}"),
    }
}

/// Every scenario, in the order of the table.
/// The scenario groups, in the order they run; `memory` reads the topic `history` fills.
pub const GROUPS: &[&str] = &[
    "publish", "procs", "history", "latency", "memory", "redis", "http", "idle", "states",
    "takeover", "groups",
];

/// The groups of a comma-separated `--only` list, each checked against [`GROUPS`].
pub fn parse_groups(list: &str) -> Result<Vec<&'static str>> {
    let mut groups = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(g) = GROUPS.iter().find(|g| **g == name) else {
            bail!("unknown scenario group {name:?}; expected one of {}", GROUPS.join(", "));
        };
        groups.push(*g);
    }
    if groups.is_empty() {
        bail!("--only needs at least one of {}", GROUPS.join(", "));
    }
    if groups.contains(&"memory") && !groups.contains(&"history") {
        groups.push("history");
    }
    Ok(groups)
}

/// Writes back every dirty page of the machine, so that a scenario does not
/// share the disk with what earlier benchmarks (or tests) left to write.
pub fn settle() {
    // SAFETY: sync() takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn all(plan: &Plan, work: &Path, groups: &[&str]) -> Vec<Row> {
    let run = |g: &str| {
        let chosen = groups.contains(&g);
        if chosen {
            settle();
        }
        chosen
    };
    let mut rows = Vec::new();
    if let Err(e) = std::fs::create_dir_all(work) {
        rows.push(Row::skipped(
            "scenarios",
            "-",
            None,
            format!("creating {}: {e}", work.display()),
        ));
        return rows;
    }
    if run("publish") {
        guarded(&mut rows, "file publish and machine limits", &file::publish_specs(), |rows| {
            file::publish(plan, work, rows)
        });
    }
    if run("procs") {
        guarded(&mut rows, "4 processes to one topic", &file::procs_specs(), |rows| {
            file::processes(plan, work, rows)
        });
    }
    let history = work.join("history");
    if run("history") {
        guarded(&mut rows, "history queries", &file::history_specs(), |rows| {
            file::history(plan, &history, rows)
        });
    }
    if run("latency") {
        guarded(&mut rows, "cross-process latency", &latency::specs(), |rows| {
            latency::file_and_bus(plan, work, rows)
        });
    }
    if run("memory") {
        guarded(&mut rows, "peak memory", &file::rss_specs(), |rows| {
            file::rss(plan, work, &history, rows)
        });
    }
    let _ = std::fs::remove_dir_all(&history);
    if run("redis") {
        guarded(&mut rows, "redis", &redis::specs(), |rows| redis::all(plan, rows));
    }
    if run("http") {
        guarded(&mut rows, "seed serve over HTTP", &http::specs(), |rows| {
            http::all(plan, work, rows)
        });
    }
    if run("idle") {
        guarded(&mut rows, "idle subscribers", &idle::specs(), |rows| idle::all(plan, work, rows));
    }
    if run("states") {
        guarded(&mut rows, "entity states", &states::specs(), |rows| states::all(plan, work, rows));
    }
    if run("takeover") {
        guarded(&mut rows, "consumer takeover", &takeover::specs(), |rows| {
            takeover::all(plan, work, rows)
        });
    }
    if run("groups") {
        guarded(&mut rows, "work groups", &groups::specs(), |rows| groups::all(plan, work, rows));
        guarded(&mut rows, "work groups on redis", &groups_redis::specs(), |rows| {
            groups_redis::all(plan, rows)
        });
    }
    rows
}
