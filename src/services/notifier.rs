//! Tells users about problems with their keys through Directus notifications (in-app, and email when the
//! user has it on): one notification per key per incident, not one per failed request.

use std::sync::Arc;
use std::time::Duration;

use time::{Date, OffsetDateTime};

use crate::directus::DirectusClient;
use crate::domain::budget::{Cap, Period, Spend};
use crate::domain::jobs::JobError;
use crate::domain::money::Cents;
use crate::domain::payment::money;
use crate::domain::provider::Provider;
use crate::domain::user::UserId;
use crate::shared::claims::Claims;

/// An incident is notified once a day at most, unless the key changes.
const INCIDENT_TTL: Duration = Duration::from_secs(86_400);
/// A user hears of failed background requests once an hour at most.
pub const JOB_FAILURE_NOTICE_INTERVAL: Duration = Duration::from_secs(3_600);

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

    /// What happened, what to do, and where: Directus shows it in the app and e-mails it (as Markdown) to
    /// users with e-mail notifications on. `key_page` is the account page's key section, when the operator
    /// set `PUBLIC_URL`.
    fn message(self, provider: Provider, key_page: Option<&str>) -> String {
        let name = provider.display_name();
        let (happened, fix) = match self {
            KeyProblem::Invalid => (
                format!("{name} rejected your saved API key, so AI features that use it are paused."),
                format!("Create a new key at {} and save it under \"Your API keys\"", provider.key_page_url()),
            ),
            KeyProblem::QuotaExhausted => (
                format!(
                    "{name} reports that your account has no quota or credit left, so AI features that use your key \
                     are paused."
                ),
                format!(
                    "Add credit at {}: the key is checked again automatically, or verify it now under \"Your API keys\"",
                    provider.billing_url()
                ),
            ),
        };
        let jobs = "Background requests waiting for this key resume by themselves once it works again.";
        match key_page {
            Some(url) => format!("{happened}\n\nWhat to do: {fix} on your account page: {url}\n\n{jobs}"),
            None => format!("{happened}\n\nWhat to do: {fix} on your account page.\n\n{jobs}"),
        }
    }
}

pub struct Notifier {
    directus: DirectusClient,
    /// `PUBLIC_URL/account#keys`, linked from every message when set.
    key_page: Option<String>,
    /// `PUBLIC_URL/account`.
    account_page: Option<String>,
    /// `CREDITS_PURCHASE_URL`, where credits are bought.
    purchase_url: Option<String>,
    /// Incidents already notified are claimed there (by every replica, with Redis). A claim ends when the user
    /// saves or re-checks the key, or after a day.
    claims: Arc<dyn Claims>,
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
    pub fn new(
        directus: DirectusClient,
        claims: Arc<dyn Claims>,
        public_url: Option<&reqwest::Url>,
        purchase_url: Option<&reqwest::Url>,
    ) -> Self {
        let page = |path: &str| public_url.and_then(|url| url.join(path).ok()).map(String::from);
        let (key_page, account_page) = (page("account#keys"), page("account"));
        Notifier { directus, key_page, account_page, purchase_url: purchase_url.map(|url| url.to_string()), claims }
    }

    /// Sends the notification in the background unless this incident was already notified.
    pub async fn key_problem(&self, user: UserId, provider: Provider, problem: KeyProblem) {
        let incident = incident(user, provider, problem);
        if !self.claims.claim(&incident, INCIDENT_TTL).await {
            crate::metrics::key_incident("already_notified");
            return;
        }
        crate::metrics::key_incident("notified");
        let (directus, claims) = (self.directus.clone(), Arc::clone(&self.claims));
        let message = problem.message(provider, self.key_page.as_deref());
        tokio::spawn(async move {
            match directus.notify(user, &problem.subject(provider), &message).await {
                Ok(()) => tracing::info!(%user, %provider, ?problem, "user notified about their key"),
                Err(error) => {
                    // Give the incident up so the next failing request tries again.
                    claims.release(&incident).await;
                    tracing::warn!(%user, %provider, ?problem, %error, "could not notify the user");
                }
            }
        });
    }

