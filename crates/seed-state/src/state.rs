//! [`State`], the versioned state of one entity, with [`NewState`] and [`Change`].

use serde::Serialize;
use serde_json::Value;

use seed_event::support::{self, json_type_name, MaxLen, NameRules};
use seed_event::{Error, JsonObject, Result, Timestamp};

use crate::Status;

/// The longest entity id, entity type or `updated_by`, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// The highest version: 2^53 − 1, the largest integer every JSON reader holds exactly.
pub const MAX_VERSION: u64 = (1 << 53) - 1;

/// The fields of a state's JSON form, in the order they are written; all are required.
pub const FIELDS: [&str; 9] = [
    "entity_id",
    "entity_type",
    "version",
    "status",
    "data",
    "created_at",
    "updated_at",
    "updated_by",
    "metadata",
];

/// The versioned state of one entity (an archon, a task, …).
///
/// A state is created at version 1 and every accepted [`Change`] yields a new
/// state with the next version; the old one is left as it was. The fields are
/// private so that the invariants hold: version from 1 to [`MAX_VERSION`],
/// `updated_at` not before `created_at`, names non-empty and without
/// whitespace or control characters.
///
/// ```
/// use seed_state::{Change, NewState, State, Status};
/// let v1 = State::create(NewState::new("task-42", "task", "fenrir"))?;
/// let v2 = v1.update(Change::by("fenrir").status(Status::Active))?;
/// assert_eq!((v1.version(), v2.version()), (1, 2));
/// assert_eq!(State::from_json(&v2.to_json())?, v2);
/// # Ok::<(), seed_event::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    entity_id: String,
    entity_type: String,
    version: u64,
    status: Status,
    data: JsonObject,
    created_at: Timestamp,
    updated_at: Timestamp,
    updated_by: String,
    metadata: JsonObject,
}

/// What a new state starts with: the argument of [`State::create`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewState {
    /// The entity's id, e.g. `task-42`.
    pub entity_id: String,
    /// The kind of entity, e.g. `task` or `archon`.
    pub entity_type: String,
    /// Who creates it (written as `updated_by`).
    pub created_by: String,
    /// The first status; [`Status::Pending`] unless set.
    pub status: Status,
    /// The entity's data.
    pub data: JsonObject,
    /// Free-form extra data.
    pub metadata: JsonObject,
    /// Why it is created: written on the change event, not in the state.
    pub cause: Cause,
}

/// Why a change was made, written on its change event (not in the state):
/// the event that caused it and a correlation id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cause {
    /// The id of the event that caused the change.
    pub caused_by: Option<uuid::Uuid>,
    /// Ties the change to a request or a flow.
    pub correlation_id: Option<String>,
}

impl NewState {
    /// A pending state with empty data and metadata.
    pub fn new(
        entity_id: impl Into<String>,
        entity_type: impl Into<String>,
        created_by: impl Into<String>,
    ) -> NewState {
        NewState {
            entity_id: entity_id.into(),
            entity_type: entity_type.into(),
            created_by: created_by.into(),
            status: Status::Pending,
            data: JsonObject::new(),
            metadata: JsonObject::new(),
            cause: Cause::default(),
        }
    }

    /// This new state with another first status.
    pub fn status(mut self, status: Status) -> NewState {
        self.status = status;
        self
    }

    /// This new state with data.
    pub fn data(mut self, data: JsonObject) -> NewState {
        self.data = data;
        self
    }

    /// This new state with metadata.
    pub fn metadata(mut self, metadata: JsonObject) -> NewState {
        self.metadata = metadata;
        self
    }

    /// This new state with the reason for it (caused_by, correlation id).
    pub fn cause(mut self, cause: Cause) -> NewState {
        self.cause = cause;
        self
    }
}

/// How a [`Change`] treats the data.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum DataChange {
    /// Leave the data as it is.
    #[default]
    Keep,
    /// Replace the whole data object.
    Replace(JsonObject),
    /// Apply a JSON Merge Patch (RFC 7386): keys are set, `null` removes a key, objects merge.
    Merge(JsonObject),
}

