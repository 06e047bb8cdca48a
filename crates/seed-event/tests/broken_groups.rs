//! The group cases of the conformance suite fail on broken group backends:
//! each wraps the memory store's groups with one fault, and the case meant
//! to catch it fails while the reference store passes it (`memory_conformance.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use seed_event::conformance::Harness;
use seed_event::group_conformance as cases;
use seed_event::{
    Clear, ConsumerLock, ConsumerName, Cursor, Delivery, DeliveryToken, Event, EventStore,
    EventStream, Fence, FollowFrom, Follower, GroupBackend, GroupConfig, GroupInfo, GroupMember,
    GroupOrdering, Interrupt, LockRequest, MemoryStore, Query, Result, Topic, TopicPattern,
    TopicStats,
};

/// The lock of [`Fault::LockNeverExcludes`]: held by everyone who asks.
struct FreeLock;

impl ConsumerLock for FreeLock {
    fn fence(&self) -> Fence {
        Fence(1)
    }
    fn is_lost(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Each member joins a group of its own: every event goes to every member.
    EveryMemberGetsAll,
    /// Failures never dead-letter.
    NeverDead,
    /// Per-topic ordering is ignored.
    NoOrder,
    /// A member that leaves keeps its events (until their ack wait passes).
    KeepsOnLeave,
    /// Delete says yes and removes nothing.
    DeleteDoesNothing,
    /// A nack that dead-letters appends the letter twice.
    DeadLetterTwice,
    /// A topic created after the join loses its first event (as if followed
    /// from its end once the member learns of it).
    NewTopicFromItsEnd,
    /// A release says yes and hands nothing back.
    ReleaseKeeps,
    /// The consumer lock never excludes: every taker gets one.
    LockNeverExcludes,
    /// Groups are created shared, whatever the mode asked.
    ModeIgnored,
    /// A new group ignores the positions it is to start after.
    StartAfterIgnored,
}

#[derive(Clone)]
struct Broken {
    inner: MemoryStore,
    fault: Fault,
    joins: Arc<AtomicU64>,
}

impl GroupBackend for Broken {
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>> {
        let mut config = config.clone();
        match self.fault {
            Fault::EveryMemberGetsAll => {
                let n = self.joins.fetch_add(1, Ordering::SeqCst);
                config.name = ConsumerName::new(format!("{}-{n}", config.name))?;
            }
            Fault::NeverDead => config.max_deliveries = u32::MAX,
            Fault::NoOrder => config.ordering = GroupOrdering::None,
            Fault::ModeIgnored => config.exclusive = false,
            Fault::StartAfterIgnored => config.start_after.clear(),
            Fault::LockNeverExcludes => {}
            Fault::KeepsOnLeave
            | Fault::DeleteDoesNothing
            | Fault::DeadLetterTwice
            | Fault::NewTopicFromItsEnd
            | Fault::ReleaseKeeps => {}
        }
        let known = match self.fault {
            Fault::NewTopicFromItsEnd => {
                Some(self.inner.topics()?.into_iter().map(|t| t.topic).collect())
            }
            _ => None,
        };
        let inner = EventStore::groups(&self.inner).unwrap().join(&config, member)?;
        let twice = (self.fault == Fault::DeadLetterTwice)
            .then(|| (self.inner.clone(), config.dead_letter.clone()));
        Ok(Box::new(Member {
            inner: Some(inner),
            keep: self.fault == Fault::KeepsOnLeave,
            twice,
            known,
            release_keeps: self.fault == Fault::ReleaseKeeps,
        }))
    }

