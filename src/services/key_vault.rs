//! Users' provider keys: checked with the provider, sealed by the sidecar, stored in Directus as ciphertext.

use std::borrow::Cow;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::crypto::envelope::{KeyOwner, Keyring};
use crate::directus::{DirectusClient, DirectusError, KeyRecord, KeyUpdate};
use crate::domain::api_key::KeyStatus;
use crate::domain::error_code::{Code, Coded};
use crate::domain::provider::Provider;
use crate::domain::provider_key::{KeyFormatError, ProviderKey};
use crate::domain::upstream::UpstreamFailure;
use crate::domain::user::UserId;
use crate::providers::{KeyCheck, ProviderClient};

/// A stored key as its owner sees it: masked, with what we last learned about it.
#[derive(Debug, Clone, Serialize)]
pub struct KeySummary {
    pub provider: Provider,
    pub hint: Option<String>,
    pub status: KeyStatus,
    pub is_active: bool,
    pub last_validated_at: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the key vault is not configured (no ENCRYPTION_KEY)")]
    NotConfigured,
    #[error(transparent)]
    Format(#[from] KeyFormatError),
    #[error("{} rejected this API key", .0.display_name())]
    RejectedByProvider(Provider),
    #[error("no stored key")]
    NotFound,
    /// The stored ciphertext cannot be opened (tampered, moved, or sealed with a retired key).
    #[error("stored key cannot be opened")]
    Unusable(Provider),
    #[error(transparent)]
    Directus(#[from] DirectusError),
}

impl Coded for VaultError {
    fn code(&self) -> Code {
        match self {
            VaultError::NotConfigured => Code::ByokNotConfigured,
            VaultError::Format(_) => Code::InvalidKeyFormat,
            VaultError::RejectedByProvider(_) => Code::KeyRejected,
            VaultError::NotFound => Code::KeyNotFound,
            VaultError::Unusable(_) => Code::KeyUnusable,
            VaultError::Directus(error) => error.code(),
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            VaultError::Format(error) => error.to_string().into(),
            VaultError::RejectedByProvider(provider) => format!(
                "{} rejected this API key: it may be mistyped, revoked or lack permissions. Create a new key at {} \
                 and try again.",
                provider.display_name(),
                provider.key_page_url()
            )
            .into(),
            VaultError::Unusable(provider) => {
                format!("We can no longer read your saved {} key. Please enter it again.", provider.display_name())
                    .into()
            }
            _ => self.code().message().into(),
        }
    }
}

pub struct KeyVault {
    keyring: Option<Arc<Keyring>>,
    directus: DirectusClient,
    providers: ProviderClient,
}

impl KeyVault {
    pub fn new(keyring: Option<Arc<Keyring>>, directus: DirectusClient, providers: ProviderClient) -> Self {
        KeyVault { keyring, directus, providers }
    }

    /// Whether `ENCRYPTION_KEY` is set: without it BYOK is not configured.
    pub fn is_configured(&self) -> bool {
        self.keyring.is_some()
    }

    fn keyring(&self) -> Result<&Keyring, VaultError> {
        self.keyring.as_deref().ok_or(VaultError::NotConfigured)
    }

    /// Checks the key with its provider, then stores it sealed. A key the provider refuses is not stored;
    /// a provider that cannot be reached does not lose the key: it is stored `unverified`.
    pub async fn save(&self, user: UserId, provider: Provider, raw: &SecretString) -> Result<KeySummary, VaultError> {
        self.keyring()?;
        let key = ProviderKey::parse(provider, raw.expose_secret())?;
        let check = self.providers.check_key(provider, &key).await;
        if check == KeyCheck::Failed(UpstreamFailure::InvalidKey) {
            return Err(VaultError::RejectedByProvider(provider));
        }
        self.store(user, provider, &key, status_after(provider, &check)).await
    }

    /// Stores a key sealed without asking its provider first (moving keys in from another platform: thousands
    /// of checks at once would hit the providers' limits). It is stored `unverified`, usable at once, and the
    /// background re-check (`KEY_REVERIFY_INTERVAL_SECS`) asks the provider later.
    pub async fn import(&self, user: UserId, provider: Provider, raw: &SecretString) -> Result<KeySummary, VaultError> {
        self.keyring()?;
        let key = ProviderKey::parse(provider, raw.expose_secret())?;
        let update = KeyUpdate { last_error: None, ..KeyUpdate::blank() };
        self.store(user, provider, &key, update).await
    }

    async fn store(
        &self,
        user: UserId,
        provider: Provider,
        key: &ProviderKey,
        status: KeyUpdate,
    ) -> Result<KeySummary, VaultError> {
        let sealed = self.keyring()?.seal(KeyOwner { user, provider }, key.expose().as_bytes());
        let update = KeyUpdate { encrypted_key: Some(sealed), key_hint: Some(key.hint(provider)), ..status };
        let record = self.directus.save_key(user, provider, &update).await?;
        tracing::info!(%user, %provider, status = update.status.as_str(), "provider key stored");
        Ok(summary(record))
    }

    pub async fn list(&self, user: UserId) -> Result<Vec<KeySummary>, VaultError> {
        Ok(self.directus.key_records(user).await?.into_iter().filter_map(summary_of_known).collect())
    }

    pub async fn delete(&self, user: UserId, provider: Provider) -> Result<(), VaultError> {
        match self.directus.delete_keys(user, provider).await? {
            0 => Err(VaultError::NotFound),
            _ => Ok(()),
        }
    }

    /// Checks the stored key with its provider again and records the outcome. A key that can no longer be
    /// opened is marked `invalid`, so routing stops picking it and the user is told to enter it again.
    pub async fn verify(&self, user: UserId, provider: Provider) -> Result<KeySummary, VaultError> {
        let update = match self.open(user, provider).await {
            Ok(key) => status_after(provider, &self.providers.check_key(provider, &key).await),
            Err(VaultError::Unusable(_)) => {
                let last_error =
                    format!("This saved {} key can no longer be read. Please enter it again.", provider.display_name());
                let update =
                    KeyUpdate { status: KeyStatus::Invalid, last_error: Some(last_error), ..KeyUpdate::blank() };
                self.directus.save_key(user, provider, &update).await?;
                return Err(VaultError::Unusable(provider));
            }
            Err(other) => return Err(other),
        };
        Ok(summary(self.directus.save_key(user, provider, &update).await?))
    }

    /// Checks again up to `limit` keys in `status`, least recently updated first: `unverified` ones with the
    /// key check, `quota_exceeded` ones with a call that proves the account can pay (see
    /// [`ProviderClient::check_quota`]). Returns the keys that routing could not use and now can.
    pub async fn recheck(&self, status: KeyStatus, limit: usize) -> Result<Vec<(UserId, Provider)>, VaultError> {
        self.keyring()?;
        let mut usable_again = Vec::new();
        for (user, provider) in self.directus.keys_with_status(status, limit).await? {
            let (Ok(user), Ok(provider)) = (UserId::parse(&user), provider.parse::<Provider>()) else { continue };
            let checked = match status {
                KeyStatus::QuotaExceeded => self.recheck_quota(user, provider).await,
                _ => self.verify(user, provider).await.map(Some),
            };
            match checked {
                Ok(Some(summary)) => {
                    tracing::info!(%user, %provider, was = status.as_str(), now = summary.status.as_str(), "key checked again");
                    if summary.status.is_usable() && !status.is_usable() {
                        usable_again.push((user, provider));
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%user, %provider, %error, "key could not be checked again"),
            }
        }
        Ok(usable_again)
    }

    /// A key out of quota is recorded `active` once a paid call works, or `invalid` if it is refused. An answer
    /// that says nothing about the account (unreachable, rate limited, an outage, a refused probe) leaves it
    /// as it was (`None`): it is never routed to on a guess.
    async fn recheck_quota(&self, user: UserId, provider: Provider) -> Result<Option<KeySummary>, VaultError> {
        let key = self.open(user, provider).await?;
        let check = self.providers.check_quota(provider, &key).await;
        match check {
            KeyCheck::Valid | KeyCheck::Failed(UpstreamFailure::InvalidKey | UpstreamFailure::QuotaExhausted) => {
                let update = status_after(provider, &check);
                Ok(Some(summary(self.directus.save_key(user, provider, &update).await?)))
            }
            KeyCheck::Failed(_) | KeyCheck::Unreachable => Ok(None),
        }
    }

    /// Records what a forwarded call learned about the key (invalid, out of quota), so routing stops using it.
    pub async fn mark(&self, user: UserId, provider: Provider, failure: UpstreamFailure) -> Result<(), VaultError> {
        self.directus.save_key(user, provider, &status_after(provider, &KeyCheck::Failed(failure))).await?;
        Ok(())
    }

    /// The plaintext key for a call, opened from its envelope.
    pub async fn open(&self, user: UserId, provider: Provider) -> Result<ProviderKey, VaultError> {
        self.keyring()?;
        let row = self.directus.sealed_key(user, provider).await?.ok_or(VaultError::NotFound)?;
        self.open_sealed(user, provider, &row.encrypted_key)
    }

    /// Opens an envelope already read from Directus (the caller cache keeps them), with no I/O.
    pub fn open_sealed(&self, user: UserId, provider: Provider, envelope: &str) -> Result<ProviderKey, VaultError> {
        let keyring = self.keyring()?;
        let opened = keyring.open(KeyOwner { user, provider }, envelope).map_err(|reason| {
            tracing::warn!(%user, %provider, %reason, "stored key cannot be opened");
            VaultError::Unusable(provider)
        })?;
        ProviderKey::from_opened(&opened).ok_or(VaultError::Unusable(provider))
    }
}

impl KeyUpdate {
    fn blank() -> Self {
        KeyUpdate {
            encrypted_key: None,
            key_hint: None,
            status: KeyStatus::Unverified,
            is_active: true,
            last_validated_at: None,
            last_error: None,
        }
    }
}

/// What a provider check means for the stored row.
fn status_after(provider: Provider, check: &KeyCheck) -> KeyUpdate {
    let now = || OffsetDateTime::now_utc().format(&Rfc3339).ok();
    let name = provider.display_name();
    let (status, last_validated_at, last_error) = match check {
        KeyCheck::Valid => (KeyStatus::Active, now(), None),
        KeyCheck::Failed(UpstreamFailure::InvalidKey) => (
            KeyStatus::Invalid,
            now(),
            Some(format!(
                "{name} rejected this key. Create a new one at {} and enter it again.",
                provider.key_page_url()
            )),
        ),
        KeyCheck::Failed(UpstreamFailure::QuotaExhausted) => (
            KeyStatus::QuotaExceeded,
            now(),
            Some(format!("{name} reports no remaining quota or credit for this key. Check your {name} billing.")),
        ),
        KeyCheck::Failed(UpstreamFailure::RateLimited) => {
            (KeyStatus::Unverified, None, Some(format!("{name} rate-limited the check; it will be checked again.")))
        }
        KeyCheck::Failed(UpstreamFailure::Outage | UpstreamFailure::Rejected) | KeyCheck::Unreachable => (
            KeyStatus::Unverified,
            None,
            Some(format!("{name} could not be reached to check this key; it will be checked again.")),
        ),
    };
    KeyUpdate { status, last_validated_at, last_error, ..KeyUpdate::blank() }
}

fn summary_of_known(record: KeyRecord) -> Option<KeySummary> {
    let provider = record.provider.parse().ok()?;
    Some(KeySummary {
        provider,
        hint: record.key_hint,
        // A status this version does not know is shown as needing a check, which is what it means to routing.
        status: record.status.as_deref().and_then(|s| s.parse().ok()).unwrap_or(KeyStatus::Unverified),
        is_active: record.is_active,
        last_validated_at: record.last_validated_at,
        last_error: record.last_error,
    })
}

fn summary(record: KeyRecord) -> KeySummary {
    summary_of_known(record).expect("rows we write carry a known provider")
}
