use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::domain::error_code::Code;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::Operator;
use std::sync::Arc;

use crate::services::flag_cache::FlagCache;
use crate::services::key_vault::KeyVault;
use crate::shared::bus::{Bus, Event};

/// The flags in force, for operators (`OPERATOR_TOKEN`; 404 when none is configured).
#[utoipa::path(get, path = "/v1/flags", tag = "operations", operation_id = "show_flags", security(("operator_token" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    _: Operator,
    State(flags): State<Arc<FlagCache>>,
    State(vault): State<Arc<KeyVault>>,
) -> Result<Json<Value>, ApiError> {
    let current = flags.current().await?;
    let in_force = current.snapshot.flags;
    Ok(Json(json!({
        "flags": in_force,
        "mode": in_force.mode(),
        "loaded_at": current.snapshot.loaded_at_rfc3339(),
        "stale": current.stale,
        "ttl_secs": flags.ttl().as_secs(),
        "vault_configured": vault.is_configured(),
    })))
}

/// Loads the flags from Directus again at once, for operators who changed them behind its API (SQL) and do
/// not want to wait for the periodic check.
#[utoipa::path(post, path = "/v1/flags/reload", tag = "operations", operation_id = "reload_flags", security(("operator_token" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn reload(
    operator: Operator,
    State(flags): State<Arc<FlagCache>>,
    State(vault): State<Arc<KeyVault>>,
    State(bus): State<Arc<dyn Bus>>,
) -> Result<Json<Value>, ApiError> {
    let reloaded = flags.reload().await?;
    if reloaded.stale {
        return Err(ApiError::from(Code::AccountServiceUnavailable));
    }
    bus.publish(Event::FlagsChanged).await;
    tracing::info!(flags = ?reloaded.snapshot.flags, "feature flags reloaded on an operator's request");
    show(operator, State(flags), State(vault)).await
}
