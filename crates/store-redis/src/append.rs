//! Appending: the Lua script for batches, conditional appends and first
//! appends to a topic, and a pipelined fast path for single appends that
//! combines the appends of concurrent threads into one round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;

use redis::{ConnectionLike, Value};
use seed_event::support::{conflict, lock, AppendCondition};
use seed_event::{Cursor, Error, Event, Result, Topic};

use crate::codec::{array, int, parse_id, text};
use crate::conn::Shared;
use crate::error::is_lost;
use crate::scripts;

/// How an append must treat the topic's byte counter and a possible earlier try.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The first try: count the bytes.
    Fresh,
    /// The fast path already counted the bytes but the id was too low (a late event).
    Counted,
    /// The fast path's connection failed: it may have landed, so look before appending.
    Lost,
}

/// Runs the append script for `events` of `topic`; `expected` makes it conditional.
pub(crate) fn script_append(
    shared: &Shared,
    topic: &Topic,
    events: &[Event],
    condition: AppendCondition,
    attempt: Attempt,
) -> Result<Vec<Cursor>> {
    let keys = &shared.keys;
    let (stream, meta) = (keys.stream(topic.as_str()), keys.meta(topic.as_str()));
    let show = |c: Option<Cursor>| c.map_or("none".to_string(), |c| c.to_string());
    let expected_arg = match condition {
        AppendCondition::Always => String::new(),
        AppendCondition::LastIs(expected) => show(expected),
    };
    let first_id = events.first().map(|e| e.id.to_string()).unwrap_or_default();
    let first_ms = events.first().map_or(0, millis);
    // Milliseconds that never decrease along the batch, as the ids will have them.
    let mut floor = 0;
    let ms: Vec<i64> = events
        .iter()
        .map(|e| {
            floor = floor.max(millis(e));
            floor
        })
        .collect();
    let lines: Vec<String> = events.iter().map(Event::to_json_line).collect();
    let bytes: usize = match attempt {
        Attempt::Counted => 0,
        Attempt::Fresh | Attempt::Lost => lines.iter().map(|l| l.len() + 1).sum(),
    };
    let reply: Value = shared.run(|con, retry| {
        let mut invocation = scripts::APPEND.prepare_invoke();
        invocation.key(&stream).key(&meta).key(&keys.topics).key(&keys.new_topics);
        invocation.arg(topic.as_str()).arg(&expected_arg);
        // On a retry, or after a lost fast path, the script first looks for the events.
        let dedup = retry || attempt == Attempt::Lost;
        invocation.arg(if dedup { first_id.as_str() } else { "" });
        invocation.arg(first_ms).arg(bytes);
        for (ms, line) in ms.iter().zip(&lines) {
            invocation.arg(format!("{ms}-*")).arg(line);
        }
        invocation.invoke(con)
    })?;
    let bad =
        |what: &str| Error::corrupt(format!("the append script on {}", shared.redacted), what);
    let mut items = array(reply).ok_or_else(|| bad("expected a list"))?.into_iter();
    let status = items.next().as_ref().and_then(int);
    if status == Some(0) {
        let actual = items.next().and_then(text).and_then(|t| t.parse().ok());
        let expected = match condition {
            AppendCondition::LastIs(expected) => expected,
            AppendCondition::Always => None,
        };
        return Err(conflict(topic, expected, actual));
    }
    let mut ids: Vec<Cursor> = items
        .map(|v| text(v).and_then(|t| t.parse().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("expected stream ids"))?;
    match status {
        Some(1) => {
            // Only the first id came back; the others follow from the milliseconds.
            let mut last = *ids.first().ok_or_else(|| bad("returned no id"))?;
            for w in ms.windows(2) {
                last = if w[1] == w[0] {
                    Cursor::new(last.major(), last.minor().saturating_add(1))
                } else {
                    Cursor::new(w[1] as u64, 0)
                };
                ids.push(last);
            }
        }
        Some(2) => {}
        _ => return Err(bad("expected a status")),
    }
    if ids.len() != events.len() {
        return Err(bad("returned another number of ids than events sent"));
    }
    Ok(ids)
}

/// The event's time in whole milliseconds, at least 0 (stream ids are unsigned).
pub(crate) fn millis(event: &Event) -> i64 {
    event.timestamp.unix_millis().max(0)
}

/// One single append waiting for a round trip.
struct Request {
    topic: Topic,
    ms: i64,
    line: String,
    outcome: Mutex<Option<Outcome>>,
    /// The requesting thread, unparked when its outcome is in or when a
    /// round ended and it may lead the next.
    thread: Thread,
}

/// What the round trip did with a request.
enum Outcome {
    /// Stored at this id; `true` when the topic was missing from the topic set.
    Stored(Cursor, bool),
    /// The stream's top is above the event's time; the bytes were counted.
    TooLow,
    /// The connection failed mid-way: the event may or may not be stored.
    Lost,
    /// Nothing was sent (e.g. no connection could be opened).
    Failed(Error),
}

#[derive(Default)]
struct Queue {
    pending: Vec<Arc<Request>>,
    /// How many threads are doing a round trip for the queue right now.
    leaders: usize,
    /// The topics of the rounds in flight: a topic is in one round at a time.
    busy: Vec<Topic>,
}

impl Queue {
    /// Whether a queued request's topic is in no round in flight.
    fn has_free(&self) -> bool {
        self.pending.iter().any(|r| !self.busy.contains(&r.topic))
    }

    /// Takes the queued requests whose topics are in no round in flight, and
    /// marks their topics busy.
    fn take_free(&mut self) -> Vec<Arc<Request>> {
        let (free, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|r| !self.busy.contains(&r.topic));
        self.pending = wait;
        for r in &free {
            if !self.busy.contains(&r.topic) {
                self.busy.push(r.topic.clone());
            }
        }
        free
    }
}

/// How many rounds may be in flight at once, each on its own connection.
///
/// With one, the server waits while the client hands out replies and the
/// client waits while the server works; on an idle machine each of those
/// waits also costs a CPU's wake-up. A second round overlaps them, for other
/// topics only: two rounds of one topic could reach the server in either
/// order, and an append refused for the top being above its time in a round
/// whose reply is lost could not tell whether its bytes were counted.
const ROUNDS_IN_FLIGHT: usize = 2;

/// Combines concurrent single appends into pipelines (group commit).
///
/// A thread queues its append; if fewer than [`ROUNDS_IN_FLIGHT`] round
/// trips are in flight it becomes a leader, sends everything queued in one round trip (`SADD` to the topic
/// set and `HINCRBY` of the bytes per topic, `XADD <ms>-*` per event), hands
/// each waiting thread its reply and wakes them. Alone, a thread pays one
/// round trip per append; under load, one round trip carries many appends.
#[derive(Default)]
pub(crate) struct Appender {
    queue: Mutex<Queue>,
    /// Topics this store has appended to (so they are in the topic set), with
    /// the highest id milliseconds it has seen in each.
    known: Mutex<HashMap<Topic, i64>>,
    /// Events appended per topic since its last retention check.
    since_check: Mutex<HashMap<Topic, u64>>,
}

impl Appender {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    fn is_known(&self, topic: &Topic) -> bool {
        lock(&self.known).contains_key(topic)
    }

    /// Counts `n` events appended to `topic`; true when a retention check is due.
    pub(crate) fn count_towards_check(&self, topic: &Topic, n: u64) -> bool {
        let mut counts = lock(&self.since_check);
        let count = counts.entry(topic.clone()).or_insert(0);
        *count += n;
        if *count >= crate::RETENTION_CHECK_EVERY {
            *count = 0;
            return true;
        }
        false
    }

    /// Records that `topic` is in the topic set and holds an entry at `id`.
    pub(crate) fn learn(&self, topic: &Topic, id: Cursor) {
        let mut known = lock(&self.known);
        let floor = known.entry(topic.clone()).or_insert(0);
        *floor = (*floor).max(i64::try_from(id.major()).unwrap_or(i64::MAX));
    }

    /// Appends one event; the event is only read (encoded), never moved.
    pub(crate) fn append(&self, shared: &Shared, event: &Event) -> Result<Cursor> {
        let topic = &event.topic;
        let single = std::slice::from_ref(event);
        if !self.is_known(topic) {
            // The first append of this store to a topic goes through the script,
            // which registers the topic and announces it to followers atomically.
            let cursor = first(script_append(
                shared,
                topic,
                single,
                AppendCondition::Always,
                Attempt::Fresh,
            )?)?;
            self.learn(topic, cursor);
            return Ok(cursor);
        }
        let request = Arc::new(Request {
            topic: topic.clone(),
            ms: millis(event),
            line: event.to_json_line(),
            outcome: Mutex::new(None),
            thread: std::thread::current(),
        });
        let outcome = self.wait_for(shared, &request);
        match outcome {
            Outcome::Stored(cursor, missing) => {
                if missing {
                    // The topic set lost this topic (e.g. flushed): announce it again.
                    let notice = &shared.keys.new_topics;
                    let _ = shared.run(|con, _| {
                        redis::cmd("XADD")
                            .arg(notice)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(1000)
                            .arg("*")
                            .arg("t")
                            .arg(topic.as_str())
                            .query::<Value>(con)
                    });
                }
                Ok(cursor)
            }
            Outcome::TooLow => {
                // Another writer is ahead: the script continues from its top.
                let cursor = first(script_append(
                    shared,
                    topic,
                    single,
                    AppendCondition::Always,
                    Attempt::Counted,
                )?)?;
                self.learn(topic, cursor);
                Ok(cursor)
            }
            Outcome::Lost => {
                let cursor = first(script_append(
                    shared,
                    topic,
                    single,
                    AppendCondition::Always,
                    Attempt::Lost,
                )?)?;
                self.learn(topic, cursor);
                Ok(cursor)
            }
            Outcome::Failed(e) => Err(e),
        }
    }

    /// Appends a batch of events of one topic, atomically.
    ///
    /// A store's first batch to a topic goes through the script. Later ones are
    /// one `MULTI`/`SADD`/`XADD`…/`HINCRBY`/`EXEC` transaction in which every
    /// entry gets the same milliseconds (the batch's latest event time, raised
    /// to the topic's floor): `XADD <ms>-*` then either refuses all entries
    /// (another writer is ahead: the script takes over) or accepts all, so the
    /// batch is never stored in part. A lost reply falls back to the script,
    /// which finds the batch if it landed.
    pub(crate) fn append_batch(
        &self,
        shared: &Shared,
        topic: &Topic,
        events: &[Event],
    ) -> Result<Vec<Cursor>> {
        if !self.is_known(topic) {
            let ids =
                script_append(shared, topic, events, AppendCondition::Always, Attempt::Fresh)?;
            if let Some(last) = ids.last() {
                self.learn(topic, *last);
            }
            return Ok(ids);
        }
        let keys = &shared.keys;
        let ms = {
            let mut known = lock(&self.known);
            let floor = known.entry(topic.clone()).or_insert(0);
            *floor = events.iter().map(millis).fold(*floor, i64::max);
            *floor
        };
        let id = format!("{ms}-*");
        let (stream, meta) = (keys.stream(topic.as_str()), keys.meta(topic.as_str()));
        let (mut con, _) = shared.take()?;
        // The transaction is written in chunks while the rest is serialized, so
        // the server queues the first commands while the client encodes the last.
        let sent = (|| -> redis::RedisResult<Value> {
            const CHUNK: usize = 64 * 1024;
            let mut packed = Vec::with_capacity(CHUNK + 4096);
            let mut cmd = redis::Cmd::new();
            let mut line = Vec::with_capacity(1024);
            let mut bytes = 0usize;
            pack(&mut packed, &mut cmd, &[b"MULTI"]);
            pack(
                &mut packed,
                &mut cmd,
                &[b"SADD", keys.topics.as_bytes(), topic.as_str().as_bytes()],
            );
            for event in events {
                line.clear();
                serde_json::to_writer(&mut line, event).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "cannot serialize an event",
                        e.to_string(),
                    ))
                })?;
                bytes += line.len() + 1;
                pack(
                    &mut packed,
                    &mut cmd,
                    &[b"XADD", stream.as_bytes(), id.as_bytes(), b"e", &line],
                );
                if packed.len() >= CHUNK {
                    con.send_packed_command(&packed)?;
                    packed.clear();
                }
            }
            let total = bytes.to_string();
            pack(&mut packed, &mut cmd, &[b"HINCRBY", meta.as_bytes(), b"bytes", total.as_bytes()]);
            pack(&mut packed, &mut cmd, &[b"EXEC"]);
            con.send_packed_command(&packed)?;
            // MULTI's OK and one QUEUED per command, then EXEC's results.
            for _ in 0..events.len() + 3 {
                con.recv_response()?;
            }
            con.recv_response()
        })();
        let replies = match sent {
            Ok(Value::Array(replies)) if replies.len() == events.len() + 2 => {
                shared.give_back(con);
                replies
            }
            Ok(Value::ServerError(e)) => {
                // Refused before running (e.g. out of memory): nothing was written.
                shared.give_back(con);
                return Err(shared.error(e.into()));
            }
            Ok(_) | Err(_) => {
                // The transaction ran whole or not at all; the script finds out which.
                drop(con);
                return script_append(
                    shared,
                    topic,
                    events,
                    AppendCondition::Always,
                    Attempt::Lost,
                );
            }
        };
        let ids: Option<Vec<Cursor>> = replies[1..=events.len()]
            .iter()
            .map(|r| match r {
                Value::BulkString(id) => parse_id(id),
                _ => None,
            })
            .collect();
        match ids {
            Some(ids) => Ok(ids),
            None => {
                if let Some(Value::ServerError(e)) = replies.get(1) {
                    if !e.details().is_some_and(|d| d.contains("equal or smaller")) {
                        return Err(shared.error(e.clone().into()));
                    }
                }
                // Another writer is ahead (every XADD was refused): the script continues from its top.
                let ids = script_append(
                    shared,
                    topic,
                    events,
                    AppendCondition::Always,
                    Attempt::Counted,
                )?;
                if let Some(last) = ids.last() {
                    self.learn(topic, *last);
                }
                Ok(ids)
            }
        }
    }

    /// Queues `request` and returns its outcome, leading round trips while needed.
    ///
    /// A thread whose request another leader took sleeps until that leader
    /// unparks it with its outcome, without touching the queue's lock again.
    fn wait_for(&self, shared: &Shared, request: &Arc<Request>) -> Outcome {
        self.lock().pending.push(request.clone());
        loop {
            if let Some(outcome) = lock(&request.outcome).take() {
                return outcome;
            }
            let mut queue = self.lock();
            if queue.leaders < ROUNDS_IN_FLIGHT && queue.has_free() {
                queue.leaders += 1;
                let batch = queue.take_free();
                drop(queue);
                let turn = Turn { appender: self, batch };
                self.round_trip(shared, &turn.batch);
                drop(turn);
                continue;
            }
            drop(queue);
            // An unpark that came first makes this return at once.
            std::thread::park();
        }
    }
}

