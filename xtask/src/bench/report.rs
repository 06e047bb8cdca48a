//! The pure parts of `cargo xtask bench`: statistics, targets, the summary
//! rows, the table and the JSON written to `target/seed-bench/summary.json`.

// The statistics and targets are used by the runner, built with `bench-runner`.
#![cfg_attr(not(feature = "bench-runner"), allow(dead_code))]

use serde::{Deserialize, Serialize};

/// The version of the layout of `summary.json`.
pub const SUMMARY_VERSION: u32 = 2;

/// How a measured value is compared with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// The value must be at least the target (throughputs, ratios).
    #[serde(rename = ">=")]
    AtLeast,
    /// The value must be below the target (latencies, memory).
    #[serde(rename = "<")]
    Below,
    /// The value must be at most the target (counts of lost events, memory growth).
    #[serde(rename = "<=")]
    AtMost,
}

impl Op {
    /// Whether `value` meets `bound` under this comparison.
    pub fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Op::AtLeast => value >= bound,
            Op::Below => value < bound,
            Op::AtMost => value <= bound,
        }
    }
}

/// A target from the issues: the text shown, and the numbers checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What the issue asks, e.g. `p50 < 0.1 ms, p99 < 0.5 ms`.
    pub text: String,
    /// How the median (and the p99) are compared.
    pub op: Op,
    /// The bound of the median.
    pub value: f64,
    /// The bound of the p99, for targets that set one.
    pub p99_value: Option<f64>,
}

impl Target {
    /// A target on the median alone.
    pub fn new(op: Op, value: f64, text: impl Into<String>) -> Target {
        Target { text: text.into(), op, value, p99_value: None }
    }

    /// A latency target: median below `p50`, p99 below `p99`.
    pub fn latency(p50: f64, p99: f64, text: impl Into<String>) -> Target {
        Target { text: text.into(), op: Op::Below, value: p50, p99_value: Some(p99) }
    }

    /// Whether a median (and p99) meet the target; a missing p99 fails a target that sets one.
    pub fn check(&self, median: f64, p99: Option<f64>) -> bool {
        if !median.is_finite() || !self.op.holds(median, self.value) {
            return false;
        }
        match self.p99_value {
            None => true,
            Some(bound) => p99.is_some_and(|p| p.is_finite() && self.op.holds(p, bound)),
        }
    }
}

/// What became of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured and within its target.
    Pass,
    /// Measured and outside its target (reported, never a failed command).
    Fail,
    /// Measured, with no target of its own (a machine limit, a criterion bench).
    Info,
    /// Could not run; `note` says why.
    Skipped,
}

/// One line of the table and one entry of `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was measured, e.g. `file: publish, one per call`.
    pub name: String,
    /// The unit of `median` and `p99`.
    pub unit: String,
    /// The median over the runs (`null` when skipped).
    pub median: Option<f64>,
    /// The 99th percentile where it applies.
    pub p99: Option<f64>,
    /// The target from the issues, if this scenario has one.
    pub target: Option<Target>,
    /// Whether the target is met; `null` without a target or when skipped.
    pub pass: Option<bool>,
    /// Pass, fail, info or skipped.
    pub status: Status,
    /// How many runs the median is taken over.
    pub runs: usize,
    /// A detail (sizes, what the ratio compares) or why it was skipped.
    pub note: Option<String>,
}

impl Row {
    /// A measured row; its status follows from the target.
    pub fn measured(
        name: impl Into<String>,
        unit: impl Into<String>,
        median: f64,
        p99: Option<f64>,
        target: Option<Target>,
        runs: usize,
    ) -> Row {
        let pass = target.as_ref().map(|t| t.check(median, p99));
        let status = match pass {
            None => Status::Info,
            Some(true) => Status::Pass,
            Some(false) => Status::Fail,
        };
        Row {
            name: name.into(),
            unit: unit.into(),
            median: Some(median),
            p99,
            target,
            pass,
            status,
            runs,
            note: None,
        }
    }

    /// A row for a scenario that could not run, and why.
    pub fn skipped(
        name: impl Into<String>,
        unit: impl Into<String>,
        target: Option<Target>,
        reason: impl Into<String>,
    ) -> Row {
        Row {
            name: name.into(),
            unit: unit.into(),
            median: None,
            p99: None,
            target,
            pass: None,
            status: Status::Skipped,
            runs: 0,
            note: Some(reason.into()),
        }
    }