/// One change to a state: the argument of [`State::update`].
///
/// ```
/// use seed_state::{Change, NewState, State, Status};
/// let data = serde_json::json!({"step": 1, "tmp": true}).as_object().cloned().unwrap();
/// let v1 = State::create(NewState::new("t", "task", "fenrir").data(data))?;
/// let patch = serde_json::json!({"step": 2, "tmp": null}).as_object().cloned().unwrap();
/// let v2 = v1.update(Change::by("odin").merge_data(patch))?;
/// assert_eq!(v2.data(), serde_json::json!({"step": 2}).as_object().unwrap());
/// assert_eq!(v2.updated_by(), "odin");
/// # Ok::<(), seed_event::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Change {
    pub(crate) by: String,
    pub(crate) status: Option<Status>,
    pub(crate) data: DataChange,
    pub(crate) metadata: Option<JsonObject>,
    cause: Cause,
}

impl Change {
    /// A change made by `source` (written as `updated_by`) that changes nothing yet.
    pub fn by(source: impl Into<String>) -> Change {
        Change { by: source.into(), ..Change::default() }
    }

    /// This change with a new status.
    pub fn status(mut self, status: Status) -> Change {
        self.status = Some(status);
        self
    }

    /// This change replacing the whole data object.
    pub fn replace_data(mut self, data: JsonObject) -> Change {
        self.data = DataChange::Replace(data);
        self
    }

    /// This change merging `patch` into the data (RFC 7386).
    pub fn merge_data(mut self, patch: JsonObject) -> Change {
        self.data = DataChange::Merge(patch);
        self
    }

    /// This change replacing the metadata.
    pub fn metadata(mut self, metadata: JsonObject) -> Change {
        self.metadata = Some(metadata);
        self
    }

    /// This change with the reason for it (caused_by, correlation id).
    pub fn cause(mut self, cause: Cause) -> Change {
        self.cause = cause;
        self
    }

    /// Who makes the change.
    pub fn source(&self) -> &str {
        &self.by
    }

    /// Why the change is made.
    pub fn reason(&self) -> &Cause {
        &self.cause
    }

    /// Whether the change sets nothing but who makes it and why (what a delete takes).
    pub fn is_bare(&self) -> bool {
        self.status.is_none() && self.data == DataChange::Keep && self.metadata.is_none()
    }
}

impl State {
    /// A new state at version 1, created now.
    pub fn create(new: NewState) -> Result<State> {
        State::create_at(new, Timestamp::now())
    }

    /// A new state at version 1, created at `at` (for imports and tests).
    pub fn create_at(new: NewState, at: Timestamp) -> Result<State> {
        check_name("entity_id", &new.entity_id)?;
        check_name("entity_type", &new.entity_type)?;
        check_name("updated_by", &new.created_by)?;
        Ok(State {
            entity_id: new.entity_id,
            entity_type: new.entity_type,
            version: 1,
            status: new.status,
            data: new.data,
            created_at: at,
            updated_at: at,
            updated_by: new.created_by,
            metadata: new.metadata,
        })
    }

    /// The next version of this state with `change` applied, updated now.
    ///
    /// If the clock reads earlier than this state's `updated_at`, the new
    /// state keeps that time so that `updated_at` never goes back.
    pub fn update(&self, change: Change) -> Result<State> {
        self.update_at(change, Timestamp::now().max(self.updated_at))
    }

