//! The state half of Seed: a [`State`] is the versioned state of one entity
//! (an archon, a task, …), created at version 1 and moved on by [`Change`]s,
//! each giving the next version. Its JSON form is the contract for other
//! languages, written down as a JSON Schema (draft 2020-12) in [`SCHEMA`].
//!
//! ```
//! use seed_state::{Change, NewState, State, Status};
//!
//! let data = serde_json::json!({"title": "index the archive"});
//! let new = NewState::new("task-42", "task", "fenrir").data(data.as_object().cloned().unwrap());
//! let v1 = State::create(new)?;
//! let v2 = v1.update(Change::by("fenrir").status(Status::Active))?;
//! assert_eq!(v2.version(), 2);
//!
//! // Invalid changes are rejected and name the field.
//! let err = v2.update(Change::by("fenrir").status(Status::Pending)).unwrap_err();
//! assert!(err.to_string().starts_with("invalid status: cannot move from active to pending"));
//!
//! let line = v2.to_json();
//! assert_eq!(State::from_json(&line)?, v2);
//! # Ok::<(), seed_event::Error>(())
//! ```
//!
//! # The state store
//!
//! [`StateStore`] keeps states on any [`seed_event::EventStore`] whose
//! [`states`](seed_event::EventStore::states) capability is there (the
//! memory, file and Redis stores): each store appends a change and updates
//! its index of latest states in one atomic step.
//!
//! ```
//! use std::sync::Arc;
//! use seed_event::{ErrorKind, MemoryStore};
//! use seed_state::{Change, NewState, StateStore, Status};
//!
//! let states = StateStore::new(Arc::new(MemoryStore::new()))?;
//! let v1 = states.create(NewState::new("task-42", "task", "fenrir"))?;
//! let v2 = states.update("task", "task-42", 1, Change::by("odin").status(Status::Active))?;
//! assert_eq!(v2.state.version(), 2);
//! // A writer that read version 1 loses: no update is lost.
//! let lost = states.update("task", "task-42", 1, Change::by("thor").status(Status::Paused));
//! let err = lost.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Conflict);
//! assert_eq!(err.to_string(), "conflict: task/task-42 is at version 2, expected 1");
//! # let _ = v1;
//! # Ok::<(), seed_event::Error>(())
//! ```
//!
//! - `create` conflicts (`already exists`) when the entity exists; after a
//!   delete it creates the entity again at the version after the tombstone's,
//!   and of concurrent creates exactly one wins.
//! - `update` and `delete` take the version the caller read and fail with a
//!   conflict carrying the current version when it moved on.
//! - `delete` writes a tombstone: the last state at the next version, marked
//!   deleted. `get` then says not found; `history` keeps every kept version.
//! - Each store keeps the newest N versions of each entity (default 64,
//!   configurable per store); the newest record, tombstone or not, is never removed.
//! - `list` streams the current states of a type; `watch` hands out the
//!   current states, [`WatchEvent::Ready`], then every change in order,
//!   resumes after a revision, reports compacted history with
//!   [`WatchEvent::Compacted`], and waits out store outages. The initial
//!   states of a watch are read before the first is handed out (a watch of a
//!   type holds them in memory until then).
//!
//! # The change event
//!
//! Every change is one event on the topic `state.<entity_type>`, appended by
//! the store in the same step as the change (an entity type is one topic
//! token: no `.`, `*` or `>`). Subscribers and durable consumers see it like
//! any event:
//!
//! - `source`: the state's `updated_by`; `timestamp`: its `updated_at`;
//!   `correlation_id`: the [`Cause`]'s, when given; `metadata`: `{}`.
//! - `payload`: `{"entity_id": ID, "version": N, "deleted": false|true,
//!   "caused_by": EVENT_ID|null, "state": STATE}` where `STATE` is the
//!   state's JSON form (`schema/state.json`) at version N.
//! - The event's cursor is the change's revision (see [`Entry::revision`]).

mod change;
mod state;
mod status;
mod store;
mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use state::{Cause, Change, DataChange, NewState, State, FIELDS, MAX_NAME_CHARS, MAX_VERSION};
pub use status::Status;
pub use store::{Entry, StateStore};
pub use watch::{Watch, WatchEvent, WatchFrom};

/// The JSON Schema (draft 2020-12) of a state's JSON form: `schema/state.json`.
pub const SCHEMA: &str = include_str!("../schema/state.json");
