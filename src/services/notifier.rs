//! Tells users about problems with their keys through Directus notifications (in-app, and email when the
//! user has it on): one notification per key per incident, not one per failed request.

use std::sync::Arc;
use std::time::Duration;

use crate::directus::DirectusClient;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;
use crate::shared::Shared;

/// An incident is notified once a day at most, unless the key changes.
const INCIDENT_TTL: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyProblem {
    Invalid,
    QuotaExhausted,
}

impl KeyProblem {
    fn subject(self, provider: Provider) -> String {
        match self {
            KeyProblem::Invalid => format!("Your {} API key stopped working", provider.display_name()),
            KeyProblem::QuotaExhausted => format!("Your {} account is out of quota", provider.display_name()),
        }
    }

    fn message(self, provider: Provider) -> String {
        let name = provider.display_name();
        match self {
            KeyProblem::Invalid => format!(
                "{name} rejected your saved API key, so AI features that use it are paused. Create a new key at {} \
                 and enter it under Settings > API Keys.",
                provider.key_page_url()
            ),
            KeyProblem::QuotaExhausted => format!(
                "{name} reports that your account has no quota or credit left, so AI features that use your key are \
                 paused. Add credit at {}, then re-check the key under Settings > API Keys.",
                provider.billing_url()
            ),
        }
    }
}

pub struct Notifier {
    directus: DirectusClient,
    /// Incidents already notified are claimed there (by every replica, with Redis). A claim ends when the user
    /// saves or re-checks the key, or after a day.
    shared: Arc<Shared>,
}

impl KeyProblem {
    fn as_str(self) -> &'static str {
        match self {
            KeyProblem::Invalid => "invalid",
            KeyProblem::QuotaExhausted => "quota_exhausted",
        }
    }
}

fn incident(user: UserId, provider: Provider, problem: KeyProblem) -> String {
    format!("notified:{user}:{provider}:{}", problem.as_str())
}

impl Notifier {
    pub fn new(directus: DirectusClient, shared: Arc<Shared>) -> Self {
        Notifier { directus, shared }
    }

    /// Sends the notification in the background unless this incident was already notified.
    pub async fn key_problem(&self, user: UserId, provider: Provider, problem: KeyProblem) {
        let incident = incident(user, provider, problem);
        if !self.shared.claim(&incident, INCIDENT_TTL).await {
            crate::metrics::key_incident("already_notified");
            return;
        }
        crate::metrics::key_incident("notified");
        let (directus, shared) = (self.directus.clone(), Arc::clone(&self.shared));
        tokio::spawn(async move {
            match directus.notify(user, &problem.subject(provider), &problem.message(provider)).await {
                Ok(()) => tracing::info!(%user, %provider, ?problem, "user notified about their key"),
                Err(error) => {
                    // Give the incident up so the next failing request tries again.
                    shared.release(&incident).await;
                    tracing::warn!(%user, %provider, ?problem, %error, "could not notify the user");
                }
            }
        });
    }

    /// The user changed or re-checked the key: a new failure is a new incident.
    pub async fn key_changed(&self, user: UserId, provider: Provider) {
        for problem in [KeyProblem::Invalid, KeyProblem::QuotaExhausted] {
            self.shared.release(&incident(user, provider, problem)).await;
        }
    }
}
