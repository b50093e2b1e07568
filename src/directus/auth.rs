//! Signing in to Directus for the account page, which talks only to the sidecar (one origin: Directus needs
//! no CORS for it). Email and password, or a refresh token, pass straight through to Directus's own
//! `/auth/*` endpoints in JSON mode; nothing here is logged, cached or kept.

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::{DirectusClient, DirectusError};

/// What Directus issues on sign-in or refresh. Secret types: never printed, zeroized on drop.
#[derive(Deserialize)]
pub struct SessionTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// Milliseconds until the access token expires.
    pub expires: u64,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens").field("expires", &self.expires).finish_non_exhaustive()
    }
}

/// Why Directus would not sign someone in.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong email or password, a suspended user, an expired or revoked refresh token: Directus does not
    /// say which, and neither do we.
    #[error("Directus refused the credentials")]
    Refused,
    /// The account has two-factor authentication: the code is needed.
    #[error("a one-time password is required")]
    OtpRequired,
    #[error(transparent)]
    Directus(#[from] DirectusError),
}

impl DirectusClient {
    pub async fn sign_in(
        &self,
        email: &str,
        password: &SecretString,
        otp: Option<&str>,
    ) -> Result<SessionTokens, SignInError> {
        let mut body = json!({"email": email, "password": password.expose_secret(), "mode": "json"});
        if let Some(otp) = otp {
            body["otp"] = json!(otp);
        }
        self.auth("/auth/login", &body).await
    }

    pub async fn refresh_session(&self, refresh_token: &SecretString) -> Result<SessionTokens, SignInError> {
        self.auth("/auth/refresh", &json!({"refresh_token": refresh_token.expose_secret(), "mode": "json"})).await
    }

    /// Ends the session behind `refresh_token`; an unknown or already ended one is not an error.
    pub async fn sign_out(&self, refresh_token: &SecretString) -> Result<(), DirectusError> {
        let body = json!({"refresh_token": refresh_token.expose_secret(), "mode": "json"});
        match self.send(self.anonymous(Method::POST, "/auth/logout").json(&body)).await {
            Ok(_) => Ok(()),
            Err(DirectusError::Status { status, .. }) if status.is_client_error() => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn auth(&self, path: &str, body: &serde_json::Value) -> Result<SessionTokens, SignInError> {
        match self.data(self.anonymous(Method::POST, path).json(body)).await {
            Ok(tokens) => Ok(tokens),
            Err(DirectusError::Status { code: Some(code), .. }) if code == "INVALID_OTP" => {
                Err(SignInError::OtpRequired)
            }
            Err(DirectusError::Status {
                status: StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST,
                ..
            }) => Err(SignInError::Refused),
            Err(error) => Err(error.into()),
        }
    }
}
