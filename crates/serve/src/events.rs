//! Publishing (one event as JSON, a batch as NDJSON) and history as NDJSON.

use std::collections::{BTreeMap, VecDeque};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bus::PublishOptions;
use seed_event::support::json_type_name;
use seed_event::{
    Cursor, Event, JsonObject, Limit, Query, StoredEvent, Timestamp, Topic, TopicPattern,
};
use serde_json::Value;
use uuid::Uuid;

use crate::app::App;
use crate::error::{json_response, ApiError};

/// An event's JSON with `"cursor"` as its first field (the form of `seed history --output ndjson`).
pub fn event_json(e: &StoredEvent) -> String {
    let line = e.event.to_json_line();
    let fields = line.strip_prefix('{').unwrap_or(&line);
    format!("{{\"cursor\":\"{}\",{fields}", e.cursor)
}

/// One event of a request body, in the single-event shape.
struct EventBody {
    payload: JsonObject,
    source: String,
    correlation_id: Option<String>,
    metadata: JsonObject,
    id: Option<Uuid>,
}

/// Reads the single-event shape from JSON text; `at` prefixes errors (e.g. `line 3: `).
fn parse_event_body(text: &[u8], at: &str) -> Result<EventBody, ApiError> {
    let bad = |reason: String| ApiError::invalid(format!("{at}{reason}"));
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| bad(format!("the body is not JSON ({e}); expected an object such as {{\"payload\": {{}}, \"source\": \"me\"}}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad(format!("expected a JSON object, got {}", json_type_name(&value))));
    };
    let payload = match fields.remove("payload") {
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(bad(format!(
                "payload must be a JSON object, got {}",
                json_type_name(&other)
            )))
        }
        None => return Err(bad("payload is missing; expected a JSON object".to_string())),
    };
    let source = match fields.remove("source") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(bad(format!("source must be a string, got {}", json_type_name(&other))))
        }
        None => {
            return Err(
                bad("source is missing; expected a string naming the publisher".to_string()),
            )
        }
    };
    let correlation_id = match fields.remove("correlation_id") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => {
            return Err(bad(format!(
                "correlation_id must be a string, got {}",
                json_type_name(&other)
            )))
        }
    };
    let metadata = match fields.remove("metadata") {
        Some(Value::Object(o)) => o,
        Some(Value::Null) | None => JsonObject::new(),
        Some(other) => {
            return Err(bad(format!(
                "metadata must be a JSON object, got {}",
                json_type_name(&other)
            )))
        }
    };
    let id = match fields.remove("id") {
        Some(Value::String(s)) => {
            Some(Uuid::parse_str(&s).map_err(|_| bad(format!("id {s:?} is not a UUID")))?)
        }
        Some(Value::Null) | None => None,
        Some(other) => {
            return Err(bad(format!("id must be a UUID string, got {}", json_type_name(&other))))
        }
    };
    if let Some(name) = fields.keys().next() {
        return Err(bad(format!(
            "unknown field {name:?}; expected payload, source, correlation_id, metadata, id"
        )));
    }
    if source.is_empty() || source.chars().any(char::is_control) {
        return Err(
            bad("source must be a non-empty string without control characters".to_string()),
        );
    }
    Ok(EventBody { payload, source, correlation_id, metadata, id })
}

fn parse_topic(topic: &str) -> Result<Topic, ApiError> {
    Ok(Topic::new(topic)?)
}

/// `POST /v1/topics/{topic}/events`: one event (JSON) or a batch (NDJSON), all or nothing.
pub async fn publish(
    State(app): State<App>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let topic = parse_topic(&topic)?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
    if ndjson {
        return publish_batch(app, topic, body).await;
    }
    let event = parse_event_body(&body, "")?;
    let stored = match event.id {
        // Idempotent: the check and the conditional append run on their own.
        Some(id) => {
            let options = PublishOptions {
                correlation_id: event.correlation_id,
                metadata: event.metadata,
                id: Some(id),
                timestamp: None,
            };
            let bus = app.bus.clone();
            let t = topic.clone();
            app.blocking(move || bus.publish(&t, &event.source, event.payload, options)).await??
        }
        None => {
            app.appender
                .publish(
                    topic.clone(),
                    event.source,
                    event.payload,
                    event.correlation_id,
                    event.metadata,
                )
                .await?
        }
    };
    app.metrics.published(topic.as_str(), 1);
    Ok(json_response(StatusCode::CREATED, event_json(&stored)))
}

