//! The README's performance table, rendered from a complete run's `summary.json`
//! between `<!-- bench-table:start -->` and `<!-- bench-table:end -->`, so it
//! always shows one run, with its date and machine.
//!
//! A README line may combine several scenarios (a ratio and the rate behind
//! it); a scenario missing from the run shows as "not measured", never as an
//! old figure. After those lines, every scenario of the run whose name starts
//! with one of [`GENERIC`] gets a line of its own (its name, figures, unit
//! and target), so a runner adds such rows without a change here.

use anyhow::{bail, Context, Result};

use super::report::{format_value, Row, Status, Summary};

/// The line before the generated part.
pub const START: &str = "<!-- bench-table:start -->";
/// The line after the generated part.
pub const END: &str = "<!-- bench-table:end -->";

/// The prefixes of the scenario names that get a README line each, as they come.
pub const GENERIC: &[&str] = &["groups: "];

/// Whether a README line is one of the [`GENERIC`] ones.
pub fn is_generic(label: &str) -> bool {
    GENERIC.iter().any(|p| label.starts_with(p))
}

/// How a README line's result is decided.
enum Judge {
    /// By the targets of these scenarios: pass only if every one passed.
    Rows(&'static [&'static str]),
    /// By the target of this one scenario.
    Row(String),
    /// Shown for information.
    None,
}

/// One line of the README's table: label, target text, how it is judged, and its two cells.
struct Line {
    label: std::borrow::Cow<'static, str>,
    target: std::borrow::Cow<'static, str>,
    judge: Judge,
    cells: std::result::Result<(String, String), String>,
}

/// The scenarios of one run, looked up by name (`*` matches any text in the middle).
struct Run<'a>(&'a [Row]);

impl<'a> Run<'a> {
    fn row(&self, name: &str) -> std::result::Result<&'a Row, String> {
        let matches = |row: &Row| match name.split_once('*') {
            Some((head, tail)) => row.name.starts_with(head) && row.name.ends_with(tail),
            None => row.name == name,
        };
        match self.0.iter().find(|r| matches(r)) {
            Some(row) if row.status == Status::Skipped => {
                Err(format!("{name} skipped: {}", row.note.as_deref().unwrap_or("no reason given")))
            }
            Some(row) => Ok(row),
            None => Err(format!("no {name} in this run")),
        }
    }

    fn median(&self, name: &str) -> std::result::Result<f64, String> {
        self.row(name)?.median.ok_or_else(|| format!("{name} has no median"))
    }

    fn p99(&self, name: &str) -> std::result::Result<f64, String> {
        self.row(name)?.p99.ok_or_else(|| format!("{name} has no p99"))
    }

    /// A ratio to a machine limit and the rate behind it: `0.746× (520k events/s)`.
    fn ratio_and_rate(
        &self,
        ratio_of: &str,
        rate_of: &str,
        unit: &str,
    ) -> std::result::Result<(String, String), String> {
        let (x, n) = (self.median(ratio_of)?, self.median(rate_of)?);
        Ok((format!("{} ({}{unit})", ratio(x), rate(n)), String::new()))
    }

    /// A latency's cells: median and p99 in ms.
    fn latency(&self, name: &str) -> std::result::Result<(String, String), String> {
        Ok((ms(self.median(name)?), ms(self.p99(name)?)))
    }

    fn result(&self, judge: &Judge) -> String {
        match judge {
            Judge::None => String::new(),
            Judge::Row(name) => self.judge_rows(&[name.as_str()]),
            Judge::Rows(names) => self.judge_rows(names),
        }
    }

    fn judge_rows(&self, names: &[&str]) -> String {
        let mut result = "pass";
        for name in names {
            match self.row(name).map(|r| r.pass) {
                Err(_) | Ok(None) => return "not run".into(),
                Ok(Some(false)) => result = "missed",
                Ok(Some(true)) => {}
            }
        }
        result.into()
    }
}

