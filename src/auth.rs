//! Verifies Directus access tokens locally (HS256 with the Directus `SECRET`): ~microseconds instead of a
//! round trip to `/users/me`. Only the `id` claim is trusted; role, tier and status are read from Directus.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::user::UserId;

/// Directus tokens are a few hundred bytes. Anything far larger is refused before any parsing work.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;
const ISSUER: &str = "directus";

pub struct AccessTokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens that verified lately, with their `exp`: a client's next calls skip the base64 and JSON decoding
    /// (an eighth of `/v1/route`'s CPU). Keyed by the whole token, so only that exact token, already verified,
    /// is ever answered from here, and only until its `exp`.
    verified: moka::sync::Cache<String, (VerifiedToken, u64)>,
}

/// Verified tokens remembered, and for how long at most (their `exp` usually ends it sooner).
const VERIFIED_CAPACITY: u64 = 10_000;
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a token was refused. For logs and tests only: every variant gets the same 401 body, so callers
/// cannot learn which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("token too long")]
    TooLong,
    #[error("token rejected: {0:?}")]
    Rejected(jsonwebtoken::errors::ErrorKind),
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token subject is not a user id")]
    BadSubject,
}

#[derive(Deserialize)]
struct Claims {
    id: String,
    exp: u64,
    iat: Option<u64>,
    /// Session-mode tokens name their session; it must still exist in Directus (see
    /// [`crate::services::sessions`]).
    session: Option<String>,
}

/// What a valid token says: whose it is, and the session it belongs to, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user: UserId,
    pub session: Option<String>,
}

impl AccessTokenVerifier {
    pub fn new(directus_secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        AccessTokenVerifier {
            key: DecodingKey::from_secret(directus_secret.expose_secret().as_bytes()),
            validation,
            verified: moka::sync::Cache::builder().max_capacity(VERIFIED_CAPACITY).time_to_live(VERIFIED_TTL).build(),
        }
    }

    /// Verifies a token's signature and claims. A session-mode token still needs its session checked.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<VerifiedToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if let Some((verified, exp)) = self.verified.get(token)
            && now_unix <= exp + LEEWAY_SECS
        {
            return Ok(verified);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| TokenError::Rejected(e.into_kind()))?;
        if data.claims.iat.is_some_and(|iat| iat > now_unix + LEEWAY_SECS) {
            return Err(TokenError::IssuedInFuture);
        }
        let user = UserId::parse(&data.claims.id).map_err(|_| TokenError::BadSubject)?;
        let verified = VerifiedToken { user, session: data.claims.session };
        self.verified.insert(token.to_owned(), (verified.clone(), data.claims.exp));
        Ok(verified)
    }
}

impl fmt::Debug for AccessTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessTokenVerifier { key: [REDACTED], alg: HS256 }")
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    use super::*;

    const SECRET: &str = "directus-test-secret-with-enough-entropy";
    const USER: &str = "6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f";

    fn verifier() -> AccessTokenVerifier {
        AccessTokenVerifier::new(&SecretString::from(SECRET))
    }

    fn sign(claims: &Value, alg: Algorithm, secret: &str) -> String {
        encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    /// jsonwebtoken reads the real clock for `exp`/`nbf`, so fixtures are relative to it.
    fn check(token: &str) -> Result<UserId, TokenError> {
        verifier().verify(token, jsonwebtoken::get_current_timestamp()).map(|t| t.user)
    }

    fn now_claims() -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({"id": USER, "role": null, "app_access": false, "admin_access": false,
               "iat": now - 10, "exp": now + 900, "iss": "directus"})
    }

    #[test]
    fn accepts_a_directus_token_and_returns_its_user() {
        let token = sign(&now_claims(), Algorithm::HS256, SECRET);
        assert_eq!(check(&token).unwrap().to_string(), USER);
    }

    #[test]
    fn a_verified_token_is_remembered_exactly_and_only_until_it_expires() {
        let verifier = verifier();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = now_claims();
        let token = sign(&claims, Algorithm::HS256, SECRET);
        let first = verifier.verify(&token, now).unwrap();
        assert_eq!(verifier.verified.get(&token), Some((first.clone(), claims["exp"].as_u64().unwrap())));
        assert_eq!(verifier.verify(&token, now).unwrap(), first);
        // Only that exact token: a copy with its signature changed is refused.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert!(verifier.verify(std::str::from_utf8(&forged).unwrap(), now).is_err());
        // A remembered answer past its `exp` is not used: the token is decoded again (this one fails to).
        verifier.verified.insert("not-a-jwt".to_owned(), (first, now - LEEWAY_SECS - 1));
        assert!(verifier.verify("not-a-jwt", now).is_err());
    }

    #[test]
    fn refuses_other_algorithms_secrets_and_tampering() {
        let c = now_claims();
        assert!(check(&sign(&c, Algorithm::HS512, SECRET)).is_err());
        assert!(check(&sign(&c, Algorithm::HS384, SECRET)).is_err());
        assert!(check(&sign(&c, Algorithm::HS256, "another-secret")).is_err());

        let token = sign(&c, Algorithm::HS256, SECRET);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload = c.clone();
        payload["id"] = json!("00000000-0000-4000-8000-000000000000");
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(check(&parts.join(".")).is_err(), "tampered payload");
    }

    #[test]
    fn refuses_alg_none() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(now_claims().to_string());
        assert!(check(&format!("{header}.{payload}.")).is_err());
        assert!(check(&format!("{header}.{payload}")).is_err());
    }

    #[test]
    fn refuses_expired_future_and_incomplete_tokens() {
        let now = jsonwebtoken::get_current_timestamp();
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = now_claims();
            f(&mut c);
            check(&sign(&c, Algorithm::HS256, SECRET))
        };
        assert!(with(&|c| c["exp"] = json!(now - 120)).is_err(), "expired");
        assert!(with(&|c| c["nbf"] = json!(now + 120)).is_err(), "not yet valid");
        assert_eq!(with(&|c| c["iat"] = json!(now + 120)), Err(TokenError::IssuedInFuture));
        assert!(with(&|c| _ = c.as_object_mut().unwrap().remove("exp")).is_err(), "no exp");
        assert!(with(&|c| _ = c.as_object_mut().unwrap().remove("iss")).is_err(), "no iss");
        assert!(with(&|c| c["iss"] = json!("someone-else")).is_err(), "wrong iss");
        assert_eq!(with(&|c| c["id"] = json!("1 OR 1=1")), Err(TokenError::BadSubject));
        assert!(with(&|c| _ = c.as_object_mut().unwrap().remove("id")).is_err(), "no id");
    }

    #[test]
    fn refuses_empty_huge_and_garbage_tokens_without_parsing_them() {
        assert_eq!(check(""), Err(TokenError::Missing));
        assert_eq!(check(&"a".repeat(MAX_TOKEN_LEN + 1)), Err(TokenError::TooLong));
        assert!(check("not-a-jwt").is_err());
        assert!(check("a.b.c").is_err());
    }

    #[test]
    fn session_mode_tokens_carry_their_session() {
        let mut claims = now_claims();
        claims["session"] = json!("session-token-value");
        let token = sign(&claims, Algorithm::HS256, SECRET);
        let verified = verifier().verify(&token, jsonwebtoken::get_current_timestamp()).unwrap();
        assert_eq!(verified.session.as_deref(), Some("session-token-value"));
        let plain = sign(&now_claims(), Algorithm::HS256, SECRET);
        assert_eq!(verifier().verify(&plain, jsonwebtoken::get_current_timestamp()).unwrap().session, None);
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert!(!format!("{:?}", verifier()).contains(SECRET));
    }
}
