//! The conformance suite can fail: stores with one deliberate fault each,
//! built on `MemoryStore`, and for each the case that must catch the fault.
//! Each broken store also passes a case its fault does not touch, so what
//! fails is the fault being caught, not a store that does not work at all.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use seed_event::conformance::{self, Harness};
use seed_event::support::conflict;
use seed_event::{
    Clear, ConsumerName, Cursor, Event, EventStore, EventStream, FollowFrom, Follower, MemoryStore,
    Query, Result, StoredEvent, Topic, TopicPattern, TopicStats,
};

/// The one thing a [`Broken`] store gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Every fifth single append returns a cursor but stores nothing.
    DropsAnEvent,
    /// A conditional append checks the last cursor, lets go, then appends.
    RacyCompareAndSet,
    /// Followers return one more than half of what they read and the rest on the next call.
    HalfABatch,
    /// After a wait that ran out (a "reconnect"), followers return their last event again.
    DuplicatesAfterReconnect,
}

/// A `MemoryStore` with one [`Fault`]; clones share the events.
#[derive(Clone)]
struct Broken {
    inner: MemoryStore,
    fault: Fault,
    appends: Arc<AtomicU64>,
}

impl Broken {
    fn new(fault: Fault) -> Broken {
        Broken { inner: MemoryStore::new(), fault, appends: Arc::new(AtomicU64::new(0)) }
    }
}

impl Harness for Broken {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }
}

impl EventStore for Broken {
    fn describe(&self) -> String {
        format!("memory store that {:?}", self.fault)
    }

    fn append(&self, event: &Event) -> Result<Cursor> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst);
        if self.fault == Fault::DropsAnEvent && n % 5 == 4 {
            let last = self.inner.last_cursor(&event.topic)?.unwrap_or(Cursor::ZERO);
            return Ok(Cursor::new(last.major() + 1, 0));
        }
        self.inner.append(event)
    }

    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        self.inner.append_batch(topic, events)
    }

    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        if self.fault != Fault::RacyCompareAndSet {
            return self.inner.append_expecting(event, expected);
        }
        let actual = self.inner.last_cursor(&event.topic)?;
        if actual != expected {
            return Err(conflict(&event.topic, expected, actual));
        }
        // Widens the window between the check and the append that a racy store leaves open.
        thread::sleep(Duration::from_millis(2));
        self.inner.append(event)
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
        let inner = self.inner.follow(pattern, from)?;
        Ok(Box::new(BrokenFollower {
            inner,
            fault: self.fault,
            held: VecDeque::new(),
            last: None,
            timed_out: false,
        }))
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
}

struct BrokenFollower {
    inner: Box<dyn Follower>,
    fault: Fault,
    /// Events read but not returned yet ([`Fault::HalfABatch`]).
    held: VecDeque<StoredEvent>,
    /// The last event returned ([`Fault::DuplicatesAfterReconnect`]).
    last: Option<StoredEvent>,
    /// Whether the last call returned nothing.
    timed_out: bool,
}

impl Follower for BrokenFollower {
    fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<StoredEvent>> {
        if !self.held.is_empty() {
            let n = max.min(self.held.len());
            return Ok(self.held.drain(..n).collect());
        }
        let mut out = Vec::new();
        if self.fault == Fault::DuplicatesAfterReconnect && self.timed_out {
            out.extend(self.last.clone());
        }
        out.extend(self.inner.next_batch(max.saturating_sub(out.len()), timeout)?);
        // One past the middle: half of an even number of whole batches
        // would end on a batch boundary and look whole.
        if self.fault == Fault::HalfABatch && out.len() > 2 {
            self.held = out.split_off(out.len() / 2 + 1).into();
        }
        self.timed_out = out.is_empty();
        if let Some(last) = out.last() {
            self.last = Some(last.clone());
        }
        Ok(out)
    }
}

/// Whether `case` fails (panics) on a fresh store with `fault`.
fn fails(fault: Fault, case: fn(&dyn Harness)) -> bool {
    let store = Broken::new(fault);
    panic::catch_unwind(AssertUnwindSafe(|| case(&store))).is_err()
}

#[test]
fn a_store_that_drops_an_event_is_caught() {
    assert!(!fails(Fault::DropsAnEvent, conformance::batches_are_ordered_and_checked));
    assert!(fails(Fault::DropsAnEvent, conformance::append_then_read));
    assert!(fails(Fault::DropsAnEvent, conformance::concurrent_appends_lose_nothing));
}

#[test]
fn a_store_with_a_racy_compare_and_set_is_caught() {
    assert!(!fails(Fault::RacyCompareAndSet, conformance::conditional_append));
    assert!(fails(Fault::RacyCompareAndSet, conformance::conditional_append_race_has_one_winner));
}

#[test]
fn a_store_whose_followers_return_half_a_batch_is_caught() {
    assert!(!fails(Fault::HalfABatch, conformance::follow_start_modes));
    assert!(fails(Fault::HalfABatch, conformance::batches_are_all_or_nothing_to_readers));
}

#[test]
fn a_store_whose_followers_duplicate_after_a_reconnect_is_caught() {
    assert!(!fails(Fault::DuplicatesAfterReconnect, conformance::follow_start_modes));
    assert!(fails(Fault::DuplicatesAfterReconnect, conformance::follow_times_out_then_wakes));
}

#[test]
fn the_reference_store_passes_every_case_the_broken_ones_fail() {
    let cases: [fn(&dyn Harness); 5] = [
        conformance::append_then_read,
        conformance::concurrent_appends_lose_nothing,
        conformance::conditional_append_race_has_one_winner,
        conformance::batches_are_all_or_nothing_to_readers,
        conformance::follow_times_out_then_wakes,
    ];
    for case in cases {
        let store = MemoryStore::new();
        case(&Reference(store));
    }
}

/// The correct store, for comparison.
struct Reference(MemoryStore);

impl Harness for Reference {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.0.clone())
    }
}
