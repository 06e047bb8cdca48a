//! [`MemoryStore`]: the in-memory reference implementation of [`EventStore`].
//!
//! It keeps everything in one process and loses it on exit. It exists so the
//! conformance suite has a plainly correct store to run against, and so the
//! bus can be unit-tested without a disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::{
    apply_limit, check_batch_topic, conflict, lock, merge_by_timestamp, wait, wait_timeout,
};
use crate::{
    change_of, version_conflict, Clear, ConsumerLock, ConsumerName, Cursor, Error, Event,
    EventStore, EventStream, Fence, FollowFrom, Follower, LockRequest, Query, Result, Start,
    StateBackend, StatePut, StoredEvent, Topic, TopicPattern, TopicStats,
};

#[derive(Default)]
struct TopicLog {
    events: Vec<StoredEvent>,
    /// The sequence number of the last event ever appended (survives clears).
    last_seq: u64,
    bytes: u64,
}

#[derive(Default)]
struct State {
    topics: BTreeMap<Topic, TopicLog>,
    consumers: BTreeMap<ConsumerName, BTreeMap<Topic, Cursor>>,
    /// Per entity type: each entity's kept records, oldest first.
    states: BTreeMap<String, TypeStates>,
    /// Per consumer: the last lock generation handed out and whether it is held.
    locks: BTreeMap<ConsumerName, (u64, bool)>,
}

#[derive(Default)]
struct TypeStates {
    entities: BTreeMap<String, Vec<StoredEvent>>,
    compacted: Option<Cursor>,
}

struct Shared {
    state: Mutex<State>,
    appended: Condvar,
    /// The work groups; never locked while `state` is held.
    groups: Mutex<groups::Groups>,
    /// Signalled when a group changes or an event is appended while a member waits.
    group_changed: Condvar,
    /// Members alive: appends signal `group_changed` only when there are some.
    members: std::sync::atomic::AtomicUsize,
    /// Versions kept per entity.
    history: u64,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            state: Mutex::default(),
            appended: Condvar::new(),
            groups: Mutex::default(),
            group_changed: Condvar::new(),
            members: std::sync::atomic::AtomicUsize::new(0),
            history: crate::DEFAULT_STATE_HISTORY,
        }
    }
}

