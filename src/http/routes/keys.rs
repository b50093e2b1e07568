//! A user's own provider keys. Only the verified token decides whose keys these are.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::provider::Provider;
use crate::domain::routing;
use crate::domain::user::UserId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBody, ProviderPath, RequestBody};
use std::sync::Arc;

use axum::extract::FromRef;

use crate::http::limits::{Endpoint, EndpointLimits};
use crate::http::state::AppState;
use crate::services::gateway::KeyEvents;
use crate::services::jobs::Jobs;
use crate::services::key_vault::KeySummary;
use crate::services::key_vault::KeyVault;
use crate::services::standing::CallContext;
use crate::services::standing::Standings;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveKey {
    /// Zeroized when the request is done; never logged.
    #[schema(value_type = String, format = Password)]
    api_key: SecretString,
}

impl RequestBody for SaveKey {
    const EXPECTED: &'static str = r#"{"api_key": "<your provider API key>"}"#;
}

/// What the key endpoints work with: entitlement, the vault, the per-user check limit, and what a key change
/// sets off (routing on every replica, the user's paused jobs).
pub struct KeyDesk {
    standings: Arc<Standings>,
    vault: Arc<KeyVault>,
    limits: Arc<EndpointLimits>,
    key_events: Arc<KeyEvents>,
    jobs: Arc<Jobs>,
}

impl FromRef<AppState> for KeyDesk {
    fn from_ref(state: &AppState) -> Self {
        KeyDesk {
            standings: FromRef::from_ref(state),
            vault: FromRef::from_ref(state),
            limits: FromRef::from_ref(state),
            key_events: FromRef::from_ref(state),
            jobs: FromRef::from_ref(state),
        }
    }
}

impl KeyDesk {
    /// BYOK must be enabled and the user's tier entitled; the account must be active.
    async fn require_byok_access(&self, user: UserId) -> Result<(), ApiError> {
        let CallContext { flags, caller } = self.standings.context(user).await?;
        Ok(routing::byok_access(&flags.snapshot.flags, caller.profile.tier)?)
    }

    /// Saving and verifying ask the provider from the platform's address: a user may not turn that into a key
    /// tester.
    async fn limit_key_checks(&self, user: UserId) -> Result<(), ApiError> {
        self.limits.check(Endpoint::KeyChecks, user).await
    }

    /// Routing sees the change at once, on every replica, and a later failure of the new key is a new
    /// incident to notify; a key that works again lets the user's jobs paused on it run.
    async fn key_changed(&self, user: UserId, provider: Provider, key: Option<&KeySummary>) {
        self.key_events.changed(user, provider).await;
        if key.is_some_and(|key| key.status.is_usable()) {
            self.jobs.resume(user, provider).await;
        }
    }
}

/// The user's saved keys, masked, with what the provider last said about each.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", operation_id = "list_keys", security(("directus_token" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, description = "`byok_disabled`", body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(desk): State<KeyDesk>,
) -> Result<Json<Value>, ApiError> {
    desk.require_byok_access(user).await?;
    Ok(Json(json!({"keys": desk.vault.list(user).await?})))
}

/// Checks the key with the provider, seals it, stores the ciphertext in Directus.
#[utoipa::path(put, path = "/v1/keys/{provider}", tag = "keys", operation_id = "save_key", security(("directus_token" = [])),
    params(("provider" = String, Path, description = "A declared provider's id: `openai`, `anthropic`, `mistral`, ... (see `/v1/providers`)")), request_body = SaveKey,
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, description = "`key_rejected`, `invalid_key_format`", body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn save(
    AuthenticatedUser(user): AuthenticatedUser,
    ProviderPath(provider): ProviderPath,
    State(desk): State<KeyDesk>,
    JsonBody(body): JsonBody<SaveKey>,
) -> Result<Json<KeySummary>, ApiError> {
    desk.require_byok_access(user).await?;
    desk.limit_key_checks(user).await?;
    let summary = desk.vault.save(user, provider, &body.api_key).await?;
    desk.key_changed(user, provider, Some(&summary)).await;
    Ok(Json(summary))
}

#[utoipa::path(delete, path = "/v1/keys/{provider}", tag = "keys", operation_id = "delete_key", security(("directus_token" = [])),
    params(("provider" = String, Path, description = "A declared provider's id: `openai`, `anthropic`, `mistral`, ... (see `/v1/providers`)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    AuthenticatedUser(user): AuthenticatedUser,
    ProviderPath(provider): ProviderPath,
    State(desk): State<KeyDesk>,
) -> Result<StatusCode, ApiError> {
    desk.require_byok_access(user).await?;
    desk.vault.delete(user, provider).await?;
    desk.key_changed(user, provider, None).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the provider about the saved key again and records the answer.
#[utoipa::path(post, path = "/v1/keys/{provider}/verify", tag = "keys", operation_id = "verify_key", security(("directus_token" = [])),
    params(("provider" = String, Path, description = "A declared provider's id: `openai`, `anthropic`, `mistral`, ... (see `/v1/providers`)")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn verify(
    AuthenticatedUser(user): AuthenticatedUser,
    ProviderPath(provider): ProviderPath,
    State(desk): State<KeyDesk>,
) -> Result<Json<KeySummary>, ApiError> {
    desk.require_byok_access(user).await?;
    desk.limit_key_checks(user).await?;
    let result = desk.vault.verify(user, provider).await;
    desk.key_changed(user, provider, result.as_ref().ok()).await;
    Ok(Json(result?))
}
