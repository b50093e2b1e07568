//! Extractors that turn raw requests into parsed, trusted values, or into an `ApiError`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::error::ApiError;
use super::guard::{self, Held};
use crate::auth::AccessTokenVerifier;
use crate::domain::client_address::TrustedProxies;
use crate::domain::error_code::Code;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;
use crate::services::in_flight::InFlight;
use crate::services::sessions::{SessionError, Sessions};

/// What callers are checked against: Directus access tokens (and their sessions), the operator and Flows
/// credentials (as digests), the proxies trusted to name the client, and each user's requests in flight.
pub struct Access {
    pub tokens: AccessTokenVerifier,
    pub sessions: Arc<Sessions>,
    /// SHA-256 of `OPERATOR_TOKEN`: enough to check a presented token, useless to anyone reading memory
    /// dumps of this struct. `None`: operator endpoints are off.
    pub operator_token_digest: Option<[u8; 32]>,
    /// SHA-256 of `FLOWS_TOKEN`: the Directus Flows operation's credential.
    pub flows_token_digest: Option<[u8; 32]>,
    pub trusted_proxies: TrustedProxies,
    pub user_requests: Arc<InFlight<UserId>>,
}

/// The user a verified Directus access token was issued to, or, on the routes Flows may call, the user a
/// Directus Flow acts for (`FLOWS_TOKEN` and `x-byok-on-behalf-of`).
#[derive(Debug, Clone, Copy)]
pub struct AuthenticatedUser(pub UserId);

/// What a Flow may call on a user's behalf (all `POST`): a routing decision, the gateway and queueing a job,
/// nothing about keys, accounts or the user's other jobs.
const FLOW_ROUTES: [&str; 4] = ["/v1/route", "/v1/chat/completions", "/v1/messages", "/v1/jobs"];

/// Left on the request by [`AuthenticatedUser`] when a Directus Flow is the caller.
#[derive(Debug, Clone, Copy)]
pub struct ViaFlow;
const ON_BEHALF_OF: &str = "x-byok-on-behalf-of";

impl<S: Send + Sync> FromRequestParts<S> for AuthenticatedUser
where
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let token = access_token(parts).ok_or(ApiError::from(Code::Unauthorized))?;
        let access = Arc::<Access>::from_ref(state);
        let verified = match access.tokens.verify(token, jsonwebtoken::get_current_timestamp()) {
            Ok(verified) => verified,
            // Not a Directus token: perhaps the Flows credential (hashed only here, off the users' own path).
            Err(_)
                if access
                    .flows_token_digest
                    .as_ref()
                    .is_some_and(|flows| bool::from(Sha256::digest(token.as_bytes()).ct_eq(flows))) =>
            {
                return flow_caller(parts, &access);
            }
            Err(reason) => {
                tracing::debug!(%reason, "access token refused");
                return Err(ApiError::from(Code::Unauthorized));
            }
        };
        if let Some(session) = &verified.session {
            access.sessions.check(session, token).await.map_err(|error| match error {
                SessionError::Ended => {
                    tracing::debug!("session-mode token of an ended session refused");
                    ApiError::from(Code::Unauthorized)
                }
                SessionError::Unconfirmed => ApiError::from(Code::AccountServiceUnavailable),
            })?;
        }
        counted(parts, &access, AuthenticatedUser(verified.user))
    }
}

/// The request counts among its user's requests in flight until it is answered (see [`crate::http::guard`]).
fn counted(parts: &Parts, access: &Access, user: AuthenticatedUser) -> Result<AuthenticatedUser, ApiError> {
    if let Some(held) = parts.extensions.get::<Arc<Held>>() {
        held.user(&access.user_requests, user.0).map_err(|most| {
            crate::metrics::rate_limited("requests_in_flight");
            ApiError::RequestsInFlight(most)
        })?;
    }
    Ok(user)
}

/// A Directus Flow: only on [`FLOW_ROUTES`], and only for the user it names. The same matrix, limits and
/// accounting then apply as for the user's own calls; the log says a Flow made the call.
fn flow_caller(parts: &mut Parts, access: &Access) -> Result<AuthenticatedUser, ApiError> {
    let route = parts.extensions.get::<axum::extract::MatchedPath>().map(axum::extract::MatchedPath::as_str);
    if parts.method != axum::http::Method::POST || !route.is_some_and(|r| FLOW_ROUTES.contains(&r)) {
        tracing::warn!(route, "the Flows credential was presented to a route Flows may not call");
        return Err(ApiError::from(Code::Unauthorized));
    }
    let user = parts
        .headers
        .get(ON_BEHALF_OF)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| UserId::parse(v.trim()).ok())
        .ok_or_else(|| {
            ApiError::new(Code::InvalidRequest, "A Flow names the user it acts for in x-byok-on-behalf-of (a user id).")
        })?;
    tracing::info!(%user, caller = "directus_flow", "a Directus Flow calls on a user's behalf");
    parts.extensions.insert(ViaFlow);
    counted(parts, access, AuthenticatedUser(user))
}

/// An operator presenting `OPERATOR_TOKEN`. Without one configured, operator endpoints do not exist.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator
where
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let access = Arc::<Access>::from_ref(state);
        let expected = access.operator_token_digest.as_ref().ok_or(ApiError::from(Code::NotFound))?;
        let token = bearer_token(parts).ok_or(ApiError::from(Code::Unauthorized))?;
        // Comparing digests keeps the comparison constant-time and length-independent.
        let presented = Sha256::digest(token.as_bytes());
        if bool::from(presented.ct_eq(expected)) { Ok(Operator) } else { Err(ApiError::from(Code::Unauthorized)) }
    }
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The access token as OpenAI clients send it (`Authorization: Bearer`) or as Anthropic clients do
/// (`x-api-key`), so both official SDKs work with the token as their API key.
fn access_token(parts: &Parts) -> Option<&str> {
    bearer_token(parts).or_else(|| parts.headers.get("x-api-key")?.to_str().ok().map(str::trim))
}

