use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::Operator;
use crate::http::state::AppState;

/// The flags in force, for operators (`OPERATOR_TOKEN`; 404 when none is configured).
#[utoipa::path(get, path = "/v1/flags", tag = "operations", security(("operator_token" = [])),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(_: Operator, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let current = state.flags.current().await?;
    let flags = current.snapshot.flags;
    Ok(Json(json!({
        "flags": flags,
        "mode": flags.mode(),
        "loaded_at": current.snapshot.loaded_at_rfc3339(),
        "stale": current.stale,
        "ttl_secs": state.flag_cache_ttl.as_secs(),
        "vault_configured": state.vault_configured,
    })))
}
