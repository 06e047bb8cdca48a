//! The state capability of a store: [`StateBackend`], the primitives that
//! `seed-state`'s `StateStore` builds on, which each store implements natively
//! and atomically.
//!
//! A change of an entity's state is one event on the topic
//! `state.<entity_type>` (see [`state_topic`]); the backend appends it and
//! updates its latest-state index in one step, so a change and its event
//! never disagree. The event's payload holds at least
//! `{"entity_id": ID, "version": N, …}`; the rest (the state itself) is the
//! business of the crate above.

use crate::support::{self, MaxLen, NameRules};
use crate::{
    ChangeEvent, Cursor, Error, Event, EventStream, Result, StoredEvent, Timestamp, Topic,
};

/// The prefix of every state topic: `state.<entity_type>`.
pub const STATE_TOPIC_PREFIX: &str = "state.";

/// How many versions of each entity a store keeps unless configured otherwise.
pub const DEFAULT_STATE_HISTORY: u64 = 64;

/// The longest entity type or id, in characters.
const MAX_CHARS: usize = 255;

/// Checks an entity type: a name (1 to 255 characters, no whitespace or
/// control characters) that is one topic token, so without `.`, `*` or `>`.
pub fn check_entity_type(kind: &str) -> Result<()> {
    state_topic(kind).map(drop)
}

/// The topic of the change events of entities of type `kind`, `state.<kind>`.
pub fn state_topic(kind: &str) -> Result<Topic> {
    check_type_name(kind)?;
    // At most 255 bytes of topic: `state.` and the type.
    Topic::new([STATE_TOPIC_PREFIX, kind].concat())
        .map_err(|e| Error::invalid("entity_type", e.to_string()))
}

/// Checks `kind` as an entity type, short of the length of its topic.
fn check_type_name(kind: &str) -> Result<()> {
    let rules = NameRules {
        what: "entity_type",
        max_len: MaxLen::Chars(MAX_CHARS),
        whitespace: false,
        refused: (&['.', '*', '>'], "an entity type is one topic token (state.<entity_type>)"),
        example: "task",
    };
    support::check_name(kind, &rules)
}

/// The entity type whose changes `topic` carries, if it is a state topic.
pub fn entity_type_of(topic: &Topic) -> Option<&str> {
    topic.as_str().strip_prefix(STATE_TOPIC_PREFIX).filter(|k| check_entity_type(k).is_ok())
}

/// The entity id and version a state change event carries in its payload.
pub fn change_of(event: &Event) -> Option<(&str, u64)> {
    let id = event.payload.get("entity_id")?.as_str()?;
    let version = event.payload.get("version")?.as_u64()?;
    Some((id, version))
}

/// One change for [`StateBackend::put`]: version `version` of entity `id`,
/// carried by `change` (topic `state.<kind>`, payload with `entity_id` and `version`).
#[derive(Debug, Clone, Copy)]
pub struct StatePut<'a> {
    /// The entity type.
    pub kind: &'a str,
    /// The entity id.
    pub id: &'a str,
    /// The new version; the entity's newest record must have `version - 1`
    /// (0: the entity never had a record).
    pub version: u64,
    /// The change event to append.
    pub change: &'a ChangeEvent,
}

impl StatePut<'_> {
    /// Checks that the change is on the type's topic and carries this id and version.
    pub fn validate(&self) -> Result<()> {
        check_type_name(self.kind)?;
        // The change's topic is a topic already: it is `state.<kind>` or not.
        let topic = self.change.topic().as_str();
        if topic.strip_prefix(STATE_TOPIC_PREFIX) != Some(self.kind) {
            let expected = state_topic(self.kind)?;
            return Err(Error::invalid(
                "state change",
                format!("the event's topic is {topic:?}, expected {:?}", expected.as_str()),
            ));
        }
        if self.version == 0 {
            return Err(Error::invalid("version", "a new version is at least 1"));
        }
        let line = self.change.line();
        // No early exit: the compiler makes this a vector loop.
        let breaks = line.bytes().fold(false, |seen, b| seen | (b == b'\n') | (b == b'\r'));
        if !(line.starts_with('{') && line.ends_with('}')) || breaks {
            return Err(Error::invalid(
                "state change",
                "the event's line must be one JSON object on one line",
            ));
        }
        if self.change.entity_id() != self.id || self.change.version() != self.version {
            return Err(Error::invalid(
                "state change",
                format!(
                    "the event's payload must carry entity_id {:?} and version {}",
                    self.id, self.version
                ),
            ));
        }
        Ok(())
    }
}

/// What [`StateEdit`] fills a hole of its template with, from the entity's
/// newest record (its payload's `state` object) and the edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hole {
    /// The new status: [`StateEdit::status`], else the newest record's.
    Status,
    /// The new data: the newest record's, changed as [`StateEdit::data`] says.
    Data,
    /// The new metadata: [`StateEdit::metadata`], else the newest record's.
    Metadata,
    /// The newest record's `created_at`.
    CreatedAt,
    /// The later of [`StateEdit::now`] and the newest record's `updated_at`.
    UpdatedAt,
}

