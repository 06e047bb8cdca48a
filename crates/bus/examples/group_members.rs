//! Work-group throughput on the file store: `cargo run --release -p bus
//! --example group_members -- DIR EVENTS MEMBERS` publishes EVENTS events to
//! DIR, then starts MEMBERS member processes (this program, run with
//! `member` first) that share them, and prints events/s from the first
//! fetch to the last ack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{EventBus, PublishOptions, WorkerConfig};
use seed_event::{ConsumerName, GroupConfig, JsonObject, Start, Topic, TopicPattern};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("member") {
        return member(&args[1], args[2].parse()?);
    }
    let (dir, events, members) = (&args[0], args[1].parse::<u64>()?, args[2].parse::<u64>()?);
    let store = Arc::new(store_file::FileStore::open(dir)?);
    let bus = EventBus::new(store);
    let topics: Vec<Topic> =
        (0..8).map(|i| Topic::new(format!("bench.t{i}"))).collect::<Result<_, _>>()?;
    let payload: JsonObject = serde_json::from_str(r#"{"task":"x","n":1}"#)?;
    let mut left = events;
    while left > 0 {
        for t in &topics {
            let n = left.min(1000);
            left -= n;
            bus.publish_batch(
                t,
                "bench",
                vec![payload.clone(); n as usize],
                &PublishOptions::default(),
            )?;
        }
    }
    let share = events / members;
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let children: Vec<_> = (0..members)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["member", dir, &share.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let (mut total, mut first, mut last) = (0, f64::MAX, 0f64);
    for c in children {
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<f64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
        eprintln!("member: {} events", fields[0]);
        total += fields[0] as u64;
        first = first.min(fields[1]);
        last = last.max(fields[2]);
    }
    assert_eq!(total, events, "every event handled once");
    let _ = started;
    let secs = last - first;
    println!(
        "{events} events by {members} member processes in {secs:.2}s: {:.0} events/s",
        events as f64 / secs
    );
    Ok(())
}

fn member(dir: &str, _count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(store_file::FileStore::open(dir)?);
    let bus = EventBus::new(store);
    let group = GroupConfig::new(ConsumerName::new("bench")?, TopicPattern::new("bench.*")?)?
        .start(Start::Beginning);
    let handled = Arc::new(AtomicU64::new(0));
    let span = Arc::new(std::sync::Mutex::new((None::<Instant>, None::<Instant>)));
    let (counter, times) = (handled.clone(), span.clone());
    let sub = bus.join_group(WorkerConfig::new(group), move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut t = times.lock().unwrap();
        let now = Instant::now();
        t.0.get_or_insert(now);
        t.1 = Some(now);
        Ok(())
    })?;
    // Leave once nothing came for 200 ms after the first event.
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let last = span.lock().unwrap().1;
        if last.is_some_and(|l| l.elapsed() > Duration::from_millis(200)) {
            break;
        }
    }
    sub.unsubscribe()?;
    let (first, last) = *span.lock().unwrap();
    let (first, last) = (first.unwrap(), last.unwrap());
    let wall = |t: Instant| {
        let ago = t.elapsed();
        (std::time::SystemTime::now() - ago)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    println!("{} {} {}", handled.load(Ordering::Relaxed), wall(first), wall(last));
    Ok(())
}
