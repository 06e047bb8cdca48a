//! Runs the crates' criterion benchmarks and reads their medians from
//! `<CRITERION_HOME>/**/new/estimates.json` (CRITERION_HOME is
//! `target/seed-bench/criterion`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::report::{Op, Row, Target};

/// The packages whose `benches/` hold criterion benchmarks (those that exist are run).
const PACKAGES: &[(&str, &str)] = &[
    ("store-file", "crates/store-file"),
    ("store-redis", "crates/store-redis"),
    ("bus", "crates/bus"),
];

/// Criterion's options: fewer samples and shorter times with `--quick`.
fn criterion_args(quick: bool) -> Vec<&'static str> {
    if quick {
        vec!["--noplot", "--warm-up-time", "0.5", "--measurement-time", "1", "--sample-size", "10"]
    } else {
        vec!["--noplot", "--warm-up-time", "2", "--measurement-time", "4"]
    }
}

/// Runs `cargo bench` on every package with benches, then returns one row per
/// benchmark that wrote its estimates during this run (or one skipped row saying why none did).
///
/// Their events go to `scratch` (the file system of the scenarios); with
/// `quick`, their large topics hold 100,000 events instead of 1,000,000.
pub fn run(
    root: &Path,
    target: &Path,
    scratch: &Path,
    quick: bool,
    deadline: Duration,
) -> Vec<Row> {
    let packages: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, dir)| root.join(dir).join("benches").is_dir())
        .map(|(p, _)| *p)
        .collect();
    if packages.is_empty() {
        return vec![Row::skipped("criterion benches", "-", None, "no crate has a benches folder")];
    }
    // Criterion writes to CRITERION_HOME: a folder of this command's own, so
    // another process's `cargo bench` cannot mix its results into ours.
    let home = target.join("seed-bench/criterion");
    let _ = std::fs::remove_dir_all(&home);
    let started = SystemTime::now();
    let _ = std::fs::create_dir_all(scratch);
    let mut outcome = run_cargo_bench(root, &home, scratch, &packages, quick, deadline);
    let _ = std::fs::remove_dir_all(scratch);
    let mut rows = collect(&home, started);
    if rows.is_empty() && outcome.is_ok() {
        outcome = Err(anyhow::anyhow!(
            "`cargo bench` of {} wrote no criterion estimates (no benchmark defined yet?)",
            packages.join(", ")
        ));
    }
    if let Err(e) = outcome {
        rows.push(Row::skipped("criterion benches", "-", None, format!("{e:#}")));
    }
    rows
}

