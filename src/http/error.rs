//! The one place where errors become HTTP responses: `{"error":{"code","message"}}` with a stable code.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::routing::{ByokAccessDenied, Refusal};
use crate::services::callers::CallerError;
use crate::services::flag_store::FlagsUnavailable;
use crate::services::key_vault::VaultError;

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
    FlagsUnavailable(#[from] FlagsUnavailable),
    #[error("Directus is unavailable")]
    DirectusUnavailable,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request timed out")]
    Timeout,
    /// Something that should not happen; details go to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
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
                    Refusal::InsufficientCredits | Refusal::NoCreditsOrKey { .. } => S::PAYMENT_REQUIRED,
                    Refusal::ByokNotConfigured => S::SERVICE_UNAVAILABLE,
                };
                (status, refusal.code(), refusal.to_string().into())
            }
            ApiError::ByokAccess(denied) => match denied {
                ByokAccessDenied::Disabled => (S::NOT_FOUND, "byok_disabled", denied.to_string().into()),
                ByokAccessDenied::TierTooLow { .. } => (S::FORBIDDEN, "premium_required", denied.to_string().into()),
            },
            ApiError::Vault(error) => vault_parts(error),
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
            ApiError::Internal(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal", "Something went wrong on our side. Retry shortly.".into())
            }
        }
    }
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
            ApiError::Vault(VaultError::Directus(e)) => tracing::error!(code, error = %e, "request failed"),
            ApiError::FlagsUnavailable(e) => tracing::warn!(code, error = %e, "request failed"),
            _ if status.is_server_error() => tracing::warn!(code, "request failed"),
            _ => tracing::debug!(code, "request refused"),
        }
        let mut response = (status, Json(json!({"error": {"code": code, "message": message}}))).into_response();
        if status == StatusCode::UNAUTHORIZED && code == "unauthorized" {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
