//! Helpers for the crates built on seed-event (stores, the bus, the state
//! model): the preconditions and error shapes every store shares, the one name
//! validator, stream merging, and lock recovery. Applications do not need them.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, WaitTimeoutResult};
use std::time::Duration;

use serde_json::Value;

use crate::{Cursor, Error, Event, EventStream, Limit, Result, StoredEvent, Topic};

/// Checks that every event of a batch for `topic` has that topic: the
/// precondition of [`EventStore::append_batch`](crate::EventStore::append_batch), shared by every store.
pub fn check_batch_topic(topic: &Topic, events: &[Event]) -> Result<()> {
    match events.iter().enumerate().find(|(_, e)| e.topic != *topic) {
        None => Ok(()),
        Some((i, e)) => Err(Error::invalid(
            "batch",
            format!(
                "event {i} has topic {:?}, every event of the batch must have topic {:?}",
                e.topic.as_str(),
                topic.as_str()
            ),
        )),
    }
}

/// When a store may append: always, or only if the topic's last position is
/// the one expected ([`EventStore::append_expecting`](crate::EventStore::append_expecting)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendCondition {
    /// Append whatever the topic holds.
    Always,
    /// Append only if the topic's last position is this one (`None`: the topic is empty).
    LastIs(Option<Cursor>),
}

impl AppendCondition {
    /// Checks the condition against the topic's `actual` last position; the
    /// error is the [`Error::Conflict`] naming both positions.
    pub fn check(self, topic: &Topic, actual: Option<Cursor>) -> Result<()> {
        match self {
            AppendCondition::LastIs(expected) if expected != actual => {
                Err(conflict(topic, expected, actual))
            }
            _ => Ok(()),
        }
    }
}

/// The [`Error::Conflict`] of a conditional append on `topic` that expected
/// `expected` as the last cursor and found `actual` (`None`: no event).
pub fn conflict(topic: &Topic, expected: Option<Cursor>, actual: Option<Cursor>) -> Error {
    Error::Conflict { topic: topic.clone(), expected, actual }
}

/// Merges per-topic streams, each in append order, into one ordered by timestamp.
///
/// At each step the stream whose next event has the smallest timestamp goes
/// first (ties: the earlier stream in `streams`), so every topic keeps its
/// append order even when its timestamps are out of order.
pub fn merge_by_timestamp<'a>(streams: Vec<EventStream<'a>>) -> EventStream<'a> {
    if streams.len() == 1 {
        return streams.into_iter().next().unwrap_or_else(|| Box::new(std::iter::empty()));
    }
    let mut heads: Vec<(Option<Result<StoredEvent>>, EventStream<'a>)> =
        streams.into_iter().map(|mut s| (s.next(), s)).collect();
    Box::new(std::iter::from_fn(move || {
        let mut best: Option<usize> = None;
        for (i, (head, _)) in heads.iter().enumerate() {
            match head {
                None => {}
                Some(Err(_)) => {
                    best = Some(i);
                    break;
                }
                Some(Ok(e)) => {
                    let better = match best.and_then(|b| heads[b].0.as_ref()) {
                        Some(Ok(b)) => e.event.timestamp < b.event.timestamp,
                        _ => true,
                    };
                    if better {
                        best = Some(i);
                    }
                }
            }
        }
        let i = best?;
        let next = heads[i].1.next();
        std::mem::replace(&mut heads[i].0, next)
    }))
}

/// Applies a [`Limit`] to an ordered stream: `First` stops early, `Last` keeps
/// a ring of `n` and so holds at most `n` events in memory.
pub fn apply_limit<'a>(stream: EventStream<'a>, limit: Option<Limit>) -> Result<EventStream<'a>> {
    match limit {
        None => Ok(stream),
        Some(Limit::First(n)) => Ok(Box::new(stream.take(n))),
        Some(Limit::Last(n)) => {
            let mut ring = std::collections::VecDeque::with_capacity(n.min(4096));
            if n > 0 {
                for item in stream {
                    if ring.len() == n {
                        ring.pop_front();
                    }
                    ring.push_back(item?);
                }
            }
            Ok(Box::new(ring.into_iter().map(Ok)))
        }
    }
}

/// The JSON type of `value` with its article, for error messages.
pub fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How long a name may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxLen {
    /// At most this many bytes of UTF-8.
    Bytes(usize),
    /// At most this many characters.
    Chars(usize),
    /// Any length.
    Any,
}

