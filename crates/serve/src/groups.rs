//! Work groups over HTTP (`/v1/groups/…`): workers in any language fetch
//! events, then ack, nack or extend each one by its `ack_token`.
//!
//! The server holds one group member per (group, member label) a client
//! names in `fetch` (`"member"`, default `http`), so the store sees each
//! HTTP worker as a member: its events stay in flight between requests, and
//! a member that makes no request for its group's ack wait is let go, its
//! events going to the other members. An `ack_token` names the member, the
//! event and the delivery, so it can be acked on any connection.
//!
//! A fetch with `"exclusive": true` joins an exclusive group (the mode of
//! `seed subscribe --group --exclusive`): the member takes the group's lock,
//! waiting up to the fetch's `wait_ms`, and holds it while it is held here.
//! A fetch that finds another holder answers no events and `"active": false`
//! (standing by); a member whose lock was taken over is let go with 409.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use seed_event::support::json_type_name;
use seed_event::{
    join_group, ConsumerName, DeliveryToken, GroupConfig, GroupMember, GroupOrdering, JsonObject,
    LockRequest, Start, Timestamp, Topic, TopicPattern,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::App;
use crate::error::{json_object, json_response, ApiError};
use crate::events::event_json;

/// The longest a fetch waits for its first event.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Events one fetch returns at most.
const MAX_FETCH: usize = 1000;

/// A member the server holds, shared by the requests that use it.
type SharedMember = Arc<Mutex<Box<dyn GroupMember>>>;

/// A member the server holds for HTTP workers.
struct Held {
    member: SharedMember,
    pattern: TopicPattern,
    exclusive: bool,
    ack_wait: Duration,
    last_used: Instant,
}

/// The members the server holds, by group and member label.
#[derive(Default)]
pub struct Members {
    held: Mutex<HashMap<(String, String), Held>>,
}

impl Members {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets go of members unused for their ack wait (dropped off the
    /// runtime's threads: leaving a group touches the store). A member a
    /// request is using (a fetch waiting longer than the ack wait) stays.
    fn sweep(&self, app: &App) {
        let now = Instant::now();
        let mut gone = Vec::new();
        self.lock().retain(|_, h| {
            let keep =
                now.duration_since(h.last_used) < h.ack_wait || Arc::strong_count(&h.member) > 1;
            if !keep {
                gone.push(h.member.clone());
            }
            keep
        });
        if !gone.is_empty() {
            app.runtime.spawn_blocking(move || drop(gone));
        }
    }

    /// The held member `label` of `group`, if any, marked as used now.
    fn get(&self, group: &str, label: &str) -> Option<SharedMember> {
        let mut held = self.lock();
        let h = held.get_mut(&(group.to_string(), label.to_string()))?;
        h.last_used = Instant::now();
        Some(h.member.clone())
    }

    /// Lets go of `member` of `group` if it is still the one held as `label`
    /// (off the runtime's threads: leaving touches the store).
    fn let_go(&self, app: &App, group: &str, label: &str, member: SharedMember) {
        let key = (group.to_string(), label.to_string());
        let gone = {
            let mut held = self.lock();
            match held.get(&key) {
                Some(h) if Arc::ptr_eq(&h.member, &member) => held.remove(&key),
                _ => None,
            }
        };
        app.runtime.spawn_blocking(move || drop((gone, member)));
    }

    /// Lets go of every member (at shutdown).
    pub fn clear(&self) {
        let held = std::mem::take(&mut *self.lock());
        drop(held);
    }
}

/// What `fetch` says about the member and, for a new group, the group.
struct FetchBody {
    config: GroupConfig,
    label: String,
    max: usize,
    wait: Duration,
}

fn field<'a>(fields: &'a JsonObject, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn count(fields: &JsonObject, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    match field(fields, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::invalid(format!(
                "{name} must be a whole number from {min} to {max}, got {v}"
            ))),
        },
    }
}

