use serde_json::Value;

use crate::helpers::*;

const FLAGS_PATH: &str = "/items/feature_flags";

async fn ready_app_with_only_mode(only: bool) -> (TestApp, String) {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, only, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    app.wait_until_ready("ready").await;
    (app, user)
}

#[tokio::test]
async fn a_signed_flag_webhook_changes_the_very_next_decision() {
    let (app, user) = ready_app_with_only_mode(false).await;
    let before: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(before["source"], "internal");

    mount_flags(&app.directus, true, true, false).await;
    let response = app.flag_webhook().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "applied");

    let after = app.route(&token_for(&user), "openai").await;
    assert_eq!(after.status(), 403);
    assert_eq!(error_code(after).await, "byok_key_required");
}

/// A webhook as our hook sends it: with every flag as read right after the change, at `read_at` (ms).
fn pushed_body(read_at: i64, only: bool) -> String {
    format!(
        r#"{{"type":"feature_flags.items.update","timestamp":"2026-11-23T00:00:00Z","data":{{"collection":"feature_flags","keys":["3"]}},"flags":{{"read_at":{read_at},"rows":[{{"key":"byok_enabled","is_enabled":true,"min_tier":null}},{{"key":"byok_uses_internal_credits","is_enabled":false,"min_tier":null}},{{"key":"byok_only_mode","is_enabled":{only},"min_tier":null}}]}}}}"#
    )
}

#[tokio::test]
async fn flags_pushed_in_the_webhook_apply_without_reading_directus_and_the_newest_wins() {
    let (app, user) = ready_app_with_only_mode(false).await;
    let reads = app.directus_hits(FLAGS_PATH).await;
    let response = app.webhook_at("msg_pushed_1", now(), &pushed_body(2_000, true)).await;
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "applied");
    let after = app.route(&token_for(&user), "openai").await;
    assert_eq!(error_code(after).await, "byok_key_required", "the very next decision");
    assert_eq!(app.directus_hits(FLAGS_PATH).await, reads, "no round trip to Directus");

    // A webhook of an earlier change that arrives late changes nothing.
    let response = app.webhook_at("msg_pushed_0", now(), &pushed_body(1_000, false)).await;
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "outdated");
    assert_eq!(error_code(app.route(&token_for(&user), "openai").await).await, "byok_key_required");
    let response = app.webhook_at("msg_pushed_2", now(), &pushed_body(3_000, false)).await;
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "applied");
    let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(body["source"], "internal");
}

#[tokio::test]
async fn without_a_webhook_the_ttl_cache_keeps_the_old_flags() {
    let (app, user) = ready_app_with_only_mode(false).await;
    mount_flags(&app.directus, true, true, false).await;
    let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(body["source"], "internal", "no webhook, so the cached flags (TTL 300 s) still apply");
    assert_eq!(app.directus_hits(FLAGS_PATH).await, 1);
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing() {
    let (app, user) = ready_app_with_only_mode(false).await;
    mount_flags(&app.directus, true, true, false).await;
    let loads_before = app.directus_hits(FLAGS_PATH).await;
    let id = "msg_bad_signature_test";
    let ts = now();
    let good = webhook_secret().sign(id, ts, FLAG_UPDATE_BODY.as_bytes());
    let flipped_body = FLAG_UPDATE_BODY.replace("update", "updatf");
    let other_secret = byok_bridge::crypto::webhook_signature::WebhookSecret::parse(
        "whsec_YW5vdGhlci1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA==",
    )
    .unwrap()
    .sign(id, ts, FLAG_UPDATE_BODY.as_bytes());

    let send = |headers: Vec<(&'static str, String)>, body: String| {
        let mut request = app.http.post(app.url("/webhooks/directus")).header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request.body(body).send()
    };
    let all = |sig: &str, ts: i64| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig.to_owned()),
        ]
    };
    let six_minutes = 6 * 60;
    let old_sig = webhook_secret().sign(id, ts - six_minutes, FLAG_UPDATE_BODY.as_bytes());
    let ahead_sig = webhook_secret().sign(id, ts + six_minutes, FLAG_UPDATE_BODY.as_bytes());
    let cases = vec![
        ("no headers", send(vec![], FLAG_UPDATE_BODY.into()).await.unwrap()),
        ("no signature", send(all(&good, ts)[..2].to_vec(), FLAG_UPDATE_BODY.into()).await.unwrap()),
        ("wrong secret", send(all(&other_secret, ts), FLAG_UPDATE_BODY.into()).await.unwrap()),
        ("flipped body byte", send(all(&good, ts), flipped_body).await.unwrap()),
        ("signature for another body", send(all(&good, ts), r#"{"type":"x"}"#.into()).await.unwrap()),
        ("6 minutes old", send(all(&old_sig, ts - six_minutes), FLAG_UPDATE_BODY.into()).await.unwrap()),
        ("6 minutes ahead", send(all(&ahead_sig, ts + six_minutes), FLAG_UPDATE_BODY.into()).await.unwrap()),
    ];
    for (name, response) in cases {
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(error_code(response).await, "invalid_signature", "{name}");
    }
    assert_eq!(app.directus_hits(FLAGS_PATH).await, loads_before, "no reload for a refused webhook");
    let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(body["source"], "internal", "flags unchanged");
}

#[tokio::test]
async fn a_redelivered_webhook_is_applied_once() {
    let (app, _) = ready_app_with_only_mode(false).await;
    let ts = now();
    let first = app.webhook_at("msg_same_id", ts, FLAG_UPDATE_BODY).await;
    assert_eq!(first.json::<Value>().await.unwrap()["status"], "applied");
    let loads = app.directus_hits(FLAGS_PATH).await;
    let second = app.webhook_at("msg_same_id", ts, FLAG_UPDATE_BODY).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.json::<Value>().await.unwrap()["status"], "duplicate");
    assert_eq!(app.directus_hits(FLAGS_PATH).await, loads);
}