    /// The next version of this state with `change` applied at `at`.
    ///
    /// Rejected, leaving this state as it is: an empty or malformed `by`, an
    /// archived state, a move the status life cycle does not allow (see
    /// [`Status::can_become`]), `at` before this state's `updated_at`, a change
    /// that changes nothing, and a version past [`MAX_VERSION`].
    pub fn update_at(&self, change: Change, at: Timestamp) -> Result<State> {
        check_name("updated_by", &change.by)?;
        if self.status == Status::Archived {
            return Err(Error::invalid(
                "status",
                format!(
                    "{} {:?} is archived (version {}); an archived state cannot change",
                    self.entity_type, self.entity_id, self.version
                ),
            ));
        }
        if at < self.updated_at {
            return Err(Error::invalid(
                "updated_at",
                format!("{at} is before the last update at {}", self.updated_at),
            ));
        }
        let version =
            self.version.checked_add(1).filter(|v| *v <= MAX_VERSION).ok_or_else(|| {
                Error::invalid("version", format!("{} is the highest version", self.version))
            })?;
        let status = change.status.unwrap_or(self.status);
        if !self.status.can_become(status) {
            let allowed: Vec<&str> =
                self.status.successors().into_iter().map(Status::as_str).collect();
            return Err(Error::invalid(
                "status",
                format!(
                    "cannot move from {} to {status}; {} may become {}",
                    self.status,
                    self.status,
                    allowed.join(", ")
                ),
            ));
        }
        let data = match change.data {
            DataChange::Keep => self.data.clone(),
            DataChange::Replace(data) => data,
            DataChange::Merge(patch) => {
                let mut data = self.data.clone();
                merge_patch(&mut data, patch);
                data
            }
        };
        let metadata = change.metadata.unwrap_or_else(|| self.metadata.clone());
        if status == self.status && data == self.data && metadata == self.metadata {
            return Err(Error::invalid(
                "change",
                "it changes nothing; a new version needs another status, data or metadata",
            ));
        }
        Ok(State {
            entity_id: self.entity_id.clone(),
            entity_type: self.entity_type.clone(),
            version,
            status,
            data,
            created_at: self.created_at,
            updated_at: at,
            updated_by: change.by,
            metadata,
        })
    }

    /// This state at another version, made by `by` at `at`: a tombstone
    /// (the next version of a deleted entity) or a creation after a delete.
    pub(crate) fn moved_to(&self, version: u64, by: &str, at: Timestamp) -> Result<State> {
        check_name("updated_by", by)?;
        if version > MAX_VERSION {
            return Err(Error::invalid(
                "version",
                format!("{} is the highest version", self.version),
            ));
        }
        Ok(State {
            version,
            updated_by: by.to_string(),
            updated_at: at.max(self.updated_at),
            ..self.clone()
        })
    }

    /// This new state (version 1) as the first version of a life that continues at `version`.
    pub(crate) fn renumbered(mut self, version: u64) -> Result<State> {
        if version > MAX_VERSION {
            return Err(Error::invalid(
                "version",
                format!("{} is past the highest version", version),
            ));
        }
        self.version = version;
        Ok(self)
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The kind of entity.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The version: 1 on create, +1 on every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where the entity is in its life.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The entity's data.
    pub fn data(&self) -> &JsonObject {
        &self.data
    }

    /// When version 1 was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When this version was made.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// Who made this version.
    pub fn updated_by(&self) -> &str {
        &self.updated_by
    }

    /// Free-form extra data.
    pub fn metadata(&self) -> &JsonObject {
        &self.metadata
    }

    /// The JSON form as a value, with the fields in [`FIELDS`] order.
    pub fn to_value(&self) -> Value {
        // As `Serialize` writes it (a test compares them), without going through a serializer.
        let mut map = JsonObject::with_capacity(FIELDS.len());
        map.insert("entity_id".into(), Value::String(self.entity_id.clone()));
        map.insert("entity_type".into(), Value::String(self.entity_type.clone()));
        map.insert("version".into(), Value::from(self.version));
        map.insert("status".into(), Value::String(self.status.as_str().into()));
        map.insert("data".into(), Value::Object(self.data.clone()));
        map.insert("created_at".into(), Value::String(self.created_at.to_string()));
        map.insert("updated_at".into(), Value::String(self.updated_at.to_string()));
        map.insert("updated_by".into(), Value::String(self.updated_by.clone()));
        map.insert("metadata".into(), Value::Object(self.metadata.clone()));
        Value::Object(map)
    }

    /// The JSON form as one line of text.
    pub fn to_json(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON form; the error names the first wrong field.
    ///
    /// Everything `schema/state.json` rejects is rejected here too; on top of
    /// it, `updated_at` may not be before `created_at`. Unknown fields are
    /// ignored, as the schema allows them.
    pub fn from_json(text: &str) -> Result<State> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid("state", format!("not valid JSON ({e})")))?;
        State::from_value(&value)
    }

