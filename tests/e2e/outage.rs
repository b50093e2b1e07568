use std::process::Command;

use serde_json::Value;

use serde_json::json;

use crate::gateway::{fake_providers, gateway_sidecar, wait_for_rows};
use crate::harness::{Instance, Sidecar, serial};

fn script(args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("bash").args(args).current_dir(root).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

/// Directus goes away: the last known flags keep routing, `/readyz` says degraded; Directus returns: ready.
#[tokio::test]
async fn directus_outage_serves_stale_flags_and_recovers() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = reqwest::Client::new();
    instance.set_flag(&http, "byok_only_mode", false).await;
    let sidecar = Sidecar::start(&instance, &[("FLAG_CACHE_TTL_SECS", "1"), ("USER_CACHE_TTL_SECS", "60")]).await;
    let premium = instance.login(&http, "PREMIUM").await;
    let (status, _) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!(status, 200);

    script(&["scripts/directus-down.sh", &instance.dir]);
    sidecar.wait_for_readyz("degraded").await;
    let (status, body) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["flags_stale"], true);

    script(&["scripts/directus-up.sh", "--dir", &instance.dir, "--start-only"]);
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
    let http = reqwest::Client::new();
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
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for _ in 0..10 {
        assert_eq!(call(&sidecar).await.unwrap().status(), 200);
    }
    script(&["scripts/directus-down.sh", &instance.dir]);
    for i in 10..30 {
        let response = call(&sidecar).await.unwrap();
        assert_eq!(response.status(), 200, "call {i} while Directus is down");
    }
    // Every record of the outage is durably spooled before the sidecar goes away.
    wait_for_waiting_records(&http, &sidecar, |n| n >= 20).await;
    sidecar.stop().await;

    script(&["scripts/directus-up.sh", "--dir", &instance.dir, "--start-only"]);
    let sidecar = gateway_sidecar(&instance, &providers, &extra).await;
    for _ in 30..40 {
        assert_eq!(call(&sidecar).await.unwrap().status(), 200);
    }
    wait_for_waiting_records(&http, &sidecar, |n| n == 0).await;
    let query = [("filter[model][_eq]", model.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let rows = wait_for_rows(&instance, &http, "/items/credit_transactions", &query, 40).await;
    let ids: std::collections::HashSet<&str> = rows.iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    assert_eq!((rows.len(), ids.len()), (40, 40), "every record exactly once");
    sidecar.stop().await;
}

async fn wait_for_waiting_records(http: &reqwest::Client, sidecar: &Sidecar, done: impl Fn(u64) -> bool) {
    for _ in 0..400 {
        let body: Value = http.get(sidecar.url("/readyz")).send().await.unwrap().json().await.unwrap();
        if body["usage_records_waiting"].as_u64().is_some_and(&done) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the usage spool never reached the expected size");
}
