//! The [`EventStore`] on Redis Streams: the same bus across machines.
//!
//! [`RedisStore`] keeps each topic in one Redis stream and passes the same
//! conformance suite as the file store, so the CLI and the bus can pick either
//! at run time (`Arc<dyn EventStore>`). It uses the synchronous `redis` client
//! (no async runtime).
//!
//! ```
//! use seed_event::{Event, EventStore, Query, Topic};
//! use store_redis::{RedisStore, testing::RedisServer};
//!
//! let server = RedisServer::start(); // a throwaway redis-server on a free port
//! let store = RedisStore::open(&server.url())?;
//! let topic = Topic::new("task.completed")?;
//! let payload = seed_event::parse_json_object("payload", r#"{"task_id": "abc"}"#)?;
//! let stored = store.append_owned(Event::new(topic.clone(), "fenrir", payload))?;
//! assert_eq!(store.query(&Query::topic(&topic))?, vec![stored]);
//!
//! // `append` borrows the event and returns its cursor; the caller keeps the event.
//! let next = Event::new(topic.clone(), "fenrir", seed_event::JsonObject::new());
//! let cursor = store.append(&next)?;
//! assert_eq!(store.last_cursor(&topic)?, Some(cursor));
//! # Ok::<(), seed_event::Error>(())
//! ```
//!
//! # Layout in Redis
//!
//! Keys live under a prefix (default `seed:`); every key of a topic carries
//! the topic as its Cluster hash tag, so they share one slot:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `seed:{<topic>}:s` | stream | one entry per event, field `e` = the event's JSON line |
//! | `seed:{<topic>}:m` | hash | `bytes`: the size of the topic's stored JSON lines |
//! | `seed:topics` | set | every topic ever appended to, named exactly |
//! | `seed:topics:new` | stream | one entry per topic created, so followers learn of new topics |
//! | `seed:consumers` | set | every consumer with a committed position |
//! | `seed:consumer:<name>` | hash | the consumer's position per topic |
//! | `seed:{state.<type>}:latest` | hash | entity id → `<version> <stream id> <layout> <event line>`: its newest record |
//! | `seed:{state.<type>}:v` | hash | `<entity id>\n<version>` → `<stream id> <bytes>`: its kept versions, each line in the stream (an older build's value, `<stream id> <event line>`, is read too; older builds cannot read these) |
//! | `seed:lock:<name>` | string | the consumer's lock: `<generation> <holder's CLIENT ID>`, with a TTL |
//! | `seed:lockgen:<name>` | string | the consumer's last lock generation |
//! | consumer group `<group>` on `seed:{<topic>}:s` | stream group | a work group's position in the topic and its pending entries (holder, delivery count, delivery time); consumers: the member ids and `~waiting` (parked entries) |
//! | `seed:groups` | set | every work group |
//! | `seed:group:{<group>}:meta` | hash | `pattern`, `ordering`, `dead_letter`, `start`, `created` (server ms), `redelivered`, `dead_lettered`, `moves` (changes of holder but `XREADGROUP`) |
//! | `seed:group:{<group>}:members` | hash | live member id → the `CLIENT ID` of its connection |
//! | `seed:group:{<group>}:due` | sorted set | `<topic>\n<id>` of a parked entry → the server time (ms) it may be delivered again |
//! | `seed:group:{<group>}:dead` | hash | `<topic>\n<id>` → `<deliveries>\n<error>`: entries whose dead letter is to be written |
//! | `seed:group:{<group>}:released` | hash | `<topic>\n<id>` → `1`: parked entries a member handed back unstarted |
//! | `seed:group:{<group>}:wake` | stream | one entry per change that may give a waiting member work (capped near 100) |
//!
//! # Work groups
//!
//! Work groups are Redis Streams consumer groups; see the `groups` module
//! for how fetch, ack, nack, ack waits, members that die and dead letters
//! map onto `XREADGROUP`, `XACK`, `XPENDING` and `XCLAIM`.
//!
//! # Entity states
//!
//! [`RedisStore`] is also a [`seed_event::StateBackend`]. A change of an
//! entity of type `T` is one script (atomic): it compares the entity's newest
//! version in the latest hash, appends the change event to the stream of
//! topic `state.T` (fields `e`, the event, and `k`, the entity id), sets the
//! latest and versions hashes, and drops the version that falls past
//! [`RedisConfig::state_history`] from the versions hash and the stream. A
//! retry after a lost reply finds its own event as the newest record and
//! answers with its id. An update with compare-and-set is one round trip:
//! the script reads the newest record and computes the new state itself
//! (status, data replaced or merged, metadata; the layout in the latest
//! value says where the state's fields sit in the line), writing the line
//! the client would have written; what it refuses (a conflict, a deleted
//! entity, a status move the life cycle forbids, a change that changes
//! nothing) it answers with the newest record, and the client reports it.
//! Reading an entity is one `HGET`; listing is `HSCAN`
//! pages; a watch learns of removed entries from the stream's
//! `max-deleted-entry-id` (Redis 7). A clear of a state topic keeps each
//! entity's newest entry, and removes the others from the stream and the
//! versions hash in one script, so history and past versions go with them.
//!
//! # Cursors and time
//!
//! An event's [`Cursor`] is its stream id `ms-seq`. Each entry gets the id
//! `<ms>-<next seq>` with `ms` at least its event's time (in a batch appended
//! by the fast path: the batch's latest event time) and at least the
//! stream's last id's milliseconds, so ids grow strictly (also across clears:
//! trimming keeps a stream's last id) and are never below the event's own
//! time, even when events arrive with out-of-order timestamps. `since`
//! therefore becomes an id range
//! (`XRANGE key <since ms>-0 +`) filtered by timestamp, which is exact; `until`
//! cannot bound ids (a late event may carry a later id), so it filters. Last-N
//! of one topic reads backwards (`XREVRANGE … COUNT`) and touches only what it
//! returns; last-N across several topics merges every selected topic from the
//! start and keeps a ring of N, which is exact under the merge order of
//! [`seed_event::merge_by_timestamp`] but reads everything selected.
//!
//! # Writes
//!
//! Conditional appends and a store's first append (or batch) to a topic run
//! a Lua script (atomic, one round trip): it registers the topic (`SADD`;
//! when the topic is new, an entry in `seed:topics:new`, atomically, so no
//! pattern follower misses it), optionally compares the stream's last entry
//! with the expected cursor (returning the trait's
//! [`seed_event::Error::Conflict`] with both positions), adds the entries and
//! counts their bytes. Scripts touch the topic set besides the topic's own
//! keys, so the store needs a single Redis server (or a primary with
//! replicas), not Redis Cluster.
//!
//! Later appends take fast paths without Lua. Concurrent `append` calls on
//! one store are combined (group commit): a waiting thread sends every queued
//! append in one round trip (`SADD` per topic, `XADD <ms>-*` per event,
//! `HINCRBY` of the bytes per topic; wrapped in `MULTI`/`EXEC` when it
//! carries more than one), so many threads publishing one event per call
//! share round trips like pipelined clients. Two such rounds may be in
//! flight at once, on two connections, for different topics: the server
//! works on one while the client hands out the replies of the other, and
//! the rounds of one topic reach the server in the order they were made. A batch is one `MULTI`…`EXEC`
//! transaction, written in 64 KiB chunks while the rest is serialized, in
//! which every entry gets the same milliseconds (the batch's latest event
//! time): `XADD` then accepts all of its entries or refuses all, so a batch is
//! never stored in part. The store raises each id's milliseconds to the
//! highest it has used in the topic; if another writer is ahead (`XADD`
//! refuses the id), the append falls back to the script, which continues from
//! the stream's top (the bytes the refused round counted are not counted again).
//!
//! Every append is safe to retry: when a connection fails before the reply
//! arrives, the store retries once on a fresh connection with the script,
//! which first looks for the event's id among the newest entries and answers
//! with the stored cursor if the first try landed. Nothing is stored twice.
//!
//! Clearing a topic trims its stream to nothing (the stream and its last id
//! stay, so cursors keep growing); clearing what is older than a time deletes
//! exactly the entries whose event timestamp is older, among those stored when
//! the clear began. Topics stay listed after a clear, with zero events.
//! `bytes` in [`TopicStats`] counts the stored JSON lines plus a newline each,
//! like the file store.
//!
//! # Connections and failures
//!
//! The URL carries host, port, db, user and password
//! (`redis://user:pass@host:6379/2`); [`redact_url`] hides the password, and
//! no error or log line carries it. Opening a connection, hand-shake
//! included, is bounded by [`RedisConfig::connect_timeout`], so an
//! unreachable or silent server fails with
//! [`seed_event::Error::Unavailable`] within it; commands have a read/write timeout of
//! [`RedisConfig::command_timeout`]. Connections are pooled; one idle for more
//! than a second is checked with `PING` before use. A command whose connection
//! fails is retried once on a fresh one (appends as described above; a clear
//! retried so may report fewer removals than it made). A command that fails
//! twice returns `Unavailable`; an append that failed so may or may not have
//! landed.
//!
//! What a `redis` error means is decided in one place: a lost connection
//! (refused, reset, broken, timed out, any I/O error) and a server that
//! cannot serve now (loading its data, running a long script, failing over,
//! a read-only replica, out of memory) are [`seed_event::Error::Unavailable`],
//! worth retrying later; refused credentials or permissions are
//! [`seed_event::Error::InvalidInput`]; a key of the store holding another
//! type, a failing script and a reply the store cannot read are
//! [`seed_event::Error::Corrupt`].
//!
//! A follower reads with `XREAD BLOCK` on a connection of its own (read timeout
//! longer than the block). When the connection drops it reconnects with
//! backoff and resumes after the last id it returned, so nothing is lost or
//! repeated; while the server stays unreachable `next_batch` returns
//! `Unavailable` once its timeout is spent, and the next call tries again. A
//! server restarted *without* its data has lost the events, of course; as ids
//! come from the events' times, later events still get ids above a
//! follower's position and reach it, except events timestamped before that
//! position. Run Redis with persistence (AOF) for the bus.
//!
//! # Retention
//!
//! [`RedisConfig::retention`] sets limits per topic (the newest N events, or
//! events younger than an age), as the file store does. They are applied
//! exactly by [`RedisStore::enforce_retention`], and by the appending store
//! every [`RETENTION_CHECK_EVERY`] events once a topic is a tenth past a limit
//! (by age, those automatic runs remove only entries whose id is older than
//! the cut-off, which spares the scan for late events). Entries are deleted
//! with their sizes taken off the byte count, rather than trimmed with
//! `XADD … MAXLEN ~`, which would leave the count wrong.

