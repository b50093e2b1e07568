use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::http::state::AppState;

/// Liveness: the process is up and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: 503 until flags were loaded once. With Directus down after that, routing still works on the
/// last known flags, so this stays 200 (taking every replica out of rotation would turn a Directus outage
/// into a total one) and says `degraded`.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let spooled = state.spool.len();
    match state.flags.current().await {
        Ok(current) if !current.stale => {
            let body = json!({
                "status": "ready",
                "flags_loaded_at": current.snapshot.loaded_at_rfc3339(),
                "usage_records_waiting": spooled,
            });
            (StatusCode::OK, Json(body))
        }
        Ok(current) => (
            StatusCode::OK,
            Json(json!({
                "status": "degraded",
                "reason": "directus_unreachable",
                "detail": "Directus cannot be reached; serving the last known feature flags.",
                "flags_loaded_at": current.snapshot.loaded_at_rfc3339(),
                "usage_records_waiting": spooled,
            })),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "reason": "flags_not_loaded",
                "detail": "Feature flags have not been loaded from Directus yet.",
            })),
        ),
    }
}
