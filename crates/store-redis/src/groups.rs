//! Work groups on Redis Streams consumer groups.
//!
//! A work group `g` is one consumer group named `g` on the stream of every
//! matching topic (`<prefix>{<topic>}:s`), with each member a consumer (its
//! id), so the server keeps what was handed out and to whom: the group's
//! last-delivered id per stream is its position, and the pending entries
//! list (PEL) holds each in-flight event with its holder, its delivery
//! count and the time of its delivery. Beside them, under
//! `<prefix>group:{<g>}:`:
//!
//! - `meta` (hash): pattern, ordering, dead-letter topic, start, exclusive, created
//!   (server ms), and the counters `redelivered` and `dead_lettered`;
//! - `members` (hash): live member id → the `CLIENT ID` of its connection;
//! - `due` (sorted set): `<topic>\n<id>` → the server time (ms) from which
//!   an entry waiting to be delivered again may go out. Such an entry is
//!   *parked*: held in the PEL by the consumer `~waiting`, so it counts for
//!   nobody's ack wait or `max_in_flight`, and keeps its delivery count (a
//!   PEL has no not-before time, hence the set);
//! - `dead` (hash): `<topic>\n<id>` → `<deliveries>\n<error>`: parked
//!   entries whose last delivery failed, until their dead letter is written;
//! - `released` (hash): `<topic>\n<id>` → `1`: parked entries a member
//!   handed back unstarted, until they are delivered again;
//! - `wake` (stream, ~100 entries): one entry per change that may give a
//!   waiting member work without an append (a nack, a member leaving or
//!   found dead, an ack under per-topic order);
//! - `<prefix>groups` (set) names every group.
//!
//! Every change is one Lua script ([`crate::group_scripts`]), so members
//! racing in several processes never see half of one, and every deadline is
//! the server's `TIME`:
//!
//! - join: the first member creates the group (`XGROUP CREATE` at `0`, `$`
//!   or the start time's id on each matching stream); a topic created later
//!   gets the consumer group at `0` from the first member that learns of it
//!   through `<prefix>topics:new`;
//! - fetch: acks, then (every quarter of the ack wait but at least once a
//!   second, and whenever the member is about to wait) every entry idle
//!   past the ack wait fails (`XPENDING … IDLE`); due
//!   parked entries are claimed (`XCLAIM`, the count grows by one); then
//!   new entries (`XREADGROUP … >`, with per-topic order only from a
//!   stream with an empty PEL, one entry);
//! - a busy member without per-topic order takes new events with a plain
//!   `XREADGROUP … COUNT <room>` on one stream (the topics in turn),
//!   pipelined with the ack script, and runs the fetch script at least every
//!   50 ms (`FULL_EVERY`) (and whenever that read comes back short);
//! - ack: `XACK` of the deliveries the member still holds (holder and
//!   delivery count checked with `XPENDING`), so a late ack counts until the
//!   event went elsewhere, and a stale token does nothing. The meta hash's
//!   `moves` counts every change of holder but `XREADGROUP`; while it is
//!   what it was when the tokens were handed out, they are still the
//!   member's and are acked without the check;
//! - nack: the entry is parked, due after the delay; in progress: `XCLAIM …
//!   JUSTID` to the holder resets its idle time;
//! - release (deliveries handed back unstarted): the entry is parked due at
//!   once with `RETRYCOUNT` one lower and marked in `released`, so the claim
//!   that delivers it again gives the same delivery number and the
//!   `redelivered` counter does not grow;
//! - a failure of an event's `max_deliveries`-th delivery marks it in
//!   `dead`; one script then appends the dead letter (with the store's
//!   append bookkeeping) and `XACK`s the entry, atomically, so the event is
//!   in exactly one place even when the member dies in between (any member
//!   settles the marks it finds);
//! - a member whose connection is gone (its `CLIENT ID` not in `CLIENT LIST`)
//!   is found by the others within [`LIVENESS`] while it holds events: its
//!   entries fail at once and its consumer goes; a member that leaves hands
//!   its entries back, due at once, not as failures.
//!
//! An idle member blocks in `XREAD BLOCK` on its own connection over the
//! `wake` stream, `<prefix>topics:new` and the matching streams from their
//! last entries (those a new entry would give it work from), for at most
//! the time until the next parked entry is due, and at most [`LIVENESS`]
//! while members hold events (whose ack wait may pass or whose holder may
//! die). Its interrupter ends the wait with `CLIENT UNBLOCK`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use seed_event::support::lock;
use seed_event::{
    ConsumerName, Cursor, Delivery, DeliveryToken, Error, Event, EventStore, GroupBackend,
    GroupConfig, GroupInfo, GroupMember, GroupOrdering, Interrupt, Result, Start, Topic,
    TopicPattern,
};
use serde_json::json;

