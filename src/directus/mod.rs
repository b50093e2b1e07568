//! A small typed client for the Directus REST API, authenticated with the sidecar's static token.
//! One file per resource; this one holds the transport and its error type.

mod auth;
mod budgets;
mod flags;
mod keys;
mod notifications;
mod payments;
mod sessions;
mod usage;
mod users;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::error_code::{Code, Coded};
pub use auth::{SessionTokens, SignInError};
pub use keys::{KeyRecord, KeyUpdate, SealedRow};
pub use notifications::Notification;
pub use payments::{Grant, Granted, Written};
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

/// How long an idle connection to Directus is kept: below Node's 5 s keep-alive timeout.
const IDLE_CONNECTION: Duration = Duration::from_secs(4);

#[derive(Clone)]
pub struct DirectusClient {
    http: Client,
    base_url: Url,
    token: SecretString,
    /// When Directus last answered the hook's usage route 404 (shared by clones: they talk to the same
    /// Directus); records then go through the items API, and the route is asked again after a while.
    bulk_usage_missing: Arc<Mutex<Option<Instant>>>,
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
            // Node closes an idle keep-alive connection after 5 s: let go of it first, or a request sent on it
            // as Node closes it fails ("error sending request").
            .pool_idle_timeout(IDLE_CONNECTION)
            .user_agent(concat!("byok-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a TLS backend and resolver are available");
        DirectusClient { http, base_url, token, bulk_usage_missing: Arc::default() }
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
        let unreachable = |e: reqwest::Error| DirectusError::Unreachable(e.without_url());
        let request = request.build().map_err(unreachable)?;
        let again = if request.method() == Method::GET { request.try_clone() } else { None };
        let response = match (self.http.execute(request).await, again) {
            (Ok(response), _) => response,
            // The connection broke as the request went out (Directus closed it, or restarted): a read is safe
            // to send once more, on a new connection.
            (Err(error), Some(again)) if error.is_request() && !error.is_timeout() => {
                self.http.execute(again).await.map_err(unreachable)?
            }
            (Err(error), _) => return Err(unreachable(error)),
        };
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A Directus that drops the first `drop_first` connections as soon as a request arrives on them (as a
    /// closing keep-alive connection does), then answers `/server/ping`. Returns its URL and the requests seen.
    async fn flaky_directus(drop_first: usize) -> (Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                if counter.fetch_add(1, Ordering::SeqCst) < drop_first {
                    continue;
                }
                let body = r#"{"data":"pong"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn client(url: Url) -> DirectusClient {
        DirectusClient::new(url, SecretString::from("token"), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_read_whose_connection_breaks_as_it_goes_out_is_sent_once_more() {
        let (url, seen) = flaky_directus(1).await;
        client(url).ping().await.expect("answered on a new connection");
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_write_is_never_sent_twice() {
        let (url, seen) = flaky_directus(1).await;
        let user = crate::domain::user::UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap();
        let error = client(url).notify(user, "subject", "message").await.expect_err("the write is not repeated");
        assert!(error.is_outage(), "{error}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_read_is_retried_once_only() {
        let (url, seen) = flaky_directus(2).await;
        assert!(client(url).ping().await.is_err());
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }
}
