//! The semantics of work groups over a [`GroupState`] a store keeps, for
//! store implementations: the memory store keeps the state in memory, the
//! file store in a file changed under the group's lock. Every operation is
//! called with the group locked by the caller, so the state and the store's
//! events are seen by one member at a time.
//!
//! Times are Unix microseconds of the wall clock, so that members in several
//! processes agree on deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::{
    Cursor, Delivery, DeliveryToken, Error, Event, EventStore, GroupConfig, GroupInfo,
    GroupOrdering, Limit, Query, Result, Start, StoredEvent, Timestamp, Topic, TopicPattern,
};

/// One event delivered and not acked yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The member holding it; `None` while it waits to be delivered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Held: its ack wait ends then. Waiting: it may be delivered from then on.
    pub until: i64,
    /// Deliveries so far.
    pub deliveries: u32,
    /// The last failure's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set once it is being dead-lettered: the id of its dead letter. It is
    /// never delivered again; whoever finds it appends the dead letter unless
    /// the dead-letter topic already holds that id, then removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<Uuid>,
}

/// Everything a group is: its pattern, how far it dispatched each topic, its
/// pending events and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// Bumped by every save where the store keeps the state in a file (so a
    /// member that saved it last need not parse it again); first, so that it
    /// can be read from the start of the file.
    #[serde(default)]
    pub version: u64,
    /// The pattern, as created.
    pub pattern: String,
    /// The ordering, as created.
    pub ordering: GroupOrdering,
    /// The dead-letter topic, never dispatched to the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Topic>,
    /// Per topic the last event handed out; topics not here start at their beginning.
    pub positions: BTreeMap<Topic, Cursor>,
    /// Per topic the events delivered and not acked, by cursor.
    pub pending: BTreeMap<Topic, BTreeMap<Cursor, Pending>>,
    /// Deliveries after the first, in all.
    pub redelivered: u64,
    /// Events dead-lettered, in all.
    pub dead_lettered: u64,
}