use crate::codec::{array, decode, first_id, int, raw_entries, strings, text, RawEntry};
use crate::conn::Shared;
use crate::error::is_lost;
use crate::{group_scripts as scripts, RedisStore};

/// How often a member checks, while events are held, that their holders'
/// connections are alive and their ack waits have not passed.
pub const LIVENESS: Duration = Duration::from_millis(200);
/// How long a busy member takes new events with a plain `XREADGROUP`
/// between two runs of the fetch script (which also hands out due parked
/// entries and sees new topics and dead-letter marks).
const FULL_EVERY: Duration = Duration::from_millis(50);

/// The keys of one group.
struct GroupKeys {
    meta: String,
    members: String,
    dead: String,
    wake: String,
    all: String,
}

fn keys(shared: &Shared, name: &str) -> GroupKeys {
    let prefix = &shared.config.prefix;
    let key = |what: &str| format!("{prefix}group:{{{name}}}:{what}");
    GroupKeys {
        meta: key("meta"),
        members: key("members"),
        dead: key("dead"),
        wake: key("wake"),
        all: format!("{prefix}groups"),
    }
}

fn ordering_name(o: GroupOrdering) -> &'static str {
    match o {
        GroupOrdering::None => "none",
        GroupOrdering::PerTopic => "per_topic",
    }
}

/// A script invocation with the prefix, the group and the member first.
fn invocation<'a>(
    script: &'a redis::Script,
    shared: &Shared,
    group: &str,
    member: &str,
) -> redis::ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    inv.arg(&shared.config.prefix).arg(group).arg(member);
    inv
}

/// The ids of the open connections among `clients` (`CLIENT LIST ID …`).
fn open_clients(
    con: &mut redis::Connection,
    clients: &[&str],
) -> redis::RedisResult<HashSet<String>> {
    if clients.is_empty() {
        return Ok(HashSet::new());
    }
    let listed: String = redis::cmd("CLIENT").arg("LIST").arg("ID").arg(clients).query(con)?;
    Ok(listed
        .lines()
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next().map(str::to_string))
        .collect())
}

/// Every registered member of a group with its client id and whether its connection is open.
fn members(
    con: &mut redis::Connection,
    key: &str,
) -> redis::RedisResult<Vec<(String, String, bool)>> {
    let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(key).query(con)?;
    let clients: Vec<&str> = all.iter().map(|(_, c)| c.as_str()).collect();
    let open = open_clients(con, &clients)?;
    Ok(all.iter().map(|(m, c)| (m.clone(), c.clone(), open.contains(c))).collect())
}

fn live_members(shared: &Shared, keys: &GroupKeys) -> Result<Vec<String>> {
    let all = shared.run(|con, _| members(con, &keys.members))?;
    let mut live: Vec<String> = all.into_iter().filter(|m| m.2).map(|m| m.0).collect();
    live.sort();
    Ok(live)
}

impl RedisStore {
    /// The registered topics `pattern` matches, but `dead_letter`.
    fn group_topics(&self, pattern: &TopicPattern, dead: &[&Topic]) -> Result<Vec<Topic>> {
        Ok(self
            .registered_topics()?
            .into_iter()
            .filter(|t| pattern.matches(t) && !dead.contains(&t))
            .collect())
    }

    /// The group's meta hash; `None` when there is no such group.
    fn group_meta(&self, keys: &GroupKeys) -> Result<Option<(TopicPattern, Option<Topic>)>> {
        let (pattern, dead): (Option<String>, Option<String>) = self.shared.run(|con, _| {
            redis::cmd("HMGET").arg(&keys.meta).arg("pattern").arg("dead_letter").query(con)
        })?;
        let Some(pattern) = pattern else { return Ok(None) };
        let bad = |e: Error| Error::corrupt(format!("Redis key {}", keys.meta), e.to_string());
        let pattern = TopicPattern::new(&pattern).map_err(bad)?;
        let dead = dead.map(|d| Topic::new(d.as_str())).transpose().map_err(bad)?;
        Ok(Some((pattern, dead)))
    }
}