    /// Reads the JSON form from a parsed value; see [`State::from_json`].
    pub fn from_value(value: &Value) -> Result<State> {
        let Value::Object(obj) = value else {
            return Err(Error::invalid(
                "state",
                format!("expected a JSON object, got {}", json_type_name(value)),
            ));
        };
        if let Some(missing) = FIELDS.iter().find(|f| !obj.contains_key(**f)) {
            return Err(Error::invalid(
                *missing,
                format!("is missing; a state has all of {}", FIELDS.join(", ")),
            ));
        }
        let field = |name: &str| obj.get(name).unwrap_or(&Value::Null);
        let created_at = timestamp_field("created_at", field("created_at"))?;
        let updated_at = timestamp_field("updated_at", field("updated_at"))?;
        let state = State {
            entity_id: name_field("entity_id", field("entity_id"))?,
            entity_type: name_field("entity_type", field("entity_type"))?,
            version: version_field(field("version"))?,
            status: match field("status") {
                Value::String(s) => Status::parse(s)?,
                other => return Err(expected("status", "a status name", other)),
            },
            data: object_field("data", field("data"))?,
            created_at,
            updated_at,
            updated_by: name_field("updated_by", field("updated_by"))?,
            metadata: object_field("metadata", field("metadata"))?,
        };
        if updated_at < created_at {
            return Err(Error::invalid(
                "updated_at",
                format!("{updated_at} is before created_at {created_at}"),
            ));
        }
        Ok(state)
    }
}

impl<'de> serde::Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<State, D::Error> {
        let value = Value::deserialize(d)?;
        State::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// Applies a JSON Merge Patch (RFC 7386) to `target`.
fn merge_patch(target: &mut JsonObject, patch: JsonObject) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key).or_insert_with(|| Value::Object(JsonObject::new()));
                if !slot.is_object() {
                    *slot = Value::Object(JsonObject::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

/// Checks an id, type or source: 1 to [`MAX_NAME_CHARS`] characters, no whitespace or control.
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    let rules = NameRules {
        what,
        max_len: MaxLen::Chars(MAX_NAME_CHARS),
        whitespace: false,
        refused: (&[], ""),
        example: "task-42",
    };
    support::check_name(name, &rules)
}

fn expected(what: &str, expected: &str, got: &Value) -> Error {
    Error::invalid(what, format!("expected {expected}, got {}", json_type_name(got)))
}

fn name_field(what: &str, value: &Value) -> Result<String> {
    let Value::String(s) = value else { return Err(expected(what, "a string", value)) };
    check_name(what, s)?;
    Ok(s.clone())
}

fn object_field(what: &str, value: &Value) -> Result<JsonObject> {
    match value {
        Value::Object(map) => Ok(map.clone()),
        other => Err(expected(what, "a JSON object", other)),
    }
}

fn version_field(value: &Value) -> Result<u64> {
    let range = format!("an integer from 1 to {MAX_VERSION}");
    let Value::Number(n) = value else { return Err(expected("version", &range, value)) };
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        // JSON Schema counts 2.0 as an integer.
        (None, Some(f)) if f.fract() == 0.0 && (1.0..=MAX_VERSION as f64).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    match whole {
        Some(v) if (1..=MAX_VERSION).contains(&v) => Ok(v),
        _ => Err(Error::invalid("version", format!("expected {range}, got {n}"))),
    }
}

fn timestamp_field(what: &str, value: &Value) -> Result<Timestamp> {
    let form = "an RFC 3339 UTC time like 2026-04-16T12:00:00.123456+00:00";
    let Value::String(text) = value else { return Err(expected(what, form, value)) };
    if !rfc3339_shape(text) {
        return Err(Error::invalid(what, format!("{text:?} is not {form}")));
    }
    Timestamp::parse(text).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::invalid(what, reason),
        other => Error::invalid(what, other.to_string()),
    })
}

