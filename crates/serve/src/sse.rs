//! Live event streams (`GET /v1/subscribe`) and their fan-out.
//!
//! One bus subscription per distinct pattern (a [`Hub`]) feeds a tokio
//! broadcast channel of bounded capacity that every live stream of that
//! pattern reads; the subscription stops when its last stream ends. A stream
//! that starts in the past (`from=beginning`, a time, or a `Last-Event-ID`)
//! first reads the store with a follower of its own until it has caught up,
//! then joins the hub and skips what it already sent (cursors only grow
//! within a topic). A stream that falls further behind than the channel holds
//! gets a final `error` event and ends; the hub never waits for it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bus::{EventBus, StartAt, Subscription};
use seed_event::{
    Cursor, FollowFrom, Follower, Start, StoredEvent, Timestamp, Topic, TopicPattern,
};
use tokio::sync::{broadcast, mpsc};

use crate::app::App;
use crate::error::{error_body, ApiError};
use crate::events::event_json;
use crate::metrics::Metrics;
use crate::resume::{Resume, StreamStart};

/// An event as streams send it: its topic and cursor, and what every stream
/// writes of it, made once: its JSON and its part of a resume token.
#[derive(Debug)]
pub struct Wire {
    topic: Topic,
    cursor: Cursor,
    json: String,
    /// `~<topic>=<cursor>` (see [`crate::resume::write_position`]).
    position: Vec<u8>,
}

impl Wire {
    fn new(e: &StoredEvent) -> Wire {
        let mut position = Vec::new();
        crate::resume::write_position(&mut position, &e.event.topic, e.cursor);
        Wire { topic: e.event.topic.clone(), cursor: e.cursor, json: event_json(e), position }
    }
}

struct Hub {
    /// Weak: the subscription's handler holds the only strong sender, so the
    /// streams see the channel close when the subscription stops.
    sender: broadcast::WeakSender<Arc<Wire>>,
    /// Tells this hub from one that replaced it for the same pattern.
    generation: u64,
    streams: usize,
    subscription: Option<Subscription>,
}

/// The hubs of a server, one per distinct pattern with live streams.
pub struct Hubs {
    bus: Arc<EventBus>,
    capacity: usize,
    metrics: Arc<Metrics>,
    hubs: Mutex<HashMap<TopicPattern, Hub>>,
    generations: std::sync::atomic::AtomicU64,
}

/// A stream's hold on its pattern's hub; the last one to go stops the hub.
pub struct HubLease {
    hubs: Arc<Hubs>,
    pattern: TopicPattern,
    generation: u64,
}

