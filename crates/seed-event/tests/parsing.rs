//! Property tests of every parser of caller text in this crate: topics,
//! patterns, consumer names, cursors, timestamps and event lines. None may
//! panic, every rejection is an `InvalidInput` error that names the field, and
//! whatever is accepted prints back as text that parses to the same value.

use proptest::prelude::*;
use seed_event::{ConsumerName, Cursor, ErrorKind, Event, Timestamp, Topic, TopicPattern};

/// Text that looks like names: name characters, dots, wildcards, spaces, controls, any char.
fn name_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z0-9_/-]{1,6}",
        2 => Just(".".to_string()),
        1 => Just("*".to_string()),
        1 => Just(">".to_string()),
        1 => Just(" ".to_string()),
        1 => Just("\u{7}".to_string()),
        1 => any::<char>().prop_map(String::from),
        1 => Just("x".repeat(300)),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

/// Text that looks like cursors: digits, dashes and a little else.
fn cursor_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9-]{0,45}",
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}")),
        any::<String>(),
    ]
}

/// Text that looks like RFC 3339 times, near and past the ends of the range.
fn time_like() -> impl Strategy<Value = String> {
    let date = (0u32..=10_000, 0u32..=13, 0u32..=32);
    let time = (0u32..=24, 0u32..=60, 0u32..=61, "(\\.[0-9]{0,10})?");
    let offset = prop_oneof!["Z", "[+-][0-2][0-9]:[0-5][0-9]", "", "[+-]99:99"];
    prop_oneof![
        4 => (date, time, offset).prop_map(|((y, mo, d), (h, mi, s, frac), off)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        }),
        1 => any::<String>(),
    ]
}

/// Asserts that `result` is a value or an `InvalidInput` error naming `field`.
fn accepted_or_named<T>(result: seed_event::Result<T>, field: &str, text: &str) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{text:?}: {err}");
            let message = err.to_string();
            assert!(message.starts_with(&format!("invalid {field}: ")), "{text:?}: {message}");
            assert!(!message.contains('\n'), "one line: {message:?}");
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn topics_parse_or_name_the_topic(text in name_like()) {
        if let Some(topic) = accepted_or_named(Topic::new(text.clone()), "topic", &text) {
            prop_assert_eq!(topic.as_str(), text.as_str());
            prop_assert!(topic.tokens().all(|t| !t.is_empty() && t != "*" && t != ">"));
            prop_assert!(TopicPattern::from(topic.clone()).matches(&topic));
        }
    }

    #[test]
    fn patterns_parse_or_name_the_pattern(text in name_like(), other in name_like()) {
        let parsed = TopicPattern::new(text.clone());
        if let Some(pattern) = accepted_or_named(parsed, "topic pattern", &text) {
            prop_assert_eq!(pattern.to_string(), text.clone());
            if let Ok(topic) = Topic::new(other) {
                // Matching never panics, and an exact pattern matches only its own topic.
                let matches = pattern.matches(&topic);
                if let Some(exact) = pattern.exact() {
                    prop_assert_eq!(matches, exact == topic);
                }
            }
        }
    }

    #[test]
    fn consumer_names_parse_or_name_the_consumer(text in name_like()) {
        let parsed = ConsumerName::new(text.clone());
        if let Some(name) = accepted_or_named(parsed, "consumer name", &text) {
            prop_assert_eq!(name.as_str(), text.as_str());
            let json = serde_json::to_string(&name).unwrap();
            prop_assert_eq!(serde_json::from_str::<ConsumerName>(&json).unwrap(), name);
        }
    }

    #[test]
    fn cursors_parse_or_name_the_cursor(text in cursor_like()) {
        if let Some(cursor) = accepted_or_named(text.parse::<Cursor>(), "cursor", &text) {
            prop_assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        }
    }

    #[test]
    fn timestamps_parse_or_name_the_timestamp(text in time_like()) {
        if let Some(t) = accepted_or_named(Timestamp::parse(&text), "timestamp", &text) {
            prop_assert!((Timestamp::MIN..=Timestamp::MAX).contains(&t));
            let printed = t.to_string();
            prop_assert_eq!(printed.len(), "2026-04-16T12:00:00.123456+00:00".len());
            prop_assert_eq!(Timestamp::parse(&printed).unwrap(), t);
        }
    }

    #[test]
    fn every_timestamp_prints_and_parses_back(micros in any::<i64>(), by in any::<i64>()) {
        let clamped = Timestamp::from_unix_micros(micros);
        match Timestamp::try_from_unix_micros(micros) {
            Ok(t) => prop_assert_eq!(t, clamped),
            Err(err) => {
                accepted_or_named::<()>(Err(err), "timestamp", &micros.to_string());
                prop_assert!(clamped == Timestamp::MIN || clamped == Timestamp::MAX);
            }
        }
        for t in [clamped, clamped.add_micros(by)] {
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }

    #[test]
    fn event_lines_parse_or_name_the_event(
        time in time_like(),
        topic in name_like(),
        cut in any::<prop::sample::Index>(),
    ) {
        let line = format!(
            r#"{{"id":"0190a0a0-0000-7000-8000-000000000000","topic":{},"payload":{{}},"source":"s","timestamp":{},"correlation_id":null,"metadata":{{}}}}"#,
            serde_json::Value::String(topic),
            serde_json::Value::String(time),
        );
        let cut = cut.index(line.len() + 1);
        for text in [line.as_str(), line.get(..cut).unwrap_or("")] {
            if let Some(event) = accepted_or_named(Event::from_json_line(text), "event", text) {
                prop_assert_eq!(Event::from_json_line(&event.to_json_line()).unwrap(), event);
            }
        }
    }
}
