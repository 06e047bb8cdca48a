//! [`Status`]: where an entity is in its life, and which moves between statuses are allowed.

use std::fmt;
use std::str::FromStr;

use seed_event::{Error, Result};

/// Where an entity is in its life.
///
/// The allowed moves form a small life cycle: work starts `pending`, becomes
/// `active`, may be `paused` and resumed, and ends `completed` or `failed`
/// (a failed entity may be retried by moving it back to `pending`). Any
/// status but `archived` may be archived, and an archived state is frozen.
///
/// ```
/// use seed_state::Status;
/// assert!(Status::Active.can_become(Status::Paused));
/// assert!(!Status::Completed.can_become(Status::Active));
/// assert_eq!("failed".parse::<Status>().unwrap(), Status::Failed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Created, not started yet.
    Pending,
    /// Being worked on.
    Active,
    /// Stopped for now; may be resumed.
    Paused,
    /// Finished successfully.
    Completed,
    /// Finished unsuccessfully; may be retried.
    Failed,
    /// Kept for the record only; no further change is allowed.
    Archived,
}

impl Status {
    /// Every status, in life-cycle order.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Active,
        Status::Paused,
        Status::Completed,
        Status::Failed,
        Status::Archived,
    ];

    /// The name written in JSON, e.g. `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Archived => "archived",
        }
    }

    /// Whether a state with this status may move to `next` (staying put is allowed but archived).
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        match (self, next) {
            (Archived, _) => false,
            (_, Archived) => true,
            (a, b) if a == b => true,
            (Pending, Active | Paused | Completed | Failed) => true,
            (Active, Paused | Completed | Failed) => true,
            (Paused, Active | Completed | Failed) => true,
            (Failed, Pending) => true,
            _ => false,
        }
    }

    /// The statuses this one may move to, for error messages.
    pub fn successors(self) -> Vec<Status> {
        Status::ALL.into_iter().filter(|&s| s != self && self.can_become(s)).collect()
    }

    /// Parses a status name; the error lists the valid names.
    pub fn parse(text: &str) -> Result<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            Error::invalid("status", format!("{text:?} is not one of {}", Status::names()))
        })
    }

    /// The valid names, comma-separated, for error messages.
    pub fn names() -> String {
        Status::ALL.map(Status::as_str).join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;
    fn from_str(s: &str) -> Result<Status> {
        Status::parse(s)
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        let s = String::deserialize(d)?;
        Status::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()).unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = Status::parse("done").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid status: \"done\" is not one of pending, active, paused, completed, failed, archived"
        );
        assert!(Status::parse("Active").is_err(), "names are case-sensitive");
    }

    #[test]
    fn life_cycle() {
        use Status::*;
        assert!(Pending.can_become(Active));
        assert!(Active.can_become(Active));
        assert!(Paused.can_become(Active));
        assert!(Failed.can_become(Pending));
        assert!(Completed.can_become(Archived));
        assert!(!Completed.can_become(Failed));
        assert!(!Completed.can_become(Pending));
        assert!(!Active.can_become(Pending));
        for s in Status::ALL {
            assert!(!Archived.can_become(s), "archived is frozen, even to {s}");
            assert!(s == Archived || s.can_become(Archived));
        }
        assert_eq!(Completed.successors(), vec![Archived]);
        assert!(Archived.successors().is_empty());
    }
}
