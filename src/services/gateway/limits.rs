//! How much one user, and everyone together, may call providers: per-minute limits by tier (credit calls) and
//! for own keys, calls running per user, and the bounded upstream call slots.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::GatewayError;
use crate::config::TierLimits;
use crate::domain::tier::SubscriptionTier;
use crate::domain::user::UserId;
use crate::metrics;
use crate::services::in_flight::{InFlight, Permit};
use crate::services::rate_limit::RateLimiter;
use crate::shared::redis::Redis;

/// What a call holds while it runs: one of the upstream call slots, and one of its user's.
pub struct CallSlot {
    _upstream: OwnedSemaphorePermit,
    _user: Permit<UserId>,
}

pub struct CallLimits {
    /// Calls on credits, by tier.
    credit_calls: RateLimiter,
    /// Calls with the user's own keys: limited too (high by default), apart from credit calls.
    own_key_calls: RateLimiter,
    per_minute: TierLimits,
    upstream_slots: Arc<Semaphore>,
    /// Calls running per user, so one user cannot take every upstream slot.
    user_calls: Arc<InFlight<UserId>>,
    /// How long a call waits for an upstream slot before it is refused as busy.
    slot_wait: Duration,
}

impl CallLimits {
    /// With `redis`, the per-minute limits are shared by every replica.
    pub fn new(
        per_minute: TierLimits,
        redis: Option<Arc<Redis>>,
        upstream_slots: usize,
        per_user: u32,
        slot_wait: Duration,
    ) -> Self {
        CallLimits {
            credit_calls: RateLimiter::new("tier", redis.clone()),
            own_key_calls: RateLimiter::new("own_keys", redis),
            per_minute,
            upstream_slots: Arc::new(Semaphore::new(upstream_slots)),
            user_calls: InFlight::new(per_user),
            slot_wait,
        }
    }

    /// A call paid with credits, within the tier's limit.
    pub(super) async fn credit_call(&self, user: UserId, tier: SubscriptionTier) -> Result<(), GatewayError> {
        self.credit_calls.acquire(user, self.per_minute.per_minute(tier)).await.map_err(|retry_after| {
            metrics::rate_limited("tier");
            GatewayError::RateLimited { retry_after }
        })
    }

    /// A call with the user's own key, within the own-key limit.
    pub(super) async fn own_key_call(&self, user: UserId, tier: SubscriptionTier) -> Result<(), GatewayError> {
        self.own_key_calls.acquire(user, self.per_minute.own_keys_per_minute(tier)).await.map_err(|retry_after| {
            metrics::rate_limited("own_keys");
            GatewayError::OwnKeyRateLimited { retry_after }
        })
    }

    /// One of the user's call slots (refused at once past their cap), then one of the bounded upstream call
    /// slots; waiting is bounded too, so a flood of slow calls turns into quick, clear refusals instead of a
    /// growing queue.
    pub(super) async fn call_slot(&self, user: UserId) -> Result<CallSlot, GatewayError> {
        let mine = self.user_calls.try_acquire(&user).ok_or_else(|| {
            metrics::rate_limited("calls_in_flight");
            GatewayError::TooManyCalls(self.user_calls.cap())
        })?;
        let slots = Arc::clone(&self.upstream_slots);
        match tokio::time::timeout(self.slot_wait, slots.acquire_owned()).await {
            Ok(permit) => Ok(CallSlot { _upstream: permit.expect("the semaphore is never closed"), _user: mine }),
            Err(_) => {
                tracing::warn!(wait_secs = self.slot_wait.as_secs(), "no upstream call slot became free");
                Err(GatewayError::Busy)
            }
        }
    }
}
