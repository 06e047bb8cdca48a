//! [`Subscription`]: one thread that follows a pattern and calls a handler.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use seed_event::support::{lock, wait, wait_timeout};
use seed_event::{
    Cursor, EventStore, FollowFrom, Follower, Interrupt, StoredEvent, Topic, TopicPattern,
};

use crate::consumer::Held;
use crate::outage::{is_transient, wait_out, Outage, Reconnect, Status};
use crate::{Error, HandlerResult, Result, RetryPolicy};

/// How many events one `next_batch` call may return.
const BATCH: usize = 256;
/// How long one `next_batch` call waits on a follower that cannot be
/// interrupted: bounds how long unsubscribing takes.
const POLL: Duration = Duration::from_millis(50);
/// How long one `next_batch` call waits on a follower that can be
/// interrupted (a stop request cuts it short); the store decides how it
/// waits meanwhile (inotify, `XREAD BLOCK`).
const IDLE: Duration = Duration::from_secs(60);
/// How long one such call waits for a durable consumer, which looks at its
/// lease between calls.
const IDLE_DURABLE: Duration = Duration::from_secs(1);

pub(crate) type BoxHandler = Box<dyn FnMut(&StoredEvent) -> HandlerResult + Send>;

/// Counts of what a subscription did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Events the handler returned `Ok` for.
    pub delivered: u64,
    /// Handler calls that failed (returned an error or panicked).
    pub failed: u64,
}

#[derive(Default)]
struct Outcome {
    finished: bool,
    result: Option<Result<()>>,
    error_text: Option<String>,
}

/// The state a subscription's thread shares with its handle and the bus.
pub(crate) struct Shared {
    pub(crate) label: String,
    /// Read without a lock on the delivery path; `stopping` is the same flag for waits.
    pub(crate) stop: AtomicBool,
    stopping: Mutex<bool>,
    stop_requested: Condvar,
    /// Cuts the follower's wait short on a stop request, once the follower is there.
    pub(crate) interrupt: Mutex<Option<Arc<dyn Interrupt>>>,
    /// `Live` or `Reconnecting`; `Stopped` comes from `outcome`.
    status: Mutex<Status>,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    outcome: Mutex<Outcome>,
    finished: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<ThreadId>>,
}

impl Shared {
    fn outcome(&self) -> MutexGuard<'_, Outcome> {
        lock(&self.outcome)
    }

    /// Asks the thread to stop after the event it is handling.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        *lock(&self.stopping) = true;
        self.stop_requested.notify_all();
        let interrupt = lock(&self.interrupt).clone();
        if let Some(interrupt) = interrupt {
            interrupt.interrupt();
        }
    }

    /// Waits up to `duration`, returning early (true) when a stop is requested.
    pub(crate) fn wait_for_stop(&self, duration: Duration) -> bool {
        let deadline = Instant::now().checked_add(duration);
        let mut stopping = lock(&self.stopping);
        while !*stopping {
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return false;
            }
            stopping = match deadline {
                Some(_) => wait_timeout(&self.stop_requested, stopping, left).0,
                None => wait(&self.stop_requested, stopping),
            };
        }
        true
    }

    pub(crate) fn set_status(&self, status: Status) {
        *lock(&self.status) = status;
    }

    /// Waits for the thread to end (unless called from the thread itself).
    pub(crate) fn join(&self) {
        let own = *lock(&self.thread_id);
        if own == Some(thread::current().id()) {
            return;
        }
        let handle = lock(&self.thread).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                log::error!("subscription {}: its thread panicked", self.label);
            }
        }
        let mut outcome = self.outcome();
        while !outcome.finished {
            outcome = wait(&self.finished, outcome);
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            delivered: self.delivered.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
        }
    }

    fn finish(&self, result: Result<()>) {
        let mut outcome = self.outcome();
        if let Err(e) = &result {
            log::error!("subscription {} stopped: {e}", self.label);
            outcome.error_text = Some(e.to_string());
        }
        outcome.result = Some(result);
        outcome.finished = true;
        self.finished.notify_all();
    }

    fn take_result(&self) -> Result<Summary> {
        match self.outcome().result.take() {
            Some(Err(e)) => Err(e),
            _ => Ok(self.summary()),
        }
    }
}

