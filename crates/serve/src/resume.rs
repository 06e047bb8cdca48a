//! The SSE resume token: the `id:` of every streamed event, sent back as
//! `Last-Event-ID` to continue exactly after that event.
//!
//! A stream over a pattern spans topics, and cursors are per topic, so the
//! token holds the stream's start and the cursor of the last event it
//! delivered in every topic it has delivered from:
//! `<start>~<topic>=<cursor>~…`, where `<start>` is `b` (from the beginning)
//! or `t<unix micros>` (events at or after that time; a stream `from=new`
//! starts at the time it opened), and topics are percent-encoded outside
//! `A-Za-z0-9._-`. A resumed stream continues each named topic after its
//! cursor and starts every other topic as the original stream did.

use std::collections::BTreeMap;
use std::io::Write as _;

use seed_event::{Cursor, Timestamp, Topic};

/// Where the topics a stream has not delivered from start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// Every stored event.
    Beginning,
    /// Events with `timestamp >= t`.
    Since(Timestamp),
}

/// A stream's position: its start and the last delivered cursor per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The start of topics not in `positions`.
    pub start: StreamStart,
    /// The last delivered event's cursor, per topic.
    pub positions: BTreeMap<Topic, Cursor>,
}

impl Resume {
    /// The token of this position.
    #[cfg(test)]
    pub fn token(&self) -> String {
        let mut out = Vec::new();
        self.write_token(&mut out);
        // Only ASCII is written.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends [`Resume::token`] to `out` (ASCII only).
    pub fn write_token(&self, out: &mut Vec<u8>) {
        self.write_start(out);
        for (topic, cursor) in &self.positions {
            write_position(out, topic, *cursor);
        }
    }

    /// Appends the token's start part, `b` or `t<unix micros>`.
    pub fn write_start(&self, out: &mut Vec<u8>) {
        match self.start {
            StreamStart::Beginning => out.push(b'b'),
            StreamStart::Since(t) => {
                let _ = write!(out, "t{}", t.unix_micros());
            }
        }
    }

    /// Reads a token back; `None` if it is not one.
    pub fn parse(token: &str) -> Option<Resume> {
        let mut parts = token.split('~');
        let start = match parts.next()? {
            "b" => StreamStart::Beginning,
            t => {
                StreamStart::Since(Timestamp::from_unix_micros(t.strip_prefix('t')?.parse().ok()?))
            }
        };
        let mut positions = BTreeMap::new();
        for part in parts {
            let (topic, cursor) = part.split_once('=')?;
            let topic = Topic::new(String::from_utf8(percent_decode(topic)?).ok()?).ok()?;
            positions.insert(topic, cursor.parse().ok()?);
        }
        Some(Resume { start, positions })
    }
}

/// Appends one topic's part of a token, `~<topic>=<cursor>`: a token is its
/// start part followed by these in topic order.
pub fn write_position(out: &mut Vec<u8>, topic: &Topic, cursor: Cursor) {
    out.push(b'~');
    for &b in topic.as_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    let _ = write!(out, "={cursor}");
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_any_topic() {
        let positions = BTreeMap::from([
            (Topic::new("task.done").unwrap(), Cursor::new(42, 0)),
            (Topic::new("a~b=c%d/é").unwrap(), Cursor::new(1713268800123, 4)),
        ]);
        for start in [StreamStart::Beginning, StreamStart::Since(Timestamp::from_unix_micros(17))] {
            let resume = Resume { start, positions: positions.clone() };
            let token = resume.token();
            assert!(token.is_ascii() && !token.contains([' ', '\n']), "{token}");
            assert_eq!(Resume::parse(&token), Some(resume));
        }
    }

    #[test]
    fn other_text_is_no_token() {
        for bad in ["", "x", "t", "tabc", "b~a", "b~a=x", "b~%zz=1-0", "b~a.=1-0"] {
            assert_eq!(Resume::parse(bad), None, "{bad}");
        }
    }
}
