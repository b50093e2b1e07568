//! A user's spending caps as they stand: each cap of their tier, what is spent of it, and when it starts over.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::domain::budget::Period;
use crate::domain::money::Cents;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthenticatedUser;
use crate::services::standing::Standings;

/// One cap: its limit, what is spent of it (calls in progress included), and when its period ends.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapUse {
    #[schema(value_type = f64)]
    limit_cents: Cents,
    #[schema(value_type = f64)]
    spent_cents: Cents,
    /// RFC 3339, UTC.
    resets_at: String,
}

/// The caps on one kind of spending; `null` where there is none.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Caps {
    daily: Option<CapUse>,
    monthly: Option<CapUse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Budget {
    /// Caps on spending platform credits.
    credits: Caps,
    /// Shares of a cap (percent) at which you are notified.
    alerts_at_percent: Vec<u8>,
}

/// Your spending caps: what each allows, what you have spent of it and when it starts over. Calls that would
/// pass a cap are refused with `402 budget_exceeded`.
#[utoipa::path(get, path = "/v1/budget", tag = "account", security(("directus_token" = [])),
    responses((status = 200, body = Budget), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn show(
    AuthenticatedUser(user): AuthenticatedUser,
    State(standings): State<Arc<Standings>>,
) -> Result<Json<Budget>, ApiError> {
    let standing = standings.of(user).await?;
    let now = OffsetDateTime::now_utc();
    let mut credits = Caps::default();
    for (cap, spent) in standing.cap_use(now) {
        let resets_at = cap.period.resets_at(now).format(&Rfc3339).unwrap_or_default();
        let used = Some(CapUse { limit_cents: cap.limit, spent_cents: spent, resets_at });
        match cap.period {
            Period::Day => credits.daily = used,
            Period::Month => credits.monthly = used,
        }
    }
    Ok(Json(Budget { credits, alerts_at_percent: standings.alert_thresholds() }))
}
