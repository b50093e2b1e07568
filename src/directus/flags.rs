use reqwest::Method;
use serde::Deserialize;

use super::{DirectusClient, DirectusError, lenient_bool};
use crate::domain::flags::FlagRecord;

#[derive(Deserialize)]
struct FlagRow {
    key: String,
    #[serde(deserialize_with = "lenient_bool")]
    is_enabled: bool,
    min_tier: Option<String>,
}

impl DirectusClient {
    /// All `feature_flags` rows. Unknown `min_tier` values are treated as unset (the premium floor still holds).
    pub async fn feature_flags(&self) -> Result<Vec<FlagRecord>, DirectusError> {
        let request = self
            .request(Method::GET, "/items/feature_flags")
            .query(&[("fields", "key,is_enabled,min_tier"), ("limit", "-1")]);
        let rows: Vec<FlagRow> = self.data(request).await?;
        Ok(rows
            .into_iter()
            .map(|r| FlagRecord {
                min_tier: r.min_tier.and_then(|t| t.parse().ok()),
                key: r.key,
                is_enabled: r.is_enabled,
            })
            .collect())
    }
}
