//! `user_budgets`: the spending caps users set for themselves, one row per user (its `user` is unique).

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{DirectusClient, DirectusError};
use crate::domain::budget::OwnCaps;
use crate::domain::money::Cents;
use crate::domain::user::UserId;

const BUDGETS: &str = "/items/user_budgets";

#[derive(Deserialize)]
struct Row {
    id: i64,
    credits_daily_cents: Option<i64>,
    credits_monthly_cents: Option<i64>,
}

impl DirectusClient {
    /// The caps the user set; none when they set none. A Directus without the collection (its schema not
    /// upgraded) counts as no caps, with a warning that says what to do.
    pub async fn own_caps(&self, user: UserId) -> Result<OwnCaps, DirectusError> {
        match self.budget_row(user).await {
            Ok(row) => Ok(row.map_or_else(OwnCaps::default, |row| OwnCaps {
                daily: row.credits_daily_cents.map(Cents::whole),
                monthly: row.credits_monthly_cents.map(Cents::whole),
            })),
            Err(DirectusError::Status { status, .. }) if status == StatusCode::FORBIDDEN => {
                tracing::warn!(
                    "Directus refuses user_budgets: apply the schema snapshot (directus-schema/UPGRADING.md) \\
                    and run the seed again, so users' own spending caps apply"
                );
                Ok(OwnCaps::default())
            }
            Err(error) => Err(error),
        }
    }

    /// Sets the user's caps (`None`: back to the plan's default).
    pub async fn save_own_caps(&self, user: UserId, caps: OwnCaps) -> Result<(), DirectusError> {
        let whole = |cents: Option<Cents>| cents.map(Cents::ceil_whole);
        let values = json!({"credits_daily_cents": whole(caps.daily), "credits_monthly_cents": whole(caps.monthly)});
        // At most twice: a row another request created between the read and the insert is updated instead.
        for _ in 0..2 {
            let request = match self.budget_row(user).await? {
                Some(row) => self.request(Method::PATCH, &format!("{BUDGETS}/{}", row.id)).json(&values),
                None => {
                    let mut row = values.clone();
                    row["user"] = json!(user);
                    self.request(Method::POST, BUDGETS).json(&row)
                }
            };
            match self.send(request.query(&[("fields", "id")])).await {
                Err(DirectusError::Status { status: StatusCode::BAD_REQUEST, code: Some(code) })
                    if code == "RECORD_NOT_UNIQUE" =>
                {
                    continue;
                }
                result => return result.map(drop),
            }
        }
        Err(DirectusError::Decode("user_budgets row kept changing".into()))
    }

    async fn budget_row(&self, user: UserId) -> Result<Option<Row>, DirectusError> {
        let request = self.request(Method::GET, BUDGETS).query(&[
            ("fields", "id,credits_daily_cents,credits_monthly_cents"),
            ("filter[user][_eq]", &user.to_string()),
            ("limit", "1"),
        ]);
        let rows: Vec<Row> = self.data(request).await?;
        Ok(rows.into_iter().next())
    }
}
