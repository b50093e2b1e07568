//! A small typed client for the Directus REST API, authenticated with the sidecar's static token.
//! One file per resource; this one holds the transport and its error type.

mod auth;
mod flags;
mod keys;
mod notifications;
mod sessions;
mod usage;
mod users;

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::error_code::{Code, Coded};
pub use auth::{SessionTokens, SignInError};
pub use keys::{KeyRecord, KeyUpdate, SealedRow};
pub use notifications::Notification;
pub use usage::{UsageLine, UsageSummary};
pub use users::{EntitledUser, StoredKey, UserProfile};

#[derive(Debug, thiserror::Error)]
pub enum DirectusError {
    /// Connection refused, DNS, timeout: Directus is down or unreachable.
    #[error("Directus unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// Directus answered with an error status; `code` is its `errors[0].extensions.code`.
    #[error("Directus answered {status} ({})", .code.as_deref().unwrap_or("no error code"))]
    Status { status: StatusCode, code: Option<String> },
    #[error("unexpected Directus response: {0}")]
    Decode(String),
}

impl DirectusError {
    /// True when Directus could not be reached or failed on its side, as opposed to refusing the request.
    pub fn is_outage(&self) -> bool {
        match self {
            DirectusError::Unreachable(_) => true,
            DirectusError::Status { status, .. } => status.is_server_error(),
            DirectusError::Decode(_) => false,
        }
    }
}

/// An outage is the account service being unavailable; anything else should not happen.
impl Coded for DirectusError {
    fn code(&self) -> Code {
        if self.is_outage() { Code::AccountServiceUnavailable } else { Code::Internal }
    }
}

#[derive(Clone)]
pub struct DirectusClient {
    http: Client,
    base_url: Url,
    token: SecretString,
}

#[derive(Deserialize)]
struct DataEnvelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    extensions: Option<ErrorExtensions>,
}

#[derive(Deserialize)]
struct ErrorExtensions {
    code: Option<String>,
}

impl DirectusClient {
    pub fn new(base_url: Url, token: SecretString, timeout: Duration) -> Self {
        let http = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .user_agent(concat!("byok-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend and resolver are available");
        DirectusClient { http, base_url, token }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as(method, path, self.token.expose_secret())
    }

    /// A request made with someone else's token (a user's own, to let Directus judge it).
    fn request_as(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        // bearer_auth marks the header sensitive, so it never shows up in Debug output.
        self.anonymous(method, path).bearer_auth(token)
    }

    /// A request with no token at all (signing in).
    fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        let mut url = self.base_url.clone();
        // Keep any path prefix Directus is mounted under (e.g. https://example.com/cms/).
        let prefix = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{prefix}{path}"));
        self.http.request(method, url)
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, DirectusError> {
        let response = request.send().await.map_err(|e| DirectusError::Unreachable(e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = response
            .json::<ErrorEnvelope>()
            .await
            .ok()
            .and_then(|e| e.errors.into_iter().next())
            .and_then(|e| e.extensions)
            .and_then(|x| x.code);
        Err(DirectusError::Status { status, code })
    }

    /// Whether Directus answers at all (`/server/ping`).
    pub async fn ping(&self) -> Result<(), DirectusError> {
        self.send(self.request(Method::GET, "/server/ping")).await.map(drop)
    }

    /// Sends a request and unwraps Directus' `{"data": ...}` envelope.
    async fn data<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, DirectusError> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| DirectusError::Unreachable(e.without_url()))?;
        serde_json::from_slice::<DataEnvelope<T>>(&bytes)
            .map(|e| e.data)
            .map_err(|e| DirectusError::Decode(e.to_string()))
    }
}

/// Directus returns booleans as `true`/`false`, or `1`/`0` from SQLite when a field lacks `cast-boolean`.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Int(i64),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Bool(b) => b,
        Raw::Int(i) => i != 0,
    })
}
