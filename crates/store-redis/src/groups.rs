//! Work groups on Redis, over the shared group semantics
//! ([`seed_event::group_engine`]):
//!
//! - `<prefix>group:{<group>}:state` holds the group's [`GroupState`] as
//!   JSON, changed by optimistic transactions (`WATCH`, `GET`, the change,
//!   `MULTI`/`SET`/`EXEC`, again on a conflict) on the member's own
//!   connection;
//! - `<prefix>group:{<group>}:members` maps each live member's id to the
//!   `CLIENT ID` of its connection: a member whose connection is gone
//!   (`CLIENT LIST ID` empty, its process died) has its events delivered to
//!   the others at once; one whose host went silent keeps them until their
//!   ack wait passes;
//! - `<prefix>groups` is the set of group names.
//!
//! An idle member waits on a follower of the group's pattern (`XREAD
//! BLOCK`), for at most the time until the next pending event becomes due,
//! and at most 100 ms while other members hold events.
//!
//! These are not Redis Streams consumer groups: the state is one JSON value
//! rewritten by every change, which serves the semantics on every store
//! alike at the cost of throughput.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use seed_event::group_engine::{self, GroupState};
use seed_event::{
    ConsumerName, Delivery, DeliveryToken, Error, EventStore, FollowFrom, Follower, GroupBackend,
    GroupConfig, GroupInfo, GroupMember, Interrupt, Result, Start, Topic,
};

use crate::conn::Shared;
use crate::RedisStore;

/// How long an idle member waits at most while other members hold events.
const WATCH_OTHERS: Duration = Duration::from_millis(100);

struct GroupKeys {
    state: String,
    members: String,
    all: String,
}

fn keys(shared: &Shared, name: &str) -> GroupKeys {
    let prefix = &shared.config.prefix;
    GroupKeys {
        state: format!("{prefix}group:{{{name}}}:state"),
        members: format!("{prefix}group:{{{name}}}:members"),
        all: format!("{prefix}groups"),
    }
}

/// Records member `id` as the holder of connection `client` (its liveness).
fn register(
    con: &mut redis::Connection,
    keys: &GroupKeys,
    id: &str,
    client: i64,
    group: &str,
) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("HSET")
        .arg(&keys.members)
        .arg(id)
        .arg(client)
        .ignore()
        .cmd("SADD")
        .arg(&keys.all)
        .arg(group)
        .ignore()
        .query::<()>(con)
}

/// Whether the connection with `CLIENT ID` `client` is still open.
fn connected(con: &mut redis::Connection, client: &str) -> redis::RedisResult<bool> {
    let listed: String = redis::cmd("CLIENT").arg("LIST").arg("ID").arg(client).query(con)?;
    Ok(!listed.trim().is_empty())
}

/// The live members of a group (those whose connection is open).
fn live_members(shared: &Shared, keys: &GroupKeys) -> Result<Vec<String>> {
    shared.run(|con, _| {
        let members: Vec<(String, String)> = redis::cmd("HGETALL").arg(&keys.members).query(con)?;
        let mut live = Vec::new();
        for (id, client) in members {
            if connected(con, &client)? {
                live.push(id);
            }
        }
        live.sort();
        Ok(live)
    })
}

fn parse(name: &str, text: &str) -> Result<GroupState> {
    serde_json::from_str(text).map_err(|e| {
        Error::corrupt(format!("the state of group {name}"), format!("bad group state: {e}"))
    })
}

impl GroupBackend for RedisStore {
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>> {
        config.validate()?;
        let shared = self.shared.clone();
        let mut con = shared.connect()?;
        let client: i64 =
            redis::cmd("CLIENT").arg("ID").query(&mut con).map_err(|e| shared.error(e))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{member}-{}-{}-{client}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let follower = self.follow(&config.pattern, FollowFrom::start(Start::New))?;
        let interrupt = Arc::new(Wakeup {
            flag: AtomicBool::new(false),
            follower: std::sync::Mutex::new(follower.interrupter()),
        });
        let keys = keys(&shared, config.name.as_str());
        register(&mut con, &keys, &id, client, config.name.as_str())
            .map_err(|e| shared.error(e))?;
        let mut joined = RedisMember {
            store: self.clone(),
            shared,
            config: config.clone(),
            keys,
            id,
            con,
            lost: false,
            follower,
            interrupt,
            acks: Vec::new(),
        };
        joined.with_state(|_, _| Ok(false))?;
        Ok(Box::new(joined))
    }

    fn list(&self) -> Result<Vec<GroupInfo>> {
        let all = format!("{}groups", self.shared.config.prefix);
        let mut names: Vec<String> =
            self.shared.run(|con, _| redis::cmd("SMEMBERS").arg(&all).query(con))?;
        names.sort();
        let topics: Vec<Topic> = self.topics()?.into_iter().map(|t| t.topic).collect();
        let mut out = Vec::new();
        for name in names {
            let keys = keys(&self.shared, &name);
            let text: Option<String> =
                self.shared.run(|con, _| redis::cmd("GET").arg(&keys.state).query(con))?;
            let Some(text) = text else { continue };
            let state = parse(&name, &text)?;
            out.push(state.info(self, &name, live_members(&self.shared, &keys)?, &topics)?);
        }
        Ok(out)
    }

