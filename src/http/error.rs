//! The one place where errors become HTTP responses: `{"error":{"code","message"}}` with a stable code.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::directus::DirectusError;
use crate::domain::jobs::JobError;
use crate::domain::provider::UnknownProvider;
use crate::domain::routing::{ByokAccessDenied, Refusal};
use crate::domain::sign_in::SignInRefusal;
use crate::http::guard::BodyRefused;
use crate::services::callers::CallerError;
use crate::services::flag_store::FlagsUnavailable;
use crate::services::gateway::GatewayError;
use crate::services::jobs::{JobCap, JobsError};
use crate::services::key_vault::VaultError;
use crate::services::standing::ContextError;

/// When a client may look again at an account locked here: it opens once the user signs in elsewhere.
const SIGN_IN_LOCKED_RETRY: std::time::Duration = std::time::Duration::from_secs(3_600);
/// When a client at a job cap may look again: jobs finish in seconds to minutes.
const JOB_CAP_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// `{"error": {"code", "message"}}`: the shape of every error answer, for the OpenAPI document. Some codes
/// add fields beside `code` and `message` (`insufficient_credits`: `needed_cents`, `available_cents`).
#[derive(utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs to switch on.
    pub code: String,
    /// For people; never echoes request data or secrets.
    pub message: String,
}

