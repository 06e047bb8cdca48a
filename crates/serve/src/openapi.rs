//! The OpenAPI document of the API, served at `/v1/openapi.json`.

use axum::http::StatusCode;
use axum::response::Response;

use crate::error::json_response;

/// The document, compiled into the binary.
const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /v1/openapi.json`.
pub async fn document() -> Response {
    json_response(StatusCode::OK, DOCUMENT.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::DOCUMENT;

    #[test]
    fn the_document_describes_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    documented.insert((path.clone(), method.to_uppercase()));
                }
            }
        }
        let routed: BTreeSet<(String, String)> = crate::app::operations()
            .into_iter()
            .map(|(path, method)| (path.to_string(), method.to_string()))
            .collect();
        assert_eq!(documented, routed);
    }
}
