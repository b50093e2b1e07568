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
    /// The provider's account is out of quota; paused until the user re-verifies it.
    QuotaExceeded,
    /// Recently rate limited; still usable, calls are retried with backoff.
    RateLimited,
}

impl KeyStatus {
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
        match s {
            "unverified" => Ok(KeyStatus::Unverified),
            "active" => Ok(KeyStatus::Active),
            "invalid" => Ok(KeyStatus::Invalid),
            "quota_exceeded" => Ok(KeyStatus::QuotaExceeded),
            "rate_limited" => Ok(KeyStatus::RateLimited),
            _ => Err(UnknownKeyStatus),
        }
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
