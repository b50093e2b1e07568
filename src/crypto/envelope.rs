//! The ciphertext envelope stored in `user_api_keys.encrypted_key` (byte-level spec in the README):
//!
//! `byok:v1:<kid>:<base64url-no-pad(nonce[12] || ciphertext || tag[16])>`, AES-256-GCM with associated data
//! `byok:v1:<kid>:<user id>:<provider>`. The associated data binds a ciphertext to its row's owner and
//! provider (a copy on another row fails to open) and to its header (a swapped key id fails to open).

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use super::encryption_key::EncryptionKey;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;

pub const PREFIX: &str = "byok:v1:";
/// Longest provider key we seal. Real keys are under 300 bytes; this keeps envelopes within the hook's bound.
pub const MAX_PLAINTEXT_BYTES: usize = 1024;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Mirrors the hook's `ENCRYPTED_KEY_ENVELOPE_RE` payload bounds.
const MAX_PAYLOAD_CHARS: usize = 1500;
/// No payload begins like a shipped provider's key (OpenAI's, Anthropic's, DeepSeek's and OpenRouter's `sk-`,
/// Gemini's `AIza`, Groq's `gsk_`, xAI's `xai-`), so the hook can refuse `byok:v1:<any id>:sk-...`: a plaintext
/// key behind a made-up header. The payload begins with the nonce, so such nonces are never used. Part of
/// the envelope's definition, mirrored by the hook's `PROVIDER_KEY_PREFIXES`: fixed, whatever is declared.
const KEY_LIKE_STARTS: [&str; 4] = ["sk-", "AIza", "gsk_", "xai-"];

/// Whose key a ciphertext holds; becomes the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    pub user: UserId,
    pub provider: Provider,
}

/// The current key, which seals, and previous keys, which still open, so keys can rotate without downtime.
pub struct Keyring {
    current: EncryptionKey,
    previous: Vec<EncryptionKey>,
}

/// Why an envelope cannot be opened. Callers tell the user "key unusable, please enter it again" for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a byok:v1 envelope")]
    Malformed,
    #[error("sealed with a key that is not configured")]
    UnknownKeyId,
    #[error("authentication failed: tampered, truncated or moved to another row")]
    Unauthentic,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two configured encryption keys share the key id {0}; remove the duplicate")]
pub struct DuplicateKeyId(pub String);

impl Keyring {
    pub fn new(current: EncryptionKey, previous: Vec<EncryptionKey>) -> Result<Self, DuplicateKeyId> {
        let mut seen = vec![current.key_id().to_owned()];
        for key in &previous {
            if seen.iter().any(|k| k == key.key_id()) {
                return Err(DuplicateKeyId(key.key_id().to_owned()));
            }
            seen.push(key.key_id().to_owned());
        }
        Ok(Keyring { current, previous })
    }

    pub fn current_key_id(&self) -> &str {
        self.current.key_id()
    }

    /// Seals a provider key for its owner with a fresh random nonce.
    pub fn seal(&self, owner: KeyOwner, plaintext: &[u8]) -> String {
        self.seal_with_nonce(owner, plaintext, fresh_nonce())
    }

    fn seal_with_nonce(&self, owner: KeyOwner, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> String {
        assert!(plaintext.len() <= MAX_PLAINTEXT_BYTES, "callers bound provider keys before sealing");
        let kid = self.current.key_id();
        let sealed = aes256gcm_seal(self.current.bytes(), &nonce, associated_data(kid, owner).as_bytes(), plaintext);
        let mut payload = Vec::with_capacity(NONCE_LEN + sealed.len());
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&sealed);
        format!("{PREFIX}{kid}:{}", URL_SAFE_NO_PAD.encode(payload))
    }

    /// Opens an envelope sealed for `owner` by any configured key.
    pub fn open(&self, owner: KeyOwner, envelope: &str) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let (kid, payload) = parse(envelope)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.key_id() == kid)
            .ok_or(EnvelopeError::UnknownKeyId)?;
        let (nonce, sealed) = payload.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        aes256gcm_open(key.bytes(), nonce, associated_data(kid, owner).as_bytes(), sealed)
            .ok_or(EnvelopeError::Unauthentic)
    }

    /// True when the envelope was sealed by another key than the current one (or cannot be parsed).
    pub fn needs_rewrap(&self, envelope: &str) -> bool {
        key_id_of(envelope) != Some(self.current_key_id())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(EncryptionKey::key_id).collect();
        write!(f, "Keyring(current={}, previous={previous:?}, [REDACTED])", self.current_key_id())
    }
}

