//! Payments in the ledger (`credit_transactions`): a purchase is a `grant` keyed `stripe:<payment>`, a refund
//! a `deduction` keyed `stripe-refund:<payment>:<event>`. The unique `request_id` makes each exactly once,
//! whichever replica writes it and however often Stripe delivers the event.
//!
//! The sidecar's Directus role may otherwise create only deductions. A grant carries the Stripe event and its
//! signature, and the Directus hook lets it through only when they verify against the same
//! `STRIPE_WEBHOOK_SECRET` and say this user, this amount and this payment: a stolen sidecar token cannot
//! mint credits.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DirectusClient, DirectusError};
use crate::domain::money::Cents;
use crate::domain::payment::StripeId;
use crate::domain::user::UserId;

/// What writing a payment's ledger row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    /// The row was there already: another delivery of this payment's event got there first.
    AlreadyThere,
}

/// A purchase to grant, with the signed event that proves it to the Directus hook.
pub struct Grant<'a> {
    pub user: UserId,
    pub payment: &'a StripeId,
    pub event: &'a StripeId,
    pub amount: Cents,
    /// The event as Stripe sent it, and its `Stripe-Signature`.
    pub signed_event: &'a str,
    pub signature: &'a str,
}

/// A purchase as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub user: UserId,
    pub amount: Cents,
}

const LEDGER: &str = "/items/credit_transactions";

fn grant_key(payment: &StripeId) -> String {
    format!("stripe:{payment}")
}

fn refund_prefix(payment: &StripeId) -> String {
    format!("stripe-refund:{payment}:")
}

impl DirectusClient {
    /// Grants a purchase.
    pub async fn grant_purchase(&self, grant: &Grant<'_>) -> Result<Written, DirectusError> {
        let body = json!({
            "user": grant.user, "transaction_type": "grant", "service_type": "purchase",
            "cost_cents": grant.amount.to_string(), "request_id": grant_key(grant.payment),
            "description": format!("Stripe payment {} (event {})", grant.payment, grant.event),
            "occurred_at": now(),
            "payment_event": grant.signed_event, "payment_signature": grant.signature,
        });
        self.create_once(body).await
    }

    /// The purchase a payment granted, if it granted one.
    pub async fn purchase(&self, payment: &StripeId) -> Result<Option<Granted>, DirectusError> {
        #[derive(Deserialize)]
        struct Row {
            user: Option<String>,
            cost_cents: Value,
        }
        let request = self.request(Method::GET, LEDGER).query(&[
            ("fields", "user,cost_cents"),
            ("filter[request_id][_eq]", &grant_key(payment)),
            ("filter[transaction_type][_eq]", "grant"),
            ("limit", "1"),
        ]);
        let rows: Vec<Row> = self.data(request).await?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let user = row.user.as_deref().and_then(|u| UserId::parse(u).ok());
        let amount = Cents::from_json(&row.cost_cents).map_err(|_| DirectusError::Decode("cost_cents".into()))?;
        Ok(user.map(|user| Granted { user, amount }))
    }

    /// What earlier refunds of a payment took back, together.
    pub async fn refunded(&self, payment: &StripeId) -> Result<Cents, DirectusError> {
        let prefix = refund_prefix(payment);
        self.ledger_sum(&[
            ("filter[request_id][_starts_with]", prefix.as_str()),
            ("filter[transaction_type][_eq]", "deduction"),
        ])
        .await
    }

    /// Takes back `amount` of a refunded payment from its buyer.
    pub async fn take_back(
        &self,
        user: UserId,
        payment: &StripeId,
        event: &StripeId,
        amount: Cents,
    ) -> Result<Written, DirectusError> {
        let body = json!({
            "user": user, "transaction_type": "deduction", "service_type": "purchase_refund",
            "cost_cents": amount.to_string(), "request_id": format!("{}{event}", refund_prefix(payment)),
            "description": format!("Refund of Stripe payment {payment} (event {event})"),
            "occurred_at": now(),
        });
        self.create_once(body).await
    }

    async fn create_once(&self, row: Value) -> Result<Written, DirectusError> {
        match self.send(self.request(Method::POST, LEDGER).query(&[("fields", "id")]).json(&row)).await {
            Ok(_) => Ok(Written::New),
            Err(DirectusError::Status { status: StatusCode::BAD_REQUEST, code: Some(code) })
                if code == "RECORD_NOT_UNIQUE" =>
            {
                Ok(Written::AlreadyThere)
            }
            Err(error) => Err(error),
        }
    }
}

fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}
