//! File store scenarios: publishing (with the machine limits they are
//! compared with), 4 processes, history queries on a large topic, peak memory.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use seed_event::{Cursor, Event, EventStore, Limit, Query, Timestamp, Topic, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store_file::{FileStore, FileStoreConfig, SyncPolicy};

use super::events::{number, Maker};
use super::limits::{per_second, Lines};
use super::proc::{mono_ns, proc_status_kib, say_ready, say_result, wait_for_go, ChildProc};
use super::{p50_p99, Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const LIMIT_WRITE: &str = "limit: write() per 390-byte line";
const LIMIT_FLOCK: &str = "limit: flock+write+unlock per line";
const LIMIT_BUFFERED: &str = "limit: 64 KiB buffered writes";
const LIMIT_FSYNC: &str = "limit: write+fdatasync per line";
const LIMIT_FSYNC_1000: &str = "limit: fdatasync per 1,000 lines";
const PUBLISH_ONE: &str = "file: publish one per call";
const PUBLISH_ONE_RATIO: &str = "file: publish one per call / flock+write+unlock";
const PUBLISH_BATCH: &str = "file: publish batches of 1,000";
const SYNC_ALWAYS: &str = "file: sync=always, one per call";
const SYNC_ALWAYS_RATIO: &str = "file: sync=always / fdatasync per line";
const SYNC_BATCH: &str = "file: sync=batch, batches of 1,000";
const SYNC_BATCH_RATIO: &str = "file: sync=batch / fdatasync per 1,000";
const ROUND_ROBIN: &str = "file: publish to 10,000 topics round-robin";
const ROUND_ROBIN_FILES: &str = "file: 10,000 topics round-robin, peak open files";
/// The topics of the round-robin scenario: one per entity, more than a
/// process may keep open under a low `ulimit -n`.
const ROUND_ROBIN_TOPICS: usize = 10_000;

/// The scenarios of [`publish`].
pub fn publish_specs() -> Vec<Spec> {
    vec![
        Spec::info(LIMIT_WRITE, "lines/s"),
        Spec::info(LIMIT_FLOCK, "lines/s"),
        Spec::info(LIMIT_BUFFERED, "lines/s"),
        Spec::info(LIMIT_FSYNC, "lines/s"),
        Spec::info(LIMIT_FSYNC_1000, "lines/s"),
        Spec::info(PUBLISH_ONE, "events/s"),
        Spec::with(PUBLISH_ONE_RATIO, "ratio", Target::new(Op::AtLeast, 0.7, ">= 0.7x")),
        Spec::with(PUBLISH_BATCH, "events/s", Target::new(Op::AtLeast, 2e6, ">= 2M events/s")),
        Spec::info(SYNC_ALWAYS, "events/s"),
        Spec::with(SYNC_ALWAYS_RATIO, "ratio", Target::new(Op::AtLeast, 0.8, ">= 0.8x")),
        Spec::info(SYNC_BATCH, "events/s"),
        Spec::with(SYNC_BATCH_RATIO, "ratio", Target::new(Op::AtLeast, 0.8, ">= 0.8x")),
        Spec::info(ROUND_ROBIN, "events/s"),
        Spec::with(ROUND_ROBIN_FILES, "files", Target::new(Op::AtMost, 256.0, "<= 256")),
    ]
}

fn spec(specs: &[Spec], name: &str) -> Spec {
    specs.iter().find(|s| s.name == name).cloned().unwrap_or(Spec::info("unknown", "-"))
}

fn topic(name: &str) -> Result<Topic> {
    Ok(Topic::new(name)?)
}

fn open(dir: &Path, sync: SyncPolicy) -> Result<FileStore> {
    Ok(FileStore::open_with(dir, FileStoreConfig::default().sync(sync))?)
}

/// A file store in a fresh directory (removed on drop) publishing ~390-byte
/// events; each method returns how long the appends took, with the events
/// built (1,000 at a time) before the clock runs and freed after it stops.
struct Publisher {
    store: Option<FileStore>,
    dir: PathBuf,
    topic: Topic,
    maker: Maker,
    next: u64,
}

impl Publisher {
    fn new(dir: &Path, sync: SyncPolicy) -> Result<Publisher> {
        let _ = std::fs::remove_dir_all(dir);
        let topic = topic("bench.publish")?;
        let maker = Maker::new(&topic);
        Ok(Publisher {
            store: Some(open(dir, sync)?),
            dir: dir.to_path_buf(),
            topic,
            maker,
            next: 0,
        })
    }

    fn store(&self) -> Result<&FileStore> {
        self.store.as_ref().context("the publisher's store is closed")
    }

    /// `n` events, one `append` each.
    fn one(&mut self, n: usize) -> Result<Duration> {
        self.timed(n, |store, _, events| {
            for event in events {
                store.append(event)?;
            }
            Ok(())
        })
    }

    /// `n` events in `append_batch` calls of 1,000.
    fn batches(&mut self, n: usize) -> Result<Duration> {
        self.timed(n, |store, topic, batch| Ok(store.append_batch(topic, batch).map(drop)?))
    }

    /// How long `publish` took for `n` events, given 1,000 at a time, built
    /// before the clock starts and freed after it stops.
    fn timed(
        &mut self,
        n: usize,
        publish: impl Fn(&FileStore, &Topic, &[Event]) -> Result<()>,
    ) -> Result<Duration> {
        let mut elapsed = Duration::ZERO;
        let mut done = 0;
        while done < n {
            let k = (n - done).min(1000);
            let events = self.maker.batch("bench", self.next, k);
            self.next += k as u64;
            let store = self.store()?;
            let start = Instant::now();
            publish(store, &self.topic, &events)?;
            elapsed += start.elapsed();
            drop(events);
            done += k;
        }
        Ok(elapsed)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.store = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Publishes `n` events one per call to [`ROUND_ROBIN_TOPICS`] topics in
/// turn, in a fresh store at `dir`; returns the events per second and the
/// most files the process had open (counted between chunks of 1,000
/// appends, outside the clock, like building and freeing the events).
fn round_robin(dir: &Path, n: usize) -> Result<(f64, f64)> {
    let _ = std::fs::remove_dir_all(dir);
    let store = open(dir, SyncPolicy::Never)?;
    let makers = (0..ROUND_ROBIN_TOPICS)
        .map(|i| Ok(Maker::new(&topic(&format!("bench.task.{i}.status"))?)))
        .collect::<Result<Vec<Maker>>>()?;
    let open_files = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let mut peak = open_files();
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        let events: Vec<Event> = (done..done + k)
            .map(|i| makers[i % ROUND_ROBIN_TOPICS].event("bench", i as u64, None))
            .collect();
        let start = Instant::now();
        for event in &events {
            store.append(event)?;
        }
        elapsed += start.elapsed();
        drop(events);
        peak = peak.max(open_files());
        done += k;
    }
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    Ok((per_second(n, elapsed), peak as f64))
}

/// How many turns each side of a pair takes within one run.
const TURNS: usize = 5;

/// Runs `limit` and `ours` in [`TURNS`] alternating turns of about `n / TURNS`
/// units each, so both see the same moments of a shared machine; returns
/// (limit, ours) in units per second.
fn paired(
    n: usize,
    mut limit: impl FnMut(usize) -> Result<Duration>,
    mut ours: impl FnMut(usize) -> Result<Duration>,
) -> Result<(f64, f64)> {
    let n = n.max(TURNS);
    let (mut a, mut b) = (Duration::ZERO, Duration::ZERO);
    for turn in 0..TURNS {
        let k = n / TURNS + usize::from(turn < n % TURNS);
        a += limit(k)?;
        b += ours(k)?;
    }
    Ok((per_second(n, a), per_second(n, b)))
}

/// Publishing one per call, in batches and synced, each beside the machine
/// limit it is compared with, in alternating turns within each run.
pub fn publish(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let specs = publish_specs();
    let limits_dir = work.join("limits");
    std::fs::create_dir_all(&limits_dir)?;
    let d = |name: &str| work.join(name);
    let mut v: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for run in 0..plan.runs {
        eprintln!("bench:   run {}/{}", run + 1, plan.runs);
        super::settle();
        let mut put = |name: &'static str, x: f64| v.entry(name).or_default().push(x);
        let n = plan.publish_n;
        put(LIMIT_WRITE, per_second(n, Lines::create(&limits_dir, "write")?.write(n)?));
        let big = n * 5;
        put(LIMIT_BUFFERED, per_second(big, Lines::create(&limits_dir, "buf")?.buffered_64k(big)?));

        let mut lines = Lines::create(&limits_dir, "flock")?;
        let mut publisher = Publisher::new(&d("publish-one"), SyncPolicy::Never)?;
        let (flock, one) = paired(n, |k| lines.flock_write_unlock(k), |k| publisher.one(k))?;
        drop((lines, publisher));
        put(LIMIT_FLOCK, flock);
        put(PUBLISH_ONE, one);
        put(PUBLISH_ONE_RATIO, one / flock);

        let mut publisher = Publisher::new(&d("publish-batch"), SyncPolicy::Never)?;
        put(PUBLISH_BATCH, per_second(plan.batch_n, publisher.batches(plan.batch_n)?));
        drop(publisher);

        let mut lines = Lines::create(&limits_dir, "fdatasync")?;
        let mut publisher = Publisher::new(&d("publish-always"), SyncPolicy::Always)?;
        let (fsync, always) =
            paired(plan.sync_n, |k| lines.write_fdatasync(k), |k| publisher.one(k))?;
        drop((lines, publisher));
        put(LIMIT_FSYNC, fsync);
        put(SYNC_ALWAYS, always);
        put(SYNC_ALWAYS_RATIO, always / fsync);

        let mut lines = Lines::create(&limits_dir, "fdatasync-1000")?;
        let mut publisher = Publisher::new(&d("publish-batch-sync"), SyncPolicy::Batch)?;
        let (fsync_1000, batch_sync) = paired(
            plan.sync_batches,
            |k| lines.write_1000_fdatasync(k),
            |k| publisher.batches(k * 1000),
        )?;
        drop((lines, publisher));
        put(LIMIT_FSYNC_1000, fsync_1000 * 1000.0);
        put(SYNC_BATCH, batch_sync * 1000.0);
        put(SYNC_BATCH_RATIO, batch_sync / fsync_1000);

        let (rate, files) = round_robin(&d("publish-round-robin"), n)?;
        put(ROUND_ROBIN, rate);
        put(ROUND_ROBIN_FILES, files);
    }
    let _ = std::fs::remove_dir_all(&limits_dir);
    let pair = |what: &str| {
        format!("median of per-run ratios; {TURNS} alternating turns with {what} in each run")
    };
    let notes: &[(&str, String)] = &[
        (
            PUBLISH_ONE,
            format!(
                "{} events of ~390 bytes per run, sync=never, built and freed outside the clock",
                plan.publish_n
            ),
        ),
        (PUBLISH_ONE_RATIO, pair("the flock+write+unlock loop")),
        (
            PUBLISH_BATCH,
            format!("{} events per run, built and freed outside the clock", plan.batch_n),
        ),
        (SYNC_ALWAYS, format!("{} events per run, built and freed outside the clock", plan.sync_n)),
        (SYNC_ALWAYS_RATIO, pair("write+fdatasync per line")),
        (
            SYNC_BATCH,
            format!("{} batches per run, built and freed outside the clock", plan.sync_batches),
        ),
        (SYNC_BATCH_RATIO, pair("fdatasync per 1,000 lines")),
        (
            ROUND_ROBIN,
            format!(
                "{n} events of ~390 bytes per run, one per call, to {ROUND_ROBIN_TOPICS} topics \
                 in turn; the store keeps 64 logs open",
                n = plan.publish_n
            ),
        ),
        (ROUND_ROBIN_FILES, "all files of the process, counted every 1,000 appends".to_string()),
    ];
    for s in &specs {
        let values = v.get(s.name).map(Vec::as_slice).unwrap_or(&[]);
        let mut row = s.row_of_runs(values);
        if let Some((_, note)) = notes.iter().find(|(n, _)| *n == s.name) {
            row = row.with_note(note.clone());
        }
        rows.push(row);
    }
    Ok(())
}

const PROCS: &str = "file: 4 processes -> 1 topic";
const PROCS_LOST: &str = "file: 4 processes, lost+duplicated+corrupt";
const LIMIT_PROCS: &str = "limit: 4 processes flock+write+unlock";
const PROCS_RATIO: &str = "file: 4 processes / 4-process flock loop";

/// The scenarios of [`processes`].
pub fn procs_specs() -> Vec<Spec> {
    vec![
        Spec::with(PROCS, "events/s", Target::new(Op::AtLeast, 4e5, ">= 400k events/s")),
        Spec::with(PROCS_LOST, "events", Target::new(Op::AtMost, 0.0, "0")),
        Spec::info(LIMIT_PROCS, "lines/s"),
        Spec::info(PROCS_RATIO, "ratio"),
    ]
}

/// Child: appends `n` ~390-byte lines to `path` with `flock` + `write` +
/// unlock each, once told `go`; says when it started and ended.
pub fn flock_loop(args: &serde_json::Value) -> Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let path = args["path"].as_str().context("flock-loop needs a path")?;
    let n = args["n"].as_u64().context("flock-loop needs n")?;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = vec![b'x'; super::limits::LINE_BYTES - 1];
    line.push(b'\n');
    let fd = file.as_raw_fd();
    say_ready();
    wait_for_go()?;
    let start = mono_ns();
    for _ in 0..n {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            bail!("flock: {}", std::io::Error::last_os_error());
        }
        file.write_all(&line)?;
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_UN) } != 0 {
            bail!("unlock: {}", std::io::Error::last_os_error());
        }
    }
    say_result(&Span { start, end: mono_ns() })
}