/// A leader's round: on drop (also when unwinding) every request of the batch
/// has an outcome and its thread is unparked, and the first request queued
/// meanwhile is unparked to lead the next round, so no waiter is stranded.
struct Turn<'a> {
    appender: &'a Appender,
    batch: Vec<Arc<Request>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        for r in &self.batch {
            let mut outcome = lock(&r.outcome);
            if outcome.is_none() {
                *outcome = Some(Outcome::Lost);
            }
            drop(outcome);
            r.thread.unpark();
        }
        let mut queue = self.appender.lock();
        queue.leaders -= 1;
        queue.busy.retain(|t| !self.batch.iter().any(|r| r.topic == *t));
        if let Some(next) = queue.pending.first() {
            next.thread.unpark();
        }
    }
}

/// The cursor of a single append: the first (only) id the script returned.
pub(crate) fn first(ids: Vec<Cursor>) -> Result<Cursor> {
    ids.into_iter().next().ok_or_else(|| Error::corrupt("the append script", "returned no id"))
}

impl Appender {
    /// Sends every request of `batch` in one round trip and records each outcome.
    ///
    /// With several requests, `MULTI`/`EXEC` makes the round all or nothing,
    /// also when the connection drops mid-way, so a lost round is either
    /// wholly stored (the retry finds its events) or not at all (the retry
    /// appends them), and the byte counter stays exact. One request's three
    /// commands go in one write without a transaction (cheaper alone); only a
    /// connection cut inside that write could leave its byte count off. Each
    /// event's id milliseconds are raised to the highest this store has used
    /// in the topic, so its own appends never fall below the stream's top;
    /// only another writer can put it higher.
    fn round_trip(&self, shared: &Shared, batch: &[Arc<Request>]) {
        let set = |r: &Request, o: Outcome| {
            *lock(&r.outcome) = Some(o);
        };
        let keys = &shared.keys;
        // Per distinct topic one SADD (keeps the topic set whole) and one HINCRBY
        // (the bytes of all its events), around one XADD per event.
        let mut topics: Vec<(&Topic, usize)> = Vec::new();
        for r in batch {
            match topics.iter_mut().find(|(t, _)| *t == &r.topic) {
                Some((_, bytes)) => *bytes += r.line.len() + 1,
                None => topics.push((&r.topic, r.line.len() + 1)),
            }
        }
        let mut packed = Vec::with_capacity(batch.iter().map(|r| r.line.len() + 128).sum());
        let mut cmd = redis::Cmd::new();
        // One request needs no transaction: its commands go in one write and
        // run together; several are wrapped in MULTI/EXEC.
        let transaction = batch.len() > 1;
        if transaction {
            pack(&mut packed, &mut cmd, &[b"MULTI"]);
        }
        for (t, _) in &topics {
            pack(&mut packed, &mut cmd, &[b"SADD", keys.topics.as_bytes(), t.as_str().as_bytes()]);
        }
        {
            let mut known = lock(&self.known);
            for r in batch {
                let floor = known.entry(r.topic.clone()).or_insert(0);
                *floor = (*floor).max(r.ms);
                let (stream, id) = (keys.stream(r.topic.as_str()), format!("{floor}-*"));
                let line = r.line.as_bytes();
                pack(
                    &mut packed,
                    &mut cmd,
                    &[b"XADD", stream.as_bytes(), id.as_bytes(), b"e", line],
                );
            }
        }
        for (t, bytes) in &topics {
            let (meta, bytes) = (keys.meta(t.as_str()), bytes.to_string());
            pack(&mut packed, &mut cmd, &[b"HINCRBY", meta.as_bytes(), b"bytes", bytes.as_bytes()]);
        }
        if transaction {
            pack(&mut packed, &mut cmd, &[b"EXEC"]);
        }
        let queued = topics.len() * 2 + batch.len();
        let mut con = match shared.take() {
            Ok((con, _)) => con,
            Err(e) => {
                let text = e.to_string();
                for r in batch {
                    set(r, Outcome::Failed(Error::unavailable(text.clone())));
                }
                return;
            }
        };
        // In a transaction, skip MULTI's OK and the QUEUED replies: the EXEC reply holds the results.
        let replies = match transaction {
            true => {
                con.req_packed_commands(&packed, queued + 1, 1).map(|mut v| v.pop().and_then(array))
            }
            false => con.req_packed_commands(&packed, 0, queued).map(Some),
        };
        let replies = match replies {
            Ok(Some(replies)) if replies.len() == queued => {
                shared.give_back(con);
                replies
            }
            replies => {
                if let Err(e) = &replies {
                    if !is_lost(e) {
                        log::warn!("a pipelined append failed: {}", shared.error_text(e));
                    }
                }
                for r in batch {
                    set(r, Outcome::Lost);
                }
                return;
            }
        };
        let missing: Vec<&Topic> = topics
            .iter()
            .zip(&replies)
            .filter(|(_, reply)| int(reply) == Some(1))
            .map(|((t, _), _)| *t)
            .collect();
        for (r, reply) in batch.iter().zip(&replies[topics.len()..]) {
            let outcome = match reply {
                Value::BulkString(id) => match parse_id(id) {
                    Some(cursor) => Outcome::Stored(cursor, missing.contains(&&r.topic)),
                    None => {
                        Outcome::Failed(Error::corrupt("XADD", "returned an id that is not ms-seq"))
                    }
                },
                Value::ServerError(e)
                    if e.details().is_some_and(|d| d.contains("equal or smaller")) =>
                {
                    Outcome::TooLow
                }
                Value::ServerError(e) => Outcome::Failed(shared.error(e.clone().into())),
                other => {
                    Outcome::Failed(Error::corrupt("XADD", format!("unexpected reply {other:?}")))
                }
            };
            set(r, outcome);
        }
    }
}

/// Appends one command to `packed` in the Redis protocol, packed by `cmd`
/// (cleared first, so one command's buffer serves a whole batch).
fn pack(packed: &mut Vec<u8>, cmd: &mut redis::Cmd, args: &[&[u8]]) {
    cmd.clear();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.write_packed_command(packed);
}
