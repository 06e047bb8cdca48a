//! Events of the size the targets are stated for (~390 bytes as a stored line).

use seed_event::{Event, JsonObject, Topic};
use serde_json::{json, Value};

use super::limits::LINE_BYTES;

/// What the file store adds before an event's own JSON: `{"seq":…,"hwm":…,` and the newline.
const STORE_OVERHEAD: usize = 40;

/// Makes payloads padded so an event's stored line is about [`LINE_BYTES`].
#[derive(Clone)]
pub struct Maker {
    topic: Topic,
    pad: String,
}

impl Maker {
    /// A maker of events of `topic`.
    pub fn new(topic: &Topic) -> Maker {
        let probe = Maker { topic: topic.clone(), pad: String::new() };
        let base = probe.event("bench", 0, None).to_json_line().len();
        let pad = LINE_BYTES.saturating_sub(base + STORE_OVERHEAD);
        Maker { topic: topic.clone(), pad: "x".repeat(pad) }
    }

    /// Event number `i` from `source`, carrying a send time `t` (monotonic ns) if given.
    pub fn event(&self, source: &str, i: u64, t: Option<u64>) -> Event {
        let mut payload = JsonObject::new();
        payload.insert("i".to_string(), json!(i));
        payload.insert("t".to_string(), json!(t.unwrap_or(0)));
        payload.insert("data".to_string(), Value::String(self.pad.clone()));
        Event::new(self.topic.clone(), source, payload)
    }

    /// `n` events from `source` numbered from `first`.
    pub fn batch(&self, source: &str, first: u64, n: usize) -> Vec<Event> {
        (0..n as u64).map(|k| self.event(source, first + k, None)).collect()
    }
}

/// The send time an event carries, monotonic ns.
pub fn sent_at(event: &Event) -> u64 {
    event.payload.get("t").and_then(Value::as_u64).unwrap_or(0)
}

/// The number an event carries.
pub fn number(event: &Event) -> Option<u64> {
    event.payload.get("i").and_then(Value::as_u64)
}
