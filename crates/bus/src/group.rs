//! Work-group members that run a handler: [`EventBus::join_group`](crate::EventBus::join_group).
//!
//! The member's thread fetches up to `max_in_flight` events at once, calls
//! the handler on each, and acks the ones it returned `Ok` for together with
//! its next fetch (one step under the store's group lock); an `Err` (or a
//! panic) nacks the event at once, so it comes back after the group's
//! backoff or is dead-lettered. A stop request cuts the member's wait short;
//! the events it fetched and did not handle go back to the group when it
//! leaves (not counted as failures), and the handled ones are acked first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seed_event::support::lock;
use seed_event::{Delivery, DeliveryToken, EventStore, GroupConfig, GroupMember};

use crate::outage::{is_transient, wait_out, Outage, Reconnect, Status};
use crate::subscription::{panic_text, Shared};
use crate::{Error, HandlerResult, Result};

/// How long one fetch waits; a stop request cuts it short.
const IDLE: Duration = Duration::from_secs(60);

/// A group member's handler: `Ok` acks the delivery, an error nacks it.
pub(crate) type GroupHandler = Box<dyn FnMut(&Delivery) -> HandlerResult + Send>;

/// Called before the handled events are acked (e.g. to flush their output).
pub(crate) type BeforeAck = Box<dyn FnMut() -> HandlerResult + Send>;

/// A work-group member's settings; [`WorkerConfig::new`] gives the defaults.
///
/// ```
/// use bus::WorkerConfig;
/// use seed_event::{ConsumerName, GroupConfig, TopicPattern};
/// let group = GroupConfig::new(ConsumerName::new("billing")?, TopicPattern::new("task.>")?)?;
/// let config = WorkerConfig::new(group).member("worker-1").max_events(10);
/// assert_eq!(config.max_events, Some(10));
/// # Ok::<(), seed_event::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The group and how this member takes part.
    pub group: GroupConfig,
    /// The member's label (its id adds the process, a number and a random part); `worker` by default.
    pub member: String,
    /// Leave the group after this many events handled (acked).
    pub max_events: Option<u64>,
    /// Stop with [`Error::StoreUnavailable`] once the store has been
    /// unavailable this long; `None` keeps trying while the member lives.
    pub give_up_after: Option<Duration>,
}

impl WorkerConfig {
    /// A member of `group`.
    pub fn new(group: GroupConfig) -> WorkerConfig {
        WorkerConfig { group, member: "worker".to_string(), max_events: None, give_up_after: None }
    }

    /// This member labelled `label`.
    pub fn member(mut self, label: impl Into<String>) -> WorkerConfig {
        self.member = label.into();
        self
    }

    /// This member leaving after `n` handled events.
    pub fn max_events(mut self, n: u64) -> WorkerConfig {
        self.max_events = Some(n);
        self
    }

    /// This member giving up once the store was unavailable for `after`.
    pub fn give_up_after(mut self, after: Duration) -> WorkerConfig {
        self.give_up_after = Some(after);
        self
    }
}

/// Everything a member's thread needs.
pub(crate) struct GroupWorker {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) member: Box<dyn GroupMember>,
    pub(crate) handler: GroupHandler,
    pub(crate) before_ack: BeforeAck,
    pub(crate) config: WorkerConfig,
    pub(crate) reconnect: Reconnect,
    pub(crate) outage: Option<Outage>,
}

/// Calls `handler` on `delivery`, turning a panic into an error message.
fn call(handler: &mut GroupHandler, delivery: &Delivery) -> std::result::Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| handler(delivery))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => Err(panic_text(payload.as_ref())),
    }
}

impl GroupWorker {
    pub(crate) fn run(mut self, shared: &Shared) -> Result<()> {
        *lock(&shared.interrupt) = Some(self.member.interrupter());
        let mut acks: Vec<DeliveryToken> = Vec::new();
        let result = self.deliver_all(shared, &mut acks);
        // Whatever was handled is acked before leaving, also after a stop.
        if !acks.is_empty() && result.is_ok() {
            self.before_ack()?;
            let acked = self.with_store(shared, |w| w.member.ack(&acks));
            if let Err(e) = acked {
                log::warn!(
                    "group member {}: the last acks failed ({e}); those events come back",
                    shared.label
                );
            }
        }
        result
    }

