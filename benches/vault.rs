//! Key vault latency and rewrap rate against a real Directus (run through `scripts/bench.sh`):
//! encrypt+store and fetch+decrypt through the same `KeyVault` the API uses (provider check faked by
//! wiremock), the bare AES-GCM envelope cost, and `rewrap` over 10,000 stored keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_bridge::crypto::encryption_key::EncryptionKey;
use byok_bridge::crypto::envelope::{KeyOwner, Keyring};
use byok_bridge::directus::DirectusClient;
use byok_bridge::domain::provider::{PerProvider, Provider};
use byok_bridge::domain::user::UserId;
use byok_bridge::providers::ProviderClient;
use byok_bridge::rewrap::rewrap_all;
use byok_bridge::services::key_vault::KeyVault;
use secrecy::SecretString;
use serde_json::json;

const ROUNDS: usize = 200;
const REWRAP_ROWS: usize = 10_000;
const OLD_KEY: &str = "3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b";
const NEW_KEY: &str = "7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b";
const PROVIDER_KEY: &str = "sk-proj-benchKEYnotReal0123456789abcdefghAbCd";

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("p50 {:.3} ms, p99 {:.3} ms", ms(at(0.50)), ms(at(0.99)))
}

#[tokio::main]
async fn main() {
    let file = std::env::var("BYOK_E2E_INSTANCE").expect("BYOK_E2E_INSTANCE (run scripts/bench.sh)");
    let vars: HashMap<String, String> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let directus = DirectusClient::new(
        vars["DIRECTUS_URL"].parse().unwrap(),
        SecretString::from(vars["DIRECTUS_TOKEN"].clone()),
        Duration::from_secs(30),
    );
    let provider = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&provider)
        .await;
    let providers = ProviderClient::new(
        PerProvider::from_fn(|_| format!("{}/v1", provider.uri()).parse().unwrap()),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let old_ring = Keyring::new(EncryptionKey::parse_hex(OLD_KEY).unwrap(), vec![]).unwrap();
    let vault = KeyVault::new(
        Some(Arc::new(Keyring::new(EncryptionKey::parse_hex(OLD_KEY).unwrap(), vec![]).unwrap())),
        directus.clone(),
        providers,
    );
    let user = UserId::parse(&vars["PREMIUM_USER_ID"]).unwrap();
    let owner = KeyOwner { user, provider: Provider::openai() };

    let started = Instant::now();
    let mut sealed = String::new();
    for _ in 0..10_000 {
        sealed = old_ring.seal(owner, PROVIDER_KEY.as_bytes());
    }
    let seal_us = started.elapsed().as_secs_f64() * 1e6 / 10_000.0;
    let started = Instant::now();
    for _ in 0..10_000 {
        old_ring.open(owner, &sealed).unwrap();
    }
    let open_us = started.elapsed().as_secs_f64() * 1e6 / 10_000.0;
    println!("envelope only: seal {seal_us:.2} us, open {open_us:.2} us (mean of 10,000)");

    let raw = SecretString::from(PROVIDER_KEY);
    let mut store = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        vault.save(user, Provider::openai(), &raw).await.unwrap();
        store.push(t.elapsed());
    }
    println!("check + encrypt + store (PUT /v1/keys path, {ROUNDS} rounds): {}", percentiles(store));
    let mut fetch = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let key = vault.open(user, Provider::openai()).await.unwrap();
        assert_eq!(key.expose(), PROVIDER_KEY);
        fetch.push(t.elapsed());
    }
    println!("fetch + decrypt ({ROUNDS} rounds): {}", percentiles(fetch));

    // 10,000 stored keys sealed with the old key, spread over the seeded users and both providers.
    let http = reqwest::Client::new();
    let users: Vec<UserId> = ["PREMIUM", "LIFETIME", "FREE", "BROKE"]
        .iter()
        .map(|who| UserId::parse(&vars[&format!("{who}_USER_ID")]).unwrap())
        .collect();
    let started = Instant::now();
    for chunk in (0..REWRAP_ROWS).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|i| {
                let provider = if i % 2 == 0 { Provider::openai() } else { Provider::anthropic() };
                let owner = KeyOwner { user: users[i % users.len()], provider };
                json!({"user": owner.user, "provider": provider, "status": "active", "key_hint": "sk-...bench",
                       "encrypted_key": old_ring.seal(owner, PROVIDER_KEY.as_bytes())})
            })
            .collect();
        let response = http
            .post(format!("{}/items/user_api_keys", vars["DIRECTUS_URL"]))
            .query(&[("fields", "id")])
            .bearer_auth(&vars["DIRECTUS_TOKEN"])
            .json(&rows)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "seeding failed: {}", response.status());
    }
    println!("(seeded {REWRAP_ROWS} sealed rows in {:.1} s)", started.elapsed().as_secs_f64());

    let rotated =
        Keyring::new(EncryptionKey::parse_hex(NEW_KEY).unwrap(), vec![EncryptionKey::parse_hex(OLD_KEY).unwrap()])
            .unwrap();
    let started = Instant::now();
    let report = rewrap_all(&directus, &rotated).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "rewrap: {} rows scanned, {} rewrapped in {elapsed:.2} s = {:.0} keys/s",
        report.scanned,
        report.rewrapped,
        report.rewrapped as f64 / elapsed
    );
    let started = Instant::now();
    let again = rewrap_all(&directus, &rotated).await.unwrap();
    println!(
        "rewrap re-run: {} already current, {} rewrapped, in {:.2} s",
        again.already_current,
        again.rewrapped,
        started.elapsed().as_secs_f64()
    );
}
