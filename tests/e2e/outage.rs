use std::process::Command;

use serde_json::Value;

use serde_json::json;

use crate::fakes::{GOOD_KEY, fake_providers, gateway_sidecar};
use crate::harness::{Instance, Sidecar, serial};

fn script(args: &[&str]) -> bool {
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new("bash").args(args).current_dir(root).status().is_ok_and(|status| status.success())
}

/// Directus stopped for a test and started again when this goes: at `end`, or while a failed test unwinds, so
/// one failure does not leave every later test without Directus.
struct DirectusOutage<'a> {
    dir: &'a str,
}

impl<'a> DirectusOutage<'a> {
    fn begin(instance: &'a Instance) -> Self {
        assert!(script(&["scripts/directus-down.sh", &instance.dir]), "scripts/directus-down.sh failed");
        DirectusOutage { dir: &instance.dir }
    }

    fn end(self) {}
}

impl Drop for DirectusOutage<'_> {
    fn drop(&mut self) {
        let started = script(&["scripts/directus-up.sh", "--dir", self.dir, "--start-only"]);
        // A second panic while unwinding would abort the whole test binary.
        assert!(started || std::thread::panicking(), "scripts/directus-up.sh failed");
    }
}

/// Directus goes away: the last known flags keep routing, `/readyz` says degraded; Directus returns: ready.
#[tokio::test]
async fn directus_outage_serves_stale_flags_and_recovers() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_flag(&http, "byok_only_mode", false).await;
    let sidecar = Sidecar::start(&instance, &[("FLAG_CACHE_TTL_SECS", "1"), ("USER_CACHE_TTL_SECS", "60")]).await;
    let premium = instance.login(&http, "PREMIUM").await;
    let (status, _) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!(status, 200);

    let outage = DirectusOutage::begin(&instance);
    // Flags age out after a second; waiting on them, not on "degraded", which a stale caller also gives.
    sidecar.wait_for_stale("flags").await;
    let (status, body) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flags_stale"], true);

    outage.end();
    sidecar.wait_for_readyz("ready").await;
    let (_, body): (u16, Value) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!(body["flags_stale"], false);
    sidecar.stop().await;
}

/// Directus is killed mid-load and the sidecar restarted while records wait: every call's record reaches
/// Directus exactly once.
#[tokio::test]
async fn usage_survives_a_directus_outage_and_a_sidecar_restart_exactly_once() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let extra = [("USER_CACHE_TTL_SECS", "300"), ("RATE_LIMIT_FREE_PER_MIN", "1000")];
    let sidecar = gateway_sidecar(&instance, &providers, &extra).await;
    let free = instance.login(&http, "FREE").await;
    // A model name unique to this run, so the count below sees only this test's records.
    let model = format!("gpt-4o-mini-outage-{}", uuid::Uuid::new_v4().simple());
    let call = |sidecar: &Sidecar| {
        http.post(sidecar.url("/v1/chat/completions"))
            .bearer_auth(&free)
            .json(&json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for _ in 0..10 {
        assert_eq!(call(&sidecar).await.unwrap().status(), 200);
    }
    // Those ten are stored before Directus goes, so the twenty of the outage are all that can wait.
    let query = [("filter[model][_eq]", model.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    instance.wait_for_rows(&http, "/items/credit_transactions", &query, 10).await;
    let outage = DirectusOutage::begin(&instance);
    for i in 10..30 {
        let response = call(&sidecar).await.unwrap();
        assert_eq!(response.status(), 200, "call {i} while Directus is down");
    }
    // Every record of the outage is durably in the store before the sidecar goes away.
    wait_for_waiting_records(&http, &sidecar, |n| n >= 20).await;
    sidecar.stop().await;

    outage.end();
    let sidecar = gateway_sidecar(&instance, &providers, &extra).await;
    for _ in 30..40 {
        assert_eq!(call(&sidecar).await.unwrap().status(), 200);
    }
    wait_for_waiting_records(&http, &sidecar, |n| n == 0).await;
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &query, 40).await;
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (40, 40), "every record exactly once");
    sidecar.stop().await;
}

async fn wait_for_waiting_records(http: &reqwest::Client, sidecar: &Sidecar, done: impl Fn(u64) -> bool) {
    for _ in 0..400 {
        let (_, body) = sidecar.get(http, "/readyz", None).await;
        if body["usage_records_waiting"].as_u64().is_some_and(&done) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the usage outbox never reached the expected size");
}

/// Calls until the answer was served on the caller's last known profile (Directus is down; the caller cache
/// expires after a second), and returns it, with how many calls before it were served on the cached profile.
async fn served_on_last_known_profile(
    http: &reqwest::Client,
    sidecar: &Sidecar,
    token: &str,
    body: &Value,
) -> (reqwest::Response, usize) {
    for served_before in 0..100 {
        let response =
            http.post(sidecar.url("/v1/chat/completions")).bearer_auth(token).json(body).send().await.unwrap();
        if response.headers().get("x-byok-stale").is_some_and(|v| v.to_str().unwrap().contains("caller")) {
            return (response, served_before);
        }
        assert_eq!(response.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("never served on the last known profile");
}

/// Directus stops: callers the sidecar knows keep AI (their own key, or credits within what they have left),
/// callers it has never seen get a coded 503; everything is accounted once Directus is back.
#[tokio::test]
async fn a_directus_outage_does_not_stop_ai_for_known_callers_nor_let_them_overspend() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, &[("USER_CACHE_TTL_SECS", "1")]).await;
    let (_, premium) = instance.new_user(&http, "premium", "0").await;
    let saved = http
        .put(sidecar.url("/v1/keys/openai"))
        .bearer_auth(&premium)
        .json(&json!({"api_key": GOOD_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let (free_id, free) = instance.new_user(&http, "free", "10").await;
    let stranger = instance.login(&http, "LIFETIME").await;
    // gpt-4o-mini output is $0.60/M: 100,000 tokens may cost 6 cents, 200,000 may cost 12.
    let within =
        json!({"model": "gpt-4o-mini", "max_tokens": 100_000, "messages": [{"role": "user", "content": "hi"}]});
    let beyond =
        json!({"model": "gpt-4o-mini", "max_tokens": 200_000, "messages": [{"role": "user", "content": "hi"}]});
    for token in [&premium, &free] {
        let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(token).json(&within).send().await;
        assert_eq!(response.unwrap().status(), 200);
    }

    let outage = DirectusOutage::begin(&instance);
    let (response, _) = served_on_last_known_profile(&http, &sidecar, &premium, &within).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-byok-source"], "byok", "the last known key");
    let (response, served_before) = served_on_last_known_profile(&http, &sidecar, &free, &within).await;
    assert_eq!(response.status(), 200, "within the last known balance");
    assert_eq!(response.headers()["x-byok-source"], "internal");
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&free).json(&beyond).send().await;
    let response = response.unwrap();
    assert_eq!(response.status(), 402, "beyond it");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "insufficient_credits");
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&stranger).json(&within).send().await;
    let response = response.unwrap();
    assert_eq!(response.status(), 503, "never seen before");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "account_service_unavailable");
    let (_, ready) = sidecar.get(&http, "/readyz", None).await;
    assert_eq!((ready["status"].as_str(), ready["stale"]["callers"].as_bool()), (Some("degraded"), Some(true)));

    outage.end();
    sidecar.wait_for_readyz("ready").await;
    let query = [("filter[user][_eq]", free_id.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let served = 2 + served_before;
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &query, served).await;
    assert_eq!(rows.len(), served, "every call on credits is in the ledger: {rows:?}");
    sidecar.stop().await;
}
