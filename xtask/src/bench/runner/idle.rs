//! What idle subscribers cost (CPU of 1,000 in one process, on the file
//! store and on Redis; Redis commands per idle subscriber), and how long a
//! subscriber takes to deliver again after a Redis restart.

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus::{EventBus, StartAt, Status};
use seed_event::{Event, EventStore, JsonObject, Topic, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store_file::FileStore;
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::RedisStore;

use super::proc::{say_ready, say_result, wait_for_go, ChildProc};
use super::{Plan, Spec};
use crate::bench::report::{Op, Row, Target};

pub const FILE_CPU: &str = "file: CPU of 1,000 idle subscriptions";
pub const REDIS_CPU: &str = "redis: CPU of 1,000 idle subscriptions";
pub const REDIS_COMMANDS: &str = "redis: commands per idle subscriber";
pub const RESTART: &str = "redis: restart to first event delivered";

/// Subscriptions of the CPU scenarios.
const SUBSCRIPTIONS: usize = 1_000;

/// The scenarios of [`all`].
pub fn specs() -> Vec<Spec> {
    let cpu = || Target::new(Op::Below, 1.0, "< 1% of a core");
    vec![
        Spec::with(FILE_CPU, "% of a core", cpu()),
        Spec::with(REDIS_CPU, "% of a core", cpu()),
        Spec::with(REDIS_COMMANDS, "commands/s", Target::new(Op::AtMost, 1.0, "≤ 1/s")),
        Spec::info(RESTART, "ms"),
    ]
}

fn spec(name: &str) -> Spec {
    specs().into_iter().find(|s| s.name == name).unwrap_or(Spec::info("unknown", "-"))
}

/// This process's user and system CPU time so far (`/proc/self/stat`), in seconds.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("/proc/self/stat without a command")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).context("/proc/self/stat without utime/stime")
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) as f64 / hz)
}

/// Commands the server has run so far (`INFO stats`).
fn commands(url: &str) -> Result<u64> {
    let mut con = redis::Client::open(url)?.get_connection().context("connecting to redis")?;
    let info: String = redis::cmd("INFO").arg("stats").query(&mut con).context("INFO stats")?;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .context("INFO stats without total_commands_processed")
}

/// What a child with idle subscriptions measured.
#[derive(Serialize, Deserialize)]
struct Idle {
    /// CPU over the window, percent of one core.
    cpu_percent: f64,
    /// On Redis: commands the server ran over the window, per subscription per second.
    commands_per_s: Option<f64>,
}

/// Child: `count` idle subscriptions, one topic each, on the store of
/// `args` (as [`super::latency`]'s children open it); after `go`, the CPU
/// it used over `window_ms` and, on Redis, the commands the server ran
/// meanwhile (counted before the subscriptions stop: each stop is a
/// `CLIENT UNBLOCK`).
pub fn subscriptions(args: &Value) -> Result<()> {
    let url = args["url"].as_str();
    let store: Arc<dyn EventStore> = match (args["backend"].as_str(), url) {
        (Some("file"), _) => Arc::new(FileStore::open(args["dir"].as_str().context("a dir")?)?),
        (Some("redis"), Some(url)) => Arc::new(RedisStore::open(url)?),
        other => bail!("unknown backend {other:?}"),
    };
    let count = args["count"].as_u64().context("a count")? as usize;
    let window = Duration::from_millis(args["window_ms"].as_u64().context("a window")?);
    let bus = EventBus::new(store);
    let subs = (0..count)
        .map(|i| {
            let pattern = TopicPattern::new(format!("bench.idle.t{i}"))?;
            Ok(bus.subscribe(&pattern, StartAt::New, |_| Ok(()))?)
        })
        .collect::<Result<Vec<_>>>()?;
    say_ready();
    wait_for_go()?;
    let before = url.map(commands).transpose()?;
    let (cpu, start) = (cpu_seconds()?, Instant::now());
    std::thread::sleep(window);
    let (cpu, window) = (cpu_seconds()? - cpu, start.elapsed().as_secs_f64());
    let after = url.map(commands).transpose()?;
    drop(subs);
    let commands_per_s = match (before, after) {
        // One INFO of the two is the one `before` sent.
        (Some(a), Some(b)) => Some(b.saturating_sub(a + 1) as f64 / window / count as f64),
        _ => None,
    };
    say_result(&Idle { cpu_percent: cpu / window * 100.0, commands_per_s })
}