    /// This row with a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }
}

/// The whole of `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_VERSION`].
    pub version: u32,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// How long the whole run took, seconds.
    pub duration_s: f64,
    /// Where the scenarios wrote their events (the file system the limits were measured on).
    pub work_dir: String,
    /// Whether every scenario group and the criterion benches ran at full size
    /// (no `--quick`, `--only` or `--no-criterion`): only such a run goes into the README.
    #[serde(default)]
    pub complete: bool,
    /// The machine the run measured, if it could be read.
    #[serde(default)]
    pub machine: Option<Machine>,
    /// Every scenario, in the order of the table.
    pub scenarios: Vec<Row>,
}

/// The machine a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// The cores this process may run on.
    pub cores: usize,
    /// The memory of the machine, GiB.
    pub memory_gib: f64,
    /// The kernel (`Linux 6.18.0`).
    pub kernel: String,
    /// The file system of the work folder (`ext4`).
    pub file_system: String,
}

impl Summary {
    /// How many rows have each status: (pass, fail, info, skipped).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let n = |s: Status| self.scenarios.iter().filter(|r| r.status == s).count();
        (n(Status::Pass), n(Status::Fail), n(Status::Info), n(Status::Skipped))
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// The `p`-th percentile (0 < p <= 100) of `values` by nearest rank; `None` when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// The requests per second of the last line of `redis-benchmark --csv`
/// (`"test","rps","avg_latency_ms",…`; the test name may hold commas).
pub fn parse_csv_rps(csv: &str) -> Option<f64> {
    let line = csv.lines().rev().find(|l| !l.trim().is_empty())?;
    let rps = line.rsplit(',').nth(6)?;
    rps.trim().trim_matches('"').parse().ok()
}

/// A number with about four significant digits, thousands grouped (`412,345`, `0.0213`).
pub fn format_value(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a >= 10_000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a == 0.0 {
        "0".to_string()
    } else {
        let digits = (-a.log10().floor()) as usize + 2;
        format!("{x:.digits$}")
    }
}

/// The table printed on stdout: scenario, unit, median, p99, target, result.
pub fn table(rows: &[Row]) -> String {
    let header = ["scenario", "unit", "median", "p99", "target", "result"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let result = match r.status {
                Status::Pass => "pass".to_string(),
                Status::Fail => "FAIL".to_string(),
                Status::Info => "-".to_string(),
                Status::Skipped => {
                    format!("skipped: {}", r.note.as_deref().unwrap_or("no reason given"))
                }
            };
            [
                r.name.clone(),
                r.unit.clone(),
                r.median.map(format_value).unwrap_or_else(|| "-".to_string()),
                r.p99.map(format_value).unwrap_or_else(|| "-".to_string()),
                r.target.as_ref().map(|t| t.text.clone()).unwrap_or_else(|| "-".to_string()),
                result,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()).take(5) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == 5 {
                s.push_str(c);
            } else if i == 2 || i == 3 {
                s.push_str(&format!("{c:>w$}  ", w = widths[i]));
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().take(5).map(|w| w + 2).sum::<usize>() + 6));
    out.push('\n');
    for row in &cells {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.1), Some(1.0));
        let few = [10.0, 30.0, 20.0];
        assert_eq!(percentile(&few, 99.0), Some(30.0));
        assert_eq!(percentile(&few, 50.0), Some(20.0));
        assert_eq!(percentile(&[], 99.0), None);
    }

    #[test]
    fn targets_check_median_and_p99() {
        let at_least = Target::new(Op::AtLeast, 0.7, ">= 0.7x");
        assert!(at_least.check(0.7, None));
        assert!(!at_least.check(0.69, None));
        assert!(!at_least.check(f64::NAN, None));
        let below = Target::new(Op::Below, 10.0, "< 10 MiB");
        assert!(below.check(9.9, None));
        assert!(!below.check(10.0, None));
        let at_most = Target::new(Op::AtMost, 0.0, "0 lost");
        assert!(at_most.check(0.0, None));
        assert!(!at_most.check(1.0, None));
        let latency = Target::latency(0.1, 0.5, "p50 < 0.1 ms, p99 < 0.5 ms");
        assert!(latency.check(0.05, Some(0.4)));
        assert!(!latency.check(0.05, Some(0.5)), "p99 over its bound fails");
        assert!(!latency.check(0.2, Some(0.4)), "median over its bound fails");
        assert!(!latency.check(0.05, None), "a p99 target needs a p99");
    }

    #[test]
    fn rows_take_their_status_from_the_target() {
        let t = || Some(Target::new(Op::AtLeast, 2.0, ">= 2"));
        assert_eq!(Row::measured("a", "x", 3.0, None, t(), 3).status, Status::Pass);
        assert_eq!(Row::measured("a", "x", 1.0, None, t(), 3).status, Status::Fail);
        assert_eq!(Row::measured("a", "x", 1.0, None, None, 3).status, Status::Info);
        let skipped = Row::skipped("a", "x", t(), "no redis-server");
        assert_eq!((skipped.status, skipped.pass, skipped.median), (Status::Skipped, None, None));
    }

    #[test]
    fn summary_json_has_the_documented_shape() {
        let summary = Summary {
            version: SUMMARY_VERSION,
            quick: true,
            started_unix: 1,
            duration_s: 2.5,
            work_dir: "/tmp/x".to_string(),
            complete: false,
            machine: Some(Machine {
                cores: 2,
                memory_gib: 23.4,
                kernel: "Linux 6.18.0".to_string(),
                file_system: "ext4".to_string(),
            }),
            scenarios: vec![
                Row::measured(
                    "file: follow latency",
                    "ms",
                    0.05,
                    Some(0.4),
                    Some(Target::latency(0.1, 0.5, "p50 < 0.1 ms, p99 < 0.5 ms")),
                    3,
                ),
                Row::measured("limit: write()", "lines/s", 1e6, None, None, 3),
                Row::skipped("redis: publish", "events/s", None, "redis-server not on PATH"),
            ],
        };
        let json = serde_json::to_value(&summary).unwrap();
        let keys =
            ["version", "quick", "started_unix", "duration_s", "work_dir", "complete", "machine"];
        for key in keys.into_iter().chain(["scenarios"]) {
            assert!(json.get(key).is_some(), "summary lacks {key}: {json}");
        }
        let rows = json["scenarios"].as_array().unwrap();
        for row in rows {
            for key in ["name", "unit", "median", "p99", "target", "pass", "status", "note"] {
                assert!(row.get(key).is_some(), "row lacks {key}: {row}");
            }
        }
        assert_eq!(rows[0]["target"]["text"], "p50 < 0.1 ms, p99 < 0.5 ms");
        assert_eq!(rows[0]["target"]["value"], 0.1);
        assert_eq!(rows[0]["target"]["p99_value"], 0.5);
        assert_eq!(rows[0]["target"]["op"], "<");
        assert_eq!(rows[0]["pass"], true);
        assert_eq!(rows[0]["status"], "pass");
        assert!(
            rows[1]["p99"].is_null() && rows[1]["target"].is_null() && rows[1]["pass"].is_null()
        );
        assert_eq!(rows[2]["status"], "skipped");
        assert!(rows[2]["median"].is_null());
        assert_eq!(rows[2]["note"], "redis-server not on PATH");
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
        assert_eq!(summary.counts(), (1, 0, 1, 1));
    }

    #[test]
    fn reads_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"XADD k * f a,b\",\"36900.37\",\"1.022\",\"0.240\",\"0.767\",\"3.423\",\"6.055\",\"7.311\"\n";
        assert_eq!(parse_csv_rps(csv), Some(36900.37));
        assert_eq!(parse_csv_rps(""), None);
    }

    #[test]
    fn values_and_table_are_readable() {
        assert_eq!(format_value(412_345.6), "412,346");
        assert_eq!(format_value(2_000_000.0), "2,000,000");
        assert_eq!(format_value(0.0213), "0.0213");
        assert_eq!(format_value(3.256), "3.26");
        let rows = [
            Row::measured("x", "ms", 0.5, Some(0.9), Some(Target::latency(1.0, 2.0, "t")), 1),
            Row::skipped("y", "ms", None, "why"),
        ];
        let t = table(&rows);
        assert!(t.lines().next().unwrap().starts_with("scenario"));
        assert!(t.contains("pass") && t.contains("skipped: why"), "{t}");
    }
}
