//! Entity states over HTTP (`/v1/state/…`), over `seed_state::StateStore`.
//!
//! A state's version is its entity tag: `GET` answers `ETag: "<version>"`,
//! and `PUT` and `DELETE` need `If-Match: "<version>"` (the version read),
//! answering 412 with the current version when the entity moved on. A
//! create of an entity that exists answers 409. Lists, histories and
//! watches are streamed, one state JSON per line or per stream event.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use seed_event::support::json_type_name;
use seed_event::{Cursor, ErrorKind, JsonObject};
use seed_state::{Cause, Change, Entry, NewState, StateStore, Status, WatchEvent, WatchFrom};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::App;
use crate::error::{error_body, json_object, json_response, ApiError};

/// How long a watch's reader waits in the store before it looks whether its client left.
const WATCH_POLL: Duration = Duration::from_secs(1);
/// How many bytes of NDJSON go into one chunk of a list or history.
const CHUNK: usize = 64 * 1024;

/// The state store of the server's store; 400 if the store keeps none.
fn states(app: &App) -> Result<StateStore, ApiError> {
    Ok(StateStore::new(app.bus.store().clone())?)
}

/// A JSON response of `entry` with its version as the entity tag.
fn entry_response(status: StatusCode, entry: &Entry) -> Response {
    let mut response = json_response(status, entry.to_json());
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{}\"", entry.state.version())) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// A store error of a compare-and-set call: a conflict is 412 (the
/// precondition failed), everything else as usual.
fn precondition(e: seed_event::Error) -> ApiError {
    match e.kind() {
        ErrorKind::Conflict => ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string()),
        _ => e.into(),
    }
}

/// The version an `If-Match` header names: `"3"` (or `3`, or `W/"3"`).
fn if_match(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers.get(header::IF_MATCH).ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "If-Match is missing; give the version you read, e.g. If-Match: \"3\" (the ETag of GET)",
        )
    })?;
    let text = value.to_str().unwrap_or("").trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    match bare.parse::<u64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(ApiError::invalid(format!(
            "If-Match {text:?} is not a version; expected a quoted version of 1 or more, e.g. \"3\""
        ))),
    }
}

/// Takes a string field; `required` says what it is for when missing.
fn string_field(
    fields: &mut JsonObject,
    name: &str,
    required: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match fields.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(ApiError::invalid(format!("{name} must not be empty"))),
        Some(Value::Null) | None => match required {
            Some(what) => Err(ApiError::invalid(format!("{name} is missing; expected {what}"))),
            None => Ok(None),
        },
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be a string, got {}",
            json_type_name(&other)
        ))),
    }
}

/// Takes an object field, if given.
fn object_field(fields: &mut JsonObject, name: &str) -> Result<Option<JsonObject>, ApiError> {
    match fields.remove(name) {
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(ApiError::invalid(format!(
            "{name} must be a JSON object, got {}",
            json_type_name(&other)
        ))),
    }
}

/// Takes `status`, if given.
fn status_field(fields: &mut JsonObject) -> Result<Option<Status>, ApiError> {
    Ok(string_field(fields, "status", None)?.map(|s| Status::parse(&s)).transpose()?)
}

/// Takes `caused_by` and `correlation_id`: why the change is made.
fn cause_fields(fields: &mut JsonObject) -> Result<Cause, ApiError> {
    let caused_by = string_field(fields, "caused_by", None)?
        .map(|s| {
            Uuid::parse_str(&s).map_err(|_| {
                ApiError::invalid(format!("caused_by {s:?} is not an event id (a UUID)"))
            })
        })
        .transpose()?;
    let correlation_id = string_field(fields, "correlation_id", None)?;
    Ok(Cause { caused_by, correlation_id })
}

/// 400 if a field is left that the operation does not know.
fn no_more_fields(fields: &JsonObject, expected: &str) -> Result<(), ApiError> {
    match fields.keys().next() {
        Some(name) => {
            Err(ApiError::invalid(format!("unknown field {name:?}; expected {expected}")))
        }
        None => Ok(()),
    }
}

/// `POST /v1/state/{type}`: creates an entity; 201 and its state, 409 if it exists.
pub async fn create(
    State(app): State<App>,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut fields = json_object(&body, r#"{"entity_id": "t-42", "updated_by": "fenrir"}"#)?;
    let id = string_field(&mut fields, "entity_id", Some("the entity's id, e.g. t-42"))?
        .unwrap_or_default();
    let by = string_field(&mut fields, "updated_by", Some("who creates it"))?.unwrap_or_default();
    let mut new = NewState::new(id, kind, by);
    new.data = object_field(&mut fields, "data")?.unwrap_or_default();
    new.metadata = object_field(&mut fields, "metadata")?.unwrap_or_default();
    new.status = status_field(&mut fields)?.unwrap_or(Status::Pending);
    new.cause = cause_fields(&mut fields)?;
    no_more_fields(
        &fields,
        "entity_id, updated_by, data, status, metadata, caused_by, correlation_id",
    )?;
    let states = states(&app)?;
    let entry = app.blocking(move || states.create(new)).await??;
    app.metrics.published(&format!("state.{}", entry.state.entity_type()), 1);
    Ok(entry_response(StatusCode::CREATED, &entry))
}

/// `GET /v1/state/{type}/{id}[?version=N]`: the current state (or one kept version).
pub async fn get(
    State(app): State<App>,
    Path((kind, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut version = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "version" => {
                version = Some(value.parse::<u64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "version {value:?} is not a version; expected a whole number of 1 or more"
                    ))
                })?)
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected version"
                )))
            }
        }
    }
    let states = states(&app)?;
    let entry = app
        .blocking(move || match version {
            Some(v) => states.get_version(&kind, &id, v),
            None => states.get(&kind, &id),
        })
        .await??;
    Ok(entry_response(StatusCode::OK, &entry))
}

