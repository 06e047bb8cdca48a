//! Connections: opening them within a bounded time and a small pool of idle
//! ones.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::io::tcp::TcpSettings;
use redis::{ConnectionLike, IntoConnectionInfo, RedisError};
use seed_event::support::lock;
use seed_event::{Error, Result};

use crate::error::{classify, is_lost, Origin};
use crate::{redact_url, Keys, RedisConfig};

/// Pooled connections idle longer than this are checked with `PING` before use,
/// so a server restart costs a reconnect instead of a failed command.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How long `CLIENT UNBLOCK` may take to connect and to answer: it runs
/// while somebody waits for a subscription to stop.
const UNBLOCK_WITHIN: Duration = Duration::from_millis(100);
/// How many times [`Shared::unblock_blocked`] sends `CLIENT UNBLOCK` while
/// the blocking command has not reached the server yet.
const UNBLOCK_TRIES: u32 = 100;

struct Idle {
    con: redis::Connection,
    since: Instant,
}

/// What every handle on one store shares: the client, the key names and the pool.
pub(crate) struct Shared {
    client: redis::Client,
    pub(crate) config: RedisConfig,
    /// The URL without its password, for messages.
    pub(crate) redacted: String,
    /// The password, to scrub from any message that might echo it.
    password: Option<String>,
    pub(crate) keys: Keys,
    pool: Mutex<Vec<Idle>>,
}

impl Shared {
    pub(crate) fn new(config: RedisConfig) -> Result<Shared> {
        let redacted = redact_url(&config.url);
        let info = config.url.as_str().into_connection_info().map_err(|e| {
            Error::invalid(
                "redis URL",
                format!(
                    "{redacted} is not a Redis URL like redis://user:password@host:6379/2 ({})",
                    e
                ),
            )
        })?;
        let password = info.redis_settings().password().map(str::to_string);
        // Small commands go out at once rather than waiting for Nagle's algorithm.
        let info = info.set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client =
            redis::Client::open(info).map_err(|e| Error::invalid("redis URL", e.to_string()))?;
        let keys = Keys::new(&config.prefix);
        Ok(Shared { client, config, redacted, password, keys, pool: Mutex::new(Vec::new()) })
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Idle>> {
        lock(&self.pool)
    }

    /// Opens a new connection, failing with [`Error::Unavailable`] within the
    /// connect timeout when the server does not answer (the `redis` crate
    /// bounds the connect and its hand-shake by it).
    pub(crate) fn connect(&self) -> Result<redis::Connection> {
        self.connect_within(self.config.connect_timeout)
    }

    /// [`Shared::connect`] within `limit` when that is shorter than the
    /// connect timeout: a caller's deadline bounds its reconnects.
    pub(crate) fn connect_within(&self, limit: Duration) -> Result<redis::Connection> {
        let timeout = self.config.connect_timeout.min(limit).max(Duration::from_millis(1));
        let con = self.client.get_connection_with_timeout(timeout).map_err(|e| {
            if is_lost(&e) {
                let text = self.error_text(&e);
                let context =
                    format!("cannot reach Redis at {} within {timeout:?}: {text}", self.redacted);
                if text == e.to_string() {
                    Error::unavailable_from(context, e)
                } else {
                    Error::unavailable(context)
                }
            } else {
                self.error(e)
            }
        })?;
        let command = Some(self.config.command_timeout.max(Duration::from_millis(1)));
        con.set_read_timeout(command).map_err(|e| self.error(e))?;
        con.set_write_timeout(command).map_err(|e| self.error(e))?;
        Ok(con)
    }

    /// Takes a connection from the pool (checking it if it sat idle) or opens one.
    pub(crate) fn take(&self) -> Result<(redis::Connection, bool)> {
        loop {
            let idle = self.pool().pop();
            let Some(idle) = idle else {
                return Ok((self.connect()?, false));
            };
            let mut con = idle.con;
            if idle.since.elapsed() < CHECK_IDLE_AFTER
                || redis::cmd("PING").query::<String>(&mut con).is_ok()
            {
                return Ok((con, true));
            }
        }
    }

    pub(crate) fn give_back(&self, con: redis::Connection) {
        let mut pool = self.pool();
        if pool.len() < self.config.max_idle_connections {
            pool.push(Idle { con, since: Instant::now() });
        }
    }

    /// Runs `f` on a pooled connection. When the connection fails (dropped,
    /// timed out), `f` runs once more on a fresh connection with its second
    /// argument `true`, so writes can make the retry idempotent.
    pub(crate) fn run<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection, bool) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let (mut con, _) = self.take()?;
        match f(&mut con, false) {
            Ok(v) => {
                self.give_back(con);
                Ok(v)
            }
            Err(e) if is_lost(&e) => {
                drop(con);
                log::debug!("retrying on a fresh connection: {}", self.error(e));
                let mut con = self.connect()?;
                let v = f(&mut con, true).map_err(|e| self.error(e))?;
                self.give_back(con);
                Ok(v)
            }
            Err(e) => {
                // A server error leaves the connection usable; a reply that
                // did not parse leaves it out of step.
                if con.is_open() && !e.is_unrecoverable_error() {
                    self.give_back(con);
                }
                Err(self.error(e))
            }
        }
    }

    /// Ends the `BLOCK` of the client `id` now (`CLIENT UNBLOCK`), on `con`
    /// (opened within [`UNBLOCK_WITHIN`] if `None`); false if the client was
    /// not blocked.
    pub(crate) fn unblock(&self, con: &mut Option<redis::Connection>, id: u64) -> Result<bool> {
        if con.is_none() {
            let fresh = self.connect_within(UNBLOCK_WITHIN)?;
            fresh.set_read_timeout(Some(UNBLOCK_WITHIN)).map_err(|e| self.error(e))?;
            *con = Some(fresh);
        }
        let Some(c) = con.as_mut() else { return Ok(false) };
        let unblocked = redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query::<i64>(c);
        unblocked.map(|n| n == 1).map_err(|e| {
            *con = None;
            self.error(e)
        })
    }

    /// Ends the `BLOCK` of the client whose id `blocked` holds (`None`: none
    /// blocks now), again shortly while its command has not arrived yet;
    /// `what` names the client in the log. On an error the client notices
    /// the caller's flag when its command ends.
    pub(crate) fn unblock_blocked(&self, blocked: &Mutex<Option<u64>>, what: &str) {
        let mut con = None;
        for _ in 0..UNBLOCK_TRIES {
            let Some(id) = *lock(blocked) else { return };
            match self.unblock(&mut con, id) {
                Ok(true) => return,
                Ok(false) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    log::debug!("cannot unblock {what}: {e}");
                    return;
                }
            }
        }
    }

    /// Maps a `redis` error to Seed's (see [`crate::error`]), without the password.
    pub(crate) fn error(&self, e: RedisError) -> Error {
        let origin = Origin { url: &self.redacted, prefix: &self.config.prefix };
        classify(&e).to_error(&origin, &e, &self.error_text(&e))
    }

    /// The text of a `redis` error, without the password.
    pub(crate) fn error_text(&self, e: &RedisError) -> String {
        self.scrub(&e.to_string())
    }

    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text.to_string(),
        }
    }
}
