//! The [`EventStore`] trait: what the bus needs of any backend, and the types it speaks in.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::support::{self, MaxLen, NameRules};
use crate::{
    ConsumerLock, Cursor, Error, Event, Fence, LockRequest, Result, Timestamp, Topic, TopicPattern,
};

/// An event together with its position in its topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Where the event stands in its topic.
    pub cursor: Cursor,
    /// The event itself.
    pub event: Event,
}

impl StoredEvent {
    /// Pairs the cursors an append returned with the events appended, in order.
    pub fn zip(cursors: Vec<Cursor>, events: Vec<Event>) -> Vec<StoredEvent> {
        cursors
            .into_iter()
            .zip(events)
            .map(|(cursor, event)| StoredEvent { cursor, event })
            .collect()
    }
}

/// How many events a [`Query`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The first `n` matching events (the original `--limit`).
    First(usize),
    /// The newest `n` matching events, still returned oldest first.
    Last(usize),
}

/// What to read from a store; the default reads every event of every topic.
///
/// Results come in append order within a topic and by timestamp across topics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Topics or patterns to read; empty means all topics.
    pub topics: Vec<TopicPattern>,
    /// Only events from this source.
    pub source: Option<String>,
    /// Only events with this correlation id.
    pub correlation_id: Option<String>,
    /// Only events with `timestamp >= since`.
    pub since: Option<Timestamp>,
    /// Only events with `timestamp < until`.
    pub until: Option<Timestamp>,
    /// Only events after this cursor; needs exactly one exact topic.
    pub after: Option<Cursor>,
    /// How many to keep.
    pub limit: Option<Limit>,
}

impl Query {
    /// A query for one topic.
    pub fn topic(topic: &Topic) -> Query {
        Query { topics: vec![TopicPattern::from(topic.clone())], ..Query::default() }
    }

    /// A query for the topics matching `pattern`.
    pub fn pattern(pattern: TopicPattern) -> Query {
        Query { topics: vec![pattern], ..Query::default() }
    }

    /// Checks the query's preconditions (e.g. `after` needs one exact topic).
    pub fn validate(&self) -> Result<()> {
        if self.after.is_some() && self.single_topic().is_none() {
            return Err(Error::invalid(
                "query",
                "an `after` cursor needs exactly one topic without wildcards, cursors are per topic",
            ));
        }
        if let (Some(since), Some(until)) = (self.since, self.until) {
            if until < since {
                return Err(Error::invalid(
                    "query",
                    format!("until ({until}) is before since ({since})"),
                ));
            }
        }
        Ok(())
    }

    /// The one exact topic this query reads, if it names exactly one.
    pub fn single_topic(&self) -> Option<Topic> {
        match self.topics.as_slice() {
            [only] => only.exact(),
            _ => None,
        }
    }

    /// Whether `topic` is selected by the query's topics.
    pub fn selects_topic(&self, topic: &Topic) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|p| p.matches(topic))
    }

    /// Whether `event` at `cursor` passes every filter (not the limit).
    pub fn matches(&self, cursor: Cursor, event: &Event) -> bool {
        self.selects_topic(&event.topic)
            && self.source.as_ref().is_none_or(|s| *s == event.source)
            && self.correlation_id.as_ref().is_none_or(|c| event.correlation_id.as_ref() == Some(c))
            && self.since.is_none_or(|t| event.timestamp >= t)
            && self.until.is_none_or(|t| event.timestamp < t)
            && self.after.is_none_or(|a| cursor > a)
    }
}

/// A stream of query results; each item may fail (e.g. an I/O error mid-read).
pub type EventStream<'a> = Box<dyn Iterator<Item = Result<StoredEvent>> + Send + 'a>;

/// Where a follower starts in topics for which it has no position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every event still stored.
    Beginning,
    /// Only events appended after `follow` returned (all events of topics created later).
    New,
    /// Events with `timestamp >= t` among those stored when `follow` was called,
    /// then every event appended later.
    Since(Timestamp),
}