/// Starts 4 children of `role` with `args(p)`, says go to all at once, and
/// returns the units per second of `4 * each` units from the first start to the last end.
fn four_at_once(role: &str, each: usize, args: impl Fn(usize) -> serde_json::Value) -> Result<f64> {
    let mut children = Vec::new();
    for p in 0..4 {
        children.push(ChildProc::spawn(role, &args(p))?);
    }
    for c in &mut children {
        c.ready(Duration::from_secs(30))?;
    }
    for c in &mut children {
        c.send("go")?;
    }
    let mut spans = Vec::new();
    for c in children {
        spans.push(c.result::<Span>(Duration::from_secs(120))?);
    }
    let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end).max().unwrap_or(0);
    Ok((4 * each) as f64 / ((end.saturating_sub(start)) as f64 / 1e9))
}

#[derive(Serialize, Deserialize)]
struct Span {
    start: u64,
    end: u64,
}

/// Child: appends `n` events one per call once told `go`; says when it started and ended.
pub fn publisher(args: &serde_json::Value) -> Result<()> {
    let dir = args["dir"].as_str().context("publisher needs a dir")?;
    let n = args["n"].as_u64().context("publisher needs n")?;
    let source = args["source"].as_str().context("publisher needs a source")?;
    let store = open(Path::new(dir), SyncPolicy::Never)?;
    let t = topic("bench.procs")?;
    let maker = Maker::new(&t);
    // Built before the clock runs and freed after it stops, as in the single-process scenarios.
    let events = maker.batch(source, 0, n as usize);
    say_ready();
    wait_for_go()?;
    let start = mono_ns();
    for event in &events {
        store.append(event)?;
    }
    let end = mono_ns();
    drop(events);
    say_result(&Span { start, end })
}

