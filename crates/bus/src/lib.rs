//! The Seed event bus: publish, query, subscribe (plain or durable) and replay
//! over any [`EventStore`], chosen at run time as an `Arc<dyn EventStore>`.
//!
//! The bus has no backend-specific code. Each subscription runs on its own
//! thread, following the store ([`EventStore::follow`]) and calling its
//! handler once per event, in append order per topic; durable consumers
//! commit their position in the store after the handler returns `Ok`.
//!
//! # Guarantees
//!
//! - A subscription delivers each event once, in append order per topic,
//!   with no gap between history and live events, also across a clear; it
//!   keeps no set of seen ids, so its memory does not grow with traffic.
//! - A handler's panic is caught and counted like an error; a handler that
//!   blocks holds up only its own subscription.
//! - A store that is unavailable ([`seed_event::ErrorKind::Unavailable`],
//!   e.g. a Redis server restarting) is waited out: the subscription retries
//!   its read, follow or commit after waits that double from 50 ms up to
//!   2 s ([`Reconnect`]), for as long as it lives unless
//!   [`SubscribeConfig::give_up_after`] says otherwise, shows
//!   [`Status::Reconnecting`] meanwhile, and goes on after the last event it
//!   delivered: nothing lost, nothing twice, and a durable consumer's
//!   handler is not called again for an event whose commit had to wait. Every
//!   other store error stops the subscription with that error.
//! - A durable consumer `NAME` commits its position per topic after each
//!   batch of events its handler returned `Ok` for (and when it stops), or
//!   after each event with [`SubscribeConfig::commit_each_event`], so a
//!   crash redelivers at most the uncommitted part of one batch (or the one
//!   event in flight): at least once, nothing lost. Only one subscriber
//!   holds a consumer at a time: it holds the store's lock of the consumer
//!   ([`EventStore::lock_consumer`]) while it lives, and its commits carry
//!   the lock's fence, so one that lost the lock stops before committing
//!   again ([`Error::LeaseLost`]). A crashed holder's lock is free at once on
//!   the file store, and on Redis once the server sees its connection close
//!   (a silent host: after [`BusConfig::lease_ttl`], 5 s). The bus keeps a
//!   consumer's metadata under the hidden consumer `NAME~meta` (names ending
//!   in `~meta` are reserved).
//! - A work-group member ([`EventBus::join_group`]) shares the events of its
//!   group's pattern with the group's other members, in any process: each
//!   event is handled by one member at a time; `Ok` acks it (in batches,
//!   with the next fetch), an error nacks it (it comes back after the
//!   group's backoff and is dead-lettered after `max_deliveries` failures),
//!   and a member that stops or dies hands its unacked events to the others
//!   (see [`seed_event::GroupBackend`]). An exclusive group has one active
//!   member at a time, holding the group's consumer lock; the others stand
//!   by and the first to take the lock after it goes gets its unacked events.
//! - Publishing with a given id is idempotent within the topic's newest
//!   [`BusConfig::idempotency_window`] events (1000).
//!
//! ```
//! use std::sync::{mpsc, Arc};
//! use bus::{EventBus, PublishOptions, StartAt};
//! use seed_event::{MemoryStore, Query, Topic, TopicPattern};
//!
//! let bus = EventBus::new(Arc::new(MemoryStore::new()));
//! let (tx, rx) = mpsc::channel();
//! let pattern = TopicPattern::new("task.*")?;
//! let sub = bus.subscribe(&pattern, StartAt::New, move |e| {
//!     tx.send(e.event.payload["task_id"].clone())?;
//!     Ok(())
//! })?;
//!
//! let topic = Topic::new("task.completed")?;
//! let payload = seed_event::parse_json_object("payload", r#"{"task_id": "abc"}"#)?;
//! bus.publish(&topic, "fenrir", payload, PublishOptions::default())?;
//!
//! let got = rx.recv_timeout(std::time::Duration::from_secs(10))?;
//! assert_eq!(got, "abc");
//! assert_eq!(bus.query(&Query::topic(&topic))?.len(), 1);
//! sub.unsubscribe()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod consumer;
mod error;
mod group;
mod outage;
mod replay;
mod subscription;

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use seed_event::support::{self, lock, MaxLen, NameRules};
use seed_event::{
    Cancel, Clear, ConsumerName, Cursor, Delivery, ErrorKind, Event, EventStore, EventStream,
    FollowFrom, GroupInfo, GroupLock, JsonObject, Limit, LockRequest, Query, Start, StoredEvent,
    Timestamp, Topic, TopicPattern, TopicStats,
};
use serde::Serialize;
use uuid::Uuid;