mod append;
mod codec;
mod conn;
mod error;
mod follow;
mod group_scripts;
mod groups;
mod lock;
mod read;
mod retention;
mod scripts;
mod states;

pub use retention::RETENTION_CHECK_EVERY;
pub use seed_event::{Limits, Retention};

#[cfg(feature = "testing")]
pub mod testing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use seed_event::{
    Clear, ConsumerName, Cursor, Error, Event, EventStore, EventStream, FollowFrom, Follower,
    Query, Result, StoredEvent, Timestamp, Topic, TopicPattern, TopicStats,
};

use crate::append::Attempt;
use crate::codec::{array, decode, first_id, int, raw_entries, strings, text, Keys};
use crate::conn::Shared;

/// How to reach Redis and where the store's keys live.
///
/// ```
/// use std::time::Duration;
/// let config = store_redis::RedisConfig::new("redis://127.0.0.1:6380/1")
///     .prefix("tests:")
///     .connect_timeout(Duration::from_millis(500));
/// assert_eq!(config.command_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user][:password@]host[:port][/db]` or `redis+unix:///path`.
    pub url: String,
    /// Prepended to every key; default `seed:`. Stores with different
    /// prefixes on one server do not see each other.
    pub prefix: String,
    /// How long to wait for a connection and the server's first answer.
    pub connect_timeout: Duration,
    /// How long one command may take before the server counts as unavailable.
    pub command_timeout: Duration,
    /// At most this many idle connections are kept for reuse.
    pub max_idle_connections: usize,
    /// Retention limits, applied exactly by [`RedisStore::enforce_retention`];
    /// and every [`RETENTION_CHECK_EVERY`] events a store appends to a topic,
    /// it trims the topic once it is a tenth past a limit.
    pub retention: Retention,
    /// How many versions of each entity the state store keeps (the newest;
    /// default [`seed_event::DEFAULT_STATE_HISTORY`]).
    pub state_history: u64,
}