/// 4 processes publishing one per call to one topic; then every event is read back.
pub fn processes(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let specs = procs_specs();
    let dir = work.join("procs");
    let mut rates = Vec::new();
    let mut limits = Vec::new();
    let mut ratios = Vec::new();
    let mut bad_total = 0u64;
    for _ in 0..plan.runs {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let lines = dir.join("limit.log");
        let limit = four_at_once(
            "flock-loop",
            plan.procs_each,
            |_| json!({"path": lines.to_string_lossy(), "n": plan.procs_each}),
        )?;
        std::fs::remove_file(&lines)?;
        let rate = four_at_once(
            "publisher",
            plan.procs_each,
            |p| json!({"dir": dir.to_string_lossy(), "n": plan.procs_each, "source": format!("p{p}")}),
        )?;
        rates.push(rate);
        limits.push(limit);
        ratios.push(rate / limit);
        bad_total += check_all_there(&dir, plan.procs_each)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let spec = |name: &str| spec(&specs, name);
    rows.push(spec(PROCS).row_of_runs(&rates).with_note(format!(
        "4 x {} events one per call, from go to the last append, built and freed outside the clock",
        plan.procs_each
    )));
    rows.push(
        spec(PROCS_LOST)
            .row(bad_total as f64, None, plan.runs)
            .with_note(format!("all runs; every one of 4 x {} events read back", plan.procs_each)),
    );
    rows.push(spec(LIMIT_PROCS).row_of_runs(&limits).with_note(format!(
        "4 processes x {} lines of {} bytes, each flock+write+unlock, to one file",
        plan.procs_each,
        super::limits::LINE_BYTES
    )));
    rows.push(
        spec(PROCS_RATIO)
            .row_of_runs(&ratios)
            .with_note("median of per-run ratios; the loop runs just before the store in each run"),
    );
    Ok(())
}

/// Reads the topic back: how many events are missing, duplicated or unreadable.
fn check_all_there(dir: &Path, each: usize) -> Result<u64> {
    let store = open(dir, SyncPolicy::Never)?;
    let t = topic("bench.procs")?;
    let mut seen = vec![vec![false; each]; 4];
    let mut bad = 0u64;
    for item in store.read(&Query::topic(&t))? {
        let Ok(e) = item else {
            bad += 1;
            continue;
        };
        let p = e.event.source.strip_prefix('p').and_then(|p| p.parse::<usize>().ok());
        match (p, number(&e.event)) {
            (Some(p), Some(i)) if p < 4 && (i as usize) < each && !seen[p][i as usize] => {
                seen[p][i as usize] = true;
            }
            _ => bad += 1,
        }
    }
    let missing = seen.iter().flatten().filter(|s| !**s).count() as u64;
    if bad + missing > 0 {
        eprintln!("bench: 4 processes: {missing} missing, {bad} duplicated or unreadable");
    }
    Ok(bad + missing)
}

const LAST10: &str = "file: history last 10";
const SINCE: &str = "file: history since the 10th-last time";
const AFTER: &str = "file: history after cursor";
const SCAN: &str = "file: history full-scan source filter";

/// The Python implementation's `since`/`limit` query on 100k events, ms (the faster figure).
const PYTHON_MS_PER_100K: f64 = 836.0;

/// The scenarios of [`history`].
pub fn history_specs() -> Vec<Spec> {
    let q = || Target::new(Op::Below, 0.2, "< 0.2 ms");
    vec![
        Spec::with(LAST10, "ms", q()),
        Spec::with(SINCE, "ms", q()),
        Spec::with(AFTER, "ms", q()),
        Spec::info(SCAN, "ms"),
    ]
}

/// Fills `dir` with a topic of `n` events (every 1,000th from `bench-rare`).
fn fill_history(dir: &Path, n: usize) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let store = open(dir, SyncPolicy::Never)?;
    let t = topic("bench.history")?;
    let maker = Maker::new(&t);
    // One microsecond apart, ending now: events made in a tight loop can
    // share a clock reading, and the expected answers below assume none do.
    let base = Timestamp::now().unix_micros() - n as i64;
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        let mut batch = maker.batch("bench", done as u64, k);
        for (i, e) in batch.iter_mut().enumerate() {
            e.timestamp = Timestamp::from_unix_micros(base + (done + i) as i64);
        }
        if let Some(last) = batch.last_mut() {
            last.source = "bench-rare".to_string();
        }
        store.append_batch(&t, &batch)?;
        done += k;
    }
    Ok(())
}