impl GroupBackend for RedisStore {
    fn join(&self, config: &GroupConfig, member: &str) -> Result<Box<dyn GroupMember>> {
        config.validate()?;
        let shared = self.shared.clone();
        let mut con = shared.connect()?;
        let client: u64 =
            redis::cmd("CLIENT").arg("ID").query(&mut con).map_err(|e| shared.error(e))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{member}-{}-{}-{client}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let name = config.name.as_str();
        let keys = keys(&shared, name);
        // The notice first: a topic created after it is announced after it.
        let notice: Value = redis::cmd("XREVRANGE")
            .arg(&shared.keys.new_topics)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut con)
            .map_err(|e| shared.error(e))?;
        let notice = first_id(notice, &shared.keys.new_topics)?.unwrap_or(Cursor::ZERO).to_string();
        let mut topics = self.group_topics(&config.pattern, &[&config.dead_letter])?;
        for t in config.start_after.keys() {
            if config.pattern.matches(t) && *t != config.dead_letter && !topics.contains(t) {
                topics.push(t.clone());
            }
        }
        let (start, since) = match config.start {
            Start::Beginning => ("beginning", String::new()),
            Start::New => ("new", String::new()),
            Start::Since(t) => {
                let ms = t.unix_millis();
                let since =
                    if ms <= 0 { "0-0".to_string() } else { format!("{}-{}", ms - 1, u64::MAX) };
                ("since", since)
            }
        };
        let mut create = invocation(&scripts::CREATE, &shared, name, &id);
        create
            .arg(config.pattern.to_string())
            .arg(ordering_name(config.ordering))
            .arg(config.dead_letter.as_str())
            .arg(start)
            .arg(since)
            .arg(if config.exclusive { "1" } else { "0" });
        for t in &topics {
            let after = config.start_after.get(t).map(Cursor::to_string).unwrap_or_default();
            create.arg(t.as_str()).arg(after);
        }
        let created: Value = create.invoke(&mut con).map_err(|e| shared.error(e))?;
        // The busy path sends the ack script by its hash.
        scripts::ACK.load(&mut con).map_err(|e| shared.error(e))?;
        let mut reply = array(created).unwrap_or_default().into_iter();
        if reply.next().as_ref().and_then(int) != Some(1) {
            let pattern = reply.next().and_then(text).unwrap_or_default();
            let ordering = reply.next().and_then(text).unwrap_or_default();
            let exclusive = reply.next().and_then(text).is_some_and(|e| e == "1");
            if pattern != config.pattern.to_string() {
                return Err(Error::invalid(
                    "group",
                    format!(
                        "group {} follows {pattern}, not {}; expected the same pattern or another group name",
                        config.name, config.pattern
                    ),
                ));
            }
            if ordering != ordering_name(config.ordering) {
                return Err(Error::invalid(
                    "group",
                    format!(
                        "group {} has ordering {ordering}, not {}; expected the same ordering or another group name",
                        config.name,
                        ordering_name(config.ordering)
                    ),
                ));
            }
            if exclusive != config.exclusive {
                return Err(seed_event::mode_mismatch(&config.name, exclusive));
            }
        }
        let mut joined = RedisMember {
            store: self.clone(),
            shared: shared.clone(),
            config: config.clone(),
            keys,
            id,
            con,
            client,
            lost: false,
            wakeup: Arc::new(Wakeup {
                shared,
                flag: AtomicBool::new(false),
                blocked: Mutex::new(None),
            }),
            topics: Vec::new(),
            notice,
            held: HashMap::new(),
            last_reap: Instant::now(),
            last_full: None,
            next_due_at: None,
            last_liveness: None,
            rotation: 0,
        };
        joined.add_topics(topics)?;
        joined.register()?;
        Ok(Box::new(joined))
    }

    fn list(&self) -> Result<Vec<GroupInfo>> {
        let all = format!("{}groups", self.shared.config.prefix);
        let mut names: Vec<String> =
            self.shared.run(|con, _| redis::cmd("SMEMBERS").arg(&all).query(con))?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let keys = keys(&self.shared, &name);
            let Some((pattern, dead)) = self.group_meta(&keys)? else { continue };
            let topics = self.group_topics(&pattern, &dead.iter().collect::<Vec<_>>())?;
            let reply: Value = self.shared.run(|con, _| {
                let mut inv = invocation(&scripts::INFO, &self.shared, &name, "");
                for t in &topics {
                    inv.arg(t.as_str());
                }
                inv.invoke(con)
            })?;
            let bad =
                || Error::corrupt(format!("group {name}"), "the figures script answered oddly");
            let mut items = array(reply).ok_or_else(bad)?;
            let marks = items.pop().as_ref().and_then(int).unwrap_or(0).max(0) as u64;
            let (mut in_flight, mut waiting) = (0u64, 0u64);
            for (t, item) in topics.iter().zip(items) {
                let mut f = array(item).ok_or_else(bad)?.into_iter();
                let has_group = f.next().as_ref().and_then(int) == Some(1);
                let pending = f.next().as_ref().and_then(int).unwrap_or(0).max(0) as u64;
                let parked = f.next().as_ref().and_then(int).unwrap_or(0).max(0) as u64;
                let last: Cursor =
                    f.next().and_then(text).and_then(|s| s.parse().ok()).unwrap_or(Cursor::ZERO);
                in_flight += pending - parked.min(pending);
                waiting += parked;
                waiting += self.count_after(t, if has_group { last } else { Cursor::ZERO })?;
            }
            let (redelivered, dead_lettered, exclusive): (
                Option<u64>,
                Option<u64>,
                Option<String>,
            ) = self.shared.run(|con, _| {
                redis::cmd("HMGET")
                    .arg(&keys.meta)
                    .arg("redelivered")
                    .arg("dead_lettered")
                    .arg("exclusive")
                    .query(con)
            })?;
            let exclusive = exclusive.is_some_and(|e| e == "1");
            let members = live_members(&self.shared, &keys)?;
            out.push(GroupInfo {
                name: name.clone(),
                pattern: pattern.to_string(),
                active: seed_event::active_member(exclusive, &members),
                members,
                exclusive,
                in_flight,
                waiting: waiting.saturating_sub(marks),
                redelivered: redelivered.unwrap_or(0),
                dead_lettered: dead_lettered.unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn delete(&self, name: &ConsumerName) -> Result<bool> {
        let keys = keys(&self.shared, name.as_str());
        let live = live_members(&self.shared, &keys)?;
        if !live.is_empty() {
            return Err(seed_event::group_in_use(name, &live));
        }
        // Every registered topic: a consumer group may sit on any the pattern matched.
        let topics = match self.group_meta(&keys)? {
            Some((pattern, _)) => self.group_topics(&pattern, &[])?,
            None => Vec::new(),
        };
        let existed: i64 = self.shared.run(|con, _| {
            let mut inv = invocation(&scripts::DELETE, &self.shared, name.as_str(), "");
            for t in &topics {
                inv.arg(t.as_str());
            }
            inv.invoke(con)
        })?;
        Ok(existed == 1)
    }
}

/// A member's interrupt: a flag, and the member's `XREAD BLOCK` ended with
/// `CLIENT UNBLOCK` while it waits.
struct Wakeup {
    shared: Arc<Shared>,
    flag: AtomicBool,
    /// The client id of the member's connection while it blocks.
    blocked: Mutex<Option<u64>>,
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.shared.unblock_blocked(&self.blocked, "a group member");
    }
}

struct RedisMember {
    store: RedisStore,
    shared: Arc<Shared>,
    config: GroupConfig,
    keys: GroupKeys,
    id: String,
    /// The member's own connection: its `CLIENT ID` says it is alive; its
    /// scripts and waits run on it.
    con: redis::Connection,
    client: u64,
    /// The connection failed: the next call opens a new one first.
    lost: bool,
    wakeup: Arc<Wakeup>,
    /// The group's topics (their consumer groups exist).
    topics: Vec<Topic>,
    /// The last id of `<prefix>topics:new` taken into `topics`.
    notice: String,
    /// What the member was handed and did not ack or nack yet (its room),
    /// with its delivery count and the group's `moves` counter when it was
    /// handed out.
    held: HashMap<(Topic, Cursor), (u32, String)>,
    /// When the member last took back events past their ack wait.
    last_reap: Instant,
    /// When the fetch script last ran, and when the next parked entry it
    /// reported is due.
    last_full: Option<Instant>,
    next_due_at: Option<Instant>,
    /// When it last looked for members whose connection is gone.
    last_liveness: Option<Instant>,
    rotation: usize,
}

/// What one fetch script answered.
struct Fetched {
    marks: i64,
    notice: String,
    got: Vec<Delivery>,
    /// Stream keys and ids to wait on (only when nothing came).
    waits: Vec<(String, String)>,
    wake: String,
    next_due: Option<Duration>,
    holding: bool,
    missing: Vec<Topic>,
}

impl RedisMember {
    /// Runs `f` on the member's connection, opening a new one first after a
    /// loss (registered under the member's id with its new `CLIENT ID`).
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        if self.lost {
            let shared = self.shared.clone();
            let mut con = shared.connect()?;
            let client: u64 =
                redis::cmd("CLIENT").arg("ID").query(&mut con).map_err(|e| shared.error(e))?;
            self.con = con;
            self.client = client;
            self.lost = false;
            // While the member was away the others may have taken its events
            // back; its tokens are checked against the server's on use.
            self.register()?;
        }
        f(&mut self.con).map_err(|e| {
            if is_lost(&e) {
                self.lost = true;
            }
            self.shared.error(e)
        })
    }

    fn register(&mut self) -> Result<()> {
        let (members, all, id, client, name) = (
            self.keys.members.clone(),
            self.keys.all.clone(),
            self.id.clone(),
            self.client,
            self.config.name.to_string(),
        );
        self.call(|con| {
            redis::pipe()
                .cmd("HSET")
                .arg(&members)
                .arg(&id)
                .arg(client)
                .ignore()
                .cmd("SADD")
                .arg(&all)
                .arg(&name)
                .ignore()
                .query::<()>(con)
        })
    }

    fn invoke<T: redis::FromRedisValue>(
        &mut self,
        script: &redis::Script,
        args: impl Fn(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T> {
        let mut inv = invocation(script, &self.shared, self.config.name.as_str(), &self.id);
        args(&mut inv);
        self.call(|con| inv.invoke(con))
    }

    /// Creates the consumer groups of `topics` where missing and takes them in.
    fn add_topics(&mut self, topics: Vec<Topic>) -> Result<()> {
        let fresh: Vec<Topic> = topics.into_iter().filter(|t| !self.topics.contains(t)).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let there: i64 = self.invoke(&scripts::ENSURE, |inv| {
            for t in &fresh {
                inv.arg(t.as_str());
            }
        })?;
        if there == 0 {
            return Err(Error::invalid(
                "group",
                format!(
                    "group {} was deleted while this member was in it; expected it to be joined again",
                    self.config.name
                ),
            ));
        }
        self.topics.extend(fresh);
        self.topics.sort();
        Ok(())
    }

    /// Takes in the matching topics created since the last look.
    fn refresh_topics(&mut self, notice: String) -> Result<()> {
        let topics = self.store.group_topics(&self.config.pattern, &[&self.config.dead_letter])?;
        self.add_topics(topics)?;
        self.notice = notice;
        Ok(())
    }

    /// Fails the events of members whose connection is gone, at most every [`LIVENESS`].
    fn reap_dead(&mut self) -> Result<()> {
        if self.last_liveness.is_some_and(|at| at.elapsed() < LIVENESS) {
            return Ok(());
        }
        self.last_liveness = Some(Instant::now());
        let me = self.id.clone();
        let key = self.keys.members.clone();
        let all = self.call(|con| members(con, &key))?;
        let dead: Vec<(String, String)> = all
            .into_iter()
            .filter(|(m, _, open)| !open && *m != me)
            .map(|(m, c, _)| (m, c))
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        let max = self.config.max_deliveries;
        let topics = self.topics.clone();
        let moved: i64 = self.invoke(&scripts::REAP, |inv| {
            inv.arg(max).arg(dead.len());
            for (m, c) in &dead {
                inv.arg(m).arg(c);
            }
            for t in &topics {
                inv.arg(t.as_str());
            }
        })?;
        if moved > 0 {
            log::info!(
                "group {}: {moved} event(s) of member(s) whose connection is gone go to the others",
                self.config.name
            );
        }
        Ok(())
    }

    /// Writes the dead letters of the marked entries.
    fn settle(&mut self) -> Result<()> {
        let dead_key = self.keys.dead.clone();
        let marks: Vec<(String, String)> =
            self.call(|con| redis::cmd("HGETALL").arg(&dead_key).query(con))?;
        for (field, value) in marks {
            let bad =
                || Error::corrupt(format!("Redis key {dead_key}"), format!("bad mark {field:?}"));
            let (topic, id) = field.split_once('\n').ok_or_else(bad)?;
            let (count, error) = value.split_once('\n').ok_or_else(bad)?;
            let topic = Topic::new(topic).map_err(|_| bad())?;
            let cursor: Cursor = id.parse().map_err(|_| bad())?;
            let count: u64 = count.parse().map_err(|_| bad())?;
            let key = self.shared.keys.stream(topic.as_str());
            let reply: Value =
                self.call(|con| redis::cmd("XRANGE").arg(&key).arg(id).arg(id).query(con))?;
            let original = match raw_entries(reply, &key)?.into_iter().next() {
                Some(raw) => Some(decode(raw, &topic, &key)?),
                None => None,
            };
            let payload = json!({
                "event": original.as_ref().map(|e| serde_json::to_value(&e.event).unwrap_or_default()),
                "topic": topic.as_str(),
                "cursor": cursor.to_string(),
                "deliveries": count,
                "error": error,
                "group": self.config.name.as_str(),
            });
            let mut letter = Event::new(
                self.config.dead_letter.clone(),
                format!("group:{}", self.config.name),
                payload.as_object().cloned().unwrap_or_default(),
            );
            if let Some(e) = &original {
                letter.correlation_id = e.event.correlation_id.clone();
            }
            let line = letter.to_json_line();
            let ms = letter.timestamp.unix_millis().max(0);
            let dead_topic = self.config.dead_letter.clone();
            let _: Value = self.invoke(&scripts::SETTLE, |inv| {
                inv.arg(&field).arg(dead_topic.as_str()).arg(ms).arg(&line);
            })?;
        }
        Ok(())
    }

    /// The `moves` generation of `tokens` for the ack scripts: the oldest
    /// under which one of them was handed out; `""` if one is not a
    /// delivery the member holds (a stale token is checked by the script).
    fn generation(&self, tokens: &[DeliveryToken]) -> String {
        let mut oldest: Option<&String> = None;
        for t in tokens {
            let gen = match self.held.get(&(t.topic.clone(), t.cursor)) {
                Some((delivery, gen)) if *delivery == t.delivery => gen,
                _ => return String::new(),
            };
            let older = oldest.is_none_or(|o| (gen.len(), gen.as_str()) < (o.len(), o.as_str()));
            if older {
                oldest = Some(gen);
            }
        }
        oldest.cloned().unwrap_or_default()
    }

    /// Whether the member may take new events without the fetch script: the
    /// group has no per-topic order, and the script ran within `FULL_EVERY`,
    /// before the next parked entry it reported was due.
    fn fast_path_ok(&self) -> bool {
        self.config.ordering == GroupOrdering::None
            && self.last_full.is_some_and(|at| at.elapsed() < FULL_EVERY)
            && self.next_due_at.is_none_or(|at| Instant::now() < at)
            && self.last_reap.elapsed() < (self.config.ack_wait / 4).min(Duration::from_secs(1))
    }

    /// The busy path without Lua for the events: one round trip of the ack
    /// script and a plain `XREADGROUP … COUNT <room> … >` on one stream (the
    /// topics in turn), each answered on its own. `None`: not taken (no
    /// room); else the events and whether the acks were done (not after
    /// `NOSCRIPT` from a restarted server: the fetch script does them).
    fn fast_fetch(
        &mut self,
        acks: &[DeliveryToken],
        max: usize,
    ) -> Result<Option<(Vec<Delivery>, bool)>> {
        let acked = acks.iter().filter(|a| self.held.contains_key(&(a.topic.clone(), a.cursor)));
        let room =
            (self.config.max_in_flight + acked.count()).saturating_sub(self.held.len()).min(max);
        if room == 0 || self.topics.is_empty() {
            return Ok(None);
        }
        self.rotation = self.rotation.wrapping_add(1);
        let topic = self.topics[self.rotation % self.topics.len()].clone();
        let key = self.shared.keys.stream(topic.as_str());
        let gen = self.generation(acks);
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(scripts::ACK.get_hash())
            .arg(0)
            .arg(&self.shared.config.prefix)
            .arg(self.config.name.as_str())
            .arg(&self.id)
            .arg(0)
            .arg(&gen)
            .arg(acks.len());
        let mut sorted: Vec<&DeliveryToken> = acks.iter().collect();
        sorted.sort_by(|a, b| (&a.topic, a.cursor).cmp(&(&b.topic, b.cursor)));
        for a in sorted {
            evalsha.arg(a.topic.as_str()).arg(a.cursor.to_string()).arg(a.delivery);
        }
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(self.config.name.as_str())
            .arg(&self.id)
            .arg("COUNT")
            .arg(room)
            .arg("STREAMS")
            .arg(&key)
            .arg(">");
        let replies: Vec<Value> = self.call(|con| {
            redis::pipe().ignore_errors().add_command(evalsha).add_command(read).query(con)
        })?;
        let mut replies = replies.into_iter();
        // A refusal (NOSCRIPT, NOGROUP) is left to the fetch script.
        let (acked, moves) = match replies.next() {
            Some(Value::ServerError(_)) | None => (false, String::new()),
            Some(reply) => {
                let moves = array(reply).unwrap_or_default().into_iter().nth(1).and_then(text);
                (true, moves.unwrap_or_default())
            }
        };
        if acked {
            for a in acks {
                self.held.remove(&(a.topic.clone(), a.cursor));
            }
        }
        let read = match replies.next() {
            Some(Value::ServerError(_)) | None => Value::Nil,
            Some(reply) => reply,
        };
        let mut got = Vec::new();
        for stream in array(read).unwrap_or_default() {
            let mut pair = array(stream).unwrap_or_default().into_iter();
            let (Some(_), Some(entries)) = (pair.next(), pair.next()) else { continue };
            for raw in raw_entries(entries, &key)? {
                let event = decode(raw, &topic, &key)?;
                let token =
                    DeliveryToken { topic: topic.clone(), cursor: event.cursor, delivery: 1 };
                self.held.insert((topic.clone(), event.cursor), (1, moves.clone()));
                got.push(Delivery { event, deliveries: 1, token });
            }
        }
        Ok(Some((got, acked)))
    }

    /// One fetch script: acks `acks`, takes up to `max` events.
    fn fetch_once(&mut self, acks: &[DeliveryToken], max: usize, waits: bool) -> Result<Fetched> {
        // The script acks first: acked events make room for this fetch.
        let gen = self.generation(acks);
        for a in acks {
            self.held.remove(&(a.topic.clone(), a.cursor));
        }
        let room = self.config.max_in_flight.saturating_sub(self.held.len()).min(max);
        let reap_every = (self.config.ack_wait / 4).min(Duration::from_secs(1));
        let reap = waits || self.last_reap.elapsed() >= reap_every;
        if reap {
            self.last_reap = Instant::now();
        }
        self.rotation = self.rotation.wrapping_add(1);
        let first = if self.topics.is_empty() { 0 } else { self.rotation % self.topics.len() };
        let per_topic = self.config.ordering == GroupOrdering::PerTopic;
        let ack_wait = self.config.ack_wait.as_millis().max(1) as u64;
        let error = format!("the ack wait of {:?} passed", self.config.ack_wait);
        let (max_deliveries, topics) = (self.config.max_deliveries, self.topics.clone());
        let reply: Value = self.invoke(&scripts::FETCH, |inv| {
            inv.arg(room)
                .arg(u8::from(per_topic))
                .arg(u8::from(reap))
                .arg(ack_wait)
                .arg(max_deliveries)
                .arg(&error)
                .arg(first)
                .arg(u8::from(waits))
                .arg(&gen)
                .arg(acks.len());
            push_tokens(inv, acks);
            for t in &topics {
                inv.arg(t.as_str());
            }
        })?;
        let bad = |what: &str| {
            Error::corrupt(
                format!("group {}", self.config.name),
                format!("the fetch script {what}"),
            )
        };
        let mut items = array(reply).ok_or_else(|| bad("answered no list"))?.into_iter();
        let mut next = || items.next().unwrap_or(Value::Nil);
        let marks = int(&next()).unwrap_or(0);
        let notice = text(next()).unwrap_or_default();
        let _acked = int(&next());
        let entries = array(next()).unwrap_or_default();
        let mut got = Vec::with_capacity(entries.len() / 4);
        let mut entries = entries.into_iter();
        while let (Some(t), Some(id), Some(count), Some(line)) =
            (entries.next(), entries.next(), entries.next(), entries.next())
        {
            let topic = text(t)
                .and_then(|t| Topic::new(t.as_str()).ok())
                .ok_or_else(|| bad("named no topic"))?;
            let cursor: Cursor =
                text(id).and_then(|i| i.parse().ok()).ok_or_else(|| bad("gave a bad id"))?;
            let deliveries = int(&count).unwrap_or(1).clamp(1, u32::MAX as i64) as u32;
            let key = self.shared.keys.stream(topic.as_str());
            let line = match line {
                Value::BulkString(b) => Some(b),
                _ => None,
            };
            let event = decode(RawEntry { cursor, line }, &topic, &key)?;
            let token = DeliveryToken { topic, cursor, delivery: deliveries };
            got.push(Delivery { event, deliveries, token });
        }
        let flat = strings(next(), "the fetch script's waits")?;
        let waits =
            flat.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect();
        let wake = text(next()).unwrap_or_default();
        let due = int(&next()).unwrap_or(-1);
        let next_due = (due >= 0).then(|| Duration::from_millis(due as u64));
        let holding = int(&next()) == Some(1);
        let missing = strings(next(), "the fetch script's missing topics")?
            .into_iter()
            .filter_map(|t| Topic::new(t.as_str()).ok())
            .collect();
        let moves = text(next()).unwrap_or_default();
        self.last_full = Some(Instant::now());
        self.next_due_at = next_due.map(|d| Instant::now() + d);
        for d in &got {
            let key = (d.token.topic.clone(), d.token.cursor);
            self.held.insert(key, (d.deliveries, moves.clone()));
        }
        Ok(Fetched { marks, notice, got, waits, wake, next_due, holding, missing })
    }

    /// Blocks on the member's connection until something may give it work,
    /// at most `wait`, or until interrupted.
    fn wait(&mut self, fetched: &Fetched, wait: Duration) -> Result<()> {
        let block = wait.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1).arg("BLOCK").arg(block).arg("STREAMS");
        cmd.arg(&self.keys.wake).arg(&self.shared.keys.new_topics);
        for (k, _) in &fetched.waits {
            cmd.arg(k);
        }
        cmd.arg(if fetched.wake.is_empty() { "0-0" } else { &fetched.wake });
        cmd.arg(&fetched.notice);
        for (_, id) in &fetched.waits {
            cmd.arg(id);
        }
        let margin = self.shared.config.command_timeout;
        let wakeup = self.wakeup.clone();
        if self.lost {
            // Connect (and register) first: the client id to unblock is the new one's.
            self.call(|_| Ok(()))?;
        }
        let client = self.client;
        self.call(|con| {
            // Noted before the flag is looked at: an interrupt either is
            // seen here or finds the id to unblock.
            *lock(&wakeup.blocked) = Some(client);
            if wakeup.flag.load(Ordering::SeqCst) {
                *lock(&wakeup.blocked) = None;
                return Ok(());
            }
            let result = con
                .set_read_timeout(Some(Duration::from_millis(block).saturating_add(margin)))
                .and_then(|()| cmd.query::<Value>(con));
            *lock(&wakeup.blocked) = None;
            let reset = con.set_read_timeout(Some(margin));
            result.and(reset).map(drop)
        })
    }
}

/// Adds `tokens` as (topic, id, delivery) triples, sorted by topic and id
/// (the scripts take one `XPENDING` range per topic).
fn push_tokens(inv: &mut redis::ScriptInvocation<'_>, tokens: &[DeliveryToken]) {
    let mut sorted: Vec<&DeliveryToken> = tokens.iter().collect();
    sorted.sort_by(|a, b| (&a.topic, a.cursor).cmp(&(&b.topic, b.cursor)));
    for a in sorted {
        inv.arg(a.topic.as_str()).arg(a.cursor.to_string()).arg(a.delivery);
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
        let mut idle = false;
        let mut early = Vec::new();
        if max > 0 && self.fast_path_ok() {
            if let Some((got, acked)) = self.fast_fetch(acks, max)? {
                if acked {
                    acks = &[];
                }
                let room = self.config.max_in_flight.saturating_sub(self.held.len()).min(max);
                if acks.is_empty() && (room == 0 || got.len() >= max) {
                    return Ok(got);
                }
                early = got;
            }
        }
        loop {
            self.reap_dead()?;
            let wanted = max - early.len();
            let mut fetched = self.fetch_once(acks, wanted, idle || timeout.is_zero())?;
            acks = &[];
            if !early.is_empty() {
                early.append(&mut fetched.got);
                fetched.got = std::mem::take(&mut early);
            }
            if fetched.marks > 0 {
                self.settle()?;
            }
            if !fetched.missing.is_empty() {
                self.topics.retain(|t| !fetched.missing.contains(t));
                self.add_topics(fetched.missing.clone())?;
            }
            if fetched.notice != self.notice {
                self.refresh_topics(fetched.notice.clone())?;
                if fetched.got.is_empty() {
                    continue;
                }
            }
            if !fetched.got.is_empty() || max == 0 || self.wakeup.flag.swap(false, Ordering::SeqCst)
            {
                return Ok(fetched.got);
            }
            if !idle {
                // Look once more with the waits reported (and events past their ack wait taken back).
                idle = true;
                if !timeout.is_zero() {
                    continue;
                }
            }
            let left =
                deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(fetched.got);
            }
            let mut wait = left.min(Duration::from_secs(5));
            if let Some(due) = fetched.next_due {
                wait = wait.min(due.max(Duration::from_millis(1)));
            }
            if fetched.holding {
                wait = wait.min(LIVENESS);
            }
            self.wait(&fetched, wait)?;
        }
    }

    fn ack(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let per_topic = self.config.ordering == GroupOrdering::PerTopic;
        let gen = self.generation(tokens);
        let _: Value = self.invoke(&scripts::ACK, |inv| {
            inv.arg(u8::from(per_topic)).arg(&gen).arg(tokens.len());
            push_tokens(inv, tokens);
        })?;
        for a in tokens {
            self.held.remove(&(a.topic.clone(), a.cursor));
        }
        Ok(())
    }

    fn nack(&mut self, token: &DeliveryToken, delay: Option<Duration>, error: &str) -> Result<()> {
        let delay = delay.unwrap_or_else(|| self.config.nack_delay(token.delivery));
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX / 2).min(1 << 50);
        let max = self.config.max_deliveries;
        let outcome: i64 = self.invoke(&scripts::NACK, |inv| {
            inv.arg(token.topic.as_str())
                .arg(token.cursor.to_string())
                .arg(token.delivery)
                .arg(delay_ms)
                .arg(max)
                .arg(error);
        })?;
        self.held.remove(&(token.topic.clone(), token.cursor));
        if outcome == 2 {
            self.settle()?;
        }
        Ok(())
    }

    fn in_progress(&mut self, token: &DeliveryToken) -> Result<()> {
        self.extend(std::slice::from_ref(token))
    }

    fn release(&mut self, tokens: &[DeliveryToken]) -> Result<bool> {
        if tokens.is_empty() {
            return Ok(true);
        }
        let _: i64 = self.invoke(&scripts::RELEASE, |inv| {
            for t in tokens {
                inv.arg(t.topic.as_str()).arg(t.cursor.to_string()).arg(t.delivery);
            }
        })?;
        for t in tokens {
            self.held.remove(&(t.topic.clone(), t.cursor));
        }
        Ok(true)
    }

    fn extend(&mut self, tokens: &[DeliveryToken]) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        let _: i64 = self.invoke(&scripts::EXTEND, |inv| {
            for a in tokens {
                inv.arg(a.topic.as_str()).arg(a.cursor.to_string()).arg(a.delivery);
            }
        })?;
        Ok(())
    }

    fn interrupter(&self) -> Arc<dyn Interrupt> {
        self.wakeup.clone()
    }
}

impl Drop for RedisMember {
    fn drop(&mut self) {
        let topics = self.topics.clone();
        let left: Result<i64> = self.invoke(&scripts::LEAVE, |inv| {
            for t in &topics {
                inv.arg(t.as_str());
            }
        });
        if let Err(e) = left {
            log::warn!(
                "group {}: member {} could not hand its events back ({e}); the others take them once its connection is gone",
                self.config.name,
                self.id
            );
        }
    }
}
