//! The one place where errors become HTTP responses: `{"error":{"code","message"}}`, with the status, code,
//! message and `Retry-After` each error gives through [`Coded`] (every code is in
//! [`crate::domain::error_code`]).

use std::borrow::Cow;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use crate::directus::DirectusError;
use crate::domain::error_code::{Code, Coded};
use crate::domain::provider::UnknownProvider;
use crate::domain::routing::{ByokAccessDenied, Refusal};
use crate::domain::sign_in::SignInRefusal;
use crate::http::guard::BodyRefused;
use crate::services::call_log::CallLogError;
use crate::services::flag_cache::FlagsUnavailable;
use crate::services::gateway::GatewayError;
use crate::services::jobs::JobsError;
use crate::services::key_vault::VaultError;
use crate::services::payments::PaymentError;
use crate::services::standing::ContextError;

/// `{"error": {"code", "message"}}`: the shape of every error answer, for the OpenAPI document. Some codes
/// add fields beside `code` and `message` (`insufficient_credits`: `needed_cents`, `available_cents`;
/// `budget_exceeded`: `cap`, `limit_cents`, `resets_at`; refusals for credit: `purchase_url` when set).
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
    /// A code of the table, with its default message or one that says more.
    #[error("{message}")]
    Coded { code: Code, message: Cow<'static, str> },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    ByokAccess(#[from] ByokAccessDenied),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Directus(#[from] DirectusError),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Calls(#[from] CallLogError),
    /// A per-user limit on one of our own endpoints.
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration },
    /// A sign-in attempt held back (client address, or the account's failures in a row).
    #[error("sign-in attempt refused")]
    SignIn(SignInRefusal),
    /// The user has as many requests in flight as one user may.
    #[error("too many requests in flight")]
    RequestsInFlight(u32),
    /// The request's body came too slowly, or the process holds as many body bytes as it may.
    #[error(transparent)]
    BodyRefused(BodyRefused),
    /// Something that should not happen; details go to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// `code` with a message that says more than its default.
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Coded { code, message: message.into() }
    }

    /// The error whose code, message and wait this is.
    fn coded(&self) -> &dyn Coded {
        match self {
            ApiError::Coded { code, .. } => code,
            ApiError::Refused(error) => error,
            ApiError::ByokAccess(error) => error,
            ApiError::Vault(error) => error,
            ApiError::Gateway(error) => error,
            ApiError::Context(error) => error,
            ApiError::Directus(error) => error,
            ApiError::Jobs(error) => error,
            ApiError::Payment(error) => error,
            ApiError::Calls(error) => error,
            ApiError::TooManyRequests { .. } => &Code::RateLimited,
            ApiError::SignIn(refusal) => refusal,
            ApiError::RequestsInFlight(_) => &Code::TooManyRequestsInFlight,
            ApiError::BodyRefused(refused) => refused,
            ApiError::Internal(_) => &Code::Internal,
        }
    }

    fn refusal(&self) -> Option<Refusal> {
        match self {
            ApiError::Refused(refusal) | ApiError::Gateway(GatewayError::Refused(refusal)) => Some(*refusal),
            _ => None,
        }
    }
}

impl Coded for ApiError {
    fn code(&self) -> Code {
        self.coded().code()
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            ApiError::Coded { message, .. } => message.clone(),
            ApiError::RequestsInFlight(most) => {
                format!("You have {most} requests in progress, the most one account may. Wait for one to finish.")
                    .into()
            }
            other => other.coded().message(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::TooManyRequests { retry_after } => Some(*retry_after),
            ApiError::RequestsInFlight(_) => Some(Duration::from_secs(1)),
            other => other.coded().retry_after(),
        }
    }
}

impl From<Code> for ApiError {
    fn from(code: Code) -> Self {
        ApiError::Coded { code, message: Cow::Borrowed(code.message()) }
    }
}

impl From<UnknownProvider> for ApiError {
    fn from(_: UnknownProvider) -> Self {
        Code::UnknownProvider.into()
    }
}

impl From<FlagsUnavailable> for ApiError {
    fn from(error: FlagsUnavailable) -> Self {
        ApiError::Context(ContextError::Flags(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code_text = code.as_str();
        match &self {
            ApiError::Internal(detail) => tracing::error!(code = code_text, detail, "request failed"),
            _ if code == Code::Internal => tracing::error!(code = code_text, error = %self, "request failed"),
            // The job queue's storage, or Directus failing the key vault: an operator should hear of these.
            ApiError::Jobs(_) | ApiError::Vault(VaultError::Directus(_)) if status.is_server_error() => {
                tracing::error!(code = code_text, error = %self, "request failed")
            }
            _ if status.is_server_error() => tracing::warn!(code = code_text, error = %self, "request failed"),
            _ => tracing::debug!(code = code_text, "request refused"),
        }
        let mut error = json!({"code": code_text, "message": self.message()});
        if let Some(Refusal::InsufficientCredits { needed, available }) = self.refusal() {
            error["needed_cents"] = json!(needed);
            error["available_cents"] = json!(available);
        }
        if let ApiError::Gateway(GatewayError::Budget(exceeded)) = &self {
            error["cap"] = json!(exceeded.cap_name());
            error["limit_cents"] = json!(exceeded.cap.limit);
            error["resets_at"] = json!(exceeded.resets_at.format(&Rfc3339).unwrap_or_default());
        }
        let mut response = (status, Json(json!({"error": error}))).into_response();
        if let Some(wait) = self.retry_after() {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if code == Code::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(ErrorCode(code_text));
        response
    }
}