/// Where a follower starts: a position per topic, and a [`Start`] for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowFrom {
    /// The start for topics not in `positions`.
    pub start: Start,
    /// Deliver only events after these cursors in these topics.
    pub positions: BTreeMap<Topic, Cursor>,
}

impl FollowFrom {
    /// Start every topic at `start`.
    pub fn start(start: Start) -> FollowFrom {
        FollowFrom { start, positions: BTreeMap::new() }
    }

    /// Start one topic after `cursor` (every other topic at its beginning).
    pub fn after(topic: Topic, cursor: Cursor) -> FollowFrom {
        FollowFrom { start: Start::Beginning, positions: BTreeMap::from([(topic, cursor)]) }
    }
}

/// A live reader of the topics matching a pattern, returned by [`EventStore::follow`].
pub trait Follower: Send {
    /// Up to `max` events after the ones already returned, waiting up to
    /// `timeout` for the first one; an empty vector means the time ran out.
    ///
    /// Within a topic, events come in append order, each exactly once, also
    /// across a clear of the topic (the follower continues with the next new event).
    /// After an [`Error::Unavailable`] the follower stays usable: the next call
    /// tries again and goes on where it was.
    fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<StoredEvent>>;

    /// A handle that cuts this follower's waits short from another thread,
    /// or `None` when they cannot be (then callers keep their timeouts short).
    fn interrupter(&self) -> Option<Arc<dyn Interrupt>> {
        None
    }
}

/// Cuts a [`Follower`]'s wait short from another thread, from [`Follower::interrupter`].
pub trait Interrupt: Send + Sync {
    /// Makes the follower's `next_batch` call in progress, or else its next
    /// one, return soon without an error, with the events it has (perhaps none).
    fn interrupt(&self);
}

/// The rules of [`ConsumerName`].
const CONSUMER_NAME: NameRules<'static> = NameRules {
    what: "consumer name",
    max_len: MaxLen::Bytes(255),
    whitespace: false,
    refused: (&[], ""),
    example: "billing-worker",
};

/// The name of a durable consumer, such as `billing-worker`.
///
/// Non-empty, at most 255 bytes, without whitespace or control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConsumerName(String);

impl ConsumerName {
    /// Validates a consumer name.
    pub fn new(name: impl Into<String>) -> Result<ConsumerName> {
        let name = name.into();
        support::check_name(&name, &CONSUMER_NAME)?;
        Ok(ConsumerName(name))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ConsumerName {
    type Error = Error;
    fn try_from(s: String) -> Result<ConsumerName> {
        ConsumerName::new(s)
    }
}

impl From<ConsumerName> for String {
    fn from(c: ConsumerName) -> String {
        c.0
    }
}

impl fmt::Display for ConsumerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a store knows about one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStats {
    /// The topic, exactly as published.
    pub topic: Topic,
    /// Events stored.
    pub events: u64,
    /// Bytes the events take in the store.
    pub bytes: u64,
    /// Timestamp of the first stored event (in append order).
    pub first: Option<Timestamp>,
    /// Timestamp of the last stored event (in append order).
    pub last: Option<Timestamp>,
    /// Cursor of the last stored event.
    pub last_cursor: Option<Cursor>,
}

/// What [`EventStore::clear`] removes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clear {
    /// Only this topic; `None` means every topic.
    pub topic: Option<Topic>,
    /// Only events with `timestamp < before`; `None` means all of them.
    pub before: Option<Timestamp>,
}

/// A backend that stores events: the embedded file store, Redis, or the in-memory reference.
///
/// Every method is safe to call from many threads (and, for the file and Redis
/// stores, many processes) at once. Every implementation passes the
/// conformance suite in [`crate::conformance`].
pub trait EventStore: Send + Sync {
    /// A short description for logs and errors, e.g. `file store at /tmp/events`.
    fn describe(&self) -> String;

    /// Appends one event; returns its cursor once it is stored.
    ///
    /// The event is borrowed: after an error the caller still holds it, with
    /// the same id, to retry or report, and a caller that publishes many events
    /// frees them when it likes, not inside the store's critical path.
    fn append(&self, event: &Event) -> Result<Cursor>;