async fn publish_batch(app: App, topic: Topic, body: Bytes) -> Result<Response, ApiError> {
    let mut events = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = format!("line {}: ", n + 1);
        let e = parse_event_body(line, &at)?;
        if e.id.is_some() {
            return Err(ApiError::invalid(format!(
                "{at}a batch gives each event a fresh id; publish events with an id one per request"
            )));
        }
        let mut event = Event::new(topic.clone(), e.source, e.payload).with_metadata(e.metadata);
        event.correlation_id = e.correlation_id;
        events.push(event);
    }
    if events.is_empty() {
        return Err(ApiError::invalid(
            "the NDJSON body has no events; expected one JSON object per line",
        ));
    }
    let n = events.len() as u64;
    let store = app.bus.store().clone();
    let t = topic.clone();
    let cursors = app.blocking(move || store.append_batch(&t, &events)).await??;
    app.metrics.published(topic.as_str(), n);
    let body = serde_json::json!({
        "published": n,
        "first_cursor": cursors.first().map(Cursor::to_string),
        "last_cursor": cursors.last().map(Cursor::to_string),
    });
    Ok(json_response(StatusCode::CREATED, body.to_string()))
}

/// The parameters of `GET /v1/events`, as `seed history` takes them.
struct HistoryParams {
    query: Query,
    /// Cursors that filter the stream (when the store cannot seek to them).
    positions: BTreeMap<Topic, Cursor>,
    /// The limit applied after the position filter.
    limit: Option<Limit>,
}

fn parse_time(name: &str, value: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse(value).map_err(|_| {
        ApiError::invalid(format!(
            "{name} {value:?} is not an RFC 3339 time such as 2026-04-16T00:00:00Z"
        ))
    })
}

fn parse_count(name: &str, value: &str) -> Result<usize, ApiError> {
    value.parse().map_err(|_| {
        ApiError::invalid(format!("{name} {value:?} is not a count; expected a whole number"))
    })
}

fn history_params(raw: Option<&str>) -> Result<HistoryParams, ApiError> {
    let mut query = Query::default();
    let mut after: Vec<(Option<Topic>, Cursor)> = Vec::new();
    let (mut first, mut last) = (None, None);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*key {
            "topic" => query.topics.push(TopicPattern::new(value.as_ref())?),
            "source" => query.source = Some(value.into_owned()),
            "correlation_id" => query.correlation_id = Some(value.into_owned()),
            "since" => query.since = Some(parse_time("since", &value)?),
            "until" => query.until = Some(parse_time("until", &value)?),
            "limit" => first = Some(parse_count("limit", &value)?),
            "last" => last = Some(parse_count("last", &value)?),
            "after" => {
                let (topic, cursor) = match value.rsplit_once('=') {
                    Some((t, c)) => (Some(Topic::new(t)?), c),
                    None => (None, value.as_ref()),
                };
                let cursor = cursor.parse().map_err(|_| {
                    ApiError::invalid(format!("after {value:?}: expected a cursor such as 42-0, or TOPIC=CURSOR"))
                })?;
                after.push((topic, cursor));
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected topic, source, correlation_id, since, until, limit, last, after"
                )))
            }
        }
    }
    query.limit = match (first, last) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("limit and last exclude each other; give one"))
        }
        (Some(n), None) => Some(Limit::First(n)),
        (None, Some(n)) => Some(Limit::Last(n)),
        (None, None) => None,
    };
    query.validate()?;
    let mut positions = BTreeMap::new();
    let only = match (query.topics.as_slice(), after.len()) {
        ([only], 1) => only.exact(),
        _ => None,
    };
    for (topic, cursor) in after {
        let topic = topic.or_else(|| only.clone()).ok_or_else(|| {
            ApiError::invalid(format!("after {cursor} needs exactly one topic without wildcards; otherwise write after=TOPIC={cursor}"))
        })?;
        if !query.selects_topic(&topic) {
            return Err(ApiError::invalid(format!(
                "after names topic {topic}, which no topic parameter selects"
            )));
        }
        if positions.insert(topic.clone(), cursor).is_some() {
            return Err(ApiError::invalid(format!(
                "after names topic {topic} twice; expected one cursor per topic"
            )));
        }
    }
    // One exact topic: the store seeks to the cursor. Otherwise the cursors
    // filter the query's stream, and the limit applies to what passes.
    if let Some(topic) =
        query.single_topic().filter(|t| positions.len() == 1 && positions.contains_key(t))
    {
        query.after = positions.remove(&topic);
    }
    let limit = if positions.is_empty() { None } else { query.limit.take() };
    Ok(HistoryParams { query, positions, limit })
}

