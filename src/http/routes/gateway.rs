//! OpenAI- and Anthropic-compatible endpoints: the official SDKs work with only the base URL and the API
//! key (the user's Directus access token) changed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::domain::llm::{self, Api, LlmRequestError, estimated_usage, usage_from_response};
use crate::domain::routing::Source;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, RawBody};
use crate::http::state::AppState;
use crate::metrics;
use crate::services::gateway::Reply;

/// Which credentials paid for the call.
pub const SOURCE_HEADER: &str = "x-byok-source";
/// The id of the usage record a successful call produced (`request_id` in Directus): what a client quotes to
/// find its call in `api_key_usage` or `credit_transactions`.
pub const USAGE_ID_HEADER: HeaderName = HeaderName::from_static("x-byok-usage-id");
/// Present when the decision rested on data that may be out of date because Directus is unreachable:
/// `flags`, `caller`, or both.
pub const STALE_HEADER: HeaderName = HeaderName::from_static("x-byok-stale");

/// OpenAI Chat Completions, passed to OpenAI with the user's own key or the platform's (credits). Streams when
/// the request says `"stream": true`. `x-byok-source` says who paid; `x-byok-usage-id` names the usage record.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An OpenAI Chat Completions request"),
    responses(
        (status = 200, description = "OpenAI's answer (JSON, or `text/event-stream` when streaming)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn chat_completions(
    user: AuthenticatedUser,
    state: State<AppState>,
    body: RawBody,
) -> Result<Response, ApiError> {
    counted(Api::ChatCompletions, proxy(user, state, body, Api::ChatCompletions).await)
}

/// Anthropic Messages, passed to Anthropic like [`chat_completions`] is to OpenAI.
#[utoipa::path(post, path = "/v1/messages", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An Anthropic Messages request"),
    responses(
        (status = 200, description = "Anthropic's answer (JSON, or `text/event-stream` when streaming)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn messages(user: AuthenticatedUser, state: State<AppState>, body: RawBody) -> Result<Response, ApiError> {
    counted(Api::Messages, proxy(user, state, body, Api::Messages).await)
}

/// Counts the call by provider, paying source and outcome. (Refusals before the handler, such as a bad
/// token, are counted by the HTTP layer only.)
fn counted(api: Api, result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let (source, code) = match &result {
        Ok(response) => {
            let source = response.headers().get(SOURCE_HEADER).and_then(|v| v.to_str().ok());
            let source =
                if source == Some(Source::Byok.as_str()) { Source::Byok.as_str() } else { Source::Internal.as_str() };
            (source, if response.status().is_success() { "ok" } else { "provider_error" })
        }
        Err(error) => ("none", error.code()),
    };
    metrics::gateway_call(api.provider(), source, code);
    result
}

async fn proxy(
    AuthenticatedUser(user): AuthenticatedUser,
    State(state): State<AppState>,
    RawBody(raw): RawBody,
    api: Api,
) -> Result<Response, ApiError> {
    let request = llm::parse_request(api, &raw).map_err(|error| match error {
        LlmRequestError::InvalidJson => ApiError::bad_request("invalid_json", "The body is not valid JSON."),
        other => ApiError::bad_request("invalid_request", other.to_string()),
    })?;
    let forwarded = state.gateway.call(user, api, &request).await?;
    let (source, staleness) = (forwarded.source, forwarded.staleness);
    let usage_id = HeaderValue::try_from(forwarded.charge.request_id.to_string()).expect("a UUID is a header value");
    let mut response = match forwarded.reply {
        Reply::ProviderError { status, content_type, body } => {
            with_content_type(Response::new(Body::from(body)), status, content_type)
        }
        Reply::Success(upstream) if request.stream => {
            let (status, content_type) = (upstream.status(), upstream.headers().get(header::CONTENT_TYPE).cloned());
            let hide_usage_chunk = api == Api::ChatCompletions && !request.client_wants_usage_chunk;
            let stream = state.gateway.meter.metered_stream(
                forwarded.charge,
                hide_usage_chunk,
                forwarded.slot,
                upstream.bytes_stream(),
            );
            let mut response = with_content_type(Response::new(Body::from_stream(stream)), status, content_type);
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Reply::Success(upstream) => {
            let (status, content_type) = (upstream.status(), upstream.headers().get(header::CONTENT_TYPE).cloned());
            let body = upstream.bytes().await.map_err(|_| ApiError::Upstream("the provider's answer was cut off"))?;
            let usage = usage_from_response(api, &body);
            let usage = usage.unwrap_or_else(|| {
                tracing::info!("response without usage; charged by estimate");
                estimated_usage(forwarded.charge.estimated_prompt_tokens, body.len())
            });
            state.gateway.meter.record(forwarded.charge, usage);
            with_content_type(Response::new(Body::from(body)), status, content_type)
        }
    };
    response.headers_mut().insert(SOURCE_HEADER, HeaderValue::from_static(source.as_str()));
    if response.status().is_success() {
        response.headers_mut().insert(USAGE_ID_HEADER, usage_id);
    }
    if let Some(stale) = staleness {
        response.headers_mut().insert(STALE_HEADER, HeaderValue::from_static(stale));
    }
    Ok(response.into_response())
}

fn with_content_type(mut response: Response, status: StatusCode, content_type: Option<HeaderValue>) -> Response {
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}
