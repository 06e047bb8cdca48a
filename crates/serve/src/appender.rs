//! Group commit of single-event publishes: one thread appends what
//! concurrent `POST /v1/topics/{topic}/events` requests hand it.
//!
//! Each request without an `id` becomes a [`Job`] on a bounded channel. The
//! appender thread takes every job that has queued up (up to
//! [`JOBS_PER_APPEND`]), builds the events there (so their timestamps follow
//! the append order), and appends each topic's events with one
//! `append_batch`, which is atomic: a request's event is stored or, with the
//! others of its batch, not at all. A batch the store refuses as invalid
//! (which writes nothing) is appended again event by event, so one bad event
//! fails only its own request; any other failure is every request's answer.
//! Requests with an `id` (idempotent) do not come here: their check and
//! conditional append may take long, and run on the blocking pool as before.

use std::sync::Arc;

use bus::{EventBus, PublishOptions};
use seed_event::{ErrorKind, Event, JsonObject, StoredEvent, Topic};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// The most jobs one pass of the appender takes.
const JOBS_PER_APPEND: usize = 256;

/// Requests that may wait for the appender before a new one waits to queue.
const QUEUE: usize = 1024;

/// One request's event, and where its answer goes.
pub struct Job {
    /// The topic from the path.
    pub topic: Topic,
    /// The publisher.
    pub source: String,
    /// The payload object.
    pub payload: JsonObject,
    /// The optional correlation id.
    pub correlation_id: Option<String>,
    /// The metadata object.
    pub metadata: JsonObject,
    /// The request's answer: the stored event or why it was not stored.
    pub reply: oneshot::Sender<Result<StoredEvent, ApiError>>,
}

/// The handle requests hand their jobs to; the thread ends when the last handle goes.
#[derive(Clone)]
pub struct Appender {
    jobs: mpsc::Sender<Job>,
}

