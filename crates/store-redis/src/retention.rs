//! Retention: limits on how many events, or how old, a topic keeps.

use redis::Value;
use seed_event::{Cursor, Limits, Result, StoredEvent, Timestamp, Topic};

use crate::codec::raw_entries;
use crate::{scripts, RedisStore, PAGE};

/// How many events a store appends to a topic between two retention checks.
pub const RETENTION_CHECK_EVERY: u64 = 1024;

impl RedisStore {
    /// Deletes the entries at `doomed` (cursor, stored size) from `stream`,
    /// subtracting their sizes from the byte count in `meta`; returns how many went.
    pub(crate) fn delete_entries(
        &self,
        stream: &str,
        meta: &str,
        doomed: &[(Cursor, usize)],
    ) -> Result<u64> {
        let n: i64 = self.shared.run(|con, _| {
            let mut invocation = scripts::DELETE_ENTRIES.prepare_invoke();
            invocation.key(stream).key(meta);
            for (cursor, size) in doomed {
                invocation.arg(cursor.to_string()).arg(*size);
            }
            invocation.invoke(con)
        })?;
        Ok(n.max(0) as u64)
    }

    /// Deletes records of the state topic `topic` with their kept versions
    /// (so history and past versions go with them); returns how many entries went.
    pub(crate) fn delete_state_entries(
        &self,
        topic: &Topic,
        doomed: &[(Cursor, usize, StoredEvent)],
    ) -> Result<u64> {
        let keys = self.keys();
        let (stream, meta) = (keys.stream(topic.as_str()), keys.meta(topic.as_str()));
        let versions = keys.versions(topic.as_str());
        let n: i64 = self.shared.run(|con, _| {
            let mut invocation = scripts::DELETE_STATE_ENTRIES.prepare_invoke();
            invocation.key(&stream).key(&meta).key(&versions);
            for (cursor, size, record) in doomed {
                let field = seed_event::change_of(&record.event)
                    .map_or_else(String::new, |(id, v)| format!("{id}\n{v}"));
                invocation.arg(cursor.to_string()).arg(*size).arg(field);
            }
            invocation.invoke(con)
        })?;
        Ok(n.max(0) as u64)
    }

    /// Applies the configured retention limits to every topic exactly; returns
    /// how many events were removed.
    ///
    /// `max_events` keeps the newest events in append order; `max_age`
    /// removes every event whose timestamp is older than now minus the age,
    /// wherever it sits in the stream. Events appended meanwhile are kept.
    pub fn enforce_retention(&self) -> Result<u64> {
        let mut removed = 0;
        for topic in self.registered_topics()? {
            let limits = self.shared.config.retention.limits(&topic).clone();
            removed += self.enforce_limits(&topic, &limits, true)?;
        }
        Ok(removed)
    }

    /// Called after appending `n` events to `topic`: every
    /// [`RETENTION_CHECK_EVERY`] events, trims the topic if it is a tenth past a limit.
    pub(crate) fn after_append(&self, topic: &Topic, n: u64) {
        let limits = self.shared.config.retention.limits(topic);
        if limits.is_unlimited() || !self.appender.count_towards_check(topic, n) {
            return;
        }
        let limits = limits.clone();
        if let Err(e) = self.enforce_limits(topic, &limits, false) {
            log::warn!("retention of topic {topic} failed: {e}");
        }
    }

    /// Applies `limits` to `topic`; with `exact` false only once a tenth past
    /// a limit, and by age only to entries whose id is below the cut-off.
    fn enforce_limits(&self, topic: &Topic, limits: &Limits, exact: bool) -> Result<u64> {
        let mut removed = 0;
        // State topics keep their own history limit instead.
        if seed_event::entity_type_of(topic).is_some() {
            return Ok(0);
        }
        if let Some(age) = limits.max_age {
            let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
            let cutoff = Timestamp::now().add_micros(-micros);
            let slack = Timestamp::now().add_micros(-(micros.saturating_add(micros / 10)));
            if exact || self.oldest_timestamp(topic)?.is_some_and(|t| t < slack) {
                removed += self.clear_topic(topic, Some(cutoff), exact)?;
            }
        }
        if let Some(max) = limits.max_events {
            removed += self.keep_newest(topic, max, if exact { max } else { max + max / 10 })?;
        }
        Ok(removed)
    }

    /// The timestamp of the topic's first entry.
    fn oldest_timestamp(&self, topic: &Topic) -> Result<Option<Timestamp>> {
        let q = seed_event::Query {
            limit: Some(seed_event::Limit::First(1)),
            ..seed_event::Query::topic(topic)
        };
        Ok(seed_event::EventStore::query(self, &q)?.first().map(|e| e.event.timestamp))
    }

    /// Removes the oldest entries of `topic` beyond the newest `keep`, once it holds more than `above`.
    fn keep_newest(&self, topic: &Topic, keep: u64, above: u64) -> Result<u64> {
        let stream = self.keys().stream(topic.as_str());
        let meta = self.keys().meta(topic.as_str());
        let len: u64 = self.shared.run(|con, _| redis::cmd("XLEN").arg(&stream).query(con))?;
        if len <= above {
            return Ok(0);
        }
        let mut left = len - keep;
        let mut start = "-".to_string();
        let mut removed = 0;
        while left > 0 {
            let count = left.min(PAGE as u64);
            let reply: Value = self.shared.run(|con, _| {
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query(con)
            })?;
            let page = raw_entries(reply, &stream)?;
            let Some(last) = page.last().map(|e| e.cursor) else { break };
            let doomed: Vec<(Cursor, usize)> = page
                .iter()
                .map(|e| (e.cursor, e.line.as_ref().map_or(0, |l| l.len() + 1)))
                .collect();
            removed += self.delete_entries(&stream, &meta, &doomed)?;
            left = left.saturating_sub(page.len() as u64);
            start = format!("({last}");
        }
        Ok(removed)
    }
}