    fn delete(&self, name: &ConsumerName) -> Result<bool> {
        let keys = keys(&self.shared, name.as_str());
        let live = live_members(&self.shared, &keys)?;
        if !live.is_empty() {
            return Err(seed_event::group_in_use(name, &live));
        }
        let removed: i64 = self.shared.run(|con, _| {
            redis::pipe()
                .cmd("DEL")
                .arg(&keys.state)
                .arg(&keys.members)
                .cmd("SREM")
                .arg(&keys.all)
                .arg(name.as_str())
                .ignore()
                .query::<(i64,)>(con)
                .map(|(n,)| n)
        })?;
        Ok(removed > 0)
    }
}

/// A member's interrupt: a flag, and the wait of its current follower cut short.
struct Wakeup {
    flag: AtomicBool,
    follower: std::sync::Mutex<Option<Arc<dyn Interrupt>>>,
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let follower = seed_event::support::lock(&self.follower).clone();
        if let Some(f) = follower {
            f.interrupt();
        }
    }
}

/// How many appended events one wait reads at most; a wait that returns
/// this many means the follower fell behind while the member was busy, and
/// a new one takes its place (rather than decoding the backlog).
const WAKE_BATCH: usize = 4096;

struct RedisMember {
    store: RedisStore,
    shared: Arc<Shared>,
    config: GroupConfig,
    keys: GroupKeys,
    id: String,
    /// The member's own connection: its `CLIENT ID` says it is alive, and
    /// it carries the transactions.
    con: redis::Connection,
    /// The connection failed: the next change opens a new one first.
    lost: bool,
    follower: Box<dyn Follower>,
    interrupt: Arc<Wakeup>,
    /// Acks of the next change, applied before events past their ack wait
    /// are taken back (in every attempt until one is written), so an ack a
    /// little late for an event nobody else took yet still counts.
    acks: Vec<DeliveryToken>,
}

impl RedisMember {
    /// One attempt: `WATCH`, read, settle dead letters marked before, take
    /// back what is due, `op`, and write back if anything changed. `None`:
    /// another member changed the state meanwhile.
    fn attempt<T>(
        &mut self,
        op: &mut dyn FnMut(&mut GroupState, &RedisStore) -> Result<T>,
        changed: &dyn Fn(&T) -> bool,
    ) -> Result<Option<T>> {
        let shared = self.shared.clone();
        if self.lost {
            // A new connection, known by its CLIENT ID from now on. While the
            // member was away the others took its events back; its old
            // tokens are no longer its own and are ignored.
            let mut con = shared.connect()?;
            let client: i64 =
                redis::cmd("CLIENT").arg("ID").query(&mut con).map_err(|e| shared.error(e))?;
            register(&mut con, &self.keys, &self.id, client, self.config.name.as_str())
                .map_err(|e| shared.error(e))?;
            self.con = con;
            self.lost = false;
        }
        let con = &mut self.con;
        redis::cmd("WATCH").arg(&self.keys.state).query::<()>(con).map_err(|e| shared.error(e))?;
        let text: Option<String> =
            redis::cmd("GET").arg(&self.keys.state).query(con).map_err(|e| shared.error(e))?;
        let name = self.config.name.to_string();
        let (mut state, mut dirty) = match text {
            Some(text) => {
                let state = parse(&name, &text)?;
                state.check(&self.config)?;
                (state, false)
            }
            None => {
                let topics: Vec<Topic> =
                    self.store.topics()?.into_iter().map(|t| t.topic).collect();
                (GroupState::create(&self.store, &self.config, &topics)?, true)
            }
        };
        if state.has_dead() {
            // Marked and saved by an earlier change: appended unless there already.
            state.settle_dead(&self.store, &self.config)?;
            dirty = true;
        }
        let members = self.keys.members.clone();
        let me = self.id.clone();
        let mut verdicts = |m: &str| -> Result<bool> {
            if m == me {
                return Ok(true);
            }
            let client: Option<String> =
                redis::cmd("HGET").arg(&members).arg(m).query(con).map_err(|e| shared.error(e))?;
            match client {
                Some(c) => connected(con, &c).map_err(|e| shared.error(e)),
                None => Ok(false),
            }
        };
        if !self.acks.is_empty() {
            dirty |= state.ack(&me, &self.acks) > 0;
        }
        dirty |= state.reap(&self.config, group_engine::now(), &mut verdicts)?;
        let value = op(&mut state, &self.store)?;
        dirty |= changed(&value);
        if !dirty {
            redis::cmd("UNWATCH").query::<()>(con).map_err(|e| shared.error(e))?;
            return Ok(Some(value));
        }
        state.version += 1;
        let text = serde_json::to_string(&state)
            .map_err(|e| Error::invalid("group state", e.to_string()))?;
        let done: Option<()> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&self.keys.state)
            .arg(text)
            .ignore()
            .query(con)
            .map_err(|e| shared.error(e))?;
        if done.is_none() {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// Runs `op` on the group's state until its change is written without a
    /// conflict; dead letters it marked are appended afterwards (their marks
    /// written first) and removed.
    fn with_state<T: Changed>(
        &mut self,
        mut op: impl FnMut(&mut GroupState, &RedisStore) -> Result<T>,
    ) -> Result<T> {
        let changed = |v: &T| v.changed();
        let value = loop {
            match self.attempt(&mut op, &changed) {
                Ok(Some(value)) => break value,
                Ok(None) => {}
                Err(e) => {
                    // A lost connection is transient: the caller retries and
                    // the next change opens a new one.
                    if e.kind() == seed_event::ErrorKind::Unavailable {
                        self.lost = true;
                    }
                    return Err(e);
                }
            }
        };
        self.acks.clear();
        // Settle what this change marked (the marks are written).
        let mut marked = true;
        while marked {
            let mut none = |state: &mut GroupState, _: &RedisStore| Ok(state.has_dead());
            match self.attempt(&mut none, &|_| false) {
                Ok(Some(still)) => marked = still,
                Ok(None) => continue,
                Err(e) => {
                    if e.kind() == seed_event::ErrorKind::Unavailable {
                        self.lost = true;
                    }
                    return Err(e);
                }
            }
        }
        Ok(value)
    }

    fn fetch_now(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<Duration>)> {
        let id = self.id.clone();
        let config = self.config.clone();
        self.acks.extend_from_slice(acks);
        let fetched = self.with_state(|state, store| {
            let topics: Vec<Topic> = store.topics()?.into_iter().map(|t| t.topic).collect();
            let got = state.fetch(store, &config, &id, max, group_engine::now(), &topics)?;
            let mut wait = state.next_change().map(|at| {
                Duration::from_micros(
                    u64::try_from(at.saturating_sub(group_engine::now())).unwrap_or(0),
                )
            });
            if state.others_hold(&id) {
                wait = Some(wait.map_or(WATCH_OTHERS, |w| w.min(WATCH_OTHERS)));
            }
            Ok(Fetched { changed: !got.is_empty(), got, wait })
        })?;
        Ok((fetched.got, fetched.wait))
    }
}

/// What an operation tells about its change.
trait Changed {
    fn changed(&self) -> bool;
}

impl Changed for bool {
    fn changed(&self) -> bool {
        *self
    }
}

struct Fetched {
    changed: bool,
    got: Vec<Delivery>,
    wait: Option<Duration>,
}

impl Changed for Fetched {
    fn changed(&self) -> bool {
        self.changed
    }
}

impl GroupMember for RedisMember {
    fn id(&self) -> &str {
        &self.id
    }

