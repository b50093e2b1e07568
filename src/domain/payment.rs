//! Payments, as Stripe reports them: which events change the ledger, and by how much.
//!
//! A paid Checkout Session grants its amount in credits (one credit cent per cent paid, in the one currency
//! the operator sells in) to the Directus user its `client_reference_id` (or `metadata.user_id`) names. A
//! refunded charge takes back what was refunded. Both are keyed by the payment (the PaymentIntent), so a
//! payment is granted once whichever of its events arrive, however often.

use serde::Deserialize;

use crate::domain::money::Cents;
use crate::domain::user::UserId;

/// Checkout Sessions paid at once complete paid; delayed methods (bank debits) complete unpaid and send this
/// one when the money arrives.
const PURCHASE_EVENTS: [&str; 2] = ["checkout.session.completed", "checkout.session.async_payment_succeeded"];
const REFUND_EVENT: &str = "charge.refunded";
/// Stripe ids are short (`pi_` and 24 characters); anything far longer is not one.
const MAX_ID_LEN: usize = 255;

/// A Stripe object id (`evt_...`, `pi_...`, `cs_...`): letters, digits and underscores only, so it can go into
/// a ledger key and a Directus filter as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeId(String);

impl StripeId {
    pub fn parse(raw: &str) -> Option<StripeId> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_ID_LEN
            && raw.contains('_')
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        valid.then(|| StripeId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StripeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one delivered event asks of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEvent {
    Purchase(Purchase),
    Refund(Refund),
    /// Nothing: an event type we do not act on, or a checkout whose money has not arrived yet.
    Ignored {
        kind: String,
    },
}

/// Credits bought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub event: StripeId,
    /// The PaymentIntent (the Session when it has none): the grant's key, and what a refund names.
    pub payment: StripeId,
    /// `None` when the session names no user, or names one in a shape no Directus user id has.
    pub buyer: Option<UserId>,
    pub amount: Cents,
    /// Lower case, as Stripe writes it (`usd`).
    pub currency: String,
}

/// Money given back for a payment; `refunded` is the charge's total refunded so far, so partial refunds
/// arriving in any order take back exactly what was refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub event: StripeId,
    pub payment: StripeId,
    pub refunded: Cents,
    pub currency: String,
}

/// A signed event that is not shaped as its type says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedEvent(&'static str);

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct CheckoutSession {
    id: String,
    amount_total: Option<i64>,
    currency: Option<String>,
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    payment_intent: Option<String>,
    payment_status: String,
}

