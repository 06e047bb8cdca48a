//! Subscriptions across store outages, over a store that can be switched to
//! fail: an unavailable store is waited out with nothing lost or delivered
//! twice, any other store error stops the subscription.

mod util;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use bus::{Error, EventBus, StartAt, Status, SubscribeConfig, Subscription};
use seed_event::{
    Clear, ConsumerName, Cursor, ErrorKind, Event, EventStore, EventStream, FollowFrom, Follower,
    MemoryStore, Query, StoredEvent, Topic, TopicPattern, TopicStats,
};
use util::{
    assert_each_once_in_order, collector, consumer, pattern, publish_retrying, take, topic,
    try_publish, wait_for, DEADLINE,
};

/// What the [`Flaky`] store does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Passes every call on.
    Up,
    /// Every call fails with `Unavailable`.
    Down,
    /// Only consumer commits fail with `Unavailable`.
    CommitsDown,
    /// Followers fail with `Corrupt`.
    Corrupt,
}

/// A [`MemoryStore`] behind a switch.
#[derive(Clone)]
struct Flaky {
    inner: MemoryStore,
    mode: Arc<Mutex<Mode>>,
    refused_commits: Arc<AtomicU64>,
}

impl Flaky {
    fn new() -> Flaky {
        Flaky {
            inner: MemoryStore::new(),
            mode: Arc::new(Mutex::new(Mode::Up)),
            refused_commits: Arc::default(),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn check(&self) -> seed_event::Result<()> {
        match *self.mode.lock().unwrap() {
            Mode::Down => Err(seed_event::Error::unavailable("flaky store is down")),
            _ => Ok(()),
        }
    }

    /// Refuses (and counts) a commit while commits are down.
    fn check_commit(&self) -> seed_event::Result<()> {
        if matches!(*self.mode.lock().unwrap(), Mode::Down | Mode::CommitsDown) {
            self.refused_commits.fetch_add(1, Ordering::SeqCst);
            return Err(seed_event::Error::unavailable("flaky store refuses commits"));
        }
        Ok(())
    }
}

struct FlakyFollower {
    inner: Box<dyn Follower>,
    mode: Arc<Mutex<Mode>>,
}

impl Follower for FlakyFollower {
    fn next_batch(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> seed_event::Result<Vec<StoredEvent>> {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Down => {
                // A real store spends its timeout trying.
                thread::sleep(timeout.min(Duration::from_millis(20)));
                Err(seed_event::Error::unavailable("flaky store is down"))
            }
            Mode::Corrupt => Err(seed_event::Error::corrupt("flaky store", "a bad line")),
            Mode::Up | Mode::CommitsDown => self.inner.next_batch(max, timeout),
        }
    }
}

impl EventStore for Flaky {
    fn describe(&self) -> String {
        "flaky memory store".to_string()
    }
    fn append(&self, event: &Event) -> seed_event::Result<Cursor> {
        self.check()?;
        self.inner.append(event)
    }
    fn append_batch(&self, topic: &Topic, events: &[Event]) -> seed_event::Result<Vec<Cursor>> {
        self.check()?;
        self.inner.append_batch(topic, events)
    }
    fn append_expecting(
        &self,
        event: &Event,
        expected: Option<Cursor>,
    ) -> seed_event::Result<Cursor> {
        self.check()?;
        self.inner.append_expecting(event, expected)
    }
    fn last_cursor(&self, topic: &Topic) -> seed_event::Result<Option<Cursor>> {
        self.check()?;
        self.inner.last_cursor(topic)
    }
    fn read(&self, query: &Query) -> seed_event::Result<EventStream<'_>> {
        self.check()?;
        self.inner.read(query)
    }
    fn count_after(&self, topic: &Topic, cursor: Cursor) -> seed_event::Result<u64> {
        self.check()?;
        self.inner.count_after(topic, cursor)
    }
    fn follow(
        &self,
        pattern: &TopicPattern,
        from: FollowFrom,
    ) -> seed_event::Result<Box<dyn Follower>> {
        self.check()?;
        let inner = self.inner.follow(pattern, from)?;
        Ok(Box::new(FlakyFollower { inner, mode: self.mode.clone() }))
    }
    fn load_consumer(&self, name: &ConsumerName) -> seed_event::Result<BTreeMap<Topic, Cursor>> {
        self.check()?;
        self.inner.load_consumer(name)
    }
    fn commit_consumer(
        &self,
        name: &ConsumerName,
        topic: &Topic,
        cursor: Cursor,
    ) -> seed_event::Result<()> {
        self.check_commit()?;
        self.inner.commit_consumer(name, topic, cursor)
    }
    fn lock_consumer(
        &self,
        name: &ConsumerName,
        request: &seed_event::LockRequest,
    ) -> seed_event::Result<Option<Box<dyn seed_event::ConsumerLock>>> {
        self.check()?;
        self.inner.lock_consumer(name, request)
    }
    fn commit_fenced(
        &self,
        name: &ConsumerName,
        fence: seed_event::Fence,
        topic: &Topic,
        cursor: Cursor,
    ) -> seed_event::Result<()> {
        self.check_commit()?;
        self.inner.commit_fenced(name, fence, topic, cursor)
    }
    fn consumers(&self) -> seed_event::Result<Vec<ConsumerName>> {
        self.check()?;
        self.inner.consumers()
    }
    fn topics(&self) -> seed_event::Result<Vec<TopicStats>> {
        self.check()?;
        self.inner.topics()
    }
    fn clear(&self, what: &Clear) -> seed_event::Result<u64> {
        self.check()?;
        self.inner.clear(what)
    }
    fn groups(&self) -> Option<&dyn seed_event::GroupBackend> {
        Some(self)
    }
}

impl seed_event::GroupBackend for Flaky {
    fn join(
        &self,
        config: &seed_event::GroupConfig,
        member: &str,
    ) -> seed_event::Result<Box<dyn seed_event::GroupMember>> {
        self.check()?;
        let inner = EventStore::groups(&self.inner).unwrap().join(config, member)?;
        Ok(Box::new(FlakyMember { inner, store: self.clone() }))
    }
    fn list(&self) -> seed_event::Result<Vec<seed_event::GroupInfo>> {
        self.check()?;
        EventStore::groups(&self.inner).unwrap().list()
    }
    fn delete(&self, name: &ConsumerName) -> seed_event::Result<bool> {
        self.check()?;
        EventStore::groups(&self.inner).unwrap().delete(name)
    }
}

/// A group member whose every call fails while its store is down (a
/// corrupt store fails its fetches with `Corrupt`).
struct FlakyMember {
    inner: Box<dyn seed_event::GroupMember>,
    store: Flaky,
}

impl seed_event::GroupMember for FlakyMember {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn fetch(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> seed_event::Result<Vec<seed_event::Delivery>> {
        self.store.check()?;
        if *self.store.mode.lock().unwrap() == Mode::Corrupt {
            return Err(seed_event::Error::corrupt("flaky group", "a bad state"));
        }
        // Short waits, so that a switch of the mode is seen soon.
        self.inner.fetch(max, timeout.min(Duration::from_millis(20)))
    }
    fn ack(&mut self, tokens: &[seed_event::DeliveryToken]) -> seed_event::Result<()> {
        self.store.check_commit()?;
        self.inner.ack(tokens)
    }
    fn nack(
        &mut self,
        token: &seed_event::DeliveryToken,
        delay: Option<Duration>,
        error: &str,
    ) -> seed_event::Result<()> {
        self.store.check()?;
        self.inner.nack(token, delay, error)
    }
    fn in_progress(&mut self, token: &seed_event::DeliveryToken) -> seed_event::Result<()> {
        self.store.check()?;
        self.inner.in_progress(token)
    }
    fn extend(&mut self, tokens: &[seed_event::DeliveryToken]) -> seed_event::Result<()> {
        self.store.check()?;
        self.inner.extend(tokens)
    }
    fn interrupter(&self) -> Arc<dyn seed_event::Interrupt> {
        self.inner.interrupter()
    }
}

/// A group member waits out an outage (its fetches and acks fail meanwhile):
/// every event is handled once, the status goes `Reconnecting` and back;
/// a corrupt store stops it with the error.
#[test]
fn a_group_member_survives_an_outage_and_stops_on_a_fatal_error() {
    let store = Flaky::new();
    let bus = Arc::new(EventBus::new(Arc::new(store.clone())));
    let group = seed_event::GroupConfig::new(consumer("workers"), pattern("o.>"))
        .unwrap()
        .start(seed_event::Start::Beginning);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let sub = {
        let handled = handled.clone();
        bus.join_group(bus::WorkerConfig::new(group), move |d| {
            handled.lock().unwrap().push(d.event.event.payload["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap()
    };
    for n in 0..10 {
        publish_retrying(&bus, topic_of(n), n);
    }
    wait_for("ten handled", || handled.lock().unwrap().len() == 10);
    store.set(Mode::CommitsDown);
    for n in 10..20 {
        publish_retrying(&bus, topic_of(n), n);
    }
    wait_for("the member to notice", || reconnecting(&sub).is_some());
    store.set(Mode::Down);
    thread::sleep(Duration::from_millis(200));
    store.set(Mode::Up);
    wait_for("the member to be live again", || sub.status() == Status::Live);
    wait_for("twenty handled", || handled.lock().unwrap().len() >= 20);
    let mut got = handled.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..20).collect::<Vec<_>>(), "each event handled once");
    assert!(store.refused_commits.load(Ordering::SeqCst) > 0, "acks were refused meanwhile");
    store.set(Mode::Corrupt);
    wait_for("the member to stop", || sub.is_finished());
    let err = sub.unsubscribe().unwrap_err();
    assert_eq!(err.store_kind(), Some(ErrorKind::Corrupt), "{err}");
}

fn reconnecting(sub: &Subscription) -> Option<(Duration, u32)> {
    match sub.status() {
        Status::Reconnecting { since, attempts } => {
            Some((since.elapsed().unwrap_or_default(), attempts))
        }
        _ => None,
    }
}

fn topic_of(n: u64) -> &'static str {
    if n.is_multiple_of(2) {
        "o.a"
    } else {
        "o.b"
    }
}

/// Events before, during (publishes fail and are retried) and after an
/// outage of at least `outage`: each delivered once, the status going
/// `Live` → `Reconnecting` → `Live`.
fn survives_an_outage(config: SubscribeConfig, outage: Duration) {
    let store = Flaky::new();
    let bus = Arc::new(EventBus::new(Arc::new(store.clone())));
    let (handler, rx) = collector();
    let durable = config.consumer.clone();
    let sub = bus.subscribe_with(config, handler).unwrap();
    assert_eq!(sub.status(), Status::Live);
    for n in 0..10 {
        publish_retrying(&bus, topic_of(n), n);
    }
    let mut got = take(&rx, 10);

    store.set(Mode::Down);
    wait_for("the subscription to notice", || reconnecting(&sub).is_some());
    let publisher = {
        let bus = bus.clone();
        thread::spawn(move || (10..20).for_each(|n| publish_retrying(&bus, topic_of(n), n)))
    };
    wait_for("the outage to last", || reconnecting(&sub).is_some_and(|(age, _)| age >= outage));
    assert!(!publisher.is_finished(), "publishes fail while the store is down");
    store.set(Mode::Up);
    publisher.join().unwrap();
    wait_for("the subscription to be live again", || sub.status() == Status::Live);
    for n in 20..30 {
        publish_retrying(&bus, topic_of(n), n);
    }
    got.extend(take(&rx, 20));
    assert_each_once_in_order(&got, 30);
    assert_eq!(sub.unsubscribe().unwrap().delivered, 30);
    if let Some(name) = durable {
        // A durable consumer committed everything once the store was back.
        let positions = store.inner.load_consumer(&name).unwrap();
        let last = |t: &str| store.inner.last_cursor(&topic(t)).unwrap().unwrap();
        assert_eq!(positions[&topic("o.a")], last("o.a"));
        assert_eq!(positions[&topic("o.b")], last("o.b"));
    }
}

#[test]
fn a_plain_subscription_survives_a_one_second_outage() {
    survives_an_outage(SubscribeConfig::new(pattern("o.>"), StartAt::New), Duration::from_secs(1));
}

#[test]
fn a_plain_subscription_survives_a_longer_outage() {
    survives_an_outage(SubscribeConfig::new(pattern("o.>"), StartAt::New), Duration::from_secs(4));
}

#[test]
fn a_durable_consumer_survives_an_outage() {
    let config = SubscribeConfig::new(pattern("o.>"), StartAt::New).consumer(consumer("o"));
    survives_an_outage(config, Duration::from_secs(1));
}

#[test]
fn a_failed_commit_is_retried_and_never_redelivers() {
    let store = Flaky::new();
    let bus = EventBus::new(Arc::new(store.clone()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let start = |c: Arc<Mutex<Vec<u64>>>| {
        bus.subscribe_durable(&consumer("c"), &pattern("c"), StartAt::Beginning, move |e| {
            c.lock().unwrap().push(e.event.payload["n"].as_u64().unwrap());
            Ok(())
        })
        .unwrap()
    };
    let sub = start(c);
    store.set(Mode::CommitsDown);
    for n in 0..5 {
        try_publish(&bus, "c", n).unwrap();
    }
    wait_for("a few refused commits", || {
        reconnecting(&sub).is_some_and(|(_, attempts)| attempts >= 3)
    });
    store.set(Mode::Up);
    wait_for("the subscription to be live again", || sub.status() == Status::Live);
    for n in 5..10 {
        try_publish(&bus, "c", n).unwrap();
    }
    let last = store.inner.last_cursor(&topic("c")).unwrap();
    wait_for("everything committed", || {
        store.inner.load_consumer(&consumer("c")).unwrap().get(&topic("c")).copied() == last
    });
    assert!(store.refused_commits.load(Ordering::SeqCst) >= 3);
    assert_eq!(*calls.lock().unwrap(), (0..10).collect::<Vec<_>>(), "each handled once");
    sub.unsubscribe().unwrap();

    // A restart finds nothing left to deliver.
    let again = Arc::new(Mutex::new(Vec::new()));
    let sub = start(again.clone());
    try_publish(&bus, "c", 10).unwrap();
    wait_for("the next event", || !again.lock().unwrap().is_empty());
    sub.unsubscribe().unwrap();
    assert_eq!(*again.lock().unwrap(), vec![10]);
}

#[test]
fn give_up_after_stops_with_an_error_naming_the_store() {
    let store = Flaky::new();
    let bus = EventBus::new(Arc::new(store.clone()));
    let config =
        SubscribeConfig::new(pattern("g"), StartAt::New).give_up_after(Duration::from_millis(300));
    let sub = bus.subscribe_with(config, |_| Ok(())).unwrap();
    store.set(Mode::Down);
    assert!(sub.wait_timeout(DEADLINE), "it gives up");
    let Status::Stopped(Some(text)) = sub.status() else { panic!("{:?}", sub.status()) };
    let err = sub.wait().unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err}");
    assert_eq!(err.store_kind(), Some(ErrorKind::Unavailable));
    assert_eq!(text, err.to_string());
    assert!(text.starts_with("gave up on flaky memory store: unavailable for "), "{text}");
    assert!(text.ends_with("flaky store is down"), "{text}");
}

#[test]
fn a_store_down_at_subscribe_is_followed_once_it_is_back() {
    let store = Flaky::new();
    let bus = EventBus::new(Arc::new(store.clone()));
    store.set(Mode::Down);
    let (handler, rx) = collector();
    let sub = bus.subscribe(&pattern("late"), StartAt::New, handler).unwrap();
    assert!(reconnecting(&sub).is_some(), "{:?}", sub.status());
    store.set(Mode::Up);
    wait_for("the subscription to be live", || sub.status() == Status::Live);
    try_publish(&bus, "late", 0).unwrap();
    assert_eq!(take(&rx, 1), vec![("late".to_string(), 0)]);
    sub.unsubscribe().unwrap();
}

#[test]
fn unsubscribing_during_an_outage_returns() {
    for durable in [false, true] {
        let store = Flaky::new();
        let bus = EventBus::new(Arc::new(store.clone()));
        let mut config = SubscribeConfig::new(pattern("u"), StartAt::New);
        if durable {
            config.consumer = Some(consumer("u"));
        }
        let sub = bus.subscribe_with(config, |_| Ok(())).unwrap();
        store.set(Mode::Down);
        // By the fifth attempt the waits are hundreds of milliseconds long.
        wait_for("a long wait", || reconnecting(&sub).is_some_and(|(_, attempts)| attempts >= 5));
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(sub.unsubscribe().is_ok()));
        assert_eq!(rx.recv_timeout(DEADLINE), Ok(true), "durable: {durable}");
        assert_eq!(*store.mode.lock().unwrap(), Mode::Down, "the store stayed down");
    }
}

#[test]
fn any_other_store_error_stops_the_subscription_with_it() {
    let store = Flaky::new();
    let bus = EventBus::new(Arc::new(store.clone()));
    let sub = bus.subscribe(&pattern("f"), StartAt::New, |_| Ok(())).unwrap();
    store.set(Mode::Corrupt);
    assert!(sub.wait_timeout(DEADLINE));
    assert!(matches!(sub.status(), Status::Stopped(Some(ref e)) if e.contains("a bad line")));
    let err = sub.wait().unwrap_err();
    assert_eq!(err.store_kind(), Some(ErrorKind::Corrupt), "{err}");
}
