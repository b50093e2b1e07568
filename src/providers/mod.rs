//! Calls to the LLM providers. Base URLs come only from operator configuration, never from a request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use reqwest::{Client, RequestBuilder, Url};

use crate::domain::llm::Api;
use crate::domain::provider::{ApiStyle, AuthScheme, PerProvider, Provider};
use crate::domain::provider_key::ProviderKey;
use crate::domain::upstream::{self, UpstreamFailure};

mod transport;

use transport::Transport;
pub use transport::{Answer, Chunks, TransportError};

/// Anthropic requires an API version header; this is the one its SDKs send.
const ANTHROPIC_VERSION: &str = "2023-06-01";
const USER_AGENT: &str = concat!("byok-bridge/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
pub struct ProviderClient {
    /// Key checks: one bounded round trip.
    http: Client,
    /// Forwarded calls. A stream's bound on silence between reads (waiting for the response headers
    /// included) is the provider timeout: answers stream for minutes. A non-streaming call's is the generation
    /// timeout: the provider says nothing until it has generated the whole answer.
    transport: Transport,
    timeout: Duration,
    generation_timeout: Duration,
    /// Each provider's API root, from operator configuration only.
    bases: Arc<PerProvider<Url>>,
    /// Where each API is forwarded at each provider, made once so that a call clones a URI (a reference count)
    /// instead of joining and parsing a URL; `None` where the joined URL is not a valid request URI.
    forwarded: Arc<PerProvider<[Option<Uri>; Api::ALL.len()]>>,
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
        let connect_timeout = timeout.min(Duration::from_secs(5));
        // Redirects are never followed: reqwest keeps every header but `authorization` on the way to another
        // host, so a provider (or a base URL) answering one would carry an `x-api-key` or `api-key` key and the
        // prompt wherever it points. A provider's API does not redirect; one that does is misconfigured. (The
        // transport of forwarded calls has no redirect layer at all.)
        let http = Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // As the transport: keys and prompts go where the configuration says, not to an environment's proxy.
            .no_proxy()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .build()
            .expect("a TLS backend and resolver are available");
        let transport = Transport::new(connect_timeout);
        let forwarded = PerProvider::from_fn(|provider| {
            Api::ALL.map(|api| joined(bases.get(provider), api.path()).as_str().parse().ok())
        });
        ProviderClient {
            http,
            transport,
            timeout,
            generation_timeout,
            bases: Arc::new(bases),
            forwarded: Arc::new(forwarded),
        }
    }

    /// The key sent as the provider declares, marked sensitive (never logged), and the headers its API style
    /// requires.
    fn auth_headers(provider: Provider, key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let (name, value) = match provider.auth() {
            AuthScheme::Bearer => {
                let bearer = zeroize::Zeroizing::new(format!("Bearer {key}"));
                (header::AUTHORIZATION, HeaderValue::from_str(&bearer))
            }
            AuthScheme::XApiKey => (HeaderName::from_static("x-api-key"), HeaderValue::from_str(key)),
            AuthScheme::ApiKey => (HeaderName::from_static("api-key"), HeaderValue::from_str(key)),
        };
        // Unreachable for parsed keys; an operator's internal key with a stray byte fails upstream.
        if let Ok(mut value) = value {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if provider.style() == ApiStyle::Anthropic {
            headers.insert(HeaderName::from_static("anthropic-version"), HeaderValue::from_static(ANTHROPIC_VERSION));
        }
        headers
    }

    fn request(&self, provider: Provider, method: reqwest::Method, path: &str, key: &str) -> RequestBuilder {
        self.http.request(method, joined(self.bases.get(provider), path)).headers(Self::auth_headers(provider, key))
    }

    /// Asks the provider whether the key works, with the cheapest authenticated call it declares (most list
    /// models).
    pub async fn check_key(&self, provider: Provider, key: &ProviderKey) -> KeyCheck {
        let request = self.request(provider, reqwest::Method::GET, provider.verify_path(), key.expose());
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
        let request = self.request(provider, reqwest::Method::POST, path, key.expose()).json(&body);
        checked(provider, request).await
    }
}

/// `path` relative to a provider's API root (OpenAI style: `chat/completions` under a root with `/v1`;
/// Anthropic style: `v1/messages` under a root without).
fn joined(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = url.path().trim_end_matches('/');
    let joined = format!("{prefix}/{path}");
    url.set_path(&joined);
    url
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
    /// otherwise. The body is left to the caller to read or stream, within the same bound on silence.
    pub async fn forward(
        &self,
        provider: Provider,
        api: Api,
        api_key: &str,
        body: Bytes,
        stream: bool,
    ) -> Result<Answer, ForwardError> {
        let wait = if stream { self.timeout } else { self.generation_timeout };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        let at = Api::ALL.iter().position(|a| *a == api).expect("every API is in Api::ALL");
        *request.uri_mut() = self.forwarded.get(provider)[at].clone().ok_or(ForwardError::BadBase)?;
        let headers = request.headers_mut();
        *headers = Self::auth_headers(provider, api_key);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let accept = if stream { "text/event-stream" } else { "application/json" };
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        match tokio::time::timeout(wait, self.transport.send(request, wait)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(ForwardError::Transport(error)),
            Err(_) => Err(ForwardError::Timeout),
        }
    }
}

/// A forwarded call that got no response: says nothing about the key, counts against the provider.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("provider unreachable: {0}")]
    Transport(TransportError),
    #[error("provider did not answer in time")]
    Timeout,
    /// A base URL that `Url` accepts and `Uri` does not (a configuration checked at startup never gets here).
    #[error("the provider's base URL is not a valid request URI")]
    BadBase,
}