impl Appender {
    /// Starts the appender thread over `bus`.
    pub fn start(bus: Arc<EventBus>) -> seed_event::Result<Appender> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("seed-appender".to_string())
            .spawn(move || run(&bus, queue))
            .map_err(|e| seed_event::Error::io("starting the publish thread", e))?;
        Ok(Appender { jobs })
    }

    /// Appends `job`'s event and returns it as stored.
    pub async fn publish(
        &self,
        topic: Topic,
        source: String,
        payload: JsonObject,
        correlation_id: Option<String>,
        metadata: JsonObject,
    ) -> Result<StoredEvent, ApiError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { topic, source, payload, correlation_id, metadata, reply };
        let stopped = || {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server is stopping; nothing was published",
            )
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The thread: takes what has queued up, appends it, answers each request.
fn run(bus: &EventBus, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(JOBS_PER_APPEND);
    while let Some(first) = queue.blocking_recv() {
        jobs.push(first);
        while jobs.len() < JOBS_PER_APPEND {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        append(bus, &mut jobs);
    }
}

/// Appends `jobs` (emptying it), one batch per topic in order of arrival.
fn append(bus: &EventBus, jobs: &mut Vec<Job>) {
    if jobs.len() == 1 {
        if let Some(job) = jobs.pop() {
            one(bus, job);
        }
        return;
    }
    while !jobs.is_empty() {
        let topic = jobs[0].topic.clone();
        let (same, rest): (Vec<Job>, Vec<Job>) = jobs.drain(..).partition(|j| j.topic == topic);
        *jobs = rest;
        if same.len() == 1 {
            same.into_iter().for_each(|job| one(bus, job));
            continue;
        }
        let mut replies = Vec::with_capacity(same.len());
        let mut events = Vec::with_capacity(same.len());
        for job in same {
            let mut event =
                Event::new(job.topic, job.source, job.payload).with_metadata(job.metadata);
            event.correlation_id = job.correlation_id;
            events.push(event);
            replies.push(job.reply);
        }
        match bus.store().append_batch(&topic, &events) {
            Ok(cursors) => {
                for (reply, e) in replies.into_iter().zip(StoredEvent::zip(cursors, events)) {
                    // A request that went away (its client hung up) needs no answer.
                    let _ = reply.send(Ok(e));
                }
            }
            // Nothing was written: each event on its own, so each request gets its own answer.
            Err(e) if e.kind() == ErrorKind::InvalidInput => {
                for (reply, event) in replies.into_iter().zip(events) {
                    let _ = reply.send(bus.store().append_owned(event).map_err(ApiError::from));
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Publishes one job's event as a single request did before group commit.
fn one(bus: &EventBus, job: Job) {
    let options = PublishOptions {
        correlation_id: job.correlation_id,
        metadata: job.metadata,
        id: None,
        timestamp: None,
    };
    let stored = bus.publish(&job.topic, &job.source, job.payload, options).map_err(ApiError::from);
    let _ = job.reply.send(stored);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use seed_event::{
        Clear, ConsumerName, Cursor, EventStore, EventStream, FollowFrom, Follower, MemoryStore,
        Query, Result, TopicPattern, TopicStats,
    };

    use super::*;

    /// A memory store that refuses events whose source is `refused` as
    /// invalid, and every append while `down`.
    struct Picky {
        inner: MemoryStore,
        down: AtomicBool,
    }

    impl Picky {
        fn check(&self, events: &[&Event]) -> Result<()> {
            if self.down.load(Ordering::SeqCst) {
                return Err(seed_event::Error::unavailable("the picky store is down"));
            }
            match events.iter().any(|e| e.source == "refused") {
                true => Err(seed_event::Error::invalid("source", "refused here")),
                false => Ok(()),
            }
        }
    }

    impl EventStore for Picky {
        fn describe(&self) -> String {
            "picky".to_string()
        }
        fn append(&self, event: &Event) -> Result<Cursor> {
            self.check(&[event])?;
            self.inner.append(event)
        }
        fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
            self.check(&events.iter().collect::<Vec<_>>())?;
            self.inner.append_batch(topic, events)
        }
        fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
            self.check(&[event])?;
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
        fn commit_consumer(
            &self,
            name: &ConsumerName,
            topic: &Topic,
            cursor: Cursor,
        ) -> Result<()> {
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

    type Answer = oneshot::Receiver<std::result::Result<StoredEvent, ApiError>>;

    fn job(topic: &str, source: &str) -> (Job, Answer) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            topic: Topic::new(topic).unwrap(),
            source: source.to_string(),
            payload: JsonObject::new(),
            correlation_id: None,
            metadata: JsonObject::new(),
            reply,
        };
        (job, answer)
    }

    fn sources(store: &Picky, topic: &str) -> Vec<String> {
        let query = Query::topic(&Topic::new(topic).unwrap());
        store.query(&query).unwrap().into_iter().map(|e| e.event.source).collect()
    }

    #[test]
    fn a_refused_event_fails_only_its_own_request() {
        let store = Arc::new(Picky { inner: MemoryStore::new(), down: AtomicBool::new(false) });
        let bus = EventBus::new(store.clone());
        let (mut jobs, mut answers) = (Vec::new(), Vec::new());
        for (topic, source) in
            [("t.a", "one"), ("t.b", "other"), ("t.a", "refused"), ("t.a", "two")]
        {
            let (j, a) = job(topic, source);
            jobs.push(j);
            answers.push(a);
        }
        append(&bus, &mut jobs);
        assert!(jobs.is_empty());
        let answers: Vec<_> = answers.iter_mut().map(|a| a.try_recv().unwrap()).collect();
        assert!(answers[0].is_ok() && answers[1].is_ok() && answers[3].is_ok());
        let refused = answers[2].as_ref().unwrap_err();
        assert!(format!("{refused:?}").contains("refused here"), "{refused:?}");
        assert_eq!(sources(&store, "t.a"), ["one", "two"]);
        assert_eq!(sources(&store, "t.b"), ["other"]);
    }

    #[test]
    fn a_failed_batch_is_every_request_s_answer_and_writes_nothing() {
        let store = Arc::new(Picky { inner: MemoryStore::new(), down: AtomicBool::new(true) });
        let bus = EventBus::new(store.clone());
        let (mut jobs, mut answers) = (Vec::new(), Vec::new());
        for source in ["one", "two", "three"] {
            let (j, a) = job("t.a", source);
            jobs.push(j);
            answers.push(a);
        }
        append(&bus, &mut jobs);
        for mut answer in answers {
            let e = answer.try_recv().unwrap().unwrap_err();
            assert!(format!("{e:?}").contains("down"), "{e:?}");
        }
        assert!(sources(&store, "t.a").is_empty());
    }

    #[test]
    fn the_thread_answers_concurrent_requests() {
        let store = Arc::new(Picky { inner: MemoryStore::new(), down: AtomicBool::new(false) });
        let appender = Appender::start(Arc::new(EventBus::new(store.clone()))).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let stored = runtime.block_on(async {
            let publish = |source: &str| {
                appender.publish(
                    Topic::new("t.a").unwrap(),
                    source.to_string(),
                    JsonObject::new(),
                    Some("c".to_string()),
                    JsonObject::new(),
                )
            };
            let (a, b, c) = tokio::join!(publish("one"), publish("two"), publish("refused"));
            [a, b, c]
        });
        assert!(stored[0].is_ok() && stored[1].is_ok() && stored[2].is_err());
        assert_eq!(stored[0].as_ref().unwrap().event.correlation_id.as_deref(), Some("c"));
        assert_eq!(sources(&store, "t.a").len(), 2);
    }
}
