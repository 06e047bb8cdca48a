//! Work groups: many members share the events of a pattern, each event
//! handled by one member at a time, with acks, redelivery, dead letters and
//! optional per-topic order. A store that has them returns a
//! [`GroupBackend`] from [`EventStore::groups`](crate::EventStore::groups).
//!
//! # Semantics (every store)
//!
//! - A group has a name, a topic pattern and a start, fixed when the group is
//!   created (the first join), and survives restarts of all its members.
//! - Each event of a matching topic (but the group's dead-letter topic) is
//!   delivered to one member at a time. It is *in flight* until the member
//!   acks it, nacks it (it comes back after a delay: by default
//!   [`GroupConfig::backoff`] doubling per delivery, capped at the ack wait),
//!   or its ack wait passes ([`GroupMember::in_progress`] restarts it). A
//!   member that leaves (dropped, or its process died) has its in-flight
//!   events delivered to the others at once.
//! - Every delivery carries its count. A failure (a nack, an ack wait that
//!   passed, a member that died holding it) of an event delivered
//!   `max_deliveries` times dead-letters it: it is appended to the group's
//!   dead-letter topic as `{"event", "topic", "cursor", "deliveries",
//!   "error", "group"}` and leaves the group, so that after a crash between
//!   the two it is in exactly one place.
//! - A member holds at most `max_in_flight` events.
//! - [`GroupOrdering::PerTopic`]: at most one event per topic is in flight
//!   across the group, so each topic is handled in order.
//! - At least once: only an ack removes an event; duplicates come only from
//!   events in flight at a crash or past their ack wait.
//! - An *exclusive* group ([`GroupConfig::exclusive`], fixed when the group
//!   is created) has one active member at a time: a member joins through
//!   [`join_group`], which first takes the store's consumer lock of the
//!   group's name ([`EventStore::lock_consumer`]) and holds it while the
//!   member lives; the others stand by in that wait, and the one that takes
//!   the lock after the active member left or died gets its in-flight
//!   events at once and the rest in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    ConsumerLock, ConsumerName, Cursor, Error, EventStore, Interrupt, LockRequest, Result, Start,
    StoredEvent, Topic, TopicPattern,
};

/// How the events of one topic may be spread over the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupOrdering {
    /// Events of one topic may be in flight at several members at once.
    #[default]
    None,
    /// At most one event per topic is in flight across the group: each topic
    /// is handled strictly in order, different topics in parallel.
    PerTopic,
}

/// A group and how one member takes part in it; [`GroupConfig::new`] gives the defaults.
///
/// ```
/// use std::time::Duration;
/// use seed_event::{ConsumerName, GroupConfig, TopicPattern};
/// let config = GroupConfig::new(ConsumerName::new("billing")?, TopicPattern::new("task.>")?)?
///     .ack_wait(Duration::from_secs(10));
/// assert_eq!(config.dead_letter.as_str(), "dead.billing");
/// assert_eq!(config.max_deliveries, 5);
/// # Ok::<(), seed_event::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The group's name.
    pub name: ConsumerName,
    /// The topics whose events the group shares (fixed when the group is created).
    pub pattern: TopicPattern,
    /// Where a new group starts (ignored when it exists).
    pub start: Start,
    /// Per topic, the last event already handled: a new group starts after
    /// it in that topic, whatever `start` says (ignored when it exists).
    pub start_after: BTreeMap<Topic, Cursor>,
    /// How long an event stays with a member without an ack (30 s).
    pub ack_wait: Duration,
    /// Deliveries after which a failure dead-letters the event (5).
    pub max_deliveries: u32,
    /// Events a member holds at most (256).
    pub max_in_flight: usize,
    /// Per-topic order or none (fixed when the group is created).
    pub ordering: GroupOrdering,
    /// One active member at a time, the others standing by (fixed when the
    /// group is created); its members join through [`join_group`].
    pub exclusive: bool,
    /// Where dead letters go (`dead.<name>`).
    pub dead_letter: Topic,
    /// The delay of a nack after the first delivery; it doubles per delivery,
    /// capped at the ack wait (1 s).
    pub backoff: Duration,
}