/// A rate: `520k`, `1.94M`, `16.3k`.
fn rate(x: f64) -> String {
    if x >= 1e7 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e5 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format_value(x)
    }
}

/// A ratio to a machine limit: `0.746×`.
fn ratio(x: f64) -> String {
    format!("{x:.3}×")
}

/// Milliseconds: `0.0150 ms`.
fn ms(x: f64) -> String {
    format!("{} ms", format_value(x))
}

// Scenario names of the runner (`bench-scenario`) and of criterion.
const PUBLISH_ONE: &str = "file: publish one per call";
const PUBLISH_ONE_RATIO: &str = "file: publish one per call / flock+write+unlock";
const PUBLISH_BATCH: &str = "file: publish batches of 1,000";
const CRIT_BATCH: &str = "criterion: publish/batch_1000_sync_never";
const SYNC_ALWAYS_RATIO: &str = "file: sync=always / fdatasync per line";
const SYNC_BATCH: &str = "file: sync=batch, batches of 1,000";
const SYNC_BATCH_RATIO: &str = "file: sync=batch / fdatasync per 1,000";
const PROCS: &str = "file: 4 processes -> 1 topic";
const PROCS_LOST: &str = "file: 4 processes, lost+duplicated+corrupt";
const PROCS_RATIO: &str = "file: 4 processes / 4-process flock loop";
const LIMIT_PROCS: &str = "limit: 4 processes flock+write+unlock";
const CRIT_PROCS: &str = "criterion: processes/4_publishers*";
const LAST10: &str = "file: history last 10";
const SINCE: &str = "file: history since the 10th-last time";
const AFTER: &str = "file: history after cursor";
const SCAN: &str = "file: history full-scan source filter";
const CRIT_UNTIL: &str = "criterion: query_*/time_filter_full_scan";
const FILE_FOLLOW: &str = "file: follow latency, cross-process";
const BUS_SUBSCRIBE: &str = "bus: subscribe latency, cross-process";
const RSS_PUBLISHER: &str = "rss: publisher, peak";
const RSS_READER: &str = "rss: reader of the last 10, peak";
const RSS_SUB_GROWTH: &str = "rss: subscriber growth 1k -> all";
const REDIS_ONE: &str = "redis: publish one per call, 1 thread";
const REDIS_ONE_RATIO: &str = "redis: 1 thread / redis-benchmark -c 1";
const REDIS_THREADS: &str = "redis: publish one per call, 50 threads";
const REDIS_THREADS_RATIO: &str = "redis: 50 threads / redis-benchmark (50 clients)";
const REDIS_BATCH_RATIO: &str = "redis: batches / redis-benchmark -P 16";
const REDIS_LAST10: &str = "redis: history last 10";
const REDIS_FOLLOW: &str = "redis: follow latency, cross-process";
const HTTP_ONE: &str = "http: publish one per request, 8 connections";
const HTTP_BATCH: &str = "http: NDJSON batches of 1,000, 8 connections";
const IDLE_FILE_CPU: &str = "file: CPU of 1,000 idle subscriptions";
const IDLE_REDIS_CPU: &str = "redis: CPU of 1,000 idle subscriptions";
const IDLE_REDIS_COMMANDS: &str = "redis: commands per idle subscriber";
const REDIS_RESTART: &str = "redis: restart to first event delivered";
const SSE_LATENCY: &str = "http: SSE delivery, 1,000 streams at 1,000 events/s";
const SSE_RSS: &str = "http: SSE server peak RSS, 1,000 streams";
const SSE_FOLLOWERS: &str = "http: SSE store followers, 1,000 streams of one pattern";
const SSE_THREADS: &str = "http: SSE server threads, 1,000 streams";
const SSE_FDS: &str = "http: SSE server open files, 1,000 streams";
const SSE_FLOOR: &str =
    "limit: SSE delivery from a bare writer thread, 1,000 streams at 1,000 events/s";
