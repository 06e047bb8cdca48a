//! [`Timestamp`]: a UTC instant with microsecond precision, written as RFC 3339.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{Error, Result};

/// A UTC instant with microsecond precision, from [`Timestamp::MIN`]
/// (0000-01-01) to [`Timestamp::MAX`] (9999-12-31), the years RFC 3339 can write.
///
/// It is written as RFC 3339 with six fractional digits and a `+00:00` offset,
/// exactly as the original Python implementation wrote them
/// (`2026-04-16T12:00:00.123456+00:00`); any RFC 3339 text parses, with a `Z`
/// or another offset (converted to UTC) and from 0 to 9 fractional digits
/// (digits past the sixth are dropped). Every way to make one (parsing,
/// serde, [`Timestamp::try_from_unix_micros`]) refuses a time outside the
/// range, and the saturating ones ([`Timestamp::from_unix_micros`],
/// [`Timestamp::add_micros`]) stop at its ends, so every timestamp prints.
///
/// ```
/// use seed_event::Timestamp;
/// let t: Timestamp = "2026-04-16T14:00:00.5+02:00".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-04-16T12:00:00.500000+00:00");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest timestamp: 0000-01-01T00:00:00.000000+00:00.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000_000);

    /// The latest timestamp: 9999-12-31T23:59:59.999999+00:00.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The current time, truncated to microseconds.
    pub fn now() -> Timestamp {
        let micros = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
        Timestamp::from_unix_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// The instant `micros` microseconds after the Unix epoch, clamped to
    /// [`Timestamp::MIN`]..=[`Timestamp::MAX`].
    pub fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros.clamp(Timestamp::MIN.0, Timestamp::MAX.0))
    }

    /// The instant `micros` microseconds after the Unix epoch; an error naming
    /// the range for a time before year 0000 or after year 9999.
    pub fn try_from_unix_micros(micros: i64) -> Result<Timestamp> {
        if (Timestamp::MIN.0..=Timestamp::MAX.0).contains(&micros) {
            Ok(Timestamp(micros))
        } else {
            Err(out_of_range(&format!("{micros} microseconds after the Unix epoch")))
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// This instant moved by `micros` microseconds (negative moves back),
    /// saturating at [`Timestamp::MIN`] and [`Timestamp::MAX`].
    pub fn add_micros(self, micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(self.0.saturating_add(micros))
    }

    /// Parses RFC 3339 text; the error names the text and the expected form.
    pub fn parse(text: &str) -> Result<Timestamp> {
        if let Some(t) = quick_parse(text.as_bytes()) {
            return Ok(t);
        }
        let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| {
            Error::invalid(
                "timestamp",
                format!(
                    "{text:?} is not an RFC 3339 time like 2026-04-16T12:00:00.123456+00:00 ({e})"
                ),
            )
        })?;
        // An offset can move a time of year 0000 or 9999 out of the range.
        let micros = parsed.unix_timestamp_nanos().div_euclid(1_000);
        i64::try_from(micros)
            .ok()
            .and_then(|m| Timestamp::try_from_unix_micros(m).ok())
            .ok_or_else(|| out_of_range(&format!("{text:?}")))
    }

    fn to_datetime(self) -> OffsetDateTime {
        // Every value in the range converts; the fallback is never taken.
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// The error for a time outside [`Timestamp::MIN`]..=[`Timestamp::MAX`].
fn out_of_range(what: &str) -> Error {
    Error::invalid(
        "timestamp",
        format!("{what} is outside {}..={} in UTC", Timestamp::MIN, Timestamp::MAX),
    )
}

/// Microseconds from 1970 to year 10000.
const YEAR_10000: u64 = 253_402_300_800_000_000;

/// The text of a time from 1970 to 9999 (the common case), computed without
/// a formatter: the civil date from days since 1970-01-01 (H. Hinnant's
/// algorithm, shifted to start at 0000-03-01 so that everything is unsigned).
fn civil_text(micros: u64) -> [u8; 32] {
    let secs = micros / 1_000_000;
    let frac = (micros % 1_000_000) as u32;
    let (days, sod) = (secs / 86_400, (secs % 86_400) as u32);
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
    let mut text = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put2 = |at: usize, v: u32| {
        text[at] = b'0' + (v / 10) as u8;
        text[at + 1] = b'0' + (v % 10) as u8;
    };
    put2(0, year / 100);
    put2(2, year % 100);
    put2(5, month);
    put2(8, day);
    put2(11, sod / 3600);
    put2(14, sod / 60 % 60);
    put2(17, sod % 60);
    put2(20, frac / 10_000);
    put2(22, frac / 100 % 100);
    put2(24, frac % 100);
    text
}

/// The instant `text` is the text of, when it is exactly what [`civil_text`]
/// writes for it (the form every event is stored with), told without the
/// RFC 3339 parser: the date and time are read as numbers, then written
/// back and compared, so any other text (another form, a day past its
/// month's end) is left to the parser.
fn quick_parse(text: &[u8]) -> Option<Timestamp> {
    if text.len() != 32 {
        return None;
    }
    let num = |from: usize, to: usize| {
        text[from..to]
            .iter()
            .try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, frac) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 (H. Hinnant's algorithm, the inverse of civil_text's).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y / 400, y % 400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let micros = (days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000 + frac;
    if micros >= YEAR_10000 || civil_text(micros) != text {
        return None;
    }
    Some(Timestamp(i64::try_from(micros).ok()?))
}

impl Timestamp {
    /// The text form (`2026-04-16T12:00:00.123456+00:00`) as bytes, computed
    /// without a formatter, for times from 1970 on; `None` before 1970 (use
    /// `Display` there). For writers that format many timestamps.
    pub fn text_bytes(self) -> Option<[u8; 32]> {
        match u64::try_from(self.unix_micros()) {
            Ok(micros @ 0..YEAR_10000) => Some(civil_text(micros)),
            _ => None,
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.text_bytes() {
            // Only ASCII digits and separators were written.
            return f.write_str(std::str::from_utf8(&text).unwrap_or_default());
        }
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

    /// The quick text of a time is the formatter's.
    #[test]
    fn civil_text_matches_the_formatter() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let micros = x % YEAR_10000;
            let t = Timestamp::from_unix_micros(micros as i64);
            let dt = t.to_datetime();
            let slow = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.microsecond()
            );
            assert_eq!(t.to_string(), slow, "{micros}");
        }
        for micros in
            [YEAR_10000 - 1, 951_782_400_000_000, 951_868_799_999_999, 4_107_542_400_000_000]
        {
            let t = Timestamp::from_unix_micros(micros as i64);
            assert_eq!(std::str::from_utf8(&civil_text(micros)).unwrap(), t.to_string());
        }
    }

    /// The quick parse gives what the RFC 3339 parser gives, and only for
    /// the stored form: random times, each also with one byte changed.
    #[test]
    fn the_quick_parse_agrees_with_the_parser() {
        let slow = |text: &str| {
            OffsetDateTime::parse(text, &Rfc3339)
                .ok()
                .map(|p| Timestamp::from_unix_micros((p.unix_timestamp_nanos() / 1_000) as i64))
        };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut quick = 0;
        for _ in 0..100_000 {
            let micros = next() % YEAR_10000;
            let mut text = civil_text(micros);
            let t = quick_parse(&text).expect("the stored form");
            assert_eq!(t.unix_micros() as u64, micros);
            assert_eq!(slow(std::str::from_utf8(&text).unwrap()), Some(t));
            let at = (next() % 32) as usize;
            text[at] = b"0123456789-:T.+Z 9"[(next() % 18) as usize];
            let text = std::str::from_utf8(&text).unwrap();
            if let Some(t) = quick_parse(text.as_bytes()) {
                quick += 1;
                assert_eq!(slow(text), Some(t), "{text}");
            }
        }
        assert!(quick > 0);
        for text in [
            "2026-02-30T12:00:00.000000+00:00",
            "2026-04-16T24:00:00.000000+00:00",
            "2026-04-16T23:59:60.000000+00:00",
            "1969-12-31T23:59:59.999999+00:00",
            "2026-04-16T12:00:00.123456Z",
            "2026-04-16T12:00:00.123456-00:00",
        ] {
            assert_eq!(quick_parse(text.as_bytes()), None, "{text}");
        }
    }

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
    fn the_range_is_what_rfc_3339_writes() {
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00.000000+00:00");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999999+00:00");
        for t in [Timestamp::MIN, Timestamp::MAX] {
            assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
            assert_eq!(Timestamp::try_from_unix_micros(t.unix_micros()).unwrap(), t);
        }
        for micros in [i64::MIN, Timestamp::MIN.0 - 1, Timestamp::MAX.0 + 1, i64::MAX] {
            let err = Timestamp::try_from_unix_micros(micros).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid timestamp: {micros} microseconds after the Unix epoch is outside \
                     0000-01-01T00:00:00.000000+00:00..=9999-12-31T23:59:59.999999+00:00 in UTC"
                )
            );
        }
        assert_eq!(Timestamp::from_unix_micros(i64::MIN), Timestamp::MIN);
        assert_eq!(Timestamp::from_unix_micros(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::MAX.add_micros(1), Timestamp::MAX);
        assert_eq!(Timestamp::MIN.add_micros(i64::MIN), Timestamp::MIN);
        assert_eq!(Timestamp::MIN.add_micros(i64::MAX), Timestamp::MAX);
    }

    #[test]
    fn an_offset_cannot_move_a_time_out_of_the_range() {
        for text in ["0000-01-01T00:00:00+00:01", "9999-12-31T23:59:59.999999-00:01"] {
            let err = Timestamp::parse(text).unwrap_err();
            assert!(err.to_string().starts_with("invalid timestamp: "), "{err}");
            assert!(err.to_string().contains("is outside 0000-01-01"), "{err}");
            let json = format!("{text:?}");
            let err = serde_json::from_str::<Timestamp>(&json).unwrap_err();
            assert!(err.to_string().contains("is outside"), "{err}");
        }
        let late = Timestamp::parse("9999-12-31T23:59:59.999999+00:00").unwrap();
        assert_eq!(late, Timestamp::MAX);
    }

    #[test]
    fn bad_text_names_the_expected_form() {
        for bad in ["", "yesterday", "2026-04-16", "2026-13-01T00:00:00Z", "2026-04-16T12:00:00"] {
            let err = Timestamp::parse(bad).unwrap_err();
            assert!(err.to_string().contains("RFC 3339"), "{bad:?}: {err}");
        }
    }
}