/// The rules of one kind of name (topic, consumer name, source, key prefix…).
///
/// Every name is non-empty and free of control characters; the rules add a
/// length limit, whether whitespace is allowed, and characters refused for
/// the kind's own reasons.
#[derive(Debug, Clone, Copy)]
pub struct NameRules<'a> {
    /// What the name is, for error messages, e.g. `consumer name`.
    pub what: &'a str,
    /// The length limit.
    pub max_len: MaxLen,
    /// Whether white space is allowed (U+FEFF counts as white space, as in
    /// JSON Schema's ECMA-262 `\s`).
    pub whitespace: bool,
    /// Further characters that are refused, and why (completes "… are not allowed").
    pub refused: (&'static [char], &'static str),
    /// An example of a good name, shown when the name is empty.
    pub example: &'static str,
}

/// Checks `name` against `rules`; the error names the kind of name, the
/// offending character or length, and what is allowed.
pub fn check_name(name: &str, rules: &NameRules<'_>) -> Result<()> {
    let what = rules.what;
    if name.is_empty() {
        return Err(Error::invalid(what, format!("must not be empty, e.g. {}", rules.example)));
    }
    let (len, unit, max) = match rules.max_len {
        MaxLen::Bytes(max) => (name.len(), "bytes", max),
        MaxLen::Chars(max) => (name.chars().count(), "characters", max),
        MaxLen::Any => (0, "", usize::MAX),
    };
    if len > max {
        return Err(Error::invalid(
            what,
            format!("is {len} {unit} long, at most {max} are allowed"),
        ));
    }
    let space = |c: char| c.is_whitespace() || c == '\u{feff}';
    if let Some(c) = name.chars().find(|&c| c.is_control() || (!rules.whitespace && space(c))) {
        let allowed = if rules.whitespace {
            "control characters are not allowed"
        } else {
            "whitespace and control characters are not allowed"
        };
        return Err(Error::invalid(what, format!("{name:?} contains {c:?}; {allowed}")));
    }
    let (refused, why) = rules.refused;
    if let Some(c) = name.chars().find(|c| refused.contains(c)) {
        return Err(Error::invalid(what, format!("{name:?} contains {c:?}; {why}")));
    }
    Ok(())
}

/// The wait after failed attempt number `attempt` (1 = the first) at a store
/// that is unavailable: `first` doubled per attempt, capped at `max`, then a
/// random point in its upper half, so clients that lost the store together do
/// not retry in step. The bus's subscriptions and the state store's watches
/// wait so.
pub fn backoff(first: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    let full = first.saturating_mul(factor).min(max);
    let random = uuid::Uuid::new_v4().as_u64_pair().0;
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    full / 2 + (full / 2).mul_f64(fraction)
}

/// Locks `mutex`, also when another thread panicked while holding it: the
/// data Seed guards stays consistent at every unlock, so poisoning carries no
/// information here.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`Condvar::wait`] that recovers a poisoned lock as [`lock`] does.
pub fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// [`Condvar::wait_timeout`] that recovers a poisoned lock as [`lock`] does.
pub fn wait_timeout<'a, T>(
    condvar: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    condvar.wait_timeout(guard, timeout).unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: NameRules<'static> = NameRules {
        what: "thing",
        max_len: MaxLen::Bytes(4),
        whitespace: false,
        refused: (&['{'], "braces are not allowed"),
        example: "abc",
    };

    #[test]
    fn names_are_checked_against_their_rules() {
        assert!(check_name("ab.c", &RULES).is_ok());
        let err =
            |name: &str, rules: &NameRules<'_>| check_name(name, rules).unwrap_err().to_string();
        assert_eq!(err("", &RULES), "invalid thing: must not be empty, e.g. abc");
        assert_eq!(err("abcde", &RULES), "invalid thing: is 5 bytes long, at most 4 are allowed");
        assert!(err("a b", &RULES).contains("' '; whitespace and control"));
        assert!(err("a\u{feff}", &RULES).contains("whitespace"));
        assert!(err("a{", &RULES).ends_with("'{'; braces are not allowed"));
        let chars = NameRules { max_len: MaxLen::Chars(2), whitespace: true, ..RULES };
        assert!(check_name("é ", &chars).is_ok(), "two characters, three bytes, a space");
        assert!(err("a\u{7}", &chars).ends_with("control characters are not allowed"));
        assert!(err("éé ", &chars).contains("3 characters"));
        let any = NameRules { max_len: MaxLen::Any, ..RULES };
        assert!(check_name(&"x".repeat(100_000), &any).is_ok());
    }

    #[test]
    fn a_poisoned_lock_is_recovered() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