pub use error::{Error, HandlerError, HandlerResult, Result};
pub use group::WorkerConfig;
pub use outage::{Reconnect, Status};
pub use replay::{ReplayConfig, ReplayEstimate, ReplayReport};
pub use subscription::{Subscription, Summary};

use subscription::{BoxHandler, Durable, Policy, Shared, Source, Worker};

/// How many of a topic's newest events [`EventBus::publish_event`] checks for
/// the event's id, by default.
pub const DEFAULT_IDEMPOTENCY_WINDOW: usize = 1000;

/// How often a failing durable handler is retried (an unavailable store is
/// another matter: see [`Reconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included) before the subscription stops.
    pub attempts: u32,
    /// The wait before the first retry; it doubles with each retry, up to 2 s.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy { attempts: 5, backoff: Duration::from_millis(50) }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 = the first retry).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(Duration::from_secs(2))
    }
}

/// How a bus behaves; [`BusConfig::default`] suits most uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusConfig {
    /// How many of a topic's newest events are checked for a duplicate id when
    /// an event with a given id is published (see [`EventBus::publish_event`]).
    pub idempotency_window: usize,
    /// How long a durable consumer's lock lasts without renewal where the
    /// store cannot see its holder die (Redis: a holder whose host went
    /// silent); the holder renews it while it lives.
    pub lease_ttl: Duration,
    /// Retries of failing durable handlers.
    pub retry: RetryPolicy,
    /// Waits between attempts while a subscription's store is unavailable.
    pub reconnect: Reconnect,
}

impl Default for BusConfig {
    fn default() -> BusConfig {
        BusConfig {
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            lease_ttl: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            reconnect: Reconnect::default(),
        }
    }
}

impl BusConfig {
    /// This configuration with another idempotency window.
    pub fn idempotency_window(mut self, events: usize) -> BusConfig {
        self.idempotency_window = events;
        self
    }

    /// This configuration with another lock time to live.
    pub fn lease_ttl(mut self, ttl: Duration) -> BusConfig {
        self.lease_ttl = ttl;
        self
    }

    /// This configuration with another retry policy for failing handlers.
    pub fn retry(mut self, retry: RetryPolicy) -> BusConfig {
        self.retry = retry;
        self
    }

    /// This configuration with other waits while a store is unavailable.
    pub fn reconnect(mut self, reconnect: Reconnect) -> BusConfig {
        self.reconnect = reconnect;
        self
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only events appended after `subscribe` returns (every event of topics created later).
    New,
    /// Every stored event.
    Beginning,
    /// Stored events with `timestamp >= t`, then every new one.
    Since(Timestamp),
    /// Events after this cursor; the pattern must name one exact topic.
    After(Cursor),
}

/// The optional parts of a published event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    /// Ties requests and responses together.
    pub correlation_id: Option<String>,
    /// Extra data, as a JSON object.
    pub metadata: JsonObject,
    /// A given id makes the publish idempotent (see [`EventBus::publish_event`]);
    /// `None` gets a fresh UUID v7.
    pub id: Option<Uuid>,
    /// The event's time; `None` is now (other times are for imports and tests).
    pub timestamp: Option<Timestamp>,
}

