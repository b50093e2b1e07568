//! Cost transparency: what a user spent, and what a request would cost before running it.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::domain::error_code::Code;
use crate::domain::money::Cents;
use crate::domain::pricing::{CallBudget, estimate_prompt_tokens};
use crate::domain::provider::Provider;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBody, RequestBody};
use std::sync::Arc;

use crate::directus::DirectusClient;
use crate::http::limits::{Endpoint, EndpointLimits};
use crate::services::gateway::Gateway;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// 1 to 365, default 30.
    #[param(value_type = Option<u32>)]
    days: Option<String>,
}

/// The user's requests, tokens and cost per provider and source over the last `days` (1-365, default 30),
/// in all and per day.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", security(("directus_token" = [])), params(UsageQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn summary(
    AuthenticatedUser(user): AuthenticatedUser,
    State(limits): State<Arc<EndpointLimits>>,
    State(directus): State<DirectusClient>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    limits.check(Endpoint::UsageReads, user).await?;
    let days = match query.days.as_deref() {
        None => 30,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| ApiError::new(Code::InvalidRequest, "days must be a whole number from 1 to 365."))?,
    };
    let since = OffsetDateTime::now_utc() - Duration::days(days);
    let summary = directus.usage_summary(Some(user), since).await.map_err(ApiError::Directus)?;
    let total_cost: Cents = summary.totals.iter().map(|l| l.cost_cents).sum();
    let total_requests: u64 = summary.totals.iter().map(|l| l.requests).sum();
    Ok(Json(json!({
        "days": days,
        "usage": summary.totals,
        "daily": summary.daily,
        "total": {"requests": total_requests, "cost_cents": total_cost},
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EstimateRequest {
    provider: String,
    model: String,
    /// Either the prompt text, or a token count the caller already knows.
    prompt: Option<String>,
    prompt_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
}

impl RequestBody for EstimateRequest {
    const EXPECTED: &'static str = r#"{"provider": "openai" | "anthropic", "model": "...", "prompt": "..." or "prompt_tokens": 123, "max_output_tokens": 500}"#;
}

/// A prompt's size in tokens: as the caller counted it, or estimated from its text as the gateway does.
pub fn prompt_size(tokens: Option<u64>, text: Option<&str>) -> Result<u64, ApiError> {
    match (tokens, text) {
        (Some(tokens), _) => Ok(tokens),
        (None, Some(text)) => Ok(estimate_prompt_tokens(text.len())),
        (None, None) => Err(ApiError::new(Code::InvalidRequest, "Give either prompt or prompt_tokens.")),
    }
}

/// The most a request would cost, from the same price table that charges it.
#[utoipa::path(post, path = "/v1/estimate", tag = "usage", security(("directus_token" = [])), request_body = EstimateRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn estimate(
    AuthenticatedUser(_): AuthenticatedUser,
    State(gateway): State<Arc<Gateway>>,
    JsonBody(request): JsonBody<EstimateRequest>,
) -> Result<Json<Value>, ApiError> {
    let provider: Provider = request.provider.parse()?;
    let prompt_tokens = prompt_size(request.prompt_tokens, request.prompt.as_deref())?;
    let prices = gateway.prices();
    let (price, matched) = prices.price(provider, &request.model);
    // The same budget rule as the gateway's: without a limit, the model's longest answer.
    let budget =
        CallBudget { prompt_tokens, output_tokens: request.max_output_tokens, completions: 1, ..CallBudget::default() };
    Ok(Json(json!({
        "provider": provider,
        "model": request.model,
        "prompt_tokens": prompt_tokens,
        "max_output_tokens": price.output_budget(&budget),
        "estimated_cost_cents": price.estimate(&budget),
        "price": {"input_per_mtok_usd": price.input_per_mtok_usd(), "output_per_mtok_usd": price.output_per_mtok_usd()},
        "priced_as": matched.as_str(),
        "price_table_version": prices.version(),
    })))
}