/// An [`EventStore`] in memory; clones share the same events.
///
/// ```
/// use seed_event::{Event, EventStore, MemoryStore, Query, Topic};
/// let store = MemoryStore::new();
/// let topic = Topic::new("task.done").unwrap();
/// store.append(&Event::new(topic.clone(), "me", Default::default())).unwrap();
/// assert_eq!(store.query(&Query::topic(&topic)).unwrap().len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store that keeps the newest `n` versions of each entity (at least 1).
    pub fn with_state_history(n: u64) -> MemoryStore {
        MemoryStore { shared: Arc::new(Shared { history: n.max(1), ..Shared::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Wakes the group members waiting for events (none of them is this thread).
    fn appended(&self) {
        self.shared.appended.notify_all();
        groups::appended(self);
    }
}

#[path = "memory_groups.rs"]
mod groups;

/// A held lock of a [`MemoryStore`] consumer.
struct MemoryLock {
    store: MemoryStore,
    name: ConsumerName,
    fence: u64,
}

impl ConsumerLock for MemoryLock {
    fn fence(&self) -> Fence {
        Fence(self.fence)
    }

    fn is_lost(&self) -> bool {
        self.store.lock().locks.get(&self.name) != Some(&(self.fence, true))
    }
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        let mut state = self.store.lock();
        if let Some(entry) = state.locks.get_mut(&self.name) {
            if entry.0 == self.fence {
                entry.1 = false;
            }
        }
    }
}

fn push(state: &mut State, event: Event) -> Cursor {
    let log = state.topics.entry(event.topic.clone()).or_default();
    log.last_seq += 1;
    log.bytes += event.to_json_line().len() as u64 + 1;
    let cursor = Cursor::new(log.last_seq, 0);
    log.events.push(StoredEvent { cursor, event });
    cursor
}

impl EventStore for MemoryStore {
    fn describe(&self) -> String {
        "memory store".to_string()
    }

    fn append(&self, event: &Event) -> Result<Cursor> {
        let cursor = push(&mut self.lock(), event.clone());
        self.appended();
        Ok(cursor)
    }

    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        check_batch_topic(topic, events)?;
        let mut state = self.lock();
        let cursors = events.iter().map(|e| push(&mut state, e.clone())).collect();
        drop(state);
        self.appended();
        Ok(cursors)
    }

    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        let mut state = self.lock();
        let actual = state.topics.get(&event.topic).and_then(|l| l.events.last()).map(|e| e.cursor);
        if actual != expected {
            return Err(conflict(&event.topic, expected, actual));
        }
        let cursor = push(&mut state, event.clone());
        drop(state);
        self.appended();
        Ok(cursor)
    }

    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>> {
        Ok(self.lock().topics.get(topic).and_then(|l| l.events.last()).map(|e| e.cursor))
    }

    fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        query.validate()?;
        let state = self.lock();
        let mut streams: Vec<EventStream<'_>> = Vec::new();
        for (topic, log) in &state.topics {
            if !query.selects_topic(topic) {
                continue;
            }
            let q = query.clone();
            let events: Vec<StoredEvent> =
                log.events.iter().filter(|e| q.matches(e.cursor, &e.event)).cloned().collect();
            streams.push(Box::new(events.into_iter().map(Ok)));
        }
        drop(state);
        apply_limit(merge_by_timestamp(streams), query.limit)
    }

    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64> {
        let state = self.lock();
        Ok(state
            .topics
            .get(topic)
            .map_or(0, |l| l.events.iter().filter(|e| e.cursor > cursor).count() as u64))
    }

    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>> {
        let state = self.lock();
        let mut snapshot = BTreeMap::new();
        for (topic, log) in &state.topics {
            if pattern.matches(topic) {
                snapshot.insert(topic.clone(), Cursor::new(log.last_seq, 0));
            }
        }
        let mut positions = from.positions;
        if from.start == Start::New {
            for (topic, head) in &snapshot {
                positions.entry(topic.clone()).or_insert(*head);
            }
        }
        Ok(Box::new(MemoryFollower {
            store: self.clone(),
            pattern: pattern.clone(),
            positions,
            since: match from.start {
                Start::Since(t) => Some((t, snapshot)),
                _ => None,
            },
        }))
    }

    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
        Ok(self.lock().consumers.get(name).cloned().unwrap_or_default())
    }

    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()> {
        self.lock().consumers.entry(name.clone()).or_default().insert(topic.clone(), cursor);
        Ok(())
    }

    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        Ok(self.lock().consumers.keys().cloned().collect())
    }

    fn lock_consumer(
        &self,
        name: &ConsumerName,
        request: &LockRequest,
    ) -> Result<Option<Box<dyn ConsumerLock>>> {
        let take = || {
            let mut state = self.lock();
            let entry = state.locks.entry(name.clone()).or_insert((0, false));
            if entry.1 {
                return Ok(None);
            }
            *entry = (entry.0 + 1, true);
            let held = MemoryLock { store: self.clone(), name: name.clone(), fence: entry.0 };
            Ok(Some(Box::new(held) as Box<dyn ConsumerLock>))
        };
        request.retry(take, |_| Duration::from_millis(5))
    }

    fn commit_fenced(
        &self,
        name: &ConsumerName,
        fence: Fence,
        topic: &Topic,
        cursor: Cursor,
    ) -> Result<()> {
        let mut state = self.lock();
        if state.locks.get(name) != Some(&(fence.0, true)) {
            return Err(Error::StaleLock { consumer: name.to_string(), fence: fence.0 });
        }
        state.consumers.entry(name.clone()).or_default().insert(topic.clone(), cursor);
        Ok(())
    }

    fn topics(&self) -> Result<Vec<TopicStats>> {
        let state = self.lock();
        Ok(state
            .topics
            .iter()
            .map(|(topic, log)| TopicStats {
                topic: topic.clone(),
                events: log.events.len() as u64,
                bytes: log.bytes,
                first: log.events.first().map(|e| e.event.timestamp),
                last: log.events.last().map(|e| e.event.timestamp),
                last_cursor: log.events.last().map(|e| e.cursor),
            })
            .collect())
    }

    fn clear(&self, what: &Clear) -> Result<u64> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut removed = 0;
        for (topic, log) in state.topics.iter_mut() {
            if what.topic.as_ref().is_some_and(|t| t != topic) {
                continue;
            }
            let before = log.events.len();
            let old: Vec<Cursor> = log.events.iter().map(|e| e.cursor).collect();
            // A state topic keeps each entity's newest record.
            let newest: BTreeSet<Cursor> = crate::entity_type_of(topic)
                .and_then(|kind| state.states.get(kind))
                .map(|t| t.entities.values().filter_map(|r| r.last()).map(|e| e.cursor).collect())
                .unwrap_or_default();
            log.events.retain(|e| {
                what.before.is_some_and(|b| e.event.timestamp >= b) || newest.contains(&e.cursor)
            });
            removed += (before - log.events.len()) as u64;
            if before > log.events.len() {
                if let Some(kind) = crate::entity_type_of(topic) {
                    let kept: BTreeSet<Cursor> = log.events.iter().map(|e| e.cursor).collect();
                    let through = old.into_iter().filter(|c| !kept.contains(c)).max();
                    let entry = state.states.entry(kind.to_string()).or_default();
                    entry.compacted = entry.compacted.max(through);
                }
            }
            log.bytes = log.events.iter().map(|e| e.event.to_json_line().len() as u64 + 1).sum();
        }

        Ok(removed)
    }

    fn states(&self) -> Option<&dyn StateBackend> {
        Some(self)
    }

    fn groups(&self) -> Option<&dyn crate::GroupBackend> {
        Some(self)
    }
}

