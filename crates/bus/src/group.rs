//! Work-group members that run a handler: [`EventBus::join_group`](crate::EventBus::join_group).
//!
//! The member's thread fetches what its handler gets through in about
//! [`HORIZON`] (measured on the batches before, starting at one event and
//! at most doubling per batch; never more than `max_in_flight`), calls the
//! handler on each, and acks the ones it returned `Ok` for together with
//! its next fetch (one step under the store's group lock); an `Err` (or a
//! panic) nacks the event at once, so it comes back after the group's
//! backoff or is dead-lettered. So a member never sits on more work than it
//! gets through soon while others idle: once a batch has taken
//! [`RELEASE_AFTER`] (or a quarter of the ack wait), the events it has not
//! started go back to the group ([`GroupMember::release`]) for any member
//! to take at once. A keeper thread watches the handler: a call that runs
//! that long has the batch's unstarted events released from under it, and
//! the event being handled has its ack wait started again every half ack
//! wait while the call runs, so a long handler keeps its event. A stop
//! request cuts the member's wait short; the events it fetched and did not
//! handle go back to the group when it leaves (not counted as failures),
//! and the handled ones are acked first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::time::{Duration, Instant};

use seed_event::support::{lock, wait, wait_timeout};
use seed_event::{Cancel, Delivery, DeliveryToken, EventStore, GroupConfig, GroupMember};

use crate::outage::{is_transient, wait_out, Outage, Reconnect, Status};
use crate::subscription::{panic_text, Shared};
use crate::{Error, HandlerResult, Result};

/// How long one fetch waits; a stop request cuts it short.
const IDLE: Duration = Duration::from_secs(60);

/// How much work (handler time, as measured) a member fetches at once.
pub const HORIZON: Duration = Duration::from_millis(20);

/// After how long a batch's unstarted events go back to the group (at most
/// a quarter of the ack wait).
pub const RELEASE_AFTER: Duration = Duration::from_millis(50);

/// A member's handler: `Ok` acks the delivery, an error nacks it.
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
    /// Of an exclusive group: how long to stand by for the active member to
    /// go before failing with [`Error::ConsumerBusy`] (`Duration::MAX`: no limit).
    pub standby: Duration,
    /// Ends the standby early.
    pub standby_cancel: Cancel,
}

