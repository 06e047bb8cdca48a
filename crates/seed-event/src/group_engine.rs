//! The semantics of work groups over a [`GroupState`] a store keeps, for
//! store implementations: the memory store keeps the state in memory, the
//! file store in a file changed under the group's lock. Every operation is
//! called with the group locked by the caller, so the state and the store's
//! events are seen by one member at a time.
//!
//! Times are Unix microseconds of the wall clock, so that members in several
//! processes agree on deadlines.

use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// Shared: the entries of one batch point to one string.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_name")]
    pub member: Option<Arc<str>>,
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
    /// Whether the group is exclusive, as created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
    /// The dead-letter topic, never dispatched to the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Topic>,
    /// Per topic the last event handed out; topics not here start at their beginning.
    pub positions: BTreeMap<Topic, Cursor>,
    /// Per topic the events delivered and not acked, by cursor; written as
    /// runs of cursors that share their state (see [`runs`]), so a batch
    /// handed to one member takes a few bytes, not a line per event.
    #[serde(with = "runs")]
    pub pending: BTreeMap<Topic, BTreeMap<Cursor, Pending>>,
    /// Deliveries after the first, in all.
    pub redelivered: u64,
    /// Events dead-lettered, in all.
    pub dead_lettered: u64,
}

/// An optional shared name as an optional JSON string.
mod shared_name {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(name: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
        match name {
            Some(n) => s.serialize_some(&**n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(Arc::from))
    }
}

/// The pending table as JSON: per topic, a list of `[pending, runs]` where
/// `pending` is the state the cursors share and `runs` is a list of
/// `[first, n]`: the cursor `first` and the `n - 1` after it (`major + 1`,
/// minor 0 each).
pub mod runs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Pending;
    use crate::{Cursor, Topic};

    /// A run: its first cursor and how many consecutive ones.
    #[derive(Serialize, Deserialize)]
    struct Run(Cursor, u64);

    type Table = BTreeMap<Topic, BTreeMap<Cursor, Pending>>;

    /// The longest run read back (more events than any group holds in flight).
    const MAX_RUN: u64 = 1 << 24;

    /// Writes `table` as runs.
    pub fn serialize<S: Serializer>(table: &Table, s: S) -> Result<S::Ok, S::Error> {
        let mut out: BTreeMap<&Topic, Vec<(&Pending, Vec<Run>)>> = BTreeMap::new();
        for (topic, entries) in table {
            let groups = out.entry(topic).or_default();
            for (cursor, p) in entries {
                let follows = |r: &Run| {
                    r.0.minor() == 0
                        && cursor.minor() == 0
                        && r.0.major().checked_add(r.1) == Some(cursor.major())
                };
                match groups.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, runs)) => match runs.last_mut() {
                        Some(run) if follows(run) => run.1 += 1,
                        _ => runs.push(Run(*cursor, 1)),
                    },
                    None => groups.push((p, vec![Run(*cursor, 1)])),
                }
            }
        }
        out.serialize(s)
    }

    /// Reads runs back into the table.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Table, D::Error> {
        let read: BTreeMap<Topic, Vec<(Pending, Vec<Run>)>> = BTreeMap::deserialize(d)?;
        let mut table = Table::new();
        for (topic, groups) in read {
            let mut entries = Vec::new();
            for (p, runs) in groups {
                for Run(first, n) in runs {
                    if n > MAX_RUN {
                        return Err(serde::de::Error::custom(format!(
                            "a run of {n} pending events, at most {MAX_RUN} are possible"
                        )));
                    }
                    entries.push((first, p.clone()));
                    for i in 1..n {
                        let cursor = Cursor::new(first.major().saturating_add(i), 0);
                        entries.push((cursor, p.clone()));
                    }
                }
            }
            // Built at once, sorted (of a cursor given twice, the last counts, as by inserts).
            table.insert(topic, entries.into_iter().collect());
        }
        Ok(table)
    }
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

