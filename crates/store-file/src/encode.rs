//! The log line of an event: the store fields, then the event's JSON byte
//! for byte as serde_json writes `Event`, without a generic serializer.

use seed_event::Event;

use crate::civil::{push_timestamp, YEAR_10000};
use crate::digits::{push_i64, push_u64, put_digit_pair};
use crate::escape::needs_escape;
#[cfg(test)]
use crate::prefix::{encode_prefix, Prefix};

/// Appends one line for `event` to `out`: the store fields, then the event's
/// JSON byte for byte as `Event`'s `Serialize` writes it (a test checks this),
/// without going through a generic serializer for the fixed fields.
#[cfg(test)]
pub(crate) fn encode_line(out: &mut Vec<u8>, prefix: Prefix, event: &Event) {
    encode_prefix(out, prefix);
    encode_body(out, event);
}

/// The rest of a line after [`encode_prefix`]: the event's fields and the newline.
/// It needs no lock, so writers prepare it before they take one.
#[cfg(test)]
pub(crate) fn encode_body(out: &mut Vec<u8>, event: &Event) {
    BodyEncoder::default().encode(out, event);
}

/// Writes the rest of lines after [`encode_prefix`]: the event's fields and
/// the newline; keeps the text of the last second it wrote, which the next
/// events of a batch, and the next appends of a busy topic, mostly share.
#[derive(Debug, Default)]
pub(crate) struct BodyEncoder {
    /// The whole second of the last timestamp written and its text
    /// (`2026-04-16T12:00:00`), if it was written the fast way.
    second: Option<(u64, [u8; 19])>,
}

impl BodyEncoder {
    /// Appends the body of `event`'s line to `out`.
    pub(crate) fn encode(&mut self, out: &mut Vec<u8>, event: &Event) {
        out.extend_from_slice(b"\"id\":\"");
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(event.id.hyphenated().encode_lower(&mut id).as_bytes());
        out.extend_from_slice(b"\",\"topic\":");
        push_json_str(out, event.topic.as_str());
        out.extend_from_slice(b",\"payload\":");
        push_object(out, &event.payload);
        out.extend_from_slice(b",\"source\":");
        push_json_str(out, &event.source);
        out.extend_from_slice(b",\"timestamp\":\"");
        self.push_timestamp(out, event.timestamp);
        out.extend_from_slice(b"\",\"correlation_id\":");
        match &event.correlation_id {
            Some(c) => push_json_str(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"metadata\":");
        push_object(out, &event.metadata);
        out.extend_from_slice(b"}\n");
    }

    /// [`push_timestamp`], with the date and time of day taken from the last
    /// call when the second is the same.
    fn push_timestamp(&mut self, out: &mut Vec<u8>, t: seed_event::Timestamp) {
        let micros = match u64::try_from(t.unix_micros()) {
            Ok(m) if m < YEAR_10000 => m,
            _ => return push_timestamp(out, t),
        };
        let (second, frac) = (micros / 1_000_000, (micros % 1_000_000) as u32);
        match self.second {
            Some((s, text)) if s == second => {
                let mut tail = *b".000000+00:00";
                put_digit_pair(&mut tail, 1, frac / 10_000);
                put_digit_pair(&mut tail, 3, frac / 100 % 100);
                put_digit_pair(&mut tail, 5, frac % 100);
                out.extend_from_slice(&text);
                out.extend_from_slice(&tail);
            }
            _ => {
                let start = out.len();
                push_timestamp(out, t);
                self.second = out[start..].first_chunk::<19>().map(|text| (second, *text));
            }
        }
    }
}

/// A JSON object in serde_json's compact form.
fn push_object(out: &mut Vec<u8>, map: &seed_event::JsonObject) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, k);
        out.push(b':');
        push_value(out, v);
    }
    out.push(b'}');
}

/// A JSON value in serde_json's compact form.
fn push_value(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Integers in the same decimal form serde_json's `itoa` writes; floats
        // through serde_json (serializing plain data into memory cannot fail).
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                push_u64(out, u);
            } else if let Some(i) = n.as_i64() {
                push_i64(out, i);
            } else {
                let _ = serde_json::to_writer(&mut *out, n);
            }
        }
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => push_object(out, map),
    }
}