impl Hubs {
    /// No hubs yet; each will hold up to `capacity` events for its slowest stream.
    pub fn new(bus: Arc<EventBus>, capacity: usize, metrics: Arc<Metrics>) -> Hubs {
        Hubs {
            bus,
            capacity,
            metrics,
            hubs: Mutex::new(HashMap::new()),
            generations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Joins (or starts) the hub of `pattern`: every event appended after
    /// this returns will come through the receiver. Blocks while a new hub's
    /// subscription is positioned.
    fn join(
        self: &Arc<Hubs>,
        pattern: &TopicPattern,
    ) -> bus::Result<(HubLease, broadcast::Receiver<Arc<Wire>>)> {
        let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let live = hubs.get_mut(pattern).and_then(|hub| Some((hub.sender.upgrade()?, hub)));
        let receiver = match live {
            Some((sender, hub)) => {
                hub.streams += 1;
                sender.subscribe()
            }
            None => {
                // No hub, or one whose subscription stopped (its streams have ended).
                let (tx, receiver) = broadcast::channel(self.capacity);
                let sender = tx.downgrade();
                let subscription = self.bus.subscribe(pattern, StartAt::New, move |e| {
                    // No receiver is fine: the hub is about to stop.
                    let _ = tx.send(Arc::new(Wire::new(e)));
                    Ok(())
                })?;
                let old = hubs.insert(
                    pattern.clone(),
                    Hub {
                        sender,
                        generation: self.generations.fetch_add(1, Ordering::Relaxed),
                        streams: 1,
                        subscription: Some(subscription),
                    },
                );
                match old {
                    // Its streams' leases no longer count here; stop its thread off the lock.
                    Some(old) => {
                        std::thread::spawn(move || drop(old.subscription));
                    }
                    None => {
                        self.metrics.followers.fetch_add(1, Ordering::Relaxed);
                    }
                }
                receiver
            }
        };
        let generation = hubs.get(pattern).map_or(0, |hub| hub.generation);
        Ok((HubLease { hubs: self.clone(), pattern: pattern.clone(), generation }, receiver))
    }

    /// Stops every hub (at shutdown).
    pub fn stop_all(&self) {
        let hubs = std::mem::take(&mut *self.hubs.lock().unwrap_or_else(|p| p.into_inner()));
        drop(hubs);
    }
}

impl Drop for HubLease {
    fn drop(&mut self) {
        let mut hubs = self.hubs.hubs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(hub) = hubs.get_mut(&self.pattern) else { return };
        if hub.generation != self.generation {
            return; // a hub that replaced ours
        }
        hub.streams -= 1;
        if hub.streams > 0 {
            return;
        }
        let subscription = hub.subscription.take();
        hubs.remove(&self.pattern);
        self.hubs.metrics.followers.fetch_sub(1, Ordering::Relaxed);
        drop(hubs);
        // Unsubscribing joins the thread (up to one poll interval): not on the runtime.
        std::thread::spawn(move || drop(subscription));
    }
}

/// What the catch-up reader hands the stream.
enum Step {
    Event(Wire),
    Live(HubLease, broadcast::Receiver<Arc<Wire>>),
    Failed(String),
}

/// Counts a stream in `seed_subscribers` while it lives.
struct Counted(Arc<Metrics>);

impl Counted {
    fn new(metrics: Arc<Metrics>) -> Counted {
        metrics.subscribers.fetch_add(1, Ordering::Relaxed);
        Counted(metrics)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The parameters of `GET /v1/subscribe`.
fn stream_params(
    raw: Option<&str>,
    headers: &HeaderMap,
) -> Result<(TopicPattern, Resume, bool), ApiError> {
    let mut pattern = None;
    let mut from = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*key {
            "topic" if pattern.is_none() => pattern = Some(TopicPattern::new(value.as_ref())?),
            "topic" => return Err(ApiError::invalid("give one topic pattern per stream")),
            "from" => from = Some(value.into_owned()),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected topic and from"
                )))
            }
        }
    }
    let pattern = pattern.ok_or_else(|| {
        ApiError::invalid("topic is missing; expected a topic or pattern such as task.>")
    })?;
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().unwrap_or("");
        let resume = Resume::parse(text).ok_or_else(|| {
            ApiError::invalid(format!("Last-Event-ID {text:?} is not an event id of this server"))
        })?;
        if let Some(topic) = resume.positions.keys().find(|t| !pattern.matches(t)) {
            return Err(ApiError::invalid(format!(
                "Last-Event-ID names topic {topic}, which the pattern {pattern} does not match"
            )));
        }
        return Ok((pattern, resume, true));
    }
    let start = match from.as_deref().unwrap_or("new") {
        "new" => {
            let resume = Resume { start: StreamStart::Since(Timestamp::now()), positions: Default::default() };
            return Ok((pattern, resume, false));
        }
        "beginning" => StreamStart::Beginning,
        time => StreamStart::Since(Timestamp::parse(time).map_err(|_| {
            ApiError::invalid(format!(
                "from {time:?}: expected new, beginning or an RFC 3339 time such as 2026-04-16T00:00:00Z"
            ))
        })?),
    };
    Ok((pattern, Resume { start, positions: Default::default() }, true))
}

/// Reads the store from the stream's position until it has caught up, joins
/// the hub, reads what came meanwhile, and hands the hub over.
fn catch_up(
    mut follower: Box<dyn Follower>,
    hubs: Arc<Hubs>,
    pattern: TopicPattern,
    tx: mpsc::Sender<Step>,
) {
    let drain = |follower: &mut Box<dyn Follower>| -> Result<bool, String> {
        loop {
            let batch =
                follower.next_batch(256, Duration::from_millis(10)).map_err(|e| e.to_string())?;
            if batch.is_empty() {
                return Ok(true);
            }
            for e in &batch {
                if tx.blocking_send(Step::Event(Wire::new(e))).is_err() {
                    return Ok(false);
                }
            }
        }
    };
    let result = drain(&mut follower).and_then(|open| {
        if !open {
            return Ok(None);
        }
        let live = hubs.join(&pattern).map_err(|e| e.to_string())?;
        Ok(drain(&mut follower)?.then_some(live))
    });
    let step = match result {
        Ok(Some((lease, receiver))) => Step::Live(lease, receiver),
        Ok(None) => return,
        Err(e) => Step::Failed(e),
    };
    let _ = tx.blocking_send(step);
}

/// The most events one write of a live stream carries when it is behind.
const EVENTS_PER_WRITE: usize = 256;

