//! Turning a log line back into an event, or saying why it is not one.

use seed_event::{Cursor, Event, StoredEvent, Topic};

use crate::prefix::parse_prefix;

/// The timestamp of a line's event, if it is readable.
pub(crate) fn event_timestamp(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?;
    Event::from_json_line(text).ok().map(|e| e.timestamp.unix_micros())
}

/// Decodes a log line, or says why it is not an event of `topic`.
pub(crate) fn try_decode(topic: &Topic, line: &[u8]) -> std::result::Result<StoredEvent, String> {
    let Some(prefix) = parse_prefix(line) else {
        let legacy = std::str::from_utf8(line).ok().and_then(|t| Event::from_json_line(t).ok());
        return Err(if legacy.is_some() {
            "an event without store fields, as the original implementation wrote them; \
             import such a directory into a store with `import_legacy` instead of opening it"
                .to_string()
        } else {
            "no store fields (expected a line starting with {\"seq\":N,\"hwm\":T,)".to_string()
        });
    };
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let event = Event::from_json_line(text).map_err(|e| e.to_string())?;
    if event.topic != *topic {
        return Err(format!(
            "the event's topic is {:?}, not {:?}",
            event.topic.as_str(),
            topic.as_str()
        ));
    }
    Ok(StoredEvent { cursor: Cursor::new(prefix.seq, 0), event })
}

/// Decodes a log line; a corrupt one is logged with its topic and offset and gives `None`.
pub(crate) fn decode_line(topic: &Topic, offset: u64, line: &[u8]) -> Option<StoredEvent> {
    match try_decode(topic, line) {
        Ok(e) => Some(e),
        Err(reason) => {
            log::warn!("skipping corrupt line of topic {topic} at byte {offset}: {reason}");
            None
        }
    }
}
