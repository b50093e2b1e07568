//! Per-minute limits on calls by tier, and on own-key calls.

use std::ops::RangeInclusive;

use super::reader::Reader;
use crate::domain::tier::SubscriptionTier;

/// What a count (of requests, calls) may be set to.
pub(super) const COUNTS: RangeInclusive<u32> = 1..=10_000_000;

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

pub(super) fn per_minute<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>, var: &'static str, default: u32) -> u32 {
    r.whole(var, default, COUNTS, "requests per minute", "Use e.g. 20")
}

pub(super) fn read<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> TierLimits {
    TierLimits {
        free_per_minute: per_minute(r, "RATE_LIMIT_FREE_PER_MIN", 20),
        premium_per_minute: per_minute(r, "RATE_LIMIT_PREMIUM_PER_MIN", 120),
        own_keys_premium_per_minute: per_minute(r, "RATE_LIMIT_BYOK_PREMIUM_PER_MIN", 600),
        own_keys_lifetime_per_minute: per_minute(r, "RATE_LIMIT_BYOK_LIFETIME_PER_MIN", 600),
    }
}