    fn list(&self) -> Result<Vec<GroupInfo>> {
        EventStore::groups(&self.inner).unwrap().list()
    }
    fn delete(&self, name: &ConsumerName) -> Result<bool> {
        if self.fault == Fault::DeleteDoesNothing {
            return Ok(true);
        }
        EventStore::groups(&self.inner).unwrap().delete(name)
    }
}

struct Member {
    inner: Option<Box<dyn GroupMember>>,
    keep: bool,
    /// For [`Fault::DeadLetterTwice`]: the store and the dead-letter topic.
    twice: Option<(MemoryStore, Topic)>,
    /// For [`Fault::NewTopicFromItsEnd`]: the topics known (or seen) so far.
    known: Option<BTreeSet<Topic>>,
    /// For [`Fault::ReleaseKeeps`].
    release_keeps: bool,
}

impl Member {
    fn inner(&mut self) -> &mut dyn GroupMember {
        self.inner.as_deref_mut().unwrap()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.keep {
            std::mem::forget(self.inner.take());
        }
    }
}

impl GroupMember for Member {
    fn id(&self) -> &str {
        self.inner.as_deref().unwrap().id()
    }
    fn fetch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        let got = self.inner().fetch(max, timeout)?;
        let Some(known) = self.known.as_mut() else { return Ok(got) };
        let (mut kept, mut lost) = (Vec::new(), Vec::new());
        for d in got {
            if known.insert(d.token.topic.clone()) {
                lost.push(d.token);
            } else {
                kept.push(d);
            }
        }
        self.inner().ack(&lost)?;
        Ok(kept)
    }
    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        self.inner().ack(tokens)
    }
    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()> {
        let Some((store, dead)) = self.twice.clone() else {
            return self.inner().nack(token, delay, error);
        };
        let before = store.query(&Query::topic(&dead))?.len();
        self.inner().nack(token, delay, error)?;
        let letters = store.query(&Query::topic(&dead))?;
        if letters.len() > before {
            if let Some(last) = letters.last() {
                store.append(&last.event)?;
            }
        }
        Ok(())
    }
    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()> {
        self.inner().in_progress(token)
    }
    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        self.inner().extend(tokens)
    }
    fn release(&mut self, tokens: &[DeliveryToken]) -> Result<bool> {
        if self.release_keeps {
            return Ok(true);
        }
        self.inner().release(tokens)
    }
    fn interrupter(&self) -> Arc<dyn Interrupt> {
        self.inner.as_deref().unwrap().interrupter()
    }
}

impl EventStore for Broken {
    fn describe(&self) -> String {
        format!("broken groups ({:?})", self.fault)
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
    fn groups(&self) -> Option<&dyn GroupBackend> {
        Some(self)
    }
    fn lock_consumer(
        &self,
        name: &ConsumerName,
        request: &LockRequest,
    ) -> Result<Option<Box<dyn ConsumerLock>>> {
        if self.fault == Fault::LockNeverExcludes {
            return Ok(Some(Box::new(FreeLock)));
        }
        self.inner.lock_consumer(name, request)
    }
}

impl Harness for Broken {
    fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.clone())
    }
}

fn broken(fault: Fault) -> Broken {
    Broken { inner: MemoryStore::new(), fault, joins: Arc::default() }
}

/// Runs `case` against a store with `fault`; it must fail with a message containing `expected`.
fn caught(fault: Fault, case: fn(&dyn Harness), expected: &str) {
    let result = catch_unwind(AssertUnwindSafe(|| case(&broken(fault))));
    let payload = result.expect_err(&format!("the case passed on a store with {fault:?}"));
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(text.contains(expected), "{fault:?}: {text}");
}

#[test]
fn duplicates_across_members_are_caught() {
    caught(Fault::EveryMemberGetsAll, cases::group_each_event_goes_to_one_member, "two members");
    caught(
        Fault::EveryMemberGetsAll,
        cases::group_members_racing_share_without_duplicates,
        "twice",
    );
}

#[test]
fn a_poison_event_that_loops_forever_is_caught() {
    caught(Fault::NeverDead, cases::group_dead_letters_after_max_deliveries, "not delivered again");
}

#[test]
fn per_topic_order_that_is_not_kept_is_caught() {
    caught(Fault::NoOrder, cases::group_per_topic_order, "in flight at once");
}

#[test]
fn a_leaving_member_that_keeps_its_events_is_caught() {
    caught(
        Fault::KeepsOnLeave,
        cases::group_member_leaving_hands_its_events_over,
        "b gets a's events",
    );
}

#[test]
fn a_delete_that_removes_nothing_is_caught() {
    caught(Fault::DeleteDoesNothing, cases::group_delete_needs_every_member_gone, "live member");
}

#[test]
fn a_dead_letter_appended_twice_is_caught() {
    caught(Fault::DeadLetterTwice, cases::group_dead_letters_once_among_racing_members, "once");
}

#[test]
fn a_new_topic_followed_from_its_end_is_caught() {
    caught(
        Fault::NewTopicFromItsEnd,
        cases::group_takes_a_new_topic_from_its_first_event,
        "from its first",
    );
}

#[test]
fn a_release_that_keeps_the_events_is_caught() {
    caught(
        Fault::ReleaseKeeps,
        cases::group_released_deliveries_go_to_others_uncounted,
        "released events at once",
    );
}

#[test]
fn a_second_active_member_of_an_exclusive_group_is_caught() {
    caught(
        Fault::LockNeverExcludes,
        cases::group_exclusive_has_one_active_member,
        "stands by while the first lives",
    );
}

#[test]
fn an_exclusive_group_created_shared_is_caught() {
    caught(Fault::ModeIgnored, cases::group_exclusive_has_one_active_member, "exclusive");
}

#[test]
fn a_new_group_that_ignores_its_start_positions_is_caught() {
    caught(Fault::StartAfterIgnored, cases::group_starts_after_given_positions, "from 3");
}
