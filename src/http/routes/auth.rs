//! Sign-in for the account page, passed through to Directus. The page keeps the tokens in memory only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::directus::{SessionTokens, SignInError};
use crate::domain::error_code::Code;
use crate::domain::sign_in::{Account, SignInRefusal};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ClientAddress, JsonBody, Operator, RequestBody};
use std::sync::Arc;

use crate::directus::DirectusClient;
use crate::services::sign_in::SignInGuard;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    email: String,
    /// Passed to Directus and dropped (zeroized); never logged.
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// The one-time password, for accounts with two-factor authentication.
    otp: Option<String>,
}

impl RequestBody for SignIn {
    const EXPECTED: &'static str = r#"{"email": "...", "password": "...", "otp": "123456" (optional)}"#;
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    #[schema(value_type = String)]
    refresh_token: SecretString,
}

impl RequestBody for Refresh {
    const EXPECTED: &'static str = r#"{"refresh_token": "..."}"#;
}

/// The user's own tokens, handed back to them: the one place a token is in a response body.
#[derive(Serialize, ToSchema)]
pub struct Tokens {
    access_token: String,
    refresh_token: String,
    expires_in_secs: u64,
}

impl From<SessionTokens> for Tokens {
    fn from(tokens: SessionTokens) -> Tokens {
        Tokens {
            access_token: tokens.access_token.expose_secret().to_owned(),
            refresh_token: tokens.refresh_token.expose_secret().to_owned(),
            expires_in_secs: tokens.expires / 1000,
        }
    }
}

fn refused(error: SignInError, message: &'static str) -> ApiError {
    match error {
        SignInError::Refused => ApiError::new(Code::InvalidCredentials, message),
        SignInError::OtpRequired => Code::OtpRequired.into(),
        SignInError::Directus(error) => ApiError::Directus(error),
    }
}

/// Signs in with a Directus account (Directus checks the password). Attempts are throttled per client address
/// and per account first, so the sidecar can never be how an account reaches Directus's suspension limit.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = SignIn,
    responses((status = 200, body = Tokens), (status = 401, body = ErrorBody),
              (status = 429, description = "`too_many_sign_in_attempts` (wait for Retry-After) or `sign_in_locked`", body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn login(
    State(sign_in): State<Arc<SignInGuard>>,
    State(directus): State<DirectusClient>,
    ClientAddress(address): ClientAddress,
    JsonBody(request): JsonBody<SignIn>,
) -> Result<Json<Tokens>, ApiError> {
    let email = request.email.trim();
    if email.is_empty() || email.len() > 254 {
        return Err(ApiError::new(Code::InvalidRequest, "Enter the e-mail address of your account."));
    }
    let account = Account::of_email(email);
    sign_in.admit(&account, address).await.map_err(|refusal| {
        crate::metrics::rate_limited(match refusal {
            SignInRefusal::Address { .. } => "sign_in_address",
            SignInRefusal::Spacing { .. } | SignInRefusal::Locked => "sign_in_account",
        });
        ApiError::SignIn(refusal)
    })?;
    let tokens = directus
        .sign_in(email, &request.password, request.otp.as_deref())
        .await
        .map_err(|e| refused(e, "Wrong e-mail or password."))?;
    sign_in.succeeded(&account).await;
    Ok(Json(tokens.into()))
}

/// A fresh access token for a refresh token (which Directus replaces: use the new one next time).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = Refresh,
    responses((status = 200, body = Tokens), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn refresh(
    State(directus): State<DirectusClient>,
    JsonBody(request): JsonBody<Refresh>,
) -> Result<Json<Tokens>, ApiError> {
    let tokens = directus
        .refresh_session(&request.refresh_token)
        .await
        .map_err(|e| refused(e, "Your session ended. Sign in again."))?;
    Ok(Json(tokens.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unlock {
    email: String,
}

impl RequestBody for Unlock {
    const EXPECTED: &'static str = r#"{"email": "..."}"#;
}

/// Forgets an account's sign-in attempts here, for support: a user locked out of this page (`sign_in_locked`)
/// whose successful sign-in to Directus never reached the sidecar (the hook not installed, say). Directus's own
/// count is not touched: use it only once the user has signed in to Directus, or been given a new password.
#[utoipa::path(post, path = "/v1/admin/sign-in/unlock", tag = "operator", operation_id = "unlock_sign_in",
    security(("operator_token" = [])), request_body = Unlock,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, description = "no `OPERATOR_TOKEN` set", body = ErrorBody)))]
pub async fn unlock(
    _: Operator,
    State(sign_in): State<Arc<SignInGuard>>,
    JsonBody(request): JsonBody<Unlock>,
) -> Result<StatusCode, ApiError> {
    let account = Account::of_email(&request.email);
    sign_in.succeeded(&account).await;
    tracing::info!(account = account.as_str(), "an operator cleared an account's sign-in attempts");
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the session behind the refresh token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = Refresh,
    responses((status = 204), (status = 503, body = ErrorBody)))]
pub async fn logout(
    State(directus): State<DirectusClient>,
    JsonBody(request): JsonBody<Refresh>,
) -> Result<StatusCode, ApiError> {
    directus.sign_out(&request.refresh_token).await.map_err(ApiError::Directus)?;
    Ok(StatusCode::NO_CONTENT)
}
