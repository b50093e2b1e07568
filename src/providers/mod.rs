//! Calls to the LLM providers. Base URLs come only from operator configuration, never from a request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;
use reqwest::{Client, RequestBuilder, Response, Url};

use crate::domain::llm::Api;
use crate::domain::provider::{ApiStyle, AuthScheme, PerProvider, Provider};
use crate::domain::provider_key::ProviderKey;
use crate::domain::upstream::{self, UpstreamFailure};

/// Anthropic requires an API version header; this is the one its SDKs send.
const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Clone)]
pub struct ProviderClient {
    /// Key checks: one bounded round trip.
    http: Client,
    /// Forwarded streams: no total timeout (answers stream for minutes), but a bound on silence between reads,
    /// waiting for the response headers included.
    streaming: Client,
    /// Forwarded non-streaming calls: the provider says nothing until it has generated the whole answer, so
    /// the bound on silence is the generation timeout.
    generating: Client,
    timeout: Duration,
    generation_timeout: Duration,
    /// Each provider's API root, from operator configuration only.
    bases: Arc<PerProvider<Url>>,
}

/// What the provider said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Valid,
    /// The provider answered with an error that is about the key (invalid, out of quota, rate limited...).
    Failed(UpstreamFailure),
    /// No answer: timeout, connection refused, DNS. Says nothing about the key.
    Unreachable,
}

impl ProviderClient {
    pub fn new(bases: PerProvider<Url>, timeout: Duration, generation_timeout: Duration) -> Self {
        // Redirects are never followed: reqwest keeps every header but `authorization` on the way to another
        // host, so a provider (or a base URL) answering one would carry an `x-api-key` or `api-key` key and the
        // prompt wherever it points. A provider's API does not redirect; one that does is misconfigured.
        let builder = || {
            Client::builder()
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("byok-bridge/", env!("CARGO_PKG_VERSION")))
        };
        let http = builder().timeout(timeout).build().expect("a TLS backend and resolver are available");
        let streaming = builder().read_timeout(timeout).build().expect("a TLS backend and resolver are available");
        let generating =
            builder().read_timeout(generation_timeout).build().expect("a TLS backend and resolver are available");
        ProviderClient { http, streaming, generating, timeout, generation_timeout, bases: Arc::new(bases) }
    }

    /// `path` relative to the provider's API root (OpenAI style: `chat/completions` under a root with `/v1`;
    /// Anthropic style: `v1/messages` under a root without), the key sent as the provider declares.
    fn request(
        &self,
        client: &Client,
        provider: Provider,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> RequestBuilder {
        let mut url = self.bases.get(provider).clone();
        let prefix = url.path().trim_end_matches('/');
        let joined = format!("{prefix}/{path}");
        url.set_path(&joined);
        let request = client.request(method, url);
        let header = match provider.auth() {
            AuthScheme::Bearer => return request.bearer_auth(key),
            AuthScheme::XApiKey => "x-api-key",
            AuthScheme::ApiKey => "api-key",
        };
        let Ok(mut value) = HeaderValue::from_str(key) else {
            // Unreachable for parsed keys; an operator's internal key with a stray byte fails upstream.
            return request;
        };
        value.set_sensitive(true);
        let request = request.header(header, value);
        match provider.style() {
            ApiStyle::Anthropic => request.header("anthropic-version", ANTHROPIC_VERSION),
            ApiStyle::OpenAi => request,
        }
    }

    /// Asks the provider whether the key works, with the cheapest authenticated call it declares (most list
    /// models).
    pub async fn check_key(&self, provider: Provider, key: &ProviderKey) -> KeyCheck {
        let request = self.request(&self.http, provider, reqwest::Method::GET, provider.verify_path(), key.expose());
        checked(provider, request).await
    }

    /// Asks the provider whether the key's account can pay for a call: a one-token answer from its declared
    /// `quota_model` (a few millionths of a dollar, billed to that account). Listing models, the usual check,
    /// passes for an account with no credit left, so it cannot tell that a user has topped up. A provider
    /// declaring no such model gets the usual check.
    pub async fn check_quota(&self, provider: Provider, key: &ProviderKey) -> KeyCheck {
        let Some(model) = provider.quota_model() else { return self.check_key(provider, key).await };
        let body =
            serde_json::json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]});
        let path = Api::chat(provider.style()).path();
        let request = self.request(&self.http, provider, reqwest::Method::POST, path, key.expose()).json(&body);
        checked(provider, request).await
    }
}

/// What the provider's answer to a key check says about the key.
async fn checked(provider: Provider, request: RequestBuilder) -> KeyCheck {
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(%provider, error = %error.without_url(), "provider unreachable while checking a key");
            return KeyCheck::Unreachable;
        }
    };
    let status = response.status();
    if status.is_success() {
        return KeyCheck::Valid;
    }
    let body = response.bytes().await.unwrap_or_default();
    KeyCheck::Failed(upstream::classify(provider, status.as_u16(), &body))
}

impl ProviderClient {
    /// Sends a client's request body to its provider with `api_key`. Resolves when the response headers
    /// arrive: within the provider timeout for a stream (headers come at once), within the generation timeout
    /// otherwise. The body is left to the caller to read or stream.
    pub async fn forward(
        &self,
        provider: Provider,
        api: Api,
        api_key: &str,
        body: Bytes,
        stream: bool,
    ) -> Result<Response, ForwardError> {
        let (client, wait) =
            if stream { (&self.streaming, self.timeout) } else { (&self.generating, self.generation_timeout) };
        let request = self
            .request(client, provider, reqwest::Method::POST, api.path(), api_key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, if stream { "text/event-stream" } else { "application/json" })
            .body(body);
        match tokio::time::timeout(wait, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) if error.is_timeout() => Err(ForwardError::Timeout),
            Ok(Err(error)) => Err(ForwardError::Transport(error.without_url())),
            Err(_) => Err(ForwardError::Timeout),
        }
    }
}

/// A forwarded call that got no response: says nothing about the key, counts against the provider.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("provider unreachable: {0}")]
    Transport(reqwest::Error),
    #[error("provider did not answer in time")]
    Timeout,
}