/// The code of an error response, left on the response for the metrics layer.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Every token problem gets this one answer, so a caller cannot tell which check failed.
    #[error("unauthorized")]
    Unauthorized,
    #[error("invalid webhook signature")]
    BadSignature,
    #[error("{message}")]
    BadRequest { status: StatusCode, code: &'static str, message: Cow<'static, str> },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    ByokAccess(#[from] ByokAccessDenied),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("account is not active")]
    AccountInactive,
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    FlagsUnavailable(#[from] FlagsUnavailable),
    #[error("Directus is unavailable")]
    DirectusUnavailable,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request timed out")]
    Timeout,
    /// A per-user limit on one of our own endpoints.
    #[error("too many requests")]
    TooManyRequests { retry_after: std::time::Duration },
    /// A sign-in attempt held back (client address, or the account's failures in a row).
    #[error("sign-in attempt refused")]
    SignIn(SignInRefusal),
    /// The user has as many requests in flight as one user may.
    #[error("too many requests in flight")]
    RequestsInFlight(u32),
    /// The request's body came too slowly, or the process holds as many body bytes as it may.
    #[error(transparent)]
    BodyRefused(BodyRefused),
    /// The user keeps as many jobs (or bytes of them) as they may.
    #[error(transparent)]
    JobCapReached(JobCap),
    /// The job queue's storage failed (the store's disk, or Redis).
    #[error("job queue unavailable: {0}")]
    JobsUnavailable(JobsError),
    /// Something that should not happen; details go to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn from_directus(error: DirectusError) -> Self {
        if error.is_outage() { ApiError::DirectusUnavailable } else { ApiError::Internal(error.to_string()) }
    }

    /// How long a client should wait before retrying, where we know.
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ApiError::Gateway(GatewayError::RateLimited { retry_after })
            | ApiError::Gateway(GatewayError::OwnKeyRateLimited { retry_after })
            | ApiError::Gateway(GatewayError::ProviderRateLimited { retry_after, .. }) => Some(*retry_after),
            ApiError::Gateway(GatewayError::TooManyCalls(_)) => Some(std::time::Duration::from_secs(1)),
            ApiError::Gateway(GatewayError::Unavailable { retry_after, .. }) => {
                Some(retry_after.unwrap_or(std::time::Duration::from_secs(30)))
            }
            ApiError::Gateway(GatewayError::Busy) => Some(std::time::Duration::from_secs(1)),
            ApiError::TooManyRequests { retry_after } => Some(*retry_after),
            ApiError::JobCapReached(_) => Some(JOB_CAP_RETRY),
            ApiError::SignIn(SignInRefusal::Address { retry_after } | SignInRefusal::Spacing { retry_after }) => {
                Some(*retry_after)
            }
            ApiError::SignIn(SignInRefusal::Locked) => Some(SIGN_IN_LOCKED_RETRY),
            ApiError::RequestsInFlight(_) | ApiError::BodyRefused(BodyRefused::Busy) => {
                Some(std::time::Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    fn refusal(&self) -> Option<Refusal> {
        match self {
            ApiError::Refused(refusal) | ApiError::Gateway(GatewayError::Refused(refusal)) => Some(*refusal),
            _ => None,
        }
    }

    /// A provider name that is not one we route to: 400 in a body, 404 in a path.
    pub fn unknown_provider(status: StatusCode) -> Self {
        ApiError::BadRequest {
            status,
            code: "unknown_provider",
            message: "Unknown provider. Use \"openai\" or \"anthropic\".".into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::BadRequest { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str, Cow<'static, str>) {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized => (
                S::UNAUTHORIZED,
                "unauthorized",
                "Missing or invalid access token. Log in again and retry with a fresh token.".into(),
            ),
            ApiError::BadSignature => {
                (S::UNAUTHORIZED, "invalid_signature", "Webhook signature missing, invalid or expired.".into())
            }
            ApiError::BadRequest { status, code, message } => (*status, code, message.clone()),
            ApiError::Refused(refusal) => {
                let status = match refusal {
                    Refusal::ByokKeyRequired { .. } | Refusal::ByokRequiresUpgrade { .. } => S::FORBIDDEN,
                    Refusal::InsufficientCredits { .. } | Refusal::NoCreditsOrKey { .. } => S::PAYMENT_REQUIRED,
                    Refusal::ByokNotConfigured => S::SERVICE_UNAVAILABLE,
                };
                (status, refusal.code(), refusal.to_string().into())
            }
            ApiError::ByokAccess(denied) => match denied {
                ByokAccessDenied::Disabled => (S::NOT_FOUND, "byok_disabled", denied.to_string().into()),
                ByokAccessDenied::TierTooLow { .. } => (S::FORBIDDEN, "premium_required", denied.to_string().into()),
            },
            ApiError::Vault(error) => vault_parts(error),
            ApiError::Gateway(error) => gateway_parts(error),
            ApiError::AccountInactive => (
                S::FORBIDDEN,
                "account_inactive",
                "Your account is not active. Contact support if you think this is a mistake.".into(),
            ),
            ApiError::FlagsUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "flags_unavailable",
                "AI features are temporarily unavailable while the service starts up. Retry in a moment.".into(),
            ),
            ApiError::DirectusUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "account_service_unavailable",
                "AI features are temporarily unavailable because account data cannot be read. Retry shortly.".into(),
            ),
            ApiError::NotFound => (S::NOT_FOUND, "not_found", "No such endpoint.".into()),
            ApiError::MethodNotAllowed => {
                (S::METHOD_NOT_ALLOWED, "method_not_allowed", "This endpoint does not accept that method.".into())
            }
            ApiError::Timeout => {
                (S::SERVICE_UNAVAILABLE, "timeout", "The request took too long. Retry shortly.".into())
            }
            ApiError::TooManyRequests { .. } => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests of this kind. Wait for the time in Retry-After, then retry.".into(),
            ),
            ApiError::SignIn(SignInRefusal::Address { .. }) => (
                S::TOO_MANY_REQUESTS,
                "too_many_sign_in_attempts",
                "Too many sign-in attempts from your network. Wait for the time in Retry-After, then try again.".into(),
            ),
            ApiError::SignIn(SignInRefusal::Spacing { .. }) => (
                S::TOO_MANY_REQUESTS,
                "too_many_sign_in_attempts",
                "Too many failed sign-ins for this account. Wait for the time in Retry-After, then try again.".into(),
            ),
            ApiError::SignIn(SignInRefusal::Locked) => (
                S::TOO_MANY_REQUESTS,
                "sign_in_locked",
                "This account had too many failed sign-ins here, so this page stops trying to protect it from \
                 being locked. Sign in to the app itself (or reset your password there); this page lets you in \
                 again once you have."
                    .into(),
            ),
            ApiError::RequestsInFlight(most) => (
                S::TOO_MANY_REQUESTS,
                "too_many_requests_in_flight",
                format!("You have {most} requests in progress, the most one account may. Wait for one to finish.")
                    .into(),
            ),
            ApiError::BodyRefused(BodyRefused::TooSlow) => (
                S::REQUEST_TIMEOUT,
                "body_timeout",
                "The request body arrived too slowly and was not read. Send it again over a faster connection.".into(),
            ),
            ApiError::BodyRefused(BodyRefused::Busy) => (
                S::SERVICE_UNAVAILABLE,
                "server_busy",
                "The service is receiving too many large requests right now. Retry in a moment.".into(),
            ),
            ApiError::JobCapReached(JobCap::Waiting(most)) => (
                S::TOO_MANY_REQUESTS,
                "job_queue_full",
                format!(
                    "You have {most} background requests waiting, the most allowed. Wait for some to finish, or \
                     cancel some, then submit again."
                )
                .into(),
            ),
            ApiError::JobCapReached(JobCap::StoredBytes(most)) => (
                S::TOO_MANY_REQUESTS,
                "job_storage_full",
                format!(
                    "Your background requests hold {} MiB, the most kept for one account. Finished ones are removed \
                     after their retention; cancel waiting ones or submit smaller requests.",
                    most / (1024 * 1024)
                )
                .into(),
            ),
            ApiError::JobsUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "jobs_unavailable",
                "The job queue is unavailable right now. Retry shortly.".into(),
            ),
            ApiError::Internal(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal", "Something went wrong on our side. Retry shortly.".into())
            }
        }
    }
}

