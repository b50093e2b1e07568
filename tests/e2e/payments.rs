//! Buying credits through Stripe's webhook, against the real ledger and the real Directus hook: a signed
//! checkout grants once however often it arrives, a refund takes back what was refunded, and nothing else
//! (a stale, forged or replayed event, a payment for nobody, the sidecar's token alone) changes the ledger.

use byok_bridge::crypto::stripe_signature::StripeSecret;
use serde_json::{Value, json};

use crate::fakes::{GatewayScene, fake_providers, gateway_scene, gateway_sidecar};
use crate::harness::{Instance, Sidecar, serial};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn checkout(event: &str, kind: &str, payment: &str, user: &str, amount: i64) -> String {
    json!({
        "id": event, "object": "event", "type": kind, "livemode": false,
        "data": {"object": {
            "id": format!("cs_test_{payment}"), "object": "checkout.session", "mode": "payment",
            "amount_total": amount, "currency": "usd", "client_reference_id": user,
            "payment_intent": payment, "payment_status": "paid", "metadata": {},
        }},
    })
    .to_string()
}

fn refund(event: &str, payment: &str, refunded: i64) -> String {
    json!({
        "id": event, "object": "event", "type": "charge.refunded",
        "data": {"object": {"id": format!("ch_{payment}"), "object": "charge", "amount": 1500,
                            "amount_refunded": refunded, "currency": "usd", "payment_intent": payment}},
    })
    .to_string()
}

async fn deliver(http: &reqwest::Client, sidecar: &Sidecar, body: &str, signature: &str) -> (u16, Value) {
    let response = http
        .post(sidecar.url("/webhooks/stripe"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn ledger_rows(instance: &Instance, http: &reqwest::Client, user: &str) -> Vec<Value> {
    let query = [("filter[user][_eq]", user), ("fields", "transaction_type,cost_cents,request_id,service_type")];
    instance.admin_get(http, "/items/credit_transactions", &query).await.as_array().unwrap().clone()
}

fn cents(row: &Value) -> f64 {
    let value = &row["cost_cents"];
    value.as_f64().or_else(|| value.as_str().and_then(|s| s.parse().ok())).unwrap()
}

#[tokio::test]
async fn a_signed_checkout_grants_credits_once_and_a_refund_takes_them_back() {
    let GatewayScene { _serial, _providers, instance, http, sidecar } = gateway_scene(&[]).await;
    let secret = StripeSecret::parse(instance.var("STRIPE_WEBHOOK_SECRET")).unwrap();
    let (user, token) = instance.new_user(&http, "free", "0").await;
    let call = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});

    // No credits yet: the call is refused for credit.
    let refused = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&call).send().await.unwrap();
    assert_eq!(refused.status(), 402);

    let payment = format!("pi_{}", uuid::Uuid::new_v4().simple());
    let body = checkout("evt_purchase_1", "checkout.session.completed", &payment, &user, 1500);
    let signature = secret.sign(now(), body.as_bytes());
    let (status, answer) = deliver(&http, &sidecar, &body, &signature).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("granted")), "{answer}");

    // Stripe delivers it again, and the same payment comes again under another event: still one grant.
    let (status, answer) = deliver(&http, &sidecar, &body, &signature).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("duplicate")), "{answer}");
    let again = checkout("evt_purchase_2", "checkout.session.async_payment_succeeded", &payment, &user, 1500);
    let (status, answer) = deliver(&http, &sidecar, &again, &secret.sign(now(), again.as_bytes())).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("duplicate")), "{answer}");
    let grants: Vec<Value> = ledger_rows(&instance, &http, &user)
        .await
        .into_iter()
        .filter(|row| row["request_id"] == format!("stripe:{payment}"))
        .collect();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!((&grants[0]["transaction_type"], cents(&grants[0])), (&json!("grant"), 1500.0));

    // Routing sees the bought credits at once, and the buyer was told.
    let paid = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&call).send().await.unwrap();
    assert_eq!(paid.status(), 200);
    assert_eq!(paid.headers()["x-byok-source"], "internal");
    let notices = instance.admin_get(&http, "/notifications", &[("filter[recipient][_eq]", user.as_str())]).await;
    assert!(notices.as_array().unwrap().iter().any(|n| n["subject"] == "Credits added"), "{notices}");

    // Two partial refunds, the later one first: what was refunded in all is taken back, once.
    let second = refund("evt_refund_2", &payment, 1500);
    let (status, answer) = deliver(&http, &sidecar, &second, &secret.sign(now(), second.as_bytes())).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("refunded")), "{answer}");
    let first = refund("evt_refund_1", &payment, 500);
    let (status, answer) = deliver(&http, &sidecar, &first, &secret.sign(now(), first.as_bytes())).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("ignored")), "{answer}");
    let taken: f64 = ledger_rows(&instance, &http, &user)
        .await
        .iter()
        .filter(|row| row["service_type"] == "purchase_refund")
        .map(|row| {
            assert_eq!(row["transaction_type"], "deduction");
            cents(row)
        })
        .sum();
    assert_eq!(taken, 1500.0);
    sidecar.stop().await;
}

