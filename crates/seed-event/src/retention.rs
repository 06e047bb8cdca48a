//! Retention limits that stores apply per topic: how many events, or how old.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Timestamp, Topic};

/// Retention limits of a topic; `None` means unlimited.
///
/// ```
/// use std::time::Duration;
/// let limits = seed_event::Limits::default().max_events(1000).max_age(Duration::from_secs(3600));
/// assert_eq!(limits.max_events, Some(1000));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Remove events whose timestamp is older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many events (the newest).
    pub max_events: Option<u64>,
}

impl Limits {
    /// These limits keeping at most the newest `n` events.
    pub fn max_events(mut self, n: u64) -> Limits {
        self.max_events = Some(n);
        self
    }

    /// These limits removing events older than `age`.
    pub fn max_age(mut self, age: Duration) -> Limits {
        self.max_age = Some(age);
        self
    }

    /// Whether these limits remove anything at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_events.is_none()
    }

    /// The limits a tenth looser (by at least one event): stores check them
    /// now and then while appending and trim only a topic past these, so a big
    /// log is not rewritten for a few events. An explicit retention run uses
    /// the limits themselves.
    pub fn looser(&self) -> Limits {
        Limits {
            max_age: self.max_age.map(|age| age.saturating_add(age / 10)),
            max_events: self.max_events.map(|n| n.saturating_add((n / 10).max(1))),
        }
    }

    /// The time before which `max_age` removes events, seen at `now`
    /// (saturating far in the past for an age longer than the clock's range).
    pub fn cutoff(&self, now: Timestamp) -> Option<Timestamp> {
        let micros = |age: Duration| i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        self.max_age.map(|age| now.add_micros(-micros(age)))
    }
}

/// Retention limits: a default for every topic, and overrides for some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// The limits of topics without an override.
    pub default: Limits,
    /// Limits for particular topics.
    pub per_topic: BTreeMap<Topic, Limits>,
}

impl Retention {
    /// `default` for every topic.
    pub fn new(default: Limits) -> Retention {
        Retention { default, per_topic: BTreeMap::new() }
    }

    /// This retention with `limits` for `topic` instead of the default.
    pub fn with_topic(mut self, topic: Topic, limits: Limits) -> Retention {
        self.per_topic.insert(topic, limits);
        self
    }

    /// The limits that apply to `topic`.
    pub fn limits(&self, topic: &Topic) -> &Limits {
        self.per_topic.get(topic).unwrap_or(&self.default)
    }

    /// Whether no topic has any limit.
    pub fn is_unlimited(&self) -> bool {
        self.default.is_unlimited() && self.per_topic.values().all(Limits::is_unlimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looser_limits_are_a_tenth_past_and_at_least_one_event() {
        let limits = Limits::default().max_age(Duration::from_secs(100)).max_events(1000);
        let looser = limits.looser();
        assert_eq!(looser.max_age, Some(Duration::from_secs(110)));
        assert_eq!(looser.max_events, Some(1100));
        assert_eq!(Limits::default().max_events(5).looser().max_events, Some(6));
        assert_eq!(Limits::default().max_events(u64::MAX).looser().max_events, Some(u64::MAX));
        assert!(Limits::default().looser().is_unlimited());
    }

    #[test]
    fn the_cutoff_is_now_minus_the_age_and_saturates() {
        let now = Timestamp::from_unix_micros(10_000_000);
        let limits = Limits::default().max_age(Duration::from_secs(4));
        assert_eq!(limits.cutoff(now), Some(Timestamp::from_unix_micros(6_000_000)));
        let forever = Limits::default().max_age(Duration::MAX);
        assert!(forever.cutoff(now).unwrap() < Timestamp::from_unix_micros(0));
        assert_eq!(Limits::default().cutoff(now), None);
    }
}
