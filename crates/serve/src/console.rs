//! The web console: one page, its script and its style sheet, compiled into
//! the binary (no CDN, no build step).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::app::App;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/style.css");

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    response
}

/// Adds the console's routes (`/`, `/console/app.js`, `/console/style.css`).
pub fn routes(router: Router<App>) -> Router<App> {
    router
        .route("/", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console/app.js", get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/style.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
}
