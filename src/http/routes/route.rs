use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::domain::flags::RoutingMode;
use crate::domain::provider::Provider;
use crate::domain::routing::{self, Source};
use crate::http::error::ApiError;
use crate::http::extract::{AuthenticatedUser, JsonBody, RequestBody};
use crate::http::state::AppState;
use crate::services::callers::{CallContext, call_context};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    provider: String,
}

impl RequestBody for RouteRequest {
    const EXPECTED: &'static str = r#"{"provider": "openai" | "anthropic"}"#;
}

#[derive(Debug, Serialize)]
pub struct RouteResponse {
    source: Source,
    provider: Provider,
    mode: RoutingMode,
    credit_balance_cents: i64,
    /// True when Directus is unreachable and the decision used the last known flags.
    flags_stale: bool,
}

/// Which credentials a call to `provider` must use for this user, right now.
pub async fn decide(
    AuthenticatedUser(user): AuthenticatedUser,
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RouteRequest>,
) -> Result<Json<RouteResponse>, ApiError> {
    let provider: Provider = request.provider.parse()?;
    let CallContext { flags, caller } = call_context(&state.flags, &state.callers, user).await?;
    let decision =
        routing::decide(&flags.snapshot.flags, &caller.for_provider(provider), provider, state.vault_configured)?;
    tracing::info!(%user, source = ?decision.source, %provider, mode = ?decision.mode, "routed");
    Ok(Json(RouteResponse {
        source: decision.source,
        provider,
        mode: decision.mode,
        credit_balance_cents: caller.balance.cents(),
        flags_stale: flags.stale,
    }))
}