fn gateway_parts(error: &GatewayError) -> (StatusCode, &'static str, Cow<'static, str>) {
    use StatusCode as S;
    match error {
        GatewayError::Context(e) => ApiError::from(e.clone()).parts(),
        GatewayError::Refused(refusal) => ApiError::Refused(*refusal).parts(),
        GatewayError::Vault(e) => vault_parts(e),
        GatewayError::RateLimited { .. } => (
            S::TOO_MANY_REQUESTS,
            "rate_limited",
            "You are sending requests faster than your plan allows. Wait a moment and retry, or add your own \
             API key to remove the limit."
                .into(),
        ),
        GatewayError::OwnKeyRateLimited { .. } => (
            S::TOO_MANY_REQUESTS,
            "rate_limited",
            "You are sending requests with your own API key faster than this platform allows. Wait for the time \
             in Retry-After, then retry."
                .into(),
        ),
        GatewayError::TooManyCalls(most) => (
            S::TOO_MANY_REQUESTS,
            "too_many_concurrent_calls",
            format!(
                "You have {most} AI requests running at once, the most one account may. Wait for one to finish, \
                 then retry."
            )
            .into(),
        ),
        GatewayError::ProviderRateLimited { provider, .. } => (
            S::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            format!(
                "{} is rate limiting these requests. Retry after the time in Retry-After.",
                provider.display_name()
            )
            .into(),
        ),
        GatewayError::KeyInvalid(provider) => (
            S::FORBIDDEN,
            "provider_key_invalid",
            format!(
                "{} rejected your API key. Create a new one at {} and save it under \"Your API keys\" on your account page.",
                provider.display_name(),
                provider.key_page_url()
            )
            .into(),
        ),
        GatewayError::KeyQuotaExhausted(provider) => (
            S::PAYMENT_REQUIRED,
            "provider_quota_exhausted",
            format!(
                "Your {} account has no quota or credit left. Add credit at {}, then retry.",
                provider.display_name(),
                provider.billing_url()
            )
            .into(),
        ),
        GatewayError::Busy => (
            S::SERVICE_UNAVAILABLE,
            "gateway_busy",
            "Too many AI requests are running right now. Retry in a moment.".into(),
        ),
        GatewayError::CutOff(_) => (
            S::BAD_GATEWAY,
            "upstream_error",
            "The AI provider's answer broke off on its way. It bills the generation all the same, so the call \
             was charged its whole budget; please retry."
                .into(),
        ),
        GatewayError::Timeout(provider) => (
            S::GATEWAY_TIMEOUT,
            "ai_timeout",
            format!(
                "{} did not finish answering in time. It bills the generation all the same, so the call was \
                 charged its whole budget (the prompt and its max_tokens). Ask for a shorter answer (a lower \
                 max_tokens), or use streaming (\"stream\": true) for long ones.",
                provider.display_name()
            )
            .into(),
        ),
        GatewayError::SpecialServiceTier(provider) => (
            S::UNPROCESSABLE_ENTITY,
            "service_tier_not_available",
            format!(
                "Priority, flex and scale processing (service_tier) are not available on platform credits. Remove \
                 service_tier, or use your own {} API key for it.",
                provider.display_name()
            )
            .into(),
        ),
        GatewayError::Unavailable { provider, .. } => (
            S::SERVICE_UNAVAILABLE,
            "ai_unavailable",
            format!(
                "AI features are temporarily unavailable ({} is not responding). Everything else keeps working; \
                 retry in a little while.",
                provider.display_name()
            )
            .into(),
        ),
    }
}

