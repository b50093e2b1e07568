use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{DirectusClient, DirectusError, lenient_bool};
use crate::domain::api_key::KeyStatus;
use crate::domain::credits::{CreditBalance, TransactionType};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;

/// What the sidecar reads about a user; the token only tells us who they are.
#[derive(Debug, Clone, Deserialize)]
pub struct UserProfile {
    pub status: String,
    pub subscription_tier: Option<String>,
}

/// A user BYOK-only mode concerns, as the pre-flight lists them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct EntitledUser {
    pub id: String,
    pub email: Option<String>,
    pub subscription_tier: Option<String>,
}

/// A stored key's routing state and its ciphertext, so a call can open the key without another Directus
/// round trip. Only the sidecar's `ENCRYPTION_KEY` makes the ciphertext useful.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub provider: Provider,
    pub status: KeyStatus,
    pub envelope: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("provider", &self.provider)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyRow {
    provider: String,
    status: Option<String>,
    encrypted_key: String,
    #[serde(deserialize_with = "lenient_bool")]
    is_active: bool,
}

#[derive(Deserialize)]
struct LedgerGroup {
    transaction_type: Option<String>,
    sum: LedgerSum,
}

#[derive(Deserialize)]
struct LedgerSum {
    cost_cents: Value,
}

impl DirectusClient {
    /// The user's profile, or `None` when no such user exists (Directus answers 403 for unknown ids).
    pub async fn user_profile(&self, user: UserId) -> Result<Option<UserProfile>, DirectusError> {
        let request =
            self.request(Method::GET, &format!("/users/{user}")).query(&[("fields", "status,subscription_tier")]);
        match self.data(request).await {
            Ok(profile) => Ok(Some(profile)),
            Err(DirectusError::Status { status, .. }) if status == 403 || status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user's e-mail address, for their account page; `None` when Directus has none for them.
    pub async fn user_email(&self, user: UserId) -> Result<Option<String>, DirectusError> {
        #[derive(Deserialize)]
        struct Email {
            email: Option<String>,
        }
        let request = self.request(Method::GET, &format!("/users/{user}")).query(&[("fields", "email")]);
        Ok(self.data::<Email>(request).await?.email)
    }

    /// The active users with these e-mail addresses (admins to notify), as many as there are.
    pub async fn users_by_email(&self, emails: &[String]) -> Result<Vec<UserId>, DirectusError> {
        #[derive(Deserialize)]
        struct Id {
            id: UserId,
        }
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let request = self.request(Method::GET, "/users").query(&[
            ("fields", "id"),
            ("filter[email][_in]", &emails.join(",")),
            ("filter[status][_eq]", "active"),
            ("limit", "-1"),
        ]);
        Ok(self.data::<Vec<Id>>(request).await?.into_iter().map(|user| user.id).collect())
    }

    /// Every active premium and lifetime user (id, e-mail, tier): the users BYOK-only mode concerns.
    pub async fn entitled_users(&self) -> Result<Vec<EntitledUser>, DirectusError> {
        let request = self.request(Method::GET, "/users").query(&[
            ("fields", "id,email,subscription_tier"),
            ("filter[subscription_tier][_in]", "premium,lifetime"),
            ("filter[status][_eq]", "active"),
            ("sort", "email"),
            ("limit", "-1"),
        ]);
        self.data(request).await
    }

    /// The users who have a key routing can use (active, and neither refused by its provider nor out of quota).
    pub async fn users_with_usable_keys(&self) -> Result<std::collections::HashSet<String>, DirectusError> {
        #[derive(Deserialize)]
        struct Owner {
            user: Option<String>,
        }
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", "user"),
            ("filter[is_active][_eq]", "true"),
            ("filter[status][_nin]", "invalid,quota_exceeded"),
            ("limit", "-1"),
        ]);
        let owners: Vec<Owner> = self.data(request).await?;
        Ok(owners.into_iter().filter_map(|o| o.user).collect())
    }

    /// The amount of the user's newest grant (a purchase, a signup bonus, an admin's), if they have one.
    pub async fn last_grant(&self, user: UserId) -> Result<Option<Cents>, DirectusError> {
        let request = self.request(Method::GET, "/items/credit_transactions").query(&[
            ("fields", "cost_cents"),
            ("filter[user][_eq]", &user.to_string()),
            ("filter[transaction_type][_eq]", "grant"),
            ("sort", "-created_at"),
            ("limit", "1"),
        ]);
        let rows: Vec<LedgerSum> = self.data(request).await?;
        rows.first()
            .map(|row| Cents::from_json(&row.cost_cents))
            .transpose()
            .map_err(|_| DirectusError::Decode("a grant's cost_cents is not a number".into()))
    }

    /// The user's credit balance, summed by Directus per transaction type (no rows are transferred).
    pub async fn credit_balance(&self, user: UserId) -> Result<CreditBalance, DirectusError> {
        let request = self.request(Method::GET, "/items/credit_transactions").query(&[
            ("aggregate[sum]", "cost_cents"),
            ("groupBy[]", "transaction_type"),
            ("filter[user][_eq]", &user.to_string()),
            ("limit", "-1"),
        ]);
        let groups: Vec<LedgerGroup> = self.data(request).await?;
        let mut sums = Vec::with_capacity(groups.len());
        for group in groups {
            let kind = group.transaction_type.as_deref().and_then(|t| t.parse::<TransactionType>().ok());
            let amount = Cents::from_json(&group.sum.cost_cents)
                .map_err(|_| DirectusError::Decode("credit_transactions sum is not a number".into()))?;
            if let Some(kind) = kind {
                sums.push((kind, amount));
            }
        }
        Ok(CreditBalance::from_ledger_sums(sums))
    }

    /// The user's active keys, newest first, with status and ciphertext. Rows with unknown providers or
    /// statuses are skipped.
    pub async fn stored_keys(&self, user: UserId) -> Result<Vec<StoredKey>, DirectusError> {
        let request = self.request(Method::GET, "/items/user_api_keys").query(&[
            ("fields", "provider,status,is_active,encrypted_key"),
            ("filter[user][_eq]", &user.to_string()),
            ("filter[is_active][_eq]", "true"),
            ("sort", "-date_updated"),
            ("limit", "100"),
        ]);
        let rows: Vec<KeyRow> = self.data(request).await?;
        Ok(rows
            .into_iter()
            .filter(|r| r.is_active)
            .filter_map(|r| {
                let provider = r.provider.parse().ok()?;
                let status = r.status.as_deref().unwrap_or("unverified").parse().ok()?;
                Some(StoredKey { provider, status, envelope: r.encrypted_key })
            })
            .collect())
    }
}