impl Default for RedisConfig {
    fn default() -> RedisConfig {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".to_string(),
            prefix: "seed:".to_string(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(10),
            max_idle_connections: 16,
            retention: Retention::default(),
            state_history: seed_event::DEFAULT_STATE_HISTORY,
        }
    }
}

/// Shows the URL without its password.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("retention", &self.retention)
            .field("state_history", &self.state_history)
            .finish()
    }
}

impl RedisConfig {
    /// The defaults with another URL.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig { url: url.into(), ..RedisConfig::default() }
    }

    /// This configuration with another key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisConfig {
        self.prefix = prefix.into();
        self
    }

    /// This configuration with another connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisConfig {
        self.connect_timeout = timeout;
        self
    }

    /// This configuration with other retention limits.
    pub fn retention(mut self, retention: Retention) -> RedisConfig {
        self.retention = retention;
        self
    }

    /// This configuration keeping the newest `n` versions of each entity (at least 1).
    pub fn state_history(mut self, n: u64) -> RedisConfig {
        self.state_history = n.max(1);
        self
    }

    fn validate(&self) -> Result<()> {
        let rules = seed_event::support::NameRules {
            what: "key prefix",
            max_len: seed_event::support::MaxLen::Bytes(256),
            whitespace: false,
            refused: (&['{', '}'], "braces would change the keys' Cluster hash tag"),
            example: "seed:",
        };
        seed_event::support::check_name(&self.prefix, &rules)?;
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(Error::invalid("redis timeouts", "must be longer than zero"));
        }
        Ok(())
    }
}