#[tokio::test]
async fn several_signatures_are_accepted_for_key_rotation() {
    let (app, _) = ready_app_with_only_mode(false).await;
    let (id, ts) = ("msg_rotation", now());
    let good = webhook_secret().sign(id, ts, FLAG_UPDATE_BODY.as_bytes());
    let response = app
        .http
        .post(app.url("/webhooks/directus"))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", format!("v1,b2xkLXNpZ25hdHVyZS1mcm9tLWFuLW9sZC1rZXk= {good}"))
        .body(FLAG_UPDATE_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn signed_events_for_other_collections_are_acknowledged_and_ignored() {
    let (app, _) = ready_app_with_only_mode(false).await;
    let loads = app.directus_hits(FLAGS_PATH).await;
    let body = r#"{"type":"user_api_keys.items.update","data":{}}"#;
    let response = app.webhook_at("msg_other", now(), body).await;
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ignored");
    assert_eq!(app.directus_hits(FLAGS_PATH).await, loads);
}

#[tokio::test]
async fn a_signed_but_malformed_body_is_a_400() {
    let (app, _) = ready_app_with_only_mode(false).await;
    let response = app.webhook_at("msg_malformed", now(), "not json").await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "invalid_json");
}

const STRIPE_SECRET: &str = "whsec_apiTestStripeEndpointSecret0001";

async fn stripe(app: &TestApp, body: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = app.http.post(app.url("/webhooks/stripe")).body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_stripe_webhook_is_off_without_its_secret_and_refuses_what_stripe_did_not_sign() {
    let app = spawn_app().await;
    let (status, body) = stripe(&app, "{}", Some("t=1,v1=00".into())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("payments_not_configured")), "{body}");

    let app = spawn_app_with(&[("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)]).await;
    let secret = byok_bridge::crypto::stripe_signature::StripeSecret::parse(STRIPE_SECRET).unwrap();
    let other = r#"{"id":"evt_1","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    for signature in [None, Some("t=1,v1=00".to_owned()), Some(secret.sign(now() - 301, other.as_bytes()))] {
        let (status, body) = stripe(&app, other, signature).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_signature")), "{body}");
    }
    // Signed, and answered 200 so Stripe stops: an event type the ledger does not care about.
    let (status, body) = stripe(&app, other, Some(secret.sign(now(), other.as_bytes()))).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("ignored")), "{body}");
    // Signed but not shaped as its type says: 422, so the failure shows in Stripe's dashboard.
    let broken = r#"{"id":"evt_2","type":"checkout.session.completed","data":{"object":{"payment_status":"paid"}}}"#;
    let (status, body) = stripe(&app, broken, Some(secret.sign(now(), broken.as_bytes()))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("malformed_payment_event")), "{body}");
    // Nothing reached Directus.
    let writes = app.directus.received_requests().await.unwrap();
    assert!(writes.iter().all(|r| r.method.as_str() == "GET"), "{writes:?}");
}
