use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::domain::flags::RoutingMode;
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::{self, Source};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBody, RequestBody};
use crate::http::state::AppState;
use crate::services::callers::{CallContext, call_context};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// `openai` or `anthropic`.
    provider: String,
}

impl RequestBody for RouteRequest {
    const EXPECTED: &'static str = r#"{"provider": "openai" | "anthropic"}"#;
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
    State(state): State<AppState>,
    JsonBody(request): JsonBody<RouteRequest>,
) -> Result<Json<RouteResponse>, ApiError> {
    let provider: Provider = request.provider.parse()?;
    let CallContext { flags, caller } = call_context(&state.flags, &state.callers, user).await?;
    let ledger = caller.profile.ledger;
    let available = state.reservations.available(user, ledger).await;
    // No particular call: credits count when there are any.
    let view = caller.profile.for_provider(provider, available, Cents::from_nanos(1));
    let decision = routing::decide(&flags.snapshot.flags, &view, provider, state.vault_configured)?;
    // Per request, so DEBUG (at INFO it cost a tenth of this endpoint's CPU); metrics count every decision.
    tracing::debug!(%user, source = ?decision.source, %provider, mode = ?decision.mode, "routed");
    crate::metrics::route_decision(provider, decision.source);
    Ok(Json(RouteResponse {
        source: decision.source,
        provider,
        mode: decision.mode,
        credit_balance_cents: ledger.balance,
        credits_available_cents: available,
        flags_stale: flags.stale,
        caller_stale: caller.stale,
    }))
}
