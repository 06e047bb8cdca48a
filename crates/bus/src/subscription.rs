//! [`Subscription`]: one thread that follows a pattern and calls a handler.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use seed_event::{ConsumerName, Cursor, EventStore, Follower, StoredEvent, Topic};

use crate::lease::Lease;
use crate::{Error, HandlerResult, Result, RetryPolicy};

/// How many events one `next_batch` call may return.
const BATCH: usize = 256;
/// How long one `next_batch` call waits: bounds how long unsubscribing takes.
const POLL: Duration = Duration::from_millis(50);

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
    label: String,
    stop: AtomicBool,
    delivered: AtomicU64,
    failed: AtomicU64,
    outcome: Mutex<Outcome>,
    finished: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: Mutex<Option<ThreadId>>,
}

impl Shared {
    fn outcome(&self) -> MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the thread to stop after the event it is handling.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the thread to end (unless called from the thread itself).
    pub(crate) fn join(&self) {
        let own = *self.thread_id.lock().unwrap_or_else(|p| p.into_inner());
        if own == Some(thread::current().id()) {
            return;
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                log::error!("subscription {}: its thread panicked", self.label);
            }
        }
        let mut outcome = self.outcome();
        while !outcome.finished {
            outcome = self.finished.wait(outcome).unwrap_or_else(|p| p.into_inner());
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
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut outcome = self.shared.outcome();
        while !outcome.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            outcome = self
                .shared
                .finished
                .wait_timeout(outcome, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
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
    pub(crate) name: ConsumerName,
    pub(crate) lease: Lease,
}

/// Everything a subscription thread needs.
pub(crate) struct Worker {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) follower: Box<dyn Follower>,
    pub(crate) handler: BoxHandler,
    pub(crate) durable: Option<Durable>,
    pub(crate) max_events: Option<u64>,
    pub(crate) retry: RetryPolicy,
}

/// Starts `worker` on its own thread.
pub(crate) fn spawn(label: String, worker: Worker) -> Result<(Subscription, Arc<Shared>)> {
    let shared = Arc::new(Shared {
        label: label.clone(),
        stop: AtomicBool::new(false),
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
            let result = worker.run(&inner);
            inner.finish(result);
        })
        .map_err(|e| seed_event::Error::io("starting a subscription thread", e))?;
    *shared.thread_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.thread().id());
    *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
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
        if let Some(durable) = self.durable.take() {
            // Let go so another subscriber can take over at once; a failure
            // only delays that until the lease expires.
            if let Err(e) = durable.lease.release() {
                log::warn!("consumer {}: releasing the lease failed: {e}", durable.name);
            }
        }
        result
    }

    fn deliver_all(&mut self, shared: &Shared) -> Result<()> {
        let mut store_failures = 0u32;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(d) = &self.durable {
                if d.lease.is_lost() {
                    return Err(Error::LeaseLost { name: d.name.clone() });
                }
            }
            let batch = match self.follower.next_batch(BATCH, POLL) {
                Ok(batch) => {
                    store_failures = 0;
                    batch
                }
                Err(e) => {
                    store_failures += 1;
                    if store_failures >= self.retry.attempts {
                        return Err(e.into());
                    }
                    log::warn!(
                        "subscription {}: reading failed (attempt {store_failures}): {e}",
                        shared.label
                    );
                    self.pause(shared, store_failures);
                    continue;
                }
            };
            let mut handled: BTreeMap<Topic, Cursor> = BTreeMap::new();
            let result = self.deliver_batch(shared, batch, &mut handled);
            self.commit(&handled)?;
            if !result? {
                return Ok(());
            }
        }
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
                        if attempt >= self.retry.attempts {
                            return Err(Error::HandlerFailed {
                                event_id: event.event.id,
                                topic: event.event.topic.clone(),
                                attempts: attempt,
                                reason,
                            });
                        }
                        self.pause(shared, attempt);
                        if shared.stop.load(Ordering::SeqCst) {
                            return Ok(false);
                        }
                    }
                }
            }
            if self.max_events.is_some_and(|max| shared.delivered.load(Ordering::SeqCst) >= max) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Waits before retry number `attempt`, waking early on a stop request.
    fn pause(&self, shared: &Shared, attempt: u32) {
        let wait = self.retry.backoff_for(attempt);
        let deadline = Instant::now() + wait;
        while !shared.stop.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(10)));
        }
    }

    /// Commits a durable consumer's handled positions (after checking its lease).
    fn commit(&self, handled: &BTreeMap<Topic, Cursor>) -> Result<()> {
        let Some(durable) = &self.durable else { return Ok(()) };
        if handled.is_empty() {
            return Ok(());
        }
        durable.lease.check()?;
        for (topic, cursor) in handled {
            self.store.commit_consumer(&durable.name, topic, *cursor)?;
        }
        Ok(())
    }
}
