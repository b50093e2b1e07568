//! Spending across the platform, for operators and the operations panel in Directus.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::directus::DirectusClient;
use crate::domain::budget::Period;
use crate::domain::error_code::Code;
use crate::domain::money::Cents;
use crate::domain::routing::Source;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::Operator;
use crate::services::reservations::Reservations;

/// The most users `top_users` lists.
const TOP_USERS: usize = 10;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SpendQuery {
    /// 1 to 90, default 30.
    days: Option<i64>,
}

/// Spending across the platform: today's on the platform's own keys against `PLATFORM_DAILY_BUDGET_CENTS`
/// (`platform`: `{"cap_cents", "spent_cents", "percent", "resets_at"}`, with what calls in flight hold and
/// finished calls cost that the ledger does not show yet; `null` without a daily budget) and against each
/// provider's own (`platform_providers`, each with its `provider`); every day of the
/// last `days` (`daily`: requests and cost on users' own keys and on credits, days without calls included, so
/// a chart of them is never empty); and the users whose calls on credits cost most (`top_users`).
#[utoipa::path(get, path = "/v1/admin/spend", tag = "operator", operation_id = "platform_spend", security(("operator_token" = [])),
    params(SpendQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn show(
    _: Operator,
    State(reservations): State<Arc<Reservations>>,
    State(directus): State<DirectusClient>,
    query: Result<Query<SpendQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let refused = || ApiError::new(Code::InvalidRequest, "Use ?days=<1-90>.");
    let Query(query) = query.map_err(|_| refused())?;
    let days = query.days.unwrap_or(30);
    if !(1..=90).contains(&days) {
        return Err(refused());
    }
    let now = OffsetDateTime::now_utc();
    let first_day = now.date() - Duration::days(days - 1);
    let since = first_day.midnight().assume_utc();
    let (platform, summary, top) = tokio::join!(
        reservations.platform_today(),
        directus.usage_summary(None, since),
        directus.top_credit_spenders(since, TOP_USERS)
    );
    let resets_at = Period::Day.resets_at(now).format(&Rfc3339).unwrap_or_default();
    let day = |cap: Cents, spent: Cents| {
        let percent = if cap.is_positive() { (spent.as_f64() / cap.as_f64() * 100.0).floor() } else { 100.0 };
        json!({"cap_cents": cap, "spent_cents": spent, "percent": percent, "resets_at": resets_at})
    };
    let all = platform.iter().find(|(scope, _, _)| scope.is_none()).map(|(_, cap, spent)| day(*cap, *spent));
    let providers: Vec<Value> = platform
        .iter()
        .filter_map(|(scope, cap, spent)| {
            let mut budget = day(*cap, *spent);
            budget["provider"] = json!(scope.as_ref()?);
            Some(budget)
        })
        .collect();
    let lines = summary?.daily;
    let daily: Vec<Value> = (0..days)
        .map(|offset| {
            let day = (first_day + Duration::days(offset)).to_string();
            let of = |source: Source| {
                let lines = lines.iter().filter(|l| l.source == source && l.day.as_deref() == Some(day.as_str()));
                let (requests, cost) = lines.fold((0, Cents::ZERO), |(n, c), l| (n + l.requests, c + l.cost_cents));
                json!({"requests": requests, "cost_cents": cost})
            };
            json!({"day": day, "own_keys": of(Source::Byok), "credits": of(Source::Internal)})
        })
        .collect();
    let top_users: Vec<Value> = top?
        .into_iter()
        .map(|(user, email, cost, requests)| json!({"user": user, "email": email, "cost_cents": cost, "requests": requests}))
        .collect();
    Ok(Json(json!({
        "platform": all,
        "platform_providers": providers,
        "days": days,
        "daily": daily,
        "top_users": top_users,
    })))
}