/// A subscription's settings; [`SubscribeConfig::new`] gives the defaults.
///
/// ```
/// use bus::{StartAt, SubscribeConfig};
/// let pattern = "task.>".parse().unwrap();
/// let config = SubscribeConfig::new(pattern, StartAt::Beginning).max_events(10);
/// assert_eq!(config.max_events, Some(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeConfig {
    /// The topics to follow, also those created later.
    pub pattern: TopicPattern,
    /// Where to start (for a durable consumer: only when it is new).
    pub start: StartAt,
    /// Plain subscriptions only: deliver just the events after these cursors
    /// in these topics; `start` applies to the other topics.
    pub after: BTreeMap<Topic, Cursor>,
    /// Makes the subscription a durable consumer with this name.
    pub consumer: Option<ConsumerName>,
    /// Ends the subscription after this many delivered events.
    pub max_events: Option<u64>,
    /// How long a durable subscription waits for another holder of the
    /// consumer to let go before failing with [`Error::ConsumerBusy`]
    /// (`Duration::MAX`: no limit).
    pub lease_wait: Duration,
    /// Ends that wait early (then `subscribe` fails with [`Error::ConsumerBusy`]).
    pub lease_cancel: Cancel,
    /// A durable consumer commits after each event instead of after each batch.
    pub commit_each_event: bool,
    /// Stop with [`Error::StoreUnavailable`] once the store has been
    /// unavailable this long; `None` (the default) keeps trying while the
    /// subscription lives.
    pub give_up_after: Option<Duration>,
}

impl SubscribeConfig {
    /// A plain subscription to `pattern` from `start`.
    pub fn new(pattern: TopicPattern, start: StartAt) -> SubscribeConfig {
        SubscribeConfig {
            pattern,
            start,
            after: BTreeMap::new(),
            consumer: None,
            max_events: None,
            lease_wait: Duration::ZERO,
            lease_cancel: Cancel::new(),
            commit_each_event: false,
            give_up_after: None,
        }
    }

    /// This subscription as the durable consumer `name`.
    pub fn consumer(mut self, name: ConsumerName) -> SubscribeConfig {
        self.consumer = Some(name);
        self
    }

    /// This subscription delivering only the events after these per-topic cursors.
    pub fn after(mut self, cursors: BTreeMap<Topic, Cursor>) -> SubscribeConfig {
        self.after = cursors;
        self
    }

    /// This subscription ending after `n` delivered events.
    pub fn max_events(mut self, n: u64) -> SubscribeConfig {
        self.max_events = Some(n);
        self
    }

    /// This subscription waiting up to `wait` for another holder of its consumer.
    pub fn lease_wait(mut self, wait: Duration) -> SubscribeConfig {
        self.lease_wait = wait;
        self
    }

    /// This subscription's wait for its consumer ending when `cancel` is cancelled.
    pub fn lease_cancel(mut self, cancel: Cancel) -> SubscribeConfig {
        self.lease_cancel = cancel;
        self
    }

    /// This durable subscription committing after each event: a crash then
    /// redelivers at most the event in flight, at the cost of a commit per event.
    pub fn commit_each_event(mut self) -> SubscribeConfig {
        self.commit_each_event = true;
        self
    }

    /// This subscription giving up once the store was unavailable for `after`.
    pub fn give_up_after(mut self, after: Duration) -> SubscribeConfig {
        self.give_up_after = Some(after);
        self
    }
}

/// A durable consumer's position in one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerPosition {
    /// The topic.
    pub topic: Topic,
    /// The last event it handled there.
    pub cursor: Cursor,
    /// How many events of the topic come after it.
    pub lag: u64,
}

/// A durable consumer and its positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerStats {
    /// Its name.
    pub name: ConsumerName,
    /// Its committed positions, by topic.
    pub positions: Vec<ConsumerPosition>,
}

/// What [`EventBus::stats`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Per topic: events, bytes, first and last timestamp.
    pub topics: Vec<TopicStats>,
    /// Per durable consumer: its positions and lag.
    pub consumers: Vec<ConsumerStats>,
}

/// The event bus over one store.
pub struct EventBus {
    store: Arc<dyn EventStore>,
    config: BusConfig,
    closed: AtomicBool,
    subscriptions: Mutex<Vec<Weak<Shared>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("store", &self.store.describe())
            .field("config", &self.config)
            .finish()
    }
}

fn check_source(source: &str) -> Result<()> {
    let rules = NameRules {
        what: "source",
        max_len: MaxLen::Any,
        whitespace: true,
        refused: (&[], ""),
        example: "fenrir",
    };
    Ok(support::check_name(source, &rules)?)
}

fn new_event(topic: &Topic, source: &str, payload: JsonObject, options: &PublishOptions) -> Event {
    let mut event =
        Event::new(topic.clone(), source, payload).with_metadata(options.metadata.clone());
    event.correlation_id = options.correlation_id.clone();
    if let Some(t) = options.timestamp {
        event.timestamp = t;
    }
    event
}