/// How a [`StateEdit`] changes the data (each a JSON object's compact text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEdit<'a> {
    /// Keep the newest record's data.
    Keep,
    /// Replace it with this object.
    Replace(&'a str),
    /// Apply this JSON Merge Patch (RFC 7386) as `serde_json` with
    /// `preserve_order` does: a key set again stays in its place, a new key
    /// goes last, a removed key's place takes the last key.
    Merge(&'a str),
}

/// An update that a store applies to the entity's newest record itself, in
/// one step ([`StateBackend::edit`]): the new record's event line is
/// `texts[0]`, the fill of `holes[0]`, `texts[1]`, … (`texts` has one more
/// element than `holes`), each fill compact JSON. JSON values are compared
/// as `serde_json` compares them (objects without regard to key order).
///
/// It is not applied, and the newest record is returned instead, if that
/// record is missing, a tombstone or not at version `expected`, if its status
/// is `archived`, if [`StateEdit::status`] is given and the newest status is
/// not among [`StateEdit::status_from`], or if status, data and metadata
/// would all stay equal.
#[derive(Debug, Clone, Copy)]
pub struct StateEdit<'a> {
    /// The entity type.
    pub kind: &'a str,
    /// The entity id.
    pub id: &'a str,
    /// The version the newest record must have; the new record has the next.
    pub expected: u64,
    /// The new event's id (a retry whose first try landed finds it).
    pub event_id: &'a str,
    /// The template's texts.
    pub texts: &'a [String],
    /// The template's holes.
    pub holes: &'a [Hole],
    /// The new status (a JSON string, e.g. `"active"`), if it changes.
    pub status: Option<&'a str>,
    /// The statuses (JSON strings) that may become [`StateEdit::status`].
    pub status_from: &'a [&'a str],
    /// How the data changes.
    pub data: DataEdit<'a>,
    /// The new metadata (a JSON object's compact text), if it changes.
    pub metadata: Option<&'a str>,
    /// The time of the change.
    pub now: Timestamp,
}

/// What [`StateBackend::edit`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Edited {
    /// The new record.
    Applied(StoredEvent),
    /// Nothing; the entity's newest record, if any, for the caller to tell why.
    Refused(Option<StoredEvent>),
}

/// The conflict of a [`StateBackend::put`] that expected `expected` as the
/// entity's newest version and found `actual`.
pub fn version_conflict(kind: &str, id: &str, expected: u64, actual: u64) -> Error {
    Error::StateConflict { entity: format!("{kind}/{id}"), expected, actual }
}

/// What a store does to keep versioned entity states: a change is one event on
/// `state.<entity_type>`, appended together with the store's index of newest records.
///
/// Every method is safe to call from many threads and processes at once.
/// Records are the change events, with their cursors (the revision of the
/// change in its type's topic). The `state` conformance suite of
/// `seed-state` checks every promise.
pub trait StateBackend: Send + Sync {
    /// Appends the change if the entity's newest record has version
    /// `put.version - 1` (0: no record), and makes it the entity's newest
    /// record, atomically; else fails with [`Error::StateConflict`] carrying
    /// the newest version found.
    fn put(&self, put: &StatePut<'_>) -> Result<Cursor>;

    /// The newest record of the entity (a tombstone too), in O(1) or O(log n).
    fn latest(&self, kind: &str, id: &str) -> Result<Option<StoredEvent>>;

    /// The record of one version of the entity, if it is still kept.
    fn at_version(&self, kind: &str, id: &str, version: u64) -> Result<Option<StoredEvent>>;

    /// The kept records of the entity, oldest first (at most [`StateBackend::history_limit`]).
    fn history(&self, kind: &str, id: &str) -> Result<Vec<StoredEvent>>;

    /// The newest record of every entity of the type (tombstones too), in no
    /// particular order, streamed: never every entity in memory at once.
    fn list(&self, kind: &str) -> Result<EventStream<'_>>;

    /// How many versions of each entity are kept (the newest; the newest
    /// record, tombstone or not, is never removed).
    fn history_limit(&self) -> u64;

    /// Removes the records past the history limit now; returns how many went.
    fn compact(&self, kind: &str) -> Result<u64>;

    /// The greatest revision at or below which changes of the type may have
    /// been removed (by compaction or a clear); `None` if none ever were.
    fn compacted_through(&self, kind: &str) -> Result<Option<Cursor>>;

    /// Whether [`StateBackend::edit`] applies edits (else `StateStore`
    /// reads the newest record, computes the change and puts it).
    fn edits(&self) -> bool {
        false
    }

    /// Applies `edit` in one step (one round trip), if [`StateBackend::edits`].
    fn edit(&self, edit: &StateEdit<'_>) -> Result<Edited> {
        let _ = edit;
        Err(Error::invalid("state edit", "this store applies no edits; put the change instead"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_types_are_one_topic_token() {
        assert!(check_entity_type("task").is_ok());
        assert!(check_entity_type("tâche-1").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b"] {
            let err = check_entity_type(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid entity_type"), "{bad:?}: {err}");
        }
        assert_eq!(state_topic("task").unwrap().as_str(), "state.task");
        assert_eq!(entity_type_of(&Topic::new("state.task").unwrap()), Some("task"));
        assert_eq!(entity_type_of(&Topic::new("state.a.b").unwrap()), None);
        assert_eq!(entity_type_of(&Topic::new("task").unwrap()), None);
    }
}
