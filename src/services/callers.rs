//! Who is calling: tier, account status, credit balance and stored keys, read from Directus and cached
//! briefly (the token only proves identity; everything that grants access is read fresh-ish from Directus).

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::flag_store::{FlagState, FlagStore, FlagsUnavailable};
use crate::directus::{DirectusClient, DirectusError, StoredKey};
use crate::domain::credits::CreditBalance;
use crate::domain::provider::Provider;
use crate::domain::routing::Caller;
use crate::domain::tier::SubscriptionTier;
use crate::domain::user::UserId;

#[derive(Debug, Clone)]
pub struct CallerProfile {
    pub tier: SubscriptionTier,
    pub active: bool,
    pub balance: CreditBalance,
    pub keys: Vec<StoredKey>,
}

impl CallerProfile {
    /// The newest usable stored key for `provider`, still sealed.
    pub fn usable_key(&self, provider: Provider) -> Option<&StoredKey> {
        self.keys.iter().find(|k| k.provider == provider && k.status.is_usable())
    }

    /// The policy's view of this caller for one provider.
    pub fn for_provider(&self, provider: Provider) -> Caller {
        Caller {
            tier: self.tier,
            has_usable_key: self.usable_key(provider).is_some(),
            balance: self.balance,
            credits_needed_cents: 1,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallerError {
    #[error("no such user in Directus")]
    UnknownUser,
    #[error(transparent)]
    Directus(Arc<DirectusError>),
}

/// The flags in force and an active caller: where every decision about a user's request starts.
pub struct CallContext {
    pub flags: FlagState,
    pub caller: Arc<CallerProfile>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Flags(#[from] FlagsUnavailable),
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error("account is not active")]
    AccountInactive,
}

/// Reads the flags and the caller concurrently and refuses inactive accounts.
pub async fn call_context(
    flags: &FlagStore,
    callers: &CallerDirectory,
    user: UserId,
) -> Result<CallContext, ContextError> {
    let (flags, caller) = tokio::join!(flags.current(), callers.profile(user));
    let (flags, caller) = (flags?, caller?);
    if !caller.active {
        return Err(ContextError::AccountInactive);
    }
    Ok(CallContext { flags, caller })
}

pub struct CallerDirectory {
    directus: DirectusClient,
    cache: Cache<UserId, Arc<CallerProfile>>,
}

impl CallerDirectory {
    pub fn new(directus: DirectusClient, ttl: Duration) -> Self {
        CallerDirectory { directus, cache: Cache::builder().max_capacity(100_000).time_to_live(ttl).build() }
    }

    /// Concurrent requests for the same user share one set of Directus reads.
    pub async fn profile(&self, user: UserId) -> Result<Arc<CallerProfile>, CallerError> {
        self.cache.try_get_with(user, self.fetch(user)).await.map_err(|e| (*e).clone())
    }

    /// Drops the cached profile, e.g. after the user's keys changed, so routing sees the change at once.
    pub async fn forget(&self, user: UserId) {
        self.cache.invalidate(&user).await;
    }

    async fn fetch(&self, user: UserId) -> Result<Arc<CallerProfile>, CallerError> {
        let (profile, balance, keys) = tokio::join!(
            self.directus.user_profile(user),
            self.directus.credit_balance(user),
            self.directus.stored_keys(user),
        );
        let directus_error = |e| CallerError::Directus(Arc::new(e));
        // An unknown user is reported as such even if the other reads failed.
        let profile = profile.map_err(directus_error)?.ok_or(CallerError::UnknownUser)?;
        let (balance, keys) = (balance.map_err(directus_error)?, keys.map_err(directus_error)?);
        let tier = match profile.subscription_tier.as_deref().map(str::parse::<SubscriptionTier>) {
            Some(Ok(tier)) => tier,
            Some(Err(_)) => {
                tracing::warn!(%user, "unknown subscription_tier in Directus; treating the user as free");
                SubscriptionTier::Free
            }
            None => SubscriptionTier::Free,
        };
        Ok(Arc::new(CallerProfile { tier, active: profile.status == "active", balance, keys }))
    }
}