/// Milliseconds of `f`, `iters` times.
fn time_each(
    iters: usize,
    mut f: impl FnMut() -> Result<usize>,
    expect: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        let got = f()?;
        out.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(got == expect, "query returned {got} events, expected {expect}");
    }
    Ok(out)
}

/// Last 10, `since` and `after` on a large topic, and a full scan with a source filter.
pub fn history(plan: &Plan, dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let specs = history_specs();
    let n = plan.history_n;
    let start = Instant::now();
    fill_history(dir, n)?;
    eprintln!("bench:   wrote {n} events in {:.1}s", start.elapsed().as_secs_f64());
    let store = open(dir, SyncPolicy::Never)?;
    let t = topic("bench.history")?;
    let tail = store.query(&Query { limit: Some(Limit::Last(11)), ..Query::topic(&t) })?;
    ensure!(tail.len() == 11, "the history topic returned {} of its last 11 events", tail.len());
    let since_t = tail[1].event.timestamp;
    let after_c: Cursor = tail[0].cursor;
    let since_count = tail.iter().filter(|e| e.event.timestamp >= since_t).count();
    let queries: [(&str, Query, usize); 3] = [
        (LAST10, Query { limit: Some(Limit::Last(10)), ..Query::topic(&t) }, 10),
        (SINCE, Query { since: Some(since_t), ..Query::topic(&t) }, since_count),
        (AFTER, Query { after: Some(after_c), ..Query::topic(&t) }, 10),
    ];
    for (name, query, expect) in queries {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let samples = time_each(plan.query_iters, || Ok(store.query(&query)?.len()), expect)?;
            runs.push(p50_p99(&samples));
        }
        rows.push(
            spec(&specs, name).row_of_latency_runs(&runs).with_note(format!(
                "topic of {n} events; 3 rounds of {} queries",
                plan.query_iters
            )),
        );
    }
    let scan_query = Query { source: Some("bench-rare".to_string()), ..Query::topic(&t) };
    let expect = n.div_ceil(1000);
    let mut scans = Vec::new();
    for _ in 0..3 {
        scans.extend(time_each(1, || Ok(store.query(&scan_query)?.len()), expect)?);
    }
    let bound = PYTHON_MS_PER_100K * n as f64 / 100_000.0 / 10.0;
    let target = Target::new(Op::Below, bound, format!("< {bound:.0} ms (10x Python)"));
    let scan = Spec { target: Some(target), ..spec(&specs, SCAN) };
    rows.push(scan.row_of_runs(&scans).with_note(format!(
        "{n} events; Python took {PYTHON_MS_PER_100K} ms per 100k, scaled to this size"
    )));
    Ok(())
}