/// `PUT /v1/state/{type}/{id}` with `If-Match`: a compare-and-set update.
pub async fn update(
    State(app): State<App>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let mut fields = json_object(&body, r#"{"updated_by": "odin", "status": "active"}"#)?;
    let by =
        string_field(&mut fields, "updated_by", Some("who makes the change"))?.unwrap_or_default();
    let mut change = Change::by(by);
    let data = object_field(&mut fields, "data")?;
    let merge = object_field(&mut fields, "merge")?;
    match (data, merge) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "data and merge exclude each other; give data to replace, merge to patch",
            ))
        }
        (Some(data), None) => change = change.replace_data(data),
        (None, Some(patch)) => change = change.merge_data(patch),
        (None, None) => {}
    }
    if let Some(status) = status_field(&mut fields)? {
        change = change.status(status);
    }
    if let Some(metadata) = object_field(&mut fields, "metadata")? {
        change = change.metadata(metadata);
    }
    change = change.cause(cause_fields(&mut fields)?);
    no_more_fields(
        &fields,
        "updated_by, data or merge, status, metadata, caused_by, correlation_id",
    )?;
    let states = states(&app)?;
    let entry = app
        .blocking(move || states.update(&kind, &id, expected, change))
        .await?
        .map_err(precondition)?;
    app.metrics.published(&format!("state.{}", entry.state.entity_type()), 1);
    Ok(entry_response(StatusCode::OK, &entry))
}

/// `DELETE /v1/state/{type}/{id}` with `If-Match`: a tombstone at the next
/// version. Who deletes comes from `updated_by` in a JSON body or the query.
pub async fn delete(
    State(app): State<App>,
    Path((kind, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    let mut by = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "updated_by" => by = Some(value.into_owned()),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected updated_by"
                )))
            }
        }
    }
    let mut cause = Cause::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let mut fields = json_object(&body, r#"{"updated_by": "odin"}"#)?;
        if let Some(name) = string_field(&mut fields, "updated_by", None)? {
            by = Some(name);
        }
        cause = cause_fields(&mut fields)?;
        no_more_fields(&fields, "updated_by, caused_by, correlation_id")?;
    }
    let by = by.filter(|b| !b.is_empty()).ok_or_else(|| {
        ApiError::invalid(
            "updated_by is missing; say who deletes, in the body or as ?updated_by=NAME",
        )
    })?;
    let states = states(&app)?;
    let entry = app
        .blocking(move || states.delete(&kind, &id, expected, Change::by(by).cause(cause)))
        .await?
        .map_err(precondition)?;
    app.metrics.published(&format!("state.{}", entry.state.entity_type()), 1);
    Ok(entry_response(StatusCode::OK, &entry))
}

/// Streams the lines `produce` sends as NDJSON; the first item decides the
/// status, so a failure before any line is an error response.
async fn ndjson(
    app: &App,
    produce: impl FnOnce(&mut dyn FnMut(seed_event::Result<String>) -> bool) + Send + 'static,
) -> Result<Response, ApiError> {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    app.runtime.spawn_blocking(move || {
        let mut first = Some(first_tx);
        let mut chunk = String::new();
        let mut failed = false;
        let mut sink = |line: seed_event::Result<String>| -> bool {
            match line {
                Ok(line) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    chunk.push_str(&line);
                    chunk.push('\n');
                    if chunk.len() >= CHUNK {
                        let bytes = Bytes::from(std::mem::take(&mut chunk));
                        return tx.blocking_send(Ok(bytes)).is_ok();
                    }
                    true
                }
                Err(e) => {
                    match first.take() {
                        Some(first) => {
                            let _ = first.send(Err(e.into()));
                        }
                        None => {
                            // The status is sent already: cut the response short.
                            log::warn!("a state stream failed mid-way: {e}");
                            failed = true;
                        }
                    }
                    false
                }
            }
        };
        produce(&mut sink);
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        if failed {
            let _ = tx.blocking_send(Err(std::io::Error::other("the store failed mid-stream")));
        } else if !chunk.is_empty() {
            let _ = tx.blocking_send(Ok(Bytes::from(chunk)));
        }
    });
    first_rx
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "state reader stopped"))??;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// `GET /v1/state/{type}/{id}/history`: the kept versions, oldest first, as NDJSON.
pub async fn history(
    State(app): State<App>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let states = states(&app)?;
    ndjson(&app, move |sink| match states.history(&kind, &id) {
        Ok(entries) => {
            for entry in entries {
                if !sink(Ok(entry.to_json())) {
                    return;
                }
            }
        }
        Err(e) => {
            sink(Err(e));
        }
    })
    .await
}

