//! Flag propagation latency: from the moment an admin's PATCH to Directus returns, how long until every
//! sidecar answers `/v1/route` with the new decision. Run through `scripts/bench.sh`, which starts a real
//! Directus and release builds of the sidecar: one on SQLite, then two replicas on PostgreSQL and Redis
//! (`BYOK_E2E_SIDECAR_ADDR` holds their addresses, comma-separated; the hook tells the first one, which tells
//! the others through Redis).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FLIPS: usize = 200;

fn var(vars: &std::collections::HashMap<String, String>, key: &str) -> String {
    vars.get(key).unwrap_or_else(|| panic!("{key} missing from the instance file")).clone()
}

/// The premium user has credits and no key: BYOK-only refuses (403), otherwise credits pay (200).
async fn route_status(http: &reqwest::Client, sidecar: &str, token: &str) -> u16 {
    let response =
        http.post(format!("http://{sidecar}/v1/route")).bearer_auth(token).json(&json!({"provider": "openai"}));
    response.send().await.unwrap().status().as_u16()
}

/// Polls one sidecar until it answers `expected`: how long after `patched`, and whether its first answer was.
async fn until_decision(
    http: &reqwest::Client,
    sidecar: &str,
    token: &str,
    expected: u16,
    patched: Instant,
) -> (Duration, bool) {
    let mut polls = 0;
    loop {
        polls += 1;
        if route_status(http, sidecar, token).await == expected {
            return (patched.elapsed(), polls == 1);
        }
        assert!(patched.elapsed() < Duration::from_secs(10), "flag change never reached {sidecar}");
    }
}

#[tokio::main]
async fn main() {
    let instance_file = std::env::var("BYOK_E2E_INSTANCE").expect("BYOK_E2E_INSTANCE (run scripts/bench.sh)");
    let sidecars = std::env::var("BYOK_E2E_SIDECAR_ADDR").expect("BYOK_E2E_SIDECAR_ADDR (run scripts/bench.sh)");
    let sidecars: Vec<&str> = sidecars.split(',').collect();
    let vars: std::collections::HashMap<String, String> = std::fs::read_to_string(&instance_file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let directus = var(&vars, "DIRECTUS_URL");
    let admin = var(&vars, "DIRECTUS_ADMIN_TOKEN");
    let http = reqwest::Client::new();

    let login: Value = http
        .post(format!("{directus}/auth/login"))
        .json(&json!({"email": var(&vars, "PREMIUM_USER_EMAIL"), "password": var(&vars, "PREMIUM_USER_PASSWORD")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["data"]["access_token"].as_str().unwrap().to_owned();
    let flags: Value = http
        .get(format!("{directus}/items/feature_flags"))
        .query(&[("filter[key][_eq]", "byok_only_mode"), ("fields", "id")])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let flag_id = flags["data"][0]["id"].clone();

    let mut latencies = Vec::with_capacity(FLIPS);
    let mut first_answer_new = 0;
    let mut patch_times = Vec::with_capacity(FLIPS);
    for i in 0..=FLIPS {
        let only_mode = i % 2 == 1;
        let expected = if only_mode { 403 } else { 200 };
        let started = Instant::now();
        let response = http
            .patch(format!("{directus}/items/feature_flags/{flag_id}"))
            .bearer_auth(&admin)
            .json(&json!({"is_enabled": only_mode}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let patched = Instant::now();
        patch_times.push(patched - started);
        let polls = sidecars.iter().map(|sidecar| until_decision(&http, sidecar, &token, expected, patched));
        let answers = futures_util::future::join_all(polls).await;
        if i == 0 {
            continue; // warm-up: puts the flag into a known state
        }
        latencies.push(answers.iter().map(|(latency, _)| *latency).max().unwrap());
        if answers.iter().all(|(_, first)| *first) {
            first_answer_new += 1;
        }
    }
    latencies.sort();
    patch_times.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("flag flips: {FLIPS}, sidecars: {}", sidecars.len());
    println!(
        "PATCH response -> new decision on every sidecar: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(&latencies, 0.50)),
        ms(pct(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    println!("first /v1/route after the PATCH already new on every sidecar: {first_answer_new}/{FLIPS}");
    println!(
        "(for scale) Directus PATCH round trip itself: p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&patch_times, 0.50)),
        ms(pct(&patch_times, 0.99))
    );
}