/// How many bytes of NDJSON go into one chunk of the response.
const CHUNK: usize = 64 * 1024;

/// `GET /v1/events`: the events `seed history` prints, as NDJSON with cursors.
pub async fn history(
    State(app): State<App>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = history_params(raw.as_deref())?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let bus = app.bus.clone();
    app.runtime.spawn_blocking(move || {
        let HistoryParams { query, positions, limit } = params;
        let events = match bus.read(&query) {
            Ok(events) => events,
            Err(e) => {
                let _ = first_tx.send(Err(e.into()));
                return;
            }
        };
        // A store that fails at once (e.g. Redis gone) still gets its status.
        let mut events = events.peekable();
        if let Some(Err(_)) = events.peek() {
            if let Some(Err(e)) = events.next() {
                let _ = first_tx.send(Err(e.into()));
            }
            return;
        }
        let _ = first_tx.send(Ok(()));
        let mut events = events.filter(move |item| match item {
            Ok(e) => positions.get(&e.event.topic).is_none_or(|c| e.cursor > *c),
            Err(_) => true,
        });
        let mut chunk = String::new();
        let send = |chunk: &mut String, force: bool| -> bool {
            if chunk.len() < CHUNK && !force {
                return true;
            }
            let bytes = Bytes::from(std::mem::take(chunk));
            tx.blocking_send(Ok(bytes)).is_ok()
        };
        let push = |e: &StoredEvent, chunk: &mut String| {
            chunk.push_str(&event_json(e));
            chunk.push('\n');
        };
        let result: seed_event::Result<()> = (|| {
            match limit {
                Some(Limit::Last(n)) => {
                    let mut newest = VecDeque::with_capacity(n.min(4096));
                    for item in events.by_ref() {
                        newest.push_back(item?);
                        if newest.len() > n {
                            newest.pop_front();
                        }
                    }
                    for e in &newest {
                        push(e, &mut chunk);
                        if !send(&mut chunk, false) {
                            return Ok(());
                        }
                    }
                }
                other => {
                    let n = match other {
                        Some(Limit::First(n)) => n,
                        _ => usize::MAX,
                    };
                    for item in events.by_ref().take(n) {
                        push(&item?, &mut chunk);
                        if !send(&mut chunk, false) {
                            return Ok(());
                        }
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                send(&mut chunk, true);
            }
            Err(e) => {
                // The status is sent already: cut the response short so the client sees a failure.
                log::warn!("history read failed mid-stream: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    first_rx.await.map_err(|_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "history reader stopped")
    })??;
    // `poll_recv` may be polled again after the end (the compression layer does).
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_what_is_wrong() {
        let err = |text: &str| match parse_event_body(text.as_bytes(), "") {
            Err(e) => format!("{e:?}"),
            Ok(_) => panic!("{text} was accepted"),
        };
        assert!(err("nope").contains("not JSON"));
        assert!(err("[1]").contains("expected a JSON object, got an array"));
        assert!(err(r#"{"source":"s"}"#).contains("payload is missing"));
        assert!(err(r#"{"payload":1,"source":"s"}"#).contains("payload must be a JSON object"));
        assert!(err(r#"{"payload":{},"source":""}"#).contains("non-empty"));
        assert!(err(r#"{"payload":{},"source":"s","x":1}"#).contains("unknown field"));
        assert!(err(r#"{"payload":{},"source":"s","id":"no"}"#).contains("not a UUID"));
        let ok = parse_event_body(br#"{"payload":{"a":1},"source":"s","correlation_id":null}"#, "")
            .unwrap();
        assert_eq!((ok.source.as_str(), ok.correlation_id), ("s", None));
    }

    #[test]
    fn history_parameters_follow_seed_history() {
        let p = history_params(Some("topic=a.b&after=5-0&limit=3")).unwrap();
        assert_eq!(p.query.after, Some(Cursor::new(5, 0)));
        assert_eq!(p.query.limit, Some(Limit::First(3)));
        let p = history_params(Some("topic=a.*&after=a.b%3D5-0&last=2")).unwrap();
        assert_eq!(p.positions.len(), 1);
        assert_eq!((p.query.limit, p.limit), (None, Some(Limit::Last(2))));
        for bad in [
            "after=5-0",
            "topic=a.*&after=5-0",
            "limit=1&last=1",
            "limit=x",
            "since=2026",
            "x=1",
            "topic=a.",
            "topic=a&after=b=1-0",
        ] {
            assert!(history_params(Some(bad)).is_err(), "{bad}");
        }
    }
}
