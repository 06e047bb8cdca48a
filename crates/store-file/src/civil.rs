//! Timestamps in `Timestamp`'s text form, written into a line.

use std::io::Write as _;

/// 10000-01-01T00:00:00Z in Unix microseconds: the end of [`push_timestamp`]'s fast path.
pub(crate) const YEAR_10000: u64 = 253_402_300_800_000_000;

/// `Timestamp`'s text form (`2026-04-16T12:00:00.123456+00:00`): from 1970
/// on through [`seed_event::Timestamp::text_bytes`], without a formatter;
/// earlier times through `Display`.
pub(crate) fn push_timestamp(out: &mut Vec<u8>, t: seed_event::Timestamp) {
    match t.text_bytes() {
        Some(text) => out.extend_from_slice(&text),
        None => {
            let _ = write!(out, "{t}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seed_event::Timestamp;

    /// Days from 1969 to the end of 9999 a month and a bit apart (so every
    /// day of the month and time of day comes round), the last instant, and
    /// the days around the end of February of leap and century years, as
    /// `Timestamp` displays them.
    #[test]
    fn timestamps_are_written_as_timestamp_displays_them() {
        const DAY: i64 = 86_400_000_000;
        let mut out = Vec::new();
        let mut check = |micros: i64| {
            let t = Timestamp::from_unix_micros(micros);
            out.clear();
            push_timestamp(&mut out, t);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), t.to_string(), "{micros}");
        };
        let mut micros = -400 * DAY;
        while micros < YEAR_10000 as i64 {
            check(micros);
            micros += 31 * DAY + 3_601_000_007;
        }
        check(Timestamp::MAX.unix_micros());
        for year in [1970i64, 1972, 2000, 2024, 2100, 2400, 9996, 9999] {
            // About 1 March of `year` in Unix days (the ±3 days cover the
            // end of February whether or not the year is a leap year).
            let leaps = |y: i64| y / 4 - y / 100 + y / 400;
            let march = (year - 1970) * 365 + leaps(year - 1) - leaps(1969) + 59;
            for d in -3..3 {
                check((march + d) * DAY + 12_345_678);
                check((march + d) * DAY - 1);
            }
        }
    }
}
