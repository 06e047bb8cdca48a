//! [`StateStore`]: versioned entity states with compare-and-set on any
//! [`EventStore`] that keeps states, and [`Entry`], one stored version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use seed_event::support::lock;

use serde_json::Value;
use uuid::Uuid;

use seed_event::{
    change_of, state_topic, Cursor, DataEdit, Edited, Error, ErrorKind, EventStore, Hole,
    JsonObject, Result, StateBackend, StateEdit, StatePut, StoredEvent, Timestamp,
};

use crate::change::write_change;
use crate::state::{DataChange, MAX_VERSION};
use crate::{Cause, Change, NewState, State, Status};

/// How often a create retries when the entity was deleted and created
/// again between its read and its write (each retry means another writer won a race).
const CREATE_RETRIES: u32 = 100;

/// One stored version of an entity: its state, whether it is a tombstone, and
/// where its change event stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The state at this version (of a tombstone: the last state, at the delete's version).
    pub state: State,
    /// Whether this version deleted the entity.
    pub deleted: bool,
    /// The change event's cursor in `state.<entity_type>`: the revision a watch resumes after.
    pub revision: Cursor,
    /// The change event's id.
    pub event_id: Uuid,
    /// The id of the event that caused the change, if given.
    pub caused_by: Option<Uuid>,
    /// The change's correlation id, if given.
    pub correlation_id: Option<String>,
}

impl Entry {
    /// The JSON form: the state's fields (validating against `schema/state.json`),
    /// then `"revision"`, and `"deleted": true` for a tombstone.
    pub fn to_value(&self) -> Value {
        let mut value = self.state.to_value();
        if let Value::Object(map) = &mut value {
            map.insert("revision".into(), Value::String(self.revision.to_string()));
            if self.deleted {
                map.insert("deleted".into(), Value::Bool(true));
            }
        }
        value
    }

    /// [`Entry::to_value`] as one line of text.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// Reads a change event back; the error says what is wrong with it.
    pub fn from_event(stored: &StoredEvent) -> Result<Entry> {
        let event = &stored.event;
        let location = || format!("topic {}, cursor {}", event.topic, stored.cursor);
        let bad = |reason: String| Error::corrupt(location(), reason);
        let state = event
            .payload
            .get("state")
            .ok_or_else(|| bad("the state change event has no `state`".into()))
            .and_then(|v| State::from_value(v).map_err(|e| bad(e.to_string())))?;
        match change_of(event) {
            Some((id, v)) if id == state.entity_id() && v == state.version() => {}
            _ => return Err(bad("entity_id or version differ from the state's".into())),
        }
        let caused_by = match event.payload.get("caused_by") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.parse().map_err(|e| bad(format!("caused_by: {e}")))?),
            Some(_) => return Err(bad("caused_by is not a UUID".into())),
        };
        Ok(Entry {
            deleted: event.payload.get("deleted").and_then(Value::as_bool).unwrap_or(false),
            revision: stored.cursor,
            event_id: event.id,
            caused_by,
            correlation_id: event.correlation_id.clone(),
            state,
        })
    }
}

/// The parts of a [`StateEdit`] for `change` to `kind/id` at `version`:
/// the new event's id, and the template of its line (texts and holes), the
/// line [`write_change`] writes (the Redis store's tests compare them byte
/// for byte) with the holes the store fills from the newest record.
fn edit_template(
    kind: &str,
    id: &str,
    version: u64,
    change: &Change,
) -> Result<(Uuid, Vec<String>, Vec<Hole>)> {
    let topic = state_topic(kind)?;
    let event_id = Uuid::now_v7();
    let json = |s: &str| Value::from(s).to_string();
    let cause = change.reason();
    let caused_by = cause.caused_by.map_or_else(|| "null".to_string(), |u| format!("\"{u}\""));
    let by = json(change.source());
    let id = json(id);
    let correlation = cause.correlation_id.as_deref().map_or_else(|| "null".to_string(), json);
    let texts = vec![
        format!(
            "{{\"id\":\"{event_id}\",\"topic\":{},\"payload\":{{\"entity_id\":{id},\"version\":{version},\"deleted\":false,\"caused_by\":{caused_by},\"state\":{{\"entity_id\":{id},\"entity_type\":{},\"version\":{version},\"status\":",
            json(topic.as_str()),
            json(kind)
        ),
        ",\"data\":".to_string(),
        ",\"created_at\":".to_string(),
        ",\"updated_at\":".to_string(),
        format!(",\"updated_by\":{by},\"metadata\":"),
        format!("}}}},\"source\":{by},\"timestamp\":"),
        format!(",\"correlation_id\":{correlation},\"metadata\":{{}}}}"),
    ];
    let holes = vec![
        Hole::Status,
        Hole::Data,
        Hole::CreatedAt,
        Hole::UpdatedAt,
        Hole::Metadata,
        Hole::UpdatedAt,
    ];
    Ok((event_id, texts, holes))
}