#[tokio::test]
async fn stale_forged_replayed_and_unknown_payments_change_nothing() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, &[]).await;
    let secret = StripeSecret::parse(instance.var("STRIPE_WEBHOOK_SECRET")).unwrap();
    let (user, _) = instance.new_user(&http, "free", "0").await;
    let payment = format!("pi_{}", uuid::Uuid::new_v4().simple());
    let body = checkout("evt_refused_1", "checkout.session.completed", &payment, &user, 2000);

    let forged = StripeSecret::parse("whsec_not_the_endpoint_secret_at_all").unwrap();
    for signature in [
        secret.sign(now() - 600, body.as_bytes()),
        forged.sign(now(), body.as_bytes()),
        secret.sign(now(), body.replace("2000", "200000").as_bytes()),
        String::new(),
    ] {
        let (status, answer) = deliver(&http, &sidecar, &body, &signature).await;
        assert_eq!((status, &answer["error"]["code"]), (400, &json!("invalid_signature")), "{answer}");
    }
    // A payment naming no user of this Directus: acknowledged (Stripe's retries would not help), not granted.
    let nobody =
        checkout("evt_nobody", "checkout.session.completed", &payment, &uuid::Uuid::new_v4().to_string(), 2000);
    let (status, answer) = deliver(&http, &sidecar, &nobody, &secret.sign(now(), nobody.as_bytes())).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("unknown_user")), "{answer}");
    // A refund of a payment that granted nothing here takes nothing.
    let stray = refund("evt_stray_refund", &payment, 500);
    let (status, answer) = deliver(&http, &sidecar, &stray, &secret.sign(now(), stray.as_bytes())).await;
    assert_eq!((status, &answer["outcome"]), (200, &json!("unknown_payment")), "{answer}");

    // The sidecar's own Directus token cannot grant without the signed event, nor more than it proves.
    let ledger = instance.directus("/items/credit_transactions");
    let token = instance.var("DIRECTUS_TOKEN");
    let unproven = json!({"user": user, "transaction_type": "grant", "cost_cents": "2000", "request_id": format!("stripe:{payment}")});
    let response = http.post(&ledger).bearer_auth(token).json(&unproven).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let mut inflated = unproven.clone();
    inflated["cost_cents"] = json!("200000");
    inflated["payment_event"] = json!(body);
    inflated["payment_signature"] = json!(secret.sign(now(), body.as_bytes()));
    let response = http.post(&ledger).bearer_auth(token).json(&inflated).send().await.unwrap();
    assert_eq!(response.status(), 403);

    let rows = ledger_rows(&instance, &http, &user).await;
    assert!(rows.iter().all(|row| row["service_type"] == "e2e"), "only the test's own opening row: {rows:?}");
    assert_eq!(instance.ledger_balance(&http, &user).await, 0.0);
    sidecar.stop().await;
}
