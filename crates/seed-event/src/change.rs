//! [`ChangeEvent`]: a state change's event as a store gets it, its JSON line
//! written once.

use serde_json::Value;
use uuid::Uuid;

use crate::{change_of, Error, Event, Result, Timestamp, Topic};

/// The members of a change event's `state` whose place in the line
/// [`ChangeEvent::spans`] gives, in this order.
pub const LAID_OUT: [&str; 5] = ["status", "data", "created_at", "updated_at", "metadata"];

/// Where each member of [`LAID_OUT`] sits in a change event's line: its
/// 1-based first and last byte.
pub type StateSpans = [(usize, usize); 5];

/// A state change's event as [`crate::StateBackend::put`] gets it: its JSON
/// line (byte for byte what [`Event::to_json_line`] writes of
/// [`ChangeEvent::event`]) and the fields stores index it by.
///
/// A store appends the line as it is: the event is written once, by whoever
/// made the change, not once into a JSON value and again into each store's
/// format.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    id: Uuid,
    topic: Topic,
    timestamp: Timestamp,
    entity_id: String,
    version: u64,
    deleted: bool,
    line: String,
    spans: Option<StateSpans>,
}

/// The parts of a [`ChangeEvent`] whose line its maker wrote: the argument of
/// [`ChangeEvent::from_written`].
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenChange {
    /// The event's id.
    pub id: Uuid,
    /// The event's topic, `state.<entity_type>`.
    pub topic: Topic,
    /// The event's timestamp.
    pub timestamp: Timestamp,
    /// The payload's `entity_id`.
    pub entity_id: String,
    /// The payload's `version`.
    pub version: u64,
    /// The payload's `deleted`.
    pub deleted: bool,
    /// The event's JSON line, as [`Event::to_json_line`] writes it.
    pub line: String,
    /// Where the members of [`LAID_OUT`] of the payload's `state` sit in `line`.
    pub spans: Option<StateSpans>,
}

impl ChangeEvent {
    /// The change `event` carries (a payload with `entity_id` and
    /// `version`, and usually `deleted` and the `state`); invalid input if
    /// it carries none.
    pub fn from_event(event: &Event) -> Result<ChangeEvent> {
        let (entity_id, version) = change_of(event).ok_or_else(|| {
            Error::invalid(
                "state change",
                "the event's payload must carry entity_id (a string) and version (a number)",
            )
        })?;
        let (line, spans) = match write_line(event) {
            Some((line, spans)) => (line, spans),
            None => (event.to_json_line(), None),
        };
        Ok(ChangeEvent {
            id: event.id,
            topic: event.topic.clone(),
            timestamp: event.timestamp,
            entity_id: entity_id.to_string(),
            version,
            deleted: event.payload.get("deleted").and_then(Value::as_bool) == Some(true),
            line,
            spans,
        })
    }

    /// A change whose line its maker wrote (`seed-state` writes it straight
    /// from the state). The maker answers for `written` agreeing with
    /// itself: the line must parse as an event with these fields.
    pub fn from_written(written: WrittenChange) -> ChangeEvent {
        let WrittenChange { id, topic, timestamp, entity_id, version, deleted, line, spans } =
            written;
        ChangeEvent { id, topic, timestamp, entity_id, version, deleted, line, spans }
    }

    /// The event, parsed from the line.
    pub fn event(&self) -> Result<Event> {
        Event::from_json_line(&self.line)
    }

    /// The event's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The event's topic, `state.<entity_type>`.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The event's timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The entity's version this change makes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the change is a delete (its record a tombstone).
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// The event's JSON line, without a newline.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Where the members of [`LAID_OUT`] of the payload's `state` sit in
    /// the line; `None` if the payload has no `state` object with them all.
    pub fn spans(&self) -> Option<&StateSpans> {
        self.spans.as_ref()
    }
}

/// Writes `event` as serde writes it (the fields of [`Event`] in order,
/// compact), noting where the payload's `state` members of [`LAID_OUT`]
/// sit; `None` if serializing a value failed (it does not, for JSON values).
fn write_line(event: &Event) -> Option<(String, Option<StateSpans>)> {
    let mut out = Vec::with_capacity(512);
    let mut spans = [None; 5];
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut out, &event.id).ok()?;
    out.extend_from_slice(b",\"topic\":");
    serde_json::to_writer(&mut out, &event.topic).ok()?;
    out.extend_from_slice(b",\"payload\":{");
    for (n, (key, value)) in event.payload.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).ok()?;
        out.push(b':');
        match value {
            Value::Object(state) if key == "state" => {
                out.push(b'{');
                for (m, (field, value)) in state.iter().enumerate() {
                    if m > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, field).ok()?;
                    out.push(b':');
                    let first = out.len() + 1;
                    serde_json::to_writer(&mut out, value).ok()?;
                    if let Some(slot) = LAID_OUT.iter().position(|f| f == field) {
                        spans[slot] = Some((first, out.len()));
                    }
                }
                out.push(b'}');
            }
            _ => serde_json::to_writer(&mut out, value).ok()?,
        }
    }
    out.extend_from_slice(b"},\"source\":");
    serde_json::to_writer(&mut out, &event.source).ok()?;
    out.extend_from_slice(b",\"timestamp\":");
    serde_json::to_writer(&mut out, &event.timestamp).ok()?;
    out.extend_from_slice(b",\"correlation_id\":");
    serde_json::to_writer(&mut out, &event.correlation_id).ok()?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, &event.metadata).ok()?;
    out.push(b'}');
    let line = String::from_utf8(out).ok()?;
    let spans = match spans {
        [Some(a), Some(b), Some(c), Some(d), Some(e)] => Some([a, b, c, d, e]),
        _ => None,
    };
    Some((line, spans))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{state_topic, ErrorKind, StatePut};

    /// A store appends a change's line as it is: a put refuses one that is
    /// not one JSON object on one line.
    #[test]
    fn a_put_refuses_a_line_that_is_not_one_json_object_on_one_line() {
        let payload = serde_json::json!({"entity_id": "a", "version": 1});
        let event =
            Event::new(state_topic("k").unwrap(), "t", payload.as_object().cloned().unwrap());
        let good = ChangeEvent::from_event(&event).unwrap();
        let put = |change: &ChangeEvent| {
            StatePut { kind: "k", id: "a", version: 1, change }.validate().map_err(|e| e.kind())
        };
        assert_eq!(put(&good), Ok(()));
        let lines = [
            format!("{}\n", good.line()),
            good.line().replacen(",\"topic\"", ",\r\n\"topic\"", 1),
            format!(" {}", good.line()),
            good.line()[..good.line().len() - 3].to_string(),
        ];
        for line in lines {
            let bad = ChangeEvent::from_written(WrittenChange {
                id: good.id(),
                topic: good.topic().clone(),
                timestamp: good.timestamp(),
                entity_id: "a".into(),
                version: 1,
                deleted: false,
                line: line.clone(),
                spans: None,
            });
            assert_eq!(put(&bad), Err(ErrorKind::InvalidInput), "{line:?}");
        }
    }
}
