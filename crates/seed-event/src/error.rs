//! The one error type shared by every store and the bus.

use std::fmt;

use crate::{Cursor, Topic};

/// What went wrong, without the details: lets callers branch on the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something invalid; nothing was written.
    InvalidInput,
    /// A conditional write lost: a topic's last position was not the expected
    /// one, or a consumer's lock has another holder now.
    Conflict,
    /// The named thing (topic, consumer, model…) does not exist.
    NotFound,
    /// The operating system refused a file operation.
    Io,
    /// The backend (e.g. a Redis server) could not be reached in time.
    Unavailable,
    /// Stored data could not be decoded.
    Corrupt,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Conflict => "conflict",
            ErrorKind::NotFound => "not found",
            ErrorKind::Io => "I/O error",
            ErrorKind::Unavailable => "backend unavailable",
            ErrorKind::Corrupt => "corrupt data",
        })
    }
}

/// The error of every fallible operation in Seed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid input: `what` names the field or argument, `reason` what was expected.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// The field or argument that was wrong, e.g. `topic`.
        what: String,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// A conditional append found another last position than the expected one.
    #[error(
        "conflict on topic {topic}: expected last position {}, found {}",
        Position(*.expected),
        Position(*.actual)
    )]
    Conflict {
        /// The topic that was appended to.
        topic: Topic,
        /// The expected last position (`None`: an empty topic).
        expected: Option<Cursor>,
        /// The last position actually found (`None`: an empty topic).
        actual: Option<Cursor>,
    },
    /// A state change expected another version of the entity than its newest.
    #[error("{}", state_conflict(entity, *.expected, *.actual))]
    StateConflict {
        /// `TYPE/ID`.
        entity: String,
        /// The version the caller expected the entity to be at (0: no entity).
        expected: u64,
        /// The entity's newest version (0: no record).
        actual: u64,
    },
    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `appending to /var/seed/events/a.jsonl`.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The backend could not be reached or did not answer in time: a
    /// transient failure, worth retrying.
    #[error("backend unavailable: {context}")]
    Unavailable {
        /// What failed, naming the backend, e.g. `Redis at redis://host:6379/0: connection refused`.
        context: String,
        /// The backend client's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Stored data could not be decoded; `location` says where (topic and offset, key…).
    #[error("corrupt data at {location}: {reason}")]
    Corrupt {
        /// Where the bad data is, e.g. `topic a.b, byte 1234`.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A fenced commit came from a holder whose consumer lock was taken over
    /// since; nothing was written. Its kind is [`ErrorKind::Conflict`].
    #[error("consumer {consumer} is held by another holder now: the commit of lock generation {fence} was refused")]
    StaleLock {
        /// The consumer.
        consumer: String,
        /// The refused generation.
        fence: u64,
    },
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Conflict { .. } | Error::StateConflict { .. } => ErrorKind::Conflict,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::StaleLock { .. } => ErrorKind::Conflict,
        }
    }

    /// An [`Error::InvalidInput`] naming the field and what was expected.
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidInput { what: what.into(), reason: reason.into() }
    }

    /// An [`Error::Io`] with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    /// An [`Error::Unavailable`] saying what failed.
    pub fn unavailable(context: impl Into<String>) -> Error {
        Error::Unavailable { context: context.into(), source: None }
    }

    /// An [`Error::Unavailable`] saying what failed, keeping the client's error as its source.
    pub fn unavailable_from(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Unavailable { context: context.into(), source: Some(Box::new(source)) }
    }

    /// An [`Error::Corrupt`] saying where and what.
    pub fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt { location: location.into(), reason: reason.into() }
    }
}

/// The text of [`Error::StateConflict`]: expecting no entity, `already exists`.
fn state_conflict(entity: &str, expected: u64, actual: u64) -> String {
    if expected == 0 {
        format!("conflict: {entity} already exists")
    } else {
        format!("conflict: {entity} is at version {actual}, expected {expected}")
    }
}

/// A last position as the conflict message shows it: `none` for an empty topic.
struct Position(Option<Cursor>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(c) => c.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// The result type of Seed's libraries.
pub type Result<T, E = Error> = std::result::Result<T, E>;
