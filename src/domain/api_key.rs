use std::str::FromStr;

use serde::Serialize;

/// `user_api_keys.status`: what we last learned about a stored key from its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Saved while the provider could not be reached; checked again on use.
    Unverified,
    Active,
    /// The provider refused it (401/403). Never used again until the user replaces or re-verifies it.
    Invalid,
    /// The provider's account is out of quota; not routed to until a check finds quota again (the user's
    /// "verify", or the background re-check every `KEY_QUOTA_RECHECK_INTERVAL_SECS`).
    QuotaExceeded,
    /// Recently rate limited; still usable, calls are retried with backoff.
    RateLimited,
}

impl KeyStatus {
    /// As `user_api_keys.status` stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Unverified => "unverified",
            KeyStatus::Active => "active",
            KeyStatus::Invalid => "invalid",
            KeyStatus::QuotaExceeded => "quota_exceeded",
            KeyStatus::RateLimited => "rate_limited",
        }
    }

    /// Whether routing may pick this key.
    pub fn is_usable(self) -> bool {
        matches!(self, KeyStatus::Unverified | KeyStatus::Active | KeyStatus::RateLimited)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key status")]
pub struct UnknownKeyStatus;

impl FromStr for KeyStatus {
    type Err = UnknownKeyStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALL: [KeyStatus; 5] = [
            KeyStatus::Unverified,
            KeyStatus::Active,
            KeyStatus::Invalid,
            KeyStatus::QuotaExceeded,
            KeyStatus::RateLimited,
        ];
        ALL.into_iter().find(|status| status.as_str() == s).ok_or(UnknownKeyStatus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_and_exhausted_keys_are_never_routed_to() {
        let usable: Vec<_> = ["unverified", "active", "invalid", "quota_exceeded", "rate_limited"]
            .iter()
            .map(|s| s.parse::<KeyStatus>().unwrap().is_usable())
            .collect();
        assert_eq!(usable, [true, true, false, false, true]);
        assert_eq!("ACTIVE".parse::<KeyStatus>(), Err(UnknownKeyStatus));
    }
}
