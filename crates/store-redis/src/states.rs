//! Entity states on Redis: the [`StateBackend`] of [`RedisStore`].
//!
//! The change events of type `T` are the entries of the topic `state.T`'s
//! stream (field `e` the event, field `k` the entity id); the newest record
//! of each entity is in the hash `<prefix>{state.T}:latest` (one `HGET`), and
//! the kept versions in `<prefix>{state.T}:v`. [`scripts::PUT_STATE`] applies
//! a change to all three at once, and [`scripts::EDIT_STATE`] computes an
//! update from the newest record on the server first (one round trip).

use redis::Value;

use seed_event::{
    change_of, state_topic, version_conflict, ChangeEvent, Cursor, DataEdit, Edited, Error,
    EventStream, Hole, Result, StateBackend, StateEdit, StatePut, StoredEvent, Topic,
};

use crate::codec::{array, decode, int, parse_id, text, RawEntry};
use crate::{scripts, RedisStore};

/// Fields one `HSCAN` of a listing asks for.
const SCAN: usize = 1000;

/// A stored `<stream id> <line>` (after the version of a latest value) as a record.
fn record(value: &str, topic: &Topic, key: &str) -> Result<StoredEvent> {
    let bad =
        || Error::corrupt(format!("Redis key {key}"), format!("bad state record {value:.60?}"));
    let (id, line) = value.split_once(' ').ok_or_else(bad)?;
    let cursor = parse_id(id.as_bytes()).ok_or_else(bad)?;
    decode(RawEntry { cursor, line: Some(line.as_bytes().to_vec()) }, topic, key)
}

/// A latest value, `<version> <stream id> <layout> <line>` (or, written
/// before layouts, `<version> <stream id> <line>`), as a record.
fn latest_record(value: &str, topic: &Topic, key: &str) -> Result<StoredEvent> {
    let rest = value.split_once(' ').map_or("", |(_, rest)| rest);
    match rest.split_once(' ') {
        Some((id, tail)) if !tail.starts_with('{') => {
            let line = tail.split_once(' ').map_or("", |(_, line)| line);
            record(&format!("{id} {line}"), topic, key)
        }
        _ => record(rest, topic, key),
    }
}

/// Sends `cmd`, an `EVALSHA` of `script`, loading the script first if the
/// server does not have it (a restarted or flushed server).
pub(crate) fn evalsha(
    con: &mut redis::Connection,
    script: &redis::Script,
    cmd: &redis::Cmd,
) -> redis::RedisResult<Value> {
    match cmd.query(con) {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load(con)?;
            cmd.query(con)
        }
        other => other,
    }
}

/// The layout of `change` in the latest hash (what [`scripts::EDIT_STATE`]
/// reads): `L` (`D` for a tombstone), then the 1-based first and last byte
/// of the state's status, data, created_at, updated_at and metadata in the
/// line; `-` if the event carries no such state.
fn layout(change: &ChangeEvent) -> String {
    let Some(spans) = change.spans() else { return "-".into() };
    let mut out = String::with_capacity(48);
    out.push(if change.deleted() { 'D' } else { 'L' });
    for (n, (first, last)) in spans.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        push_number(&mut out, *first);
        out.push(',');
        push_number(&mut out, *last);
    }
    out
}

/// Appends `n` in decimal (what `to_string` gives, without a String per number).
fn push_number(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().for_each(|d| out.push(char::from(*d)));
}

impl RedisStore {
    fn history_len(&self) -> u64 {
        self.shared.config.state_history.max(1)
    }

    /// The kept versions at `fields` (`<entity id>\n<version>`) of the
    /// state topic `topic`, in order, skipping those not kept; one round trip.
    fn versions(&self, topic: &Topic, fields: &[String]) -> Result<Vec<StoredEvent>> {
        let keys = self.keys();
        let (versions, stream) = (keys.versions(topic.as_str()), keys.stream(topic.as_str()));
        let reply: Value = self.shared.run(|con, _| {
            let mut invocation = scripts::READ_VERSIONS.prepare_invoke();
            invocation.key(&versions).key(&stream).arg(fields);
            invocation.invoke(con)
        })?;
        let bad =
            || Error::corrupt(format!("Redis key {versions}"), "bad reply to a versions read");
        let mut out = Vec::with_capacity(fields.len());
        for item in array(reply).ok_or_else(bad)? {
            if item == Value::Nil {
                continue; // that version is not kept
            }
            let mut pair = array(item).ok_or_else(bad)?.into_iter();
            let (Some(id), Some(line)) = (pair.next().and_then(text), pair.next()) else {
                return Err(bad());
            };
            let line = match line {
                Value::BulkString(bytes) => bytes,
                _ => return Err(bad()),
            };
            if id.is_empty() {
                let value = String::from_utf8_lossy(&line);
                return Err(Error::corrupt(
                    format!("Redis key {versions}"),
                    format!("a kept version is {value:.60?}, expected `<stream id> <bytes>` of an entry in {stream}"),
                ));
            }
            let cursor = parse_id(id.as_bytes()).ok_or_else(bad)?;
            out.push(decode(RawEntry { cursor, line: Some(line) }, topic, &versions)?);
        }
        Ok(out)
    }