const STATE_GET: &str = "state file: get, warm process";
const STATE_GET_PROCESS: &str = "state file: a fresh process opens the store and gets one";
const STATE_UPDATE: &str = "state file: update with compare-and-set, one process";
const STATE_OPEN: &str = "state file: open the store and get one, in a new process";
const STATE_OPEN_RSS: &str = "state file: peak RSS of that process";
const STATE_REDIS_GET: &str = "state redis: get";
const STATE_REDIS_UPDATE: &str = "state redis: update with compare-and-set, one thread";
const STATE_REDIS_RATIO: &str = "state redis: update / redis-benchmark -c 1 XADD";
const STATE_REDIS_WRITES: &str =
    "state redis: limit: a script of an update's reads and writes / XADD";
const STATE_REDIS_EMPTY: &str = "state redis: limit: an empty script / XADD";
const STATE_REDIS_SCRIPT_ONLY: &str =
    "state redis: limit: the update's script with its arguments made beforehand / XADD";
const STATE_WATCH: &str = "state: watch delivery across processes (file)";
const TAKEOVER_FILE: &str = "file: takeover after SIGKILL of the holder";
const TAKEOVER_REDIS: &str = "redis: takeover after SIGKILL of the holder";

/// The README's lines, in order.
fn lines(run: &Run<'_>) -> Vec<Line> {
    let r = run;
    let no_p99 = |median: std::result::Result<String, String>| median.map(|m| (m, String::new()));
    vec![
        Line {
            label: "file: publish one per call (`sync=never`) / flock+write+unlock".into(),
            target: "≥ 0.7×".into(),
            judge: Judge::Rows(&[PUBLISH_ONE_RATIO]),
            cells: r.ratio_and_rate(PUBLISH_ONE_RATIO, PUBLISH_ONE, " events/s"),
        },
        Line {
            label: "file: batches of 1,000 (scenario; criterion)".into(),
            target: "≥ 2M/s".into(),
            judge: Judge::Rows(&[PUBLISH_BATCH, CRIT_BATCH]),
            cells: no_p99((|| {
                let (s, c) = (r.median(PUBLISH_BATCH)?, r.median(CRIT_BATCH)?);
                Ok(format!("{}; {} events/s", rate(s), rate(c)))
            })()),
        },
        Line {
            label: "file: `sync=always` one per call / write+fdatasync per line".into(),
            target: "≥ 0.8×".into(),
            judge: Judge::Rows(&[SYNC_ALWAYS_RATIO]),
            cells: no_p99(r.median(SYNC_ALWAYS_RATIO).map(ratio)),
        },
        Line {
            label: "file: `sync=batch` batches of 1,000 / fdatasync per 1,000".into(),
            target: "≥ 0.8×".into(),
            judge: Judge::Rows(&[SYNC_BATCH_RATIO]),
            cells: r.ratio_and_rate(SYNC_BATCH_RATIO, SYNC_BATCH, " events/s"),
        },
        Line {
            label: "file: 4 processes → one topic (scenario)".into(),
            target: "≥ 400k/s".into(),
            judge: Judge::Rows(&[PROCS, PROCS_LOST]),
            cells: no_p99((|| {
                let (n, lost) = (r.median(PROCS)?, r.median(PROCS_LOST)?);
                let (x, limit) = (r.median(PROCS_RATIO)?, r.median(LIMIT_PROCS)?);
                Ok(format!(
                    "{} events/s, {lost:.0} lost; {} of 4 processes doing flock+write+unlock ({} lines/s)",
                    rate(n),
                    ratio(x),
                    rate(limit)
                ))
            })()),
        },
        Line {
            label: "file: 4 processes → one topic (criterion, events of 13 short strings)".into(),
            target: "≥ 400k/s".into(),
            judge: Judge::Rows(&[CRIT_PROCS]),
            cells: no_p99(r.median(CRIT_PROCS).map(|n| format!("{} events/s", rate(n)))),
        },
        Line {
            label: "file: last 10 of 1M events".into(),
            target: "< 0.2 ms".into(),
            judge: Judge::Rows(&[LAST10]),
            cells: r.latency(LAST10),
        },
        Line {
            label: "file: `since` the 10th-last time, 1M events".into(),
            target: "< 0.2 ms".into(),
            judge: Judge::Rows(&[SINCE]),
            cells: r.latency(SINCE),
        },
        Line {
            label: "file: `after` cursor, 1M events".into(),
            target: "< 0.2 ms".into(),
            judge: Judge::Rows(&[AFTER]),
            cells: r.latency(AFTER),
        },
        Line {
            label: "file: full-scan source filter, 1M events".into(),
            target: "< 836 ms (10× Python)".into(),
            judge: Judge::Rows(&[SCAN]),
            cells: no_p99(r.median(SCAN).map(ms)),
        },
        Line {
            label: "file: `until` before every event, 1M events (criterion)".into(),
            target: "".into(),
            judge: Judge::None,
            cells: no_p99(r.median(CRIT_UNTIL).map(|us| ms(us / 1e3))),
        },
        Line {
            label: "file: follow latency across processes".into(),
            target: "0.1 / 0.5 ms".into(),
            judge: Judge::Rows(&[FILE_FOLLOW]),
            cells: r.latency(FILE_FOLLOW),
        },
        Line {
            label: "bus: publish → `subscribe` across processes".into(),
            target: "0.2 / 1 ms".into(),
            judge: Judge::Rows(&[BUS_SUBSCRIBE]),
            cells: r.latency(BUS_SUBSCRIBE),
        },
        Line {
            label: "peak RSS: publisher of 1M / reader of last 10 of 1M".into(),
            target: "< 10 MiB".into(),
            judge: Judge::Rows(&[RSS_PUBLISHER, RSS_READER]),
            cells: no_p99((|| {
                let (p, q) = (r.median(RSS_PUBLISHER)?, r.median(RSS_READER)?);
                Ok(format!("{p:.1} / {q:.1} MiB"))
            })()),
        },
        Line {
            label: "subscriber RSS growth, 1k → 1M delivered".into(),
            target: "≤ 2 MiB".into(),
            judge: Judge::Rows(&[RSS_SUB_GROWTH]),
            cells: no_p99(r.median(RSS_SUB_GROWTH).map(|g| format!("{g:+.2} MiB"))),
        },
        Line {
            label: "redis: one per call, 1 thread / `redis-benchmark -c 1`".into(),
            target: "≥ 0.8×".into(),
            judge: Judge::Rows(&[REDIS_ONE_RATIO]),
            cells: r.ratio_and_rate(REDIS_ONE_RATIO, REDIS_ONE, "/s"),
        },
        Line {
            label: "redis: one per call, 50 threads / `redis-benchmark` (50 clients)".into(),
            target: "≥ 0.8×".into(),
            judge: Judge::Rows(&[REDIS_THREADS_RATIO]),
            cells: r.ratio_and_rate(REDIS_THREADS_RATIO, REDIS_THREADS, "/s"),
        },
        Line {
            label: "redis: batches of 1,000 / `redis-benchmark -P 16`".into(),
            target: "≥ 0.5×".into(),
            judge: Judge::Rows(&[REDIS_BATCH_RATIO]),
            cells: no_p99(r.median(REDIS_BATCH_RATIO).map(ratio)),
        },
        Line {
            label: "redis: last 10 of 1M".into(),
            target: "< 0.3 ms".into(),
            judge: Judge::Rows(&[REDIS_LAST10]),
            cells: r.latency(REDIS_LAST10),
        },
        Line {
            label: "redis: follow latency across processes".into(),
            target: "0.6 / 1 ms".into(),
            judge: Judge::Rows(&[REDIS_FOLLOW]),
            cells: r.latency(REDIS_FOLLOW),
        },
        Line {
            label: "http: publish one per request, 8 keep-alive connections (file)".into(),
            target: "≥ 50k/s".into(),
            judge: Judge::Rows(&[HTTP_ONE]),
            cells: no_p99(r.median(HTTP_ONE).map(|m| format!("{} events/s", rate(m)))),
        },
        Line {
            label: "http: NDJSON batches of 1,000, 8 keep-alive connections (file)".into(),
            target: "≥ 500k/s".into(),
            judge: Judge::Rows(&[HTTP_BATCH]),
            cells: no_p99(r.median(HTTP_BATCH).map(|m| format!("{} events/s", rate(m)))),
        },
        Line {
            label: "http: SSE delivery, 1,000 streams of one pattern at 1,000 events/s (file)".into(),
            target: "p99 < 5 ms".into(),
            judge: Judge::Rows(&[SSE_LATENCY]),
            cells: r.latency(SSE_LATENCY),
        },
        Line {
            label: "limit: the same 1,000 streams fed by one bare writer thread (no HTTP server)".into(),
            target: "".into(),
            judge: Judge::None,
            cells: r.latency(SSE_FLOOR),
        },
        Line {
            label: "http: server with those 1,000 streams: peak RSS, store followers, threads, open files".into(),
            target: "< 150 MiB, 1 follower".into(),
            judge: Judge::Rows(&[SSE_RSS, SSE_FOLLOWERS]),
            cells: no_p99((|| {
                let (rss, followers) = (r.median(SSE_RSS)?, r.median(SSE_FOLLOWERS)?);
                let (threads, fds) = (r.median(SSE_THREADS)?, r.median(SSE_FDS)?);
                Ok(format!("{rss:.1} MiB, {followers} follower(s), {threads} threads, {fds} fds"))
            })()),
        },
        Line {
            label: "1,000 idle subscriptions in one process, CPU: file / redis".into(),
            target: "< 1% of a core".into(),
            judge: Judge::Rows(&[IDLE_FILE_CPU, IDLE_REDIS_CPU]),
            cells: no_p99((|| {
                let (f, r) = (r.median(IDLE_FILE_CPU)?, r.median(IDLE_REDIS_CPU)?);
                Ok(format!("{f:.2}% / {r:.2}% of a core"))
            })()),
        },
        Line {
            label: "redis: commands sent per idle subscriber".into(),
            target: "≤ 1/s".into(),
            judge: Judge::Rows(&[IDLE_REDIS_COMMANDS]),
            cells: no_p99(r.median(IDLE_REDIS_COMMANDS).map(|c| format!("{c:.2}/s"))),
        },
        Line {
            label: "redis: restart → first event delivered".into(),
            target: "".into(),
            judge: Judge::None,
            cells: no_p99(r.median(REDIS_RESTART).map(ms)),
        },
        Line {
            label: "exclusive consumer: takeover after `kill -9` of its holder, file / redis".into(),
            target: "< 0.5 s / < 1 s".into(),
            judge: Judge::Rows(&[TAKEOVER_FILE, TAKEOVER_REDIS]),
            cells: no_p99((|| {
                let (f, r) = (r.median(TAKEOVER_FILE)?, r.median(TAKEOVER_REDIS)?);
                Ok(format!("{} / {}", ms(f), ms(r)))
            })()),
        },
        Line {
            label: "state file: get among 1M entities, warm process / a fresh process".into(),
            target: "< 0.05 ms / < 5 ms".into(),
            judge: Judge::Rows(&[STATE_GET, STATE_GET_PROCESS]),
            cells: (|| {
                let (warm, fresh) = (r.latency(STATE_GET)?, r.latency(STATE_GET_PROCESS)?);
                Ok((format!("{} / {}", warm.0, fresh.0), format!("{} / {}", warm.1, fresh.1)))
            })(),
        },
        Line {
            label: "state file: update with compare-and-set, one process".into(),
            target: "≥ 100k/s".into(),
            judge: Judge::Rows(&[STATE_UPDATE]),
            cells: no_p99(r.median(STATE_UPDATE).map(|n| format!("{} updates/s", rate(n)))),
        },
        Line {
            label: "state file: open a store of 1M entities and get one, time / peak RSS".into(),
            target: "< 1 s / < 150 MiB".into(),
            judge: Judge::Rows(&[STATE_OPEN, STATE_OPEN_RSS]),
            cells: no_p99((|| {
                let (t, rss) = (r.median(STATE_OPEN)?, r.median(STATE_OPEN_RSS)?);
                Ok(format!("{} / {rss:.1} MiB", ms(t)))
            })()),
        },
        Line {
            label: "state redis: get".into(),
            target: "< 0.3 ms".into(),
            judge: Judge::Rows(&[STATE_REDIS_GET]),
            cells: r.latency(STATE_REDIS_GET),
        },
        Line {
            label: "state redis: update with compare-and-set / `redis-benchmark -c 1` XADD".into(),
            target: "≥ 0.7×".into(),
            judge: Judge::Rows(&[STATE_REDIS_RATIO]),
            cells: r.ratio_and_rate(STATE_REDIS_RATIO, STATE_REDIS_UPDATE, " updates/s"),
        },
        Line {
            label: "limit: `redis-benchmark -c 1` EVALSHA of a script of only an update's reads and writes / of an empty script, over XADD".into(),
            target: "".into(),
            judge: Judge::None,
            cells: r.median(STATE_REDIS_WRITES).and_then(|writes| {
                let empty = r.median(STATE_REDIS_EMPTY)?;
                Ok((format!("{} / {}", ratio(writes), ratio(empty)), String::new()))
            }),
        },
        Line {
            label: "limit: the update's own script, its arguments made before the clock starts (no client work per update), over `redis-benchmark -c 1` XADD".into(),
            target: "".into(),
            judge: Judge::None,
            cells: no_p99(r.median(STATE_REDIS_SCRIPT_ONLY).map(ratio)),
        },
        Line {
            label: "state: watch delivery across processes (file)".into(),
            target: "p99 < 1 ms".into(),
            judge: Judge::Rows(&[STATE_WATCH]),
            cells: r.latency(STATE_WATCH),
        },
    ]
}

