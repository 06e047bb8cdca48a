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

mod state;
mod status;

pub use state::{Change, DataChange, NewState, State, FIELDS, MAX_NAME_CHARS, MAX_VERSION};
pub use status::Status;

/// The JSON Schema (draft 2020-12) of a state's JSON form: `schema/state.json`.
pub const SCHEMA: &str = include_str!("../schema/state.json");