impl GroupConfig {
    /// Group `name` over `pattern`, from new events, with the defaults; fails
    /// when `dead.<name>` is not a topic (then use [`GroupConfig::with_dead_letter`]).
    pub fn new(name: ConsumerName, pattern: TopicPattern) -> Result<GroupConfig> {
        let dead_letter = Topic::new(format!("dead.{name}")).map_err(|e| {
            Error::invalid(
                "group name",
                format!("the dead-letter topic dead.{name} is not a topic ({e}); expected a name that is one topic token, or a dead-letter topic given"),
            )
        })?;
        Ok(GroupConfig::with_dead_letter(name, pattern, dead_letter))
    }

    /// Group `name` over `pattern` with the defaults and the dead-letter topic `dead_letter`.
    pub fn with_dead_letter(
        name: ConsumerName,
        pattern: TopicPattern,
        dead_letter: Topic,
    ) -> GroupConfig {
        GroupConfig {
            name,
            pattern,
            start: Start::New,
            start_after: BTreeMap::new(),
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 256,
            ordering: GroupOrdering::None,
            exclusive: false,
            dead_letter,
            backoff: Duration::from_secs(1),
        }
    }

    /// This group starting at `start` when it is created.
    pub fn start(mut self, start: Start) -> GroupConfig {
        self.start = start;
        self
    }

    /// This group starting after `positions` in their topics when it is created.
    pub fn start_after(mut self, positions: BTreeMap<Topic, Cursor>) -> GroupConfig {
        self.start_after = positions;
        self
    }

    /// This group exclusive (one active member at a time) or not.
    pub fn exclusive(mut self, exclusive: bool) -> GroupConfig {
        self.exclusive = exclusive;
        self
    }

    /// This member's events staying with it `ack_wait` without an ack.
    pub fn ack_wait(mut self, ack_wait: Duration) -> GroupConfig {
        self.ack_wait = ack_wait;
        self
    }

    /// Dead-lettering after `n` deliveries.
    pub fn max_deliveries(mut self, n: u32) -> GroupConfig {
        self.max_deliveries = n;
        self
    }

    /// This member holding at most `n` events.
    pub fn max_in_flight(mut self, n: usize) -> GroupConfig {
        self.max_in_flight = n;
        self
    }

    /// This group's ordering.
    pub fn ordering(mut self, ordering: GroupOrdering) -> GroupConfig {
        self.ordering = ordering;
        self
    }

    /// Dead letters going to `topic`.
    pub fn dead_letter(mut self, topic: Topic) -> GroupConfig {
        self.dead_letter = topic;
        self
    }

    /// Nacked events coming back after `first`, doubling per delivery.
    pub fn backoff(mut self, first: Duration) -> GroupConfig {
        self.backoff = first;
        self
    }

    /// Checks the numbers: an ack wait, deliveries and in-flight events of at
    /// least one. (The dead-letter topic may match the pattern: it is never
    /// dispatched to the group.)
    pub fn validate(&self) -> Result<()> {
        if self.ack_wait.is_zero() {
            return Err(Error::invalid("ack wait", "must be positive, e.g. 30s"));
        }
        if self.max_deliveries == 0 {
            return Err(Error::invalid("max deliveries", "must be at least 1, e.g. 5"));
        }
        if self.max_in_flight == 0 {
            return Err(Error::invalid("max in flight", "must be at least 1, e.g. 256"));
        }
        Ok(())
    }

    /// The delay of a nack of an event delivered `deliveries` times:
    /// `backoff` doubled per delivery after the first, capped at the ack wait.
    pub fn nack_delay(&self, deliveries: u32) -> Duration {
        let factor = 1u32 << deliveries.saturating_sub(1).min(20);
        self.backoff.saturating_mul(factor).min(self.ack_wait)
    }
}

/// Names one delivery of one event, for [`GroupMember::ack`] and the like.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeliveryToken {
    /// The event's topic.
    pub topic: Topic,
    /// The event's cursor.
    pub cursor: Cursor,
    /// Which delivery of the event (1 = the first).
    pub delivery: u32,
}

/// One event handed to a member.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The event, with its topic and cursor.
    pub event: StoredEvent,
    /// How many times it has been delivered, this time included (1 = the first).
    pub deliveries: u32,
    /// What acks, nacks or extends this delivery.
    pub token: DeliveryToken,
}

