//! Who is calling: tier, account status, credit balance and stored keys, read from Directus and cached
//! briefly (the token only proves identity; everything that grants access is read fresh-ish from Directus).
//!
//! When Directus cannot be reached, a caller read recently is served on that last known profile for a
//! bounded time (`STALE_CALLER_MAX_AGE_SECS`), marked stale; callers never seen before get a coded 503.
//! Credits stay safe meanwhile: every call since the reading counts against it (see
//! [`crate::domain::credit_book`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;

use time::OffsetDateTime;

use crate::directus::{DirectusClient, DirectusError, StoredKey};
use crate::domain::budget::{OwnCaps, Spending};
use crate::domain::credit_book::{LedgerReading, unix_millis};
use crate::domain::error_code::{Code, Coded};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::Caller;
use crate::domain::tier::SubscriptionTier;
use crate::domain::user::UserId;
use crate::{metrics, sync};

/// After Directus failed, known callers are served their last profile without asking again for this long,
/// so an outage costs one slow read per interval instead of one per request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct CallerProfile {
    pub tier: SubscriptionTier,
    pub active: bool,
    /// The ledger balance, and when it was read.
    pub ledger: LedgerReading,
    /// What the user's calls on credits cost today and this month, read at the same time as the balance;
    /// `None` when spending caps are not set up (nothing to read it for).
    pub spending: Option<Spending>,
    /// What the user's own keys spent, read with `spending`.
    pub own_key_spending: Option<Spending>,
    /// The spending caps the user set for themselves.
    pub own_caps: OwnCaps,
    /// The credits the user was last granted (bought, or given by an admin), when low-balance notices follow it.
    pub last_grant: Option<Cents>,
    pub keys: Vec<StoredKey>,
}

impl CallerProfile {
    /// The newest usable stored key for `provider`, still sealed.
    pub fn usable_key(&self, provider: Provider) -> Option<&StoredKey> {
        self.keys.iter().find(|k| k.provider == provider && k.status.is_usable())
    }

    /// The policy's view of this caller for one call to `provider`, which may cost up to `credits_needed`.
    pub fn for_provider(&self, provider: Provider, available: Cents, credits_needed: Cents) -> Caller {
        Caller { tier: self.tier, has_usable_key: self.usable_key(provider).is_some(), available, credits_needed }
    }
}

/// A caller's profile, and whether it is the last known one served because Directus cannot be reached.
#[derive(Debug, Clone)]
pub struct CallerRead {
    pub profile: Arc<CallerProfile>,
    pub stale: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CallerError {
    #[error("no such user in Directus")]
    UnknownUser,
    #[error(transparent)]
    Directus(Arc<DirectusError>),
}

impl Coded for CallerError {
    fn code(&self) -> Code {
        match self {
            // A valid token for a user who no longer exists.
            CallerError::UnknownUser => Code::Unauthorized,
            CallerError::Directus(error) => error.code(),
        }
    }
}

pub struct CallerDirectory {
    /// Profiles read within `USER_CACHE_TTL_SECS`: used as they are.
    cache: Cache<UserId, Arc<CallerProfile>>,
    reader: Arc<Reader>,
    stale_served: AtomicU64,
}

/// What a caller's read takes from Directus beyond the profile, balance and keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerReads {
    /// Spending caps are set up: each caller's own caps and spending.
    pub budgets: bool,
    /// Low-balance notices follow each caller's last grant (`LOW_BALANCE_ALERT_PERCENT`).
    pub last_grant: bool,
}

/// What reads profiles from Directus, shared with the refreshes that run in the background.
struct Reader {
    directus: DirectusClient,
    reads: CallerReads,
    /// Profiles as last read, kept for `STALE_CALLER_MAX_AGE_SECS`: served while a newer one is read, and while
    /// Directus is unreachable.
    last_known: Cache<UserId, Arc<CallerProfile>>,
    last_failure: Mutex<Option<Instant>>,
}

impl CallerDirectory {
    pub fn new(directus: DirectusClient, ttl: Duration, stale_max_age: Duration, reads: CallerReads) -> Self {
        let cache = Cache::builder().max_capacity(100_000).time_to_live(ttl).build();
        let last_known = Cache::builder().max_capacity(100_000).time_to_live(stale_max_age.max(ttl)).build();
        let reader = Arc::new(Reader { directus, reads, last_known, last_failure: Mutex::new(None) });
        CallerDirectory { cache, reader, stale_served: AtomicU64::new(0) }
    }

    /// The caller's profile. No request of a user read before waits for Directus: once the cached profile is
    /// older than the TTL, the last one read is used while a new one is read in the background (one read per
    /// user at a time; the next request gets it). Only a user never seen (or forgotten) waits for the read.
    /// Credits stay exact on an older reading: every cost since it counts against it.
    pub async fn profile(&self, user: UserId) -> Result<CallerRead, CallerError> {
        if let Some(profile) = self.cache.get(&user).await {
            return Ok(CallerRead { profile, stale: false });
        }
        // Boxed: a miss is rare, and its future (the cache's loader, the last known profile, about 1.2 KB) would
        // otherwise be part of every call's, copied with it.
        Box::pin(self.on_miss(user)).await
    }