    /// The start of an `EVALSHA` of a state script (send it with
    /// [`evalsha`]): the keys both take (the topic's stream and meta hash,
    /// the topic set and its notices, the latest and versions hashes) and
    /// the topic as the first argument; `room` is what the other arguments
    /// need, in bytes. One command buffer: each argument is copied once.
    fn state_command(&self, script: &redis::Script, topic: &str, room: usize) -> redis::Cmd {
        let keys = self.keys();
        let mut cmd = redis::Cmd::with_capacity(24, room + 320);
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(6)
            .arg(keys.stream(topic))
            .arg(keys.meta(topic))
            .arg(&keys.topics)
            .arg(&keys.new_topics)
            .arg(keys.latest(topic))
            .arg(keys.versions(topic))
            .arg(topic);
        cmd
    }

    /// The `EVALSHA` of [`scripts::PUT_STATE`] that applies `put`.
    pub(crate) fn change_command(&self, put: &StatePut<'_>) -> redis::Cmd {
        let change = put.change;
        let line = change.line();
        let mut cmd = self.state_command(&scripts::PUT_STATE, change.topic().as_str(), line.len());
        cmd.arg(put.id)
            .arg(put.version - 1)
            .arg(put.version)
            .arg(change.timestamp().unix_millis().max(0))
            .arg(line)
            .arg(put.version.saturating_sub(self.history_len()))
            .arg(change.id().hyphenated().encode_lower(&mut [0; 36]) as &str)
            .arg(layout(change))
            .arg(line.len() + 1);
        cmd
    }

    /// Reads the script's reply: the change's stream id, or the conflict.
    fn change_reply(&self, put: &StatePut<'_>, reply: Value) -> Result<Cursor> {
        let topic = put.change.topic();
        let keys = self.keys();
        let bad = || {
            Error::corrupt(
                format!("Redis key {}", keys.latest(topic.as_str())),
                "bad reply to a state change",
            )
        };
        let mut items = array(reply).ok_or_else(bad)?.into_iter();
        let ok = items.next().as_ref().and_then(int).ok_or_else(bad)?;
        let second = items.next().ok_or_else(bad)?;
        if ok == 1 {
            let id = text(second).ok_or_else(bad)?;
            let cursor = parse_id(id.as_bytes()).ok_or_else(bad)?;
            self.appender.learn(topic, cursor);
            return Ok(cursor);
        }
        let actual = text(second).and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        Err(version_conflict(put.kind, put.id, put.version - 1, actual))
    }
}

impl RedisStore {
    /// The `EVALSHA` of [`scripts::EDIT_STATE`] that applies `edit`.
    fn edit_command(&self, edit: &StateEdit<'_>, topic: &str) -> redis::Cmd {
        let version = edit.expected + 1;
        let room = edit.texts.iter().map(String::len).sum::<usize>() + 128;
        let mut cmd = self.state_command(&scripts::EDIT_STATE, topic, room);
        cmd.arg(edit.id)
            .arg(edit.expected)
            .arg(version)
            .arg(edit.now.unix_millis().max(0))
            .arg(format!("\"{}\"", edit.now))
            .arg(version.saturating_sub(self.history_len()))
            .arg(edit.event_id)
            .arg(edit.status.unwrap_or(""));
        let mut from = String::from(" ");
        for s in edit.status_from {
            from.push_str(s);
            from.push(' ');
        }
        cmd.arg(from);
        match edit.data {
            DataEdit::Keep => cmd.arg("k").arg(""),
            DataEdit::Replace(d) => cmd.arg("r").arg(d),
            DataEdit::Merge(p) => cmd.arg("m").arg(p),
        };
        cmd.arg(edit.metadata.unwrap_or(""));
        let holes: String = edit
            .holes
            .iter()
            .map(|hole| match hole {
                Hole::Status => 's',
                Hole::Data => 'd',
                Hole::Metadata => 'm',
                Hole::CreatedAt => 'c',
                Hole::UpdatedAt => 'u',
            })
            .collect();
        cmd.arg(holes);
        for text in edit.texts {
            cmd.arg(text);
        }
        cmd
    }

