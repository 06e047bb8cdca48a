//! The event half of Seed: the [`Event`] model, [`Topic`] names and
//! [`TopicPattern`]s, the [`EventStore`] trait every backend implements, the
//! shared [`Error`] type, and (with the `conformance` feature) the suite that
//! every store passes. [`support`] holds what store implementations and the
//! other crates built on this one share.
//!
//! ```
//! use seed_event::{Event, EventStore, MemoryStore, Query, Topic, TopicPattern};
//!
//! let store = MemoryStore::new();
//! let topic = Topic::new("task.completed")?;
//! let payload = seed_event::parse_json_object("payload", r#"{"task_id": "abc"}"#)?;
//! let stored = store.append_owned(Event::new(topic, "fenrir", payload))?;
//!
//! let pattern = TopicPattern::new("task.*")?;
//! let events = store.query(&Query::pattern(pattern))?;
//! assert_eq!(events, vec![stored]);
//! # Ok::<(), seed_event::Error>(())
//! ```

mod change;
mod cursor;
mod error;
mod event;
pub mod group_engine;
mod groups;
mod lock;
mod memory;
mod retention;
mod states;
mod store;
pub mod support;
mod timestamp;
mod topic;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "conformance"))]
pub mod group_conformance;

pub use change::{ChangeEvent, StateSpans, WrittenChange, LAID_OUT};
pub use cursor::Cursor;
pub use error::{Error, ErrorKind, Result};
pub use event::{parse_json_object, Event, JsonObject};
pub use groups::{
    active_member, group_in_use, join_group, mode_mismatch, Delivery, DeliveryToken, GroupBackend,
    GroupConfig, GroupInfo, GroupLock, GroupMember, GroupOrdering,
};
pub use lock::{Cancel, ConsumerLock, Fence, LockRequest};
pub use memory::MemoryStore;
pub use retention::{Limits, Retention};
pub use states::{
    change_of, check_entity_type, entity_type_of, state_topic, version_conflict, DataEdit, Edited,
    Hole, StateBackend, StateEdit, StatePut, DEFAULT_STATE_HISTORY, STATE_TOPIC_PREFIX,
};
pub use store::{
    Clear, ConsumerName, EventStore, EventStream, FollowFrom, Follower, Interrupt, Limit, Query,
    Start, StoredEvent, TopicStats,
};
pub use timestamp::Timestamp;
pub use topic::{Topic, TopicPattern, MAX_TOPIC_BYTES};
