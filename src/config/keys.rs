//! The key vault's keys: `ENCRYPTION_KEY` and the previous keys kept for rotation.

use std::sync::Arc;

use super::reader::Reader;
use crate::crypto::encryption_key::EncryptionKey;
use crate::crypto::envelope::Keyring;

pub(super) const GEN_HEX_KEY: &str = "Generate one with: openssl rand -hex 32";

/// `ENCRYPTION_KEY` (seals and opens) plus `ENCRYPTION_KEYS_PREVIOUS` (comma-separated, open only).
pub(super) fn keyring<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Option<Arc<Keyring>> {
    let current = r.parsed("ENCRYPTION_KEY", None, GEN_HEX_KEY, |raw| EncryptionKey::parse_hex(raw).map(Some));
    let mut previous = Vec::new();
    if let Some(list) = r.get("ENCRYPTION_KEYS_PREVIOUS") {
        for (i, entry) in list.split(',').map(str::trim).enumerate() {
            match EncryptionKey::parse_hex(entry) {
                Ok(key) => previous.push(key),
                Err(e) => r.problem("ENCRYPTION_KEYS_PREVIOUS", format!("entry {} {e}", i + 1), GEN_HEX_KEY),
            }
        }
    }
    match current {
        Some(current) => Keyring::new(current, previous)
            .map(Arc::new)
            .map_err(|e| r.problem("ENCRYPTION_KEYS_PREVIOUS", e.to_string(), "List each old key once"))
            .ok(),
        None if !previous.is_empty() => {
            r.problem("ENCRYPTION_KEY", "is not set but ENCRYPTION_KEYS_PREVIOUS is", GEN_HEX_KEY);
            None
        }
        None => None,
    }
}
