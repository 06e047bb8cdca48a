//! Replay: historical events handed to a handler again, paced like the original.

use std::time::{Duration, Instant};

use seed_event::{EventStore, Query, Timestamp, TopicPattern};

use crate::subscription::{call, BoxHandler};
use crate::Result;

/// What to replay and how fast.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayConfig {
    /// The topic or pattern to replay.
    pub pattern: TopicPattern,
    /// Only events with `timestamp >= since`.
    pub since: Option<Timestamp>,
    /// Only events with `timestamp < until`.
    pub until: Option<Timestamp>,
    /// The original gaps between events are divided by this; `0` means as fast as possible.
    pub speed: f64,
}

impl ReplayConfig {
    /// Replays every stored event of `pattern` as fast as possible.
    pub fn new(pattern: TopicPattern) -> ReplayConfig {
        ReplayConfig { pattern, since: None, until: None, speed: 0.0 }
    }

    /// This replay from `since` (inclusive).
    pub fn since(mut self, since: Timestamp) -> ReplayConfig {
        self.since = Some(since);
        self
    }

    /// This replay up to `until` (exclusive).
    pub fn until(mut self, until: Timestamp) -> ReplayConfig {
        self.until = Some(until);
        self
    }

    /// This replay at `speed` times the original pace (`0`: as fast as possible).
    pub fn speed(mut self, speed: f64) -> ReplayConfig {
        self.speed = speed;
        self
    }

    fn validate(&self) -> Result<()> {
        if !self.speed.is_finite() || self.speed < 0.0 {
            return Err(seed_event::Error::invalid(
                "speed",
                format!(
                    "{} is not a speed; expected a number >= 0 (0 = as fast as possible)",
                    self.speed
                ),
            )
            .into());
        }
        Ok(())
    }

    fn query(&self) -> Query {
        Query { since: self.since, until: self.until, ..Query::pattern(self.pattern.clone()) }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Events the handler returned `Ok` for.
    pub delivered: u64,
    /// Handler calls that failed (logged, and the replay went on).
    pub failed: u64,
}

/// How many events a replay will hand out and how long its pacing takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayEstimate {
    /// Events that match.
    pub events: u64,
    /// The time the pacing will wait in all (zero at speed 0).
    pub duration: Duration,
}

/// The wall-clock offset at which an event `gap_micros` after the first is due.
fn offset(gap_micros: i64, speed: f64) -> Duration {
    if speed == 0.0 || gap_micros <= 0 {
        return Duration::ZERO;
    }
    // Capped at about 136 years, so adding it to an `Instant` cannot overflow.
    let cap = Duration::from_secs(u64::from(u32::MAX));
    Duration::try_from_secs_f64(gap_micros as f64 / 1e6 / speed).map_or(cap, |d| d.min(cap))
}

pub(crate) fn estimate(store: &dyn EventStore, config: &ReplayConfig) -> Result<ReplayEstimate> {
    config.validate()?;
    let mut events = 0u64;
    let mut first: Option<Timestamp> = None;
    let mut latest = 0i64;
    for item in store.read(&config.query())? {
        let event = item?.event;
        events += 1;
        let t0 = *first.get_or_insert(event.timestamp);
        latest = latest.max(event.timestamp.unix_micros() - t0.unix_micros());
    }
    Ok(ReplayEstimate { events, duration: offset(latest, config.speed) })
}

pub(crate) fn run(
    store: &dyn EventStore,
    config: &ReplayConfig,
    mut handler: BoxHandler,
) -> Result<ReplayReport> {
    config.validate()?;
    let mut report = ReplayReport::default();
    let started = Instant::now();
    let mut first: Option<Timestamp> = None;
    // The schedule never goes back, so an event older than the one before is due at once.
    let mut due = Duration::ZERO;
    for item in store.read(&config.query())? {
        let stored = item?;
        let t0 = *first.get_or_insert(stored.event.timestamp);
        due =
            due.max(offset(stored.event.timestamp.unix_micros() - t0.unix_micros(), config.speed));
        let wait = (started + due).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        match call(handler.as_mut(), &stored) {
            Ok(()) => report.delivered += 1,
            Err(reason) => {
                report.failed += 1;
                log::error!(
                    "replay: handler failed on event {} of topic {}: {reason}",
                    stored.event.id,
                    stored.event.topic
                );
            }
        }
    }
    Ok(report)
}