/// The current time for group deadlines.
pub fn now() -> i64 {
    Timestamp::now().unix_micros()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The greatest cursor before `c`: a query `after` it starts at `c`.
pub fn cursor_before(c: Cursor) -> Cursor {
    match c.minor() {
        0 => Cursor::new(c.major().saturating_sub(1), u64::MAX),
        m => Cursor::new(c.major(), m - 1),
    }
}

/// The event of `topic` at `cursor`, if it is still stored.
fn event_at(store: &dyn EventStore, topic: &Topic, cursor: Cursor) -> Result<Option<StoredEvent>> {
    let query = Query {
        after: (cursor > Cursor::ZERO).then(|| cursor_before(cursor)),
        limit: Some(Limit::First(1)),
        ..Query::topic(topic)
    };
    Ok(store.query(&query)?.into_iter().find(|e| e.cursor == cursor))
}

impl GroupState {
    /// A new group as `config` says, positioned by its start in the topics `topics`.
    pub fn create(
        store: &dyn EventStore,
        config: &GroupConfig,
        topics: &[Topic],
    ) -> Result<GroupState> {
        let mut state = GroupState {
            pattern: config.pattern.to_string(),
            ordering: config.ordering,
            dead_letter: Some(config.dead_letter.clone()),
            ..GroupState::default()
        };
        for topic in topics.iter().filter(|t| config.pattern.matches(t)) {
            let position = match config.start {
                Start::Beginning => None,
                Start::New => store.last_cursor(topic)?,
                Start::Since(t) => {
                    let first = Query {
                        since: Some(t),
                        limit: Some(Limit::First(1)),
                        ..Query::topic(topic)
                    };
                    match store.query(&first)?.first() {
                        Some(e) => Some(cursor_before(e.cursor)),
                        None => store.last_cursor(topic)?,
                    }
                }
            };
            if let Some(position) = position {
                state.positions.insert(topic.clone(), position);
            }
        }
        Ok(state)
    }

    /// Refuses a member whose pattern or ordering is not the group's.
    pub fn check(&self, config: &GroupConfig) -> Result<()> {
        if self.pattern != config.pattern.to_string() {
            return Err(Error::invalid(
                "group",
                format!(
                    "group {} follows {}, not {}; expected the same pattern or another group name",
                    config.name, self.pattern, config.pattern
                ),
            ));
        }
        if self.ordering != config.ordering {
            return Err(Error::invalid(
                "group",
                format!(
                    "group {} has ordering {:?}, not {:?}; expected the same ordering or another group name",
                    config.name, self.ordering, config.ordering
                ),
            ));
        }
        Ok(())
    }

    /// How many events `member` holds.
    pub fn held_by(&self, member: &str) -> usize {
        self.pending
            .values()
            .flat_map(|m| m.values())
            .filter(|p| p.member.as_deref() == Some(member))
            .count()
    }

    /// The distinct members holding events.
    pub fn holders(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .pending
            .values()
            .flat_map(|m| m.values())
            .filter_map(|p| p.member.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// One failed delivery of the pending event: it waits `delay`, or is
    /// marked for its dead letter after its last delivery.
    fn fail(p: &mut Pending, config: &GroupConfig, now: i64, delay: Duration, error: String) {
        p.member = None;
        p.error = Some(error);
        if p.deliveries >= config.max_deliveries {
            p.dead = Some(Uuid::now_v7());
        } else {
            p.until = now.saturating_add(micros(delay));
        }
    }

    /// Takes back the events whose ack wait passed and those of members that
    /// are gone (`alive` says), each a failed delivery; true when anything changed.
    pub fn reap(
        &mut self,
        config: &GroupConfig,
        now: i64,
        alive: &mut dyn FnMut(&str) -> Result<bool>,
    ) -> Result<bool> {
        let mut verdicts: BTreeMap<String, bool> = BTreeMap::new();
        for member in self.holders() {
            let live = alive(&member)?;
            verdicts.insert(member, live);
        }
        let mut changed = false;
        for entries in self.pending.values_mut() {
            for p in entries.values_mut() {
                let Some(member) = &p.member else { continue };
                let error = if !verdicts.get(member).copied().unwrap_or(true) {
                    format!("member {member} left with the event in flight")
                } else if p.until <= now {
                    format!("the ack wait of {:?} passed", config.ack_wait)
                } else {
                    continue;
                };
                GroupState::fail(p, config, now, Duration::ZERO, error);
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Whether some event is marked for its dead letter.
    pub fn has_dead(&self) -> bool {
        self.pending.values().flat_map(|m| m.values()).any(|p| p.dead.is_some())
    }

    /// Appends the dead letter of every event marked for one (unless its
    /// topic already holds it: a crash came between the append and the
    /// removal) and removes the event. The caller must have saved the state
    /// with the marks first, so that a crash in between finds them.
    pub fn settle_dead(&mut self, store: &dyn EventStore, config: &GroupConfig) -> Result<()> {
        let marked: Vec<(Topic, Cursor, Pending)> = self
            .pending
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(c, p)| (t.clone(), *c, p.clone())))
            .filter(|(_, _, p)| p.dead.is_some())
            .collect();
        if marked.is_empty() {
            return Ok(());
        }
        let recent =
            Query { limit: Some(Limit::Last(10_000)), ..Query::topic(&config.dead_letter) };
        let there: std::collections::BTreeSet<Uuid> =
            store.query(&recent)?.into_iter().map(|e| e.event.id).collect();
        for (topic, cursor, p) in marked {
            let id = p.dead.unwrap_or_else(Uuid::now_v7);
            if !there.contains(&id) {
                let original = event_at(store, &topic, cursor)?;
                let payload = json!({
                    "event": original.as_ref().map(|e| serde_json::to_value(&e.event).unwrap_or_default()),
                    "topic": topic.as_str(),
                    "cursor": cursor.to_string(),
                    "deliveries": p.deliveries,
                    "error": p.error.clone().unwrap_or_default(),
                    "group": config.name.as_str(),
                });
                let mut letter = Event::new(
                    config.dead_letter.clone(),
                    format!("group:{}", config.name),
                    payload.as_object().cloned().unwrap_or_default(),
                );
                letter.id = id;
                if let Some(e) = &original {
                    letter.correlation_id = e.event.correlation_id.clone();
                }
                store.append(&letter)?;
            }
            self.remove(&topic, cursor);
            self.dead_lettered += 1;
        }
        Ok(())
    }

    fn remove(&mut self, topic: &Topic, cursor: Cursor) -> Option<Pending> {
        let entries = self.pending.get_mut(topic)?;
        let p = entries.remove(&cursor);
        if entries.is_empty() {
            self.pending.remove(topic);
        }
        p
    }

    /// Hands `member` up to `max` events (within its `max_in_flight`):
    /// first those waiting to be delivered again, then new events of `topics`.
    pub fn fetch(
        &mut self,
        store: &dyn EventStore,
        config: &GroupConfig,
        member: &str,
        max: usize,
        now: i64,
        topics: &[Topic],
    ) -> Result<Vec<Delivery>> {
        let room = config.max_in_flight.saturating_sub(self.held_by(member)).min(max);
        let mut out = Vec::new();
        if room == 0 {
            return Ok(out);
        }
        let until = now.saturating_add(micros(config.ack_wait));
        // Events waiting to be delivered again, oldest first per topic.
        let due: Vec<(Topic, Cursor)> = self
            .pending
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(c, p)| (t, *c, p)))
            .filter(|(_, _, p)| p.member.is_none() && p.dead.is_none() && p.until <= now)
            .map(|(t, c, _)| (t.clone(), c))
            .take(room)
            .collect();
        for (topic, cursor) in due {
            let Some(event) = event_at(store, &topic, cursor)? else {
                // Cleared or removed by retention: nothing to deliver.
                self.remove(&topic, cursor);
                continue;
            };
            let Some(p) = self.pending.get_mut(&topic).and_then(|m| m.get_mut(&cursor)) else {
                continue;
            };
            p.member = Some(member.to_string());
            p.deliveries = p.deliveries.saturating_add(1);
            p.until = until;
            self.redelivered += 1;
            let token = DeliveryToken { topic, cursor, delivery: p.deliveries };
            out.push(Delivery { event, deliveries: p.deliveries, token });
        }
        if out.len() >= room {
            return Ok(out);
        }
        // New events, from a topic that changes with the clock so that a busy
        // topic does not starve the others.
        let pattern = TopicPattern::new(&self.pattern)?;
        let matching: Vec<&Topic> = topics
            .iter()
            .filter(|t| pattern.matches(t) && !self.is_dead_letter(t, config))
            .collect();
        if matching.is_empty() {
            return Ok(out);
        }
        let first = usize::try_from(now.unsigned_abs() / 1000).unwrap_or(0) % matching.len();
        for i in 0..matching.len() {
            let left = room - out.len();
            if left == 0 {
                break;
            }
            let topic = matching[(first + i) % matching.len()];
            let per_topic = self.ordering == GroupOrdering::PerTopic;
            if per_topic && self.pending.get(topic).is_some_and(|m| !m.is_empty()) {
                continue;
            }
            let query = Query {
                after: self.positions.get(topic).copied(),
                limit: Some(Limit::First(if per_topic { 1 } else { left })),
                ..Query::topic(topic)
            };
            for event in store.query(&query)? {
                self.positions.insert(topic.clone(), event.cursor);
                let pending = Pending {
                    member: Some(member.to_string()),
                    until,
                    deliveries: 1,
                    error: None,
                    dead: None,
                };
                self.pending.entry(topic.clone()).or_default().insert(event.cursor, pending);
                let token =
                    DeliveryToken { topic: topic.clone(), cursor: event.cursor, delivery: 1 };
                out.push(Delivery { event, deliveries: 1, token });
            }
        }
        Ok(out)
    }

    /// Whether `topic` is a dead-letter topic of the group (never dispatched).
    fn is_dead_letter(&self, topic: &Topic, config: &GroupConfig) -> bool {
        *topic == config.dead_letter || self.dead_letter.as_ref() == Some(topic)
    }

    /// The pending event `token` names, if `member` still holds that delivery.
    fn held(&mut self, member: &str, token: &DeliveryToken) -> Option<&mut Pending> {
        self.pending
            .get_mut(&token.topic)
            .and_then(|m| m.get_mut(&token.cursor))
            .filter(|p| p.member.as_deref() == Some(member) && p.deliveries == token.delivery)
    }

    /// Removes the deliveries `member` still holds; returns how many.
    pub fn ack(&mut self, member: &str, tokens: &[DeliveryToken]) -> usize {
        let mut n = 0;
        for token in tokens {
            if self.held(member, token).is_some() {
                self.remove(&token.topic, token.cursor);
                n += 1;
            }
        }
        n
    }

    /// A failed delivery (see [`GroupConfig::nack_delay`]); false when
    /// `member` no longer holds it.
    pub fn nack(
        &mut self,
        config: &GroupConfig,
        member: &str,
        token: &DeliveryToken,
        delay: Option<Duration>,
        error: &str,
        now: i64,
    ) -> bool {
        let Some(p) = self.held(member, token) else { return false };
        let delay = delay.unwrap_or_else(|| config.nack_delay(p.deliveries));
        GroupState::fail(p, config, now, delay, error.to_string());
        true
    }

    /// Restarts the ack wait of a delivery `member` holds; false when it does not.
    pub fn in_progress(
        &mut self,
        config: &GroupConfig,
        member: &str,
        token: &DeliveryToken,
        now: i64,
    ) -> bool {
        let Some(p) = self.held(member, token) else { return false };
        p.until = now.saturating_add(micros(config.ack_wait));
        true
    }

    /// `member` leaves: its events may be delivered to the others at once
    /// (not a failure: the member did not get to handle them).
    pub fn leave(&mut self, member: &str, now: i64) -> bool {
        let mut changed = false;
        for p in self.pending.values_mut().flat_map(|m| m.values_mut()) {
            if p.member.as_deref() == Some(member) {
                p.member = None;
                p.until = now;
                changed = true;
            }
        }
        changed
    }

    /// The earliest time something changes for a waiting member without any
    /// event being appended: an event it may get again becomes due, or the
    /// ack wait of one held elsewhere passes.
    pub fn next_change(&self) -> Option<i64> {
        self.pending
            .values()
            .flat_map(|m| m.values())
            .filter(|p| p.dead.is_none())
            .map(|p| p.until)
            .min()
    }

    /// Whether members other than `member` hold events (their acks, or their
    /// death, can free work for it).
    pub fn others_hold(&self, member: &str) -> bool {
        self.pending
            .values()
            .flat_map(|m| m.values())
            .any(|p| p.member.as_deref().is_some_and(|m| m != member))
    }

    /// The group's figures; `members` are its live members.
    pub fn info(
        &self,
        store: &dyn EventStore,
        name: &str,
        members: Vec<String>,
        topics: &[Topic],
    ) -> Result<GroupInfo> {
        let (mut in_flight, mut waiting) = (0, 0);
        for p in self.pending.values().flat_map(|m| m.values()) {
            match p.member {
                Some(_) => in_flight += 1,
                None => waiting += 1,
            }
        }
        let pattern = TopicPattern::new(&self.pattern)?;
        for topic in
            topics.iter().filter(|t| pattern.matches(t) && self.dead_letter.as_ref() != Some(t))
        {
            waiting += match self.positions.get(topic) {
                Some(c) => store.count_after(topic, *c)?,
                None => store.count_after(topic, Cursor::ZERO)?,
            };
        }
        Ok(GroupInfo {
            name: name.to_string(),
            pattern: self.pattern.clone(),
            members,
            in_flight,
            waiting,
            redelivered: self.redelivered,
            dead_lettered: self.dead_lettered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_before_is_the_greatest_below() {
        assert_eq!(cursor_before(Cursor::new(5, 0)), Cursor::new(4, u64::MAX));
        assert_eq!(cursor_before(Cursor::new(5, 3)), Cursor::new(5, 2));
        assert!(cursor_before(Cursor::new(1, 0)) < Cursor::new(1, 0));
    }

    #[test]
    fn the_state_round_trips_as_json() {
        let mut state = GroupState { pattern: "a.>".into(), ..GroupState::default() };
        let t = Topic::new("a.b").unwrap();
        state.positions.insert(t.clone(), Cursor::new(3, 0));
        let p = Pending {
            member: Some("m".into()),
            until: 7,
            deliveries: 2,
            error: Some("x".into()),
            dead: None,
        };
        state.pending.entry(t).or_default().insert(Cursor::new(2, 0), p);
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<GroupState>(&text).unwrap(), state);
    }
}
