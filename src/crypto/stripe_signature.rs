//! Stripe's webhook signatures (<https://docs.stripe.com/webhooks#verify-manually>): `Stripe-Signature` holds
//! `t=<unix seconds>` and one or more `v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`, the key being the whole
//! `whsec_...` endpoint secret as text. Several `v1` entries appear while a secret is being rolled.

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Stripe's libraries refuse signatures older than this by default; so do we, and as far into the future.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// More entries than this is not a secret roll, it is someone making us hash in a loop.
const MAX_ENTRIES: usize = 16;
const PREFIX: &str = "whsec_";

/// The endpoint's signing secret (`STRIPE_WEBHOOK_SECRET`), zeroized on drop and never printed.
#[derive(Clone)]
pub struct StripeSecret(SecretString);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be the endpoint's signing secret as Stripe shows it: whsec_ followed by at least 16 characters")]
pub struct StripeSecretError;

impl StripeSecret {
    pub fn parse(raw: &str) -> Result<Self, StripeSecretError> {
        let rest = raw.strip_prefix(PREFIX).ok_or(StripeSecretError)?;
        if rest.len() < 16 || !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StripeSecretError);
        }
        Ok(StripeSecret(SecretString::from(raw)))
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes()).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `Stripe-Signature` value Stripe would send; for tests and tools.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        format!("t={timestamp},v1={}", hex::encode(self.mac(timestamp, body)))
    }

    /// Checks a delivery's `Stripe-Signature` header against its raw body. `now` is unix seconds, passed in so
    /// the check stays pure.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now: i64) -> Result<(), StripeSignatureError> {
        let header = header.filter(|h| !h.trim().is_empty()).ok_or(StripeSignatureError::MissingHeader)?;
        let mut timestamp = None;
        let mut candidates = Vec::new();
        for entry in header.split(',').take(MAX_ENTRIES) {
            let Some((name, value)) = entry.trim().split_once('=') else { continue };
            match name {
                "t" if timestamp.is_none() => timestamp = Some(parse_timestamp(value)?),
                // Lengths are public (always 32 bytes for v1); the bytes are compared in constant time.
                "v1" => candidates.extend(hex::decode(value).ok().filter(|bytes| bytes.len() == 32)),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(StripeSignatureError::Malformed)?;
        if candidates.is_empty() {
            return Err(StripeSignatureError::Malformed);
        }
        if (now - timestamp).abs() > TOLERANCE_SECS {
            return Err(StripeSignatureError::OutsideTolerance);
        }
        let expected = self.mac(timestamp, body);
        let matched = candidates.iter().fold(subtle::Choice::from(0), |matched, c| matched | c.ct_eq(&expected));
        if bool::from(matched) { Ok(()) } else { Err(StripeSignatureError::Mismatch) }
    }
}

/// Only an ASCII decimal: `i64::from_str` would also take a leading `+`, which Stripe never sends.
fn parse_timestamp(raw: &str) -> Result<i64, StripeSignatureError> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StripeSignatureError::Malformed);
    }
    raw.parse().map_err(|_| StripeSignatureError::Malformed)
}

impl fmt::Debug for StripeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StripeSecret([REDACTED])")
    }
}

/// Why a delivery was refused. Every variant is answered with the same 400, which tells Stripe to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StripeSignatureError {
    #[error("Stripe-Signature header missing")]
    MissingHeader,
    #[error("Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("Stripe-Signature timestamp outside the tolerance")]
    OutsideTolerance,
    #[error("no Stripe signature matched")]
    Mismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed with Python's hmac module, as Stripe's own libraries compute it.
    const SECRET: &str = "whsec_test_secret_0123456789abcdef";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
    const SIG: &str = "a723293e5bd4496da485dec1069365ebae237cdae65c1d5a126979dac5377c4a";

    fn secret() -> StripeSecret {
        StripeSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn matches_an_independent_computation_of_stripes_scheme() {
        assert_eq!(secret().sign(TS, BODY), format!("t={TS},v1={SIG}"));
        assert_eq!(secret().verify(Some(&format!("t={TS},v1={SIG}")), BODY, TS), Ok(()));
    }

    #[test]
    fn accepts_any_v1_entry_and_ignores_other_schemes() {
        let rolled = format!("t={TS}, v0=deadbeef, v1={}, v1={SIG}", "00".repeat(32));
        assert_eq!(secret().verify(Some(&rolled), BODY, TS), Ok(()));
    }

    #[test]
    fn refuses_tampered_bodies_and_other_secrets() {
        let header = format!("t={TS},v1={SIG}");
        let tampered = br#"{"id":"evt_2","type":"checkout.session.completed"}"#;
        assert_eq!(secret().verify(Some(&header), tampered, TS), Err(StripeSignatureError::Mismatch));
        let other = StripeSecret::parse("whsec_another_secret_entirely_0000").unwrap();
        assert_eq!(other.verify(Some(&header), BODY, TS), Err(StripeSignatureError::Mismatch));
        // The timestamp is signed too: the same v1 under another t does not verify.
        let moved = format!("t={},v1={SIG}", TS + 1);
        assert_eq!(secret().verify(Some(&moved), BODY, TS), Err(StripeSignatureError::Mismatch));
    }

    #[test]
    fn refuses_stale_and_future_timestamps() {
        let s = secret();
        for offset in [-(TOLERANCE_SECS + 1), TOLERANCE_SECS + 1] {
            let header = s.sign(TS + offset, BODY);
            assert_eq!(s.verify(Some(&header), BODY, TS), Err(StripeSignatureError::OutsideTolerance), "{offset}");
        }
        assert_eq!(s.verify(Some(&s.sign(TS - TOLERANCE_SECS, BODY)), BODY, TS), Ok(()));
    }

    #[test]
    fn refuses_missing_and_malformed_headers() {
        let s = secret();
        assert_eq!(s.verify(None, BODY, TS), Err(StripeSignatureError::MissingHeader));
        assert_eq!(s.verify(Some("  "), BODY, TS), Err(StripeSignatureError::MissingHeader));
        for header in [
            format!("v1={SIG}"),
            format!("t=+{TS},v1={SIG}"),
            format!("t={TS}"),
            format!("t={TS},v1=zz{}", &SIG[2..]),
            format!("t={TS},v1={}", &SIG[..62]),
        ] {
            assert_eq!(s.verify(Some(&header), BODY, TS), Err(StripeSignatureError::Malformed), "{header}");
        }
    }

    #[test]
    fn secret_parsing_requires_stripes_format_and_never_prints_it() {
        assert_eq!(StripeSecret::parse("sk_live_0123456789abcdef").unwrap_err(), StripeSecretError);
        assert_eq!(StripeSecret::parse("whsec_short").unwrap_err(), StripeSecretError);
        assert_eq!(StripeSecret::parse("whsec_has a space in it 0123456").unwrap_err(), StripeSecretError);
        assert_eq!(format!("{:?}", secret()), "StripeSecret([REDACTED])");
    }
}
