//! The lock race case catches a lock that checks, then sets.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seed_event::conformance::{self, Harness};
use seed_event::{
    Clear, ConsumerLock, ConsumerName, Cursor, Event, EventStore, EventStream, Fence, FollowFrom,
    Follower, LockRequest, MemoryStore, Query, Result, Topic, TopicPattern, TopicStats,
};

/// A memory store whose lock reads "free", pauses, then takes it: not atomic.
#[derive(Clone, Default)]
struct RacyLock {
    inner: MemoryStore,
    holder: Arc<Mutex<Option<u64>>>,
    fences: Arc<Mutex<u64>>,
}

struct Held(u64, Arc<Mutex<Option<u64>>>);

impl ConsumerLock for Held {
    fn fence(&self) -> Fence {
        Fence(self.0)
    }
    fn is_lost(&self) -> bool {
        *self.1.lock().unwrap() != Some(self.0)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut holder = self.1.lock().unwrap();
        if *holder == Some(self.0) {
            *holder = None;
        }
    }
}

impl EventStore for RacyLock {
    fn describe(&self) -> String {
        "racy lock".into()
    }
    fn append(&self, event: &Event) -> Result<Cursor> {
        self.inner.append(event)
    }
    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        self.inner.append_batch(topic, events)
    }
    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        self.inner.append_expecting(event, expected)
    }
    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>> {
        self.inner.last_cursor(topic)
    }
    fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        self.inner.read(query)
    }
    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64> {
        self.inner.count_after(topic, cursor)
    }
    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>> {
        self.inner.follow(pattern, from)
    }
    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
        self.inner.load_consumer(name)
    }
    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()> {
        self.inner.commit_consumer(name, topic, cursor)
    }
    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        self.inner.consumers()
    }
    fn topics(&self) -> Result<Vec<TopicStats>> {
        self.inner.topics()
    }
    fn clear(&self, what: &Clear) -> Result<u64> {
        self.inner.clear(what)
    }
    fn lock_consumer(
        &self,
        _: &ConsumerName,
        _: &LockRequest,
    ) -> Result<Option<Box<dyn ConsumerLock>>> {
        if self.holder.lock().unwrap().is_some() {
            return Ok(None);
        }
        // The gap between the check and the set that a real lock must not have.
        std::thread::sleep(Duration::from_millis(2));
        let fence = {
            let mut n = self.fences.lock().unwrap();
            *n += 1;
            *n
        };
        *self.holder.lock().unwrap() = Some(fence);
        Ok(Some(Box::new(Held(fence, self.holder.clone()))))
    }
}

struct Racy(RacyLock);

impl Harness for Racy {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.0.clone())
    }
}

#[test]
fn the_race_case_catches_a_check_then_set_lock() {
    let caught = catch_unwind(AssertUnwindSafe(|| {
        conformance::consumer_lock_has_one_holder_in_a_race(&Racy(RacyLock::default()))
    }));
    let message = caught.expect_err("two holders at once must fail the case");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(text.contains("holders at once"), "{text}");
}
