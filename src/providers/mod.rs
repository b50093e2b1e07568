//! Calls to the LLM providers. Base URLs come only from operator configuration, never from a request.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, Url};

use crate::domain::provider::Provider;
use crate::domain::provider_key::ProviderKey;
use crate::domain::upstream::{self, UpstreamFailure};

/// Anthropic requires an API version header; this is the one its SDKs send.
const ANTHROPIC_VERSION: &str = "2023-06-01";

#[derive(Clone)]
pub struct ProviderClient {
    http: Client,
    openai_base: Url,
    anthropic_base: Url,
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
    pub fn new(openai_base: Url, anthropic_base: Url, timeout: Duration) -> Self {
        let http = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("byok-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend and resolver are available");
        ProviderClient { http, openai_base, anthropic_base }
    }

    /// `path` relative to the provider's API root, e.g. `models` for OpenAI (base includes `/v1`) and
    /// `v1/models` for Anthropic.
    fn request(&self, provider: Provider, method: reqwest::Method, path: &str, key: &ProviderKey) -> RequestBuilder {
        let (base, path) = match provider {
            Provider::OpenAi => (&self.openai_base, path.to_owned()),
            Provider::Anthropic => (&self.anthropic_base, format!("v1/{path}")),
        };
        let mut url = base.clone();
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}/{path}"));
        let request = self.http.request(method, url);
        match provider {
            Provider::OpenAi => request.bearer_auth(key.expose()),
            Provider::Anthropic => {
                let mut value = reqwest::header::HeaderValue::from_str(key.expose())
                    .expect("provider keys are checked to be header-safe ASCII");
                value.set_sensitive(true);
                request.header("x-api-key", value).header("anthropic-version", ANTHROPIC_VERSION)
            }
        }
    }

    /// Asks the provider whether the key works, with the cheapest authenticated call (list models).
    pub async fn check_key(&self, provider: Provider, key: &ProviderKey) -> KeyCheck {
        let response = match self.request(provider, reqwest::Method::GET, "models", key).send().await {
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
}