/// Hides the password of a Redis URL: `redis://user:secret@host/2` becomes
/// `redis://user:***@host/2` (also `password=`/`pass=` query parameters).
///
/// ```
/// assert_eq!(store_redis::redact_url("redis://u:secret@h:6379/2"), "redis://u:***@h:6379/2");
/// assert_eq!(store_redis::redact_url("redis://:secret@h"), "redis://:***@h");
/// assert_eq!(store_redis::redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = head.to_string();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// An [`EventStore`] on a Redis server; clones share the connection pool.
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
    appender: Arc<append::Appender>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// How many entries one page of a read fetches.
const PAGE: usize = 512;

impl RedisStore {
    /// Connects to the server at `url` with the default prefix and timeouts.
    pub fn open(url: &str) -> Result<RedisStore> {
        RedisStore::open_with(RedisConfig::new(url))
    }

    /// Connects with `config`; fails with [`Error::Unavailable`] (naming the
    /// URL without its password) when the server does not answer in time.
    pub fn open_with(config: RedisConfig) -> Result<RedisStore> {
        config.validate()?;
        let shared = Shared::new(config)?;
        let _: String = shared.run(|con, _| redis::cmd("PING").query(con))?;
        Ok(RedisStore { shared: Arc::new(shared), appender: Arc::default() })
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// Every registered topic, sorted; a name that is not a valid topic is corrupt data.
    fn registered_topics(&self) -> Result<Vec<Topic>> {
        let key = &self.keys().topics;
        let reply: Value = self.shared.run(|con, _| redis::cmd("SMEMBERS").arg(key).query(con))?;
        let mut topics = strings(reply, &format!("Redis key {key}"))?
            .into_iter()
            .map(|name| {
                Topic::new(name.as_str()).map_err(|e| {
                    Error::corrupt(format!("Redis key {key}"), format!("member {name:?}: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        topics.sort();
        Ok(topics)
    }

    /// Removes `topic`'s events older than `before` (all without it). With
    /// `exact` false only entries whose id is below `before` are looked at
    /// (they are certainly older); late events further on stay.
    /// The entries of `doomed` that are not their entity's newest record.
    fn without_newest(
        &self,
        topic: &Topic,
        doomed: Vec<(Cursor, usize, StoredEvent)>,
    ) -> Result<Vec<(Cursor, usize, StoredEvent)>> {
        if doomed.is_empty() {
            return Ok(doomed);
        }
        let key = self.keys().latest(topic.as_str());
        let ids: Vec<String> = doomed
            .iter()
            .map(|(_, _, e)| seed_event::change_of(&e.event).map_or("", |c| c.0).to_string())
            .collect();
        let newest: Vec<Option<String>> =
            self.shared.run(|con, _| redis::cmd("HMGET").arg(&key).arg(&ids).query(con))?;
        Ok(doomed
            .into_iter()
            .zip(newest)
            .filter(|((cursor, _, _), latest)| {
                let at = latest.as_deref().and_then(|v| v.split(' ').nth(1));
                at.and_then(|id| codec::parse_id(id.as_bytes())) != Some(*cursor)
            })
            .map(|(d, _)| d)
            .collect())
    }

    fn clear_topic(&self, topic: &Topic, before: Option<Timestamp>, exact: bool) -> Result<u64> {
        let stream = self.keys().stream(topic.as_str());
        let meta = self.keys().meta(topic.as_str());
        // A state topic keeps each entity's newest record: it is scanned like a clear by time.
        let states = seed_event::entity_type_of(topic).is_some();
        if before.is_none() && !states {
            let n: i64 = self
                .shared
                .run(|con, _| scripts::CLEAR_TOPIC.key(&stream).key(&meta).invoke(con))?;
            return Ok(n.max(0) as u64);
        }
        // Only what was stored when the clear began; late events may sit anywhere, so scan.
        let Some(mut end) = self.last_cursor(topic)? else {
            return Ok(0);
        };
        if let (false, Some(before)) = (exact, before) {
            let below = before.unix_millis().max(0) as u64;
            if below == 0 {
                return Ok(0);
            }
            end = end.min(Cursor::new(below - 1, u64::MAX));
        }
        let mut start = "-".to_string();
        let mut removed = 0u64;
        loop {
            let reply: Value = self.shared.run(|con, _| {
                redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&start)
                    .arg(end.to_string())
                    .arg("COUNT")
                    .arg(PAGE)
                    .query(con)
            })?;
            let page = raw_entries(reply, &stream)?;
            let full = page.len() == PAGE;
            let Some(last) = page.last().map(|e| e.cursor) else {
                break;
            };
            let mut doomed = Vec::new();
            for raw in page {
                let cursor = raw.cursor;
                let size = raw.line.as_ref().map_or(0, |l| l.len() + 1);
                match decode(raw, topic, &stream) {
                    Ok(e) if before.is_none_or(|b| e.event.timestamp < b) => {
                        doomed.push((cursor, size, e))
                    }
                    Ok(_) => {}
                    Err(e) => log::warn!("clear skips an entry it cannot read: {e}"),
                }
            }
            if states {
                doomed = self.without_newest(topic, doomed)?;
                if !doomed.is_empty() {
                    removed += self.delete_state_entries(topic, &doomed)?;
                }
            } else {
                let doomed: Vec<(Cursor, usize)> =
                    doomed.into_iter().map(|(c, s, _)| (c, s)).collect();
                if !doomed.is_empty() {
                    removed += self.delete_entries(&stream, &meta, &doomed)?;
                }
            }
            if !full || last >= end {
                break;
            }
            start = format!("({last}");
        }
        Ok(removed)
    }
}

impl EventStore for RedisStore {
    fn describe(&self) -> String {
        format!("Redis store at {} (prefix {})", self.shared.redacted, self.shared.config.prefix)
    }

    fn append(&self, event: &Event) -> Result<Cursor> {
        let cursor = self.appender.append(&self.shared, event)?;
        self.after_append(&event.topic, 1);
        Ok(cursor)
    }

    fn append_batch(&self, topic: &Topic, events: &[Event]) -> Result<Vec<Cursor>> {
        seed_event::support::check_batch_topic(topic, events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.appender.append_batch(&self.shared, topic, events)?;
        self.after_append(topic, ids.len() as u64);
        Ok(ids)
    }

    fn append_expecting(&self, event: &Event, expected: Option<Cursor>) -> Result<Cursor> {
        let single = std::slice::from_ref(event);
        let ids = append::script_append(
            &self.shared,
            &event.topic,
            single,
            seed_event::support::AppendCondition::LastIs(expected),
            Attempt::Fresh,
        )?;
        let cursor = append::first(ids)?;
        self.appender.learn(&event.topic, cursor);
        self.after_append(&event.topic, 1);
        Ok(cursor)
    }

    fn last_cursor(&self, topic: &Topic) -> Result<Option<Cursor>> {
        let key = self.keys().stream(topic.as_str());
        let reply: Value = self.shared.run(|con, _| {
            redis::cmd("XREVRANGE").arg(&key).arg("+").arg("-").arg("COUNT").arg(1).query(con)
        })?;
        first_id(reply, &key)
    }

    fn read(&self, query: &Query) -> Result<EventStream<'_>> {
        read::read(self, query)
    }

    fn count_after(&self, topic: &Topic, cursor: Cursor) -> Result<u64> {
        const CHUNK: usize = 10_000;
        let key = self.keys().stream(topic.as_str());
        if cursor == Cursor::new(u64::MAX, u64::MAX) {
            return Ok(0);
        }
        let mut start = format!("({cursor}");
        let mut total = 0u64;
        loop {
            let reply: Value = self
                .shared
                .run(|con, _| scripts::COUNT_FROM.key(&key).arg(&start).arg(CHUNK).invoke(con))?;
            let mut items = array(reply).unwrap_or_default().into_iter();
            let n = items.next().as_ref().and_then(int).unwrap_or(0).max(0) as u64;
            total += n;
            match items.next().and_then(text) {
                Some(last) if n == CHUNK as u64 => start = format!("({last}"),
                _ => return Ok(total),
            }
        }
    }

    fn follow(&self, pattern: &TopicPattern, from: FollowFrom) -> Result<Box<dyn Follower>> {
        Ok(Box::new(follow::RedisFollower::start(self.shared.clone(), pattern.clone(), from)?))
    }

    fn load_consumer(&self, name: &ConsumerName) -> Result<BTreeMap<Topic, Cursor>> {
        let key = self.keys().consumer(name.as_str());
        let pairs: Vec<(String, String)> =
            self.shared.run(|con, _| redis::cmd("HGETALL").arg(&key).query(con))?;
        pairs
            .into_iter()
            .map(|(topic, cursor)| {
                let bad = |e: Error| {
                    Error::corrupt(format!("Redis key {key}, field {topic:?}"), e.to_string())
                };
                Ok((Topic::new(topic.as_str()).map_err(bad)?, cursor.parse().map_err(bad)?))
            })
            .collect()
    }

    fn commit_consumer(&self, name: &ConsumerName, topic: &Topic, cursor: Cursor) -> Result<()> {
        let keys = self.keys();
        let key = keys.consumer(name.as_str());
        self.shared.run(|con, _| {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&key)
                .arg(topic.as_str())
                .arg(cursor.to_string())
                .ignore()
                .cmd("SADD")
                .arg(&keys.consumers)
                .arg(name.as_str())
                .ignore()
                .query::<()>(con)
        })
    }

    fn lock_consumer(
        &self,
        name: &ConsumerName,
        request: &seed_event::LockRequest,
    ) -> Result<Option<Box<dyn seed_event::ConsumerLock>>> {
        lock::lock(&self.shared, name, request)
    }

    fn groups(&self) -> Option<&dyn seed_event::GroupBackend> {
        Some(self)
    }

    fn commit_fenced(
        &self,
        name: &ConsumerName,
        fence: seed_event::Fence,
        topic: &Topic,
        cursor: Cursor,
    ) -> Result<()> {
        lock::commit_fenced(&self.shared, name, fence, topic, cursor)
    }

    fn consumers(&self) -> Result<Vec<ConsumerName>> {
        let key = &self.keys().consumers;
        let reply: Value = self.shared.run(|con, _| redis::cmd("SMEMBERS").arg(key).query(con))?;
        let mut names = strings(reply, &format!("Redis key {key}"))?
            .into_iter()
            .map(|n| {
                ConsumerName::new(n.as_str())
                    .map_err(|e| Error::corrupt(format!("Redis key {key}"), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn topics(&self) -> Result<Vec<TopicStats>> {
        let topics = self.registered_topics()?;
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let replies: Vec<Value> = self.shared.run(|con, _| {
            let mut pipe = redis::pipe();
            for topic in &topics {
                let stream = keys.stream(topic.as_str());
                pipe.cmd("XLEN").arg(&stream);
                pipe.cmd("XRANGE").arg(&stream).arg("-").arg("+").arg("COUNT").arg(1);
                pipe.cmd("XREVRANGE").arg(&stream).arg("+").arg("-").arg("COUNT").arg(1);
                pipe.cmd("HGET").arg(keys.meta(topic.as_str())).arg("bytes");
            }
            pipe.query(con)
        })?;
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(topics.len());
        for topic in topics {
            let stream = keys.stream(topic.as_str());
            let mut next = || replies.next().unwrap_or(Value::Nil);
            let events = int(&next()).unwrap_or(0).max(0) as u64;
            let edge = |reply: Value| -> Result<Option<StoredEvent>> {
                raw_entries(reply, &stream)?
                    .into_iter()
                    .next()
                    .map(|raw| decode(raw, &topic, &stream))
                    .transpose()
            };
            let first = edge(next())?;
            let last = edge(next())?;
            let bytes_reply = next();
            let bytes = if events == 0 { 0 } else { int(&bytes_reply).unwrap_or(0).max(0) as u64 };
            out.push(TopicStats {
                topic: topic.clone(),
                events,
                bytes,
                first: first.as_ref().map(|e| e.event.timestamp),
                last: last.as_ref().map(|e| e.event.timestamp),
                last_cursor: last.map(|e| e.cursor),
            });
        }
        Ok(out)
    }

    fn clear(&self, what: &Clear) -> Result<u64> {
        let topics = match &what.topic {
            Some(t) => vec![t.clone()],
            None => self.registered_topics()?,
        };
        let mut removed = 0;
        for topic in &topics {
            removed += self.clear_topic(topic, what.before, true)?;
        }
        Ok(removed)
    }

    fn states(&self) -> Option<&dyn seed_event::StateBackend> {
        Some(self)
    }
}
