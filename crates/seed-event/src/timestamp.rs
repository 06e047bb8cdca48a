//! [`Timestamp`]: a UTC instant with microsecond precision, written as RFC 3339.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{Error, Result};

/// A UTC instant with microsecond precision.
///
/// It is written as RFC 3339 with six fractional digits and a `+00:00` offset,
/// exactly as the original Python implementation wrote them
/// (`2026-04-16T12:00:00.123456+00:00`); any RFC 3339 text parses, with a `Z`
/// or another offset (converted to UTC) and from 0 to 9 fractional digits
/// (digits past the sixth are dropped).
///
/// ```
/// use seed_event::Timestamp;
/// let t: Timestamp = "2026-04-16T14:00:00.5+02:00".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-04-16T12:00:00.500000+00:00");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time, truncated to microseconds.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000) as i64)
    }

    /// The instant `micros` microseconds after the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// This instant moved by `micros` microseconds (negative moves back), saturating.
    pub fn add_micros(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }

    /// Parses RFC 3339 text; the error names the text and the expected form.
    pub fn parse(text: &str) -> Result<Timestamp> {
        let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| {
            Error::invalid(
                "timestamp",
                format!(
                    "{text:?} is not an RFC 3339 time like 2026-04-16T12:00:00.123456+00:00 ({e})"
                ),
            )
        })?;
        let micros = parsed.unix_timestamp_nanos().div_euclid(1_000);
        i64::try_from(micros)
            .map(Timestamp)
            .map_err(|_| Error::invalid("timestamp", format!("{text:?} is out of range")))
    }

    fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = self.to_datetime();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.microsecond()
        )
    }
}

impl FromStr for Timestamp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Timestamp> {
        Timestamp::parse(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_forms_parse() {
        let a = Timestamp::parse("2026-04-16T12:00:00.123456+00:00").unwrap();
        let b = Timestamp::parse("2026-04-16T12:00:00.123456Z").unwrap();
        let c = Timestamp::parse("2026-04-16T14:00:00.123456+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), "2026-04-16T12:00:00.123456+00:00");
        let whole = Timestamp::parse("2026-04-16T12:00:00+00:00").unwrap();
        assert_eq!(whole.to_string(), "2026-04-16T12:00:00.000000+00:00");
    }

    #[test]
    fn round_trips_at_microsecond_precision() {
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse(&now.to_string()).unwrap(), now);
        let old = Timestamp::from_unix_micros(-1);
        assert_eq!(old.to_string(), "1969-12-31T23:59:59.999999+00:00");
        assert_eq!(Timestamp::parse(&old.to_string()).unwrap(), old);
    }

    #[test]
    fn bad_text_names_the_expected_form() {
        for bad in ["", "yesterday", "2026-04-16", "2026-13-01T00:00:00Z", "2026-04-16T12:00:00"] {
            let err = Timestamp::parse(bad).unwrap_err();
            assert!(err.to_string().contains("RFC 3339"), "{bad:?}: {err}");
        }
    }
}
