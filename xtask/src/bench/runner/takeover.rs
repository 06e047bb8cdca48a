//! Takeover of an exclusive consumer after its holder is killed with
//! SIGKILL: a child process holds the lock, a thread of the runner waits for
//! it, and the time from the kill to the waiter holding the lock is measured
//! on the file store (flock) and on Redis (`CLIENT LIST ID` of the holder).

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use seed_event::{ConsumerName, EventStore, LockRequest};
use serde_json::{json, Value};
use store_redis::testing::{RedisServer, ServerOptions};

use super::proc::{say_ready, ChildProc};
use super::{Plan, Spec};
use crate::bench::report::{Op, Row, Target};

const FILE: &str = "file: takeover after SIGKILL of the holder";
const REDIS: &str = "redis: takeover after SIGKILL of the holder";

/// The scenarios of this group.
pub fn specs() -> Vec<Spec> {
    vec![
        Spec::with(FILE, "ms", Target::new(Op::Below, 500.0, "< 0.5 s")),
        Spec::with(REDIS, "ms", Target::new(Op::Below, 1000.0, "< 1 s")),
    ]
}

fn open(args: &Value) -> Result<Arc<dyn EventStore>> {
    Ok(match (args["dir"].as_str(), args["url"].as_str()) {
        (Some(dir), _) => Arc::new(store_file::FileStore::open(dir)?),
        (_, Some(url)) => Arc::new(store_redis::RedisStore::open(url)?),
        _ => bail!("a lock holder needs a dir or a url"),
    })
}

fn name() -> ConsumerName {
    ConsumerName::new("bench-takeover").unwrap_or_else(|_| unreachable!("a valid name"))
}

/// The child: takes the lock, says `ready`, and holds it until it is killed.
pub fn holder(args: &Value) -> Result<()> {
    let store = open(args)?;
    let request = LockRequest::new(Duration::from_secs(5)).wait(Duration::from_secs(30));
    let _held = store.lock_consumer(&name(), &request)?.context("the lock stayed held")?;
    say_ready();
    loop {
        thread::park();
    }
}

/// Milliseconds from the SIGKILL of a holder to a waiter holding the lock.
fn once(args: &Value) -> Result<f64> {
    let mut child = ChildProc::spawn("lock-holder", args)?;
    child.ready(Duration::from_secs(30))?;
    let store = open(args)?;
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let request = LockRequest::new(Duration::from_secs(5)).wait(Duration::from_secs(30));
        let held = store.lock_consumer(&name(), &request);
        let _ = tx.send(Instant::now());
        held.map(|h| h.is_some())
    });
    // Let the waiter find the lock held and start waiting; the kill then
    // comes at a varying point of its wait, not in step with its retries.
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % 400,
    );
    thread::sleep(Duration::from_millis(100 + jitter));
    let killed = Instant::now();
    drop(child);
    let taken = rx.recv_timeout(Duration::from_secs(30)).context("no takeover within 30 s")?;
    match waiter.join().map_err(|_| anyhow!("the waiter panicked"))? {
        Ok(true) => Ok(taken.saturating_duration_since(killed).as_secs_f64() * 1e3),
        Ok(false) => bail!("the waiter did not get the lock"),
        Err(e) => Err(e.into()),
    }
}

/// Runs both scenarios `runs` times each.
pub fn all(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let runs = plan.runs.max(11);
    let dir = work.join("takeover");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let args = json!({ "dir": dir });
    let times = (0..runs).map(|_| once(&args)).collect::<Result<Vec<f64>>>()?;
    eprintln!("bench: file takeovers (ms): {times:.1?}");
    rows.push(specs()[0].row_of_runs(&times).with_note(format!("{runs} runs")));
    let server = RedisServer::try_start_with(ServerOptions::default())
        .map_err(|e| anyhow!("no private redis-server: {e}"))?;
    let args = json!({ "url": server.url() });
    let times = (0..runs).map(|_| once(&args)).collect::<Result<Vec<f64>>>()?;
    eprintln!("bench: redis takeovers (ms): {times:.1?}");
    rows.push(specs()[1].row_of_runs(&times).with_note(format!("{runs} runs")));
    Ok(())
}
