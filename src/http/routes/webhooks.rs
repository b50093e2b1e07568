use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::crypto::webhook_signature::Delivery;
use crate::http::error::ApiError;
use crate::http::extract::RawBody;
use crate::http::state::AppState;
use crate::metrics;

/// The parts of the hook's payload we act on; the signature covers the whole body.
#[derive(Debug, Deserialize)]
struct DirectusEvent {
    #[serde(rename = "type")]
    kind: String,
}

const FLAG_EVENTS: [&str; 3] =
    ["feature_flags.items.create", "feature_flags.items.update", "feature_flags.items.delete"];

/// A signed notice from our Directus hook that something changed. Flag changes reload the flag cache
/// before answering, so the next routing decision uses them.
pub async fn directus(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: &body,
    };
    let now = time::OffsetDateTime::now_utc();
    state.webhook_secret.verify(&delivery, now.unix_timestamp()).map_err(|reason| {
        tracing::warn!(%reason, "webhook refused");
        ApiError::BadSignature
    })?;
    if let Some(sent) = delivery.timestamp.and_then(|t| t.parse::<i64>().ok()) {
        let lag = (now - time::OffsetDateTime::from_unix_timestamp(sent).unwrap_or(now)).unsigned_abs();
        metrics::webhook_lag(lag);
    }
    let id = delivery.id.unwrap_or_default().to_owned();
    let event: DirectusEvent = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request("invalid_json", r#"Expected {"type": "<collection>.items.<action>", ...}."#)
    })?;

    if state.applied_webhooks.contains_key(&id) {
        tracing::info!(webhook_id = %id, "webhook already applied");
        return Ok(Json(json!({"status": "duplicate"})));
    }
    if !FLAG_EVENTS.contains(&event.kind.as_str()) {
        tracing::info!(webhook_id = %id, kind = %event.kind, "webhook ignored");
        return Ok(Json(json!({"status": "ignored"})));
    }
    // A failed reload answers 503 so the hook retries; the stale flags stay in force meanwhile.
    let current = state.flags.reload().await?;
    if current.stale {
        return Err(ApiError::DirectusUnavailable);
    }
    state.applied_webhooks.insert(id.clone(), ()).await;
    tracing::info!(webhook_id = %id, kind = %event.kind, flags = ?current.snapshot.flags, "feature flags reloaded");
    Ok(Json(json!({"status": "applied"})))
}