/// A line per scenario of the run named with one of [`GENERIC`], in run order.
fn generic_lines(run: &Run<'_>) -> Vec<Line> {
    run.0
        .iter()
        .filter(|row| is_generic(&row.name))
        .map(|row| Line {
            label: row.name.clone().into(),
            target: row.target.as_ref().map(|t| t.text.clone()).unwrap_or_default().into(),
            judge: match row.target {
                Some(_) => Judge::Row(row.name.clone()),
                None => Judge::None,
            },
            cells: run.row(&row.name).and_then(|row| {
                let median = row.median.ok_or_else(|| format!("{} has no median", row.name))?;
                Ok((
                    figure(median, &row.unit),
                    row.p99.map(|p| figure(p, &row.unit)).unwrap_or_default(),
                ))
            }),
        })
        .collect()
}

/// A figure with its unit: rates abbreviated (`421k events/s`), `ms` as latencies.
fn figure(x: f64, unit: &str) -> String {
    match unit {
        "ms" => ms(x),
        u if u.ends_with("/s") => format!("{} {u}", rate(x)),
        u => format!("{} {u}", format_value(x)),
    }
}

/// The labels of the README's lines, in order (for the repository's tidy checks).
#[cfg(test)]
pub fn labels() -> Vec<String> {
    lines(&Run(&[])).into_iter().map(|l| l.label.into_owned()).collect()
}

