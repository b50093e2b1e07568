//! Session-mode access tokens (`session` claim) are checked the way Directus checks them: the session must
//! still exist. Directus answers for its own sessions, so the sidecar asks it with the token itself and
//! remembers the answer briefly (`SESSION_CHECK_TTL_SECS`): a logout takes effect after that time (at the
//! first request past it, or the next: a live session's check runs beside its request, not in front of it).
//!
//! While Directus cannot be reached, a session it confirmed within `STALE_CALLER_MAX_AGE_SECS` is still
//! accepted (the same grace known callers get); a session never confirmed is not.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::directus::{DirectusClient, DirectusError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session has ended")]
    Ended,
    #[error("Directus cannot confirm the session right now")]
    Unconfirmed,
}

pub struct Sessions {
    directus: DirectusClient,
    /// Directus's latest answer per session (by digest: the session id is a credential).
    verdicts: Cache<[u8; 32], bool>,
    /// Sessions confirmed live within two check intervals: a request is not kept waiting for the next check,
    /// which runs beside it (the one after it sees the answer).
    recent: Cache<[u8; 32], ()>,
    /// Sessions confirmed live, kept for the outage grace period.
    confirmed: Cache<[u8; 32], ()>,
}

impl Sessions {
    pub fn new(directus: DirectusClient, ttl: Duration, grace: Duration) -> Self {
        Sessions {
            directus,
            verdicts: Cache::builder().max_capacity(100_000).time_to_live(ttl).build(),
            recent: Cache::builder().max_capacity(100_000).time_to_live(ttl * 2).build(),
            confirmed: Cache::builder().max_capacity(100_000).time_to_live(grace.max(ttl)).build(),
        }
    }

    /// Whether the session `session` (the token's claim) of `access_token` is still live. A session confirmed
    /// within two check intervals is accepted at once while Directus is asked again beside the request: a logout
    /// takes effect at the first request after `SESSION_CHECK_TTL_SECS`, or the next one.
    pub async fn check(&self, session: &str, access_token: &str) -> Result<(), SessionError> {
        let key: [u8; 32] = Sha256::digest(session.as_bytes()).into();
        if !self.verdicts.contains_key(&key) && self.recent.contains_key(&key) {
            let (directus, verdicts, recent, confirmed) =
                (self.directus.clone(), self.verdicts.clone(), self.recent.clone(), self.confirmed.clone());
            let token = SecretString::from(access_token);
            tokio::spawn(async move {
                let ask = async { directus.session_is_live(token.expose_secret()).await };
                if let Ok(false) = verdicts.try_get_with(key, ask).await {
                    recent.invalidate(&key).await;
                    confirmed.invalidate(&key).await;
                }
            });
            return Ok(());
        }
        let directus = &self.directus;
        // Boxed, as a caller's read is (`CallerDirectory::profile`): asking Directus is rare, every request is not.
        let ask = Box::pin(async move { directus.session_is_live(access_token).await });
        let verdict = self.verdicts.try_get_with(key, ask).await;
        match verdict {
            Ok(true) => {
                self.recent.insert(key, ()).await;
                self.confirmed.insert(key, ()).await;
                Ok(())
            }
            Ok(false) => {
                self.recent.invalidate(&key).await;
                self.confirmed.invalidate(&key).await;
                Err(SessionError::Ended)
            }
            Err(error) => self.on_failure(key, &error).await,
        }
    }

    async fn on_failure(&self, key: [u8; 32], error: &Arc<DirectusError>) -> Result<(), SessionError> {
        if error.is_outage() && self.confirmed.contains_key(&key) {
            tracing::debug!(%error, "Directus unreachable; accepting a session it confirmed recently");
            return Ok(());
        }
        tracing::warn!(%error, "cannot confirm a session with Directus");
        Err(SessionError::Unconfirmed)
    }
}