/// Starts a child with [`SUBSCRIPTIONS`] idle subscriptions on `backend`,
/// lets them settle, and returns its CPU and the Redis commands per
/// subscription per second over the window.
fn measure(backend: Value, window: Duration) -> Result<(f64, Option<f64>)> {
    let mut args = backend;
    args["count"] = json!(SUBSCRIPTIONS);
    args["window_ms"] = json!(window.as_millis() as u64);
    let mut child = ChildProc::spawn("idle-subscriptions", &args)?;
    child.ready(Duration::from_secs(120))?;
    // Every subscription is waiting in its store by now or within moments.
    std::thread::sleep(Duration::from_secs(1));
    child.send("go")?;
    let idle: Idle = child.result(window + Duration::from_secs(120))?;
    Ok((idle.cpu_percent, idle.commands_per_s))
}

/// Milliseconds from the end of a Redis restart (after an outage of
/// `outage`) to the delivery of an event published right then, to a
/// subscription of this process.
fn restart_to_delivery(outage: Duration) -> Result<f64> {
    let mut server =
        RedisServer::try_start_with(ServerOptions { persistent: true, ..Default::default() })
            .map_err(|e| anyhow::anyhow!("no private redis-server: {e}"))?;
    let store = Arc::new(RedisStore::open(&server.url())?);
    let bus = EventBus::new(store.clone());
    let (tx, rx) = mpsc::channel();
    let sub = bus.subscribe(&TopicPattern::new("bench.restart")?, StartAt::New, move |_| {
        tx.send(Instant::now())?;
        Ok(())
    })?;
    let topic = Topic::new("bench.restart")?;
    server.stop();
    let down = Instant::now();
    while !matches!(sub.status(), Status::Reconnecting { .. }) || down.elapsed() < outage {
        if down.elapsed() > outage + Duration::from_secs(30) {
            bail!("the subscription never noticed the outage");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    server.restart();
    let back = Instant::now();
    store.append(&Event::new(topic, "bench", JsonObject::new()))?;
    let delivered = rx.recv_timeout(Duration::from_secs(30)).context("no delivery within 30 s")?;
    sub.unsubscribe()?;
    Ok(delivered.duration_since(back).as_secs_f64() * 1e3)
}

/// Every scenario of this group.
pub fn all(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let window = plan.idle_window;
    let note = format!(
        "{SUBSCRIPTIONS} subscriptions to a topic each in one process, utime+stime over {} s",
        window.as_secs()
    );
    let dir = work.join("idle");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let backend = json!({"backend": "file", "dir": dir.to_string_lossy()});
    let (file_cpu, _) = measure(backend, window)?;
    rows.push(spec(FILE_CPU).row(file_cpu, None, 1).with_note(note.clone()));
    let _ = std::fs::remove_dir_all(&dir);

    let server = RedisServer::try_start_with(ServerOptions::default())
        .map_err(|e| anyhow::anyhow!("no private redis-server: {e}"))?;
    let url = server.url();
    let (redis_cpu, per_sub) = measure(json!({"backend": "redis", "url": url}), window)?;
    rows.push(spec(REDIS_CPU).row(redis_cpu, None, 1).with_note(format!(
        "{note}; one connection per subscription ({SUBSCRIPTIONS} blocked XREADs)"
    )));
    let per_sub = per_sub.context("no command count")?;
    rows.push(
        spec(REDIS_COMMANDS)
            .row(per_sub, None, 1)
            .with_note(format!("INFO stats over the window, per subscription of {SUBSCRIPTIONS}")),
    );
    drop(server);

    let runs = plan.runs.min(3);
    let restarts = (0..runs)
        .map(|_| restart_to_delivery(Duration::from_secs(1)))
        .collect::<Result<Vec<f64>>>()?;
    rows.push(spec(RESTART).row_of_runs(&restarts).with_note(format!(
        "{runs} restarts after 1 s outages (append-only file); the subscription's jittered \
         backoff, capped at 2 s, decides most of it"
    )));
    Ok(())
}
