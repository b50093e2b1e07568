//! Standard Webhooks (<https://www.standardwebhooks.com>) signatures: `webhook-signature` holds one or more
//! space-separated `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>` entries.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Replay window: a delivery whose timestamp is further than this from our clock is refused.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// More entries than this is not key rotation, it is someone making us hash in a loop.
const MAX_SIGNATURES: usize = 8;
const MAX_ID_LEN: usize = 256;
const PREFIX: &str = "whsec_";

/// The shared signing secret (`WEBHOOK_SECRET`, `whsec_<base64>`), zeroized on drop and never printed.
#[derive(Clone)]
pub struct WebhookSecret(SecretSlice<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSecretError {
    #[error("must start with `whsec_` followed by base64 (Standard Webhooks format)")]
    Format,
    #[error("must decode to at least 24 bytes of key material")]
    TooShort,
}

impl WebhookSecret {
    pub fn parse(raw: &str) -> Result<Self, WebhookSecretError> {
        let encoded = raw.strip_prefix(PREFIX).ok_or(WebhookSecretError::Format)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| WebhookSecretError::Format)?;
        let secret = SecretSlice::from(bytes);
        if secret.expose_secret().len() < 24 {
            return Err(WebhookSecretError::TooShort);
        }
        Ok(WebhookSecret(secret))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret()).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// A secret both ends derive from a credential they already share: `whsec_` + base64(HMAC-SHA256(credential,
    /// purpose)). The Directus Flows bundle checks job callbacks with the one derived from the Flows credential.
    pub fn derived(credential: &str, purpose: &str) -> SecretString {
        let mut mac = Hmac::<Sha256>::new_from_slice(credential.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        SecretString::from(format!("{PREFIX}{}", STANDARD.encode(mac.finalize().into_bytes())))
    }

    /// The `webhook-signature` value for a delivery; what the Directus hook computes, used by tests and tools.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    /// Checks a delivery. `now` is unix seconds, passed in so the check stays pure.
    pub fn verify(&self, delivery: &Delivery<'_>, now: i64) -> Result<(), SignatureError> {
        let Delivery { id, timestamp, signature, body } = *delivery;
        let (id, timestamp, signature) = match (id, timestamp, signature) {
            (Some(i), Some(t), Some(s)) if !i.is_empty() && !s.is_empty() => (i, t, s),
            _ => return Err(SignatureError::MissingHeaders),
        };
        if id.len() > MAX_ID_LEN {
            return Err(SignatureError::Malformed);
        }
        let timestamp = parse_timestamp(timestamp).ok_or(SignatureError::Malformed)?;
        if (now - timestamp).abs() > TOLERANCE_SECS {
            return Err(SignatureError::OutsideTolerance);
        }
        let expected = self.mac(id, timestamp, body);
        let mut matched = subtle::Choice::from(0);
        for entry in signature.split(' ').filter(|e| !e.is_empty()).take(MAX_SIGNATURES) {
            let Some(candidate) = entry.strip_prefix("v1,").and_then(|b64| STANDARD.decode(b64).ok()) else {
                continue;
            };
            // Lengths are public (always 32 for v1); the bytes are compared in constant time.
            if candidate.len() == expected.len() {
                matched |= candidate.ct_eq(&expected);
            }
        }
        if bool::from(matched) { Ok(()) } else { Err(SignatureError::Mismatch) }
    }
}

/// Only an ASCII decimal: `i64::from_str` would also take a leading `+`, which no sender emits.
fn parse_timestamp(raw: &str) -> Option<i64> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

/// The parts of a delivery that are signed or carry the signature, as received.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

/// Why a delivery was refused. The caller answers every variant with the same 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook-id, webhook-timestamp or webhook-signature header missing")]
    MissingHeaders,
    #[error("webhook headers malformed")]
    Malformed,
    #[error("webhook timestamp outside the replay window")]
    OutsideTolerance,
    #[error("no webhook signature matched")]
    Mismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_secrets_match_the_flows_bundles_derivation() {
        // The vector the Flows bundle's node test checks too.
        let derived =
            WebhookSecret::derived("flows-token-0123456789abcdef0123456789", "byok-bridge flow job callbacks");
        assert_eq!(derived.expose_secret(), "whsec_z6pOJFoVCq8Ne3MGwXY3GSKhuXygtdyVw4W2OT4M/y8=");
        assert!(WebhookSecret::parse(derived.expose_secret()).is_ok());
    }

    // The example from the Standard Webhooks specification's test vectors.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    fn delivery<'a>(sig: &'a str, ts: &'a str, body: &'a [u8]) -> Delivery<'a> {
        Delivery { id: Some(SPEC_ID), timestamp: Some(ts), signature: Some(sig), body }
    }

    #[test]
    fn matches_the_specifications_known_answer() {
        assert_eq!(secret().sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        let ts = SPEC_TS.to_string();
        assert_eq!(secret().verify(&delivery(SPEC_SIG, &ts, SPEC_BODY), SPEC_TS), Ok(()));
    }

    #[test]
    fn accepts_any_of_several_space_separated_signatures() {
        let ts = SPEC_TS.to_string();
        let rotated = format!("v1,Zm9vYmFy v2,abc {SPEC_SIG}");
        assert_eq!(secret().verify(&delivery(&rotated, &ts, SPEC_BODY), SPEC_TS), Ok(()));
    }

    #[test]
    fn refuses_tampered_bodies_wrong_secrets_and_foreign_signatures() {
        let ts = SPEC_TS.to_string();
        let flipped = br#"{"test": 2432232315}"#;
        assert_eq!(secret().verify(&delivery(SPEC_SIG, &ts, flipped), SPEC_TS), Err(SignatureError::Mismatch));
        let other = WebhookSecret::parse("whsec_bm90IHRoZSBzYW1lIHNlY3JldCBhdCBhbGwh").unwrap();
        let sig = other.sign(SPEC_ID, SPEC_TS, SPEC_BODY);
        assert_eq!(secret().verify(&delivery(&sig, &ts, SPEC_BODY), SPEC_TS), Err(SignatureError::Mismatch));
        let for_other_body = secret().sign(SPEC_ID, SPEC_TS, b"{}");
        let result = secret().verify(&delivery(&for_other_body, &ts, SPEC_BODY), SPEC_TS);
        assert_eq!(result, Err(SignatureError::Mismatch));
        for junk in ["v1,", "v1,!!!", "v0,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "   "] {
            assert!(secret().verify(&delivery(junk, &ts, SPEC_BODY), SPEC_TS).is_err(), "{junk}");
        }
    }

    #[test]
    fn refuses_timestamps_outside_five_minutes_either_way() {
        let s = secret();
        for offset in [-(TOLERANCE_SECS + 60), TOLERANCE_SECS + 60] {
            let ts = SPEC_TS + offset;
            let sig = s.sign(SPEC_ID, ts, SPEC_BODY);
            let result = s.verify(&delivery(&sig, &ts.to_string(), SPEC_BODY), SPEC_TS);
            assert_eq!(result, Err(SignatureError::OutsideTolerance), "offset {offset}");
        }
        let ts = SPEC_TS - TOLERANCE_SECS;
        let sig = s.sign(SPEC_ID, ts, SPEC_BODY);
        assert_eq!(s.verify(&delivery(&sig, &ts.to_string(), SPEC_BODY), SPEC_TS), Ok(()));
    }

    #[test]
    fn refuses_missing_and_malformed_headers() {
        let s = secret();
        let missing = Delivery { id: None, timestamp: Some("1"), signature: Some(SPEC_SIG), body: SPEC_BODY };
        assert_eq!(s.verify(&missing, SPEC_TS), Err(SignatureError::MissingHeaders));
        for ts in ["", "+1614265330", "-5", "1e9", "16142653300000000"] {
            let result = s.verify(&delivery(SPEC_SIG, ts, SPEC_BODY), SPEC_TS);
            assert!(matches!(result, Err(SignatureError::Malformed | SignatureError::MissingHeaders)), "{ts}");
        }
    }

    #[test]
    fn secret_parsing_requires_the_prefix_and_enough_key_material() {
        assert_eq!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), WebhookSecretError::Format);
        assert_eq!(WebhookSecret::parse("whsec_***").unwrap_err(), WebhookSecretError::Format);
        assert_eq!(WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(), WebhookSecretError::TooShort);
        assert_eq!(format!("{:?}", secret()), "WebhookSecret([REDACTED])");
    }
}
