//! [`Cursor`]: an event's position within its topic.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The position of an event within its topic, as two numbers `major-minor`.
///
/// Cursors are opaque to users but ordered within a topic: a later event has a
/// greater cursor, also across a clear or a retention run. [`Cursor::ZERO`]
/// stands before every event. The file store uses `sequence-0`; the Redis
/// store uses the stream id `milliseconds-sequence`. The text form round-trips.
///
/// ```
/// use seed_event::Cursor;
/// let c: Cursor = "1713268800123-4".parse().unwrap();
/// assert_eq!(c.to_string(), "1713268800123-4");
/// assert!(c > Cursor::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    major: u64,
    minor: u64,
}

impl Cursor {
    /// The position before every event of a topic.
    pub const ZERO: Cursor = Cursor { major: 0, minor: 0 };

    /// A cursor from its two parts.
    pub const fn new(major: u64, minor: u64) -> Cursor {
        Cursor { major, minor }
    }

    /// The first part (a sequence number or a time).
    pub const fn major(self) -> u64 {
        self.major
    }

    /// The second part.
    pub const fn minor(self) -> u64 {
        self.minor
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

impl FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cursor> {
        let bad = || Error::invalid("cursor", format!("{s:?} is not a cursor like 42-0"));
        let (major, minor) = match s.split_once('-') {
            Some((a, b)) => (a, b),
            None => (s, "0"),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(major) || !digits(minor) {
            return Err(bad());
        }
        Ok(Cursor {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cursor, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_order() {
        for c in [Cursor::ZERO, Cursor::new(1, 0), Cursor::new(u64::MAX, u64::MAX)] {
            assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        }
        assert_eq!("7".parse::<Cursor>().unwrap(), Cursor::new(7, 0));
        assert!(Cursor::new(1, 5) < Cursor::new(2, 0));
        assert!(Cursor::new(2, 0) < Cursor::new(2, 1));
        for bad in ["", "-", "a-1", "1-", "-1", "1-2-3", "18446744073709551616"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }
}
