//! Topic names ([`Topic`]) and subscription patterns ([`TopicPattern`]).

use std::fmt;
use std::str::FromStr;

use crate::support::{self, MaxLen, NameRules};
use crate::{Error, Result};

/// The longest topic name, in bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 255;

/// A validated topic name such as `task.completed` or `service/api.health`.
///
/// Rules: non-empty, at most 255 bytes of UTF-8, no whitespace or control
/// characters, tokens separated by `.` with no empty token, and no `*` or `>`
/// (they are reserved for [`TopicPattern`]).
///
/// ```
/// use seed_event::Topic;
/// assert!(Topic::new("service/api.health").is_ok());
/// let err = Topic::new("a..b").unwrap_err();
/// assert!(err.to_string().contains("empty token"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(String);

impl Topic {
    /// Validates `name` as a topic.
    pub fn new(name: impl Into<String>) -> Result<Topic> {
        let name = name.into();
        check_name(&name, "topic", false)?;
        Ok(Topic(name))
    }

    /// The name as published.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `.`-separated tokens of the name.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Topic {
    type Err = Error;
    fn from_str(s: &str) -> Result<Topic> {
        Topic::new(s)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Topic, D::Error> {
        let s = String::deserialize(d)?;
        Topic::new(s).map_err(serde::de::Error::custom)
    }
}

/// Whether `name` passes [`check_name`] as topic and pattern alike, told
/// without its general checks (every event read back is checked): printable
/// ASCII without spaces, `*` or `>`, no empty token, not too long.
fn plainly_valid(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TOPIC_BYTES
        && b[0] != b'.'
        && b[b.len() - 1] != b'.'
        && b.iter().all(|&c| c.is_ascii_graphic() && c != b'*' && c != b'>')
        && !b.windows(2).any(|w| w == b"..")
}

/// Checks the shared rules of topics and patterns; `pattern` allows `*` and `>` tokens.
fn check_name(name: &str, what: &str, pattern: bool) -> Result<()> {
    if plainly_valid(name) {
        return Ok(());
    }
    check_fully(name, what, pattern)
}

/// [`check_name`] by its rules, one after the other.
fn check_fully(name: &str, what: &str, pattern: bool) -> Result<()> {
    let bad = |reason: String| Err(Error::invalid(what, format!("{name:?}: {reason}")));
    let rules = NameRules {
        what,
        max_len: MaxLen::Bytes(MAX_TOPIC_BYTES),
        whitespace: false,
        refused: (&[], ""),
        example: if pattern { "task.>" } else { "task.completed" },
    };
    support::check_name(name, &rules)?;
    if name.split('.').any(str::is_empty) {
        return bad("has an empty token; tokens are separated by single dots and the name may not start or end with a dot".to_string());
    }
    let mut tokens = name.split('.').peekable();
    while let Some(token) = tokens.next() {
        let wildcard = token == "*" || token == ">";
        if wildcard && pattern {
            if token == ">" && tokens.peek().is_some() {
                return bad("`>` is only allowed as the last token".to_string());
            }
            continue;
        }
        if token.contains('*') || token.contains('>') {
            return bad(if pattern {
                "`*` and `>` must stand alone as a whole token".to_string()
            } else {
                "`*` and `>` are reserved for patterns".to_string()
            });
        }
    }
    Ok(())
}

/// A subscription pattern with NATS semantics.
///
/// `*` matches exactly one token, `>` one or more trailing tokens; any other
/// pattern matches only the topic of the same name.
///
/// ```
/// use seed_event::{Topic, TopicPattern};
/// let one: TopicPattern = "task.*".parse().unwrap();
/// let all: TopicPattern = "task.>".parse().unwrap();
/// let deep = Topic::new("task.a.b").unwrap();
/// assert!(one.matches(&Topic::new("task.done").unwrap()));
/// assert!(!one.matches(&deep));
/// assert!(all.matches(&deep));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Validates `pattern`.
    pub fn new(pattern: impl Into<String>) -> Result<TopicPattern> {
        let pattern = pattern.into();
        check_name(&pattern, "topic pattern", true)?;
        Ok(TopicPattern(pattern))
    }