/// Whether `text` has the shape of the schema's `pattern` for times:
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, then `Z` or `±HH:MM`.
fn rfc3339_shape(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range).is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let head = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        i += 1 + n;
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6) && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(1_776_340_800_000_000 + micros)
    }

    fn v1() -> State {
        let new = NewState::new("task-42", "task", "fenrir").data(obj(json!({"step": 1})));
        State::create_at(new, at(0)).unwrap()
    }

    #[test]
    fn create_starts_at_version_one() {
        let s = v1();
        assert_eq!(s.version(), 1);
        assert_eq!(s.status(), Status::Pending);
        assert_eq!(s.created_at(), s.updated_at());
        assert_eq!(s.updated_by(), "fenrir");
    }

    #[test]
    fn create_rejects_bad_names_naming_the_field() {
        let cases = [
            (NewState::new("", "task", "f"), "entity_id"),
            (NewState::new("a b", "task", "f"), "entity_id"),
            (NewState::new("a", "", "f"), "entity_type"),
            (NewState::new("a", "t\u{7}", "f"), "entity_type"),
            (NewState::new("a", "task", ""), "updated_by"),
            (NewState::new("x".repeat(256), "task", "f"), "entity_id"),
        ];
        for (new, field) in cases {
            match State::create(new.clone()) {
                Err(Error::InvalidInput { what, .. }) => assert_eq!(what, field, "{new:?}"),
                other => panic!("{new:?}: expected invalid {field}, got {other:?}"),
            }
        }
        assert!(State::create(NewState::new("é".repeat(255), "tâche", "fenrir")).is_ok());
    }

    #[test]
    fn every_update_is_the_next_version_and_leaves_the_old_one() {
        let s1 = v1();
        let s2 = s1.update_at(Change::by("odin").status(Status::Active), at(10)).unwrap();
        let s3 =
            s2.update_at(Change::by("odin").replace_data(obj(json!({"x": 1}))), at(10)).unwrap();
        let s4 = s3.update_at(Change::by("thor").metadata(obj(json!({"k": "v"}))), at(20)).unwrap();
        assert_eq!([s1.version(), s2.version(), s3.version(), s4.version()], [1, 2, 3, 4]);
        assert_eq!(s1.status(), Status::Pending);
        assert_eq!(s1.data(), &obj(json!({"step": 1})));
        assert_eq!(s4.status(), Status::Active);
        assert_eq!(s4.data(), &obj(json!({"x": 1})));
        assert_eq!(s4.metadata(), &obj(json!({"k": "v"})));
        assert_eq!(s4.updated_by(), "thor");
        assert_eq!(s4.created_at(), at(0));
        assert_eq!(s4.updated_at(), at(20));
    }

    #[test]
    fn update_now_never_goes_back_in_time() {
        let future = Timestamp::now().add_micros(3_600_000_000);
        let s1 = State::create_at(NewState::new("a", "task", "f"), future).unwrap();
        let s2 = s1.update(Change::by("f").status(Status::Active)).unwrap();
        assert_eq!(s2.updated_at(), future);
    }

    #[test]
    fn invalid_changes_are_rejected_naming_the_field() {
        let s = v1();
        let done = s.update_at(Change::by("f").status(Status::Completed), at(1)).unwrap();
        let archived = done.update_at(Change::by("f").status(Status::Archived), at(2)).unwrap();
        let cases: Vec<(&State, Change, Timestamp, &str, &str)> = vec![
            (&s, Change::by(""), at(1), "updated_by", "must not be empty"),
            (&s, Change::by("f"), at(1), "change", "changes nothing"),
            (&s, Change::by("f").status(Status::Pending), at(1), "change", "changes nothing"),
            (&s, Change::by("f").merge_data(obj(json!({"step": 1}))), at(1), "change", "nothing"),
            (&s, Change::by("f").status(Status::Active), at(-1), "updated_at", "before"),
            (&done, Change::by("f").status(Status::Active), at(3), "status", "may become archived"),
            (&archived, Change::by("f").status(Status::Active), at(3), "status", "archived"),
            (
                &archived,
                Change::by("f").replace_data(JsonObject::new()),
                at(3),
                "status",
                "archived",
            ),
        ];
        for (state, change, when, field, text) in cases {
            match state.update_at(change.clone(), when) {
                Err(Error::InvalidInput { what, reason }) => {
                    assert_eq!(what, field, "{change:?}");
                    assert!(reason.contains(text), "{change:?}: {reason}");
                }
                other => panic!("{change:?}: expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn version_stops_at_the_json_safe_maximum() {
        let mut s = v1();
        s.version = MAX_VERSION;
        let err = s.update_at(Change::by("f").status(Status::Active), at(1)).unwrap_err();
        assert!(err.to_string().starts_with("invalid version:"), "{err}");
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = obj(json!({"a": "b", "c": {"d": "e", "f": "g"}, "h": 1}));
        merge_patch(&mut target, obj(json!({"a": "z", "c": {"f": null}, "h": {"i": 2}})));
        assert_eq!(Value::Object(target), json!({"a": "z", "c": {"d": "e"}, "h": {"i": 2}}));
    }

    #[test]
    fn json_round_trips_with_the_fields_in_order() {
        let s = v1().update_at(Change::by("odin").status(Status::Active), at(5)).unwrap();
        let line = s.to_json();
        assert_eq!(
            line,
            r#"{"entity_id":"task-42","entity_type":"task","version":2,"status":"active","data":{"step":1},"created_at":"2026-04-16T12:00:00.000000+00:00","updated_at":"2026-04-16T12:00:00.000005+00:00","updated_by":"odin","metadata":{}}"#
        );
        assert_eq!(State::from_json(&line).unwrap(), s);
        assert_eq!(s.to_value().to_string(), line);
        assert_eq!(s.to_value(), serde_json::to_value(&s).unwrap());
        let via_serde: State = serde_json::from_str(&line).unwrap();
        assert_eq!(via_serde, s);
    }

    #[test]
    fn from_json_accepts_other_offsets_and_whole_float_versions() {
        let text = r#"{"entity_id":"a","entity_type":"t","version":3.0,"status":"paused","data":{},"created_at":"2026-04-16T14:00:00+02:00","updated_at":"2026-04-16T12:00:01Z","updated_by":"f","metadata":{},"extra":1}"#;
        let s = State::from_json(text).unwrap();
        assert_eq!(s.version(), 3);
        assert_eq!(s.created_at().to_string(), "2026-04-16T12:00:00.000000+00:00");
    }

    #[test]
    fn shape_of_times() {
        for good in [
            "2026-04-16T12:00:00Z",
            "2026-04-16T12:00:00.1+00:00",
            "2026-04-16T12:00:00.123456789-05:30",
        ] {
            assert!(rfc3339_shape(good), "{good}");
        }
        for bad in [
            "",
            "2026-04-16",
            "2026-04-16 12:00:00Z",
            " 2026-04-16T12:00:00Z",
            "2026-04-16T12:00:00Z ",
            "2026-04-16T12:00:00",
            "2026-04-16T12:00:00.Z",
            "2026-04-16T12:00:00.1234567890Z",
            "2026-04-16T12:00:00+0000",
            "2026-04-16t12:00:00z",
            "२०२६-04-16T12:00:00Z",
        ] {
            assert!(!rfc3339_shape(bad), "{bad}");
        }
    }
}