impl EventBus {
    /// A bus over `store` with the default [`BusConfig`].
    pub fn new(store: Arc<dyn EventStore>) -> EventBus {
        EventBus::with_config(store, BusConfig::default())
    }

    /// A bus over `store` with `config`.
    pub fn with_config(store: Arc<dyn EventStore>, config: BusConfig) -> EventBus {
        EventBus {
            store,
            config,
            closed: AtomicBool::new(false),
            subscriptions: Mutex::new(Vec::new()),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The settings the bus was made with.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    fn open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Publishes a new event and returns it as stored.
    ///
    /// With `options.id` set it is idempotent, as [`EventBus::publish_event`].
    pub fn publish(
        &self,
        topic: &Topic,
        source: &str,
        payload: JsonObject,
        options: PublishOptions,
    ) -> Result<StoredEvent> {
        let mut event = new_event(topic, source, payload, &options);
        match options.id {
            Some(id) => {
                event.id = id;
                self.publish_event(event)
            }
            None => {
                self.open()?;
                check_source(source)?;
                Ok(self.store.append_owned(event)?)
            }
        }
    }

    /// Publishes `event` as it is, idempotently: if one of the newest
    /// [`BusConfig::idempotency_window`] events of its topic (1000 by default)
    /// already has its id, nothing is written and that stored event is returned.
    ///
    /// The check and the append are one step (a conditional append, retried on
    /// a race), so two processes publishing the same event at once store it
    /// once. An older duplicate, outside the window, is stored again.
    pub fn publish_event(&self, event: Event) -> Result<StoredEvent> {
        self.publish_event_after(event, None)
    }

    /// [`EventBus::publish_event`] looking only at events after `after`
    /// (an event may also stand before it, as a redriven one does).
    fn publish_event_after(&self, event: Event, after: Option<Cursor>) -> Result<StoredEvent> {
        self.open()?;
        check_source(&event.source)?;
        let window = self.config.idempotency_window;
        if window == 0 {
            return Ok(self.store.append_owned(event)?);
        }
        let query = Query { limit: Some(Limit::Last(window)), after, ..Query::topic(&event.topic) };
        let mut attempts = 0;
        loop {
            // With `after`, the query can be empty while the topic is not:
            // the topic's last cursor, read first, is the condition then (an
            // append in between makes the conditional append fail and retry).
            let last = match after {
                Some(_) => self.store.last_cursor(&event.topic)?,
                None => None,
            };
            let recent = self.store.query(&query)?;
            let expected = recent.last().map(|e| e.cursor).or(last);
            if let Some(found) = recent.into_iter().find(|e| e.event.id == event.id) {
                log::debug!("event {} is already in topic {}", event.id, event.topic);
                return Ok(found);
            }
            // Borrowed: a conflict leaves the event here for the next attempt.
            match self.store.append_expecting(&event, expected) {
                Ok(cursor) => return Ok(StoredEvent { cursor, event }),
                Err(e) if e.kind() == ErrorKind::Conflict && attempts < 100 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Publishes one new event per payload to `topic`, atomically (all or none).
    ///
    /// Every event gets a fresh id, so `options.id` must be `None`.
    pub fn publish_batch(
        &self,
        topic: &Topic,
        source: &str,
        payloads: Vec<JsonObject>,
        options: &PublishOptions,
    ) -> Result<Vec<StoredEvent>> {
        self.open()?;
        check_source(source)?;
        if options.id.is_some() {
            return Err(seed_event::Error::invalid(
                "publish options",
                "a batch gives each event a fresh id; publish events with given ids one by one",
            )
            .into());
        }
        let events = payloads.into_iter().map(|p| new_event(topic, source, p, options)).collect();
        Ok(self.store.append_batch_owned(topic, events)?)
    }

    /// The events matching `query`, collected.
    pub fn query(&self, query: &Query) -> Result<Vec<StoredEvent>> {
        self.open()?;
        Ok(self.store.query(query)?)
    }

    /// The events matching `query`, streamed.
    pub fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        self.open()?;
        Ok(self.store.read(query)?)
    }

    /// Hands the stored events that `config` selects to `handler`, paced by
    /// their original gaps divided by `config.speed`; returns the count.
    ///
    /// A failing (or panicking) handler call is logged and counted, and the
    /// replay goes on, as the original did.
    pub fn replay<F>(&self, config: &ReplayConfig, handler: F) -> Result<ReplayReport>
    where
        F: FnMut(&StoredEvent) -> HandlerResult + Send + 'static,
    {
        self.open()?;
        replay::run(self.store.as_ref(), config, Box::new(handler))
    }

    /// How many events a replay of `config` hands out and how long it will take.
    pub fn replay_estimate(&self, config: &ReplayConfig) -> Result<ReplayEstimate> {
        self.open()?;
        replay::estimate(self.store.as_ref(), config)
    }

    /// Calls `handler` on every event of the topics matching `pattern` from
    /// `start` on, on a thread of its own, until the [`Subscription`] is dropped.
    ///
    /// Returns once the subscription is positioned: with [`StartAt::New`]
    /// every event appended after this returns is delivered. If the store is
    /// unavailable, it returns at once, [`Reconnecting`](Status::Reconnecting),
    /// and starts following when the store is back (`New` then counts from
    /// that moment). A failing or panicking handler call is logged and
    /// counted, and delivery goes on.
    pub fn subscribe<F>(
        &self,
        pattern: &TopicPattern,
        start: StartAt,
        handler: F,
    ) -> Result<Subscription>
    where
        F: FnMut(&StoredEvent) -> HandlerResult + Send + 'static,
    {
        self.subscribe_with(SubscribeConfig::new(pattern.clone(), start), handler)
    }

    /// As [`EventBus::subscribe`], as the durable consumer `name`: it resumes
    /// after its last committed event (`start` applies only when it is new).
    ///
    /// The position is committed after the handler returns `Ok`; a failing
    /// or panicking call is retried ([`BusConfig::retry`]), and after the last
    /// attempt the subscription stops with [`Error::HandlerFailed`] without
    /// committing that event. Only one subscriber at a time holds a consumer;
    /// if another does, this fails at once with [`Error::ConsumerBusy`] (set
    /// [`SubscribeConfig::lease_wait`] to wait instead).
    pub fn subscribe_durable<F>(
        &self,
        name: &ConsumerName,
        pattern: &TopicPattern,
        start: StartAt,
        handler: F,
    ) -> Result<Subscription>
    where
        F: FnMut(&StoredEvent) -> HandlerResult + Send + 'static,
    {
        let config = SubscribeConfig {
            consumer: Some(name.clone()),
            ..SubscribeConfig::new(pattern.clone(), start)
        };
        self.subscribe_with(config, handler)
    }

    /// Subscribes with every setting of [`SubscribeConfig`].
    pub fn subscribe_with<F>(&self, config: SubscribeConfig, handler: F) -> Result<Subscription>
    where
        F: FnMut(&StoredEvent) -> HandlerResult + Send + 'static,
    {
        self.open()?;
        let after_topic = match config.start {
            StartAt::After(_) => Some(config.pattern.exact().ok_or_else(|| {
                seed_event::Error::invalid(
                    "start",
                    format!(
                        "starting after a cursor needs one exact topic, not the pattern {}",
                        config.pattern
                    ),
                )
            })?),
            _ => None,
        };
        if config.consumer.is_some() && !config.after.is_empty() {
            return Err(seed_event::Error::invalid(
                "start",
                "a durable consumer resumes from its committed positions, not from `after` cursors",
            )
            .into());
        }
        let handler: BoxHandler = Box::new(handler);
        let (source, durable, label) = match &config.consumer {
            None => {
                let mut from = match config.start {
                    StartAt::New => FollowFrom::start(Start::New),
                    StartAt::Beginning => FollowFrom::start(Start::Beginning),
                    StartAt::Since(t) => FollowFrom::start(Start::Since(t)),
                    StartAt::After(c) => match after_topic {
                        Some(topic) => FollowFrom::after(topic, c),
                        None => FollowFrom::start(Start::Beginning),
                    },
                };
                from.positions.extend(config.after.clone());
                let source = Source::open(self.store.as_ref(), config.pattern.clone(), from)?;
                (source, None, config.pattern.to_string())
            }
            Some(name) => {
                consumer::meta_name(name)?;
                let request = LockRequest::new(self.config.lease_ttl)
                    .wait(config.lease_wait)
                    .cancel(config.lease_cancel.clone());
                let held = consumer::Held::acquire(self.store.as_ref(), name, &request)?;
                // On an error the lock drops here, letting go at once.
                let from = self.durable_start(&held, &config, after_topic)?;
                let source = Source::open(self.store.as_ref(), config.pattern.clone(), from)?;
                let durable = Durable { held, each_event: config.commit_each_event };
                (source, Some(durable), name.to_string())
            }
        };
        let (source, outage) = source;
        let worker = Worker {
            store: self.store.clone(),
            source,
            handler,
            durable,
            max_events: config.max_events,
            policy: Policy {
                handler: self.config.retry,
                reconnect: self.config.reconnect,
                give_up_after: config.give_up_after,
            },
            outage,
            last: None,
        };
        let (subscription, shared) = subscription::spawn(label, worker)?;
        let mut subs = lock(&self.subscriptions);
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&shared));
        drop(subs);
        if self.closed.load(Ordering::SeqCst) {
            // `close` ran while this subscription was starting.
            subscription.unsubscribe()?;
            return Err(Error::Closed);
        }
        Ok(subscription)
    }

    /// Where a durable consumer (whose lock we hold) starts following.
    fn durable_start(
        &self,
        held: &consumer::Held,
        config: &SubscribeConfig,
        after_topic: Option<Topic>,
    ) -> Result<FollowFrom> {
        let store = self.store.as_ref();
        let name = &held.name;
        let meta_name = consumer::meta_name(name)?;
        let meta = consumer::load_meta(store, &meta_name)?;
        let mut positions = store.load_consumer(name)?;
        if meta.created {
            // Topics it has no position in: from the beginning, or from its `since`.
            let start = meta.since.map_or(Start::Beginning, Start::Since);
            return Ok(FollowFrom { start, positions });
        }
        // A new consumer: commit where it starts, so a restart does not lose
        // what was published while it was away.
        let mut since = None;
        let start = match config.start {
            StartAt::Beginning => Start::Beginning,
            StartAt::Since(t) => {
                since = Some(t);
                Start::Since(t)
            }
            StartAt::New => {
                let mut heads = BTreeMap::new();
                for stats in store.topics()? {
                    if config.pattern.matches(&stats.topic) {
                        if let Some(cursor) = store.last_cursor(&stats.topic)? {
                            heads.insert(stats.topic, cursor);
                        }
                    }
                }
                for (topic, cursor) in heads {
                    if let Entry::Vacant(slot) = positions.entry(topic) {
                        held.commit(store, slot.key(), cursor)?;
                        slot.insert(cursor);
                    }
                }
                Start::Beginning
            }
            StartAt::After(cursor) => {
                if let Some(Entry::Vacant(slot)) = after_topic.map(|t| positions.entry(t)) {
                    held.commit(store, slot.key(), cursor)?;
                    slot.insert(cursor);
                }
                Start::Beginning
            }
        };
        consumer::mark_created(store, &meta_name, since)?;
        Ok(FollowFrom { start, positions })
    }

    /// Joins the work group `config.group` as a member that calls `handler`
    /// on each event it gets, on a thread of its own, until the returned
    /// [`Subscription`] is dropped (or it handled `config.max_events`).
    ///
    /// The group shares the events of its pattern among its members in any
    /// process (see [`seed_event::GroupBackend`]): `Ok` acks the event, an
    /// error or a panic nacks it (it comes back after the group's backoff,
    /// and is dead-lettered after its `max_deliveries`-th failure). Events
    /// are fetched up to `max_in_flight` at a time and acked in batches with
    /// the next fetch. Fails with [`Error::Store`] (invalid input) on a store
    /// without work groups.
    ///
    /// A member of an exclusive group ([`seed_event::GroupConfig::exclusive`]) first takes
    /// the group's lock ([`seed_event::join_group`]): while another member
    /// is active it stands by for [`WorkerConfig::standby`], then fails with
    /// [`Error::ConsumerBusy`]; a member that lost the lock (Redis: its host
    /// went silent past [`BusConfig::lease_ttl`]) stops with
    /// [`Error::LeaseLost`], handing back what it held. A group created so
    /// over the committed positions of the durable consumer of its name
    /// starts after them, where that consumer would have gone on.
    pub fn join_group<F>(&self, config: WorkerConfig, handler: F) -> Result<Subscription>
    where
        F: FnMut(&Delivery) -> HandlerResult + Send + 'static,
    {
        self.join_group_with(config, handler, || Ok(()))
    }

    /// As [`EventBus::join_group`], calling `before_ack` before each batch of
    /// handled events is acked (e.g. to flush what the handler wrote, so that
    /// an event is acked only once its output is out); if it fails, the
    /// member stops with its error and the batch is not acked.
    pub fn join_group_with<F, B>(
        &self,
        config: WorkerConfig,
        handler: F,
        before_ack: B,
    ) -> Result<Subscription>
    where
        F: FnMut(&Delivery) -> HandlerResult + Send + 'static,
        B: FnMut() -> HandlerResult + Send + 'static,
    {
        self.open()?;
        let groups = self.store.groups().ok_or_else(|| {
            seed_event::Error::invalid(
                "group",
                format!(
                    "{} has no work groups; expected a store with them (memory, file or Redis)",
                    self.store.describe()
                ),
            )
        })?;
        let member = match config.group.exclusive {
            false => groups.join(&config.group, &config.member)?,
            true => self.join_exclusive(groups, &config)?,
        };
        let label = format!("{}/{}", config.group.name, member.id());
        let worker = group::GroupWorker {
            store: self.store.clone(),
            member: Arc::new(std::sync::Mutex::new(member)),
            handler: Box::new(handler),
            before_ack: Box::new(before_ack),
            config,
            reconnect: self.config.reconnect,
            outage: None,
        };
        let (subscription, shared) =
            subscription::spawn_with(label, outage::Status::Live, move |s| worker.run(s))?;
        let mut subs = lock(&self.subscriptions);
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&shared));
        drop(subs);
        if self.closed.load(Ordering::SeqCst) {
            subscription.unsubscribe()?;
            return Err(Error::Closed);
        }
        Ok(subscription)
    }

