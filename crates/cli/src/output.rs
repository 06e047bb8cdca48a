//! Output formats: the original implementation's text lines, JSON and NDJSON.

use std::io::{self, Write};

use seed_event::{Event, StoredEvent, Timestamp};
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};

use crate::args::Format;

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

/// The line `--output ndjson` prints for a stored event: its JSON line with
/// `"cursor"` first, so a script can resume after it (`--after`).
pub fn ndjson_line(e: &StoredEvent) -> String {
    let line = e.event.to_json_line();
    // An event's JSON line is an object, so it starts with `{`.
    let fields = line.strip_prefix('{').unwrap_or(&line);
    format!("{{\"cursor\":\"{}\",{fields}", e.cursor)
}

/// Prints events one at a time in a [`Format`]; [`EventPrinter::finish`] ends the output.
pub struct EventPrinter<W: Write> {
    out: W,
    format: Format,
    text: fn(&Event) -> String,
    printed: u64,
}

impl<W: Write> EventPrinter<W> {
    /// A printer to `out`; `text` is the line of `--output text` for one event.
    pub fn new(out: W, format: Format, text: fn(&Event) -> String) -> EventPrinter<W> {
        EventPrinter { out, format, text, printed: 0 }
    }

    /// Prints one event: a text line, an element of the JSON array, or an NDJSON line.
    pub fn push(&mut self, e: &StoredEvent) -> io::Result<()> {
        match self.format {
            Format::Text => writeln!(self.out, "{}", (self.text)(&e.event))?,
            Format::Ndjson => writeln!(self.out, "{}", ndjson_line(e))?,
            Format::Json => {
                // The original's `history --json`: an array indented by two spaces.
                let text = serde_json::to_string_pretty(&e.event).map_err(io::Error::other)?;
                let sep = if self.printed == 0 { "[\n  " } else { ",\n  " };
                // JSON text has no raw newline inside strings, so indenting every line is safe.
                write!(self.out, "{sep}{}", text.replace('\n', "\n  "))?;
            }
        }
        self.printed += 1;
        Ok(())
    }

    /// Prints a line that is not an event (a summary of `--output text`).
    pub fn line(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.out, "{line}")
    }

    /// Flushes what was printed, so a reader sees each event as it comes.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Ends the output (closes the JSON array) and flushes; call it once.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.format == Format::Json {
            if self.printed == 0 { writeln!(self.out, "[]") } else { writeln!(self.out, "\n]") }?;
        }
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

    fn stored(n: u64) -> StoredEvent {
        let line = format!(
            r#"{{"id": "0b9d7e5c-7c1a-4a57-9a55-2f0a6f1b8e2{n}", "topic": "t", "payload": {{"n": {n}}}, "source": "s", "timestamp": "2026-04-16T12:00:00+00:00", "correlation_id": null, "metadata": {{}}}}"#
        );
        StoredEvent {
            cursor: seed_event::Cursor::new(n, 0),
            event: Event::from_json_line(&line).unwrap(),
        }
    }

    fn printed(format: Format, events: &[StoredEvent]) -> String {
        let mut out = Vec::new();
        let mut printer = EventPrinter::new(&mut out, format, history_line);
        for e in events {
            printer.push(e).unwrap();
        }
        printer.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_arrays() {
        assert_eq!(printed(Format::Json, &[]), "[]\n");
        let text = printed(Format::Json, &[stored(1), stored(2)]);
        assert!(text.starts_with("[\n  {\n    \"id\": \"0b9d7e5c"), "{text}");
        assert!(text.contains("\n  },\n  {\n") && text.ends_with("\n  }\n]\n"), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed[1]["payload"], json!({"n": 2}));
        assert_eq!(parsed[0].as_object().unwrap().len(), 7, "the original's fields only");
    }

    #[test]
    fn ndjson_lines_carry_the_cursor_first() {
        let text = printed(Format::Ndjson, &[stored(1), stored(2)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with(r#"{"cursor":"2-0","id":"#), "{}", lines[1]);
        let e: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!((e["cursor"].as_str(), &e["payload"]), (Some("1-0"), &json!({"n": 1})));
        assert_eq!(Event::from_json_line(lines[0]).unwrap(), stored(1).event, "still an event");
        assert_eq!(printed(Format::Ndjson, &[]), "");
        assert_eq!(
            printed(Format::Text, &[stored(3)]),
            format!("{}\n", history_line(&stored(3).event))
        );
    }
}
