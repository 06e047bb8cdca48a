//! `cargo xtask bench [--quick]`: measures Seed against the targets of its
//! issues and against the limits of the machine, in one command.
//!
//! 1. Builds the scenario runner: this crate in release mode with the
//!    `bench-runner` feature (`target/release/xtask bench-scenario …`), so no
//!    scenario runs unoptimised although `cargo xtask` itself is a dev build.
//! 2. Runs the scenarios criterion cannot express (several processes,
//!    cross-process latency, peak memory, Redis beside `redis-benchmark`) and
//!    the machine limits they are compared with, on the file system of
//!    `target/seed-bench/work`.
//! 3. Runs the crates' criterion benches and reads their medians.
//! 4. Prints one table on stdout and writes `target/seed-bench/summary.json`.
//! 5. After a complete run (no `--quick`, `--only` or `--no-criterion`), rewrites
//!    the README's performance table from it ([`readme`]); other runs leave the
//!    README alone. `--readme` rewrites it from the last `summary.json` without
//!    running anything (and refuses one of a partial run).
//!
//! A missed target is reported, never a failed command: timings on a shared
//! machine are noisy. A scenario that cannot run is reported as skipped.

mod criterion;
mod machine;
pub mod readme;
pub mod report;
#[cfg(feature = "bench-runner")]
pub mod runner;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use report::{Row, Summary, SUMMARY_VERSION};

/// The whole `--quick` run should finish within this.
const QUICK_BUDGET: Duration = Duration::from_secs(160);
/// The criterion benches of a full run are stopped after this.
const FULL_CRITERION_BUDGET: Duration = Duration::from_secs(600);

/// The usage of `cargo xtask bench`.
pub const USAGE: &str = "cargo xtask bench [--quick] [--no-criterion] [--only GROUPS] | --readme
  GROUPS: comma-separated scenario groups of publish, procs, history, latency, memory, redis, http, idle, states, takeover
  a complete run (none of the options) also rewrites README.md's performance table;
  --readme rewrites it from the last complete run's target/seed-bench/summary.json";

/// `cargo xtask bench`: see the module documentation.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut criterion = true;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-criterion" => criterion = false,
            "--readme" if args.len() == 1 => {
                return update_readme(
                    root,
                    &crate::target_dir(root).join("seed-bench/summary.json"),
                )
            }
            "--only" => match it.next() {
                Some(groups) => only = Some(groups.as_str()),
                None => bail!("--only needs GROUPS\nusage: {USAGE}"),
            },
            other => bail!("unknown bench option {other:?}\nusage: {USAGE}"),
        }
    }
    let started = Instant::now();
    let started_unix =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let target = crate::target_dir(root);
    let out_dir = target.join("seed-bench");
    let work = out_dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let build = Instant::now();
    crate::cargo(
        root,
        // The `seed` binary too: the work-group scenario runs it.
        &[
            "build",
            "--release",
            "--package",
            "xtask",
            "--features",
            "xtask/bench-runner",
            "--package",
            "cli",
        ],
    )?;
    eprintln!("bench: scenario runner built in {:.1}s", build.elapsed().as_secs_f64());

    let mut rows = scenarios(&target.join("release/xtask"), &work, &out_dir, quick, only);

    if criterion {
        let budget = if quick {
            QUICK_BUDGET.saturating_sub(started.elapsed()).max(Duration::from_secs(20))
        } else {
            FULL_CRITERION_BUDGET
        };
        // Write back what tests or builds left dirty, so that it does not
        // share the disk with the benchmarks (the scenarios do the same).
        let _ = std::process::Command::new("sync").status();
        rows.extend(criterion::run(root, &target, &work.join("criterion"), quick, budget));
    }
    let _ = std::fs::remove_dir_all(&work);

    let summary = Summary {
        version: SUMMARY_VERSION,
        quick,
        started_unix,
        duration_s: started.elapsed().as_secs_f64(),
        work_dir: work.display().to_string(),
        complete: !quick && only.is_none() && criterion,
        machine: machine::collect(&out_dir),
        scenarios: rows,
    };
    let path = out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print!("{}", report::table(&summary.scenarios));
    let (pass, fail, info, skipped) = summary.counts();
    eprintln!(
        "bench: {pass} passed, {fail} missed their target, {info} for information, {skipped} skipped, in {:.0}s{}; wrote {}",
        summary.duration_s,
        if quick { " (--quick: smaller sizes)" } else { "" },
        path.display()
    );
    if summary.complete {
        update_readme(root, &path)
    } else {
        eprintln!("bench: README.md left alone: only a complete run rewrites its table");
        Ok(())
    }
}

/// Rewrites the performance table of `root/README.md` from the complete run of `summary`.
fn update_readme(root: &Path, summary: &Path) -> Result<()> {
    let text = std::fs::read_to_string(summary)
        .with_context(|| format!("reading {}", summary.display()))?;
    let summary: Summary =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", summary.display()))?;
    let readme = root.join("README.md");
    let old = std::fs::read_to_string(&readme)
        .with_context(|| format!("reading {}", readme.display()))?;
    let new = readme::replace(&old, &readme::render(&summary)?)?;
    std::fs::write(&readme, new).with_context(|| format!("writing {}", readme.display()))?;
    eprintln!("bench: rewrote the performance table of {}", readme.display());
    Ok(())
}

/// Runs the optimised runner; its rows, or one skipped row saying why there are none.
fn scenarios(
    runner: &Path,
    work: &Path,
    out_dir: &Path,
    quick: bool,
    only: Option<&str>,
) -> Vec<Row> {
    let out = out_dir.join("scenarios.json");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(runner);
    cmd.arg("bench-scenario").arg("all").arg("--work").arg(work).arg("--out").arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    if let Some(groups) = only {
        cmd.arg("--only").arg(groups);
    }
    eprintln!("$ {cmd:?}");
    let result =
        cmd.status().with_context(|| format!("running {}", runner.display())).and_then(|status| {
            if !status.success() {
                bail!("the scenario runner failed ({status})");
            }
            let text = std::fs::read_to_string(&out)
                .with_context(|| format!("reading {}", out.display()))?;
            serde_json::from_str::<Vec<Row>>(&text)
                .with_context(|| format!("parsing {}", out.display()))
        });
    result.unwrap_or_else(|e| vec![Row::skipped("scenarios", "-", None, format!("{e:#}"))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use report::Status;

    #[test]
    fn a_runner_that_cannot_run_is_one_skipped_row_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("seed-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = scenarios(&dir.join("no-such-runner"), &dir, &dir, true, None);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status, Status::Skipped);
        assert!(rows[0].note.as_deref().unwrap_or("").contains("no-such-runner"), "{rows:?}");
    }
}