    /// Takes an exclusive group's lock (standing by as `config` says), then
    /// joins it. A group created now over the positions of the durable
    /// consumer of its name (what `seed subscribe --group NAME --exclusive`
    /// was before groups had the mode) starts where that consumer would go
    /// on: after its positions, and in other topics from its own start.
    fn join_exclusive(
        &self,
        groups: &dyn seed_event::GroupBackend,
        config: &WorkerConfig,
    ) -> Result<Box<dyn seed_event::GroupMember>> {
        let name = &config.group.name;
        let request = LockRequest::new(self.config.lease_ttl)
            .wait(config.standby)
            .cancel(config.standby_cancel.clone());
        let Some(held) = GroupLock::acquire(self.store.as_ref(), &config.group, &request)? else {
            return Err(Error::ConsumerBusy { name: name.clone() });
        };
        // Under the lock, which an old durable consumer of the name takes too.
        let old = consumer::old_start(self.store.as_ref(), name)?;
        let mut group = config.group.clone();
        if let Some((start, positions)) = &old {
            group = group.start(*start).start_after(positions.clone());
        }
        let member = held.join(groups, &group, &config.member)?;
        if old.is_some() {
            consumer::mark_migrated(self.store.as_ref(), name)?;
        }
        Ok(member)
    }