    /// A job the user asked to hear about failed for good. At most one such notice (and e-mail) per user per
    /// [`JOB_FAILURE_NOTICE_INTERVAL`], across replicas: a batch failing together sends one, not a thousand.
    pub async fn job_failed(&self, user: UserId, job: uuid::Uuid, model: &str, error: Option<&JobError>) {
        let claim = format!("notified:{user}:job_failed");
        if !self.claims.claim(&claim, JOB_FAILURE_NOTICE_INTERVAL).await {
            crate::metrics::job_failure_notice("throttled");
            return;
        }
        crate::metrics::job_failure_notice("sent");
        let reason = error.map_or("it could not be completed", |e| e.message.as_str());
        let message = format!(
            "Your background AI request {job} ({model}) failed and will not be retried: {reason}\n\n\
             You can retry it from the app once the cause is fixed. Other background requests that fail within \
             the next hour are not notified one by one: the app's list of background requests shows them all."
        );
        if let Err(error) = self.directus.notify(user, "A background AI request failed", &message).await {
            self.claims.release(&claim).await;
            tracing::warn!(%user, %job, %error, "could not notify the user of a failed job");
        }
    }

    /// A payment added credits: the buyer hears it in the app and by e-mail, in the background.
    pub fn credits_bought(&self, user: UserId, amount: &str) {
        let mut message = format!("Your payment was received and {amount} of credits were added to your account.");
        message.push_str(" They are ready to use now.");
        if let Some(url) = &self.account_page {
            message.push_str(&format!("\n\nYour balance is on your account page: {url}"));
        }
        self.notify_later(user, "Credits added".to_owned(), message);
    }

    /// A spending cap reached `percent`: what is spent, what happens at the cap, and where to look.
    pub fn spending_alert(&self, user: UserId, cap: Cap, percent: u8, spent: Cents, now: OffsetDateTime) {
        let (period, limit) = (cap.period.name(), cap.limit.ceil_whole());
        let resets = cap.period.resets_at(now).date();
        let (kind, requests, others) = match cap.spend {
            Spend::Credits => ("credit", "on platform credits", "with your own API keys"),
            Spend::OwnKeys => ("own-key", "with your own API keys", "on platform credits"),
        };
        let subject = if percent >= 100 {
            format!("You reached your {period} {kind} cap")
        } else {
            format!("You have used {percent}% of your {period} {kind} cap")
        };
        let unit = if cap.period == Period::Day { "day" } else { "month" };
        let mut message = if percent >= 100 {
            format!(
                "Your AI requests {requests} have reached your {period} cap of {limit} cents: requests that would \
                 pass it are refused until it starts over on {resets} at 00:00 UTC. Requests {others} are not \
                 affected."
            )
        } else {
            format!(
                "Your AI requests {requests} have cost {} cents this {unit}, {percent}% of your {period} cap of \
                 {limit} cents. At the cap, such requests are refused until it starts over on {resets} at 00:00 \
                 UTC; requests {others} are not affected.",
                spent.ceil_whole(),
            )
        };
        if let Some(url) = &self.account_page {
            message.push_str(&format!("\n\nYour spending is on your account page: {url}"));
        }
        self.notify_later(user, subject, message);
    }

    /// The user's credits fell below `threshold` (`LOW_BALANCE_ALERT_CENTS`): how much is left, what happens at
    /// zero, and where to buy more.
    pub fn low_balance(&self, user: UserId, left: Cents, threshold: Cents) {
        let mut message = format!(
            "You have {} of platform credits left, below the {} at which we let you know. When they run out, AI \
             requests that use credits are refused; requests with your own API keys are not affected.",
            money(left.max(Cents::ZERO), "usd"),
            money(threshold, "usd")
        );
        match (&self.purchase_url, &self.account_page) {
            (Some(url), _) => message.push_str(&format!("\n\nBuy credits: {url}")),
            (None, Some(url)) => message.push_str(&format!("\n\nYour balance is on your account page: {url}")),
            (None, None) => {}
        }
        self.notify_later(user, "Your credits are running low".to_owned(), message);
    }

    /// Sends a notice in the background: the call that set it off does not wait for Directus, and a notice
    /// that cannot be sent is logged, not retried (its next occasion sends the next one).
    fn notify_later(&self, user: UserId, subject: String, message: String) {
        let directus = self.directus.clone();
        tokio::spawn(async move {
            if let Err(error) = directus.notify(user, &subject, &message).await {
                tracing::warn!(%user, %subject, %error, "could not notify the user");
            }
        });
    }

