//! `user_budgets`: the spending caps users set for themselves, one row per user (its `user` is unique).

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{DirectusClient, DirectusError};
use crate::domain::budget::{OwnCaps, PeriodCaps};
use crate::domain::money::Cents;
use crate::domain::user::UserId;

const BUDGETS: &str = "/items/user_budgets";

/// The columns, as `fields` asks for them.
const FIELDS: &str = "id,credits_daily_cents,credits_monthly_cents,own_keys_daily_cents,own_keys_monthly_cents";

#[derive(Deserialize)]
struct Row {
    id: i64,
    credits_daily_cents: Option<i64>,
    credits_monthly_cents: Option<i64>,
    own_keys_daily_cents: Option<i64>,
    own_keys_monthly_cents: Option<i64>,
}

impl Row {
    fn caps(&self) -> OwnCaps {
        let caps = |daily: Option<i64>, monthly: Option<i64>| PeriodCaps {
            daily: daily.map(Cents::whole),
            monthly: monthly.map(Cents::whole),
        };
        OwnCaps {
            credits: caps(self.credits_daily_cents, self.credits_monthly_cents),
            own_keys: caps(self.own_keys_daily_cents, self.own_keys_monthly_cents),
        }
    }
}

impl DirectusClient {
    /// The caps the user set; none when they set none. A Directus without the collection (its schema not
    /// upgraded) counts as no caps, with a warning that says what to do.
    pub async fn own_caps(&self, user: UserId) -> Result<OwnCaps, DirectusError> {
        match self.budget_row(user).await {
            Ok(row) => Ok(row.map_or_else(OwnCaps::default, |row| row.caps())),
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
        let values = json!({
            "credits_daily_cents": whole(caps.credits.daily),
            "credits_monthly_cents": whole(caps.credits.monthly),
            "own_keys_daily_cents": whole(caps.own_keys.daily),
            "own_keys_monthly_cents": whole(caps.own_keys.monthly),
        });
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
            ("fields", FIELDS),
            ("filter[user][_eq]", &user.to_string()),
            ("limit", "1"),
        ]);
        let rows: Vec<Row> = self.data(request).await?;
        Ok(rows.into_iter().next())
    }
}
