//! What a key's change or failure sets off: the key marked, the user told once per incident, and routing on
//! every replica told at once.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::domain::provider::Provider;
use crate::domain::upstream::UpstreamFailure;
use crate::domain::user::UserId;
use crate::services::callers::CallerDirectory;
use crate::services::key_vault::KeyVault;
use crate::services::notifier::{KeyProblem, Notifier};
use crate::shared::bus::{Bus, Event};

pub struct KeyEvents {
    vault: Arc<KeyVault>,
    notifier: Arc<Notifier>,
    callers: Arc<CallerDirectory>,
    bus: Arc<dyn Bus>,
}

impl KeyEvents {
    pub fn new(
        vault: Arc<KeyVault>,
        notifier: Arc<Notifier>,
        callers: Arc<CallerDirectory>,
        bus: Arc<dyn Bus>,
    ) -> Self {
        KeyEvents { vault, notifier, callers, bus }
    }

    /// The provider refused the key or found it out of quota: marked, the user told once per incident, and
    /// routing stops picking it at once. Boxed: its future (about 2.4 KB: Directus writes, a notification, a
    /// publish) would otherwise sit inside every call's, and be copied with it, for a path few calls take.
    pub fn failed(&self, user: UserId, provider: Provider, failure: UpstreamFailure) -> BoxFuture<'_, ()> {
        Box::pin(self.mark_and_tell(user, provider, failure))
    }

    async fn mark_and_tell(&self, user: UserId, provider: Provider, failure: UpstreamFailure) {
        if let Err(error) = self.vault.mark(user, provider, failure).await {
            tracing::warn!(%user, %provider, %error, "could not record the key's failure");
        }
        let problem = match failure {
            UpstreamFailure::QuotaExhausted => KeyProblem::QuotaExhausted,
            _ => KeyProblem::Invalid,
        };
        self.notifier.key_problem(user, provider, problem).await;
        self.forget(user).await;
    }

    /// The user saved, checked or deleted a key: routing sees it at once, on every replica, and a later
    /// failure of the new key is a new incident to notify.
    pub async fn changed(&self, user: UserId, provider: Provider) {
        self.forget(user).await;
        self.notifier.key_changed(user, provider).await;
    }

    async fn forget(&self, user: UserId) {
        self.callers.forget(user).await;
        self.bus.publish(Event::CallerChanged(user)).await;
    }
}