    fn deliver_all(&mut self, shared: &Shared, acks: &mut Vec<DeliveryToken>) -> Result<()> {
        let max = self.config.group.max_in_flight;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if !acks.is_empty() {
                self.before_ack()?;
            }
            let Some(batch) =
                self.with_store(shared, |w| w.member.ack_and_fetch(acks, max, IDLE))?
            else {
                return Ok(());
            };
            acks.clear();
            // A batch that takes longer than half the ack wait: what is handled
            // is acked, and the rest's ack wait starts again, so that slow
            // handlers do not see their events handed to other members.
            let half = self.config.group.ack_wait / 2;
            let mut since = Instant::now();
            let tokens: Vec<DeliveryToken> = batch.iter().map(|d| d.token.clone()).collect();
            for (i, delivery) in batch.into_iter().enumerate() {
                if shared.stop.load(Ordering::SeqCst) {
                    // The rest go back to the group when this member leaves.
                    return Ok(());
                }
                if since.elapsed() >= half {
                    if !acks.is_empty() {
                        self.before_ack()?;
                        let done = std::mem::take(acks);
                        if self.with_store(shared, |w| w.member.ack(&done))?.is_none() {
                            return Ok(());
                        }
                    }
                    let rest = &tokens[i..];
                    if self.with_store(shared, |w| w.member.extend(rest))?.is_none() {
                        return Ok(());
                    }
                    since = Instant::now();
                }
                match call(&mut self.handler, &delivery) {
                    Ok(()) => {
                        shared.delivered.fetch_add(1, Ordering::SeqCst);
                        acks.push(delivery.token);
                    }
                    Err(reason) => {
                        shared.failed.fetch_add(1, Ordering::SeqCst);
                        log::warn!(
                            "group member {}: handler failed on event {} of topic {} (delivery {}): {reason}",
                            shared.label,
                            delivery.event.event.id,
                            delivery.token.topic,
                            delivery.deliveries
                        );
                        let token = delivery.token;
                        if self
                            .with_store(shared, |w| w.member.nack(&token, None, &reason))?
                            .is_none()
                        {
                            return Ok(());
                        }
                    }
                }
                let done = self.config.max_events;
                if done.is_some_and(|max| shared.delivered.load(Ordering::SeqCst) >= max) {
                    return Ok(());
                }
            }
        }
    }

    /// Runs the hook before acks; its failure stops the member without acking.
    fn before_ack(&mut self) -> Result<()> {
        (self.before_ack)().map_err(|e| {
            seed_event::Error::io(
                "finishing the handled events before their ack",
                std::io::Error::other(e.to_string()),
            )
            .into()
        })
    }

    /// Runs `op` until it succeeds or fails for good, waiting out an
    /// unavailable store; `None`: a stop was requested meanwhile.
    fn with_store<T>(
        &mut self,
        shared: &Shared,
        mut op: impl FnMut(&mut GroupWorker) -> seed_event::Result<T>,
    ) -> Result<Option<T>> {
        loop {
            let e = match op(self) {
                Ok(value) => {
                    if let Some(outage) = self.outage.take() {
                        log::info!(
                            "group member {}: {} is back after {:.1}s ({} failed attempts)",
                            shared.label,
                            self.store.describe(),
                            outage.started.elapsed().as_secs_f64(),
                            outage.attempts
                        );
                        shared.set_status(Status::Live);
                    }
                    return Ok(Some(value));
                }
                Err(e) => Error::from(e),
            };
            if !is_transient(&e) {
                return Err(e);
            }
            let (wait, status) = wait_out(
                &mut self.outage,
                e,
                &format!("group member {}", shared.label),
                &self.store.describe(),
                &self.reconnect,
                self.config.give_up_after,
            )?;
            shared.set_status(status);
            if shared.wait_for_stop(wait) {
                return Ok(None);
            }
        }
    }
}
