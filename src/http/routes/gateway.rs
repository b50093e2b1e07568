//! OpenAI- and Anthropic-compatible endpoints (chat completions, responses, embeddings, messages): the
//! official SDKs work with only the base URL and the API key (the user's Directus access token) changed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tracing::Instrument;

use crate::domain::error_code::{Code, Coded};
use crate::domain::llm::{Api, LlmRequest, LlmRequestError};
use crate::domain::provider::Provider;
use crate::domain::routing::Source;
use crate::domain::user::UserId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, LlmBody};
use crate::metrics;
use crate::services::gateway::{Gateway, Keeping, Reply, Retries};
use uuid::Uuid;

/// Which credentials paid for the call.
pub const SOURCE_HEADER: &str = "x-byok-source";
/// The id of the usage record a successful call produced (`request_id` in Directus): what a client quotes to
/// find its call in `api_key_usage` or `credit_transactions`.
pub const USAGE_ID_HEADER: HeaderName = HeaderName::from_static("x-byok-usage-id");
/// What a non-streaming call cost in cents, exact to nine decimals as its usage record has it: the deduction
/// from credits, or (own key) what the provider charges for it.
pub const COST_HEADER: HeaderName = HeaderName::from_static("x-byok-cost-cents");
/// The provider that served the call (its id, as in `PUT /v1/keys/{provider}`).
pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-byok-provider");
/// The model that served the call: the one asked for, or the model a fallback chain moved it to.
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-byok-model");
/// Present when the decision rested on data that may be out of date because Directus is unreachable:
/// `flags`, `caller`, or both.
pub const STALE_HEADER: HeaderName = HeaderName::from_static("x-byok-stale");

