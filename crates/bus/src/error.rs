//! The bus's error type: the store's errors plus what only the bus can report.

use std::time::Duration;

use seed_event::{ConsumerName, ErrorKind, Topic};
use uuid::Uuid;

/// What a handler returns when it could not handle an event.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler returns: `Ok` once the event is handled.
pub type HandlerResult = Result<(), HandlerError>;

/// Everything that can go wrong in the bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed or rejected the input (see [`seed_event::Error`]).
    #[error(transparent)]
    Store(#[from] seed_event::Error),
    /// Another subscriber holds the durable consumer's lock.
    #[error("consumer {name} is held by another subscriber")]
    ConsumerBusy {
        /// The consumer asked for.
        name: ConsumerName,
    },
    /// Another subscriber took the durable consumer's lock; this one stopped
    /// before committing again.
    #[error("consumer {name} lost its lock to another subscriber and stopped")]
    LeaseLost {
        /// The consumer whose lock was lost.
        name: ConsumerName,
    },
    /// A durable consumer's handler failed on the same event too many times.
    #[error(
        "handler failed {attempts} times on event {event_id} of topic {topic}, stopped: {reason}"
    )]
    HandlerFailed {
        /// The event the handler kept failing on (it stays uncommitted).
        event_id: Uuid,
        /// The event's topic.
        topic: Topic,
        /// How many times it was tried.
        attempts: u32,
        /// The last failure (an error's message or a panic's).
        reason: String,
    },
    /// A subscription's store stayed unavailable for longer than its
    /// [`give_up_after`](crate::SubscribeConfig::give_up_after).
    #[error("gave up on {store}: unavailable for {:.1}s: {source}", waited.as_secs_f64())]
    StoreUnavailable {
        /// The store, as its `describe` says (a Redis URL without its password).
        store: String,
        /// How long it had been unavailable.
        waited: Duration,
        /// The last error it returned.
        source: seed_event::Error,
    },
    /// The bus was closed; nothing more can be done with it.
    #[error("the event bus is closed")]
    Closed,
}

impl Error {
    /// Whether the caller passed something invalid (nothing was written).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::Store(e) if e.kind() == ErrorKind::InvalidInput)
    }

    /// The store error's kind, when this is a store error.
    pub fn store_kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Store(e) | Error::StoreUnavailable { source: e, .. } => Some(e.kind()),
            _ => None,
        }
    }
}

/// The result type of the bus.
pub type Result<T, E = Error> = std::result::Result<T, E>;
