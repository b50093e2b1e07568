use std::process::Command;

use serde_json::Value;

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