    /// Reads the edit script's reply.
    fn edit_reply(&self, topic: &Topic, reply: Value) -> Result<Edited> {
        let key = self.keys().latest(topic.as_str());
        let bad = || Error::corrupt(format!("Redis key {key}"), "bad reply to a state edit");
        let mut items = array(reply).ok_or_else(bad)?.into_iter();
        let ok = items.next().as_ref().and_then(int).ok_or_else(bad)?;
        if ok != 1 {
            return match items.next() {
                None => Ok(Edited::Refused(None)),
                Some(v) => {
                    let value = text(v).ok_or_else(bad)?;
                    Ok(Edited::Refused(Some(latest_record(&value, topic, &key)?)))
                }
            };
        }
        let id = items.next().and_then(text).ok_or_else(bad)?;
        let cursor = parse_id(id.as_bytes()).ok_or_else(bad)?;
        let line = items.next().and_then(text).ok_or_else(bad)?;
        self.appender.learn(topic, cursor);
        let record = decode(RawEntry { cursor, line: Some(line.into_bytes()) }, topic, &key)?;
        Ok(Edited::Applied(record))
    }
}

impl StateBackend for RedisStore {
    fn put(&self, put: &StatePut<'_>) -> Result<Cursor> {
        put.validate()?;
        let cmd = self.change_command(put);
        let reply = self.shared.run(|con, _| evalsha(con, &scripts::PUT_STATE, &cmd))?;
        self.change_reply(put, reply)
    }

    fn edits(&self) -> bool {
        true
    }

    fn edit(&self, edit: &StateEdit<'_>) -> Result<Edited> {
        let topic = state_topic(edit.kind)?;
        let cmd = self.edit_command(edit, topic.as_str());
        let reply = self.shared.run(|con, _| evalsha(con, &scripts::EDIT_STATE, &cmd))?;
        self.edit_reply(&topic, reply)
    }

    fn latest(&self, kind: &str, id: &str) -> Result<Option<StoredEvent>> {
        let topic = state_topic(kind)?;
        let key = self.keys().latest(topic.as_str());
        let value: Option<String> =
            self.shared.run(|con, _| redis::cmd("HGET").arg(&key).arg(id).query(con))?;
        value.map(|v| latest_record(&v, &topic, &key)).transpose()
    }

    fn at_version(&self, kind: &str, id: &str, version: u64) -> Result<Option<StoredEvent>> {
        let topic = state_topic(kind)?;
        let mut kept = self.versions(&topic, &[format!("{id}\n{version}")])?;
        Ok(kept.pop())
    }

    fn history(&self, kind: &str, id: &str) -> Result<Vec<StoredEvent>> {
        let Some(newest) = self.latest(kind, id)? else { return Ok(Vec::new()) };
        let Some((_, last)) = change_of(&newest.event) else { return Ok(vec![newest]) };
        let topic = state_topic(kind)?;
        let first = last.saturating_sub(self.history_len() - 1).max(1);
        let fields: Vec<String> = (first..=last).map(|v| format!("{id}\n{v}")).collect();
        self.versions(&topic, &fields)
    }

    fn list(&self, kind: &str) -> Result<EventStream<'_>> {
        let topic = state_topic(kind)?;
        let key = self.keys().latest(topic.as_str());
        Ok(Box::new(Listing { store: self, topic, key, cursor: None, page: Vec::new() }))
    }

    fn history_limit(&self) -> u64 {
        self.history_len()
    }

    fn compact(&self, kind: &str) -> Result<u64> {
        // Versions past the limit go with the change that pushes them out.
        state_topic(kind)?;
        Ok(0)
    }

    fn compacted_through(&self, kind: &str) -> Result<Option<Cursor>> {
        let topic = state_topic(kind)?;
        let key = self.keys().stream(topic.as_str());
        let info: Value = self.shared.run(|con, _| {
            redis::cmd("EXISTS").arg(&key).query::<i64>(con).and_then(|n| {
                if n == 0 {
                    Ok(Value::Nil)
                } else {
                    redis::cmd("XINFO").arg("STREAM").arg(&key).query(con)
                }
            })
        })?;
        let mut items = array(info).unwrap_or_default().into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            if text(name).as_deref() == Some("max-deleted-entry-id") {
                let id = text(value).and_then(|t| parse_id(t.as_bytes()));
                return Ok(id.filter(|c| *c > Cursor::ZERO));
            }
        }
        Ok(None)
    }
}