const RSS_PUBLISHER: &str = "rss: publisher, peak";
const RSS_READER: &str = "rss: reader of the last 10, peak";
const RSS_SUB_1K: &str = "rss: subscriber after 1k delivered";
const RSS_SUB_N: &str = "rss: subscriber after all delivered";
const RSS_SUB_GROWTH: &str = "rss: subscriber growth 1k -> all";

/// The scenarios of [`rss`].
pub fn rss_specs() -> Vec<Spec> {
    let small = || Target::new(Op::Below, 10.0, "< 10 MiB");
    vec![
        Spec::with(RSS_PUBLISHER, "MiB", small()),
        Spec::with(RSS_READER, "MiB", small()),
        Spec::info(RSS_SUB_1K, "MiB"),
        Spec::info(RSS_SUB_N, "MiB"),
        Spec::with(RSS_SUB_GROWTH, "MiB", Target::new(Op::AtMost, 2.0, "<= 2 MiB")),
    ]
}

#[derive(Serialize, Deserialize)]
struct Memory {
    hwm_kib: u64,
    rss_1k_kib: Option<u64>,
    rss_n_kib: Option<u64>,
}

/// Child: publishes `n` events one per call, then reports its peak RSS.
pub fn rss_publisher(args: &serde_json::Value) -> Result<()> {
    let dir = args["dir"].as_str().context("rss-publisher needs a dir")?;
    let n = args["n"].as_u64().context("rss-publisher needs n")?;
    let store = open(Path::new(dir), SyncPolicy::Never)?;
    let t = topic("bench.rss")?;
    let maker = Maker::new(&t);
    for i in 0..n {
        store.append(&maker.event("bench", i, None))?;
    }
    say_result(&Memory { hwm_kib: proc_status_kib("VmHWM")?, rss_1k_kib: None, rss_n_kib: None })
}