/// How many entities' newest records a [`StateStore`] remembers.
const RECENT: usize = 4096;

/// Versioned entity states on a store: create, read, compare-and-set
/// updates, deletes, history, listing and watching. See the [crate docs](crate).
///
/// A handle remembers the newest records it wrote or read of up to 4,096
/// entities: an update expecting the version remembered computes the new
/// state from it without reading the store first (the store still refuses
/// it if the entity moved on). A version of an entity is one record for the
/// life of a store (deletes leave tombstones, re-creation, clears and
/// compaction keep counting on), so what is remembered never goes wrong.
#[derive(Clone)]
pub struct StateStore {
    store: Arc<dyn EventStore>,
    recent: Arc<Mutex<HashMap<String, Entry>>>,
}

/// The key of an entity among the remembered ones (names hold no control characters).
fn recent_key(kind: &str, id: &str) -> String {
    format!("{kind}\n{id}")
}

impl StateStore {
    /// The states of `store`; fails if the store keeps none.
    pub fn new(store: Arc<dyn EventStore>) -> Result<StateStore> {
        if store.states().is_none() {
            return Err(Error::invalid(
                "store",
                format!("{} keeps no entity states", store.describe()),
            ));
        }
        Ok(StateStore { store, recent: Arc::default() })
    }

