//! Timestamps in `Timestamp`'s text form, from Unix microseconds to a civil date and time.

use std::io::Write as _;

use crate::digits::put_digit_pair;

/// 10000-01-01T00:00:00Z in Unix microseconds: the end of [`push_timestamp`]'s fast path.
pub(crate) const YEAR_10000: u64 = 253_402_300_800_000_000;

/// `Timestamp`'s text form (`2026-04-16T12:00:00.123456+00:00`) without a formatter.
///
/// Times from 1970 on (a `Timestamp` ends in 9999) take an unsigned path
/// whose divisions by constants compile to multiplications; earlier times go
/// through `Timestamp`'s `Display`.
pub(crate) fn push_timestamp(out: &mut Vec<u8>, t: seed_event::Timestamp) {
    let Ok(micros) = u64::try_from(t.unix_micros()) else {
        let _ = write!(out, "{t}");
        return;
    };
    if micros >= YEAR_10000 {
        let _ = write!(out, "{t}");
        return;
    }
    let secs = micros / 1_000_000;
    let frac = (micros % 1_000_000) as u32;
    let days = secs / 86_400;
    let sod = (secs % 86_400) as u32;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm), shifted
    // to start at 0000-03-01 so that every quantity is non-negative.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
    let mut text = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put2 = |at: usize, v: u32| put_digit_pair(&mut text, at, v);
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
    out.extend_from_slice(&text);
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
