//! `/openapi.json`: the OpenAPI 3.1 document of this API, generated from the handlers' own annotations as
//! the router is built, so a route cannot exist without its entry (see [`crate::http::router`]).

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document, rendered once when the router is built.
#[derive(Clone)]
pub struct Document(pub Arc<String>);

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn document(Document(json): Document) -> Response {
    let mut response = json.as_str().to_owned().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
