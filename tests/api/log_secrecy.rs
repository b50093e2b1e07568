//! Runs the real binary with `RUST_LOG=trace`, drives every endpoint with secrets in play, and scans all
//! of its output for them.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use byok_bridge::crypto::stripe_signature::StripeSecret;
use byok_bridge::crypto::webhook_signature::WebhookSecret;
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::*;

const PASSWORD: &str = "correct-horse-battery-staple-password";
const SIGNED_IN_ACCESS: &str = "signed-in-access-token-0123456789";
const SIGNED_IN_REFRESH: &str = "signed-in-refresh-token-0123456789";
const FLOWS: &str = "flows-token-that-must-never-be-logged-0123";
const STRIPE: &str = "whsec_stripeSecretThatMustNeverBeLogged01";

#[tokio::test]
async fn no_secret_reaches_the_logs_even_at_trace_level() {
    let directus = wiremock::MockServer::start().await;
    mount_flags(&directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&directus, &user, FakeUser::default()).await;

    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/items/user_api_keys"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({"data": {
            "id": "row-1", "provider": "openai", "key_hint": "sk-proj-...0001", "is_active": true, "status": "active"}})))
        .mount(&directus)
        .await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/auth/login"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({"data": {
            "access_token": SIGNED_IN_ACCESS, "refresh_token": SIGNED_IN_REFRESH, "expires": 900000}})))
        .mount(&directus)
        .await;
    let providers = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&providers)
        .await;
    let openai_base = format!("{}/v1", providers.uri());

    let env = test_env(
        &directus.uri(),
        &[("OPENAI_BASE_URL", &openai_base), ("FLOWS_TOKEN", FLOWS), ("STRIPE_WEBHOOK_SECRET", STRIPE)],
    );
    let _data = DataDir(env["DATA_DIR"].clone().into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_byok-bridge"))
        .env_clear()
        .envs(env)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let mut addr_tx = Some(addr_tx);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = Arc::clone(&output);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("byok-bridge listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
                }
            }
            sink.lock().unwrap().push_str(&line);
        }
    });
    let sink = Arc::clone(&output);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push_str(&line);
        }
    });
    let addr = tokio::time::timeout(std::time::Duration::from_secs(20), addr_rx).await.unwrap().unwrap();
    let url = |p: &str| format!("http://{addr}{p}");
    let http = reqwest::Client::new();

    let token = token_for(&user);
    let planted_key = "sk-proj-plantedKEYthatMustNeverBeLogged0001";
    assert_eq!(
        http.post(url("/v1/route"))
            .bearer_auth(&token)
            .json(&json!({"provider": "openai"}))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    http.post(url("/v1/route"))
        .bearer_auth(format!("{token}x"))
        .json(&json!({"provider": "openai"}))
        .send()
        .await
        .unwrap();
    http.post(url("/v1/route")).bearer_auth(&token).json(&json!({"provider": planted_key})).send().await.unwrap();
    http.post(url("/v1/route"))
        .bearer_auth(&token)
        .json(&json!({"provider": {"k": planted_key}}))
        .send()
        .await
        .unwrap();
    let saved = http
        .put(url("/v1/keys/openai"))
        .bearer_auth(&token)
        .json(&json!({"api_key": planted_key}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    http.put(url("/v1/keys/openai"))
        .bearer_auth(&token)
        .json(&json!({"api_key": format!("{planted_key} x")}))
        .send()
        .await
        .unwrap();
    let flags = http.get(url("/v1/flags")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(flags.status(), 200);
    http.get(url("/v1/flags")).bearer_auth(SERVICE_TOKEN).send().await.unwrap();
    http.get(url("/v1/flags")).bearer_auth(planted_key).send().await.unwrap();
    // Signing in through the sidecar (the password in, the user's tokens out), and a Flow's call.
    let signed_in = http
        .post(url("/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let flow = http
        .post(url("/v1/route"))
        .bearer_auth(FLOWS)
        .header("x-byok-on-behalf-of", &user)
        .json(&json!({"provider": "openai"}))
        .send()
        .await
        .unwrap();
    assert_eq!(flow.status(), 200);
    // A job with a callback (its secret is answered once), and a Flow's job (signed with a derived secret).
    let job = json!({"api": "chat.completions", "callback_url": "https://app.example.com/hooks/ai",
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}});
    let queued = http.post(url("/v1/jobs")).bearer_auth(&token).json(&job).send().await.unwrap();
    assert_eq!(queued.status(), 202);
    let queued: serde_json::Value = queued.json().await.unwrap();
    let callback_secret = queued["callback_secret"].as_str().unwrap().to_owned();
    let mut flow_job = job.clone();
    flow_job.as_object_mut().unwrap().remove("callback_url");
    let queued = http
        .post(url("/v1/jobs"))
        .bearer_auth(FLOWS)
        .header("x-byok-on-behalf-of", &user)
        .json(&flow_job)
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 202);
    let flow_secret = WebhookSecret::derived(FLOWS, "byok-bridge flow job callbacks");
    let ts = now();
    let signature = webhook_secret().sign("msg_log_test", ts, FLAG_UPDATE_BODY.as_bytes());
    let response = http
        .post(url("/webhooks/directus"))
        .header("webhook-id", "msg_log_test")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", &signature)
        .body(FLAG_UPDATE_BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A Stripe event, signed and forged.
    let stripe = StripeSecret::parse(STRIPE).unwrap();
    let event = r#"{"id":"evt_log_test","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let stripe_signature = stripe.sign(ts, event.as_bytes());
    for header in [stripe_signature.as_str(), "t=1,v1=00"] {
        http.post(url("/webhooks/stripe")).header("stripe-signature", header).body(event).send().await.unwrap();
    }

    // Lines reach stderr from the log writer's thread within milliseconds: wait for the last ones.
    let captured = || {
        let logs = output.lock().unwrap();
        logs.contains("routed") && logs.contains("feature flags reloaded")
    };
    for _ in 0..200 {
        if captured() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
    child.wait().await.unwrap();
    assert!(captured(), "logs were captured");
    let logs = output.lock().unwrap().clone();
    let requests = directus.received_requests().await.unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&requests.iter().find(|r| r.method.as_str() == "POST").unwrap().body).unwrap();
    let envelope = stored["encrypted_key"].as_str().unwrap().to_owned();
    let secrets = [
        ("stored ciphertext", envelope.as_str()),
        ("service token", SERVICE_TOKEN),
        ("operator token", OPERATOR_TOKEN),
        ("Directus secret", DIRECTUS_SECRET),
        ("webhook secret", WEBHOOK_SECRET),
        ("webhook secret key material", &WEBHOOK_SECRET[6..]),
        ("encryption key", ENCRYPTION_KEY),
        ("access token", &token),
        ("access token signature", token.rsplit('.').next().unwrap()),
        ("webhook signature", &signature[3..]),
        ("planted provider key", planted_key),
        ("a user's password", PASSWORD),
        ("a signed-in user's access token", SIGNED_IN_ACCESS),
        ("a signed-in user's refresh token", SIGNED_IN_REFRESH),
        ("the Flows token", FLOWS),
        ("a job's callback secret", &callback_secret[6..]),
        ("the Flows callback secret", &flow_secret.expose_secret()[6..]),
        ("the Stripe webhook secret", &STRIPE[6..]),
        ("a Stripe signature", &stripe_signature[13..]),
    ];
    for (name, secret) in secrets {
        assert!(!logs.contains(secret), "{name} appears in the logs");
    }
}