/// The client's address: the socket's peer, or the address a trusted proxy names (see
/// [`crate::domain::client_address`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress
where
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(ApiError::Internal("the connection's peer address is not known".into()));
        };
        let forwarded = parts.headers.get_all("x-forwarded-for").into_iter().filter_map(|v| v.to_str().ok());
        Ok(ClientAddress(Arc::<Access>::from_ref(state).trusted_proxies.client(peer.ip(), forwarded)))
    }
}

/// A provider named in the path (`/v1/keys/{provider}`); anything else is a 404, like an unknown route.
#[derive(Debug, Clone, Copy)]
pub struct ProviderPath(pub Provider);

impl<S: Send + Sync> FromRequestParts<S> for ProviderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let not_found = || ApiError::from(Code::UnknownProviderInPath);
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| not_found())?;
        raw.parse().map(ProviderPath).map_err(|_| not_found())
    }
}

/// Describes the body a JSON endpoint expects. Error messages quote this instead of the parser's text,
/// which could echo part of the request (and a request may carry a secret).
pub trait RequestBody: DeserializeOwned {
    const EXPECTED: &'static str;
}

/// `Json<T>` whose rejections are our JSON errors.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(&rejection, T::EXPECTED)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection, expected: &'static str) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => Code::UnsupportedMediaType.into(),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(Code::InvalidJson, format!("The body is not valid JSON. Expected {expected}."))
        }
        JsonRejection::JsonDataError(_) => {
            ApiError::new(Code::InvalidRequestShape, format!("The body has the wrong shape. Expected {expected}."))
        }
        JsonRejection::BytesRejection(b) => bytes_rejection(b),
        _ => ApiError::new(Code::InvalidRequest, format!("The body could not be read. Expected {expected}.")),
    }
}

/// A JSON body read whole but not yet parsed, for endpoints that parse it borrowed ([`from_json`]): a value
/// kept as raw text (an LLM request inside a job) is then a slice of these bytes, never a tree.
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json);
        if !json {
            return Err(Code::UnsupportedMediaType.into());
        }
        Bytes::from_request(req, state).await.map(JsonBytes).map_err(|r| bytes_rejection(&r))
    }
}

/// `application/json`, or a `+json` type, as axum's `Json` accepts.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses `raw` as `T`, borrowing from it where `T` asks to; errors are ours and never quote the body.
pub fn from_json<'a, T: serde::Deserialize<'a>>(raw: &'a [u8], expected: &'static str) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => {
            ApiError::new(Code::InvalidRequest, format!("The body has the wrong shape. Expected {expected}."))
        }
        _ => ApiError::new(Code::InvalidJson, format!("The body is not valid JSON. Expected {expected}.")),
    })
}

/// The raw body, for endpoints that must see the exact bytes (webhook signatures).
pub struct RawBody(pub Bytes);

/// How large an LLM request body may be (`MAX_LLM_BODY_BYTES`): conversations and base64 images are far larger
/// than our own JSON documents.
#[derive(Debug, Clone, Copy)]
pub struct LlmBodyLimit(pub usize);

/// An LLM request's body, read up to [`LlmBodyLimit`]. The limit is applied here rather than by a
/// `DefaultBodyLimit` layer: a layer is one more boxed service to clone on every gateway call.
pub struct LlmBody(pub Bytes);

impl<S> FromRequest<S> for LlmBody
where
    S: Send + Sync,
    LlmBodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, ApiError> {
        let LlmBodyLimit(limit) = LlmBodyLimit::from_ref(state);
        DefaultBodyLimit::max(limit).apply(&mut req);
        Bytes::from_request(req, state).await.map(LlmBody).map_err(|r| bytes_rejection(&r))
    }
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|r| bytes_rejection(&r))
    }
}

fn bytes_rejection(rejection: &BytesRejection) -> ApiError {
    if let Some(refused) = guard::refusal(rejection) {
        return ApiError::BodyRefused(refused);
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Code::PayloadTooLarge.into()
    } else {
        ApiError::new(Code::InvalidRequest, "The body could not be read.")
    }
}

/// A list's `after`: the `next` of the page before, an id (`what` names it in the error).
pub fn page_after(raw: Option<&str>, what: &str) -> Result<Option<Uuid>, ApiError> {
    raw.map(|raw| {
        Uuid::parse_str(raw).map_err(|_| {
            ApiError::new(Code::InvalidRequest, format!("after must be the next of a previous page ({what})."))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use super::*;

    /// A body sent in chunks, with no length announced: only counting what arrives can bound it.
    fn chunked(chunks: usize) -> Request {
        let pieces = (0..chunks).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 1024])));
        Request::new(Body::from_stream(futures_util::stream::iter(pieces)))
    }

    #[tokio::test]
    async fn an_llm_body_is_read_up_to_its_limit_however_it_is_sent() {
        let limit = LlmBodyLimit(4 * 1024);
        let LlmBody(body) = LlmBody::from_request(chunked(4), &limit).await.map_err(|_| "refused").unwrap();
        assert_eq!(body.len(), 4 * 1024);

        let Err(refused) = LlmBody::from_request(chunked(5), &limit).await else { panic!("a body over the limit") };
        assert_eq!(refused.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