/// What [`GroupBackend::list`] reports of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// The pattern it follows.
    pub pattern: String,
    /// The ids of its live members.
    pub members: Vec<String>,
    /// Whether it is exclusive: one active member, the others standing by
    /// (those are not members until they become active).
    pub exclusive: bool,
    /// Of an exclusive group, its active member (its one live member).
    pub active: Option<String>,
    /// Events delivered and not yet acked.
    pub in_flight: u64,
    /// Events waiting: not yet delivered, or waiting to be delivered again.
    pub waiting: u64,
    /// Deliveries after the first.
    pub redelivered: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
}

/// The work groups of a store: see the [module documentation](self).
pub trait GroupBackend: Send + Sync {
    /// Joins (and, the first time, creates) the group `config.name` as a
    /// member called `member` (a label; the member's id adds what makes it unique).
    ///
    /// Fails with [`Error::InvalidInput`] when the group exists with another
    /// pattern, ordering or mode (exclusive or not). It does not take an
    /// exclusive group's lock: [`join_group`] does.
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>>;

    /// Every group with its figures, sorted by name.
    fn list(&self) -> Result<Vec<GroupInfo>>;

    /// Removes group `name` (its positions, pending events and counters);
    /// false when there is no such group. Refused with
    /// [`Error::InvalidInput`] while it has live members.
    fn delete(&self, name: &ConsumerName) -> Result<bool>;
}

/// The refusal of a join whose mode (exclusive or shared) is not the group's.
pub fn mode_mismatch(name: &ConsumerName, exclusive: bool) -> Error {
    let mode = |e: bool| if e { "exclusive" } else { "shared" };
    Error::invalid(
        "group",
        format!(
            "group {name} is {}, not {}; expected the same mode or another group name",
            mode(exclusive),
            mode(!exclusive)
        ),
    )
}

/// Who is active in an exclusive group whose live members are `members`.
pub fn active_member(exclusive: bool, members: &[String]) -> Option<String> {
    match members {
        [only] if exclusive => Some(only.clone()),
        _ => None,
    }
}

/// Joins the group `config.name` as `member`; for an exclusive group, first
/// takes its lock, waiting as `request` says (`None`: another member kept
/// it until the wait ran out or was cancelled). Fails with
/// [`Error::InvalidInput`] on a store without work groups.
pub fn join_group(
    store: &dyn EventStore,
    config: &GroupConfig,
    member: &str,
    request: &LockRequest,
) -> Result<Option<Box<dyn GroupMember>>> {
    let groups = backend(store)?;
    if !config.exclusive {
        return groups.join(config, member).map(Some);
    }
    match GroupLock::acquire(store, config, request)? {
        Some(held) => held.join(groups, config, member).map(Some),
        None => Ok(None),
    }
}

/// The store's work groups, or the error of a store without them.
fn backend(store: &dyn EventStore) -> Result<&dyn GroupBackend> {
    store.groups().ok_or_else(|| {
        Error::invalid(
            "group",
            format!("{} has no work groups; expected a store with them", store.describe()),
        )
    })
}

/// The lock of an exclusive group, taken before its member joins: see
/// [`join_group`], which is this in one step.
pub struct GroupLock {
    name: ConsumerName,
    lock: Box<dyn ConsumerLock>,
}

impl GroupLock {
    /// Takes the lock of group `config.name` (the store's consumer lock of
    /// that name), waiting as `request` says; `None` when another member kept it.
    pub fn acquire(
        store: &dyn EventStore,
        config: &GroupConfig,
        request: &LockRequest,
    ) -> Result<Option<GroupLock>> {
        config.validate()?;
        let lock = store.lock_consumer(&config.name, request)?;
        Ok(lock.map(|lock| GroupLock { name: config.name.clone(), lock }))
    }

    /// Joins as `member` of `groups` (`config` must name the locked group), the
    /// member holding the lock while it lives.
    pub fn join(
        self,
        groups: &dyn GroupBackend,
        config: &GroupConfig,
        member: &str,
    ) -> Result<Box<dyn GroupMember>> {
        if config.name != self.name || !config.exclusive {
            return Err(Error::invalid(
                "group",
                format!(
                    "the lock of group {} holds for joining it as an exclusive group, not {} (exclusive: {})",
                    self.name, config.name, config.exclusive
                ),
            ));
        }
        let inner = groups.join(config, member)?;
        let id = inner.id().to_string();
        Ok(Box::new(ExclusiveMember { inner: Some(inner), id, held: self }))
    }
}

