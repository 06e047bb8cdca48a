//! [`RedisFollower`]: `XREAD BLOCK` over the matching topics' streams and the
//! new-topic stream, on a connection of its own that it re-opens after a drop;
//! its [`Wakeup`] ends a `BLOCK` from another thread with `CLIENT UNBLOCK`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use seed_event::support::{lock, wait_timeout};
use seed_event::{
    Cursor, Error, FollowFrom, Follower, Interrupt, Result, Start, StoredEvent, Timestamp, Topic,
    TopicPattern,
};

use crate::codec::{array, decode, first_id, raw_entries, strings, text};
use crate::conn::Shared;
use crate::error::is_lost;

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest one `XREAD BLOCK` waits; longer timeouts loop. An idle
/// follower sends one command per this long; a connection that went silent
/// (the server's host gone) is noticed within it plus the command timeout.
const LONGEST_BLOCK: Duration = Duration::from_secs(5);
/// How long a follower keeps reconnecting within one `next_batch` before it
/// reports the store unavailable (sooner when the caller's time runs out).
const RIDE_OUT: Duration = Duration::from_secs(1);

/// Cuts a [`RedisFollower`]'s wait short: its [`Interrupt`].
///
/// The request stays until the follower takes it. The follower notes its
/// client id while its `XREAD BLOCK` is under way; an interrupt then sends
/// `CLIENT UNBLOCK` for it, again while the command has not reached the
/// server, until the server unblocks it or the follower is back.
pub(crate) struct Wakeup {
    shared: Arc<Shared>,
    requested: AtomicBool,
    /// The client id of the follower's connection while it blocks.
    blocked: Mutex<Option<u64>>,
    /// For the follower's waits between reconnects.
    sleep: Mutex<()>,
    slept: Condvar,
}

