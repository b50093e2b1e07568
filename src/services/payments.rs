//! Credits bought through Stripe: a verified event becomes one ledger row, whichever replica receives it and
//! however often, and routing on every replica sees the new balance at once.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::StripeConfig;
use crate::crypto::stripe_signature::{StripeSecret, StripeSignatureError};
use crate::directus::{DirectusClient, DirectusError, Grant, Written};
use crate::domain::error_code::{Code, Coded};
use crate::domain::payment::{PaymentEvent, Purchase, Refund, money};
use crate::domain::user::UserId;
use crate::services::callers::CallerDirectory;
use crate::services::notifier::Notifier;
use crate::shared::bus::{Bus, Event};
use crate::shared::claims::Claims;

/// Stripe redelivers for up to three days; a claim only spares Directus the repeats that come close together
/// (the ledger's unique key is what makes a payment count once).
const CLAIM_TTL: Duration = Duration::from_secs(600);

/// What an event did, as the webhook answers it (Stripe only looks at the status; people read the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Granted,
    Refunded,
    /// This event, or another of the same payment, was applied already.
    Duplicate,
    /// Acknowledged, nothing to do: another event type, an unpaid checkout, a refund already taken back.
    Ignored,
    /// Paid, but for no Directus user we know: nothing granted; an operator has to look (logged as an error).
    UnknownUser,
    /// Paid in a currency this platform does not sell credits in: nothing granted (logged as an error).
    WrongCurrency,
    /// A refund of a payment that granted nothing here: nothing taken back.
    UnknownPayment,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Directus could not write or read the ledger: answered 503, so Stripe delivers the event again.
    #[error(transparent)]
    Directus(#[from] DirectusError),
}

impl Coded for PaymentError {
    fn code(&self) -> Code {
        match self {
            PaymentError::Directus(error) => error.code(),
        }
    }
}

pub struct Payments {
    secret: StripeSecret,
    /// The one currency credits are sold in (lower case, as Stripe writes it): a paid cent is a credit cent.
    currency: String,
    directus: DirectusClient,
    callers: Arc<CallerDirectory>,
    bus: Arc<dyn Bus>,
    claims: Arc<dyn Claims>,
    notifier: Arc<Notifier>,
}

impl Payments {
    pub fn new(
        stripe: &StripeConfig,
        directus: DirectusClient,
        callers: Arc<CallerDirectory>,
        bus: Arc<dyn Bus>,
        claims: Arc<dyn Claims>,
        notifier: Arc<Notifier>,
    ) -> Self {
        let (secret, currency) = (stripe.secret.clone(), stripe.currency.clone());
        Payments { secret, currency, directus, callers, bus, claims, notifier }
    }

    pub fn verify(&self, signature: Option<&str>, body: &[u8], now: i64) -> Result<(), StripeSignatureError> {
        self.secret.verify(signature, body, now)
    }

    /// Applies a verified event. `body` and `signature` go with a grant, for the Directus hook to check.
    pub async fn apply(&self, event: PaymentEvent, body: &str, signature: &str) -> Result<Outcome, PaymentError> {
        let event_id = match &event {
            PaymentEvent::Ignored { kind } => {
                tracing::info!(%kind, "payment event ignored");
                return Ok(Outcome::Ignored);
            }
            PaymentEvent::Purchase(purchase) => &purchase.event,
            PaymentEvent::Refund(refund) => &refund.event,
        };
        let claim = format!("stripe:{event_id}");
        if !self.claims.claim(&claim, CLAIM_TTL).await {
            return Ok(Outcome::Duplicate);
        }
        let outcome = match &event {
            PaymentEvent::Purchase(purchase) => self.purchase(purchase, body, signature).await,
            PaymentEvent::Refund(refund) => self.refund(refund).await,
            PaymentEvent::Ignored { .. } => Ok(Outcome::Ignored),
        };
        if outcome.is_err() {
            // Stripe delivers it again; this replica must not take the retry for a repeat.
            self.claims.release(&claim).await;
        }
        crate::metrics::payment_event(outcome.as_ref().map_or("failed", |o| o.label()));
        outcome
    }

    async fn purchase(&self, purchase: &Purchase, body: &str, signature: &str) -> Result<Outcome, PaymentError> {
        let (event, payment) = (&purchase.event, &purchase.payment);
        if purchase.currency != self.currency {
            tracing::error!(%event, %payment, currency = %purchase.currency, expected = %self.currency,
                "a payment in another currency than STRIPE_CURRENCY granted nothing; refund it or grant by hand");
            return Ok(Outcome::WrongCurrency);
        }
        let Some(user) = self.known_user(purchase.buyer).await? else {
            tracing::error!(%event, %payment, amount = %purchase.amount,
                "a payment names no Directus user (client_reference_id or metadata.user_id); nothing granted; \
                 refund it or grant by hand");
            return Ok(Outcome::UnknownUser);
        };
        let grant = Grant { user, payment, event, amount: purchase.amount, signed_event: body, signature };
        let written = self.directus.grant_purchase(&grant).await.inspect_err(|error| {
            if let DirectusError::Status { status, .. } = error
                && *status == 403
            {
                tracing::error!(%event, %payment, "Directus refused the grant: set BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET in \
                    Directus to the sidecar's STRIPE_WEBHOOK_SECRET (Stripe retries the event meanwhile)");
            }
        })?;
        if written == Written::AlreadyThere {
            tracing::info!(%event, %payment, "payment granted already");
            return Ok(Outcome::Duplicate);
        }
        tracing::info!(%event, %payment, %user, amount = %purchase.amount, "credits bought");
        self.balance_changed(user).await;
        self.notifier.credits_bought(user, &money(purchase.amount, &self.currency));
        Ok(Outcome::Granted)
    }

    async fn refund(&self, refund: &Refund) -> Result<Outcome, PaymentError> {
        let (event, payment) = (&refund.event, &refund.payment);
        let Some(granted) = self.directus.purchase(payment).await? else {
            tracing::warn!(%event, %payment, "a refund of a payment that granted nothing here; nothing taken back");
            return Ok(Outcome::UnknownPayment);
        };
        // Never more than the purchase granted, whatever the charge says.
        let owed = refund.refunded.min(granted.amount) - self.directus.refunded(payment).await?;
        if !owed.is_positive() {
            return Ok(Outcome::Ignored);
        }
        if self.directus.take_back(granted.user, payment, event, owed).await? == Written::AlreadyThere {
            return Ok(Outcome::Duplicate);
        }
        tracing::info!(%event, %payment, user = %granted.user, amount = %owed, "refunded credits taken back");
        self.balance_changed(granted.user).await;
        Ok(Outcome::Refunded)
    }

    async fn known_user(&self, buyer: Option<UserId>) -> Result<Option<UserId>, PaymentError> {
        let Some(user) = buyer else { return Ok(None) };
        Ok(self.directus.user_profile(user).await?.map(|_| user))
    }

    /// Routing reads the ledger again on every replica, so bought credits are usable on the next call.
    async fn balance_changed(&self, user: UserId) {
        self.callers.forget(user).await;
        self.bus.publish(Event::CallerChanged(user)).await;
    }
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::Refunded => "refunded",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::UnknownUser => "unknown_user",
            Outcome::WrongCurrency => "wrong_currency",
            Outcome::UnknownPayment => "unknown_payment",
        }
    }
}