    /// The store underneath.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub(crate) fn backend(&self) -> &dyn StateBackend {
        // `new` made sure there is one, and a store's answer does not change.
        match self.store.states() {
            Some(b) => b,
            None => unreachable!("StateStore::new checked that the store keeps states"),
        }
    }

    /// The newest record of an entity (a tombstone too), if it has one.
    fn latest(&self, kind: &str, id: &str) -> Result<Option<Entry>> {
        let latest =
            self.backend().latest(kind, id)?.as_ref().map(Entry::from_event).transpose()?;
        if let Some(entry) = &latest {
            self.remember(entry.clone());
        }
        Ok(latest)
    }

    /// Remembers `entry` as its entity's newest record.
    fn remember(&self, entry: Entry) {
        let key = recent_key(entry.state.entity_type(), entry.state.entity_id());
        let mut recent = lock(&self.recent);
        if recent.len() >= RECENT && !recent.contains_key(&key) {
            recent.clear();
        }
        recent.insert(key, entry);
    }

    /// The remembered live record of the entity at `version`, taken out (the
    /// update about to be put replaces it, and a failed one forgets it).
    fn recalled(&self, kind: &str, id: &str, version: u64) -> Option<Entry> {
        let mut recent = lock(&self.recent);
        let key = recent_key(kind, id);
        let entry = recent.get(&key)?;
        (entry.state.version() == version && !entry.deleted).then(|| recent.remove(&key))?
    }

    fn forget(&self, kind: &str, id: &str) {
        lock(&self.recent).remove(&recent_key(kind, id));
    }

    fn put(&self, state: State, deleted: bool, cause: &Cause) -> Result<Entry> {
        let change = write_change(&state, deleted, cause)?;
        let put = StatePut {
            kind: state.entity_type(),
            id: state.entity_id(),
            version: state.version(),
            change: &change,
        };
        let cursor = match self.backend().put(&put) {
            Ok(cursor) => cursor,
            Err(e) => {
                self.forget(state.entity_type(), state.entity_id());
                return Err(e);
            }
        };
        let entry = Entry {
            state,
            deleted,
            revision: cursor,
            event_id: change.id(),
            caused_by: cause.caused_by,
            correlation_id: cause.correlation_id.clone(),
        };
        self.remember(entry.clone());
        Ok(entry)
    }

    /// Creates the entity at version 1, or after a delete at the version after
    /// the tombstone's. Fails with a conflict (`already exists`) if it exists;
    /// of many concurrent creates exactly one wins, also after a delete.
    pub fn create(&self, new: NewState) -> Result<Entry> {
        let cause = new.cause.clone();
        let first = State::create(new)?;
        let (kind, id) = (first.entity_type().to_string(), first.entity_id().to_string());
        for _ in 0..CREATE_RETRIES {
            let previous = match self.latest(&kind, &id)? {
                None => 0,
                Some(e) if e.deleted => e.state.version(),
                Some(e) => {
                    return Err(seed_event::version_conflict(&kind, &id, 0, e.state.version()))
                }
            };
            let state = first.clone().renumbered(previous + 1)?;
            match self.put(state, false, &cause) {
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                other => return other,
            }
        }
        let actual = self.latest(&kind, &id)?.map_or(0, |e| e.state.version());
        Err(seed_event::version_conflict(&kind, &id, 0, actual))
    }

    /// The entity's current state; not found if it never existed or is deleted.
    pub fn get(&self, kind: &str, id: &str) -> Result<Entry> {
        match self.latest(kind, id)? {
            Some(e) if !e.deleted => Ok(e),
            Some(e) => {
                Err(not_found(kind, id, &format!(" (deleted at version {})", e.state.version())))
            }
            None => Err(not_found(kind, id, "")),
        }
    }

    /// One version of the entity, if still kept (a tombstone too).
    pub fn get_version(&self, kind: &str, id: &str, version: u64) -> Result<Entry> {
        match self.backend().at_version(kind, id, version)? {
            Some(e) => Entry::from_event(&e),
            None => Err(not_found(kind, id, &format!(" at version {version}"))),
        }
    }

    /// Applies `change` if the entity is at `expected_version`; returns the new
    /// version, or a conflict carrying the version found. No update is ever lost.
    pub fn update(
        &self,
        kind: &str,
        id: &str,
        expected_version: u64,
        change: Change,
    ) -> Result<Entry> {
        if let Some(current) = self.recalled(kind, id, expected_version) {
            let cause = change.reason().clone();
            let next = current.state.update(change)?;
            return self.put(next, false, &cause);
        }
        let latest = match self.edit(kind, id, expected_version, &change)? {
            Some(Edited::Applied(record)) => {
                let entry = Entry::from_event(&record)?;
                self.remember(entry.clone());
                return Ok(entry);
            }
            Some(Edited::Refused(latest)) => latest.as_ref().map(Entry::from_event).transpose()?,
            None => self.latest(kind, id)?,
        };
        // Read (or refused by the store): the errors, and any change the store refused, are made here.
        let current = self.live_at(kind, id, expected_version, latest)?;
        let cause = change.reason().clone();
        let next = current.state.update(change)?;
        self.put(next, false, &cause)
    }

    /// Has the store apply `change` itself in one step, if it can and the
    /// change is well-formed (else the caller reads and reports).
    fn edit(&self, kind: &str, id: &str, expected: u64, change: &Change) -> Result<Option<Edited>> {
        let backend = self.backend();
        if !backend.edits()
            || expected == 0
            || expected >= MAX_VERSION
            || crate::state::check_name("updated_by", change.source()).is_err()
        {
            return Ok(None);
        }
        let (event_id, texts, holes) = edit_template(kind, id, expected + 1, change)?;
        let text = |o: &JsonObject| Value::Object(o.clone()).to_string();
        let (data, patch);
        let data_edit = match &change.data {
            DataChange::Keep => DataEdit::Keep,
            DataChange::Replace(d) => {
                data = text(d);
                DataEdit::Replace(&data)
            }
            DataChange::Merge(p) => {
                patch = text(p);
                DataEdit::Merge(&patch)
            }
        };
        let metadata = change.metadata.as_ref().map(text);
        let status = change.status.map(|s| format!("\"{}\"", s.as_str()));
        let from: Vec<String> = match change.status {
            Some(to) => Status::ALL
                .into_iter()
                .filter(|s| s.can_become(to))
                .map(|s| format!("\"{}\"", s.as_str()))
                .collect(),
            None => Vec::new(),
        };
        let from: Vec<&str> = from.iter().map(String::as_str).collect();
        let event_id = event_id.to_string();
        let edit = StateEdit {
            kind,
            id,
            expected,
            event_id: &event_id,
            texts: &texts,
            holes: &holes,
            status: status.as_deref(),
            status_from: &from,
            data: data_edit,
            metadata: metadata.as_deref(),
            now: Timestamp::now(),
        };
        backend.edit(&edit).map(Some)
    }

    /// Deletes the entity if it is at `expected_version`: a tombstone at the
    /// next version, made by `change`'s source (a change that sets nothing
    /// else, e.g. `Change::by("fenrir")`). Its history stays; a later create
    /// continues its versions.
    pub fn delete(
        &self,
        kind: &str,
        id: &str,
        expected_version: u64,
        change: Change,
    ) -> Result<Entry> {
        if !change.is_bare() {
            return Err(Error::invalid(
                "change",
                "a delete sets no status, data or metadata; give only who deletes and why",
            ));
        }
        let current = self.current_at(kind, id, expected_version)?;
        let version = current.state.version() + 1;
        let tombstone = current.state.moved_to(version, change.source(), Timestamp::now())?;
        self.put(tombstone, true, change.reason())
    }

    /// The live entity at exactly `expected` (else a conflict or not found).
    fn current_at(&self, kind: &str, id: &str, expected: u64) -> Result<Entry> {
        if expected == 0 {
            return Err(Error::invalid("expected version", "versions start at 1"));
        }
        self.live_at(kind, id, expected, self.latest(kind, id)?)
    }

    /// `latest` if it is the live entity at exactly `expected` (else a conflict or not found).
    fn live_at(&self, kind: &str, id: &str, expected: u64, latest: Option<Entry>) -> Result<Entry> {
        if expected == 0 {
            return Err(Error::invalid("expected version", "versions start at 1"));
        }
        let actual = latest.as_ref().map_or(0, |e| e.state.version());
        if actual != expected && actual != 0 {
            return Err(seed_event::version_conflict(kind, id, expected, actual));
        }
        match latest {
            Some(e) if !e.deleted => Ok(e),
            Some(e) => {
                Err(not_found(kind, id, &format!(" (deleted at version {})", e.state.version())))
            }
            None => Err(not_found(kind, id, "")),
        }
    }

    /// The kept versions of the entity, oldest first, tombstones included.
    pub fn history(&self, kind: &str, id: &str) -> Result<Vec<Entry>> {
        let records = self.backend().history(kind, id)?;
        if records.is_empty() {
            return Err(not_found(kind, id, ""));
        }
        records.iter().map(Entry::from_event).collect()
    }

    /// The current state of every live entity of `kind` (with `status`, only
    /// those in it), streamed, in no particular order.
    pub fn list(
        &self,
        kind: &str,
        status: Option<Status>,
    ) -> Result<Box<dyn Iterator<Item = Result<Entry>> + Send + '_>> {
        let records = self.backend().list(kind)?;
        Ok(Box::new(records.filter_map(move |r| match r.and_then(|e| Entry::from_event(&e)) {
            Ok(e) if e.deleted || status.is_some_and(|s| s != e.state.status()) => None,
            other => Some(other),
        })))
    }

    /// Removes the versions past the store's history limit now; returns how many went.
    pub fn compact(&self, kind: &str) -> Result<u64> {
        self.backend().compact(kind)
    }
}

/// The not-found error naming `TYPE/ID`.
fn not_found(kind: &str, id: &str, detail: &str) -> Error {
    Error::NotFound(format!("{kind}/{id}{detail}"))
}