/// A running subscription. Dropping it (or [`Subscription::unsubscribe`])
/// stops delivery and joins its thread.
///
/// A handler that blocks forever also blocks the drop; every other
/// subscription goes on.
pub struct Subscription {
    shared: Arc<Shared>,
}

impl Subscription {
    /// Stops delivery, waits for the thread, and returns what it did, or the
    /// error it had stopped with.
    pub fn unsubscribe(self) -> Result<Summary> {
        self.shared.request_stop();
        self.shared.join();
        self.shared.take_result()
    }

    /// Waits until the subscription ends on its own (it reached its
    /// `max_events`, or failed) and returns what it did or its error.
    ///
    /// Blocks forever for a subscription that can do neither.
    pub fn wait(self) -> Result<Summary> {
        self.shared.join();
        self.shared.take_result()
    }

    /// Waits up to `timeout` for the subscription to end; true if it has.
    /// A timeout past what the clock can represent waits without limit.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut outcome = self.shared.outcome();
        while !outcome.finished {
            let finished = &self.shared.finished;
            outcome = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    wait_timeout(finished, outcome, left).0
                }
                None => wait(finished, outcome),
            };
        }
        true
    }

    /// What the subscription is doing now: live, waiting for its store, or stopped.
    pub fn status(&self) -> Status {
        let outcome = self.shared.outcome();
        if outcome.finished {
            return Status::Stopped(outcome.error_text.clone());
        }
        drop(outcome);
        lock(&self.shared.status).clone()
    }

    /// Whether the subscription has ended.
    pub fn is_finished(&self) -> bool {
        self.shared.outcome().finished
    }

    /// The error the subscription stopped with, if it did.
    pub fn error(&self) -> Option<String> {
        self.shared.outcome().error_text.clone()
    }

    /// Events the handler has returned `Ok` for so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::SeqCst)
    }

    /// Handler calls that have failed so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.request_stop();
        self.shared.join();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("label", &self.shared.label)
            .field("finished", &self.is_finished())
            .field("summary", &self.shared.summary())
            .finish()
    }
}

/// A durable consumer's state inside its thread.
pub(crate) struct Durable {
    pub(crate) held: Held,
    /// Commit after each event rather than after each batch.
    pub(crate) each_event: bool,
}

/// What a subscription thread follows, and its follower once the store gave one.
pub(crate) struct Source {
    pub(crate) pattern: TopicPattern,
    pub(crate) from: FollowFrom,
    /// `None` while the store has not answered `follow` yet.
    pub(crate) follower: Option<Box<dyn Follower>>,
}

impl Source {
    /// Starts following, or, if the store is unavailable, leaves that to the
    /// subscription's thread, which keeps trying; other errors are returned.
    pub(crate) fn open(
        store: &dyn EventStore,
        pattern: TopicPattern,
        from: FollowFrom,
    ) -> Result<(Source, Option<Outage>)> {
        match store.follow(&pattern, from.clone()) {
            Ok(follower) => Ok((Source { pattern, from, follower: Some(follower) }, None)),
            Err(e) => {
                let e = Error::from(e);
                if !is_transient(&e) {
                    return Err(e);
                }
                log::warn!(
                    "subscription {pattern}: lost {} ({e}); following it once it is back",
                    store.describe()
                );
                Ok((Source { pattern, from, follower: None }, Some(Outage::begin())))
            }
        }
    }
}

/// How a subscription handles failures.
pub(crate) struct Policy {
    /// Retries of a durable consumer's failing handler.
    pub(crate) handler: RetryPolicy,
    /// Waits between attempts while the store is unavailable.
    pub(crate) reconnect: Reconnect,
    /// Stop once the store has been unavailable this long (`None`: never).
    pub(crate) give_up_after: Option<Duration>,
}

