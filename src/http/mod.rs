//! The HTTP surface: routes, middleware and the mapping of errors to responses.

pub mod error;
pub mod extract;
pub mod guard;
pub mod limits;
pub mod purchase_link;
mod request_count;
pub mod routes;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::{ApiError, ErrorBody};
use self::request_count::CountRequestsLayer;
use self::state::AppState;
use crate::domain::error_code::Code;

/// Bodies here are small JSON documents; anything larger is refused before it is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Upper bound on handling one request, including every Directus call it makes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API. `/metrics` is on it unless `METRICS_ADDR` puts it on a listener of its own ([`metrics_router`]).
/// Every route is registered with its OpenAPI entry (`routes!`), so `/openapi.json` lists them all; the
/// document itself is listed by `ApiDoc` (below) and served from the value built here.
pub fn router(state: AppState, with_metrics: bool) -> Router {
    let (routes, mut document) = documented_routes(&state, with_metrics).split_for_parts();
    describe_responses(&mut document);
    list_error_codes(&mut document);
    let document = routes::openapi::Document(Arc::new(document.to_pretty_json().unwrap_or_default()));
    let routes = routes
        .route("/openapi.json", get(move || routes::openapi::document(document.clone())))
        .fallback(|| async { ApiError::from(Code::NotFound) })
        .method_not_allowed_fallback(|| async { ApiError::from(Code::MethodNotAllowed) });
    let services = state.services();
    with_common_layers(routes, services.guard.clone(), services.purchase_link.clone()).with_state(state)
}

/// The routes and their OpenAPI document, built together.
pub fn documented_routes(state: &AppState, with_metrics: bool) -> OpenApiRouter<AppState> {
    // No overall deadline here: answers stream for minutes; the gateway bounds each provider call instead.
    // Their bodies are read to a limit of their own (`LlmBody`).
    let gateway = OpenApiRouter::new()
        .routes(routes!(routes::gateway::chat_completions))
        .routes(routes!(routes::gateway::messages))
        .routes(routes!(routes::gateway::responses))
        .routes(routes!(routes::gateway::embeddings))
        .routes(routes!(routes::gateway::count_tokens));
    // A job is kept until it is removed: its own, smaller limit.
    let jobs = OpenApiRouter::new()
        .routes(routes!(routes::jobs::submit, routes::jobs::list))
        .layer(DefaultBodyLimit::max(state.services().max_job_body_bytes));
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(routes::health::healthz));
    if with_metrics {
        api = api.routes(routes!(routes::metrics::render));
    }
    api.routes(routes!(routes::health::readyz))
        .routes(routes!(routes::status::status))
        .routes(routes!(routes::pages::account))
        .routes(routes!(routes::pages::script))
        .routes(routes!(routes::pages::style))
        .routes(routes!(routes::webhooks::directus))
        .routes(routes!(routes::webhooks::stripe))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::refresh))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::unlock))
        .routes(routes!(routes::account::account))
        .routes(routes!(routes::budget::show, routes::budget::update))
        .routes(routes!(routes::account::providers))
        .routes(routes!(routes::account::recommendations))
        .routes(routes!(routes::models::list))
        .routes(routes!(routes::route::decide))
        .routes(routes!(routes::flags::show))
        .routes(routes!(routes::flags::reload))
        .routes(routes!(routes::preflight::show))
        .routes(routes!(routes::preflight::notify))
        .routes(routes!(routes::keys::list))
        .routes(routes!(routes::keys::save, routes::keys::delete))
        .routes(routes!(routes::keys::verify))
        .routes(routes!(routes::usage::summary))
        .routes(routes!(routes::calls::list))
        .routes(routes!(routes::usage::estimate))
        .routes(routes!(routes::notifications::list))
        .routes(routes!(routes::notifications::mark_read))
        .routes(routes!(routes::jobs::show, routes::jobs::cancel))
        .routes(routes!(routes::jobs::retry))
        .routes(routes!(routes::jobs::counts))
        .routes(routes!(routes::spend::show))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(deadline))
        .merge(gateway)
        .merge(jobs)
}

/// OpenAPI requires a description on every response: where an annotation gives none, the status's own name.
fn describe_responses(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in document.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            for (status, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response
                    && response.description.is_empty()
                {
                    let reason = status.parse::<axum::http::StatusCode>().ok().and_then(|s| s.canonical_reason());
                    response.description = reason.unwrap_or("Response").to_owned();
                }
            }
        }
    }
}

/// The error body's `code` lists every code of the table, each with its status and default message.
fn list_error_codes(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    let Some(components) = document.components.as_mut() else { return };
    let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail") else { return };
    let mut codes: Vec<&str> = Vec::new();
    for code in Code::ALL {
        if !codes.contains(&code.as_str()) {
            codes.push(code.as_str());
        }
    }
    let table: Vec<String> =
        Code::ALL.iter().map(|c| format!("- `{}` ({}): {}", c.as_str(), c.status(), c.message())).collect();
    let description =
        format!("Stable, for programs to switch on. Every code, its status and default message:\n{}", table.join("\n"));
    let code = ObjectBuilder::new().schema_type(Type::String).description(Some(description)).enum_values(Some(codes));
    detail.properties.insert("code".to_owned(), code.into());
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "byok-bridge",
        description = "Sidecar beside Directus: BYOK feature flags, credential routing, key vault and LLM gateway. \
                       Errors are always `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(routes::openapi::document),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody)),
)]
struct ApiDoc;

/// How callers authenticate: a Directus access token (users; the SDKs send it as their API key), the
/// operator token, or a Standard Webhooks signature (the Directus hook).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(description.to_owned()))
                    .build(),
            )
        };
        components.add_security_scheme(
            "directus_token",
            bearer("A Directus access token of the user (also accepted as `x-api-key`)."),
        );
        components.add_security_scheme("operator_token", bearer("OPERATOR_TOKEN"));
        components.add_security_scheme(
            "webhook_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "webhook-signature",
                "Standard Webhooks signature (with webhook-id and webhook-timestamp)",
            ))),
        );
    }
}

/// Only `/metrics`, for its own listener.
pub fn metrics_router(state: AppState) -> Router {
    let services = state.services();
    let routes = Router::new().route("/metrics", get(routes::metrics::render));
    with_common_layers(routes, services.guard.clone(), services.purchase_link.clone()).with_state(state)
}

/// What every route gets: request ids, a span per request, sensitive headers kept out of logs, request
/// metrics, a panic answered as a 500 JSON error (details logged) instead of a dropped connection, the
/// guard's bounds on bodies, and the purchase link on refusals for credit. One `layer` call: each adds a boxed
/// service to clone and a future to box on every request (three of them were 3% of the gateway's CPU).
pub fn with_common_layers<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    guard: guard::Guard,
    link: purchase_link::PurchaseLink,
) -> Router<S> {
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
            .layer(CountRequestsLayer)
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(link)
            .layer(guard),
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
        Err(_) => ApiError::from(Code::Timeout).into_response(),
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
        let guard = guard::Guard {
            grace: Duration::from_secs(5),
            min_bytes_per_sec: 1,
            body_budget: Arc::new(tokio::sync::Semaphore::new(1 << 20)),
        };
        let response = with_common_layers(routes, guard, purchase_link::PurchaseLink::default())
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key("x-request-id"));
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("sk-proj-leak"), "{body}");
    }
}