/// Appends `letter` to its topic unless the topic's newest events hold its
/// id (a member that died after appending it, before removing its event,
/// left the mark that brings us here): the check and the append are one
/// conditional append (on the last cursor the check saw), so an append by
/// anyone else in between sends it back to the check.
fn append_once(store: &dyn EventStore, letter: &Event) -> Result<()> {
    let recent = Query { limit: Some(Limit::Last(10_000)), ..Query::topic(&letter.topic) };
    for _ in 0..1000 {
        let newest = store.query(&recent)?;
        if newest.iter().any(|e| e.event.id == letter.id) {
            return Ok(());
        }
        match store.append_expecting(letter, newest.last().map(|e| e.cursor)) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
            Err(e) => return Err(e),
        }
    }
    // Appends without end to the dead-letter topic: at least once.
    store.append(letter).map(drop)
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
            exclusive: config.exclusive,
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
        for (topic, cursor) in &config.start_after {
            if config.pattern.matches(topic) && *topic != config.dead_letter {
                state.positions.insert(topic.clone(), *cursor);
            }
        }
        Ok(state)
    }

    /// Refuses a member whose pattern, ordering or mode is not the group's.
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
        if self.exclusive != config.exclusive {
            return Err(crate::mode_mismatch(&config.name, self.exclusive));
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
        let mut out: Vec<&str> = Vec::new();
        for member in
            self.pending.values().flat_map(|m| m.values()).filter_map(|p| p.member.as_deref())
        {
            // The entries of a batch follow each other: most repeat the last one seen.
            if out.last() != Some(&member) && !out.contains(&member) {
                out.push(member);
            }
        }
        out.sort_unstable();
        out.into_iter().map(str::to_string).collect()
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
                let error = if !verdicts.get(&**member).copied().unwrap_or(true) {
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
        for (topic, cursor, p) in marked {
            let id = p.dead.unwrap_or_else(Uuid::now_v7);
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
            append_once(store, &letter)?;
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
        let mut out = Vec::with_capacity(room.min(4096));
        if room == 0 {
            return Ok(out);
        }
        let until = now.saturating_add(micros(config.ack_wait));
        let holder: Arc<str> = Arc::from(member);
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
            p.member = Some(holder.clone());
            p.deliveries = p.deliveries.saturating_add(1);
            p.until = until;
            // A released event (its count taken back to 0) is delivered anew.
            if p.deliveries > 1 {
                self.redelivered += 1;
            }
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
            let events = store.query(&query)?;
            let Some(last) = events.last().map(|e| e.cursor) else { continue };
            self.positions.insert(topic.clone(), last);
            let entries = self.pending.entry(topic.clone()).or_default();
            for event in events {
                let pending = Pending {
                    member: Some(holder.clone()),
                    until,
                    deliveries: 1,
                    error: None,
                    dead: None,
                };
                entries.insert(event.cursor, pending);
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

    /// Hands back deliveries `member` holds and did not start handling: they
    /// may be delivered to the others at once, and the delivery is not
    /// counted (neither in the event's count nor as a redelivery); returns
    /// how many it held.
    pub fn release(&mut self, member: &str, tokens: &[DeliveryToken], now: i64) -> usize {
        let mut n = 0;
        for token in tokens {
            let Some(p) = self.held(member, token) else { continue };
            p.member = None;
            p.until = now;
            let redelivery = p.deliveries > 1;
            p.deliveries = p.deliveries.saturating_sub(1);
            if redelivery {
                self.redelivered = self.redelivered.saturating_sub(1);
            }
            n += 1;
        }
        n
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
            active: crate::active_member(self.exclusive, &members),
            members,
            exclusive: self.exclusive,
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
    fn the_state_round_trips_as_json_with_pending_events_in_runs() {
        let mut state = GroupState { pattern: "a.>".into(), ..GroupState::default() };
        let t = Topic::new("a.b").unwrap();
        state.positions.insert(t.clone(), Cursor::new(300, 0));
        let p = Pending {
            member: Some("m".into()),
            until: 7,
            deliveries: 2,
            error: Some("x".into()),
            dead: None,
        };
        let q = Pending { member: None, until: 9, deliveries: 1, error: None, dead: None };
        let entries = state.pending.entry(t).or_default();
        for c in (10..266).chain(270..280) {
            entries.insert(Cursor::new(c, 0), p.clone());
        }
        entries.insert(Cursor::new(266, 0), q.clone());
        entries.insert(Cursor::new(267, 3), q);
        let text = serde_json::to_string(&state).unwrap();
        assert!(text.contains("[[\"10-0\",256],[\"270-0\",10]]"), "{text}");
        assert!(text.len() < 400, "{} bytes: {text}", text.len());
        assert_eq!(serde_json::from_str::<GroupState>(&text).unwrap(), state);
    }

    /// Of a cursor written twice (by no writer of ours), the later entry counts.
    #[test]
    fn a_cursor_in_two_runs_takes_the_later_one() {
        let text = r#"{"pattern":"a","ordering":"none","positions":{},"pending":{"a":[[{"until":1,"deliveries":1},[["5-0",3]]],[{"until":2,"deliveries":2},[["6-0",1]]]]},"redelivered":0,"dead_lettered":0}"#;
        let state: GroupState = serde_json::from_str(text).unwrap();
        let entries = &state.pending[&Topic::new("a").unwrap()];
        let got: Vec<_> = entries.iter().map(|(c, p)| (c.major(), p.deliveries)).collect();
        assert_eq!(got, vec![(5, 1), (6, 2), (7, 1)]);
    }
}
