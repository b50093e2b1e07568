//! A user's spending caps: each cap in force with what is spent of it and when it starts over, the caps they
//! set themselves, and what their plan allows; and setting their own.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::directus::DirectusClient;
use crate::domain::budget::{OwnCaps, Period, PeriodCaps, Spend};
use crate::domain::error_code::{Code, Coded};
use crate::domain::money::Cents;
use crate::domain::user::UserId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBody, RequestBody};
use crate::http::limits::{Endpoint, EndpointLimits};
use crate::services::callers::CallerDirectory;
use crate::services::standing::Standings;
use crate::shared::bus::{Bus, Event};

/// One cap in force: its limit, what is spent of it (calls in progress included), and when its period ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapUse {
    #[schema(value_type = f64)]
    limit_cents: Cents,
    #[schema(value_type = f64)]
    spent_cents: Cents,
    /// RFC 3339, UTC.
    resets_at: String,
}

/// The caps in force on one kind of spending; `null` where there is none.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Caps {
    daily: Option<CapUse>,
    monthly: Option<CapUse>,
}

/// Caps per period in whole cents; `null`: none of this kind.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    daily_cents: Option<u64>,
    #[serde(default)]
    monthly_cents: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Budget {
    /// The caps in force on spending platform credits.
    credits: Caps,
    /// The caps in force on what your own API keys spend at their providers.
    own_keys: Caps,
    /// The caps you set (`null`: your plan's default applies).
    yours: KindsOfLimits,
    /// The most your plan allows you to set (`null`: no ceiling).
    ceilings: KindsOfLimits,
    /// Shares of a cap (percent) at which you are notified.
    alerts_at_percent: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KindsOfLimits {
    credits: Limits,
    own_keys: Limits,
}

/// Your spending caps: what each allows, what you have spent of it and when it starts over; the caps you set
/// and the most your plan allows. Calls that would pass a cap are refused with `402 budget_exceeded`.
#[utoipa::path(get, path = "/v1/budget", tag = "account", security(("directus_token" = [])),
    responses((status = 200, body = Budget), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn show(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
) -> Result<Json<Budget>, ApiError> {
    budget(&standings, user).await.map(Json)
}

/// What `PUT /v1/budget` takes. A kind left out keeps the caps you set on it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetUpdate {
    #[serde(default)]
    credits: Option<Limits>,
    #[serde(default)]
    own_keys: Option<Limits>,
}

impl RequestBody for BudgetUpdate {
    const EXPECTED: &'static str = r#"{"credits": {"daily_cents": 500, "monthly_cents": null}, "own_keys": {"daily_cents": null, "monthly_cents": 20000}} (whole cents; null: your plan's default)"#;
}

/// Sets your own caps, in whole cents, on credit spending and on what your own API keys spend; `null` goes
/// back to your plan's default, and a kind left out keeps what you set. A cap above your plan's ceiling is
/// refused with `422 budget_above_ceiling`. Applies from your next request. At most
/// `RATE_LIMIT_BUDGET_CHANGES_PER_MIN` (10) changes a minute.
#[utoipa::path(put, path = "/v1/budget", tag = "account", security(("directus_token" = [])),
    request_body = BudgetUpdate,
    responses((status = 200, body = Budget), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn update(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
    State(callers): State<Arc<CallerDirectory>>,
    State(bus): State<Arc<dyn Bus>>,
    State(directus): State<DirectusClient>,
    State(limits): State<Arc<EndpointLimits>>,
    JsonBody(update): JsonBody<BudgetUpdate>,
) -> Result<Json<Budget>, ApiError> {
    limits.check(Endpoint::BudgetChanges, user).await?;
    if standings.budgets().is_empty() {
        return Err(Code::BudgetsNotEnabled.into());
    }
    let whole = |cents: Option<u64>| cents.map(|c| Cents::whole(i64::try_from(c).unwrap_or(i64::MAX)));
    let caps = |limits: Limits| PeriodCaps { daily: whole(limits.daily_cents), monthly: whole(limits.monthly_cents) };
    let profile = standings.context(user).await?.caller.profile;
    let own = OwnCaps {
        credits: update.credits.map_or(profile.own_caps.credits, caps),
        own_keys: update.own_keys.map_or(profile.own_caps.own_keys, caps),
    };
    standings.budgets().allows(profile.tier, own).map_err(|above| ApiError::new(above.code(), above.message()))?;
    directus.save_own_caps(user, own).await?;
    // Every replica reads the caller again, caps and spending with it.
    callers.forget(user).await;
    bus.publish(Event::CallerChanged(user)).await;
    budget(&standings, user).await.map(Json)
}

async fn budget(standings: &Standings, user: UserId) -> Result<Budget, ApiError> {
    let standing = standings.of(user).await?;
    let now = OffsetDateTime::now_utc();
    let (mut credits, mut own_keys) = (Caps::default(), Caps::default());
    for (cap, spent) in standing.cap_use(now) {
        let resets_at = cap.period.resets_at(now).format(&Rfc3339).unwrap_or_default();
        let used = Some(CapUse { limit_cents: cap.limit, spent_cents: spent, resets_at });
        let caps = match cap.spend {
            Spend::Credits => &mut credits,
            Spend::OwnKeys => &mut own_keys,
        };
        match cap.period {
            Period::Day => caps.daily = used,
            Period::Month => caps.monthly = used,
        }
    }
    let profile = &standing.context.caller.profile;
    let whole = |cents: Option<Cents>| cents.and_then(|c| u64::try_from(c.ceil_whole()).ok());
    let yours = |spend| {
        let caps = profile.own_caps.of(spend);
        Limits { daily_cents: whole(caps.daily), monthly_cents: whole(caps.monthly) }
    };
    let ceilings = |spend| {
        let ceiling = |period| whole(standings.budgets().ceiling(profile.tier, spend, period));
        Limits { daily_cents: ceiling(Period::Day), monthly_cents: ceiling(Period::Month) }
    };
    Ok(Budget {
        credits,
        own_keys,
        yours: KindsOfLimits { credits: yours(Spend::Credits), own_keys: yours(Spend::OwnKeys) },
        ceilings: KindsOfLimits { credits: ceilings(Spend::Credits), own_keys: ceilings(Spend::OwnKeys) },
        alerts_at_percent: standings.alert_thresholds(),
    })
}