/// Streams the newest record of every entity with `HSCAN`, a page at a time.
struct Listing<'a> {
    store: &'a RedisStore,
    topic: Topic,
    key: String,
    /// The next `HSCAN` cursor; `None` before the first, `Some("0")` at the end.
    cursor: Option<String>,
    page: Vec<String>,
}

impl Iterator for Listing<'_> {
    type Item = Result<StoredEvent>;

    fn next(&mut self) -> Option<Result<StoredEvent>> {
        loop {
            if let Some(value) = self.page.pop() {
                return Some(latest_record(&value, &self.topic, &self.key));
            }
            if self.cursor.as_deref() == Some("0") {
                return None;
            }
            let at = self.cursor.clone().unwrap_or_else(|| "0".to_string());
            let reply: Result<(String, Vec<String>)> = self.store.shared.run(|con, _| {
                redis::cmd("HSCAN").arg(&self.key).arg(&at).arg("COUNT").arg(SCAN).query(con)
            });
            match reply {
                Ok((next, pairs)) => {
                    self.cursor = Some(next);
                    self.page = pairs.into_iter().skip(1).step_by(2).collect();
                }
                Err(e) => {
                    self.cursor = Some("0".to_string());
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RedisServer;
    use seed_event::{Event, EventStore, JsonObject, Query, StoredEvent};

    /// A retry whose first try landed (its reply lost with the connection)
    /// answers with the first try's id, and stores nothing twice.
    #[test]
    fn a_retried_change_is_stored_once() {
        let server = RedisServer::start();
        let store = RedisStore::open(&server.url()).unwrap();
        let topic = state_topic("job").unwrap();
        let payload = serde_json::json!({"entity_id": "a", "version": 1});
        let event =
            Event::new(topic.clone(), "t", payload.as_object().cloned().unwrap_or_default());
        let change = ChangeEvent::from_event(&event).unwrap();
        let put = StatePut { kind: "job", id: "a", version: 1, change: &change };
        let cmd = store.change_command(&put);
        let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
        let mut send = || evalsha(&mut con, &scripts::PUT_STATE, &cmd).unwrap();
        let first = store.change_reply(&put, send()).unwrap();
        let again = store.change_reply(&put, send()).unwrap();
        assert_eq!(first, again);
        assert_eq!(store.query(&Query::topic(&topic)).unwrap().len(), 1);
        let other = Event::new(topic, "t", JsonObject::new());
        let payload = serde_json::json!({"entity_id": "a", "version": 1});
        let other = Event { payload: payload.as_object().cloned().unwrap_or_default(), ..other };
        let other = ChangeEvent::from_event(&other).unwrap();
        let put = StatePut { kind: "job", id: "a", version: 1, change: &other };
        let err = store.put(&put).unwrap_err();
        assert_eq!(err.to_string(), "conflict: job/a already exists");
    }

    /// A kept version holds its stream id and size (the line is the stream
    /// entry's); one written before, with the line, is read the same and
    /// drops out of the history with its bytes counted off.
    #[test]
    fn kept_versions_old_and_new_read_alike_and_leave_with_their_bytes() {
        let server = RedisServer::start();
        let config = crate::RedisConfig::new(server.url()).state_history(3);
        let store = RedisStore::open_with(config).unwrap();
        let topic = state_topic("job").unwrap();
        let put = |version: u64| {
            let payload = serde_json::json!({"entity_id": "a", "version": version, "n": version});
            let event = Event::new(topic.clone(), "t", payload.as_object().cloned().unwrap());
            let change = ChangeEvent::from_event(&event).unwrap();
            store.put(&StatePut { kind: "job", id: "a", version, change: &change }).unwrap();
            event
        };
        let written: Vec<Event> = (1..=3).map(put).collect();
        let mut con = redis::Client::open(server.url()).unwrap().get_connection().unwrap();
        let versions = store.keys().versions(topic.as_str());
        let value: String = redis::cmd("HGET").arg(&versions).arg("a\n1").query(&mut con).unwrap();
        let (sid, size) = value.split_once(' ').unwrap();
        assert_eq!(size, (written[0].to_json_line().len() + 1).to_string(), "{value}");
        // Version 1 as an older store wrote it: with its line.
        let old = format!("{sid} {}", written[0].to_json_line());
        let _: () =
            redis::cmd("HSET").arg(&versions).arg("a\n1").arg(&old).query(&mut con).unwrap();
        let events = |records: Vec<StoredEvent>| records.into_iter().map(|r| r.event).collect();
        let history: Vec<Event> = events(store.history("job", "a").unwrap());
        assert_eq!(history, written);
        assert_eq!(
            store.at_version("job", "a", 1).unwrap().map(|r| r.event),
            Some(written[0].clone())
        );
        assert_eq!(
            store.at_version("job", "a", 2).unwrap().map(|r| r.event),
            Some(written[1].clone())
        );
        assert!(store.at_version("job", "a", 4).unwrap().is_none());
        // Versions 4 and 5 push 1 (old form) and 2 (new form) out.
        let later: Vec<Event> = (4..=5).map(put).collect();
        let history: Vec<Event> = events(store.history("job", "a").unwrap());
        assert_eq!(history, [&written[2..], &later[..]].concat());
        let stored: u64 = history.iter().map(|e| e.to_json_line().len() as u64 + 1).sum();
        let stats = store.topics().unwrap().into_iter().find(|t| t.topic == topic).unwrap();
        assert_eq!((stats.events, stats.bytes), (3, stored));
        let left: usize = redis::cmd("HLEN").arg(&versions).query(&mut con).unwrap();
        assert_eq!(left, 3);
        // A kept version whose stream entry is gone is corrupt data, not a gap.
        let _: () =
            redis::cmd("HSET").arg(&versions).arg("a\n9").arg("1-1 12").query(&mut con).unwrap();
        let err = store.at_version("job", "a", 9).unwrap_err();
        assert_eq!(err.kind(), seed_event::ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("\"1-1 12\""), "{err}");
    }

    /// The layout as first written: by writing the state again and finding
    /// it in the line. The writer must give the same answer.
    fn layout_by_writing(event: &Event, line: &str) -> String {
        const FIELDS: [&str; 5] = ["status", "data", "created_at", "updated_at", "metadata"];
        let Some(serde_json::Value::Object(state)) = event.payload.get("state") else {
            return "-".into();
        };
        let whole = serde_json::to_string(state).unwrap();
        let Some(base) = line.find(&whole) else { return "-".into() };
        let mut spans = [None; 5];
        let mut at = base + 1;
        for (n, (key, value)) in state.iter().enumerate() {
            at += usize::from(n > 0);
            at += serde_json::to_string(key).unwrap().len() + 1;
            let len = serde_json::to_string(value).unwrap().len();
            if let Some(slot) = FIELDS.iter().position(|f| f == key) {
                spans[slot] = Some((at + 1, at + len));
            }
            at += len;
        }
        let deleted =
            event.payload.get("deleted").and_then(serde_json::Value::as_bool) == Some(true);
        let mut out = String::from(if deleted { "D" } else { "L" });
        for (n, span) in spans.iter().enumerate() {
            let Some((first, last)) = span else { return "-".into() };
            if n > 0 {
                out.push(',');
            }
            out.push_str(&format!("{first},{last}"));
        }
        out
    }

    /// A change's line is the event's, and its layout what writing the
    /// state again finds, however odd the text.
    #[test]
    fn the_line_is_the_events_and_its_layout_what_writing_the_state_again_finds() {
        let topic = state_topic("job").unwrap();
        let states = [
            serde_json::json!({"status": "pending", "data": {}, "created_at": "t", "updated_at": "u", "metadata": {}}),
            serde_json::json!({"entity_id": "a\"}{", "status": "done", "data": {"s": "x\\\"}]{[", "n": [1, {"a": "}"}], "f": 1.5e3, "b": true, "z": null}, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:01Z", "updated_by": "é ☃", "metadata": {"k": "\u{0}\u{1f}"}}),
            serde_json::json!({"status": "pending", "data": {"state": {"data": 1}}, "created_at": "t", "updated_at": "u"}),
            serde_json::json!({"status": "pending"}),
        ];
        for (n, state) in states.into_iter().enumerate() {
            for deleted in [false, true] {
                let payload = serde_json::json!({
                    "entity_id": "a", "version": 3, "deleted": deleted, "caused_by": null, "state": state
                });
                let event = Event::new(topic.clone(), "t", payload.as_object().cloned().unwrap());
                let change = ChangeEvent::from_event(&event).unwrap();
                assert_eq!(change.line(), event.to_json_line(), "state {n}");
                let line = change.line();
                assert_eq!(layout(&change), layout_by_writing(&event, line), "state {n}: {line}");
            }
        }
        let payload = serde_json::json!({"entity_id": "a", "version": 3});
        let mut event = Event::new(topic, "t", payload.as_object().cloned().unwrap());
        event.correlation_id = Some("c\"1".into());
        event.metadata.insert("m".into(), serde_json::json!([1, "x"]));
        let change = ChangeEvent::from_event(&event).unwrap();
        assert_eq!((change.line(), layout(&change).as_str()), (event.to_json_line().as_str(), "-"));
    }
}