/// `2026-11-27 03:44 UTC`.
fn utc(unix: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("@{unix}"))
}

/// The generated part of the README: what was run, when and where, then the table.
pub fn render(summary: &Summary) -> Result<String> {
    if !summary.complete {
        bail!("only a complete run (no --quick, --only or --no-criterion) goes into the README");
    }
    let machine = match &summary.machine {
        Some(m) => format!(
            "{} cores, {:.0} GiB, {}, {} under `target/`",
            m.cores, m.memory_gib, m.kernel, m.file_system
        ),
        None => "a machine it could not describe".to_string(),
    };
    let mut out = format!(
        "<!-- Written by `cargo xtask bench` from target/seed-bench/summary.json; change \
         xtask/src/bench/readme.rs, not this table. -->\n\
         One full `cargo xtask bench` run, {} ({:.0} min), on {machine}; ~390-byte events.\n\
         Ratios are against machine limits measured in the same run; medians of several runs.\n\n\
         | scenario | median | p99 | target | |\n|---|---|---|---|---|\n",
        utc(summary.started_unix),
        summary.duration_s / 60.0,
    );
    let run = Run(&summary.scenarios);
    for line in lines(&run).into_iter().chain(generic_lines(&run)) {
        let result = run.result(&line.judge);
        let (median, p99) =
            line.cells.unwrap_or_else(|why| (format!("not measured: {why}"), String::new()));
        out.push('|');
        for cell in [&*line.label, &median, &p99, &*line.target, &result] {
            out.push_str(&if cell.is_empty() { " |".to_string() } else { format!(" {cell} |") });
        }
        out.push('\n');
    }
    Ok(out)
}