/// OpenAI Chat Completions, passed to OpenAI with the user's own key or the platform's (credits). Streams when
/// the request says `"stream": true`. `x-byok-source` says who paid; `x-byok-usage-id` names the usage record;
/// `x-byok-cost-cents` (non-streaming) says what the call cost.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An OpenAI Chat Completions request"),
    responses(
        (status = 200, description = "OpenAI's answer (JSON, or `text/event-stream` when streaming)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn chat_completions(
    user: AuthenticatedUser,
    gateway: State<Arc<Gateway>>,
    body: LlmBody,
) -> Result<Response, ApiError> {
    proxy(user, gateway, body, Api::ChatCompletions).await
}

/// Anthropic Messages, passed to Anthropic like [`chat_completions`] is to OpenAI.
#[utoipa::path(post, path = "/v1/messages", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An Anthropic Messages request"),
    responses(
        (status = 200, description = "Anthropic's answer (JSON, or `text/event-stream` when streaming)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn messages(
    user: AuthenticatedUser,
    gateway: State<Arc<Gateway>>,
    body: LlmBody,
) -> Result<Response, ApiError> {
    proxy(user, gateway, body, Api::Messages).await
}

/// OpenAI Responses, passed to the OpenAI-style provider that serves the model, streaming or not, and
/// charged by the usage its final event (`response.completed`, `.incomplete`, `.failed`) reports; a stream cut
/// before it is charged for what passed.
#[utoipa::path(post, path = "/v1/responses", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An OpenAI Responses request"),
    responses(
        (status = 200, description = "The provider's answer (JSON, or `text/event-stream` when streaming)", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn responses(
    user: AuthenticatedUser,
    gateway: State<Arc<Gateway>>,
    body: LlmBody,
) -> Result<Response, ApiError> {
    proxy(user, gateway, body, Api::Responses).await
}

/// OpenAI Embeddings, passed to the provider that serves the model (OpenAI, Mistral, Gemini, ...) and charged
/// by the input tokens it reports.
#[utoipa::path(post, path = "/v1/embeddings", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An OpenAI Embeddings request"),
    responses(
        (status = 200, description = "The provider's embeddings", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn embeddings(
    user: AuthenticatedUser,
    gateway: State<Arc<Gateway>>,
    body: LlmBody,
) -> Result<Response, ApiError> {
    proxy(user, gateway, body, Api::Embeddings).await
}

/// Anthropic's token count, passed to the Anthropic-style provider with the credentials a call would use,
/// within the same limits; the provider does not bill it, so nothing is held or charged.
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "gateway", security(("directus_token" = [])),
    request_body(content = Object, description = "An Anthropic token-count request"),
    responses(
        (status = 200, description = "The provider's count", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn count_tokens(
    user: AuthenticatedUser,
    gateway: State<Arc<Gateway>>,
    body: LlmBody,
) -> Result<Response, ApiError> {
    proxy(user, gateway, body, Api::CountTokens).await
}

/// Counts the call by provider, paying source and outcome. (Refusals before the handler, such as a bad
/// token, are counted by the HTTP layer only.)
fn counted(provider: Provider, result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let (source, code) = match &result {
        Ok(response) => {
            let source = response.headers().get(SOURCE_HEADER).and_then(|v| v.to_str().ok());
            let source =
                if source == Some(Source::Byok.as_str()) { Source::Byok.as_str() } else { Source::Internal.as_str() };
            (source, if response.status().is_success() { "ok" } else { "provider_error" })
        }
        Err(error) => ("none", error.code().as_str()),
    };
    metrics::gateway_call(provider, source, code);
    result
}

async fn proxy(
    AuthenticatedUser(user): AuthenticatedUser,
    State(gateway): State<Arc<Gateway>>,
    LlmBody(raw): LlmBody,
    api: Api,
) -> Result<Response, ApiError> {
    let request = match gateway.parse(api, &raw) {
        Ok(request) => request,
        Err(error) => return counted(Provider::default_for(api.style()), Err(refused_body(error))),
    };
    let (served, answer) = forward(user, gateway, request, api).await;
    counted(served, answer)
}

/// The answer, and the provider it counts under: the one that served it, else the one asked.
async fn forward(
    user: UserId,
    gateway: Arc<Gateway>,
    request: LlmRequest,
    api: Api,
) -> (Provider, Result<Response, ApiError>) {
    let asked = request.provider;
    if !request.stream {
        // A client that hangs up does not cancel the call: its answer is then read to the end (within the
        // generation timeout) and charged like any other.
        let gateway = Arc::clone(&gateway);
        let call = async move { gateway.complete(user, api, &request, Retries::WithinDeadline, Keeping::Outbox).await };
        let completed = match RunsToTheEnd::new(call.in_current_span()).await {
            Ok(completed) => completed,
            Err(error) => return (asked, Err(error.into())),
        };
        let (provider, model) = &completed.served_by;
        let response =
            with_content_type(Response::new(Body::from(completed.body)), completed.status, completed.content_type);
        let label = Label {
            source: completed.source,
            usage_id: completed.charged.map(|(id, _)| id),
            staleness: completed.staleness,
            provider: *provider,
            model,
        };
        let mut response = label.on(response);
        if let Some((_, cost)) = completed.charged.filter(|_| response.status().is_success()) {
            let cost = HeaderValue::try_from(cost.to_string()).expect("a decimal number is a header value");
            response.headers_mut().insert(COST_HEADER, cost);
        }
        return (*provider, Ok(response));
    }
    let forwarded = match gateway.call(user, api, &request, Retries::WithinDeadline).await {
        Ok(forwarded) => forwarded,
        Err(error) => return (asked, Err(error.into())),
    };
    let (provider, model) = (forwarded.charge.provider, forwarded.charge.model.clone());
    let mut label = Label {
        source: forwarded.source,
        usage_id: Some(forwarded.charge.request_id),
        staleness: forwarded.staleness,
        provider,
        model: &model,
    };
    let response = match forwarded.reply {
        Reply::ProviderError { status, content_type, body } => {
            label.usage_id = None;
            with_content_type(Response::new(Body::from(body)), status, content_type)
        }
        Reply::Success(upstream) => {
            let (status, content_type) = (upstream.status(), upstream.headers().get(header::CONTENT_TYPE).cloned());
            let stream = gateway.metered_stream(
                forwarded.charge,
                forwarded.slot,
                forwarded.hide_usage_chunk,
                upstream.into_stream(),
            );
            let mut response = with_content_type(Response::new(Body::from_stream(stream)), status, content_type);
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    (provider, Ok(label.on(response)))
}

/// A call that is finished even when its caller stops waiting: dropped before it is done (the client hung up
/// and hyper dropped the handler), it goes on as a task of its own. While the caller waits it runs right here,
/// so the common case costs no task and no cross-thread wake-up (a spawn for every call cost about 14 µs).
struct RunsToTheEnd<T: Send + 'static> {
    call: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> RunsToTheEnd<T> {
    fn new(call: impl Future<Output = T> + Send + 'static) -> Self {
        RunsToTheEnd { call: Some(Box::pin(call)) }
    }
}

impl<T: Send + 'static> Future for RunsToTheEnd<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let call = self.call.as_mut().expect("not polled after it is done");
        let done = ready!(call.as_mut().poll(cx));
        self.call = None;
        Poll::Ready(done)
    }
}

impl<T: Send + 'static> Drop for RunsToTheEnd<T> {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::info!("the client left before the answer; the call goes on and is charged when it ends");
                drop(runtime.spawn(call));
            }
            // Only while the process shuts down: its hold expires, as for any call cut short by a crash.
            Err(_) => tracing::warn!("the client left during shutdown; the call is abandoned"),
        }
    }
}

/// Why a gateway request body (or a job's, which takes the same bodies) was refused.
pub fn refused_body(error: LlmRequestError) -> ApiError {
    match error {
        LlmRequestError::InvalidJson => Code::InvalidJson.into(),
        other => ApiError::new(Code::InvalidRequest, other.to_string()),
    }
}

/// What an answer from a provider says about itself in its headers.
struct Label<'a> {
    source: Source,
    /// The usage record of a successful call.
    usage_id: Option<Uuid>,
    staleness: Option<&'static str>,
    /// Who served it: the model asked for, or the fallback that took over.
    provider: Provider,
    model: &'a str,
}

impl Label<'_> {
    /// Who paid, who served and with which model, which usage record a successful call made, and what the
    /// decision rested on that may be old.
    fn on(self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(SOURCE_HEADER, HeaderValue::from_static(self.source.as_str()));
        headers.insert(PROVIDER_HEADER, HeaderValue::from_static(self.provider.as_str()));
        if let Ok(model) = HeaderValue::from_str(self.model) {
            headers.insert(MODEL_HEADER, model);
        }
        if let Some(stale) = self.staleness {
            headers.insert(STALE_HEADER, HeaderValue::from_static(stale));
        }
        if let Some(id) = self.usage_id.filter(|_| response.status().is_success()) {
            let id = HeaderValue::try_from(id.to_string()).expect("a UUID is a header value");
            response.headers_mut().insert(USAGE_ID_HEADER, id);
        }
        response
    }
}

fn with_content_type(mut response: Response, status: StatusCode, content_type: Option<HeaderValue>) -> Response {
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}
