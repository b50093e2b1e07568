//! Per-minute limits on calls by tier, and on own-key calls.

use crate::domain::tier::SubscriptionTier;

#[derive(Debug, Clone, Copy)]
pub struct TierLimits {
    /// Internal-credit calls.
    pub free_per_minute: u32,
    pub premium_per_minute: u32,
    /// Calls with the user's own keys (only premium and lifetime users have them): high, but not unlimited,
    /// so a looping script cannot take the gateway for itself.
    pub own_keys_premium_per_minute: u32,
    pub own_keys_lifetime_per_minute: u32,
}

impl TierLimits {
    pub fn per_minute(&self, tier: SubscriptionTier) -> u32 {
        match tier {
            SubscriptionTier::Free => self.free_per_minute,
            SubscriptionTier::Premium | SubscriptionTier::Lifetime => self.premium_per_minute,
        }
    }

    pub fn own_keys_per_minute(&self, tier: SubscriptionTier) -> u32 {
        match tier {
            SubscriptionTier::Free | SubscriptionTier::Premium => self.own_keys_premium_per_minute,
            SubscriptionTier::Lifetime => self.own_keys_lifetime_per_minute,
        }
    }
}
