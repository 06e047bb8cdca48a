//! Output formats: the original implementation's text lines, and JSON.

use std::io::{self, Write};

use seed_event::{Event, Timestamp};
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

/// serde_json output as Python's `json.dumps` writes it by default: `", "`
/// and `": "` separators, and every non-ASCII character as `\uXXXX`.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// `value` as Python's `json.dumps(value)` prints it.
pub fn python_json<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = Serializer::with_formatter(&mut out, PythonFormatter);
    // Plain JSON values always serialize; the output is ASCII.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A timestamp as Python's `datetime.isoformat()` prints it (no fraction when it is zero).
pub fn python_isoformat(t: Timestamp) -> String {
    t.to_string().replace(".000000+", "+")
}

/// `n` and the noun, singular for one: `1 event`, `2 events`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The original `history` line: `[<timestamp>] <topic> from <source>: <payload>`.
pub fn history_line(e: &Event) -> String {
    format!(
        "[{}] {} from {}: {}",
        python_isoformat(e.timestamp),
        e.topic,
        e.source,
        python_json(&e.payload)
    )
}

/// Writes events as a JSON array indented by two spaces, one event at a time.
pub struct JsonArray<W: Write> {
    out: W,
    count: usize,
}

impl<W: Write> JsonArray<W> {
    /// Starts an array.
    pub fn new(out: W) -> JsonArray<W> {
        JsonArray { out, count: 0 }
    }

    /// Writes one element.
    pub fn push<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        let sep = if self.count == 0 { "[\n  " } else { ",\n  " };
        // JSON text has no raw newline inside strings, so indenting every line is safe.
        write!(self.out, "{sep}{}", text.replace('\n', "\n  "))?;
        self.count += 1;
        Ok(())
    }

    /// Closes the array.
    pub fn finish(mut self) -> io::Result<()> {
        if self.count == 0 { writeln!(self.out, "[]") } else { writeln!(self.out, "\n]") }?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_json_matches_json_dumps() {
        let v = json!({"task_id": "abc", "n": [1, 2.5, null, true], "ü": "✓ 😀", "o": {}});
        assert_eq!(
            python_json(&v),
            r#"{"task_id": "abc", "n": [1, 2.5, null, true], "\u00fc": "\u2713 \ud83d\ude00", "o": {}}"#
        );
        assert_eq!(python_json(&json!("a\"b\n")), r#""a\"b\n""#);
    }

    #[test]
    fn history_lines_match_the_original() {
        let line = r#"{"id": "0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e21", "topic": "task.completed", "payload": {"task_id": "abc"}, "source": "fenrir", "timestamp": "2026-04-16T12:00:00.123456+00:00", "correlation_id": null, "metadata": {}}"#;
        let e = Event::from_json_line(line).unwrap();
        assert_eq!(
            history_line(&e),
            r#"[2026-04-16T12:00:00.123456+00:00] task.completed from fenrir: {"task_id": "abc"}"#
        );
        let whole = e.with_timestamp(Timestamp::parse("2026-04-16T12:00:00Z").unwrap());
        assert!(history_line(&whole).starts_with("[2026-04-16T12:00:00+00:00] "));
    }

    #[test]
    fn counts() {
        assert_eq!(count(0, "event"), "0 events");
        assert_eq!(count(1, "event"), "1 event");
        assert_eq!(count(2, "file"), "2 files");
    }

    #[test]
    fn json_arrays() {
        let mut out = Vec::new();
        JsonArray::new(&mut out).finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[]\n");
        let mut out = Vec::new();
        let mut array = JsonArray::new(&mut out);
        array.push(&json!({"a": 1})).unwrap();
        array.push(&json!({"b": [2]})).unwrap();
        array.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "[\n  {\n    \"a\": 1\n  },\n  {\n    \"b\": [\n      2\n    ]\n  }\n]\n");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, json!([{"a": 1}, {"b": [2]}]));
    }
}
