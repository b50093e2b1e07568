//! Sessions behind session-mode access tokens: a logout ends the session in Directus while the token's
//! signature stays valid, so only Directus can say whether the token still counts.

use reqwest::{Method, StatusCode};

use super::{DirectusClient, DirectusError};

impl DirectusClient {
    /// Asks Directus, as the token's own user, who they are: it answers only while the session lives. `false`
    /// when Directus refuses the token (logged out, session expired or revoked).
    pub async fn session_is_live(&self, access_token: &str) -> Result<bool, DirectusError> {
        let request = self.request_as(Method::GET, "/users/me", access_token).query(&[("fields", "id")]);
        match self.send(request).await {
            Ok(_) => Ok(true),
            Err(DirectusError::Status { status: StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }
}