/// The key id in an envelope's header, if it has the envelope's shape.
pub fn key_id_of(envelope: &str) -> Option<&str> {
    let (kid, _) = envelope.strip_prefix(PREFIX)?.split_once(':')?;
    is_key_id(kid).then_some(kid)
}

fn is_key_id(kid: &str) -> bool {
    kid.len() == 8 && kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn parse(envelope: &str) -> Result<(&str, Vec<u8>), EnvelopeError> {
    let kid = key_id_of(envelope).ok_or(EnvelopeError::Malformed)?;
    let encoded = &envelope[PREFIX.len() + kid.len() + 1..];
    if encoded.len() > MAX_PAYLOAD_CHARS {
        return Err(EnvelopeError::Malformed);
    }
    let payload = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| EnvelopeError::Malformed)?;
    if payload.len() < NONCE_LEN + TAG_LEN + 1 {
        return Err(EnvelopeError::Malformed);
    }
    Ok((kid, payload))
}

fn associated_data(kid: &str, owner: KeyOwner) -> String {
    format!("{PREFIX}{kid}:{}:{}", owner.user, owner.provider)
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).expect("a 32-byte key is a valid AES-256 key")
}

/// AES-256-GCM encryption: ciphertext followed by the 16-byte tag. The one primitive the vault uses;
/// known-answer tests run through it.
/// A random nonce whose encoding does not start with one of [`KEY_LIKE_STARTS`]: about one in 250,000 is
/// drawn again.
fn fresh_nonce() -> [u8; NONCE_LEN] {
    loop {
        let nonce: [u8; NONCE_LEN] = Aes256Gcm::generate_nonce(&mut OsRng).into();
        if !starts_like_a_key(&nonce) {
            return nonce;
        }
    }
}

fn starts_like_a_key(nonce: &[u8; NONCE_LEN]) -> bool {
    let start = URL_SAFE_NO_PAD.encode(&nonce[..3]);
    KEY_LIKE_STARTS.iter().any(|key_like| start.starts_with(key_like))
}

pub fn aes256gcm_seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    cipher(key)
        .encrypt(&Nonce::from(*nonce), Payload { msg: plaintext, aad })
        .expect("AES-GCM encryption only fails for inputs over 64 GiB")
}