/// A member of an exclusive group: the group's member and the lock it holds.
/// Once the store finds the lock taken by another holder, its next fetch
/// leaves the group (handing back what it holds) and fails with
/// [`Error::StaleLock`]; a fetch that got events confirms the lock first
/// ([`ConsumerLock::confirm`]), so a holder the store replaced does not go
/// on handing them out until its lock's renewal fails. Dropping it leaves
/// the group, then lets go of the lock.
struct ExclusiveMember {
    inner: Option<Box<dyn GroupMember>>,
    id: String,
    held: GroupLock,
}

impl ExclusiveMember {
    fn inner(&mut self) -> Result<&mut Box<dyn GroupMember>> {
        let held = &self.held;
        self.inner.as_mut().ok_or_else(|| Error::StaleLock {
            consumer: held.name.to_string(),
            fence: held.lock.fence().0,
        })
    }

    /// Leaves the group once the lock is lost: another member is active.
    fn check(&mut self) -> Result<()> {
        if self.held.lock.is_lost() {
            self.inner = None;
        }
        self.inner().map(drop)
    }

    /// Hands out `fetched` if the store confirms the lock; else leaves the
    /// group, handing them back to whoever holds it now. A store that cannot
    /// be asked (unavailable) does not take them away: the lock's renewal
    /// decides then, as before the fetch.
    fn confirmed(&mut self, fetched: Vec<Delivery>) -> Result<Vec<Delivery>> {
        if fetched.is_empty() {
            return Ok(fetched);
        }
        match self.held.lock.confirm() {
            Ok(false) => {
                self.inner = None;
                self.inner().map(|_| Vec::new())
            }
            Ok(true) | Err(_) => Ok(fetched),
        }
    }
}

impl Drop for ExclusiveMember {
    fn drop(&mut self) {
        // The member leaves first, so that whoever takes the lock next
        // finds its events handed back.
        self.inner = None;
    }
}

impl GroupMember for ExclusiveMember {
    fn id(&self) -> &str {
        &self.id
    }

    fn fetch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        self.check()?;
        let fetched = self.inner()?.fetch(max, timeout)?;
        self.confirmed(fetched)
    }

    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        self.inner()?.ack(tokens)
    }

    fn ack_and_fetch(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>> {
        if self.held.lock.is_lost() {
            // What was handled is acked before leaving: fewer duplicates.
            self.inner()?.ack(acks)?;
            self.check()?;
        }
        let fetched = self.inner()?.ack_and_fetch(acks, max, timeout)?;
        self.confirmed(fetched)
    }

    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()> {
        self.inner()?.nack(token, delay, error)
    }

    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()> {
        self.inner()?.in_progress(token)
    }

    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        self.inner()?.extend(tokens)
    }

    fn release(&mut self, tokens: &[DeliveryToken]) -> Result<bool> {
        self.inner()?.release(tokens)
    }

    fn interrupter(&self) -> Arc<dyn Interrupt> {
        match &self.inner {
            Some(inner) => inner.interrupter(),
            None => Arc::new(NoWait),
        }
    }
}

/// The interrupter of a member that left: it never waits.
struct NoWait;

impl Interrupt for NoWait {
    fn interrupt(&self) {}
}

/// The refusal of [`GroupBackend::delete`] for a group with live members.
pub fn group_in_use(name: &ConsumerName, members: &[String]) -> Error {
    Error::invalid(
        "group",
        format!(
            "group {name} has {} live member(s) ({}); expected a group whose members all stopped",
            members.len(),
            members.join(", ")
        ),
    )
}

/// One member of a group; dropping it leaves the group, and its in-flight
/// events go to the other members at once.
pub trait GroupMember: Send {
    /// The member's id, unique in the group.
    fn id(&self) -> &str;

    /// Up to `max` events for this member (fewer if it holds `max_in_flight`
    /// already), waiting up to `timeout` for the first one (`Duration::MAX`:
    /// without limit, until interrupted); empty when the time ran out.
    fn fetch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>>;

    /// Acks deliveries: they leave the group. A token that is no longer this
    /// member's (its ack wait passed and the event went elsewhere) is ignored.
    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()>;

