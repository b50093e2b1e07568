//! `user_api_keys`: the only collection that holds key material, and only as ciphertext.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{DirectusClient, DirectusError, lenient_bool};
use crate::domain::api_key::KeyStatus;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;

/// A key row as users may see it: never the ciphertext.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub provider: String,
    pub key_hint: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_active: bool,
    pub status: Option<String>,
    pub last_validated_at: Option<String>,
    pub last_error: Option<String>,
}

/// A row with its ciphertext, for opening.
#[derive(Debug, Clone, Deserialize)]
pub struct SealedRow {
    pub id: String,
    pub user: String,
    pub provider: String,
    pub encrypted_key: String,
}

/// The fields written when a key is saved or re-checked.
#[derive(Debug, Clone, Serialize)]
pub struct KeyUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hint: Option<String>,
    pub status: KeyStatus,
    pub is_active: bool,
    pub last_validated_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Deserialize)]
struct IdRow {
    id: String,
}

const PUBLIC_FIELDS: &str = "id,provider,key_hint,is_active,status,last_validated_at,last_error";

impl DirectusClient {
    pub async fn key_records(&self, user: UserId) -> Result<Vec<KeyRecord>, DirectusError> {
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", PUBLIC_FIELDS),
            ("filter[user][_eq]", &user.to_string()),
            ("sort", "-date_updated"),
            ("limit", "100"),
        ]);
        self.data(request).await
    }

    /// The newest row for (user, provider) with its ciphertext.
    pub async fn sealed_key(&self, user: UserId, provider: Provider) -> Result<Option<SealedRow>, DirectusError> {
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", "id,user,provider,encrypted_key"),
            ("filter[user][_eq]", &user.to_string()),
            ("filter[provider][_eq]", provider.as_str()),
            ("sort", "-date_updated"),
            ("limit", "1"),
        ]);
        let rows: Vec<SealedRow> = self.data(request).await?;
        Ok(rows.into_iter().next())
    }

    async fn key_ids(&self, user: UserId, provider: Provider) -> Result<Vec<String>, DirectusError> {
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", "id"),
            ("filter[user][_eq]", &user.to_string()),
            ("filter[provider][_eq]", provider.as_str()),
            ("sort", "-date_updated"),
            ("limit", "100"),
        ]);
        let rows: Vec<IdRow> = self.data(request).await?;
        Ok(rows.into_iter().map(|r| r.id).collect())
    }

    /// Writes the one row for (user, provider): updates the newest, removes strays (Directus cannot enforce
    /// uniqueness of the pair), or creates it.
    pub async fn save_key(
        &self,
        user: UserId,
        provider: Provider,
        update: &KeyUpdate,
    ) -> Result<KeyRecord, DirectusError> {
        let ids = self.key_ids(user, provider).await?;
        let fields = [("fields", PUBLIC_FIELDS)];
        let Some((newest, strays)) = ids.split_first() else {
            let mut body = serde_json::to_value(update).expect("plain struct");
            body["user"] = json!(user);
            body["provider"] = json!(provider);
            let request = self.request(Method::POST, "/items/user_api_keys").query(&fields).json(&body);
            return self.data(request).await;
        };
        if !strays.is_empty() {
            self.send(self.request(Method::DELETE, "/items/user_api_keys").json(strays)).await?;
        }
        let request =
            self.request(Method::PATCH, &format!("/items/user_api_keys/{newest}")).query(&fields).json(update);
        self.data(request).await
    }

    /// Owners of active keys in `status`, least recently updated first.
    pub async fn keys_with_status(
        &self,
        status: KeyStatus,
        limit: usize,
    ) -> Result<Vec<(String, String)>, DirectusError> {
        #[derive(Deserialize)]
        struct Owner {
            user: String,
            provider: String,
        }
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", "user,provider"),
            ("filter[status][_eq]", status.as_str()),
            ("filter[is_active][_eq]", "true"),
            ("sort", "date_updated"),
            ("limit", &limit.to_string()),
        ]);
        let rows: Vec<Owner> = self.data(request).await?;
        Ok(rows.into_iter().map(|o| (o.user, o.provider)).collect())
    }

    /// Deletes the user's rows for `provider`; returns how many there were.
    pub async fn delete_keys(&self, user: UserId, provider: Provider) -> Result<usize, DirectusError> {
        let ids = self.key_ids(user, provider).await?;
        if !ids.is_empty() {
            self.send(self.request(Method::DELETE, "/items/user_api_keys").json(&ids)).await?;
        }
        Ok(ids.len())
    }

    /// How many key rows exist.
    pub async fn count_keys(&self) -> Result<u64, DirectusError> {
        #[derive(Deserialize)]
        struct Count {
            count: serde_json::Value,
        }
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[("aggregate[count]", "*")]);
        let rows: Vec<Count> = self.data(request).await?;
        let count = rows.first().map(|r| &r.count);
        count
            .and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| DirectusError::Decode("user_api_keys count is not a number".into()))
    }

    /// Rows whose ciphertext is not sealed by key `kid`, ordered by id. Rewrapped rows leave this set, so
    /// callers page with `offset` = rows they had to leave as they were.
    pub async fn sealed_rows_not_by(
        &self,
        kid: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<SealedRow>, DirectusError> {
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", "id,user,provider,encrypted_key"),
            ("filter[encrypted_key][_nstarts_with]", &format!("byok:v1:{kid}:")),
            ("sort", "id"),
            ("offset", &offset.to_string()),
            ("limit", &limit.to_string()),
        ]);
        self.data(request).await
    }

    /// Replaces a row's ciphertext only if it is still `current` (compare and swap): a key saved or deleted
    /// since `current` was read is left alone. `false` when the row no longer held `current`.
    ///
    /// Directus has no conditional single-statement update: it selects the rows matching the filter, then
    /// updates those, so a write landing between the two (about a millisecond) can still be overwritten.
    pub async fn replace_ciphertext_if(&self, id: &str, current: &str, new: &str) -> Result<bool, DirectusError> {
        let body = json!({
            "query": {"filter": {"_and": [{"id": {"_eq": id}}, {"encrypted_key": {"_eq": current}}]}},
            "data": {"encrypted_key": new},
        });
        let request = self.request(Method::PATCH, "/items/user_api_keys").query(&[("fields", "id")]).json(&body);
        let updated: Vec<IdRow> = self.data(request).await?;
        Ok(updated.iter().any(|row| row.id == id))
    }
}
