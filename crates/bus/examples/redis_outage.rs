//! Measures a subscription across Redis outages on a private `redis-server`:
//! the time from a restart to the first event delivered, and how long
//! `unsubscribe` takes while the server is down.
//!
//! `cargo run --release -p bus --example redis_outage [ROUNDS]`

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bus::{EventBus, PublishOptions, StartAt, Status, Subscription};
use seed_event::{Topic, TopicPattern};
use store_redis::testing::{RedisServer, ServerOptions};
use store_redis::RedisStore;

type Failure = Box<dyn std::error::Error>;

const DEADLINE: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), Failure> {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn outage(sub: &Subscription) -> Option<(Duration, u32)> {
    match sub.status() {
        Status::Reconnecting { since, attempts } => {
            Some((since.elapsed().unwrap_or_default(), attempts))
        }
        _ => None,
    }
}

fn publish(bus: &EventBus, topic: &Topic) -> Result<(), Failure> {
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = bus.publish(topic, "bench", Default::default(), PublishOptions::default()) {
        if Instant::now() >= deadline {
            return Err(e.into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    println!(
        "{name}: n={} min {:.1} ms, median {median:.1} ms, max {:.1} ms",
        ms.len(),
        ms[0],
        ms[ms.len() - 1]
    );
}

fn main() -> Result<(), Failure> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(5), |a| a.parse())?;
    let mut server = RedisServer::try_start_with(ServerOptions {
        persistent: true,
        ..ServerOptions::default()
    })?;
    let bus = Arc::new(EventBus::new(Arc::new(RedisStore::open(&server.url())?)));
    let topic = Topic::new("outage.t")?;
    let pattern = TopicPattern::new("outage.>")?;

    // Restart after a 1 s outage, then the first event published is delivered.
    let (tx, rx) = mpsc::channel();
    let sub = bus.subscribe(&pattern, StartAt::New, move |_| {
        tx.send(Instant::now())?;
        Ok(())
    })?;
    let mut to_delivery = Vec::new();
    for _ in 0..rounds {
        server.stop();
        wait_for("a 1 s outage", || outage(&sub).is_some_and(|(age, _)| age.as_secs() >= 1))?;
        server.restart();
        let restarted = Instant::now();
        publish(&bus, &topic)?;
        let delivered = rx.recv_timeout(DEADLINE)?;
        to_delivery.push((delivered - restarted).as_secs_f64() * 1000.0);
        wait_for("live again", || sub.status() == Status::Live)?;
    }
    sub.unsubscribe()?;
    summary("Redis restart (after 1 s down) to first delivery", to_delivery);

    // Unsubscribe while the server is down, after 1..=8 failed attempts
    // (the wait between attempts has grown to up to 2 s by then).
    let mut unsubscribe = Vec::new();
    for round in 0..rounds.max(8) {
        let sub = bus.subscribe(&pattern, StartAt::New, |_| Ok(()))?;
        server.stop();
        let attempts = (round % 8) as u32 + 1;
        wait_for("failed attempts", || outage(&sub).is_some_and(|(_, n)| n >= attempts))?;
        let start = Instant::now();
        sub.unsubscribe()?;
        unsubscribe.push(start.elapsed().as_secs_f64() * 1000.0);
        server.restart();
    }
    summary("unsubscribe while Redis is down", unsubscribe);
    Ok(())
}