    async fn on_miss(&self, user: UserId) -> Result<CallerRead, CallerError> {
        if self.reader.failed_recently()
            && let Some(read) = self.stale(user).await
        {
            return Ok(read);
        }
        if let Some(profile) = self.reader.last_known.get(&user).await {
            let (cache, reader) = (self.cache.clone(), Arc::clone(&self.reader));
            tokio::spawn(async move {
                // Joins a read of this user already under way instead of starting another.
                if let Err(error) = cache.try_get_with(user, Arc::clone(&reader).fetch(user)).await {
                    reader.failed(&error);
                }
            });
            return Ok(CallerRead { profile, stale: false });
        }
        // Boxed: the read (up to eight Directus requests at once) is a future of about 45 KB, which inline would
        // make this one that size.
        match self.cache.try_get_with(user, Box::pin(Arc::clone(&self.reader).fetch(user))).await {
            Ok(profile) => Ok(CallerRead { profile, stale: false }),
            Err(error) if self.reader.failed(&error) => self.stale(user).await.ok_or_else(|| (*error).clone()),
            Err(error) => Err((*error).clone()),
        }
    }

    /// Drops the cached profile, e.g. after the user's keys changed, so routing sees the change at once.
    pub async fn forget(&self, user: UserId) {
        self.cache.invalidate(&user).await;
        self.reader.last_known.invalidate(&user).await;
    }

    /// Drops every cached profile (changes may have been missed); last known ones stay for outages.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// Whether callers are being served on last known profiles (the last read failed and none has succeeded
    /// since), and how many answers were. Without traffic nothing reads callers, so a failure older than the
    /// retry interval is checked again with a ping to Directus.
    pub async fn stale_status(&self) -> (bool, u64) {
        let served = self.stale_served.load(Ordering::Relaxed);
        let failed_at = *sync::lock(&self.reader.last_failure);
        let Some(failed_at) = failed_at else { return (false, served) };
        if failed_at.elapsed() >= RETRY_AFTER_FAILURE && self.reader.directus.ping().await.is_ok() {
            sync::lock(&self.reader.last_failure).take();
            tracing::info!("Directus answers again; callers will be read from it");
            return (false, served);
        }
        (true, served)
    }

    async fn stale(&self, user: UserId) -> Option<CallerRead> {
        let profile = self.reader.last_known.get(&user).await?;
        self.stale_served.fetch_add(1, Ordering::Relaxed);
        metrics::stale_answer("caller");
        Some(CallerRead { profile, stale: true })
    }
}

impl Reader {
    fn failed_recently(&self) -> bool {
        sync::lock(&self.last_failure).is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
    }

    /// Notes a failed read; whether it was Directus being unreachable (last known profiles are served then).
    fn failed(&self, error: &CallerError) -> bool {
        let CallerError::Directus(e) = error else { return false };
        if !e.is_outage() {
            return false;
        }
        if sync::lock(&self.last_failure).replace(Instant::now()).is_none() {
            tracing::warn!(error = %e, "cannot read callers from Directus; serving last known profiles");
        }
        true
    }

    async fn fetch(self: Arc<Self>, user: UserId) -> Result<Arc<CallerProfile>, CallerError> {
        let now = OffsetDateTime::now_utc();
        let read_at = unix_millis(now);
        let budget = async {
            if !self.reads.budgets {
                return Ok((None, None, OwnCaps::default()));
            }
            let (credits, own_keys, own) = tokio::join!(
                self.directus.credit_spending(user, now),
                self.directus.own_key_spending(user, now),
                self.directus.own_caps(user)
            );
            Ok((Some(credits?), Some(own_keys?), own?))
        };
        let last_grant = async {
            if !self.reads.last_grant {
                return Ok(None);
            }
            self.directus.last_grant(user).await
        };
        let (profile, balance, keys, budget, last_grant) = tokio::join!(
            self.directus.user_profile(user),
            self.directus.credit_balance(user),
            self.directus.stored_keys(user),
            budget,
            last_grant,
        );
        let directus_error = |e| CallerError::Directus(Arc::new(e));
        // An unknown user is reported as such even if the other reads failed.
        let profile = profile.map_err(directus_error)?.ok_or(CallerError::UnknownUser)?;
        let (balance, keys) = (balance.map_err(directus_error)?, keys.map_err(directus_error)?);
        let (spending, own_key_spending, own_caps) = budget.map_err(directus_error)?;
        let last_grant = last_grant.map_err(directus_error)?;
        let tier = match profile.subscription_tier.as_deref().map(str::parse::<SubscriptionTier>) {
            Some(Ok(tier)) => tier,
            Some(Err(_)) => {
                tracing::warn!(%user, "unknown subscription_tier in Directus; treating the user as free");
                SubscriptionTier::Free
            }
            None => SubscriptionTier::Free,
        };
        let ledger = LedgerReading { balance: balance.cents(), read_at };
        let active = profile.status == "active";
        let profile =
            Arc::new(CallerProfile { tier, active, ledger, spending, own_key_spending, own_caps, last_grant, keys });
        self.last_known.insert(user, Arc::clone(&profile)).await;
        if sync::lock(&self.last_failure).take().is_some() {
            tracing::info!("callers are read from Directus again; no longer serving stale profiles");
        }
        Ok(profile)
    }
}
