use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use std::sync::Arc;

use crate::accounting::Outbox;
use crate::services::callers::CallerDirectory;
use crate::services::flag_cache::FlagCache;
use crate::services::reservations::Reservations;
use crate::shared::redis::Redis;

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: 503 until flags were loaded once. With Directus down after that, routing still works on the
/// last known flags, and known callers on their last known profiles, so this stays 200 (taking every replica
/// out of rotation would turn a Directus outage into a total one) and says `degraded`, and what is stale.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`ready` or `degraded`", body = Object),
               (status = 503, description = "`not_ready`: flags never loaded", body = Object)))]
pub async fn readyz(
    State(flags): State<Arc<FlagCache>>,
    State(callers): State<Arc<CallerDirectory>>,
    State(outbox): State<Arc<Outbox>>,
    State(reservations): State<Arc<Reservations>>,
    State(redis): State<Option<Arc<Redis>>>,
) -> impl IntoResponse {
    let waiting = outbox.len();
    let open_holds = reservations.open_holds();
    let (callers_stale, stale_served) = callers.stale_status().await;
    let current = match flags.current().await {
        Ok(current) => current,
        Err(_) => {
            let body = json!({
                "status": "not_ready",
                "reason": "flags_not_loaded",
                "detail": "Feature flags have not been loaded from Directus yet.",
            });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
        }
    };
    let redis = match redis.as_ref().map(|redis| redis.is_up()) {
        None => "not_configured",
        Some(true) => "up",
        Some(false) => "down",
    };
    let directus_down = current.stale || callers_stale;
    let degraded = directus_down || redis == "down";
    let mut body = json!({
        "status": if degraded { "degraded" } else { "ready" },
        "flags_loaded_at": current.snapshot.loaded_at_rfc3339(),
        "stale": {"flags": current.stale, "callers": callers_stale, "stale_answers_served": stale_served},
        "redis": redis,
        "usage_records_waiting": waiting,
        "open_credit_holds": open_holds,
    });
    if directus_down {
        body["reason"] = json!("directus_unreachable");
        body["detail"] = json!(
            "Directus cannot be reached; serving the last known feature flags and the last known profiles of \
             recent callers. New callers are refused until it is back."
        );
    } else if degraded {
        body["reason"] = json!("redis_unreachable");
        body["detail"] = json!(
            "Redis cannot be reached; this replica serves on its own state: rate limits, credit holds and \
             deduplication are per replica, and other replicas' flag changes arrive by TTL."
        );
    }
    (StatusCode::OK, Json(body))
}
