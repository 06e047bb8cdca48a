//! The change event of a state, written straight from the [`State`]: the
//! line a store appends, with no JSON value built between.

use serde::Serialize;
use uuid::Uuid;

use seed_event::{state_topic, ChangeEvent, Error, Result, StateSpans, WrittenChange};

use crate::{Cause, State};

/// The change event of `state` (topic `state.<entity_type>`, source
/// `updated_by`, timestamp `updated_at`; see the [crate docs](crate)), with
/// a fresh id: byte for byte the line `Event::to_json_line` writes of the
/// event with this payload (a test compares them), and the places of the
/// state's status, data, created_at, updated_at and metadata in it.
pub(crate) fn write_change(state: &State, deleted: bool, cause: &Cause) -> Result<ChangeEvent> {
    let topic = state_topic(state.entity_type())?;
    let id = Uuid::now_v7();
    let mut w = Writer(Vec::with_capacity(320 + 2 * state.entity_id().len()));
    w.raw(b"{\"id\":");
    w.json(&id)?;
    w.raw(b",\"topic\":");
    w.json(&topic)?;
    w.raw(b",\"payload\":{\"entity_id\":");
    w.json(state.entity_id())?;
    w.raw(b",\"version\":");
    w.json(&state.version())?;
    w.raw(if deleted { b",\"deleted\":true" } else { b",\"deleted\":false" });
    w.raw(b",\"caused_by\":");
    w.json(&cause.caused_by)?;
    w.raw(b",\"state\":{\"entity_id\":");
    w.json(state.entity_id())?;
    w.raw(b",\"entity_type\":");
    w.json(state.entity_type())?;
    w.raw(b",\"version\":");
    w.json(&state.version())?;
    w.raw(b",\"status\":");
    let status = w.span(state.status().as_str())?;
    w.raw(b",\"data\":");
    let data = w.span(state.data())?;
    w.raw(b",\"created_at\":");
    let created_at = w.span(&state.created_at())?;
    w.raw(b",\"updated_at\":");
    let updated_at = w.span(&state.updated_at())?;
    w.raw(b",\"updated_by\":");
    w.json(state.updated_by())?;
    w.raw(b",\"metadata\":");
    let metadata = w.span(state.metadata())?;
    w.raw(b"}},\"source\":");
    w.json(state.updated_by())?;
    w.raw(b",\"timestamp\":");
    w.json(&state.updated_at())?;
    w.raw(b",\"correlation_id\":");
    w.json(&cause.correlation_id)?;
    w.raw(b",\"metadata\":{}}");
    let spans: StateSpans = [status, data, created_at, updated_at, metadata];
    let line = String::from_utf8(w.0)
        .map_err(|_| Error::invalid("state", "its JSON text is not UTF-8"))?;
    Ok(ChangeEvent::from_written(WrittenChange {
        id,
        topic,
        timestamp: state.updated_at(),
        entity_id: state.entity_id().to_string(),
        version: state.version(),
        deleted,
        line,
        spans: Some(spans),
    }))
}

/// A line being written.
struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// Writes `value` as compact JSON.
    fn json(&mut self, value: &(impl Serialize + ?Sized)) -> Result<()> {
        serde_json::to_writer(&mut self.0, value)
            .map_err(|e| Error::invalid("state", format!("cannot be written as JSON ({e})")))
    }

    /// Writes `value` as compact JSON; returns its 1-based first and last byte.
    fn span(&mut self, value: &(impl Serialize + ?Sized)) -> Result<(usize, usize)> {
        let first = self.0.len() + 1;
        self.json(value)?;
        Ok((first, self.0.len()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use seed_event::{Event, JsonObject, Timestamp};

    use super::*;
    use crate::{Change, NewState, Status};

    /// The change event of `state` as an [`Event`], built the plain way: the
    /// payload as a JSON value, then serde. [`write_change`] must write
    /// what this gives.
    fn change_event(state: &State, deleted: bool, cause: &Cause) -> Event {
        let topic = state_topic(state.entity_type()).unwrap();
        let caused_by = cause.caused_by.map_or(Value::Null, |u| Value::String(u.to_string()));
        let payload = json!({
            "entity_id": state.entity_id(),
            "version": state.version(),
            "deleted": deleted,
            "caused_by": caused_by,
            "state": state.to_value(),
        });
        let payload = payload.as_object().cloned().unwrap_or_default();
        let mut event =
            Event::new(topic, state.updated_by(), payload).with_timestamp(state.updated_at());
        event.correlation_id = cause.correlation_id.clone();
        event
    }

    /// `write_change` gives the plain way's line (with its own id) and the
    /// spans of `ChangeEvent::from_event`, for the same event.
    fn check(state: &State, deleted: bool, cause: &Cause) {
        let written = write_change(state, deleted, cause).unwrap();
        let mut event = change_event(state, deleted, cause);
        event.id = written.id();
        let plain = ChangeEvent::from_event(&event).unwrap();
        assert_eq!(written.line(), event.to_json_line());
        assert_eq!(written, plain);
        assert_eq!(written.event().unwrap(), event);
    }

    fn object(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_written_line_is_the_events_line() {
        let at = Timestamp::from_unix_micros(1_780_000_000_123_456);
        let new = NewState::new("task-1", "task", "fenrir")
            .data(object(json!({"s": "a\"}{\\ é ☃ \u{1}", "n": [1, 2.5, {"x": null}], "b": true})))
            .metadata(object(json!({"k": "v"})));
        let first = State::create_at(new, at).unwrap();
        check(&first, false, &Cause::default());
        let cause = Cause {
            caused_by: Some(uuid::Uuid::now_v7()),
            correlation_id: Some("req \"7\"".into()),
        };
        let second = first
            .update_at(
                Change::by("odin").status(Status::Active),
                Timestamp::from_unix_micros(1_780_000_000_123_457),
            )
            .unwrap();
        check(&second, false, &cause);
        let gone =
            second.moved_to(3, "odin", Timestamp::from_unix_micros(1_780_000_000_123_458)).unwrap();
        check(&gone, true, &cause);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_state_is_written_as_serde_writes_its_event(
            id in "[a-z0-9][a-z0-9._-]{0,20}",
            data in prop::collection::vec(("[^\u{0}]{0,8}", json_value()), 0..5),
            metadata in prop::collection::vec((".{0,8}", json_value()), 0..3),
            by in "[a-z][a-z0-9-]{0,10}",
            micros in 0i64..4_000_000_000_000_000,
            deleted in any::<bool>(),
            correlation in proptest::option::of(".{0,10}"),
        ) {
            let new = NewState::new(id, "kind", by)
                .data(data.into_iter().collect())
                .metadata(metadata.into_iter().collect());
            let state = State::create_at(new, Timestamp::from_unix_micros(micros)).unwrap();
            let cause = Cause { caused_by: None, correlation_id: correlation };
            check(&state, deleted, &cause);
        }
    }
}
