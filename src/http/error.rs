//! The one place where errors become HTTP responses: `{"error":{"code","message"}}` with a stable code.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::routing::Refusal;
use crate::services::callers::CallerError;
use crate::services::flag_store::FlagsUnavailable;

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