/// Child: reads the last 10 events of the history topic, then reports its peak RSS.
pub fn rss_reader(args: &serde_json::Value) -> Result<()> {
    let dir = args["dir"].as_str().context("rss-reader needs a dir")?;
    let store = open(Path::new(dir), SyncPolicy::Never)?;
    let t = topic("bench.history")?;
    let got = store.query(&Query { limit: Some(Limit::Last(10)), ..Query::topic(&t) })?;
    ensure!(got.len() == 10, "read {} of the last 10 events", got.len());
    say_result(&Memory { hwm_kib: proc_status_kib("VmHWM")?, rss_1k_kib: None, rss_n_kib: None })
}

/// Child: a bus subscriber from the beginning of the history topic; its RSS
/// after 1,000 and after `n` delivered events.
pub fn rss_subscriber(args: &serde_json::Value) -> Result<()> {
    let dir = args["dir"].as_str().context("rss-subscriber needs a dir")?;
    let n = args["n"].as_u64().context("rss-subscriber needs n")?;
    let store: Arc<dyn EventStore> = Arc::new(open(Path::new(dir), SyncPolicy::Never)?);
    let bus = bus::EventBus::new(store);
    let pattern = TopicPattern::new("bench.history")?;
    let (tx, rx) = mpsc::channel();
    let mut count = 0u64;
    let sub = bus.subscribe(&pattern, bus::StartAt::Beginning, move |_| {
        count += 1;
        if count == 1000 || count == n {
            let rss = proc_status_kib("VmRSS").map_err(|e| e.to_string())?;
            tx.send((count, rss))?;
        }
        Ok(())
    })?;
    let mut at_1k = None;
    let mut at_n = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while at_n.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let (c, rss) = rx.recv_timeout(left).with_context(|| {
            format!(
                "the subscriber delivered {} events, expected {n}",
                if at_1k.is_some() { "1000+" } else { "< 1000" }
            )
        })?;
        if c == 1000 {
            at_1k = Some(rss);
        }
        if c == n {
            at_n = Some(rss);
        }
    }
    sub.unsubscribe()?;
    say_result(&Memory { hwm_kib: proc_status_kib("VmHWM")?, rss_1k_kib: at_1k, rss_n_kib: at_n })
}