fn run_cargo_bench(
    root: &Path,
    home: &Path,
    scratch: &Path,
    packages: &[&str],
    quick: bool,
    deadline: Duration,
) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut args: Vec<&str> = vec!["bench"];
    for p in packages {
        args.extend(["-p", p]);
    }
    args.extend(["--bench", "*"]);
    args.push("--");
    args.extend(criterion_args(quick));
    eprintln!("$ cargo {}", args.join(" "));
    let mut cmd = Command::new(&cargo);
    // Everything but the final table goes to stderr.
    cmd.args(&args).current_dir(root).stdin(Stdio::null()).stdout(std::io::stderr());
    cmd.env("SEED_BENCH_DIR", scratch).env("CRITERION_HOME", home);
    if quick {
        cmd.env("SEED_BENCH_QUICK", "1");
        cmd.env("SEED_BENCH_EVENTS", "100000");
        cmd.env("SEED_BENCH_LARGE_TOPIC", "100000");
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().with_context(|| format!("could not run {cargo}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for cargo bench")? {
            if !status.success() {
                bail!("`cargo {}` failed ({status})", args.join(" "));
            }
            return Ok(());
        }
        if start.elapsed() > deadline {
            // The whole process group: cargo and the bench binary it started.
            let pgid = child.id() as i32;
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).status();
            let _ = child.wait();
            bail!("`cargo bench` ran out of its {}s budget and was stopped", deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every `new/estimates.json` under `dir` written after `since`, as rows.
fn collect(dir: &Path, since: SystemTime) -> Vec<Row> {
    let mut found = Vec::new();
    find_estimates(dir, &mut found);
    let mut rows: Vec<Row> = found
        .into_iter()
        .filter(|p| std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t >= since))
        .filter_map(|estimates| {
            let bench = estimates.with_file_name("benchmark.json");
            let estimates = std::fs::read_to_string(&estimates).ok()?;
            let bench = std::fs::read_to_string(&bench).unwrap_or_default();
            row_from(&estimates, &bench)
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn find_estimates(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "new") {
                let e = path.join("estimates.json");
                if e.is_file() {
                    out.push(e);
                }
            } else {
                find_estimates(&path, out);
            }
        }
    }
}

/// The target from the issues of a criterion bench of the crates, in the
/// unit of its row, recognised by its id (an unknown id gets none).
pub fn target_for(id: &str) -> Option<Target> {
    let query_size =
        || -> Option<f64> { id.strip_prefix("query_")?.split('/').next()?.parse().ok() };
    if id.starts_with("query_")
        && ["/last_10", "/since_10th_last", "/after_cursor_10th_last"]
            .iter()
            .any(|s| id.ends_with(s))
    {
        return Some(Target::new(Op::Below, 200.0, "< 200 µs"));
    }
    if id.starts_with("query_") && id.ends_with("/source_filter_full_scan") {
        let bound = 83_600.0 * query_size()? / 100_000.0;
        return Some(Target::new(Op::Below, bound, format!("< {bound:.0} µs (10x Python)")));
    }
    if id == "publish/batch_1000_sync_never" {
        return Some(Target::new(Op::AtLeast, 2e6, ">= 2M events/s"));
    }
    if id.starts_with("processes/4_publishers") {
        return Some(Target::new(Op::AtLeast, 4e5, ">= 400k events/s"));
    }
    if id.starts_with("redis_read/last_10_of") {
        return Some(Target::new(Op::Below, 300.0, "< 300 µs"));
    }
    None
}

/// A row from criterion's `estimates.json` and `benchmark.json`: the median
/// time per iteration, or elements per second when the bench sets a throughput.
pub fn row_from(estimates: &str, benchmark: &str) -> Option<Row> {
    let estimates: Value = serde_json::from_str(estimates).ok()?;
    let median_ns = estimates["median"]["point_estimate"].as_f64()?;
    let bench: Value = serde_json::from_str(benchmark).unwrap_or(Value::Null);
    let id = bench["full_id"].as_str().unwrap_or("unnamed benchmark");
    let name = format!("criterion: {id}");
    let target = target_for(id);
    let elements = bench["throughput"]["Elements"].as_f64();
    let row = match elements {
        Some(n) if median_ns > 0.0 => {
            Row::measured(name, "elements/s", n / (median_ns / 1e9), None, target, 1).with_note(
                format!("median {:.1} µs per iteration of {n} elements", median_ns / 1e3),
            )
        }
        _ => Row::measured(name, "µs/iter", median_ns / 1e3, None, target, 1),
    };
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_median_of_criterion_estimates() {
        let estimates = r#"{"mean":{"point_estimate":2100.0},"median":{"point_estimate":2000.0}}"#;
        let plain = r#"{"full_id":"store/last10","throughput":null}"#;
        let row = row_from(estimates, plain).unwrap();
        assert_eq!((row.name.as_str(), row.unit.as_str()), ("criterion: store/last10", "µs/iter"));
        assert_eq!(row.median, Some(2.0));
        let with_throughput = r#"{"full_id":"store/batch","throughput":{"Elements":1000}}"#;
        let row = row_from(estimates, with_throughput).unwrap();
        assert_eq!(row.unit, "elements/s");
        assert_eq!(row.median, Some(500_000_000.0));
        assert!(row_from("{}", plain).is_none());
        let last10 = r#"{"full_id":"query_1000000/last_10","throughput":null}"#;
        let row = row_from(estimates, last10).unwrap();
        assert_eq!((row.pass, row.target.unwrap().value), (Some(true), 200.0));
    }

    #[test]
    fn collects_only_estimates_written_during_the_run() {
        let home = std::env::temp_dir().join(format!("seed-criterion-test-{}", std::process::id()));
        let new = home.join("query_1000/last_10/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("estimates.json"), r#"{"median":{"point_estimate":5000.0}}"#)
            .unwrap();
        std::fs::write(new.join("benchmark.json"), r#"{"full_id":"query_1000/last_10"}"#).unwrap();
        let before = SystemTime::now() - Duration::from_secs(60);
        let after = SystemTime::now() + Duration::from_secs(60);
        let rows = collect(&home, before);
        let later = collect(&home, after);
        let _ = std::fs::remove_dir_all(&home);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "criterion: query_1000/last_10");
        assert_eq!(rows[0].median, Some(5.0));
        assert!(later.is_empty(), "estimates older than the run are not ours");
    }

    #[test]
    fn knows_the_targets_of_the_crates_benches() {
        assert_eq!(target_for("query_100000/source_filter_full_scan").unwrap().value, 83_600.0);
        assert_eq!(target_for("query_1000000/source_filter_full_scan").unwrap().value, 836_000.0);
        assert_eq!(target_for("publish/batch_1000_sync_never").unwrap().op, Op::AtLeast);
        assert_eq!(target_for("redis_read/last_10_of/1000000").unwrap().value, 300.0);
        assert!(target_for("publish/one_per_call_sync_never").is_none());
    }
}