    /// The pattern that matches every topic (`>`).
    pub fn all() -> TopicPattern {
        TopicPattern(">".to_string())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic this pattern names exactly, when it has no wildcard.
    pub fn exact(&self) -> Option<Topic> {
        if self.0.split('.').any(|t| t == "*" || t == ">") {
            None
        } else {
            Some(Topic(self.0.clone()))
        }
    }

    /// Whether `topic` matches this pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        let mut pattern = self.0.split('.');
        let mut tokens = topic.tokens();
        loop {
            match (pattern.next(), tokens.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(p), Some(t)) if p == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl From<Topic> for TopicPattern {
    fn from(topic: Topic) -> TopicPattern {
        TopicPattern(topic.0)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TopicPattern {
    type Err = Error;
    fn from_str(s: &str) -> Result<TopicPattern> {
        TopicPattern::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut accepts only names the full rules accept, as topic and pattern.
    #[test]
    fn the_shortcut_accepts_only_valid_names() {
        let long = "a".repeat(MAX_TOPIC_BYTES);
        let too_long = "a".repeat(MAX_TOPIC_BYTES + 1);
        let names = [
            "a",
            "a.b",
            "task.completed",
            "service/api.health",
            "a-b_c.9",
            "~!@#$%^&()",
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a.*",
            "a.>",
            "*",
            ">",
            "a b",
            "a\tb",
            "a\u{7f}",
            "é.b",
            "a.\u{feff}",
            &long,
            &too_long,
        ];
        for name in names {
            if plainly_valid(name) {
                assert!(check_fully(name, "topic", false).is_ok(), "{name:?} as a topic");
                assert!(check_fully(name, "pattern", true).is_ok(), "{name:?} as a pattern");
            }
        }
        assert!(plainly_valid("task.completed") && plainly_valid(&long));
        assert!(!plainly_valid(&too_long) && !plainly_valid("a..b") && !plainly_valid("a.*"));
    }

    fn t(s: &str) -> Topic {
        Topic::new(s).unwrap()
    }

    fn p(s: &str) -> TopicPattern {
        TopicPattern::new(s).unwrap()
    }

    #[test]
    fn valid_topics() {
        for name in [
            "a",
            "task.completed",
            "service/api.health",
            "user-events",
            "snake_case.x",
            "größe.ändern",
            "日本.語",
        ] {
            assert_eq!(Topic::new(name).unwrap().as_str(), name);
        }
        let long = "a".repeat(255);
        assert!(Topic::new(long).is_ok());
    }

    #[test]
    fn invalid_topics_name_the_rule() {
        let cases = [
            ("", "empty"),
            ("a..b", "empty token"),
            (".a", "empty token"),
            ("a.", "empty token"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\u{7}b", "control"),
            ("task.*", "reserved for patterns"),
            ("task.>", "reserved for patterns"),
            ("ta*sk", "reserved for patterns"),
        ];
        for (name, needle) in cases {
            let err = Topic::new(name).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{name:?}");
            assert!(err.to_string().contains(needle), "{name:?}: {err}");
        }
        let err = Topic::new("a".repeat(256)).unwrap_err();
        assert!(err.to_string().contains("256 bytes"), "{err}");
        // 255 bytes is a limit in bytes, not characters.
        let err = Topic::new("é".repeat(128)).unwrap_err();
        assert!(err.to_string().contains("256 bytes"), "{err}");
    }

    #[test]
    fn pattern_semantics() {
        assert!(p("task.*").matches(&t("task.done")));
        assert!(!p("task.*").matches(&t("task.a.b")));
        assert!(!p("task.*").matches(&t("task")));
        assert!(p("task.>").matches(&t("task.done")));
        assert!(p("task.>").matches(&t("task.a.b")));
        assert!(!p("task.>").matches(&t("task")));
        assert!(!p("task.>").matches(&t("tasks.a")));
        assert!(p("*.done").matches(&t("task.done")));
        assert!(p("a.*.c").matches(&t("a.b.c")));
        assert!(!p("a.*.c").matches(&t("a.b.d")));
        assert!(p(">").matches(&t("anything.at.all")));
        assert!(p("task.done").matches(&t("task.done")));
        assert!(!p("task.done").matches(&t("task.done.x")));
        assert!(!p("task").matches(&t("task.done")));
    }

    #[test]
    fn invalid_patterns() {
        assert!(TopicPattern::new("a.>.b").unwrap_err().to_string().contains("last token"));
        assert!(TopicPattern::new("a.b*").unwrap_err().to_string().contains("alone"));
        assert!(TopicPattern::new("a..*").is_err());
        assert!(TopicPattern::new("").is_err());
    }

    #[test]
    fn exact_patterns() {
        assert_eq!(p("a.b").exact(), Some(t("a.b")));
        assert_eq!(p("a.*").exact(), None);
        assert_eq!(p(">").exact(), None);
    }
}