/// Everything a subscription thread needs.
pub(crate) struct Worker {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) source: Source,
    pub(crate) handler: BoxHandler,
    pub(crate) durable: Option<Durable>,
    pub(crate) max_events: Option<u64>,
    pub(crate) policy: Policy,
    /// The store outage in progress, if any.
    pub(crate) outage: Option<Outage>,
    /// The last event delivered: where delivery resumes after an outage.
    pub(crate) last: Option<(Topic, Cursor)>,
}

/// Starts `worker` on its own thread.
pub(crate) fn spawn(label: String, worker: Worker) -> Result<(Subscription, Arc<Shared>)> {
    let status = worker.outage.as_ref().map_or(Status::Live, Outage::status);
    spawn_with(label, status, move |shared| worker.run(shared))
}

/// Runs `run` on a thread of its own, as a [`Subscription`] showing `status` first.
pub(crate) fn spawn_with(
    label: String,
    status: Status,
    run: impl FnOnce(&Shared) -> Result<()> + Send + 'static,
) -> Result<(Subscription, Arc<Shared>)> {
    let shared = Arc::new(Shared {
        label: label.clone(),
        stop: AtomicBool::new(false),
        stopping: Mutex::new(false),
        stop_requested: Condvar::new(),
        interrupt: Mutex::new(None),
        status: Mutex::new(status),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        outcome: Mutex::new(Outcome::default()),
        finished: Condvar::new(),
        thread: Mutex::new(None),
        thread_id: Mutex::new(None),
    });
    let inner = shared.clone();
    let handle = thread::Builder::new()
        .name(format!("sub-{label}"))
        .spawn(move || {
            let result = run(&inner);
            inner.finish(result);
        })
        .map_err(|e| seed_event::Error::io("starting a subscription thread", e))?;
    *lock(&shared.thread_id) = Some(handle.thread().id());
    *lock(&shared.thread) = Some(handle);
    Ok((Subscription { shared: shared.clone() }, shared))
}

/// The text of a panic's payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// Calls `handler` on `event`, turning a panic into an error message.
pub(crate) fn call(
    handler: &mut (dyn FnMut(&StoredEvent) -> HandlerResult + Send),
    event: &StoredEvent,
) -> std::result::Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| handler(event))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => Err(panic_text(payload.as_ref())),
    }
}

impl Worker {
    fn run(mut self, shared: &Shared) -> Result<()> {
        let result = self.deliver_all(shared);
        // Dropping the lock lets go, so another subscriber can take over at once.
        self.durable = None;
        result
    }

