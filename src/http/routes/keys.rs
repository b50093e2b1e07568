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
use crate::http::state::AppState;
use crate::metrics;
use crate::services::key_vault::KeySummary;
use crate::services::standing::CallContext;

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

/// BYOK must be enabled and the user's tier entitled; the account must be active.
async fn require_byok_access(state: &AppState, user: UserId) -> Result<(), ApiError> {
    let CallContext { flags, caller } = state.standings.context(user).await?;
    Ok(routing::byok_access(&flags.snapshot.flags, caller.profile.tier)?)
}

/// Routing sees the change at once, on every replica, and a later failure of the new key is a new incident
/// to notify.
async fn key_changed(state: &AppState, user: UserId, provider: Provider) {
    state.key_events.changed(user, provider).await;
}

/// A key that works again lets the user's jobs paused on it run (on every replica: the queue is shared).
async fn resume_jobs_if_usable(state: &AppState, user: UserId, provider: Provider, key: &KeySummary) {
    if key.status.is_usable() {
        state.jobs.resume(user, provider).await;
    }
}

/// The user's saved keys, masked, with what the provider last said about each.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", operation_id = "list_keys", security(("directus_token" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, description = "`byok_disabled`", body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    require_byok_access(&state, user).await?;
    Ok(Json(json!({"keys": state.vault.list(user).await?})))
}

/// Saving and verifying ask the provider from the platform's address: a user may not turn that into a key
/// tester.
async fn limit_key_checks(state: &AppState, user: UserId) -> Result<(), ApiError> {
    state.key_checks.acquire(user, state.key_checks_per_minute).await.map_err(|retry_after| {
        metrics::rate_limited("key_checks");
        ApiError::TooManyRequests { retry_after }
    })
}

/// Checks the key with the provider, seals it, stores the ciphertext in Directus.
#[utoipa::path(put, path = "/v1/keys/{provider}", tag = "keys", operation_id = "save_key", security(("directus_token" = [])),
    params(("provider" = String, Path, description = "`openai` or `anthropic`")), request_body = SaveKey,
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, description = "`key_rejected`, `invalid_key_format`", body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn save(
    AuthenticatedUser(user): AuthenticatedUser,
    ProviderPath(provider): ProviderPath,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SaveKey>,
) -> Result<Json<KeySummary>, ApiError> {
    require_byok_access(&state, user).await?;
    limit_key_checks(&state, user).await?;
    let summary = state.vault.save(user, provider, &body.api_key).await?;
    key_changed(&state, user, provider).await;
    resume_jobs_if_usable(&state, user, provider, &summary).await;
    Ok(Json(summary))
}

#[utoipa::path(delete, path = "/v1/keys/{provider}", tag = "keys", operation_id = "delete_key", security(("directus_token" = [])),
    params(("provider" = String, Path, description = "`openai` or `anthropic`")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    AuthenticatedUser(user): AuthenticatedUser,
    ProviderPath(provider): ProviderPath,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    require_byok_access(&state, user).await?;
    state.vault.delete(user, provider).await?;
    key_changed(&state, user, provider).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Asks the provider about the saved key again and records the answer.
#[utoipa::path(post, path = "/v1/keys/{provider}/verify", tag = "keys", operation_id = "verify_key", security(("directus_token" = [])),
    params(("provider" = String, Path, description = "`openai` or `anthropic`")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn verify(
    AuthenticatedUser(user): AuthenticatedUser,
    ProviderPath(provider): ProviderPath,
    State(state): State<AppState>,
) -> Result<Json<KeySummary>, ApiError> {
    require_byok_access(&state, user).await?;
    limit_key_checks(&state, user).await?;
    let result = state.vault.verify(user, provider).await;
    key_changed(&state, user, provider).await;
    if let Ok(summary) = &result {
        resume_jobs_if_usable(&state, user, provider, summary).await;
    }
    Ok(Json(result?))
}
