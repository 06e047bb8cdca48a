//! The store fields that start every log line: `{"seq":N,"hwm":H,` (plus
//! `"more":true,` inside a batch), written and read without a JSON parser.
//!
//! `seq` is the event's position in its topic; `hwm` is the largest timestamp
//! (Unix microseconds) of this line and every earlier one in the file, so it
//! never decreases and can be bisected even when timestamps are out of order.
//! The store fields come first so that a probe in the middle of a file reads
//! them from the first bytes after a newline, whatever the size of the event.

use crate::digits::{push_i64, push_u64};

/// More bytes than any prefix takes.
pub(crate) const PREFIX_MAX: usize = 96;

/// The store fields at the start of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The event's sequence number in its topic.
    pub seq: u64,
    /// The running maximum timestamp (Unix microseconds) up to this line.
    pub hwm: i64,
    /// Whether this line is followed by more lines of the same batch.
    pub more: bool,
}

/// The store fields that start a line, up to and including the comma before `"id"`.
#[inline]
pub(crate) fn encode_prefix(out: &mut Vec<u8>, prefix: Prefix) {
    out.extend_from_slice(b"{\"seq\":");
    push_u64(out, prefix.seq);
    out.extend_from_slice(b",\"hwm\":");
    push_i64(out, prefix.hwm);
    if prefix.more {
        out.extend_from_slice(b",\"more\":true");
    }
    out.push(b',');
}

/// `line` (a line of a batch, `"more":true`) made the last line of its
/// batch: the same line without `"more":true`. A line whose store fields are
/// not in the form this crate writes is returned as it is.
pub(crate) fn ending_batch(line: &[u8]) -> Vec<u8> {
    let Some(p) = parse_prefix(line) else { return line.to_vec() };
    let mut with_more = Vec::with_capacity(PREFIX_MAX);
    encode_prefix(&mut with_more, p);
    let Some(body) = line.strip_prefix(with_more.as_slice()) else { return line.to_vec() };
    let mut out = Vec::with_capacity(line.len());
    encode_prefix(&mut out, Prefix { more: false, ..p });
    out.extend_from_slice(body);
    out
}

/// Reads the store fields at the start of `line`; `None` if they are not there.
pub(crate) fn parse_prefix(line: &[u8]) -> Option<Prefix> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let (seq, rest) = parse_digits(rest)?;
    let rest = rest.strip_prefix(b",\"hwm\":")?;
    let (negative, rest) = match rest.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (hwm, rest) = parse_digits(rest)?;
    let hwm = i64::try_from(hwm).ok()?;
    let hwm = if negative { -hwm } else { hwm };
    let more = rest.starts_with(b",\"more\":true,");
    let rest = if more { &rest[12..] } else { rest };
    if !rest.starts_with(b",\"") || seq == 0 {
        return None;
    }
    Some(Prefix { seq, hwm, more })
}

fn parse_digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for b in &s[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((v, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::encode_line;
    use crate::encode::test_line as line;
    use seed_event::{Event, JsonObject, Topic};

    #[test]
    fn prefix_round_trips_and_the_event_still_parses() {
        for (seq, hwm, more) in [(1, 0, false), (u64::MAX / 2, -5, true), (7, i64::MAX, false)] {
            let l = line(seq, hwm, more);
            assert_eq!(parse_prefix(&l), Some(Prefix { seq, hwm, more }));
            let text = std::str::from_utf8(&l[..l.len() - 1]).unwrap();
            assert_eq!(Event::from_json_line(text).unwrap().topic.as_str(), "t");
        }
        for bad in
            [&b""[..], b"{\"seq\":0,\"hwm\":1,\"id\"", b"{\"seq\":1,\"hwm\":,", b"{\"id\":1}"]
        {
            assert_eq!(parse_prefix(bad), None);
        }
    }

    #[test]
    fn a_batch_line_made_the_last_loses_only_more() {
        let e = Event::new(Topic::new("t").unwrap(), "s", JsonObject::new());
        let (mut inner, mut last) = (Vec::new(), Vec::new());
        encode_line(&mut inner, Prefix { seq: 12, hwm: 345, more: true }, &e);
        encode_line(&mut last, Prefix { seq: 12, hwm: 345, more: false }, &e);
        assert_eq!(ending_batch(&inner), last);
        assert_eq!(ending_batch(&last), last, "a last line stays as it is");
        assert_eq!(ending_batch(b"not an event"), b"not an event".to_vec());
    }
}
