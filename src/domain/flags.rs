use serde::{Deserialize, Serialize};

use super::tier::SubscriptionTier;

pub const BYOK_ENABLED: &str = "byok_enabled";
pub const BYOK_USES_INTERNAL_CREDITS: &str = "byok_uses_internal_credits";
pub const BYOK_ONLY_MODE: &str = "byok_only_mode";

/// One row of `feature_flags` as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRecord {
    pub key: String,
    pub is_enabled: bool,
    pub min_tier: Option<SubscriptionTier>,
}

/// The three system flags that drive routing, with the spec's defaults for any row that is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FlagSet {
    pub byok_enabled: bool,
    pub byok_uses_internal_credits: bool,
    pub byok_only_mode: bool,
    /// Lowest tier allowed to use BYOK: the `byok_enabled` row's `min_tier`, never below premium.
    pub byok_min_tier: SubscriptionTier,
}

impl Default for FlagSet {
    /// The spec's defaults: BYOK on for premium, BYOK-first, not BYOK-only.
    fn default() -> Self {
        FlagSet {
            byok_enabled: true,
            byok_uses_internal_credits: false,
            byok_only_mode: false,
            byok_min_tier: SubscriptionTier::BYOK_FLOOR,
        }
    }
}

/// The flags as the Directus hook read them right after a change, sent in its signed webhook and passed on to
/// the other replicas, so a change takes effect everywhere without reading Directus back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedFlags {
    /// Directus's clock, in ms, taken before the rows were read: they are at least this new.
    pub read_at: i64,
    pub rows: Vec<PushedRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedRow {
    pub key: String,
    pub is_enabled: bool,
    pub min_tier: Option<String>,
}

impl PushedFlags {
    /// A hook sends a handful of short rows; anything else is not ours to apply (the store reloads instead).
    pub fn is_plausible(&self) -> bool {
        self.rows.len() <= 64
            && self.rows.iter().all(|r| r.key.len() <= 64 && r.min_tier.as_ref().is_none_or(|t| t.len() <= 32))
    }

    pub fn records(&self) -> Vec<FlagRecord> {
        self.rows
            .iter()
            .map(|r| FlagRecord {
                key: r.key.clone(),
                is_enabled: r.is_enabled,
                min_tier: r.min_tier.as_deref().and_then(|t| t.parse().ok()),
            })
            .collect()
    }
}

/// Which row of the spec's configuration matrix is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingMode {
    /// `byok_enabled = false`: internal credits only.
    ByokDisabled,
    /// `byok_only_mode = true`: users' keys only, never internal credits.
    ByokOnly,
    /// `byok_uses_internal_credits = true`: credits first, BYOK as fallback.
    CreditFirst,
    /// The default: BYOK first, credits as fallback.
    ByokFirst,
}

impl FlagSet {
    /// Builds the set from `feature_flags` rows; returns the keys that were missing so the caller can warn.
    pub fn from_records(records: &[FlagRecord]) -> (FlagSet, Vec<&'static str>) {
        let mut flags = FlagSet::default();
        let mut missing = Vec::new();
        let find = |key: &str| records.iter().find(|r| r.key == key);

        match find(BYOK_ENABLED) {
            Some(r) => {
                flags.byok_enabled = r.is_enabled;
                flags.byok_min_tier =
                    r.min_tier.map_or(SubscriptionTier::BYOK_FLOOR, |t| t.max(SubscriptionTier::BYOK_FLOOR));
            }
            None => missing.push(BYOK_ENABLED),
        }
        match find(BYOK_USES_INTERNAL_CREDITS) {
            Some(r) => flags.byok_uses_internal_credits = r.is_enabled,
            None => missing.push(BYOK_USES_INTERNAL_CREDITS),
        }
        match find(BYOK_ONLY_MODE) {
            Some(r) => flags.byok_only_mode = r.is_enabled,
            None => missing.push(BYOK_ONLY_MODE),
        }
        (flags, missing)
    }

    /// The matrix, with its precedence: disabled beats everything, then BYOK-only beats credit-first.
    pub fn mode(&self) -> RoutingMode {
        if !self.byok_enabled {
            RoutingMode::ByokDisabled
        } else if self.byok_only_mode {
            RoutingMode::ByokOnly
        } else if self.byok_uses_internal_credits {
            RoutingMode::CreditFirst
        } else {
            RoutingMode::ByokFirst
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, is_enabled: bool, min_tier: Option<SubscriptionTier>) -> FlagRecord {
        FlagRecord { key: key.into(), is_enabled, min_tier }
    }

    #[test]
    fn reads_every_flag_and_reports_nothing_missing() {
        let (flags, missing) = FlagSet::from_records(&[
            record(BYOK_ENABLED, false, Some(SubscriptionTier::Lifetime)),
            record(BYOK_USES_INTERNAL_CREDITS, true, None),
            record(BYOK_ONLY_MODE, true, None),
            record("unrelated", true, None),
        ]);
        assert!(missing.is_empty());
        assert_eq!(
            flags,
            FlagSet {
                byok_enabled: false,
                byok_uses_internal_credits: true,
                byok_only_mode: true,
                byok_min_tier: SubscriptionTier::Lifetime,
            }
        );
    }

    #[test]
    fn missing_rows_fall_back_to_the_spec_defaults_and_are_reported() {
        let (flags, missing) = FlagSet::from_records(&[]);
        assert_eq!(flags, FlagSet::default());
        assert_eq!(missing, vec![BYOK_ENABLED, BYOK_USES_INTERNAL_CREDITS, BYOK_ONLY_MODE]);
    }

    #[test]
    fn a_min_tier_below_premium_cannot_open_byok_to_free_users() {
        let (flags, _) = FlagSet::from_records(&[record(BYOK_ENABLED, true, Some(SubscriptionTier::Free))]);
        assert_eq!(flags.byok_min_tier, SubscriptionTier::Premium);
    }

    #[test]
    fn mode_follows_the_matrix_precedence() {
        let set = |enabled, only, credits| FlagSet {
            byok_enabled: enabled,
            byok_only_mode: only,
            byok_uses_internal_credits: credits,
            byok_min_tier: SubscriptionTier::Premium,
        };
        for only in [false, true] {
            for credits in [false, true] {
                assert_eq!(set(false, only, credits).mode(), RoutingMode::ByokDisabled);
            }
        }
        assert_eq!(set(true, true, false).mode(), RoutingMode::ByokOnly);
        assert_eq!(set(true, true, true).mode(), RoutingMode::ByokOnly);
        assert_eq!(set(true, false, true).mode(), RoutingMode::CreditFirst);
        assert_eq!(set(true, false, false).mode(), RoutingMode::ByokFirst);
    }
}
