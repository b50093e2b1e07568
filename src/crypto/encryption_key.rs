use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A vault AES-256 key (`ENCRYPTION_KEY`, `ENCRYPTION_KEYS_PREVIOUS`). Zeroized on drop, never printed.
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; 32]>,
    key_id: String,
}

/// Why a key string was refused. Never carries the value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncryptionKeyError {
    #[error("must be exactly 64 hex characters (32 bytes), got {0} characters")]
    WrongLength(usize),
    #[error("must contain only hex characters 0-9 and a-f")]
    NotHex,
    #[error("must not be all zeros")]
    AllZeros,
}

impl EncryptionKey {
    pub fn parse_hex(hex_key: &str) -> Result<Self, EncryptionKeyError> {
        if hex_key.len() != 64 {
            return Err(EncryptionKeyError::WrongLength(hex_key.chars().count()));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key, bytes.as_mut_slice()).map_err(|_| EncryptionKeyError::NotHex)?;
        if bytes.iter().all(|b| *b == 0) {
            return Err(EncryptionKeyError::AllZeros);
        }
        // A public fingerprint naming this key in ciphertext envelopes and logs, so operators can tell which
        // key wrote a row without the key ever being shown. 32 bits of a domain-separated SHA-256.
        let digest = Sha256::new_with_prefix(b"byok-bridge key-id v1\0").chain_update(bytes.as_slice()).finalize();
        Ok(EncryptionKey { key_id: hex::encode(&digest[..4]), bytes })
    }

    /// 8 lowercase hex characters; see the README's envelope section.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(kid={}, [REDACTED])", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_64_hex_chars_and_never_prints_them() {
        let key = EncryptionKey::parse_hex(KEY).unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(KEY) && !debug.contains("0102030405"), "{debug}");
        assert!(debug.contains("REDACTED"));
        assert_eq!(key.key_id().len(), 8);
    }

    #[test]
    fn key_id_is_stable_and_distinguishes_keys() {
        let a = EncryptionKey::parse_hex(KEY).unwrap();
        let b = EncryptionKey::parse_hex(&KEY.replace("1f", "20")).unwrap();
        assert_eq!(a.key_id(), EncryptionKey::parse_hex(KEY).unwrap().key_id());
        assert_ne!(a.key_id(), b.key_id());
    }

    #[test]
    fn refuses_wrong_lengths_non_hex_and_all_zeros() {
        use EncryptionKeyError::*;
        assert_eq!(EncryptionKey::parse_hex(&KEY[..63]).unwrap_err(), WrongLength(63));
        assert_eq!(EncryptionKey::parse_hex(&format!("{KEY}0")).unwrap_err(), WrongLength(65));
        assert_eq!(EncryptionKey::parse_hex("").unwrap_err(), WrongLength(0));
        assert_eq!(EncryptionKey::parse_hex(&KEY.replace('a', "g")).unwrap_err(), NotHex);
        assert_eq!(EncryptionKey::parse_hex(&"0".repeat(64)).unwrap_err(), AllZeros);
        // 64 bytes of multi-byte characters pass the length check but are still refused.
        assert_eq!(EncryptionKey::parse_hex(&"é".repeat(32)).unwrap_err(), NotHex);
    }
}