impl Wakeup {
    fn is_set(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    fn take(&self) -> bool {
        self.requested.swap(false, Ordering::SeqCst)
    }

    /// Sleeps up to `duration`, less if interrupted.
    fn sleep(&self, duration: Duration) {
        let guard = lock(&self.sleep);
        if !self.is_set() {
            drop(wait_timeout(&self.slept, guard, duration));
        }
    }

    fn set_blocked(&self, id: Option<u64>) {
        *lock(&self.blocked) = id;
    }
}

impl Interrupt for Wakeup {
    fn interrupt(&self) {
        self.requested.store(true, Ordering::SeqCst);
        drop(lock(&self.sleep));
        self.slept.notify_all();
        self.shared.unblock_blocked(&self.blocked, "a follower");
    }
}

/// How one `XREAD` went.
enum Read {
    Reply(Value),
    /// The connection dropped; the follower reconnects.
    Dropped,
    /// Interrupted before or while it waited.
    Interrupted,
}

/// A live reader of the topics matching a pattern.
pub(crate) struct RedisFollower {
    shared: Arc<Shared>,
    /// The connection and its client id.
    con: Option<(redis::Connection, u64)>,
    wakeup: Arc<Wakeup>,
    /// New topics were announced but not yet looked up (the look-up failed).
    refresh_pending: bool,
    pattern: TopicPattern,
    /// Every topic name seen in the topic set, matching or not.
    known: BTreeSet<String>,
    /// The last id read of every matching topic (the `XREAD` start).
    positions: BTreeMap<Topic, Cursor>,
    /// Stream key to topic, for the topics in `positions`.
    by_key: HashMap<String, Topic>,
    /// The last id read of the new-topic stream.
    notice_id: String,
    /// For [`Start::Since`]: the time, and each topic's last id when following began.
    since: Option<(Timestamp, BTreeMap<Topic, Cursor>)>,
    /// Events read but not yet returned (an `XREAD` may return more than asked).
    buffer: VecDeque<StoredEvent>,
    backoff: Duration,
}

impl RedisFollower {
    pub(crate) fn start(
        shared: Arc<Shared>,
        pattern: TopicPattern,
        from: FollowFrom,
    ) -> Result<RedisFollower> {
        let keys = shared.keys.clone();
        // One atomic snapshot: a topic created after it shows up in the new-topic stream.
        let (notice, members): (Value, Value) = shared.run(|con, _| {
            redis::pipe()
                .atomic()
                .cmd("XREVRANGE")
                .arg(&keys.new_topics)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .cmd("SMEMBERS")
                .arg(&keys.topics)
                .query(con)
        })?;
        let notice_id = first_id(notice, &keys.new_topics)?.unwrap_or(Cursor::ZERO).to_string();
        let known: BTreeSet<String> =
            strings(members, &format!("Redis key {}", keys.topics))?.into_iter().collect();
        let matching: Vec<Topic> = known
            .iter()
            .filter_map(|n| Topic::new(n.as_str()).ok())
            .filter(|t| pattern.matches(t))
            .collect();
        let heads: BTreeMap<Topic, Cursor> = match from.start {
            Start::Beginning => BTreeMap::new(),
            Start::New | Start::Since(_) if matching.is_empty() => BTreeMap::new(),
            Start::New | Start::Since(_) => {
                let replies: Vec<Value> = shared.run(|con, _| {
                    let mut pipe = redis::pipe();
                    for t in &matching {
                        pipe.cmd("XREVRANGE")
                            .arg(keys.stream(t.as_str()))
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1);
                    }
                    pipe.query(con)
                })?;
                let mut heads = BTreeMap::new();
                for (t, reply) in matching.iter().zip(replies) {
                    let head = first_id(reply, &keys.stream(t.as_str()))?.unwrap_or(Cursor::ZERO);
                    heads.insert(t.clone(), head);
                }
                heads
            }
        };
        let mut positions: BTreeMap<Topic, Cursor> =
            from.positions.into_iter().filter(|(t, _)| pattern.matches(t)).collect();
        for t in matching {
            let start = match from.start {
                Start::Beginning => Cursor::ZERO,
                Start::New => heads.get(&t).copied().unwrap_or(Cursor::ZERO),
                Start::Since(since) => {
                    // Ids below `since`'s millisecond hold only older events; later
                    // (live) events are delivered whatever their time.
                    let ms = since.unix_millis().max(0) as u64;
                    let below = if ms == 0 { Cursor::ZERO } else { Cursor::new(ms - 1, u64::MAX) };
                    below.min(heads.get(&t).copied().unwrap_or(Cursor::ZERO))
                }
            };
            positions.entry(t).or_insert(start);
        }
        let since = match from.start {
            Start::Since(t) => Some((t, heads)),
            _ => None,
        };
        let wakeup = Arc::new(Wakeup {
            shared: shared.clone(),
            requested: AtomicBool::new(false),
            blocked: Mutex::new(None),
            sleep: Mutex::new(()),
            slept: Condvar::new(),
        });
        let mut follower = RedisFollower {
            shared,
            con: None,
            wakeup,
            refresh_pending: false,
            pattern,
            known,
            positions,
            by_key: HashMap::new(),
            notice_id,
            since,
            buffer: VecDeque::new(),
            backoff: FIRST_BACKOFF,
        };
        follower.index_keys();
        Ok(follower)
    }

    fn index_keys(&mut self) {
        let keys = &self.shared.keys;
        self.by_key = self.positions.keys().map(|t| (keys.stream(t.as_str()), t.clone())).collect();
    }

