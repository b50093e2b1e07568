use std::str::FromStr;

use serde::Serialize;

/// A user's subscription tier (`directus_users.subscription_tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionTier {
    Free,
    Premium,
    Lifetime,
}

impl SubscriptionTier {
    /// BYOK is a paid feature: whatever a flag row says, nothing below this tier may use it.
    pub const BYOK_FLOOR: SubscriptionTier = SubscriptionTier::Premium;

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionTier::Free => "free",
            SubscriptionTier::Premium => "premium",
            SubscriptionTier::Lifetime => "lifetime",
        }
    }

    /// Tiers are ordered free < premium < lifetime; lifetime includes everything premium has.
    pub fn meets(self, minimum: SubscriptionTier) -> bool {
        self >= minimum
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown subscription tier; expected free, premium or lifetime")]
pub struct UnknownTier;

impl FromStr for SubscriptionTier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free" => Ok(SubscriptionTier::Free),
            "premium" => Ok(SubscriptionTier::Premium),
            "lifetime" => Ok(SubscriptionTier::Lifetime),
            _ => Err(UnknownTier),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_meets_premium_but_free_does_not() {
        use SubscriptionTier::*;
        assert!(Lifetime.meets(Premium));
        assert!(Premium.meets(Premium));
        assert!(!Free.meets(Premium));
        assert!(!Premium.meets(Lifetime));
    }

    #[test]
    fn parses_only_known_tiers() {
        assert_eq!("lifetime".parse(), Ok(SubscriptionTier::Lifetime));
        assert_eq!("Premium".parse::<SubscriptionTier>(), Err(UnknownTier));
    }
}