/// `readme` with what is between its markers replaced by `generated`.
pub fn replace(readme: &str, generated: &str) -> Result<String> {
    let count = |marker: &str| readme.lines().filter(|l| l.trim() == marker).count();
    if count(START) != 1 || count(END) != 1 {
        bail!("README.md must hold one line {START} and one line {END}");
    }
    let start = readme.find(START).context("no start marker")? + START.len();
    let end = readme.find(END).context("no end marker")?;
    if end < start {
        bail!("README.md has {END} before {START}");
    }
    let generated = generated.trim_end();
    Ok(format!("{}\n{generated}\n{}", &readme[..start], &readme[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("testdata/summary.json");

    fn fixture() -> Summary {
        serde_json::from_str(FIXTURE).unwrap()
    }

    #[test]
    fn renders_date_machine_command_and_every_line() {
        let text = render(&fixture()).unwrap();
        assert!(text.contains("2026-11-27 03:44 UTC (6 min)"), "{text}");
        assert!(text.contains("on 2 cores, 24 GiB, Linux 6.18.0, ext4 under `target/`"), "{text}");
        assert!(text.contains("`cargo xtask bench`"), "{text}");
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert_eq!(rows.len(), labels().len(), "{text}");
        let row =
            |label: &str| *rows.iter().find(|r| r.starts_with(&format!("| {label} |"))).unwrap();
        assert_eq!(
            row("file: publish one per call (`sync=never`) / flock+write+unlock"),
            "| file: publish one per call (`sync=never`) / flock+write+unlock | 0.746× (520k events/s) | | ≥ 0.7× | pass |"
        );
        assert_eq!(
            row("file: last 10 of 1M events"),
            "| file: last 10 of 1M events | 0.0150 ms | 0.0180 ms | < 0.2 ms | pass |"
        );
        assert_eq!(
            row("file: batches of 1,000 (scenario; criterion)"),
            "| file: batches of 1,000 (scenario; criterion) | 1.94M; 5.15M events/s | | ≥ 2M/s | missed |"
        );
        assert_eq!(
            row("file: full-scan source filter, 1M events"),
            "| file: full-scan source filter, 1M events | 44.0 ms | | < 836 ms (10× Python) | pass |"
        );
        assert_eq!(
            row("file: `until` before every event, 1M events (criterion)"),
            "| file: `until` before every event, 1M events (criterion) | 432 ms | | | |"
        );
        assert_eq!(
            row("redis: last 10 of 1M"),
            "| redis: last 10 of 1M | not measured: redis: history last 10 skipped: redis-server not on PATH | | < 0.3 ms | not run |"
        );
        assert_eq!(
            row("http: SSE delivery, 1,000 streams of one pattern at 1,000 events/s (file)"),
            "| http: SSE delivery, 1,000 streams of one pattern at 1,000 events/s (file) | 24.6 ms | 105 ms | p99 < 5 ms | missed |"
        );
        assert_eq!(
            row("http: server with those 1,000 streams: peak RSS, store followers, threads, open files"),
            "| http: server with those 1,000 streams: peak RSS, store followers, threads, open files | 26.5 MiB, 1 follower(s), 35 threads, 1016 fds | | < 150 MiB, 1 follower | pass |"
        );
        assert_eq!(
            row("state file: get among 1M entities, warm process / a fresh process"),
            "| state file: get among 1M entities, warm process / a fresh process | 0.00600 ms / 1.26 ms | 0.00869 ms / 3.19 ms | < 0.05 ms / < 5 ms | pass |"
        );
        assert_eq!(
            row("state redis: update with compare-and-set / `redis-benchmark -c 1` XADD"),
            "| state redis: update with compare-and-set / `redis-benchmark -c 1` XADD | 0.216× (21.2k updates/s) | | ≥ 0.7× | missed |"
        );
        assert_eq!(
            row("exclusive consumer: takeover after `kill -9` of its holder, file / redis"),
            "| exclusive consumer: takeover after `kill -9` of its holder, file / redis | 25.0 ms / 310 ms | | < 0.5 s / < 1 s | pass |"
        );
        assert!(
            row("redis: follow latency across processes")
                .contains("not measured: no redis: follow latency, cross-process in this run"),
            "{text}"
        );
    }

    /// Every `groups: ...` row of the run gets a line, after the fixed ones
    /// and in run order, whatever store or runner it comes from.
    #[test]
    fn every_groups_row_gets_a_line_of_its_own() {
        use crate::bench::report::{Op, Target};
        let mut summary = fixture();
        let rows = [
            Row::measured(
                "groups: 4 library member processes, file",
                "events/s",
                421_000.0,
                None,
                Some(Target::new(Op::AtLeast, 500_000.0, ">= 500k/s")),
                3,
            ),
            Row::measured(
                "groups: member peak RSS growth over its share",
                "KiB",
                812.0,
                None,
                None,
                3,
            ),
            Row::measured(
                "groups: redelivery after SIGKILL of a member, file",
                "ms",
                120.0,
                Some(180.0),
                Some(Target::new(Op::Below, 500.0, "< 0.5 s")),
                11,
            ),
            Row::skipped(
                "groups: 4 library members, redis",
                "events/s",
                None,
                "redis-server not on PATH",
            ),
        ];
        summary.scenarios.extend(rows);
        let text = render(&summary).unwrap();
        let table: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
        assert_eq!(table.len(), labels().len() + 4, "{text}");
        assert_eq!(
            &table[labels().len()..],
            [
                "| groups: 4 library member processes, file | 421k events/s | | >= 500k/s | missed |",
                "| groups: member peak RSS growth over its share | 812 KiB | | | |",
                "| groups: redelivery after SIGKILL of a member, file | 120 ms | 180 ms | < 0.5 s | pass |",
                "| groups: 4 library members, redis | not measured: groups: 4 library members, redis skipped: redis-server not on PATH | | | |",
            ],
        );
    }

    #[test]
    fn a_quick_or_partial_run_is_not_rendered() {
        let mut summary = fixture();
        summary.complete = false;
        let e = render(&summary).unwrap_err().to_string();
        assert!(e.contains("complete run"), "{e}");
    }

    #[test]
    fn replaces_only_what_is_between_the_markers() {
        let readme = format!("# T\n\nbefore\n{START}\nold table\n{END}\n\nafter\n");
        let once = replace(&readme, "new table\n").unwrap();
        assert_eq!(once, format!("# T\n\nbefore\n{START}\nnew table\n{END}\n\nafter\n"));
        assert_eq!(replace(&once, "new table").unwrap(), once, "rewriting is idempotent");
        assert!(replace("no markers\n", "x").is_err());
        assert!(replace(&format!("{END}\n{START}\n"), "x").is_err());
        assert!(replace(&format!("{START}\n{START}\n{END}\n"), "x").is_err());
    }
}