/// A gateway error as a job records it: the code and message the live gateway would have answered with.
pub fn job_error(error: GatewayError) -> JobError {
    let (_, code, message) = gateway_parts(&error);
    JobError::new(code, message)
}

fn vault_parts(error: &VaultError) -> (StatusCode, &'static str, Cow<'static, str>) {
    use StatusCode as S;
    match error {
        VaultError::NotConfigured => (
            S::SERVICE_UNAVAILABLE,
            "byok_not_configured",
            "Saving your own API keys is not available: key storage is not configured on this platform. \
             Please contact support."
                .into(),
        ),
        VaultError::Format(e) => (S::UNPROCESSABLE_ENTITY, "invalid_key_format", e.to_string().into()),
        VaultError::RejectedByProvider(p) => (
            S::UNPROCESSABLE_ENTITY,
            "key_rejected",
            format!(
                "{} rejected this API key: it may be mistyped, revoked or lack permissions. Create a new key at {} \
                 and try again.",
                p.display_name(),
                p.key_page_url()
            )
            .into(),
        ),
        VaultError::NotFound => (S::NOT_FOUND, "key_not_found", "You have no saved key for this provider.".into()),
        VaultError::Unusable(p) => (
            S::CONFLICT,
            "key_unusable",
            format!("We can no longer read your saved {} key. Please enter it again.", p.display_name()).into(),
        ),
        VaultError::Directus(e) if e.is_outage() => ApiError::DirectusUnavailable.parts(),
        VaultError::Directus(_) => ApiError::Internal(String::new()).parts(),
    }
}

impl From<UnknownProvider> for ApiError {
    fn from(_: UnknownProvider) -> Self {
        ApiError::unknown_provider(StatusCode::BAD_REQUEST)
    }
}

impl From<ContextError> for ApiError {
    fn from(error: ContextError) -> Self {
        match error {
            ContextError::Flags(e) => ApiError::FlagsUnavailable(e),
            ContextError::Caller(e) => ApiError::from(e),
            ContextError::AccountInactive => ApiError::AccountInactive,
        }
    }
}

impl From<CallerError> for ApiError {
    fn from(error: CallerError) -> Self {
        match error {
            // A valid token for a user who no longer exists.
            CallerError::UnknownUser => ApiError::Unauthorized,
            CallerError::Directus(e) if e.is_outage() => ApiError::DirectusUnavailable,
            CallerError::Directus(e) => ApiError::Internal(format!("reading the caller from Directus: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        match &self {
            ApiError::Internal(detail) => tracing::error!(code, detail, "request failed"),
            ApiError::JobsUnavailable(e) => tracing::error!(code, error = %e, "request failed"),
            ApiError::Vault(VaultError::Directus(e)) => tracing::error!(code, error = %e, "request failed"),
            ApiError::Gateway(e) if status.is_server_error() => tracing::warn!(code, error = %e, "request failed"),
            ApiError::FlagsUnavailable(e) => tracing::warn!(code, error = %e, "request failed"),
            _ if status.is_server_error() => tracing::warn!(code, "request failed"),
            _ => tracing::debug!(code, "request refused"),
        }
        let mut error = json!({"code": code, "message": message});
        if let Some(Refusal::InsufficientCredits { needed, available }) = self.refusal() {
            error["needed_cents"] = json!(needed);
            error["available_cents"] = json!(available);
        }
        let mut response = (status, Json(json!({"error": error}))).into_response();
        if let Some(wait) = self.retry_after() {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED && code == "unauthorized" {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}
