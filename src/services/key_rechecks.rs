//! Keys checked again in the background, because what the provider says about them can change without the
//! user doing anything: `unverified` keys (saved while their provider could not be reached) and
//! `quota_exceeded` ones (the user topped up their provider account). A key that works again is picked by
//! routing at once, on every replica, and the user's jobs paused on it run again.

use std::sync::Arc;

use crate::domain::api_key::KeyStatus;
use crate::services::gateway::KeyEvents;
use crate::services::jobs::Jobs;
use crate::services::key_vault::KeyVault;

/// Keys checked per round: the oldest first, so a backlog is worked through round by round.
const PER_ROUND: usize = 100;

pub struct KeyRechecks {
    vault: Arc<KeyVault>,
    key_events: Arc<KeyEvents>,
    jobs: Arc<Jobs>,
}

impl KeyRechecks {
    pub fn new(vault: Arc<KeyVault>, key_events: Arc<KeyEvents>, jobs: Arc<Jobs>) -> Self {
        KeyRechecks { vault, key_events, jobs }
    }

    /// One round over the keys in `status`. Several replicas may run rounds at once: each check is
    /// idempotent.
    pub async fn round(&self, status: KeyStatus) {
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