/// Appends `wire` in the event-stream format, `id: <resume token>` then
/// `data: <event JSON>` (which has no line breaks), and moves `resume` past
/// it. `start` is the token's start part ([`Resume::write_start`]).
fn push_event(out: &mut Vec<u8>, wire: &Wire, resume: &mut Resume, start: &[u8]) {
    match resume.positions.get_mut(&wire.topic) {
        Some(cursor) => *cursor = wire.cursor,
        None => {
            resume.positions.insert(wire.topic.clone(), wire.cursor);
        }
    }
    out.extend_from_slice(b"id: ");
    if resume.positions.len() == 1 {
        // The stream has delivered from this topic only: the token is the
        // start and the event's own part, both made already.
        out.extend_from_slice(start);
        out.extend_from_slice(&wire.position);
    } else {
        resume.write_token(out);
    }
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(wire.json.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A final `error` event.
fn error_event(message: &str) -> Bytes {
    Bytes::from(format!("event: error\ndata: {}\n\n", error_body(message)))
}

/// A stream's handles on the delivered counters of its topics.
#[derive(Default)]
struct Counters(HashMap<Topic, Arc<std::sync::atomic::AtomicU64>>);

impl Counters {
    fn add(&mut self, metrics: &Metrics, topic: &Topic, n: u64) {
        if !self.0.contains_key(topic) {
            self.0.insert(topic.clone(), metrics.delivered_counter(topic.as_str()));
        }
        if let Some(counter) = self.0.get(topic) {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The events of one write, counted per topic for the metrics.
struct Frame {
    bytes: Vec<u8>,
    delivered: Vec<(Topic, u64)>,
}

impl Frame {
    fn new() -> Frame {
        Frame { bytes: Vec::new(), delivered: Vec::new() }
    }

    fn push(&mut self, wire: &Wire, resume: &mut Resume, start: &[u8]) {
        push_event(&mut self.bytes, wire, resume, start);
        match self.delivered.iter_mut().find(|(t, _)| *t == wire.topic) {
            Some((_, n)) => *n += 1,
            None => self.delivered.push((wire.topic.clone(), 1)),
        }
    }

    /// The bytes to write, after counting the events as delivered.
    fn finish(self, metrics: &Metrics, counters: &mut Counters) -> Bytes {
        for (topic, n) in &self.delivered {
            counters.add(metrics, topic, *n);
        }
        Bytes::from(self.bytes)
    }
}

/// `GET /v1/subscribe?topic=P&from=new|beginning|TIME`: a `text/event-stream`
/// of the pattern's events, each with its resume token as its id.
///
/// A stream that is behind writes what has queued up (up to
/// [`EVENTS_PER_WRITE`] events) in one write; an idle one gets a comment
/// line at least every keep-alive interval.
pub async fn subscribe(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (pattern, mut resume, from_store) = stream_params(raw.as_deref(), &headers)?;
    let hubs = app.hubs.clone();
    let mut catching_up = None;
    let mut live = None;
    if from_store {
        let from = FollowFrom {
            start: match resume.start {
                StreamStart::Beginning => Start::Beginning,
                StreamStart::Since(t) => Start::Since(t),
            },
            positions: resume.positions.clone(),
        };
        let store = app.bus.store().clone();
        let p = pattern.clone();
        let follower = app.blocking(move || store.follow(&p, from)).await??;
        let (tx, rx) = mpsc::channel(256);
        let p = pattern.clone();
        app.runtime.spawn_blocking(move || catch_up(follower, hubs, p, tx));
        catching_up = Some(rx);
    } else {
        let p = pattern.clone();
        live = Some(app.blocking(move || hubs.join(&p)).await??);
    }
    let metrics = app.metrics.clone();
    let keep_alive = app.config.keep_alive;
    let mut shutdown = app.shutdown.clone();
    let stream = async_stream::stream! {
        let _counted = Counted::new(metrics.clone());
        let mut counters = Counters::default();
        let mut start = Vec::new();
        resume.write_start(&mut start);
        // The id names the start, so a client that drops before any event resumes without a gap.
        let mut hello = b": listening\nid: ".to_vec();
        resume.write_token(&mut hello);
        hello.extend_from_slice(b"\n\n");
        yield Ok::<_, Infallible>(Bytes::from(hello));
        let mut stop = std::pin::pin!(crate::app::stopped(&mut shutdown));
        // A comment goes out when a whole half-interval passed without a
        // write, so the gap between writes is at most one interval, and no
        // timer is reset per event.
        let half = (keep_alive / 2).max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote = false;
        let mut ended = false;
        if let Some(mut steps) = catching_up {
            while !ended {
                tokio::select! {
                    _ = &mut stop => ended = true,
                    _ = ticks.tick() => {
                        if !std::mem::take(&mut wrote) {
                            yield Ok(Bytes::from_static(b":\n\n"));
                        }
                    }
                    step = steps.recv() => match step {
                        Some(Step::Event(wire)) => {
                            let mut frame = Frame::new();
                            frame.push(&wire, &mut resume, &start);
                            wrote = true;
                            yield Ok(frame.finish(&metrics, &mut counters));
                        }
                        Some(Step::Live(lease, receiver)) => {
                            live = Some((lease, receiver));
                            break;
                        }
                        Some(Step::Failed(message)) => {
                            yield Ok(error_event(&message));
                            ended = true;
                        }
                        None => ended = true,
                    },
                }
            }
        }
        if let (false, Some((_lease, mut receiver))) = (ended, live) {
            while !ended {
                let first = tokio::select! {
                    _ = &mut stop => break,
                    _ = ticks.tick() => {
                        if !std::mem::take(&mut wrote) {
                            yield Ok(Bytes::from_static(b":\n\n"));
                        }
                        continue;
                    }
                    received = receiver.recv() => received,
                };
                // Take what else has queued up, so a stream that is behind
                // catches up in few writes.
                let mut frame = Frame::new();
                let mut next = Some(first);
                let mut taken = 0;
                let mut failure = None;
                while let Some(received) = next.take() {
                    match received {
                        Ok(wire) => {
                            if resume.positions.get(&wire.topic).is_none_or(|c| *c < wire.cursor) {
                                frame.push(&wire, &mut resume, &start);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            metrics.lagged.fetch_add(1, Ordering::Relaxed);
                            failure = Some(format!(
                                "this stream fell {n} events behind and was ended; reconnect with Last-Event-ID to resume"
                            ));
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            failure = Some(
                                "the store follower of this pattern stopped (see the server's log); reconnect with Last-Event-ID to resume"
                                    .to_string(),
                            );
                            break;
                        }
                    }
                    taken += 1;
                    if taken < EVENTS_PER_WRITE {
                        next = match receiver.try_recv() {
                            Ok(wire) => Some(Ok(wire)),
                            Err(broadcast::error::TryRecvError::Empty) => None,
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                Some(Err(broadcast::error::RecvError::Lagged(n)))
                            }
                            Err(broadcast::error::TryRecvError::Closed) => {
                                Some(Err(broadcast::error::RecvError::Closed))
                            }
                        };
                    }
                }
                if !frame.bytes.is_empty() {
                    wrote = true;
                    yield Ok(frame.finish(&metrics, &mut counters));
                }
                if let Some(message) = failure {
                    yield Ok(error_event(&message));
                    ended = true;
                }
            }
        }
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_parameters_are_checked() {
        let none = HeaderMap::new();
        assert!(stream_params(Some("from=new"), &none).is_err());
        assert!(stream_params(Some("topic=a&topic=b"), &none).is_err());
        assert!(stream_params(Some("topic=a&from=2026"), &none).is_err());
        let (_, resume, from_store) = stream_params(Some("topic=a.*"), &none).unwrap();
        assert!(!from_store && resume.positions.is_empty());
        let mut last = HeaderMap::new();
        last.insert("last-event-id", "b~b.x=1-0".parse().unwrap());
        assert!(stream_params(Some("topic=a.*"), &last).is_err());
        let (_, resume, from_store) = stream_params(Some("topic=b.*"), &last).unwrap();
        assert!(from_store && resume.positions.len() == 1);
    }

    #[test]
    fn every_event_carries_the_token_of_the_position_after_it() {
        let wire = |topic: &str, cursor: Cursor| {
            let event = seed_event::Event::new(Topic::new(topic).unwrap(), "s", Default::default());
            Wire::new(&StoredEvent { cursor, event })
        };
        for start in [StreamStart::Beginning, StreamStart::Since(Timestamp::from_unix_micros(7))] {
            let mut resume = Resume { start, positions: Default::default() };
            let mut start_part = Vec::new();
            resume.write_start(&mut start_part);
            for w in [
                wire("a~b", Cursor::new(5, 0)),
                wire("a~b", Cursor::new(6, 1)),
                wire("a.c", Cursor::new(7, 0)),
                wire("a~b", Cursor::new(8, 0)),
            ] {
                let mut out = Vec::new();
                push_event(&mut out, &w, &mut resume, &start_part);
                let text = String::from_utf8(out).unwrap();
                let id = text.strip_prefix("id: ").unwrap().split('\n').next().unwrap();
                assert_eq!(id, resume.token());
                assert_eq!(Resume::parse(id).unwrap().positions.get(&w.topic), Some(&w.cursor));
            }
        }
    }
}