fn flag(fields: &JsonObject, name: &str) -> Result<Option<bool>, ApiError> {
    match field(fields, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be true or false, got {}",
            json_type_name(other)
        ))),
    }
}

fn text<'a>(fields: &'a JsonObject, name: &str) -> Result<Option<&'a str>, ApiError> {
    match field(fields, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be a string, got {}",
            json_type_name(other)
        ))),
    }
}

fn known(fields: &JsonObject, expected: &[&str]) -> Result<(), ApiError> {
    match fields.keys().find(|k| !expected.contains(&k.as_str())) {
        Some(name) => Err(ApiError::invalid(format!(
            "unknown field {name:?}; expected {}",
            expected.join(", ")
        ))),
        None => Ok(()),
    }
}

fn fetch_body(group: &str, body: &[u8]) -> Result<FetchBody, ApiError> {
    let fields = json_object(body, r#"{"topic": "task.>", "max": 10, "wait_ms": 5000}"#)?;
    known(
        &fields,
        &[
            "topic",
            "max",
            "wait_ms",
            "member",
            "start",
            "ack_wait_ms",
            "max_deliveries",
            "max_in_flight",
            "ordered",
            "dead_letter",
            "backoff_ms",
            "exclusive",
        ],
    )?;
    let name = ConsumerName::new(group)?;
    let pattern = TopicPattern::new(text(&fields, "topic")?.ok_or_else(|| {
        ApiError::invalid("topic is missing; expected the group's topic pattern, e.g. task.>")
    })?)?;
    let mut config = match text(&fields, "dead_letter")? {
        Some(t) => GroupConfig::with_dead_letter(name, pattern, Topic::new(t)?),
        None => GroupConfig::new(name, pattern)?,
    };
    config = config.start(match text(&fields, "start")? {
        None | Some("new") => Start::New,
        Some("beginning") => Start::Beginning,
        Some(time) => Start::Since(Timestamp::parse(time).map_err(|_| {
            ApiError::invalid(format!(
                "start {time:?}: expected new, beginning or an RFC 3339 time"
            ))
        })?),
    });
    if let Some(ms) = count(&fields, "ack_wait_ms", 1, 86_400_000)? {
        config = config.ack_wait(Duration::from_millis(ms));
    }
    if let Some(n) = count(&fields, "max_deliveries", 1, u64::from(u32::MAX))? {
        config = config.max_deliveries(n as u32);
    }
    if let Some(n) = count(&fields, "max_in_flight", 1, 1_000_000)? {
        config = config.max_in_flight(n as usize);
    }
    if let Some(ms) = count(&fields, "backoff_ms", 0, 86_400_000)? {
        config = config.backoff(Duration::from_millis(ms));
    }
    match text(&fields, "ordered")? {
        None | Some("none") => {}
        Some("per-topic" | "per_topic") => config = config.ordering(GroupOrdering::PerTopic),
        Some(other) => {
            return Err(ApiError::invalid(format!("ordered {other:?}: expected per-topic or none")))
        }
    }
    if let Some(exclusive) = flag(&fields, "exclusive")? {
        config = config.exclusive(exclusive);
    }
    config.validate()?;
    let label = text(&fields, "member")?.unwrap_or("http").to_string();
    if label.is_empty() || label.len() > 64 || label.chars().any(|c| c.is_control() || c == '&') {
        return Err(ApiError::invalid(
            "member must be 1 to 64 characters without control characters or &",
        ));
    }
    let max = count(&fields, "max", 1, MAX_FETCH as u64)?.unwrap_or(1) as usize;
    let wait = count(&fields, "wait_ms", 0, MAX_WAIT.as_millis() as u64)?.unwrap_or(0);
    Ok(FetchBody { config, label, max, wait: Duration::from_millis(wait) })
}

/// An `ack_token`: the member label and the delivery, form-encoded.
fn token_text(label: &str, token: &DeliveryToken) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("m", label)
        .append_pair("t", token.topic.as_str())
        .append_pair("c", &token.cursor.to_string())
        .append_pair("d", &token.delivery.to_string())
        .finish()
}

