//! Retention limits that stores apply per topic: how many events, or how old.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Topic;

/// Retention limits of a topic; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Remove events whose timestamp is older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many events (the newest).
    pub max_events: Option<u64>,
}

impl Limits {
    /// Whether these limits remove anything at all.
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_events.is_none()
    }
}

/// Retention limits: a default for every topic, and overrides for some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// The limits of topics without an override.
    pub default: Limits,
    /// Limits for particular topics.
    pub per_topic: BTreeMap<Topic, Limits>,
}

impl Retention {
    /// The limits that apply to `topic`.
    pub fn limits(&self, topic: &Topic) -> &Limits {
        self.per_topic.get(topic).unwrap_or(&self.default)
    }

    /// Whether no topic has any limit.
    pub fn is_unlimited(&self) -> bool {
        self.default.is_unlimited() && self.per_topic.values().all(Limits::is_unlimited)
    }
}
