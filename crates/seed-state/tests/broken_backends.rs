//! Deliberately broken state backends, to show that the conformance cases
//! catch what they are meant to catch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use seed_event::conformance::Harness;
use seed_event::{
    change_of, version_conflict, Clear, ConsumerName, Cursor, Event, EventStore, EventStream,
    FollowFrom, Follower, MemoryStore, Query, Result, StateBackend, StatePut, StoredEvent, Topic,
    TopicPattern, TopicStats,
};

/// A memory store whose compare-and-set reads the version and writes in two
/// separate steps, with a yield between: the race every real store must close.
#[derive(Clone, Default)]
struct Racy {
    events: MemoryStore,
    records: Arc<Mutex<Records>>,
}

/// Each entity's records, by type and id.
type Records = HashMap<(String, String), Vec<StoredEvent>>;

impl StateBackend for Racy {
    fn put(&self, put: &StatePut<'_>) -> Result<Cursor> {
        let key = (put.kind.to_string(), put.id.to_string());
        let actual = self.latest(put.kind, put.id)?.and_then(|e| change_of(&e.event).map(|c| c.1));
        if actual.unwrap_or(0) != put.version - 1 {
            return Err(version_conflict(put.kind, put.id, put.version - 1, actual.unwrap_or(0)));
        }
        std::thread::yield_now();
        let event = put.change.event()?;
        let cursor = self.events.append(&event)?;
        let stored = StoredEvent { cursor, event };
        self.records.lock().unwrap().entry(key).or_default().push(stored);
        Ok(cursor)
    }
    fn latest(&self, kind: &str, id: &str) -> Result<Option<StoredEvent>> {
        let records = self.records.lock().unwrap();
        Ok(records.get(&(kind.to_string(), id.to_string())).and_then(|r| r.last().cloned()))
    }
    fn at_version(&self, kind: &str, id: &str, version: u64) -> Result<Option<StoredEvent>> {
        Ok(self
            .history(kind, id)?
            .into_iter()
            .find(|e| change_of(&e.event).is_some_and(|c| c.1 == version)))
    }
    fn history(&self, kind: &str, id: &str) -> Result<Vec<StoredEvent>> {
        let records = self.records.lock().unwrap();
        Ok(records.get(&(kind.to_string(), id.to_string())).cloned().unwrap_or_default())
    }
    fn list(&self, kind: &str) -> Result<EventStream<'_>> {
        let records = self.records.lock().unwrap();
        let latest: Vec<_> = records
            .iter()
            .filter(|((k, _), _)| k == kind)
            .filter_map(|(_, r)| r.last().cloned())
            .collect();
        Ok(Box::new(latest.into_iter().map(Ok)))
    }
    fn history_limit(&self) -> u64 {
        u64::MAX
    }
    fn compact(&self, _: &str) -> Result<u64> {
        Ok(0)
    }
    fn compacted_through(&self, _: &str) -> Result<Option<Cursor>> {
        Ok(None)
    }
}

impl EventStore for Racy {
    fn describe(&self) -> String {
        "racy store".into()
    }
    fn append(&self, event: &Event) -> Result<Cursor> {
        self.events.append(event)
    }
    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        self.events.append_batch(topic, events)
    }
    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        self.events.append_expecting(event, expected)
    }
    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>> {
        self.events.last_cursor(topic)
    }
    fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        self.events.read(query)
    }
    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64> {
        self.events.count_after(topic, cursor)
    }
    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>> {
        self.events.follow(pattern, from)
    }
    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
        self.events.load_consumer(name)
    }
    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()> {
        self.events.commit_consumer(name, topic, cursor)
    }
    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        self.events.consumers()
    }
    fn topics(&self) -> Result<Vec<TopicStats>> {
        self.events.topics()
    }
    fn clear(&self, what: &Clear) -> Result<u64> {
        self.events.clear(what)
    }
    fn states(&self) -> Option<&dyn StateBackend> {
        Some(self)
    }
}

impl Harness for Racy {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }
}

fn fails(case: fn(&dyn Harness)) -> bool {
    let harness = Racy::default();
    std::panic::catch_unwind(|| case(&harness)).is_err()
}

#[test]
fn a_racy_compare_and_set_loses_updates_that_the_counter_case_finds() {
    assert!(fails(seed_state::conformance::state_counter_threads));
}

#[test]
fn a_racy_compare_and_set_lets_two_creates_win() {
    // Each round races eight creates; a racy store lets several win in some round.
    assert!((0..20).any(|_| fails(seed_state::conformance::state_create_race_has_one_winner)));
}
