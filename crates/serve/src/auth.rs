//! The bearer token: every request but `/healthz` and the console's files needs it.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::error::ApiError;

/// Paths answered without a token: liveness and the console's static files
/// (which hold no data; the console asks for the token and sends it itself).
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/" | "/index.html") || path.starts_with("/console/")
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Rejects a request without the right `Authorization: Bearer` header with 401.
pub async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = app.config.token.as_deref() else {
        return next.run(request).await;
    };
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(given) if constant_time_eq(given, token.as_bytes()) => next.run(request).await,
        Some(_) => unauthorized("wrong bearer token"),
        None => unauthorized("this server needs an Authorization: Bearer TOKEN header"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn only_liveness_and_console_files_are_public() {
        assert!(is_public("/healthz"));
        assert!(is_public("/"));
        assert!(is_public("/console/app.js"));
        assert!(!is_public("/metrics"));
        assert!(!is_public("/v1/topics"));
    }
}
