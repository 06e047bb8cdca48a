//! What a failure of the `redis` crate means for Seed: the one place that
//! sorts `redis` errors into [`seed_event::Error`]s.

use redis::{ErrorKind, RedisError, ServerErrorKind};
use seed_event::Error;

/// The classes of `redis` errors the store tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection failed: refused, reset, broken pipe, closed, timed out
    /// or any other I/O error. The connection is not reused and a command is
    /// retried once on a fresh one; [`Error::Unavailable`].
    Lost,
    /// The server answers but cannot serve now (loading its data, running a
    /// long script, failing over, a read-only replica, out of memory, unable
    /// to persist, out of client slots); [`Error::Unavailable`].
    Busy,
    /// The server refused the credentials or the user's permissions, or the
    /// URL asks for something the client cannot do: retrying cannot help;
    /// [`Error::InvalidInput`].
    Refused,
    /// A key under the store's prefix holds another type than the store
    /// writes; [`Error::Corrupt`].
    WrongType,
    /// Anything else: a failing script, a reply that does not parse or has
    /// another type than expected, a command the server does not know, an
    /// aborted transaction; [`Error::Corrupt`].
    Unexpected,
}

/// Sorts `e` into its [`Class`].
pub(crate) fn classify(e: &RedisError) -> Class {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Class::Lost;
    }
    match e.kind() {
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => Class::Refused,
        ErrorKind::Server(kind) => match kind {
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly => Class::Busy,
            ServerErrorKind::NoPerm => Class::Refused,
            ServerErrorKind::ResponseError
                if e.detail().is_some_and(|d| d.starts_with("max number of clients")) =>
            {
                Class::Busy
            }
            _ => Class::Unexpected,
        },
        ErrorKind::Extension => match server_code(e).as_deref() {
            Some("BUSY" | "OOM" | "MISCONF" | "NOREPLICAS") => Class::Busy,
            Some("NOAUTH" | "WRONGPASS") => Class::Refused,
            Some("WRONGTYPE") => Class::WrongType,
            _ => Class::Unexpected,
        },
        _ => Class::Unexpected,
    }
}

/// The code of a server error (`WRONGTYPE`, `OOM`…), also of the first
/// error in a failed pipeline, whose `code()` the `redis` crate leaves empty.
fn server_code(e: &RedisError) -> Option<String> {
    e.code().map(str::to_string).or_else(|| {
        let errors = e.clone().into_server_errors()?;
        errors.first().map(|(_, first)| first.code().to_string())
    })
}

/// Whether `e` means the connection is gone (and so must not be reused).
pub(crate) fn is_lost(e: &RedisError) -> bool {
    classify(e) == Class::Lost
}

/// Where an error happened, for its message.
pub(crate) struct Origin<'a> {
    /// The server's URL without its password.
    pub(crate) url: &'a str,
    /// The store's key prefix.
    pub(crate) prefix: &'a str,
}

impl Class {
    /// Seed's error for `e`, of this class; `text` is its message without the
    /// password. A transient error keeps `e` as its source unless its own text
    /// held the password.
    pub(crate) fn to_error(self, origin: &Origin<'_>, e: &RedisError, text: &str) -> Error {
        let url = origin.url;
        match self {
            Class::Lost | Class::Busy => {
                let context = format!("Redis at {url}: {text}");
                if e.to_string() == text {
                    Error::unavailable_from(context, e.clone())
                } else {
                    Error::unavailable(context)
                }
            }
            Class::Refused => {
                Error::invalid("redis credentials", format!("Redis at {url} refused them: {text}"))
            }
            Class::WrongType => Error::corrupt(
                format!("Redis at {url} (prefix {:?})", origin.prefix),
                format!("a key of the store holds another type: {text}"),
            ),
            Class::Unexpected => Error::corrupt(
                format!("Redis at {url}"),
                format!("the server's answer is not what the store expects: {text}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use seed_event::ErrorKind as Seed;

    use super::*;

    /// The error of a RESP error reply such as `-LOADING …`.
    fn reply(line: &str) -> RedisError {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    fn io(kind: io::ErrorKind) -> RedisError {
        RedisError::from(io::Error::new(kind, "test"))
    }

    /// An error the `redis` crate raises itself.
    fn client(kind: ErrorKind, text: &'static str) -> RedisError {
        RedisError::from((kind, text))
    }

    #[test]
    fn every_kind_of_redis_error_maps_to_one_class_and_seed_kind() {
        use io::ErrorKind as Io;
        let lost = vec![
            io(Io::ConnectionRefused),
            io(Io::TimedOut),
            io(Io::WouldBlock),
            io(Io::BrokenPipe),
            io(Io::ConnectionReset),
            io(Io::UnexpectedEof),
            io(Io::Other),
        ];
        let busy = vec![
            reply("LOADING Redis is loading the dataset in memory"),
            reply("BUSY Redis is busy running a script"),
            reply("READONLY You can't write against a read only replica."),
            reply("OOM command not allowed when used memory > 'maxmemory'."),
            reply("MISCONF Redis is configured to save RDB snapshots"),
            reply("ERR max number of clients reached"),
            reply("MASTERDOWN Link with MASTER is down"),
        ];
        let refused = vec![
            client(ErrorKind::AuthenticationFailed, "Password authentication failed"),
            reply("NOAUTH Authentication required."),
            reply("WRONGPASS invalid username-password pair or user is disabled."),
            reply("NOPERM User u has no permissions to run the 'xadd' command"),
        ];
        let wrong_type = vec![reply("WRONGTYPE Operation against a key holding the wrong kind")];
        let unexpected = vec![
            reply("ERR user_script:1: Script attempted to access nonexistent global variable"),
            reply("ERR unknown command 'XADD'"),
            reply("EXECABORT Transaction discarded because of previous errors."),
            client(ErrorKind::Parse, "invalid reply"),
            client(ErrorKind::UnexpectedReturnType, "expected a string"),
        ];
        let origin = Origin { url: "redis://:***@h:6379/0", prefix: "seed:" };
        for (class, seed, errors) in [
            (Class::Lost, Seed::Unavailable, lost),
            (Class::Busy, Seed::Unavailable, busy),
            (Class::Refused, Seed::InvalidInput, refused),
            (Class::WrongType, Seed::Corrupt, wrong_type),
            (Class::Unexpected, Seed::Corrupt, unexpected),
        ] {
            for e in errors {
                assert_eq!(classify(&e), class, "{e}");
                let error = class.to_error(&origin, &e, &e.to_string());
                assert_eq!(error.kind(), seed, "{e}: {error}");
                if seed == Seed::Unavailable {
                    let source = std::error::Error::source(&error).expect("the redis error");
                    assert_eq!(source.to_string(), e.to_string());
                    let scrubbed = class.to_error(&origin, &e, "***");
                    assert!(std::error::Error::source(&scrubbed).is_none(), "{e}");
                }
                assert!(error.to_string().contains(origin.url), "{error}");
            }
        }
    }
}