    fn fetch(&mut self, max: usize, timeout: Duration) -> Result<Vec<Delivery>> {
        self.ack_and_fetch(&[], max, timeout)
    }

    fn ack_and_fetch(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut acks = acks;
        loop {
            let (got, due) = self.fetch_now(acks, max)?;
            acks = &[];
            if !got.is_empty() || max == 0 || self.interrupt.flag.swap(false, Ordering::SeqCst) {
                return Ok(got);
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(got);
            }
            let wait = due.map_or(left, |d| d.max(Duration::from_millis(1)).min(left));
            // Appended events only wake the member: the group hands them out.
            let woke = self.follower.next_batch(WAKE_BATCH, wait)?;
            if woke.len() >= WAKE_BATCH {
                self.follower =
                    self.store.follow(&self.config.pattern, FollowFrom::start(Start::New))?;
                *seed_event::support::lock(&self.interrupt.follower) = self.follower.interrupter();
            }
        }
    }

    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.acks.extend_from_slice(tokens);
        self.with_state(|_, _| Ok(false)).map(drop)
    }

    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()> {
        let (id, config) = (self.id.clone(), self.config.clone());
        self.with_state(|state, _| {
            Ok(state.nack(&config, &id, token, delay, error, group_engine::now()))
        })
        .map(drop)
    }

    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()> {
        let (id, config) = (self.id.clone(), self.config.clone());
        self.with_state(|state, _| Ok(state.in_progress(&config, &id, token, group_engine::now())))
            .map(drop)
    }

    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        let (id, config) = (self.id.clone(), self.config.clone());
        self.with_state(|state, _| {
            let now = group_engine::now();
            Ok(tokens.iter().fold(false, |c, t| state.in_progress(&config, &id, t, now) | c))
        })
        .map(drop)
    }

    fn interrupter(&self) -> Arc<dyn Interrupt> {
        self.interrupt.clone()
    }
}

impl Drop for RedisMember {
    fn drop(&mut self) {
        let id = self.id.clone();
        if let Err(e) = self.with_state(|state, _| Ok(state.leave(&id, group_engine::now()))) {
            log::warn!(
                "group {}: member {id} could not hand its events back ({e}); they come back after their ack wait",
                self.config.name
            );
        }
        let _ =
            redis::cmd("HDEL").arg(&self.keys.members).arg(&self.id).query::<Value>(&mut self.con);
    }
}