    /// Every work group of the store with its figures (none on a store without groups).
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        self.open()?;
        match self.store.groups() {
            Some(groups) => Ok(groups.list()?),
            None => Ok(Vec::new()),
        }
    }

    /// Puts the dead letters of `dead_letter` (a group's dead-letter topic)
    /// back on their original topics, each as the original event (same id,
    /// fields and time) at a new cursor, so its group handles it again;
    /// only the one with id `only`, if given. A redriven letter is marked by
    /// an event `{"redriven": <letter id>, "topic", "cursor"}` on the
    /// dead-letter topic (source `seed-redrive`), so that it is not redriven
    /// twice; a letter whose event already stands again after its original
    /// cursor, among the newest [`BusConfig::idempotency_window`] events of
    /// its topic (a redrive stopped before its marker), is not put back
    /// again, only marked.
    /// Returns the events put back. Fails with invalid input when
    /// `only` names no dead letter there that was not redriven yet.
    pub fn redrive(&self, dead_letter: &Topic, only: Option<Uuid>) -> Result<Vec<StoredEvent>> {
        self.open()?;
        let letters = self.store.query(&Query::topic(dead_letter))?;
        let done: std::collections::BTreeSet<String> = letters
            .iter()
            .filter_map(|l| l.event.payload.get("redriven")?.as_str().map(str::to_string))
            .collect();
        let mut out = Vec::new();
        for letter in &letters {
            if only.is_some_and(|id| id != letter.event.id)
                || done.contains(&letter.event.id.to_string())
            {
                continue;
            }
            let Some(original) = letter.event.payload.get("event").filter(|e| e.is_object()) else {
                continue;
            };
            let event: Event = serde_json::from_value(original.clone()).map_err(|e| {
                seed_event::Error::corrupt(
                    format!("dead letter {} of topic {dead_letter}", letter.event.id),
                    format!("its event is not an event: {e}"),
                )
            })?;
            // Idempotent: a redrive cut off between putting the event back and
            // writing its marker finds the copy after the original when run again.
            let original =
                letter.event.payload.get("cursor").and_then(|c| c.as_str()?.parse().ok());
            let stored = self.publish_event_after(event, original)?;
            let marker = serde_json::json!({
                "redriven": letter.event.id.to_string(),
                "topic": stored.event.topic.as_str(),
                "cursor": stored.cursor.to_string(),
            });
            let marker = Event::new(
                dead_letter.clone(),
                "seed-redrive",
                marker.as_object().cloned().unwrap_or_default(),
            );
            self.store.append(&marker)?;
            out.push(stored);
        }
        if let (Some(id), true) = (only, out.is_empty()) {
            return Err(seed_event::Error::invalid(
                "id",
                format!("{dead_letter} holds no dead letter {id} that was not redriven yet"),
            )
            .into());
        }
        Ok(out)
    }

    /// Deletes the work group `name` (its positions, unacked events and
    /// counters; its dead letters stay); false when there is none. Refused
    /// while it has live members, and on a store without work groups.
    pub fn delete_group(&self, name: &ConsumerName) -> Result<bool> {
        self.open()?;
        let groups = self.store.groups().ok_or_else(|| {
            seed_event::Error::invalid(
                "group",
                format!("{} has no work groups", self.store.describe()),
            )
        })?;
        Ok(groups.delete(name)?)
    }

    /// Every topic's exact name, sorted.
    pub fn list_topics(&self) -> Result<Vec<Topic>> {
        self.open()?;
        Ok(self.store.topics()?.into_iter().map(|s| s.topic).collect())
    }

    /// Statistics per topic and per durable consumer (only `topic`, if given).
    pub fn stats(&self, topic: Option<&Topic>) -> Result<Stats> {
        self.open()?;
        let topics: Vec<TopicStats> = self
            .store
            .topics()?
            .into_iter()
            .filter(|s| topic.is_none_or(|t| *t == s.topic))
            .collect();
        let mut consumers = Vec::new();
        for name in self.store.consumers()? {
            if name.as_str().ends_with(consumer::META_SUFFIX) {
                continue;
            }
            let mut positions = Vec::new();
            for (t, cursor) in self.store.load_consumer(&name)? {
                if topic.is_some_and(|only| *only != t) {
                    continue;
                }
                let lag = self.store.count_after(&t, cursor)?;
                positions.push(ConsumerPosition { topic: t, cursor, lag });
            }
            if topic.is_none() || !positions.is_empty() {
                consumers.push(ConsumerStats { name, positions });
            }
        }
        Ok(Stats { topics, consumers })
    }

    /// Removes events (see [`EventStore::clear`]); returns how many.
    /// Running subscriptions go on with the events published afterwards.
    pub fn clear(&self, what: &Clear) -> Result<u64> {
        self.open()?;
        Ok(self.store.clear(what)?)
    }

    /// Stops every subscription of this bus and waits for their threads; later
    /// calls fail with [`Error::Closed`]. Calling it again does nothing.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let subs = std::mem::take(&mut *lock(&self.subscriptions));
        let live: Vec<Arc<Shared>> = subs.iter().filter_map(Weak::upgrade).collect();
        for shared in &live {
            shared.request_stop();
        }
        for shared in &live {
            shared.join();
        }
    }
}
