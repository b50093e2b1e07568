use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::domain::flags::RoutingMode;
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::Source;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBody, RequestBody};
use std::sync::Arc;

use crate::services::gateway::GatewayError;
use crate::services::standing::Standings;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// A declared provider's id: `openai`, `anthropic`, `mistral`, ... (see `/v1/providers`).
    provider: String,
}

impl RequestBody for RouteRequest {
    const EXPECTED: &'static str = r#"{"provider": "openai" | "anthropic" | "mistral" | ...}"#;
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteResponse {
    /// `byok` (the user's own key) or `internal` (platform credits).
    #[schema(value_type = String, example = "byok")]
    source: Source,
    #[schema(value_type = String, example = "openai")]
    provider: Provider,
    #[schema(value_type = String, example = "byok_first")]
    mode: RoutingMode,
    /// The ledger balance as last read from Directus.
    #[schema(value_type = f64)]
    credit_balance_cents: Cents,
    /// What the user can spend now: the balance less open holds and costs the ledger does not show yet.
    #[schema(value_type = f64)]
    credits_available_cents: Cents,
    /// True when Directus is unreachable and the decision used the last known flags.
    flags_stale: bool,
    /// True when Directus is unreachable and the decision used the caller's last known profile.
    caller_stale: bool,
}

/// Which credentials a call to `provider` must use for this user, right now.
#[utoipa::path(post, path = "/v1/route", tag = "routing", security(("directus_token" = [])), request_body = RouteRequest,
    responses((status = 200, body = RouteResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 402, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn decide(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    JsonBody(request): JsonBody<RouteRequest>,
) -> Result<Json<RouteResponse>, ApiError> {
    let provider: Provider = request.provider.parse()?;
    let standing = standings.of(user).await?;
    let decision = standing.decide_any_call(provider).map_err(|refusal| match standing.cap_reached(&refusal) {
        Some(exceeded) => ApiError::from(GatewayError::Budget(exceeded)),
        None => ApiError::from(refusal),
    })?;
    // Per request, so DEBUG (at INFO it cost a tenth of this endpoint's CPU); metrics count every decision.
    tracing::debug!(%user, source = ?decision.source, %provider, mode = ?decision.mode, "routed");
    crate::metrics::route_decision(provider, decision.source);
    Ok(Json(RouteResponse {
        source: decision.source,
        provider,
        mode: decision.mode,
        credit_balance_cents: standing.context.caller.profile.ledger.balance,
        credits_available_cents: standing.available,
        flags_stale: standing.context.flags.stale,
        caller_stale: standing.context.caller.stale,
    }))
}