/// Peak RSS of a publisher, a reader and a subscriber, each in its own process.
pub fn rss(plan: &Plan, work: &Path, history: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let specs = rss_specs();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let dir = work.join("rss");
    let _ = std::fs::remove_dir_all(&dir);
    let mut publisher = Vec::new();
    let mut reader = Vec::new();
    for _ in 0..plan.runs.min(3) {
        let _ = std::fs::remove_dir_all(&dir);
        let args = json!({"dir": dir.to_string_lossy(), "n": plan.rss_publish_n});
        let m: Memory =
            ChildProc::spawn("rss-publisher", &args)?.result(Duration::from_secs(300))?;
        publisher.push(mib(m.hwm_kib));
        let args = json!({"dir": history.to_string_lossy()});
        let m: Memory = ChildProc::spawn("rss-reader", &args)?.result(Duration::from_secs(60))?;
        reader.push(mib(m.hwm_kib));
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows.push(spec(&specs, RSS_PUBLISHER).row_of_runs(&publisher).with_note(format!(
        "VmHWM of a process publishing {} events one per call",
        plan.rss_publish_n
    )));
    rows.push(
        spec(&specs, RSS_READER)
            .row_of_runs(&reader)
            .with_note(format!("VmHWM of a process reading the last 10 of {}", plan.history_n)),
    );
    let args = json!({"dir": history.to_string_lossy(), "n": plan.history_n});
    let m: Memory = ChildProc::spawn("rss-subscriber", &args)?.result(Duration::from_secs(600))?;
    let (Some(a), Some(b)) = (m.rss_1k_kib, m.rss_n_kib) else {
        bail!("the subscriber did not report its RSS after 1k and after all events");
    };
    let note = format!("bus subscriber from the beginning of a {}-event topic", plan.history_n);
    rows.push(spec(&specs, RSS_SUB_1K).row(mib(a), None, 1).with_note(note.clone()));
    rows.push(spec(&specs, RSS_SUB_N).row(mib(b), None, 1).with_note(note.clone()));
    let growth = mib(b) - mib(a);
    rows.push(spec(&specs, RSS_SUB_GROWTH).row(growth, None, 1).with_note(note));
    Ok(())
}
