//! OpenAI- and Anthropic-compatible endpoints: the official SDKs work with only the base URL and the API
//! key (the user's Directus access token) changed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::domain::llm::{self, Api, estimated_usage, usage_from_response};
use crate::http::error::ApiError;
use crate::http::extract::{AuthenticatedUser, RawBody};
use crate::http::state::AppState;
use crate::services::gateway::Reply;

/// Which credentials paid for the call.
pub const SOURCE_HEADER: &str = "x-byok-source";

pub async fn chat_completions(
    user: AuthenticatedUser,
    state: State<AppState>,
    body: RawBody,
) -> Result<Response, ApiError> {
    proxy(user, state, body, Api::ChatCompletions).await
}

pub async fn messages(user: AuthenticatedUser, state: State<AppState>, body: RawBody) -> Result<Response, ApiError> {
    proxy(user, state, body, Api::Messages).await
}

async fn proxy(
    AuthenticatedUser(user): AuthenticatedUser,
    State(state): State<AppState>,
    RawBody(raw): RawBody,
    api: Api,
) -> Result<Response, ApiError> {
    let json: Value = serde_json::from_slice(&raw)
        .map_err(|_| ApiError::bad_request("invalid_json", "The body is not valid JSON."))?;
    let request = llm::parse_request(api, raw.len(), json).map_err(|e| ApiError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_request",
        message: e.to_string().into(),
    })?;
    let body = serde_json::to_vec(&request.body).expect("a parsed JSON value serializes");
    let forwarded = state.gateway.call(user, api, &request, body).await?;
    let source = forwarded.source;
    let mut response = match forwarded.reply {
        Reply::ProviderError { status, content_type, body } => {
            with_content_type(Response::new(Body::from(body)), status, content_type)
        }
        Reply::Success(upstream) if request.stream => {
            let (status, content_type) = (upstream.status(), upstream.headers().get(header::CONTENT_TYPE).cloned());
            let permit = forwarded.permit;
            let stream = state.gateway.meter.metered_stream(forwarded.charge, upstream.bytes_stream());
            // The upstream slot is released when the stream (and so this closure's capture) is dropped.
            let stream = futures_util::StreamExt::map(stream, move |chunk| {
                let _slot = &permit;
                chunk
            });
            let mut response = with_content_type(Response::new(Body::from_stream(stream)), status, content_type);
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Reply::Success(upstream) => {
            let (status, content_type) = (upstream.status(), upstream.headers().get(header::CONTENT_TYPE).cloned());
            let body = upstream.bytes().await.map_err(|_| ApiError::Upstream("the provider's answer was cut off"))?;
            let parsed = serde_json::from_slice::<Value>(&body).ok();
            let usage = parsed.as_ref().and_then(|v| usage_from_response(api, v));
            let usage = usage.unwrap_or_else(|| {
                tracing::info!("response without usage; charged by estimate");
                estimated_usage(forwarded.charge.estimated_prompt_tokens, body.len())
            });
            state.gateway.meter.record(forwarded.charge, usage);
            with_content_type(Response::new(Body::from(body)), status, content_type)
        }
    };
    response.headers_mut().insert(SOURCE_HEADER, HeaderValue::from_static(source.as_str()));
    Ok(response.into_response())
}

fn with_content_type(mut response: Response, status: StatusCode, content_type: Option<HeaderValue>) -> Response {
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}