    /// [`ack`](GroupMember::ack) then [`fetch`](GroupMember::fetch), in one
    /// step where the store can.
    fn ack_and_fetch(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>> {
        self.ack(acks)?;
        self.fetch(max, timeout)
    }

    /// A failed delivery: the event comes back after `delay` (`None`: the
    /// group's backoff), or is dead-lettered with `error` after its last delivery.
    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()>;

    /// The member is still at it: the ack wait of the delivery starts again.
    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()>;

    /// [`in_progress`](GroupMember::in_progress) for each of `tokens`, in
    /// one step where the store can.
    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        tokens.iter().try_for_each(|t| self.in_progress(t))
    }

    /// Hands back deliveries this member did not start handling: they go to
    /// the other members at once, and are not counted as deliveries (nor
    /// failures). False when the store cannot (then they stay with the
    /// member, which handles them or lets their ack wait pass).
    fn release(&mut self, tokens: &[DeliveryToken]) -> Result<bool> {
        let _ = tokens;
        Ok(false)
    }

    /// Cuts a [`fetch`](GroupMember::fetch) wait short from another thread.
    fn interrupter(&self) -> Arc<dyn Interrupt>;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::{Event, Fence, MemoryStore};

    /// A lock that is lost once its flag is set.
    struct Flagged(Arc<AtomicBool>);

    impl ConsumerLock for Flagged {
        fn fence(&self) -> Fence {
            Fence(1)
        }
        fn is_lost(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A store with `events` events in topic `NAME.t`, the exclusive group
    /// `NAME` over it, and member `a` of it holding `lock`.
    fn exclusive_member(
        name: &str,
        events: usize,
        lock: Box<dyn ConsumerLock>,
    ) -> (MemoryStore, GroupConfig, Box<dyn GroupMember>) {
        let store = MemoryStore::new();
        let t = Topic::new(format!("{name}.t")).unwrap();
        for _ in 0..events {
            store.append(&Event::new(t.clone(), "test", Default::default())).unwrap();
        }
        let name = ConsumerName::new(name).unwrap();
        let config = GroupConfig::new(name.clone(), TopicPattern::new(t.as_str()).unwrap())
            .unwrap()
            .start(Start::Beginning)
            .exclusive(true);
        let member = GroupLock { name, lock }.join(&store, &config, "a").unwrap();
        (store, config, member)
    }

    #[test]
    fn a_member_whose_lock_is_lost_leaves_and_hands_back_what_it_holds() {
        let lost = Arc::new(AtomicBool::new(false));
        let (store, config, mut a) = exclusive_member("lost", 3, Box::new(Flagged(lost.clone())));
        let got = a.fetch(3, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 3);
        lost.store(true, Ordering::SeqCst);
        let err = a.ack_and_fetch(&[got[0].token.clone()], 3, Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::StaleLock { .. }), "{err}");
        assert!(a.fetch(3, Duration::ZERO).is_err(), "it stays out");
        // The new holder gets the two it held unacked; the acked one stays acked.
        let mut b = GroupBackend::join(&store, &config, "b").unwrap();
        let again = b.fetch(3, Duration::ZERO).unwrap();
        let cursors: Vec<_> = again.iter().map(|d| d.token.cursor).collect();
        assert_eq!(cursors, vec![got[1].token.cursor, got[2].token.cursor]);
    }

    /// A lock the store took away without its holder knowing yet: only
    /// `confirm` (asking the store) finds out.
    struct Silent;

    impl ConsumerLock for Silent {
        fn fence(&self) -> Fence {
            Fence(1)
        }
        fn is_lost(&self) -> bool {
            false
        }
        fn confirm(&self) -> Result<bool> {
            Ok(false)
        }
    }

    #[test]
    fn a_fetch_that_cannot_confirm_the_lock_hands_its_events_back() {
        let (store, config, mut a) = exclusive_member("silent", 2, Box::new(Silent));
        let err = a.fetch(2, Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::StaleLock { .. }), "{err}");
        let mut b = GroupBackend::join(&store, &config, "b").unwrap();
        let again = b.fetch(2, Duration::ZERO).unwrap();
        assert_eq!(again.len(), 2, "both events went back to the group");
    }
}