/// `GET /v1/state/{type}[?status=S]`: every live entity's state, streamed as NDJSON.
pub async fn list(
    State(app): State<App>,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut status = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "status" => status = Some(Status::parse(&value)?),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected status"
                )))
            }
        }
    }
    let states = states(&app)?;
    ndjson(&app, move |sink| match states.list(&kind, status) {
        Ok(entries) => {
            for entry in entries {
                if !sink(entry.map(|e| e.to_json())) {
                    return;
                }
            }
        }
        Err(e) => {
            sink(Err(e));
        }
    })
    .await
}

/// `GET /v1/state/{type}/watch[?id=ID&from_revision=R]`: a `text/event-stream`
/// of states. Without a revision: the current state of every entity, then an
/// `event: ready`, then every change; with one (or a `Last-Event-ID`), every
/// change after it. Each state's `id:` is its revision; a compaction that
/// removed changes the watch asked for is an `event: compacted` naming the
/// revision it reached.
pub async fn watch(
    State(app): State<App>,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut id = None;
    let mut from = WatchFrom::Now;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match &*key {
            "id" => id = Some(value.into_owned()),
            "from_revision" => from = WatchFrom::After(parse_revision(&value)?),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown parameter {other:?}; expected id and from_revision"
                )))
            }
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        from = WatchFrom::After(parse_revision(last.to_str().unwrap_or(""))?);
    }
    // Each watch holds a thread and a store follower while it is open: their
    // number is bounded, and one past the bound is refused, not queued.
    let permit = app.state_watches.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} state watches are open, the most this server allows (--max-state-watches); close one or retry later",
                app.config.max_state_watches
            ),
        )
    })?;
    let states = states(&app)?;
    let mut watch = app.blocking(move || states.watch(&kind, id.as_deref(), from)).await??;
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let mut shutdown = app.shutdown.clone();
    let keep_alive = app.config.keep_alive;
    app.runtime.spawn_blocking(move || {
        let _permit = permit;
        let mut quiet = Duration::ZERO;
        loop {
            if tx.is_closed() || *shutdown.borrow_and_update() {
                return;
            }
            let frame = match watch.next(WATCH_POLL) {
                Ok(Some(WatchEvent::Entry(entry))) => {
                    format!("id: {}\ndata: {}\n\n", entry.revision, entry.to_json())
                }
                Ok(Some(WatchEvent::Ready)) => "event: ready\ndata: {}\n\n".to_string(),
                Ok(Some(WatchEvent::Compacted { through })) => format!(
                    "event: compacted\ndata: {}\n\n",
                    serde_json::json!({ "through": through.to_string() })
                ),
                Ok(None) => {
                    quiet += WATCH_POLL;
                    if quiet < keep_alive {
                        continue;
                    }
                    ":\n\n".to_string()
                }
                Err(e) => {
                    let _ = tx.blocking_send(Bytes::from(format!(
                        "event: error\ndata: {}\n\n",
                        error_body(&e.to_string())
                    )));
                    return;
                }
            };
            quiet = Duration::ZERO;
            if tx.blocking_send(Bytes::from(frame)).is_err() {
                return;
            }
        }
    });
    let hello = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(Bytes::from_static(b": watching\n\n"))
    });
    let rest = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok)));
    let mut response =
        Body::from_stream(futures_util::StreamExt::chain(hello, rest)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

fn parse_revision(text: &str) -> Result<Cursor, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid(format!(
            "revision {text:?} is not a revision; expected a state's \"revision\", such as 42-0"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_a_quoted_version() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
            if_match(&h)
        };
        assert_eq!(with("\"3\"").unwrap(), 3);
        assert_eq!(with("W/\"12\"").unwrap(), 12);
        assert_eq!(with("4").unwrap(), 4);
        for bad in ["\"0\"", "\"x\"", "*", ""] {
            assert!(with(bad).is_err(), "{bad}");
        }
        assert!(if_match(&HeaderMap::new()).is_err());
    }

    #[test]
    fn bodies_name_what_is_wrong() {
        let err = |text: &str| match json_object(text.as_bytes(), "{}") {
            Err(e) => format!("{e:?}"),
            Ok(_) => panic!("{text} was accepted"),
        };
        assert!(err("nope").contains("not JSON"));
        assert!(err("[1]").contains("got an array"));
        let mut fields = json_object(br#"{"a": 1, "b": "", "c": {}}"#, "{}").unwrap();
        assert!(string_field(&mut fields, "a", None).is_err());
        assert!(string_field(&mut fields, "b", None).is_err());
        assert!(string_field(&mut fields, "z", Some("a name")).is_err());
        assert!(object_field(&mut fields, "c").unwrap().is_some());
        assert!(no_more_fields(&fields, "nothing").is_ok());
    }
}