impl WorkerConfig {
    /// A member of `group`.
    pub fn new(group: GroupConfig) -> WorkerConfig {
        WorkerConfig {
            group,
            member: "worker".to_string(),
            max_events: None,
            give_up_after: None,
            standby: Duration::ZERO,
            standby_cancel: Cancel::new(),
        }
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

    /// This member of an exclusive group standing by up to `wait`, until
    /// `cancel` is cancelled.
    pub fn standby(mut self, wait: Duration, cancel: Cancel) -> WorkerConfig {
        self.standby = wait;
        self.standby_cancel = cancel;
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
    /// Shared with the member's keeper, which extends and releases while
    /// the handler runs (the thread holds it only in store calls).
    pub(crate) member: Arc<Mutex<Box<dyn GroupMember>>>,
    pub(crate) handler: GroupHandler,
    pub(crate) before_ack: BeforeAck,
    pub(crate) config: WorkerConfig,
    pub(crate) reconnect: Reconnect,
    pub(crate) outage: Option<Outage>,
}

/// The batch a member's thread is handling, as its keeper sees it.
struct Batch {
    /// Which batch (the high half of [`Keeper::progress`]).
    generation: u32,
    tokens: Arc<[DeliveryToken]>,
    fetched: Instant,
    active: bool,
    stop: bool,
    /// The keeper waits for a batch without a timeout (then a batch wakes it).
    idle: bool,
}

/// What the member's thread and its keeper share.
struct Keeper {
    batch: Mutex<Batch>,
    changed: Condvar,
    /// The batch's generation, the index of the delivery being handled
    /// and, lowest, whether the rest after it was released: the thread
    /// moves to the next delivery and the keeper releases the rest by
    /// compare-and-swap, so exactly one of them wins.
    progress: AtomicU64,
    /// Cleared when the store cannot release deliveries.
    can_release: std::sync::atomic::AtomicBool,
}

fn progress(generation: u32, index: usize, released: bool) -> u64 {
    (u64::from(generation) << 32) | ((index as u64 & 0x7fff_ffff) << 1) | u64::from(released)
}

fn index_of(progress: u64) -> usize {
    ((progress >> 1) & 0x7fff_ffff) as usize
}

impl Keeper {
    fn new() -> Keeper {
        Keeper {
            batch: Mutex::new(Batch {
                generation: 0,
                tokens: Arc::from(Vec::new()),
                fetched: Instant::now(),
                active: false,
                stop: false,
                idle: false,
            }),
            changed: Condvar::new(),
            progress: AtomicU64::new(0),
            can_release: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// A batch fetched at `fetched` starts, with its first delivery.
    fn begin(&self, tokens: Arc<[DeliveryToken]>, fetched: Instant) -> u32 {
        let mut b = lock(&self.batch);
        b.generation = b.generation.wrapping_add(1);
        b.tokens = tokens;
        b.fetched = fetched;
        b.active = true;
        self.progress.store(progress(b.generation, 0, false), Ordering::SeqCst);
        let (generation, idle) = (b.generation, b.idle);
        drop(b);
        // A keeper that is not idle looks at its next tick: no wake-up per batch.
        if idle {
            self.changed.notify_one();
        }
        generation
    }

    fn end(&self) {
        lock(&self.batch).active = false;
    }

    fn stop(&self) {
        lock(&self.batch).stop = true;
        self.changed.notify_one();
    }

    /// Moves from delivery `i - 1` to `i`; false when the rest was released.
    fn advance(&self, generation: u32, i: usize) -> bool {
        let from = progress(generation, i - 1, false);
        self.progress
            .compare_exchange(
                from,
                progress(generation, i, false),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Marks the deliveries after `i` released; false when they were already.
    fn mark_released(&self, generation: u32, i: usize) -> bool {
        let from = progress(generation, i, false);
        self.progress
            .compare_exchange(
                from,
                progress(generation, i, true),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    /// Takes a release mark back (the store could not release).
    fn unmark(&self, generation: u32, i: usize) {
        self.progress.store(progress(generation, i, false), Ordering::SeqCst);
    }

    /// The keeper's thread: while a batch is handled, releases its
    /// unstarted deliveries once one call has run `release_after`, and
    /// extends the ack wait of the delivery being handled every half ack
    /// wait (and of the unstarted ones too where the store cannot release).
    fn run(&self, member: &Mutex<Box<dyn GroupMember>>, ack_wait: Duration, label: &str) {
        let release_after = RELEASE_AFTER.min(ack_wait / 4);
        let tick = release_after.max(Duration::from_millis(1));
        let mut b = lock(&self.batch);
        loop {
            while !b.active && !b.stop {
                b.idle = true;
                b = wait(&self.changed, b);
                b.idle = false;
            }
            if b.stop {
                return;
            }
            let (generation, tokens, mut extended) = (b.generation, b.tokens.clone(), b.fetched);
            let mut seen = self.progress.load(Ordering::SeqCst);
            let mut since = Instant::now();
            loop {
                b = wait_timeout(&self.changed, b, tick).0;
                if b.stop || !b.active || b.generation != generation {
                    break;
                }
                let now = self.progress.load(Ordering::SeqCst);
                if now >> 1 != seen >> 1 {
                    (seen, since) = (now, Instant::now());
                    continue;
                }
                let i = index_of(now);
                let can_release = self.can_release.load(Ordering::SeqCst);
                let release = now & 1 == 0 && can_release && i + 1 < tokens.len();
                let release = release && since.elapsed() >= release_after;
                let extend = extended.elapsed() >= ack_wait / 2;
                if !release && !extend {
                    continue;
                }
                // The thread holds the member only in a store call: try again next tick.
                let mut m = match member.try_lock() {
                    Ok(m) => m,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => continue,
                };
                if release && self.mark_released(generation, i) {
                    match m.release(&tokens[i + 1..]) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.can_release.store(false, Ordering::SeqCst);
                            self.unmark(generation, i);
                        }
                        Err(e) => {
                            log::warn!("group member {label}: handing back unstarted events failed ({e}); they stay with it");
                            self.unmark(generation, i);
                        }
                    }
                }
                if extend {
                    let released = self.progress.load(Ordering::SeqCst) & 1 == 1;
                    let keep = match released || self.can_release.load(Ordering::SeqCst) {
                        true => &tokens[i..=i],
                        false => &tokens[i..],
                    };
                    match m.extend(keep) {
                        Ok(()) => extended = Instant::now(),
                        Err(e) => log::warn!("group member {label}: extending the ack wait of the event being handled failed ({e})"),
                    }
                }
            }
        }
    }
}

/// How a batch ended.
enum Handled {
    /// The member is to stop.
    Stop,
    /// Its end, or its unstarted rest released: how many events were handled.
    Some(usize),
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
        *lock(&shared.interrupt) = Some(lock(&self.member).interrupter());
        let keeper = Arc::new(Keeper::new());
        let keeper_thread = {
            let (keeper, member) = (keeper.clone(), self.member.clone());
            let (ack_wait, label) = (self.config.group.ack_wait, shared.label.clone());
            std::thread::Builder::new()
                .name("group-keeper".into())
                .spawn(move || keeper.run(&member, ack_wait, &label))
                .map_err(|e| seed_event::Error::io("starting a group member's keeper thread", e))?
        };
        let mut acks: Vec<DeliveryToken> = Vec::new();
        let result = self.deliver_all(shared, &keeper, &mut acks);
        keeper.stop();
        let _ = keeper_thread.join();
        // Whatever was handled is acked before leaving, also after a stop.
        if !acks.is_empty() && result.is_ok() {
            self.before_ack()?;
            let acked = self.with_store(shared, |w| lock(&w.member).ack(&acks));
            if let Err(e) = acked {
                log::warn!(
                    "group member {}: the last acks failed ({e}); those events come back",
                    shared.label
                );
            }
        }
        result
    }

    fn deliver_all(
        &mut self,
        shared: &Shared,
        keeper: &Keeper,
        acks: &mut Vec<DeliveryToken>,
    ) -> Result<()> {
        let max = self.config.group.max_in_flight;
        let release_after = RELEASE_AFTER.min(self.config.group.ack_wait / 4);
        // How many events the handler gets through in HORIZON, as measured.
        let mut want = 1usize;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if !acks.is_empty() {
                self.before_ack()?;
            }
            let Some(batch) = self
                .with_store(shared, |w| lock(&w.member).ack_and_fetch(acks, want.min(max), IDLE))?
            else {
                return Ok(());
            };
            acks.clear();
            if batch.is_empty() {
                continue;
            }
            let started = Instant::now();
            let tokens: Arc<[DeliveryToken]> = batch.iter().map(|d| d.token.clone()).collect();
            let generation = keeper.begin(tokens.clone(), started);
            let outcome =
                self.handle_batch(shared, keeper, generation, batch, &tokens, release_after, acks);
            keeper.end();
            let handled = match outcome? {
                Handled::Stop => return Ok(()),
                Handled::Some(n) => n,
            };
            let per_event = started.elapsed().as_nanos() / handled.max(1) as u128;
            let fit = (HORIZON.as_nanos() / per_event.max(1)).max(1);
            want = usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .min(want.saturating_mul(2))
                .clamp(1, max);
        }
    }

    /// Handles a batch in order until it ends, its unstarted rest is
    /// released, or the member is to stop.
    #[allow(clippy::too_many_arguments)]
    fn handle_batch(
        &mut self,
        shared: &Shared,
        keeper: &Keeper,
        generation: u32,
        batch: Vec<Delivery>,
        tokens: &[DeliveryToken],
        release_after: Duration,
        acks: &mut Vec<DeliveryToken>,
    ) -> Result<Handled> {
        let started = Instant::now();
        let mut handled = 0;
        for (i, delivery) in batch.into_iter().enumerate() {
            if shared.stop.load(Ordering::SeqCst) {
                // The rest go back to the group when this member leaves.
                return Ok(Handled::Stop);
            }
            if i > 0 {
                if started.elapsed() >= release_after
                    && keeper.can_release.load(Ordering::SeqCst)
                    && keeper.mark_released(generation, i - 1)
                {
                    // Many calls that together took long: hand the rest back.
                    let rest = &tokens[i..];
                    match self.with_store(shared, |w| lock(&w.member).release(rest))? {
                        None => return Ok(Handled::Stop),
                        Some(true) => break,
                        Some(false) => {
                            keeper.can_release.store(false, Ordering::SeqCst);
                            keeper.unmark(generation, i - 1);
                        }
                    }
                }
                if !keeper.advance(generation, i) {
                    // The keeper is releasing the rest: once it let go of
                    // the member it is done; if the store could not, go on.
                    drop(lock(&self.member));
                    if !keeper.advance(generation, i) {
                        break;
                    }
                }
            }
            handled += 1;
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
                        .with_store(shared, |w| lock(&w.member).nack(&token, None, &reason))?
                        .is_none()
                    {
                        return Ok(Handled::Stop);
                    }
                }
            }
            let done = self.config.max_events;
            if done.is_some_and(|max| shared.delivered.load(Ordering::SeqCst) >= max) {
                return Ok(Handled::Stop);
            }
        }
        Ok(Handled::Some(handled))
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
                Err(seed_event::Error::StaleLock { .. }) => {
                    // An exclusive group's lock went to another member, which is active now.
                    return Err(Error::LeaseLost { name: self.config.group.name.clone() });
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