#[derive(Default, Deserialize)]
struct Metadata {
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct Charge {
    amount_refunded: i64,
    currency: String,
    payment_intent: Option<String>,
}

impl PaymentEvent {
    pub fn parse(body: &[u8]) -> Result<PaymentEvent, MalformedEvent> {
        let envelope: Envelope =
            serde_json::from_slice(body).map_err(|_| MalformedEvent("not a Stripe event (id, type, data.object)"))?;
        let event = StripeId::parse(&envelope.id).ok_or(MalformedEvent("the event id is not a Stripe id"))?;
        if PURCHASE_EVENTS.contains(&envelope.kind.as_str()) {
            let session: CheckoutSession = serde_json::from_value(envelope.data.object)
                .map_err(|_| MalformedEvent("data.object is not a Checkout Session"))?;
            return purchase(event, session, envelope.kind);
        }
        if envelope.kind == REFUND_EVENT {
            let charge: Charge = serde_json::from_value(envelope.data.object)
                .map_err(|_| MalformedEvent("data.object is not a Charge"))?;
            let payment = charge.payment_intent.as_deref().and_then(StripeId::parse);
            let payment = payment.ok_or(MalformedEvent("the charge names no PaymentIntent"))?;
            let refunded = whole_cents(charge.amount_refunded)?;
            return Ok(PaymentEvent::Refund(Refund {
                event,
                payment,
                refunded,
                currency: charge.currency.to_ascii_lowercase(),
            }));
        }
        Ok(PaymentEvent::Ignored { kind: envelope.kind })
    }
}

fn purchase(event: StripeId, session: CheckoutSession, kind: String) -> Result<PaymentEvent, MalformedEvent> {
    if session.payment_status != "paid" {
        return Ok(PaymentEvent::Ignored { kind: format!("{kind} ({})", session.payment_status) });
    }
    let payment = session.payment_intent.as_deref().or(Some(session.id.as_str())).and_then(StripeId::parse);
    let payment = payment.ok_or(MalformedEvent("the session names no payment"))?;
    let amount = whole_cents(session.amount_total.ok_or(MalformedEvent("the session has no amount_total"))?)?;
    let currency = session.currency.ok_or(MalformedEvent("the session has no currency"))?.to_ascii_lowercase();
    let named = session.client_reference_id.or(session.metadata.user_id);
    let buyer = named.as_deref().and_then(|id| UserId::parse(id.trim()).ok());
    Ok(PaymentEvent::Purchase(Purchase { event, payment, buyer, amount, currency }))
}

/// Whole cents as a price people read (`$12.50` for `usd`, `12.50 EUR` otherwise).
pub fn money(amount: Cents, currency: &str) -> String {
    let cents = amount.ceil_whole();
    let text = format!("{}.{:02}", cents / 100, cents % 100);
    if currency == "usd" { format!("${text}") } else { format!("{text} {}", currency.to_ascii_uppercase()) }
}

/// Stripe amounts are whole units of the currency's smallest denomination (cents for USD).
fn whole_cents(amount: i64) -> Result<Cents, MalformedEvent> {
    if !(0..=i64::MAX / 1_000_000_000).contains(&amount) {
        return Err(MalformedEvent("the amount is out of range"));
    }
    Ok(Cents::whole(amount))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const USER: &str = "7b1c7f0e-9d7a-4a4e-9a54-2c4b6f0f2a11";

    fn session(kind: &str, object: serde_json::Value) -> Vec<u8> {
        json!({"id": "evt_1", "object": "event", "type": kind, "data": {"object": object}}).to_string().into_bytes()
    }

    fn paid(extra: serde_json::Value) -> serde_json::Value {
        let mut object = json!({
            "id": "cs_test_a1", "object": "checkout.session", "amount_total": 1500, "currency": "USD",
            "payment_intent": "pi_3Abc", "payment_status": "paid", "mode": "payment", "metadata": {},
        });
        object.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        object
    }

    #[test]
    fn a_paid_session_is_a_purchase_by_its_client_reference_or_metadata() {
        let body = session("checkout.session.completed", paid(json!({"client_reference_id": USER})));
        let PaymentEvent::Purchase(purchase) = PaymentEvent::parse(&body).unwrap() else { panic!() };
        assert_eq!(purchase.event.as_str(), "evt_1");
        assert_eq!(purchase.payment.as_str(), "pi_3Abc");
        assert_eq!(purchase.buyer, Some(UserId::parse(USER).unwrap()));
        assert_eq!(purchase.amount, Cents::whole(1500));
        assert_eq!(purchase.currency, "usd");

        let body = session("checkout.session.async_payment_succeeded", paid(json!({"metadata": {"user_id": USER}})));
        let PaymentEvent::Purchase(purchase) = PaymentEvent::parse(&body).unwrap() else { panic!() };
        assert_eq!(purchase.buyer, Some(UserId::parse(USER).unwrap()));
    }

    #[test]
    fn a_session_without_a_user_id_has_no_buyer_and_one_without_an_intent_is_keyed_by_itself() {
        for reference in [json!({}), json!({"client_reference_id": "alice@example.com"})] {
            let body = session("checkout.session.completed", paid(reference));
            let PaymentEvent::Purchase(purchase) = PaymentEvent::parse(&body).unwrap() else { panic!() };
            assert_eq!(purchase.buyer, None);
        }
        let body = session("checkout.session.completed", paid(json!({"payment_intent": null})));
        let PaymentEvent::Purchase(purchase) = PaymentEvent::parse(&body).unwrap() else { panic!() };
        assert_eq!(purchase.payment.as_str(), "cs_test_a1");
    }

    #[test]
    fn an_unpaid_session_and_other_event_types_are_ignored() {
        let body = session("checkout.session.completed", paid(json!({"payment_status": "unpaid"})));
        assert!(matches!(PaymentEvent::parse(&body).unwrap(), PaymentEvent::Ignored { .. }));
        let body = session("customer.created", json!({"id": "cus_1"}));
        assert_eq!(PaymentEvent::parse(&body).unwrap(), PaymentEvent::Ignored { kind: "customer.created".into() });
    }

    #[test]
    fn a_refunded_charge_says_its_payment_and_the_total_refunded() {
        let charge = json!({"id": "ch_1", "object": "charge", "amount": 1500, "amount_refunded": 500,
                            "currency": "usd", "payment_intent": "pi_3Abc", "refunded": false});
        let PaymentEvent::Refund(refund) = PaymentEvent::parse(&session("charge.refunded", charge)).unwrap() else {
            panic!()
        };
        assert_eq!((refund.payment.as_str(), refund.refunded), ("pi_3Abc", Cents::whole(500)));
    }

    #[test]
    fn malformed_events_are_refused() {
        let bodies = [
            b"not json".to_vec(),
            json!({"id": "evt 1", "type": "customer.created", "data": {"object": {}}}).to_string().into_bytes(),
            session("checkout.session.completed", json!({"id": "cs_1", "payment_status": "paid"})),
            session("checkout.session.completed", paid(json!({"amount_total": -5}))),
            session("checkout.session.completed", paid(json!({"payment_intent": "pi_1;drop", "id": "cs 1"}))),
            session("charge.refunded", json!({"amount_refunded": 5, "currency": "usd"})),
        ];
        for body in bodies {
            assert!(PaymentEvent::parse(&body).is_err(), "{}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn money_reads_as_people_write_prices() {
        assert_eq!(money(Cents::whole(1500), "usd"), "$15.00");
        assert_eq!(money(Cents::whole(5), "eur"), "0.05 EUR");
    }

    #[test]
    fn stripe_ids_are_letters_digits_and_underscores() {
        assert!(StripeId::parse("pi_3MtwBwLkdIwHu7ix28a3tqPa").is_some());
        for bad in ["", "pi", "pi_1&x", "pi_1*", "evt_ 1"] {
            assert!(StripeId::parse(bad).is_none(), "{bad}");
        }
        assert!(StripeId::parse(&format!("pi_{}", "a".repeat(300))).is_none());
    }
}