impl StateBackend for MemoryStore {
    fn put(&self, put: &StatePut<'_>) -> Result<Cursor> {
        put.validate()?;
        let event = put.change.event()?;
        let mut state = self.lock();
        let records = state.states.get(put.kind).and_then(|t| t.entities.get(put.id));
        let actual =
            records.and_then(|r| r.last()).and_then(|e| change_of(&e.event)).map_or(0, |c| c.1);
        if actual != put.version - 1 {
            return Err(version_conflict(put.kind, put.id, put.version - 1, actual));
        }
        let cursor = push(&mut state, event.clone());
        let history = self.shared.history as usize;
        let kind = state.states.entry(put.kind.to_string()).or_default();
        let records = kind.entities.entry(put.id.to_string()).or_default();
        records.push(StoredEvent { cursor, event });
        if records.len() > history {
            // The topic's log keeps the events: a watch misses nothing.
            records.drain(..records.len() - history);
        }
        drop(state);
        self.appended();
        Ok(cursor)
    }

    fn latest(&self, kind: &str, id: &str) -> Result<Option<StoredEvent>> {
        crate::check_entity_type(kind)?;
        let state = self.lock();
        Ok(state.states.get(kind).and_then(|t| t.entities.get(id)).and_then(|r| r.last()).cloned())
    }

    fn at_version(&self, kind: &str, id: &str, version: u64) -> Result<Option<StoredEvent>> {
        Ok(self
            .history(kind, id)?
            .into_iter()
            .find(|e| change_of(&e.event).is_some_and(|c| c.1 == version)))
    }

    fn history(&self, kind: &str, id: &str) -> Result<Vec<StoredEvent>> {
        crate::check_entity_type(kind)?;
        let state = self.lock();
        Ok(state.states.get(kind).and_then(|t| t.entities.get(id)).cloned().unwrap_or_default())
    }

    fn list(&self, kind: &str) -> Result<EventStream<'_>> {
        crate::check_entity_type(kind)?;
        let state = self.lock();
        let latest: Vec<StoredEvent> = state
            .states
            .get(kind)
            .map(|t| t.entities.values().filter_map(|r| r.last().cloned()).collect())
            .unwrap_or_default();
        Ok(Box::new(latest.into_iter().map(Ok)))
    }

    fn history_limit(&self) -> u64 {
        self.shared.history
    }

    fn compact(&self, kind: &str) -> Result<u64> {
        // Records past the limit go as they are put: nothing is ever waiting.
        crate::check_entity_type(kind)?;
        Ok(0)
    }

    fn compacted_through(&self, kind: &str) -> Result<Option<Cursor>> {
        crate::check_entity_type(kind)?;
        Ok(self.lock().states.get(kind).and_then(|t| t.compacted))
    }
}

struct MemoryFollower {
    store: MemoryStore,
    pattern: TopicPattern,
    positions: BTreeMap<Topic, Cursor>,
    /// For [`Start::Since`]: the time, and each topic's last cursor when following began.
    since: Option<(crate::Timestamp, BTreeMap<Topic, Cursor>)>,
}

impl Follower for MemoryFollower {
    fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<StoredEvent>> {
        // A timeout past what the clock can represent waits without limit.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.store.lock();
        loop {
            let mut out = Vec::new();
            for (topic, log) in &state.topics {
                if out.len() >= max || !self.pattern.matches(topic) {
                    continue;
                }
                let pos = self.positions.get(topic).copied().unwrap_or(Cursor::ZERO);
                let start = log.events.partition_point(|e| e.cursor <= pos);
                for e in &log.events[start..] {
                    if out.len() >= max {
                        break;
                    }
                    self.positions.insert(topic.clone(), e.cursor);
                    if let Some((t, heads)) = &self.since {
                        if heads.get(topic).is_some_and(|h| e.cursor <= *h)
                            && e.event.timestamp < *t
                        {
                            continue;
                        }
                    }
                    out.push(e.clone());
                }
            }
            if !out.is_empty() || max == 0 {
                return Ok(out);
            }
            let appended = &self.store.shared.appended;
            state = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(out);
                    }
                    wait_timeout(appended, state, left).0
                }
                None => wait(appended, state),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{Event, FollowFrom, Start};

    #[test]
    fn a_follower_waits_without_limit_for_a_timeout_past_the_clock() {
        let store = MemoryStore::new();
        let topic = Topic::new("t").unwrap();
        let pattern = TopicPattern::new("t").unwrap();
        store.append(&Event::new(topic.clone(), "s", crate::JsonObject::new())).unwrap();
        let mut follower = store.follow(&pattern, FollowFrom::start(Start::Beginning)).unwrap();
        assert_eq!(follower.next_batch(10, Duration::MAX).unwrap().len(), 1);
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || store.append(&Event::new(topic, "s", Default::default())))
        };
        assert_eq!(follower.next_batch(10, Duration::MAX).unwrap().len(), 1, "woken by the append");
        writer.join().unwrap().unwrap();
    }
}