/// A JSON string as serde_json writes it; text without `"`, `\\` and control
/// characters (the only bytes serde_json escapes) is copied as it is.
#[inline]
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A whole line for an event of topic `t` at time `hwm`, for tests.
#[cfg(test)]
pub(crate) fn test_line(seq: u64, hwm: i64, more: bool) -> Vec<u8> {
    let e = Event::new(seed_event::Topic::new("t").unwrap(), "s", seed_event::JsonObject::new())
        .with_timestamp(seed_event::Timestamp::from_unix_micros(hwm));
    let mut out = Vec::new();
    encode_line(&mut out, Prefix { seq, hwm, more }, &e);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use seed_event::{JsonObject, Timestamp, Topic};

    /// Every ASCII character at every position of every length up to two
    /// words and a half, and some wider characters, written as serde_json
    /// writes them.
    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut out = Vec::new();
        let mut check = |s: &str| {
            out.clear();
            out.extend_from_slice(b"x");
            push_json_str(&mut out, s);
            assert_eq!(&out[1..], serde_json::to_string(s).unwrap().as_bytes(), "{s:?}");
        };
        for len in 0..=20 {
            check(&"~".repeat(len));
            for pos in 0..len {
                for b in 0u8..0x80 {
                    let mut bytes = vec![b'~'; len];
                    bytes[pos] = b;
                    check(std::str::from_utf8(&bytes).unwrap());
                }
            }
        }
        for s in ["ü", "\u{2028}é\u{1f600}", "ключ\"", "\u{7f}\u{1f600}\n", "aaaaaaaé\u{1}"]
        {
            check(s);
        }
    }

    /// One encoder through the same second, the next, an earlier one, and
    /// times off its fast path in between: each body says its own time.
    #[test]
    fn an_encoder_reusing_the_last_second_writes_every_time_exactly() {
        const SECOND: i64 = 1_000_000;
        let base = 1_776_340_800 * SECOND; // 2026-04-16T12:00:00Z
        let times = [
            base,
            base + 1,
            base + 999_999,
            base + SECOND,
            base + SECOND + 5,
            base - 1,
            base,
            -1,
            base,
            253_402_300_800_000_000, // year 10000: clamped to the last instant of 9999
            253_402_300_800_000_000 - 1,
            253_402_300_800_000_000 - 2,
            0,
            base + 86_400 * SECOND,
            base + 86_400 * SECOND + 7,
        ];
        let mut encoder = BodyEncoder::default();
        let mut e = Event::new(Topic::new("t").unwrap(), "s", JsonObject::new());
        for micros in times {
            e.timestamp = Timestamp::from_unix_micros(micros);
            let mut out = Vec::new();
            encoder.encode(&mut out, &e);
            let mut fresh = Vec::new();
            encode_body(&mut fresh, &e);
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(fresh).unwrap());
            let text = format!("\"timestamp\":\"{}\"", e.timestamp);
            let mut line = Vec::new();
            encoder.encode(&mut line, &e);
            assert!(String::from_utf8(line).unwrap().contains(&text), "{micros}");
        }
    }

    #[test]
    fn lines_hold_exactly_the_events_serde_form() {
        let t = Topic::new("service/api.health").unwrap();
        let payload = serde_json::json!({
            "ü": "\"quoted\"\n",
            "n": [1, 2.5, null, -3, 1e300, u64::MAX, true, false, [], {}],
            "ints": [0, 9, 10, 99, 100, -1, -10, -100, i64::MIN, i64::MAX, u64::MAX - 1],
            "floats": [0.1, -0.0, 1e-7, 123456789.125, f64::MAX, f64::MIN_POSITIVE, 1.0],
            "Schlüssel \u{1f600}\u{0}": {"ключ": "\u{8}\u{c}\r\t\u{1f}\u{2028}é", "k\"": []},
            "long": "an ASCII string longer than eight bytes, then one quote\"",
            "o": {"b": 1, "a": {"x": [{"y": "\\"}]}},
            "e": "",
            "tab\t": "\u{1f600}\u{7f}",
        });
        let base = Event::new(t, "src\u{7f}\u{1}", payload.as_object().unwrap().clone());
        let times = [
            0,
            -1,
            1_776_340_800_123_456,
            951_782_400_000_000,
            -62_135_596_800_000_000 - 1,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            4_107_542_400_000_001,
        ];
        for (i, micros) in times.into_iter().enumerate() {
            let mut e = base.clone().with_timestamp(Timestamp::from_unix_micros(micros));
            if i % 2 == 0 {
                e = e
                    .with_correlation_id("c\"1")
                    .with_metadata(payload.as_object().unwrap().clone());
            }
            let mut out = Vec::new();
            let seq = [3, 10, 99, 100, 12_345, u64::MAX / 2, 1, 1_000_000_007][i];
            encode_line(&mut out, Prefix { seq, hwm: micros, more: i % 3 == 0 }, &e);
            let more = if i % 3 == 0 { "\"more\":true," } else { "" };
            let expected =
                format!("{{\"seq\":{seq},\"hwm\":{micros},{more}{}\n", &e.to_json_line()[1..]);
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }
}