    fn deliver_all(&mut self, shared: &Shared) -> Result<()> {
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(d) = &self.durable {
                d.held.check()?;
            }
            let Some(batch) = self.with_store(shared, |w| w.next_batch(shared))? else {
                return Ok(());
            };
            let mut handled: BTreeMap<Topic, Cursor> = BTreeMap::new();
            let result = self.deliver_batch(shared, batch, &mut handled);
            self.commit(shared, &handled)?;
            if !result? {
                return Ok(());
            }
        }
    }

    /// The follower's next batch; the follower is created first if the store
    /// was unavailable when the subscription started.
    fn next_batch(&mut self, shared: &Shared) -> Result<Vec<StoredEvent>> {
        let mut follower = match self.source.follower.take() {
            Some(follower) => follower,
            None => self.store.follow(&self.source.pattern, self.source.from.clone())?,
        };
        let mut interrupt = lock(&shared.interrupt);
        if interrupt.is_none() {
            *interrupt = follower.interrupter();
        }
        let timeout = match interrupt.is_some() {
            false => POLL,
            true if self.durable.is_some() => IDLE_DURABLE,
            true => IDLE,
        };
        drop(interrupt);
        // A stop requested before the interrupter was known is not lost:
        // the stop flag is looked at again before the wait.
        if shared.stop.load(Ordering::SeqCst) {
            self.source.follower = Some(follower);
            return Ok(Vec::new());
        }
        // A follower stays usable after an error: the next call goes on where it was.
        let batch = follower.next_batch(BATCH, timeout);
        self.source.follower = Some(follower);
        Ok(batch?)
    }

    /// Runs `op` until it succeeds or fails for good: while the store is
    /// unavailable it is retried after growing waits. `None`: a stop was
    /// requested meanwhile.
    fn with_store<T>(
        &mut self,
        shared: &Shared,
        mut op: impl FnMut(&mut Worker) -> Result<T>,
    ) -> Result<Option<T>> {
        loop {
            let e = match op(self) {
                Ok(value) => {
                    self.store_is_back(shared);
                    return Ok(Some(value));
                }
                Err(e) if is_transient(&e) => e,
                Err(e) => return Err(e),
            };
            let (wait, status) = wait_out(
                &mut self.outage,
                e,
                &format!("subscription {}", shared.label),
                &self.store.describe(),
                &self.policy.reconnect,
                self.policy.give_up_after,
            )?;
            shared.set_status(status);
            if shared.wait_for_stop(wait) {
                return Ok(None);
            }
        }
    }

    /// Ends the outage in progress, if any, and says so.
    fn store_is_back(&mut self, shared: &Shared) {
        let Some(outage) = self.outage.take() else { return };
        let resumes = match &self.last {
            Some((topic, cursor)) => format!("after {cursor} in topic {topic}"),
            None => "at its start".to_string(),
        };
        log::info!(
            "subscription {}: {} is back after {:.1}s ({} failed attempts); delivery resumes {resumes}",
            shared.label,
            self.store.describe(),
            outage.started.elapsed().as_secs_f64(),
            outage.attempts,
        );
        shared.set_status(Status::Live);
    }

    /// Delivers one batch; false when the subscription should end.
    fn deliver_batch(
        &mut self,
        shared: &Shared,
        batch: Vec<StoredEvent>,
        handled: &mut BTreeMap<Topic, Cursor>,
    ) -> Result<bool> {
        for event in batch {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                match call(self.handler.as_mut(), &event) {
                    Ok(()) => {
                        shared.delivered.fetch_add(1, Ordering::SeqCst);
                        handled.insert(event.event.topic.clone(), event.cursor);
                        if self.durable.as_ref().is_some_and(|d| d.each_event) {
                            self.commit(shared, handled)?;
                            handled.clear();
                        }
                        break;
                    }
                    Err(reason) => {
                        shared.failed.fetch_add(1, Ordering::SeqCst);
                        log::error!(
                            "subscription {}: handler failed on event {} of topic {} (attempt {attempt}): {reason}",
                            shared.label,
                            event.event.id,
                            event.event.topic
                        );
                        if self.durable.is_none() {
                            // A plain subscription goes on with the next event, as the original did.
                            break;
                        }
                        if attempt >= self.policy.handler.attempts {
                            return Err(Error::HandlerFailed {
                                event_id: event.event.id,
                                topic: event.event.topic.clone(),
                                attempts: attempt,
                                reason,
                            });
                        }
                        if shared.wait_for_stop(self.policy.handler.backoff_for(attempt)) {
                            return Ok(false);
                        }
                    }
                }
            }
            self.last = Some((event.event.topic.clone(), event.cursor));
            if self.max_events.is_some_and(|max| shared.delivered.load(Ordering::SeqCst) >= max) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Commits a durable consumer's handled positions under its lock,
    /// waiting out an unavailable store; a stop request meanwhile leaves the
    /// rest uncommitted, to be delivered again.
    fn commit(&mut self, shared: &Shared, handled: &BTreeMap<Topic, Cursor>) -> Result<()> {
        if self.durable.is_none() || handled.is_empty() {
            return Ok(());
        }
        let mut pending = handled.iter().peekable();
        self.with_store(shared, |w| {
            let Some(durable) = &w.durable else { return Ok(()) };
            while let Some((topic, cursor)) = pending.peek() {
                durable.held.commit(w.store.as_ref(), topic, **cursor)?;
                pending.next();
            }
            Ok(())
        })?;
        Ok(())
    }
}