/// Reads an `ack_token` back: the member label and the delivery.
fn parse_token(text: &str) -> Result<(String, DeliveryToken), ApiError> {
    let bad = || ApiError::invalid(format!("ack_token {text:?} is not a token of this server"));
    let (mut label, mut topic, mut cursor, mut delivery) = (None, None, None, None);
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        match &*k {
            "m" => label = Some(v.into_owned()),
            "t" => topic = Some(Topic::new(v.as_ref()).map_err(|_| bad())?),
            "c" => cursor = Some(v.parse().map_err(|_| bad())?),
            "d" => delivery = Some(v.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        }
    }
    match (label, topic, cursor, delivery) {
        (Some(label), Some(topic), Some(cursor), Some(delivery)) => {
            Ok((label, DeliveryToken { topic, cursor, delivery }))
        }
        _ => Err(bad()),
    }
}

/// `POST /v1/groups/{group}/fetch`: up to `max` events for the member,
/// waiting up to `wait_ms` for the first; joins (and creates) the group.
pub async fn fetch(
    State(app): State<App>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let FetchBody { config, label, max, wait } = fetch_body(&group, &body)?;
    app.members.sweep(&app);
    let key = (group.clone(), label.clone());
    // A held member is marked used as the request takes it (and again when it is done).
    let held = |app: &App| -> Result<Option<SharedMember>, ApiError> {
        let mut held = app.members.lock();
        match held.get_mut(&key) {
            Some(h) if h.pattern != config.pattern => Err(ApiError::invalid(format!(
                "member {label} of group {group} follows {}, not {}; use another member name",
                h.pattern, config.pattern
            ))),
            Some(h) if h.exclusive != config.exclusive => Err(ApiError::invalid(format!(
                "member {label} of group {group} joined with exclusive {}, not {}; use another member name",
                h.exclusive, config.exclusive
            ))),
            Some(h) => {
                h.last_used = Instant::now();
                Ok(Some(h.member.clone()))
            }
            None => Ok(None),
        }
    };
    let started = Instant::now();
    let member = match held(&app)? {
        Some(m) => m,
        None => {
            let store = app.bus.store().clone();
            let request = LockRequest::new(app.bus.config().lease_ttl).wait(wait);
            let (c, l) = (config.clone(), label.clone());
            let joined =
                app.blocking(move || join_group(store.as_ref(), &c, &l, &request)).await??;
            match joined {
                Some(joined) => {
                    let joined = Arc::new(Mutex::new(joined));
                    let mut held = app.members.lock();
                    let h = held.entry(key.clone()).or_insert_with(|| Held {
                        member: joined,
                        pattern: config.pattern.clone(),
                        exclusive: config.exclusive,
                        ack_wait: config.ack_wait,
                        last_used: Instant::now(),
                    });
                    h.member.clone()
                }
                // Another member holds the exclusive group's lock; unless it is
                // this label's own member, joined by a request running beside this one.
                None => match held(&app)? {
                    Some(m) => m,
                    None => {
                        let answer =
                            json!({"member": label, "events": [], "active": false}).to_string();
                        return Ok(json_response(StatusCode::OK, answer));
                    }
                },
            }
        }
    };
    let wait = wait.saturating_sub(started.elapsed());
    let fetching = member.clone();
    let fetched = app
        .blocking(move || {
            let mut m = fetching.lock().unwrap_or_else(|p| p.into_inner());
            m.fetch(max, wait)
        })
        .await?;
    let deliveries = match fetched {
        Ok(d) => d,
        // The exclusive group's lock was taken over: this member is done.
        Err(seed_event::Error::StaleLock { .. }) if config.exclusive => {
            app.members.let_go(&app, &group, &label, member);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "member {label} of group {group} lost the group's lock to another member and was let go; fetch again to stand by"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    app.members.get(&group, &label);
    // The last handle of a member let go meanwhile leaves the group: not on the runtime's threads.
    if Arc::strong_count(&member) == 1 {
        app.runtime.spawn_blocking(move || drop(member));
    }
    let mut out = String::from("{\"member\":");
    out.push_str(&Value::String(label.clone()).to_string());
    if config.exclusive {
        out.push_str(",\"active\":true");
    }
    out.push_str(",\"events\":[");
    for (i, d) in deliveries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let event = event_json(&d.event);
        let token = Value::String(token_text(&label, &d.token)).to_string();
        // The event's fields, then the delivery's.
        out.push_str(event.strip_suffix('}').unwrap_or(&event));
        out.push_str(&format!(",\"deliveries\":{},\"ack_token\":{token}}}", d.deliveries));
    }
    out.push_str("]}");
    app.metrics.delivered_to_group(&group, deliveries.len() as u64);
    Ok(json_response(StatusCode::OK, out))
}

/// The held member a token names, or 409 when the server let it go.
fn member_of(app: &App, group: &str, label: &str) -> Result<SharedMember, ApiError> {
    app.members.sweep(app);
    app.members.get(group, label).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "member {label} of group {group} is gone (no request for its ack wait, or the server restarted); its events went to other members"
            ),
        )
    })
}

