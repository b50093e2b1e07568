use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// A Directus user id. Only ever built from a verified token, so it is the one thing that decides whose
/// data a request touches; being a UUID it cannot widen a Directus filter it is placed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(Uuid);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user id is not a UUID")]
pub struct InvalidUserId;

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, InvalidUserId> {
        // Hyphenated form only: that is what Directus issues, and one spelling per user keeps cache keys unique.
        if raw.len() != 36 {
            return Err(InvalidUserId);
        }
        Uuid::try_parse(raw).map(UserId).map_err(|_| InvalidUserId)
    }
}

/// Spooled records carry user ids; reading one back goes through the same parser.
impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        UserId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_hyphenated_uuid_and_prints_it_back() {
        let raw = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";
        assert_eq!(UserId::parse(raw).unwrap().to_string(), raw);
    }

    #[test]
    fn rejects_filter_injection_and_other_spellings() {
        for bad in [
            "",
            "1",
            "6f1c2d0e8a1b4c3d9e8f0a1b2c3d4e5f",
            "{6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f}",
            "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f&filter[user][_neq]=x",
            "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5g",
        ] {
            assert_eq!(UserId::parse(bad), Err(InvalidUserId), "{bad:?}");
        }
    }
}
