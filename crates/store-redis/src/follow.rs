//! [`RedisFollower`]: `XREAD BLOCK` over the matching topics' streams and the
//! new-topic stream, on a connection of its own that it re-opens after a drop.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Value;
use seed_event::{
    Cursor, Error, FollowFrom, Follower, Result, Start, StoredEvent, Timestamp, Topic, TopicPattern,
};

use crate::codec::{array, decode, first_id, raw_entries, strings, text};
use crate::conn::Shared;
use crate::error::is_lost;

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest one `XREAD BLOCK` waits; longer timeouts loop.
const LONGEST_BLOCK: Duration = Duration::from_secs(3600);

/// A live reader of the topics matching a pattern.
pub(crate) struct RedisFollower {
    shared: Arc<Shared>,
    con: Option<redis::Connection>,
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
        let mut follower = RedisFollower {
            shared,
            con: None,
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

    /// The follower's connection, re-opened with backoff until `deadline`.
    fn connection(&mut self, deadline: Instant) -> Result<&mut redis::Connection> {
        while self.con.is_none() {
            match self.shared.connect() {
                Ok(con) => {
                    self.con = Some(con);
                    if self.backoff > FIRST_BACKOFF {
                        log::info!("follower reconnected to Redis at {}", self.shared.redacted);
                    }
                    self.backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    let now = Instant::now();
                    if now + self.backoff >= deadline {
                        return Err(e);
                    }
                    log::debug!("follower retries in {:?}: {e}", self.backoff);
                    std::thread::sleep(self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.con.as_mut().ok_or_else(|| {
            Error::unavailable(format!("no connection to Redis at {}", self.shared.redacted))
        })
    }

    /// One `XREAD`: returns the reply, or `None` when the connection dropped.
    fn read_once(
        &mut self,
        max: usize,
        block: Option<Duration>,
        deadline: Instant,
    ) -> Result<Option<Value>> {
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
        let con = self.connection(deadline)?;
        let result = con
            .set_read_timeout(Some(block.unwrap_or_default().saturating_add(margin)))
            .and_then(|()| cmd.query::<Value>(con));
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_lost(&e) => {
                log::warn!(
                    "follower lost its connection to Redis at {}, reconnecting: {}",
                    self.shared.redacted,
                    self.shared.error(e)
                );
                self.con = None;
                Ok(None)
            }
            Err(e) => Err(self.shared.error(e)),
        }
    }

    /// Adds the matching topics created since the last look.
    fn refresh_topics(&mut self, deadline: Instant) -> Result<()> {
        let key = self.shared.keys.topics.clone();
        let con = self.connection(deadline)?;
        let reply = match redis::cmd("SMEMBERS").arg(&key).query::<Value>(con) {
            Ok(v) => v,
            Err(e) => {
                if is_lost(&e) {
                    self.con = None;
                }
                return Err(self.shared.error(e));
            }
        };
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
        if max == 0 || !self.buffer.is_empty() {
            return Ok(self.drain(max));
        }
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now + LONGEST_BLOCK * 24 * 365);
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).min(LONGEST_BLOCK);
            // BLOCK 0 would wait forever: under a millisecond left, just look.
            let block = (left >= Duration::from_millis(1)).then_some(left);
            let Some(reply) = self.read_once(max, block, deadline)? else {
                if Instant::now() >= deadline {
                    // Dropped just now: one more immediate attempt decides.
                    let Some(reply) = self.read_once(max, None, deadline + MAX_BACKOFF)? else {
                        return Err(Error::unavailable(format!(
                            "lost the connection to Redis at {}",
                            self.shared.redacted
                        )));
                    };
                    if self.absorb(reply)? {
                        self.refresh_topics(deadline + MAX_BACKOFF)?;
                    }
                    return Ok(self.drain(max));
                }
                continue;
            };
            if self.absorb(reply)? {
                self.refresh_topics(deadline)?;
                // New topics may already hold events: look again without waiting,
                // and take in the topics announced meanwhile before going on.
                while let Some(reply) = self.read_once(max, None, deadline)? {
                    if !self.absorb(reply)? {
                        break;
                    }
                    self.refresh_topics(deadline)?;
                }
            }
            if !self.buffer.is_empty() || Instant::now() >= deadline {
                return Ok(self.drain(max));
            }
        }
    }
}