    /// Appends events that all have `topic`, atomically: readers see all or
    /// none. Returns their cursors in order. An empty batch is a no-op; an
    /// event of another topic is rejected and nothing is written.
    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>>;

    /// Appends `event` only if its topic's last cursor is `expected`
    /// (`None`: the topic holds no event); otherwise fails with [`Error::Conflict`].
    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor>;

    /// [`append`](EventStore::append) for a caller that hands the event over:
    /// returns it with its cursor.
    fn append_owned(&self, event: Event) -> Result<StoredEvent> {
        let cursor = self.append(&event)?;
        Ok(StoredEvent { cursor, event })
    }

    /// [`append_batch`](EventStore::append_batch) for a caller that hands the
    /// events over: returns them with their cursors.
    fn append_batch_owned(&self, topic: &Topic, events: Vec<Event>) -> Result<Vec<StoredEvent>> {
        let cursors = self.append_batch(topic, &events)?;
        Ok(StoredEvent::zip(cursors, events))
    }

    /// The cursor of the topic's last stored event, `None` when it holds none.
    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>>;

    /// Streams the events matching `query`, in append order per topic and by
    /// timestamp across topics.
    fn read(&self, query: &Query) -> Result<EventStream<'_>>;

    /// The events matching `query`, collected.
    fn query(&self, query: &Query) -> Result<Vec<StoredEvent>> {
        self.read(query)?.collect()
    }

    /// How many events of `topic` come after `cursor` (a consumer's lag).
    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64>;

    /// Starts following the topics matching `pattern`, also topics created later.
    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>>;

    /// The committed positions of a durable consumer (empty for a new one).
    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>>;

    /// Durably records that `name` has handled `topic` up to `cursor`.
    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()>;

    /// The names of every durable consumer with a committed position.
    fn consumers(&self) -> Result<Vec<ConsumerName>>;

    /// Every topic with its statistics, sorted by name.
    fn topics(&self) -> Result<Vec<TopicStats>>;

    /// Removes events; returns how many. Events appended while it runs are kept.
    fn clear(&self, what: &Clear) -> Result<u64>;

    /// The store's versioned entity states, if it keeps them (`seed-state`'s
    /// `StateStore` is built on it).
    fn states(&self) -> Option<&dyn crate::StateBackend> {
        None
    }

    /// The store's work groups, if it has them (see [`crate::GroupBackend`]).
    fn groups(&self) -> Option<&dyn crate::GroupBackend> {
        None
    }

    /// Takes the exclusive lock of durable consumer `name`, waiting as
    /// `request` says; `None` when another holder kept it (or the wait was
    /// cancelled). At most one lock of a consumer is held at a time, across
    /// threads and processes; a holder that dies loses it (the file store at
    /// once; Redis at once when the holder's connection closes, else after
    /// `request.ttl`). The default has no locks and fails.
    fn lock_consumer(
        &self,
        name: &ConsumerName,
        request: &LockRequest,
    ) -> Result<Option<Box<dyn ConsumerLock>>> {
        let _ = request;
        Err(no_locks(self, name))
    }

    /// [`commit_consumer`](EventStore::commit_consumer) only while `fence`
    /// is the current holder's: otherwise [`Error::StaleLock`] and nothing is
    /// written. The default has no locks and fails.
    fn commit_fenced(
        &self,
        name: &ConsumerName,
        fence: Fence,
        topic: &Topic,
        cursor: Cursor,
    ) -> Result<()> {
        let _ = (fence, topic, cursor);
        Err(no_locks(self, name))
    }
}

/// The error of a store without consumer locks.
fn no_locks<S: EventStore + ?Sized>(store: &S, name: &ConsumerName) -> Error {
    Error::invalid(
        "durable consumer",
        format!(
            "{} cannot lock consumer {name}; expected a store with consumer locks",
            store.describe()
        ),
    )
}
