//! "Is AI down?": a public answer an app can show as a banner. It reads only what this replica already
//! knows (the circuit breaker, the last Directus outcome), so asking costs nothing upstream.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::domain::provider::Provider;
use std::sync::Arc;

use crate::services::callers::CallerDirectory;
use crate::services::circuit_breaker::ProviderHealth;
use crate::services::flag_cache::FlagCache;
use crate::services::gateway::Gateway;

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderStatus {
    #[schema(value_type = String, example = "openai")]
    provider: Provider,
    name: &'static str,
    /// `operational`, `degraded` (recent failures) or `down` (calls fail fast until `retry_after_secs`).
    #[schema(value_type = String, example = "operational")]
    status: ProviderHealth,
    retry_after_secs: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// At least one provider takes calls.
    ai_available: bool,
    /// A sentence to show users when something is wrong; `null` when all is well.
    banner: Option<String>,
    providers: Vec<ProviderStatus>,
    /// `operational`, or `down` while Directus cannot be reached (known users keep working meanwhile).
    account_service: &'static str,
    checked_at: String,
}

/// Provider health as this replica sees it, and whether account data can be read. No authentication.
#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, body = Status)))]
pub async fn status(
    State(gateway): State<Arc<Gateway>>,
    State(callers): State<Arc<CallerDirectory>>,
    State(flags): State<Arc<FlagCache>>,
) -> Json<Status> {
    let now = Instant::now();
    let providers: Vec<ProviderStatus> = Provider::all()
        .map(|provider| {
            let (status, retry_after) = gateway.provider_health(provider, now);
            ProviderStatus {
                provider,
                name: provider.display_name(),
                status,
                retry_after_secs: retry_after.map(|d| d.as_secs().max(1)),
            }
        })
        .collect();
    let (callers_stale, _) = callers.stale_status().await;
    let directus_down = callers_stale || flags.last_error().is_some();
    let down: Vec<&str> = providers.iter().filter(|p| p.status == ProviderHealth::Down).map(|p| p.name).collect();
    let ai_available = down.len() < providers.len();
    let banner = if !ai_available {
        Some("AI features are temporarily unavailable; everything else works.".to_owned())
    } else if !down.is_empty() {
        Some(format!(
            "{} is temporarily unavailable, so AI features that use it may fail; everything else works.",
            down.join(" and ")
        ))
    } else if directus_down {
        Some("Account data cannot be read right now; AI features keep working for signed-in users.".to_owned())
    } else {
        None
    };
    Json(Status {
        ai_available,
        banner,
        providers,
        account_service: if directus_down { "down" } else { "operational" },
        checked_at: OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
    })
}
