use byok_bridge::crypto::encryption_key::EncryptionKey;
use byok_bridge::crypto::envelope::{Keyring, key_id_of};
use byok_bridge::directus::DirectusClient;
use byok_bridge::rewrap::{RewrapReport, rewrap_all};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;

const NEW_KEY: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d";

fn rotated_keyring() -> Keyring {
    let old = EncryptionKey::parse_hex(ENCRYPTION_KEY).unwrap();
    Keyring::new(EncryptionKey::parse_hex(NEW_KEY).unwrap(), vec![old]).unwrap()
}

/// Two pages of rows: old-key rows, an already-rewrapped row, and one sealed for somebody else.
async fn directus_with_rows(users: &[String]) -> (MockServer, Vec<Value>) {
    let directus = MockServer::start().await;
    let old = test_keyring();
    let new = rotated_keyring();
    let mut rows: Vec<Value> = users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let provider = if i % 2 == 0 { "openai" } else { "anthropic" };
            let key = if i % 2 == 0 { OPENAI_KEY } else { ANTHROPIC_KEY };
            json!({"id": format!("row-{i:02}"), "user": user, "provider": provider,
                   "encrypted_key": old.seal(owner(user, provider), key.as_bytes())})
        })
        .collect();
    rows.push(json!({"id": "row-90", "user": users[0], "provider": "openai",
                     "encrypted_key": new.seal(owner(&users[0], "openai"), OPENAI_KEY.as_bytes())}));
    rows.push(json!({"id": "row-91", "user": users[1], "provider": "openai",
                     "encrypted_key": old.seal(owner(&users[0], "openai"), OPENAI_KEY.as_bytes())}));
    // Like Directus: the filter leaves out rows sealed by the current key; after the batch write only the
    // unusable row is left, skipped by the offset.
    let filter = format!("byok:v1:{}:", new.current_key_id());
    let not_current: Vec<&Value> =
        rows.iter().filter(|r| !r["encrypted_key"].as_str().unwrap().starts_with(&filter)).collect();
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("filter[encrypted_key][_nstarts_with]", filter.as_str()))
        .and(query_param("offset", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": not_current})))
        .mount(&directus)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("filter[encrypted_key][_nstarts_with]", filter.as_str()))
        .and(query_param("offset", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&directus)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("aggregate[count]", "*"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"count": rows.len()}]})))
        .mount(&directus)
        .await;
    // Like Directus's update by query: the rows matching the filter, here the one row if its ciphertext is
    // still the one in `rows`.
    let stored = rows.clone();
    Mock::given(method("PATCH"))
        .and(path("/items/user_api_keys"))
        .respond_with(move |request: &Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let [id, current] = ["/query/filter/_and/0/id/_eq", "/query/filter/_and/1/encrypted_key/_eq"]
                .map(|pointer| body.pointer(pointer).and_then(Value::as_str).unwrap().to_owned());
            let matches = stored.iter().any(|row| row["id"] == id && row["encrypted_key"] == current);
            let data = if matches { json!([{"id": id}]) } else { json!([]) };
            ResponseTemplate::new(200).set_body_json(json!({"data": data}))
        })
        .mount(&directus)
        .await;
    (directus, rows)
}

#[tokio::test]
async fn rewrap_reseals_old_rows_under_the_current_key_and_counts_the_rest() {
    let users: Vec<String> = (0..6).map(|_| new_user_id()).collect();
    let (directus, _) = directus_with_rows(&users).await;
    let client = DirectusClient::new(
        directus.uri().parse().unwrap(),
        SecretString::from(SERVICE_TOKEN),
        std::time::Duration::from_secs(2),
    );
    let ring = rotated_keyring();
    let report = rewrap_all(&client, &ring).await.unwrap();
    assert_eq!(
        report,
        RewrapReport { scanned: 7, rewrapped: 6, already_current: 1, unusable: 1, changed_meanwhile: 0 }
    );

    let patches: Vec<Value> = directus
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PATCH")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(patches.len(), 6);
    let new_only = Keyring::new(EncryptionKey::parse_hex(NEW_KEY).unwrap(), vec![]).unwrap();
    for (i, user) in users.iter().enumerate() {
        let patch =
            patches.iter().find(|p| p["query"]["filter"]["_and"][0]["id"]["_eq"] == format!("row-{i:02}")).unwrap();
        let envelope = patch["data"]["encrypted_key"].as_str().unwrap();
        assert_eq!(key_id_of(envelope), Some(ring.current_key_id()));
        let provider = if i % 2 == 0 { "openai" } else { "anthropic" };
        let expected = if i % 2 == 0 { OPENAI_KEY } else { ANTHROPIC_KEY };
        assert_eq!(new_only.open(owner(user, provider), envelope).unwrap().as_slice(), expected.as_bytes());
    }
}

#[tokio::test]
async fn rewrap_leaves_a_key_saved_during_the_run_alone() {
    let users: Vec<String> = (0..2).map(|_| new_user_id()).collect();
    let (directus, rows) = directus_with_rows(&users).await;
    // Between the page read and the write, the user saves a new key: the row holds a new ciphertext.
    let saved_meanwhile = rows[1]["encrypted_key"].as_str().unwrap().to_owned();
    Mock::given(method("PATCH"))
        .and(path("/items/user_api_keys"))
        .and(wiremock::matchers::body_partial_json(
            json!({"query": {"filter": {"_and": [{"id": {"_eq": "row-01"}}, {"encrypted_key": {"_eq": saved_meanwhile}}]}}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .with_priority(1)
        .mount(&directus)
        .await;
    let client = DirectusClient::new(
        directus.uri().parse().unwrap(),
        SecretString::from(SERVICE_TOKEN),
        std::time::Duration::from_secs(2),
    );
    let report = rewrap_all(&client, &rotated_keyring()).await.unwrap();
    assert_eq!((report.rewrapped, report.changed_meanwhile), (1, 1), "{report:?}");
}

#[tokio::test]
async fn the_rewrap_command_prints_counts_and_never_key_material() {
    let users: Vec<String> = (0..4).map(|_| new_user_id()).collect();
    let (directus, rows) = directus_with_rows(&users).await;
    let mut vars =
        test_env(&directus.uri(), &[("ENCRYPTION_KEY", NEW_KEY), ("ENCRYPTION_KEYS_PREVIOUS", ENCRYPTION_KEY)]);
    vars.insert("RUST_LOG", "trace".to_owned());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_byok-bridge"))
        .arg("rewrap")
        .env_clear()
        .envs(vars)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last_line = stdout.lines().last().unwrap();
    let report: Value = serde_json::from_str(last_line).unwrap();
    assert_eq!(
        report,
        json!({"scanned": 5, "rewrapped": 4, "already_current": 1, "unusable": 1, "changed_meanwhile": 0})
    );
    let all_output = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for secret in [OPENAI_KEY, ANTHROPIC_KEY, NEW_KEY, ENCRYPTION_KEY, SERVICE_TOKEN] {
        assert!(!all_output.contains(secret), "secret in rewrap output");
    }
    for row in rows {
        let envelope = row["encrypted_key"].as_str().unwrap();
        assert!(!all_output.contains(&envelope[20..]), "ciphertext in rewrap output");
    }
}
