//! The one place errors become HTTP responses: `{"error": "<one line>"}`.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use seed_event::ErrorKind;

/// An error answered as `{"error": …}` with its status.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// Marks a response whose error came from the store (counted in `/metrics`).
#[derive(Debug, Clone, Copy)]
pub struct StoreFailed;

impl ApiError {
    /// 400: the request is invalid; nothing was written.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// An error with its own status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
}

/// The status of a store error's kind.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<seed_event::Error> for ApiError {
    fn from(e: seed_event::Error) -> ApiError {
        ApiError::new(status_of(e.kind()), e.to_string())
    }
}

impl From<bus::Error> for ApiError {
    fn from(e: bus::Error) -> ApiError {
        let status = match (&e, e.store_kind()) {
            (_, Some(kind)) => status_of(kind),
            (bus::Error::Closed, None) => StatusCode::SERVICE_UNAVAILABLE,
            (bus::Error::ConsumerBusy { .. }, None) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The fields of a request body that must be a JSON object, or 400 naming
/// what is wrong, with `example` as the shape expected.
pub fn json_object(body: &[u8], example: &str) -> Result<seed_event::JsonObject, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "the body is not JSON ({e}); expected an object such as {example}"
        ))
    })?;
    match value {
        serde_json::Value::Object(fields) => Ok(fields),
        other => Err(ApiError::invalid(format!(
            "expected a JSON object, got {}",
            seed_event::support::json_type_name(&other)
        ))),
    }
}

/// `{"error": message}` on one line.
pub fn error_body(message: &str) -> String {
    let line = message.replace(['\n', '\r'], " ");
    serde_json::json!({ "error": line.trim_end_matches('.') }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        if self.status.is_server_error() {
            log::warn!("answering {}: {}", self.status.as_u16(), self.message);
        }
        let mut response = json_response(self.status, error_body(&self.message));
        if self.status.is_server_error() {
            response.extensions_mut().insert(StoreFailed);
        }
        response
    }
}

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: String) -> axum::response::Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Gives an error response that is not JSON yet (a 404 of no route, a 405,
/// a 413 of the body limit) the `{"error": …}` shape.
pub fn ensure_json_error(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such resource".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this resource".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than --max-body".to_string(),
        other => other.canonical_reason().unwrap_or("request failed").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(error_body(&message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_kinds_map_to_statuses() {
        let e: ApiError = seed_event::Error::invalid("topic", "bad").into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e: ApiError = seed_event::Error::unavailable("redis").into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let e: ApiError = seed_event::Error::NotFound("x".into()).into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e: ApiError =
            seed_event::support::conflict(&seed_event::Topic::new("a").unwrap(), None, None).into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let e: ApiError = bus::Error::Closed.into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn error_bodies_are_one_line() {
        assert_eq!(error_body("a\nb."), r#"{"error":"a b"}"#);
    }
}