/// AES-256-GCM decryption of ciphertext || tag; `None` when authentication fails.
pub fn aes256gcm_open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    cipher(key).decrypt(&Nonce::from(*nonce), Payload { msg: sealed, aad }).ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    const KEY_A: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";
    const KEY_B: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8e9f";
    const PLAINTEXT: &[u8] = b"sk-proj-fakeTestKeyForTheVault0000000000000";

    fn key(hex: &str) -> EncryptionKey {
        EncryptionKey::parse_hex(hex).unwrap()
    }

    fn ring(current: &str, previous: &[&str]) -> Keyring {
        Keyring::new(key(current), previous.iter().map(|h| key(h)).collect()).unwrap()
    }

    fn owner(user: &str, provider: Provider) -> KeyOwner {
        KeyOwner { user: UserId::parse(user).unwrap(), provider }
    }

    const ALICE: &str = "11111111-1111-4111-8111-111111111111";
    const BOB: &str = "22222222-2222-4222-8222-222222222222";

    #[test]
    fn no_payload_starts_like_a_provider_key() {
        for start in ["sk-A", "AIza", "gsk_", "xai-"] {
            let key_like: [u8; 3] = URL_SAFE_NO_PAD.decode(start).unwrap().try_into().unwrap();
            let mut nonce = [7u8; NONCE_LEN];
            nonce[..3].copy_from_slice(&key_like);
            assert!(starts_like_a_key(&nonce), "{start}");
        }
        let key_like: [u8; 3] = URL_SAFE_NO_PAD.decode("sk-A").unwrap().try_into().unwrap();
        let mut nonce = [7u8; NONCE_LEN];
        nonce[..3].copy_from_slice(&key_like);
        let payload = |envelope: &str| envelope.rsplit(':').next().unwrap().to_owned();
        let sealed = ring(KEY_A, &[]).seal_with_nonce(owner(ALICE, Provider::openai()), b"sk-test", nonce);
        assert!(payload(&sealed).starts_with("sk-"), "the case exists");
        assert!((0..10_000).all(|_| !starts_like_a_key(&fresh_nonce())));
    }

    #[test]
    fn round_trips_and_uses_a_fresh_nonce_each_time() {
        let ring = ring(KEY_A, &[]);
        let alice = owner(ALICE, Provider::openai());
        let first = ring.seal(alice, PLAINTEXT);
        let second = ring.seal(alice, PLAINTEXT);
        assert_ne!(first, second, "nonces must not repeat");
        assert!(first.starts_with(&format!("byok:v1:{}:", ring.current_key_id())));
        assert_eq!(ring.open(alice, &first).unwrap().as_slice(), PLAINTEXT);
        assert!(!first.contains("sk-proj"));
    }

    #[test]
    fn a_ciphertext_moved_to_another_user_or_provider_does_not_open() {
        let ring = ring(KEY_A, &[]);
        let sealed = ring.seal(owner(ALICE, Provider::openai()), PLAINTEXT);
        assert_eq!(ring.open(owner(BOB, Provider::openai()), &sealed).unwrap_err(), EnvelopeError::Unauthentic);
        assert_eq!(ring.open(owner(ALICE, Provider::anthropic()), &sealed).unwrap_err(), EnvelopeError::Unauthentic);
    }

    #[test]
    fn every_single_bit_flip_and_every_truncation_is_refused() {
        let ring = ring(KEY_A, &[]);
        let alice = owner(ALICE, Provider::openai());
        let sealed = ring.seal(alice, PLAINTEXT);
        let (header, encoded) = sealed.split_at(PREFIX.len() + 9);
        let payload = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        for byte in 0..payload.len() {
            for bit in 0..8 {
                let mut tampered = payload.clone();
                tampered[byte] ^= 1 << bit;
                let envelope = format!("{header}{}", URL_SAFE_NO_PAD.encode(&tampered));
                assert_eq!(
                    ring.open(alice, &envelope).unwrap_err(),
                    EnvelopeError::Unauthentic,
                    "byte {byte} bit {bit}"
                );
            }
        }
        for len in 0..sealed.len() {
            assert!(ring.open(alice, &sealed[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn malformed_and_foreign_envelopes_are_refused_without_panicking() {
        let ring = ring(KEY_A, &[]);
        let alice = owner(ALICE, Provider::openai());
        let sealed = ring.seal(alice, PLAINTEXT);
        let other_kid = sealed.replacen(ring.current_key_id(), "00000000", 1);
        let upper_kid = sealed.replacen(ring.current_key_id(), &ring.current_key_id().to_uppercase(), 1);
        let cases = [
            ("", EnvelopeError::Malformed),
            ("sk-proj-plaintext", EnvelopeError::Malformed),
            ("byok:v2:00000000:AAAA", EnvelopeError::Malformed),
            (&sealed.replacen("byok:v1", "byok:v9", 1), EnvelopeError::Malformed),
            (&upper_kid, EnvelopeError::Malformed),
            (&format!("{sealed}="), EnvelopeError::Malformed),
            (&format!("{sealed}!"), EnvelopeError::Malformed),
            (
                &format!("byok:v1:{}:{}", ring.current_key_id(), "A".repeat(MAX_PAYLOAD_CHARS + 1)),
                EnvelopeError::Malformed,
            ),
            (&other_kid, EnvelopeError::UnknownKeyId),
        ];
        for (envelope, expected) in cases {
            assert_eq!(ring.open(alice, envelope).unwrap_err(), expected, "{envelope:?}");
        }
    }

    #[test]
    fn previous_keys_still_open_and_rewrap_moves_to_the_current_key() {
        let old = ring(KEY_A, &[]);
        let alice = owner(ALICE, Provider::anthropic());
        let sealed_old = old.seal(alice, PLAINTEXT);
        let rotated = ring(KEY_B, &[KEY_A]);
        assert!(rotated.needs_rewrap(&sealed_old));
        let opened = rotated.open(alice, &sealed_old).unwrap();
        let rewrapped = rotated.seal(alice, &opened);
        assert!(!rotated.needs_rewrap(&rewrapped));
        assert_eq!(key_id_of(&rewrapped), Some(rotated.current_key_id()));
        assert_eq!(ring(KEY_B, &[]).open(alice, &rewrapped).unwrap().as_slice(), PLAINTEXT);
        assert_eq!(ring(KEY_B, &[]).open(alice, &sealed_old).unwrap_err(), EnvelopeError::UnknownKeyId);
    }

    #[test]
    fn a_keyring_refuses_duplicate_keys_and_hides_them_in_debug() {
        assert!(Keyring::new(key(KEY_A), vec![key(KEY_A)]).is_err());
        let debug = format!("{:?}", ring(KEY_A, &[KEY_B]));
        assert!(!debug.contains(KEY_A) && !debug.contains(KEY_B), "{debug}");
    }

    /// The envelope vector shared with the README and with the independent Node.js decryption in
    /// `tests/interop`: proves the byte layout, not just that we agree with ourselves.
    #[derive(Deserialize)]
    struct Vector {
        key_hex: String,
        user: String,
        provider: String,
        nonce_hex: String,
        plaintext: String,
        envelope: String,
    }

    #[test]
    fn reproduces_the_documented_envelope_vector() {
        let v: Vector = serde_json::from_str(include_str!("../../tests/fixtures/envelope-v1.json")).unwrap();
        let ring = ring(&v.key_hex, &[]);
        let owner = owner(&v.user, v.provider.parse().unwrap());
        let nonce: [u8; NONCE_LEN] = hex::decode(&v.nonce_hex).unwrap().try_into().unwrap();
        assert_eq!(ring.seal_with_nonce(owner, v.plaintext.as_bytes(), nonce), v.envelope);
        assert_eq!(ring.open(owner, &v.envelope).unwrap().as_slice(), v.plaintext.as_bytes());
    }

    /// AES-256-GCM known answers from the GCM specification (McGrew & Viega), test cases 13-16.
    #[test]
    fn aes_256_gcm_known_answers() {
        struct Kat {
            key: &'static str,
            iv: &'static str,
            pt: &'static str,
            aad: &'static str,
            ct: &'static str,
            tag: &'static str,
        }
        const K: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
        const P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
        const C: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";
        const ZERO_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
        let kats = [
            Kat {
                key: ZERO_KEY,
                iv: "000000000000000000000000",
                pt: "",
                aad: "",
                ct: "",
                tag: "530f8afbc74536b9a963b4f1c4cb738b",
            },
            Kat {
                key: ZERO_KEY,
                iv: "000000000000000000000000",
                pt: "00000000000000000000000000000000",
                aad: "",
                ct: "cea7403d4d606b6e074ec5d3baf39d18",
                tag: "d0d1c8a799996bf0265b98b5d48ab919",
            },
            Kat {
                key: K,
                iv: "cafebabefacedbaddecaf888",
                pt: P,
                aad: "",
                ct: C,
                tag: "b094dac5d93471bdec1a502270e3cc6c",
            },
            Kat {
                key: K,
                iv: "cafebabefacedbaddecaf888",
                pt: &P[..120],
                aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                ct: &C[..120],
                tag: "76fc6ece0f4e1768cddf8853bb2d551b",
            },
        ];
        for (i, kat) in kats.iter().enumerate() {
            let key: [u8; 32] = hex::decode(kat.key).unwrap().try_into().unwrap();
            let iv: [u8; 12] = hex::decode(kat.iv).unwrap().try_into().unwrap();
            let aad = hex::decode(kat.aad).unwrap();
            let sealed = aes256gcm_seal(&key, &iv, &aad, &hex::decode(kat.pt).unwrap());
            assert_eq!(hex::encode(&sealed), format!("{}{}", kat.ct, kat.tag), "case {}", 13 + i);
            let opened = aes256gcm_open(&key, &iv, &aad, &sealed).unwrap();
            assert_eq!(hex::encode(opened.as_slice()), kat.pt);
            let mut forged = sealed.clone();
            *forged.last_mut().unwrap() ^= 1;
            assert!(aes256gcm_open(&key, &iv, &aad, &forged).is_none());
        }
    }
}
