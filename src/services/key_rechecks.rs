//! Keys checked again in the background, because what the provider says about them can change without the
//! user doing anything: `unverified` keys (saved while their provider could not be reached) and
//! `quota_exceeded` ones (the user topped up their provider account). A key that works again is picked by
//! routing at once, on every replica, and the user's jobs paused on it run again.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::api_key::KeyStatus;
use crate::services::gateway::KeyEvents;
use crate::services::jobs::Jobs;
use crate::services::key_vault::KeyVault;
use crate::shared::claims::Claims;

/// Keys checked per round: the oldest first, so a backlog is worked through round by round.
const PER_ROUND: usize = 100;

pub struct KeyRechecks {
    vault: Arc<KeyVault>,
    key_events: Arc<KeyEvents>,
    jobs: Arc<Jobs>,
    /// One replica runs each round: a quota check is a paid call on the user's account.
    claims: Arc<dyn Claims>,
}

impl KeyRechecks {
    pub fn new(vault: Arc<KeyVault>, key_events: Arc<KeyEvents>, jobs: Arc<Jobs>, claims: Arc<dyn Claims>) -> Self {
        KeyRechecks { vault, key_events, jobs, claims }
    }

    /// One round over the keys in `status`, rounds coming every `every`: the replica that claims the round runs
    /// it, the others skip it (the claim lapses just before the next round is due).
    pub async fn round(&self, status: KeyStatus, every: Duration) {
        let claim = format!("key-recheck:{}", status.as_str());
        if !self.claims.claim(&claim, every.mul_f64(0.9)).await {
            return;
        }
        let usable_again = match self.vault.recheck(status, PER_ROUND).await {
            Ok(usable_again) => usable_again,
            Err(error) => {
                tracing::warn!(status = status.as_str(), %error, "re-checking keys failed; the next round retries");
                return;
            }
        };
        for (user, provider) in usable_again {
            tracing::info!(%user, %provider, was = status.as_str(), "a key works again");
            self.key_events.changed(user, provider).await;
            self.jobs.resume(user, provider).await;
        }
    }
}
