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

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    ConsumerName, Cursor, Error, Interrupt, Result, Start, StoredEvent, Topic, TopicPattern,
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
    /// How long an event stays with a member without an ack (30 s).
    pub ack_wait: Duration,
    /// Deliveries after which a failure dead-letters the event (5).
    pub max_deliveries: u32,
    /// Events a member holds at most (256).
    pub max_in_flight: usize,
    /// Per-topic order or none (fixed when the group is created).
    pub ordering: GroupOrdering,
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
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 256,
            ordering: GroupOrdering::None,
            dead_letter,
            backoff: Duration::from_secs(1),
        }
    }

    /// This group starting at `start` when it is created.
    pub fn start(mut self, start: Start) -> GroupConfig {
        self.start = start;
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
    /// pattern or ordering.
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>>;

    /// Every group with its figures, sorted by name.
    fn list(&self) -> Result<Vec<GroupInfo>>;

    /// Removes group `name` (its positions, pending events and counters);
    /// false when there is no such group. Refused with
    /// [`Error::InvalidInput`] while it has live members.
    fn delete(&self, name: &ConsumerName) -> Result<bool>;
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