/// The tokens of an ack body: `ack_tokens` (a list) or `ack_token`.
fn tokens(fields: &JsonObject) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    if let Some(one) = text(fields, "ack_token")? {
        out.push(one.to_string());
    }
    match field(fields, "ack_tokens") {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "ack_tokens must hold strings, got {}",
                            json_type_name(other)
                        )))
                    }
                }
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "ack_tokens must be a list of tokens, got {}",
                json_type_name(other)
            )))
        }
    }
    if out.is_empty() {
        return Err(ApiError::invalid(
            "ack_token is missing; expected the ack_token of a fetched event (or ack_tokens)",
        ));
    }
    Ok(out)
}

/// `POST /v1/groups/{group}/ack`: the deliveries are done and leave the group.
pub async fn ack(
    State(app): State<App>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = json_object(&body, r#"{"ack_tokens": ["…"]}"#)?;
    known(&fields, &["ack_token", "ack_tokens"])?;
    let mut by_member: HashMap<String, Vec<DeliveryToken>> = HashMap::new();
    for text in tokens(&fields)? {
        let (label, token) = parse_token(&text)?;
        by_member.entry(label).or_default().push(token);
    }
    let mut members = Vec::new();
    for (label, tokens) in by_member {
        members.push((member_of(&app, &group, &label)?, tokens));
    }
    let acked: usize = members.iter().map(|(_, t)| t.len()).sum();
    app.blocking(move || -> seed_event::Result<()> {
        for (member, tokens) in members {
            member.lock().unwrap_or_else(|p| p.into_inner()).ack(&tokens)?;
        }
        Ok(())
    })
    .await??;
    app.metrics.acked_in_group(&group, acked as u64);
    Ok(json_response(StatusCode::OK, json!({ "acked": acked }).to_string()))
}

/// `POST /v1/groups/{group}/nack`: the delivery failed; the event comes back
/// after `delay_ms` (default: the group's backoff) or is dead-lettered with `error`.
pub async fn nack(
    State(app): State<App>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = json_object(&body, r#"{"ack_token": "…", "delay_ms": 1000, "error": "why"}"#)?;
    known(&fields, &["ack_token", "delay_ms", "error"])?;
    let (label, token) = parse_token(text(&fields, "ack_token")?.ok_or_else(|| {
        ApiError::invalid("ack_token is missing; expected the ack_token of a fetched event")
    })?)?;
    let delay = count(&fields, "delay_ms", 0, 86_400_000)?.map(Duration::from_millis);
    let error = text(&fields, "error")?.unwrap_or("nacked over HTTP").to_string();
    let member = member_of(&app, &group, &label)?;
    app.blocking(move || {
        member.lock().unwrap_or_else(|p| p.into_inner()).nack(&token, delay, &error)
    })
    .await??;
    Ok(json_response(StatusCode::OK, json!({ "nacked": 1 }).to_string()))
}

/// `POST /v1/groups/{group}/in-progress`: the member is still at it; the
/// delivery's ack wait starts again.
pub async fn in_progress(
    State(app): State<App>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = json_object(&body, r#"{"ack_token": "…"}"#)?;
    known(&fields, &["ack_token"])?;
    let (label, token) = parse_token(text(&fields, "ack_token")?.ok_or_else(|| {
        ApiError::invalid("ack_token is missing; expected the ack_token of a fetched event")
    })?)?;
    let member = member_of(&app, &group, &label)?;
    app.blocking(move || member.lock().unwrap_or_else(|p| p.into_inner()).in_progress(&token))
        .await??;
    Ok(json_response(StatusCode::OK, json!({ "extended": 1 }).to_string()))
}

/// `GET /v1/groups`: every group with its members, in flight, waiting,
/// redelivered and dead-lettered counts (what `seed groups --json` prints).
pub async fn list(State(app): State<App>) -> Result<Response, ApiError> {
    app.members.sweep(&app);
    let bus = app.bus.clone();
    let groups = app.blocking(move || bus.groups()).await??;
    Ok(json_response(StatusCode::OK, serde_json::to_string(&groups).unwrap_or_default()))
}

/// `POST /v1/groups/{group}/redrive`: puts the group's dead letters (or the
/// one with `"id"`) back on their original topics; answers how many.
pub async fn redrive(
    State(app): State<App>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = if body.iter().all(u8::is_ascii_whitespace) {
        JsonObject::new()
    } else {
        json_object(&body, r#"{"id": "…"}"#)?
    };
    known(&fields, &["id", "dead_letter"])?;
    let only = text(&fields, "id")?
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| ApiError::invalid(format!("id {s:?} is not an event id (a UUID)")))
        })
        .transpose()?;
    let dead_letter = match text(&fields, "dead_letter")? {
        Some(t) => Topic::new(t)?,
        None => Topic::new(format!("dead.{group}"))?,
    };
    let bus = app.bus.clone();
    let put_back = app.blocking(move || bus.redrive(&dead_letter, only)).await??;
    let events: Vec<Value> = put_back
        .iter()
        .map(|e| serde_json::from_str(&event_json(e)).unwrap_or(Value::Null))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "redriven": put_back.len(), "events": events }).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_any_topic_and_label() {
        let token = DeliveryToken {
            topic: Topic::new("a/b.c-d_e").unwrap(),
            cursor: "17-3".parse().unwrap(),
            delivery: 4,
        };
        for label in ["http", "w 1", "é=ü%"] {
            let text = token_text(label, &token);
            assert_eq!(parse_token(&text).unwrap(), (label.to_string(), token.clone()));
        }
        for bad in ["", "m=a", "m=a&t=b&c=1-0&d=x", "m=a&t=..&c=1-0&d=1", "m=a&t=b&c=1-0&d=1&z=1"] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fetch_bodies_name_what_is_wrong() {
        let err = |text: &str| match fetch_body("g", text.as_bytes()) {
            Err(e) => format!("{e:?}"),
            Ok(_) => panic!("{text} was accepted"),
        };
        assert!(err("{}").contains("topic is missing"));
        assert!(err(r#"{"topic": "a", "max": 0}"#).contains("max must be"));
        assert!(err(r#"{"topic": "a", "wait_ms": 100000}"#).contains("wait_ms must be"));
        assert!(err(r#"{"topic": "a", "ordered": "yes"}"#).contains("per-topic"));
        assert!(err(r#"{"topic": "a", "colour": 1}"#).contains("unknown field"));
        assert!(err(r#"{"topic": "a", "member": ""}"#).contains("member must be"));
        let ok = fetch_body("g", br#"{"topic": "a.>", "max": 5, "ordered": "per-topic"}"#).unwrap();
        assert_eq!((ok.max, ok.label.as_str()), (5, "http"));
        assert_eq!(ok.config.ordering, GroupOrdering::PerTopic);
    }
}
