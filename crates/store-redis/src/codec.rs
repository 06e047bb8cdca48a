//! Key names and the decoding of Redis replies into Seed's types.

use redis::Value;
use seed_event::{Cursor, Error, Event, Result, StoredEvent, Topic};

/// The names of the store's keys under one prefix.
///
/// Every key of a topic carries the topic as its Redis Cluster hash tag
/// (`<prefix>{<topic>}:s`), so a topic's keys share one slot; the keys of the
/// whole store (`<prefix>topics`, …) never start with `{` after the prefix, so
/// they cannot collide with a topic's.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    /// Set of every topic name ever appended to.
    pub(crate) topics: String,
    /// Stream with one entry per topic created (field `t`), for followers.
    pub(crate) new_topics: String,
    /// Set of every consumer name with a committed position.
    pub(crate) consumers: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            topics: format!("{prefix}topics"),
            new_topics: format!("{prefix}topics:new"),
            consumers: format!("{prefix}consumers"),
        }
    }

    /// The stream of a topic's events (field `e`: the event's JSON line).
    pub(crate) fn stream(&self, topic: &str) -> String {
        [self.prefix.as_str(), "{", topic, "}:s"].concat()
    }

    /// The hash of a topic's counters (field `bytes`).
    pub(crate) fn meta(&self, topic: &str) -> String {
        [self.prefix.as_str(), "{", topic, "}:m"].concat()
    }

    /// The hash of the newest record of each entity of a state topic.
    pub(crate) fn latest(&self, topic: &str) -> String {
        [self.prefix.as_str(), "{", topic, "}:latest"].concat()
    }

    /// The hash of the kept versions of each entity of a state topic.
    pub(crate) fn versions(&self, topic: &str) -> String {
        [self.prefix.as_str(), "{", topic, "}:v"].concat()
    }

    /// The hash of a consumer's positions, topic to cursor.
    pub(crate) fn consumer(&self, name: &str) -> String {
        format!("{}consumer:{name}", self.prefix)
    }
}

/// A stream id (`ms-seq`) as a cursor.
pub(crate) fn parse_id(id: &[u8]) -> Option<Cursor> {
    std::str::from_utf8(id).ok()?.parse().ok()
}

/// One stream entry before its event is decoded.
pub(crate) struct RawEntry {
    pub(crate) cursor: Cursor,
    /// The event's JSON line (field `e`); `None` when the entry has no such field.
    pub(crate) line: Option<Vec<u8>>,
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

fn items(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Map(m) => Some(m.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` reply (or of one stream in `XREAD`).
pub(crate) fn raw_entries(reply: Value, key: &str) -> Result<Vec<RawEntry>> {
    let bad = |what: &str| Error::corrupt(format!("Redis key {key}"), what.to_string());
    let entries = items(reply).ok_or_else(|| bad("a stream read returned no list of entries"))?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut parts =
            items(entry).ok_or_else(|| bad("a stream entry is not a list"))?.into_iter();
        let id = parts.next().and_then(bytes_of).ok_or_else(|| bad("a stream entry has no id"))?;
        let cursor = parse_id(&id).ok_or_else(|| bad("a stream entry id is not ms-seq"))?;
        let fields = parts.next().and_then(items).unwrap_or_default();
        let mut line = None;
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if bytes_of(name).as_deref() == Some(b"e") {
                line = bytes_of(value);
            }
        }
        out.push(RawEntry { cursor, line });
    }
    Ok(out)
}

/// Decodes an entry of `topic`'s stream into a stored event.
pub(crate) fn decode(raw: RawEntry, topic: &Topic, key: &str) -> Result<StoredEvent> {
    let location = || format!("Redis key {key}, entry {}", raw.cursor);
    let line = raw
        .line
        .as_deref()
        .ok_or_else(|| Error::corrupt(location(), "the entry has no field `e` with the event"))?;
    let text = std::str::from_utf8(line)
        .map_err(|e| Error::corrupt(location(), format!("the event is not UTF-8 ({e})")))?;
    let event =
        Event::from_json_line(text).map_err(|e| Error::corrupt(location(), e.to_string()))?;
    if event.topic != *topic {
        return Err(Error::corrupt(
            location(),
            format!(
                "the event has topic {:?}, expected {:?}",
                event.topic.as_str(),
                topic.as_str()
            ),
        ));
    }
    Ok(StoredEvent { cursor: raw.cursor, event })
}

/// The id of the first entry of a one-entry range reply, if any.
pub(crate) fn first_id(reply: Value, key: &str) -> Result<Option<Cursor>> {
    Ok(raw_entries(reply, key)?.first().map(|e| e.cursor))
}

/// The strings of an array reply (e.g. `SMEMBERS`).
pub(crate) fn strings(reply: Value, what: &str) -> Result<Vec<String>> {
    let list = items(reply)
        .ok_or_else(|| Error::corrupt(what.to_string(), "expected a list of strings"))?;
    list.into_iter()
        .map(|v| {
            bytes_of(v)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::corrupt(what.to_string(), "expected UTF-8 strings"))
        })
        .collect()
}

/// An integer reply (or `0` for nil).
pub(crate) fn int(reply: &Value) -> Option<i64> {
    match reply {
        Value::Int(i) => Some(*i),
        Value::Nil => Some(0),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// Splits a script's array reply into its items.
pub(crate) fn array(reply: Value) -> Option<Vec<Value>> {
    items(reply)
}

/// A bulk string reply as text.
pub(crate) fn text(reply: Value) -> Option<String> {
    bytes_of(reply).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_keys_share_a_hash_tag_and_never_meet_store_keys() {
        let keys = Keys::new("seed:");
        assert_eq!(keys.stream("a.b"), "seed:{a.b}:s");
        assert_eq!(keys.meta("a.b"), "seed:{a.b}:m");
        assert_eq!(keys.topics, "seed:topics");
        assert_eq!(keys.consumer("worker/1"), "seed:consumer:worker/1");
        // A topic named like a store key still gets a key of its own.
        assert_ne!(keys.stream("topics"), keys.topics);
        assert!(keys.stream("x}:s").starts_with("seed:{"));
    }

    #[test]
    fn stream_ids_parse_as_cursors() {
        assert_eq!(parse_id(b"1713268800123-4"), Some(Cursor::new(1713268800123, 4)));
        assert_eq!(parse_id(b"nope"), None);
        assert_eq!(parse_id(&[0xff, 0xfe]), None);
    }

    #[test]
    fn odd_replies_are_corrupt_not_panics() {
        let key = "seed:{t}:s";
        assert!(raw_entries(Value::Int(3), key).is_err());
        let no_id = Value::Array(vec![Value::Array(vec![])]);
        assert!(raw_entries(no_id, key).is_err());
        let no_field = Value::Array(vec![Value::Array(vec![Value::BulkString(b"1-0".to_vec())])]);
        let entries = raw_entries(no_field, key).unwrap();
        let topic = Topic::new("t").unwrap();
        let err = decode(entries.into_iter().next().unwrap(), &topic, key).unwrap_err();
        assert!(err.to_string().contains("no field `e`"), "{err}");
    }
}
