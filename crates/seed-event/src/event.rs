//! The [`Event`] model and its one-line JSON form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{Error, Result, Timestamp, Topic};

/// A JSON object: the type of an event's payload and metadata.
pub type JsonObject = Map<String, Value>;

/// One immutable event: something a source published to a topic.
///
/// Its JSON form is one line with the field names of the original
/// implementation, in this order:
/// `{"id","topic","payload","source","timestamp","correlation_id","metadata"}`.
/// Readers ignore fields they do not know, so stores may add their own.
///
/// ```
/// use seed_event::{Event, Topic};
/// let topic = Topic::new("task.completed").unwrap();
/// let payload = serde_json::json!({"task_id": "abc"});
/// let event = Event::new(topic, "fenrir", payload.as_object().unwrap().clone());
/// let line = event.to_json_line();
/// assert_eq!(Event::from_json_line(&line).unwrap(), event);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id; new events get a time-ordered UUID v7, any UUID is read.
    pub id: Uuid,
    /// The topic it was published to.
    pub topic: Topic,
    /// What happened, as a JSON object.
    pub payload: JsonObject,
    /// The archon or component that published it.
    pub source: String,
    /// When it was created, UTC with microsecond precision.
    pub timestamp: Timestamp,
    /// Ties requests and responses together.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Free-form extra data, as a JSON object.
    #[serde(default)]
    pub metadata: JsonObject,
}

impl Event {
    /// A new event with a fresh UUID v7 and the current time.
    pub fn new(topic: Topic, source: impl Into<String>, payload: JsonObject) -> Event {
        Event {
            id: Uuid::now_v7(),
            topic,
            payload,
            source: source.into(),
            timestamp: Timestamp::now(),
            correlation_id: None,
            metadata: JsonObject::new(),
        }
    }

    /// This event with a correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Event {
        self.correlation_id = Some(id.into());
        self
    }

    /// This event with metadata.
    pub fn with_metadata(mut self, metadata: JsonObject) -> Event {
        self.metadata = metadata;
        self
    }

    /// This event with another timestamp (for imports and tests).
    pub fn with_timestamp(mut self, timestamp: Timestamp) -> Event {
        self.timestamp = timestamp;
        self
    }

    /// The event as one line of JSON, without the newline.
    pub fn to_json_line(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one JSON line; the error says which field is wrong.
    pub fn from_json_line(line: &str) -> Result<Event> {
        serde_json::from_str(line).map_err(|e| Error::invalid("event", e.to_string()))
    }
}

/// Parses `text` as a JSON object, naming `what` (e.g. `payload`) in the error.
///
/// ```
/// let err = seed_event::parse_json_object("payload", "[1, 2]").unwrap_err();
/// assert_eq!(err.to_string(), "invalid payload: expected a JSON object, got an array");
/// ```
pub fn parse_json_object(what: &str, text: &str) -> Result<JsonObject> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(what, format!("not valid JSON ({e})")))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(Error::invalid(
            what,
            format!("expected a JSON object, got {}", crate::support::json_type_name(&other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON_LINE: &str = r#"{"id": "0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21", "topic": "task.completed", "payload": {"task_id": "abc", "n": 3}, "source": "fenrir", "timestamp": "2026-04-16T12:00:00.123456+00:00", "correlation_id": null, "metadata": {}}"#;

    #[test]
    fn python_lines_parse_and_round_trip() {
        let event = Event::from_json_line(PYTHON_LINE).unwrap();
        assert_eq!(event.topic.as_str(), "task.completed");
        assert_eq!(event.source, "fenrir");
        assert_eq!(event.correlation_id, None);
        assert_eq!(event.timestamp.to_string(), "2026-04-16T12:00:00.123456+00:00");
        let line = event.to_json_line();
        assert_eq!(
            line,
            r#"{"id":"0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21","topic":"task.completed","payload":{"task_id":"abc","n":3},"source":"fenrir","timestamp":"2026-04-16T12:00:00.123456+00:00","correlation_id":null,"metadata":{}}"#
        );
        assert_eq!(Event::from_json_line(&line).unwrap(), event);
    }

    #[test]
    fn z_suffix_unknown_fields_and_correlation_parse() {
        let line = r#"{"id":"0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21","topic":"a","payload":{},"source":"s","timestamp":"2026-04-16T12:00:00Z","correlation_id":"req-1","metadata":{"k":1},"seq":42}"#;
        let event = Event::from_json_line(line).unwrap();
        assert_eq!(event.correlation_id.as_deref(), Some("req-1"));
        assert_eq!(event.metadata["k"], 1);
    }

    #[test]
    fn bad_lines_name_the_field() {
        let cases = [
            (
                r#"{"id":"x","topic":"a","payload":{},"source":"s","timestamp":"2026-04-16T12:00:00Z"}"#,
                "UUID",
            ),
            (
                r#"{"id":"0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21","topic":"a b","payload":{},"source":"s","timestamp":"2026-04-16T12:00:00Z"}"#,
                "whitespace",
            ),
            (
                r#"{"id":"0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21","topic":"a","payload":[1],"source":"s","timestamp":"2026-04-16T12:00:00Z"}"#,
                "map",
            ),
            (
                r#"{"id":"0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21","topic":"a","payload":{},"source":"s","timestamp":"noon"}"#,
                "RFC 3339",
            ),
            (
                r#"{"id":"0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21","payload":{},"source":"s","timestamp":"2026-04-16T12:00:00Z"}"#,
                "topic",
            ),
            (r#"{"id":"0b9d7e5c-7c1a-4a"#, "EOF"),
        ];
        for (line, needle) in cases {
            let err = Event::from_json_line(line).unwrap_err();
            assert!(err.to_string().contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn new_events_get_v7_ids() {
        let e = Event::new(Topic::new("a").unwrap(), "s", JsonObject::new());
        assert_eq!(e.id.get_version_num(), 7);
    }

    #[test]
    fn json_objects_are_checked() {
        assert!(parse_json_object("payload", r#"{"a":1}"#).is_ok());
        let err = parse_json_object("payload", "{nope").unwrap_err();
        assert!(err.to_string().starts_with("invalid payload: not valid JSON"), "{err}");
        let err = parse_json_object("metadata", "3").unwrap_err();
        assert_eq!(err.to_string(), "invalid metadata: expected a JSON object, got a number");
    }
}