    /// The platform's daily budget (of `scope`'s keys, or all) reached `percent` (80, or 100: spent) on `day`:
    /// each of `recipients` (the e-mail addresses of Directus users, its admins) hears it once that day,
    /// whichever replica notices.
    pub async fn platform_budget(
        &self,
        recipients: &[String],
        day: Date,
        scope: Option<Provider>,
        percent: u8,
        spent: Cents,
        cap: Cents,
    ) {
        let label = scope.map_or("all", Provider::as_str);
        let claim = format!("platform-budget:{day}:{label}:{percent}");
        let ttl = Duration::from_secs(25 * 3_600);
        if !self.claims.claim(&claim, ttl).await {
            return;
        }
        let admins = match self.directus.users_by_email(recipients).await {
            Ok(admins) => admins,
            Err(error) => {
                tracing::warn!(%error, "cannot look up PLATFORM_BUDGET_ALERT_EMAILS in Directus; they are not told");
                self.claims.release(&claim).await;
                return;
            }
        };
        if admins.len() < recipients.len() {
            tracing::warn!(
                found = admins.len(),
                listed = recipients.len(),
                "PLATFORM_BUDGET_ALERT_EMAILS lists addresses no Directus user has; those are not told"
            );
        }
        let (spent_text, cap_text) = (money(spent, "usd"), money(cap, "usd"));
        // "", or " for OpenAI"; which keys; which setting.
        let (of, keys, setting) = match scope {
            None => (String::new(), "its own provider keys".to_owned(), "PLATFORM_DAILY_BUDGET_CENTS".to_owned()),
            Some(provider) => (
                format!(" for {}", provider.display_name()),
                format!("its own {} key", provider.display_name()),
                format!("PLATFORM_DAILY_BUDGET_CENTS_{}", provider.as_str().to_uppercase()),
            ),
        };
        let (subject, message) = if percent >= 100 {
            (
                format!("The platform's daily AI budget{of} is spent"),
                format!(
                    "The platform has spent its daily budget{of} of {cap_text} on {keys}. AI requests on platform \
                     credits that need it are refused until 00:00 UTC (users' own API keys keep working). To allow \
                     more today, raise {setting} and restart the sidecar."
                ),
            )
        } else {
            (
                format!("The platform has used {percent}% of its daily AI budget{of}"),
                format!(
                    "The platform has spent {spent_text} of its daily budget{of} of {cap_text} ({percent}%) on {keys} \
                     today. At the budget, AI requests on platform credits that need it are refused until 00:00 UTC; \
                     users' own API keys keep working. {setting} sets the budget; the operations panel in Insights \
                     shows today's spending."
                ),
            )
        };
        crate::metrics::platform_budget_alert(label, percent);
        for admin in admins {
            if let Err(error) = self.directus.notify(admin, &subject, &message).await {
                tracing::warn!(user = %admin, %error, "could not tell an admin of the platform's budget");
            }
        }
    }

    /// The user changed or re-checked the key: a new failure is a new incident.
    pub async fn key_changed(&self, user: UserId, provider: Provider) {
        for problem in [KeyProblem::Invalid, KeyProblem::QuotaExhausted] {
            self.claims.release(&incident(user, provider, problem)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_says_what_happened_what_to_do_and_links_the_key_page() {
        let message = KeyProblem::Invalid.message(Provider::openai(), Some("https://ai.example.com/account#keys"));
        assert!(message.starts_with("OpenAI rejected your saved API key"), "{message}");
        assert!(message.contains("https://platform.openai.com/api-keys"), "{message}");
        assert!(message.contains("on your account page: https://ai.example.com/account#keys\n"), "{message}");
        assert!(message.ends_with("resume by themselves once it works again."), "{message}");
        let message = KeyProblem::QuotaExhausted.message(Provider::anthropic(), None);
        assert!(message.contains("https://console.anthropic.com/settings/billing"), "{message}");
        assert!(message.contains("on your account page.\n"), "{message}");
    }
}
