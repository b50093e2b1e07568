//! The HTTP surface: routes, middleware and the mapping of errors to responses.

pub mod error;
pub mod extract;
pub mod routes;
pub mod state;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::error::{ApiError, ErrorCode};
use self::state::AppState;

/// Bodies here are small JSON documents; anything larger is refused before it is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Upper bound on handling one request, including every Directus call it makes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API. `/metrics` is on it unless `METRICS_ADDR` puts it on a listener of its own ([`metrics_router`]).
pub fn router(state: AppState, with_metrics: bool) -> Router {
    // No overall deadline here: answers stream for minutes; the gateway bounds each provider call instead.
    // LLM request bodies (conversations, base64 images) are far larger than our own JSON documents.
    let gateway = Router::new()
        .route("/v1/chat/completions", post(routes::gateway::chat_completions))
        .route("/v1/messages", post(routes::gateway::messages))
        .layer(DefaultBodyLimit::max(state.max_llm_body_bytes));
    let mut api = Router::new().route("/healthz", get(routes::health::healthz));
    if with_metrics {
        api = api.route("/metrics", get(routes::metrics::render));
    }
    let api = api
        .route("/readyz", get(routes::health::readyz))
        .route("/webhooks/directus", post(routes::webhooks::directus))
        .route("/v1/route", post(routes::route::decide))
        .route("/v1/flags", get(routes::flags::show))
        .route("/v1/keys", get(routes::keys::list))
        .route("/v1/keys/{provider}", put(routes::keys::save).delete(routes::keys::delete))
        .route("/v1/keys/{provider}/verify", post(routes::keys::verify))
        .route("/v1/usage", get(routes::usage::summary))
        .route("/v1/estimate", post(routes::usage::estimate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(deadline))
        .merge(gateway)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    with_common_layers(api).with_state(state)
}

/// Only `/metrics`, for its own listener.
pub fn metrics_router(state: AppState) -> Router {
    with_common_layers(Router::new().route("/metrics", get(routes::metrics::render))).with_state(state)
}

/// What every route gets: request ids, a span per request, sensitive headers kept out of logs, request
/// metrics, and a panic answered as a 500 JSON error (details logged) instead of a dropped connection.
pub fn with_common_layers<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    let sensitive = [header::AUTHORIZATION, HeaderName::from_static("x-api-key"), header::COOKIE];
    routes.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    // An access log line per request is opt-in (`RUST_LOG=info,tower_http=debug`): at INFO it
                    // took a third of `/v1/route`'s CPU; metrics count every answer, errors log themselves.
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                    // ApiError logs failures once, at a level that fits the cause.
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(middleware::from_fn(count_request))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}

/// The panic's message may hold anything (request data): it is logged, never sent.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

/// Counts every answer by route template (never the raw path), status and error code.
async fn count_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("<unmatched>", MatchedPath::as_str).to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let code = match response.extensions().get::<ErrorCode>() {
        Some(ErrorCode(code)) => code,
        None if response.status().is_success() => "ok",
        None => "other",
    };
    crate::metrics::http_request(&route, response.status().as_u16(), code, started.elapsed());
    response
}

/// One span per request carrying its id, so every log line of the request can be found together.
/// The route template is logged rather than the raw path, which may hold anything a client sent.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let route = request.extensions().get::<MatchedPath>().map_or("<unmatched>", MatchedPath::as_str);
    tracing::info_span!("request", request_id, method = %request.method(), route)
}

async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_without_its_message() {
        async fn boom() -> &'static str {
            panic!("secret sk-proj-leak in a panic")
        }
        let routes: Router = Router::new().route("/boom", get(boom));
        let response =
            with_common_layers(routes).oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key("x-request-id"));
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("sk-proj-leak"), "{body}");
    }
}
