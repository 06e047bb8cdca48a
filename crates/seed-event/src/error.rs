//! The one error type shared by every store and the bus.

use std::fmt;

/// What went wrong, without the details: lets callers branch on the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something invalid; nothing was written.
    InvalidInput,
    /// A conditional append lost: the topic's last position was not the expected one.
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
    #[error("conflict on topic {topic}: expected last position {expected}, found {actual}")]
    Conflict {
        /// The topic that was appended to.
        topic: String,
        /// The expected last position (`none` for an empty topic).
        expected: String,
        /// The last position actually found (`none` for an empty topic).
        actual: String,
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
    /// The backend could not be reached or did not answer in time.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded; `location` says where (topic and offset, key…).
    #[error("corrupt data at {location}: {reason}")]
    Corrupt {
        /// Where the bad data is, e.g. `topic a.b, byte 1234`.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Io { .. } => ErrorKind::Io,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
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

    /// An [`Error::Corrupt`] saying where and what.
    pub fn corrupt(location: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt { location: location.into(), reason: reason.into() }
    }
}

/// The result type of Seed's libraries.
pub type Result<T, E = Error> = std::result::Result<T, E>;