    /// The follower's connection and its client id, re-opened with backoff
    /// for up to [`RIDE_OUT`], each attempt bounded by what is left until
    /// `deadline`; `None` when interrupted meanwhile.
    fn connection(&mut self, deadline: Instant) -> Result<Option<&mut (redis::Connection, u64)>> {
        let give_up = deadline.min(Instant::now() + RIDE_OUT);
        while self.con.is_none() {
            if self.wakeup.is_set() {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(opened) = self.open(left) else { return Ok(None) };
            match opened {
                Ok(con) => {
                    self.con = Some(con);
                    if self.backoff > FIRST_BACKOFF {
                        log::info!("follower reconnected to Redis at {}", self.shared.redacted);
                    }
                    self.backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    if Instant::now() + self.backoff >= give_up {
                        return Err(e);
                    }
                    log::debug!("follower retries in {:?}: {e}", self.backoff);
                    self.wakeup.sleep(self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Ok(self.con.as_mut())
    }

    /// A new connection and its client id, opened within `limit` (and the
    /// connect timeout) on a thread of its own, so that an interrupt ends
    /// the wait for it at once (`None`); an abandoned connect finishes on
    /// its own within its timeout.
    fn open(&self, limit: Duration) -> Option<Result<(redis::Connection, u64)>> {
        type Opened = Option<Result<(redis::Connection, u64)>>;
        let open = move |shared: &Shared| {
            shared.connect_within(limit).and_then(|mut con| {
                let id = redis::cmd("CLIENT").arg("ID").query::<u64>(&mut con);
                id.map(|id| (con, id)).map_err(|e| shared.error(e))
            })
        };
        let slot: Arc<Mutex<Opened>> = Arc::default();
        let (shared, wakeup, filled) = (self.shared.clone(), self.wakeup.clone(), slot.clone());
        let spawned = std::thread::Builder::new().name("redis-connect".into()).spawn(move || {
            *lock(&filled) = Some(open(&shared));
            drop(lock(&wakeup.sleep));
            wakeup.slept.notify_all();
        });
        if spawned.is_err() {
            return Some(open(&self.shared));
        }
        let mut guard = lock(&self.wakeup.sleep);
        loop {
            if let Some(opened) = lock(&slot).take() {
                return Some(opened);
            }
            if self.wakeup.is_set() {
                return None;
            }
            guard = wait_timeout(&self.wakeup.slept, guard, MAX_BACKOFF).0;
        }
    }

    /// One `XREAD`, waiting up to `block` for events.
    fn read_once(
        &mut self,
        max: usize,
        block: Option<Duration>,
        deadline: Instant,
    ) -> Result<Read> {
        let keys = self.shared.keys.clone();
        let margin = self.shared.config.command_timeout;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(max);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&keys.new_topics);
        for t in self.positions.keys() {
            cmd.arg(keys.stream(t.as_str()));
        }
        cmd.arg(&self.notice_id);
        for c in self.positions.values() {
            cmd.arg(c.to_string());
        }
        let wakeup = self.wakeup.clone();
        let Some((con, id)) = self.connection(deadline)? else { return Ok(Read::Interrupted) };
        if block.is_some() {
            // Noted before the flag is looked at: an interrupt either is
            // seen here or finds the id to unblock.
            wakeup.set_blocked(Some(*id));
            if wakeup.is_set() {
                wakeup.set_blocked(None);
                return Ok(Read::Interrupted);
            }
        }
        let result = con
            .set_read_timeout(Some(block.unwrap_or_default().saturating_add(margin)))
            .and_then(|()| cmd.query::<Value>(con));
        wakeup.set_blocked(None);
        match result {
            Ok(v) => Ok(Read::Reply(v)),
            Err(e) if is_lost(&e) => {
                log::warn!(
                    "follower lost its connection to Redis at {}, reconnecting: {}",
                    self.shared.redacted,
                    self.shared.error(e)
                );
                self.con = None;
                Ok(Read::Dropped)
            }
            Err(e) => Err(self.shared.error(e)),
        }
    }

    /// Adds the matching topics created since the last look; until it
    /// succeeds, the next `next_batch` tries again first.
    fn refresh_topics(&mut self, deadline: Instant) -> Result<()> {
        self.refresh_pending = true;
        let key = self.shared.keys.topics.clone();
        let Some((con, _)) = self.connection(deadline)? else {
            return Err(Error::unavailable("interrupted while reconnecting to Redis"));
        };
        let reply = match redis::cmd("SMEMBERS").arg(&key).query::<Value>(con) {
            Ok(v) => v,
            Err(e) => {
                if is_lost(&e) {
                    self.con = None;
                }
                return Err(self.shared.error(e));
            }
        };
        self.refresh_pending = false;
        for name in strings(reply, &format!("Redis key {key}"))? {
            if self.known.insert(name.clone()) {
                if let Ok(t) = Topic::new(name.as_str()) {
                    if self.pattern.matches(&t) {
                        self.positions.entry(t).or_insert(Cursor::ZERO);
                    }
                }
            }
        }
        self.index_keys();
        Ok(())
    }

    /// Takes the events of an `XREAD` reply into the buffer; returns whether
    /// new topics were announced.
    fn absorb(&mut self, reply: Value) -> Result<bool> {
        let mut announced = false;
        let mut corrupt = None;
        let mut streams = array(reply).unwrap_or_default().into_iter();
        while let Some(stream) = streams.next() {
            // RESP2: [key, entries] pairs; RESP3 maps flatten to key, entries.
            let (key, entries) = match array(stream.clone()) {
                Some(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    (pair.next().and_then(text), pair.next().unwrap_or(Value::Nil))
                }
                _ => (text(stream), streams.next().unwrap_or(Value::Nil)),
            };
            let Some(key) = key else { continue };
            if key == self.shared.keys.new_topics {
                if let Some(last) = raw_entries(entries, &key)?.last() {
                    self.notice_id = last.cursor.to_string();
                    announced = true;
                }
                continue;
            }
            let Some(topic) = self.by_key.get(&key).cloned() else { continue };
            for raw in raw_entries(entries, &key)? {
                let cursor = raw.cursor;
                self.positions.insert(topic.clone(), cursor);
                match decode(raw, &topic, &key) {
                    Ok(stored) => {
                        let old = self.since.as_ref().is_some_and(|(t, heads)| {
                            heads.get(&topic).is_some_and(|h| cursor <= *h)
                                && stored.event.timestamp < *t
                        });
                        if !old {
                            self.buffer.push_back(stored);
                        }
                    }
                    Err(e) => corrupt = Some(e),
                }
            }
        }
        match corrupt {
            Some(e) => Err(e),
            None => Ok(announced),
        }
    }

    fn drain(&mut self, max: usize) -> Vec<StoredEvent> {
        let n = max.min(self.buffer.len());
        self.buffer.drain(..n).collect()
    }
}

impl Follower for RedisFollower {
    fn next_batch(&mut self, max: usize, timeout: Duration) -> Result<Vec<StoredEvent>> {
        if max == 0 || !self.buffer.is_empty() || self.wakeup.take() {
            return Ok(self.drain(max));
        }
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now + LONGEST_BLOCK * 24 * 365);
        if self.refresh_pending {
            self.refresh_topics(deadline)?;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).min(LONGEST_BLOCK);
            // BLOCK 0 would wait forever: under a millisecond left, just look.
            let block = (left >= Duration::from_millis(1)).then_some(left);
            let reply = match self.read_once(max, block, deadline)? {
                Read::Reply(reply) => reply,
                Read::Interrupted => {
                    self.wakeup.take();
                    return Ok(self.drain(max));
                }
                Read::Dropped if Instant::now() >= deadline => {
                    // Dropped just now: one more immediate attempt decides.
                    let reply = match self.read_once(max, None, deadline + MAX_BACKOFF)? {
                        Read::Reply(reply) => reply,
                        Read::Interrupted => {
                            self.wakeup.take();
                            return Ok(self.drain(max));
                        }
                        Read::Dropped => {
                            return Err(Error::unavailable(format!(
                                "lost the connection to Redis at {}",
                                self.shared.redacted
                            )))
                        }
                    };
                    if self.absorb(reply)? {
                        self.refresh_topics(deadline + MAX_BACKOFF)?;
                    }
                    return Ok(self.drain(max));
                }
                Read::Dropped => continue,
            };
            if self.absorb(reply)? {
                self.refresh_topics(deadline)?;
                // New topics may already hold events: look again without waiting,
                // and take in the topics announced meanwhile before going on.
                while let Read::Reply(reply) = self.read_once(max, None, deadline)? {
                    if !self.absorb(reply)? {
                        break;
                    }
                    self.refresh_topics(deadline)?;
                }
            }
            if self.wakeup.take() || !self.buffer.is_empty() || Instant::now() >= deadline {
                return Ok(self.drain(max));
            }
        }
    }

    fn interrupter(&self) -> Option<Arc<dyn Interrupt>> {
        Some(self.wakeup.clone())
    }
}
