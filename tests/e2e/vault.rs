use byok_bridge::crypto::encryption_key::EncryptionKey;
use byok_bridge::crypto::envelope::{KeyOwner, Keyring};
use byok_bridge::domain::user::UserId;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{ENCRYPTION_KEY, Instance, Sidecar, serial};

const KEY: &str = "sk-proj-e2eTestKeyNotRealButWellFormed0000WxYz";

/// A key stored through the sidecar reaches Directus only as ciphertext, bound to its owner, and routing
/// picks it up at once.
#[tokio::test]
async fn a_key_saved_through_the_sidecar_is_ciphertext_in_directus_and_routes_byok() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    for (flag, value) in [("byok_enabled", true), ("byok_only_mode", true)] {
        instance.set_flag(&http, flag, value).await;
    }
    let openai = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&openai)
        .await;
    let openai_base = format!("{}/v1", openai.uri());
    let sidecar = Sidecar::start(&instance, &[("OPENAI_BASE_URL", &openai_base)]).await;
    let premium = instance.login(&http, "PREMIUM").await;
    let user = instance.var("PREMIUM_USER_ID").to_owned();

    let (status, body) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("byok_key_required")), "{body}");

    let saved = http
        .put(sidecar.url("/v1/keys/openai"))
        .bearer_auth(&premium)
        .json(&json!({"api_key": KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!((saved["status"].as_str(), saved["hint"].as_str()), (Some("active"), Some("sk-proj-...WxYz")));

    // Read back from Directus as admin: ciphertext only, and it opens only for its owner.
    let rows = instance
        .admin_get(&http, "/items/user_api_keys", &[("filter[user][_eq]", &user), ("filter[provider][_eq]", "openai")])
        .await;
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let envelope = rows[0]["encrypted_key"].as_str().unwrap();
    assert!(envelope.starts_with("byok:v1:") && !rows.to_string().contains(KEY), "{rows}");
    let ring = Keyring::new(EncryptionKey::parse_hex(ENCRYPTION_KEY).unwrap(), vec![]).unwrap();
    let owner = KeyOwner { user: UserId::parse(&user).unwrap(), provider: "openai".parse().unwrap() };
    assert_eq!(ring.open(owner, envelope).unwrap().as_slice(), KEY.as_bytes());
    let revisions =
        instance.admin_get(&http, "/revisions", &[("filter[collection][_eq]", "user_api_keys"), ("limit", "-1")]).await;
    assert!(!revisions.to_string().contains("byok:v1:"), "revisions keep no ciphertext: {revisions}");

    // Routing sees the key immediately (the cached caller was dropped on save).
    let (status, body) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("byok")), "{body}");

    let (_, listed) = sidecar.get(&http, "/v1/keys", Some(&premium)).await;
    assert_eq!(listed["keys"][0]["hint"], "sk-proj-...WxYz");
    assert!(!listed.to_string().contains("byok:v1"));

    // Rotation: `byok-bridge rewrap` with a new key re-seals the row; the old key is then no longer needed.
    let new_key = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let rewrap = |_: ()| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_byok-bridge"))
            .arg("rewrap")
            .env_clear()
            .env("DIRECTUS_URL", instance.var("DIRECTUS_URL"))
            .env("DIRECTUS_TOKEN", instance.var("DIRECTUS_TOKEN"))
            .env("DIRECTUS_SECRET", instance.var("DIRECTUS_SECRET"))
            .env("WEBHOOK_SECRET", instance.var("WEBHOOK_SECRET"))
            .env("ENCRYPTION_KEY", new_key)
            .env("ENCRYPTION_KEYS_PREVIOUS", ENCRYPTION_KEY)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let out = String::from_utf8(output.stdout).unwrap();
        assert!(!out.contains(KEY));
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let first = rewrap(());
    assert!(first["rewrapped"].as_u64().unwrap() >= 1, "{first}");
    let rows = instance
        .admin_get(&http, "/items/user_api_keys", &[("filter[user][_eq]", &user), ("filter[provider][_eq]", "openai")])
        .await;
    let rewrapped = rows[0]["encrypted_key"].as_str().unwrap();
    let new_only = Keyring::new(EncryptionKey::parse_hex(new_key).unwrap(), vec![]).unwrap();
    assert_eq!(new_only.open(owner, rewrapped).unwrap().as_slice(), KEY.as_bytes());
    let second = rewrap(());
    assert_eq!(second["rewrapped"], 0, "safe to re-run: {second}");
    assert_eq!(second["unusable"], first["unusable"]);

    let deleted = http.delete(sidecar.url("/v1/keys/openai")).bearer_auth(&premium).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, _) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!(status, 403, "BYOK-only again without the key");
    instance.set_flag(&http, "byok_only_mode", false).await;
    sidecar.stop().await;
}

/// `byok-bridge import-keys` moves keys in from another platform: Directus receives ciphertext only, the keys
/// route BYOK at once, and refused lines are reported by number without echoing a key.
#[tokio::test]
async fn import_keys_stores_ciphertext_only_and_the_imported_keys_route_byok() {
    use tokio::io::AsyncWriteExt;

    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let (ann, ann_token) = instance.new_user(&http, "premium", "0").await;
    let (bob, _) = instance.new_user(&http, "lifetime", "0").await;
    let ann_key = "sk-proj-FAKE-imported-key-of-ann-not-real-0000";
    let bob_key = "sk-ant-FAKE-imported-key-of-bob-not-real-0000";
    let nobody = uuid::Uuid::new_v4();
    let input = format!(
        "{}\n{}\nnot json at all {ann_key}\n{}\n\n{}\n",
        json!({"user": ann, "provider": "openai", "key": ann_key}),
        json!({"user": bob, "provider": "anthropic", "key": bob_key}),
        json!({"user": ann, "provider": "anthropic", "key": "sk-tooShortAndWrong"}),
        json!({"user": nobody, "provider": "openai", "key": ann_key}),
    );
    let mut child = instance
        .command(&["import-keys"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "not every line was stored: {stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report, json!({"read": 5, "imported": 2, "invalid": 2, "rejected": 0, "failed": 1}), "{stderr}");
    for line in ["line 3:", "line 4:", "line 6:"] {
        assert!(stderr.contains(line), "{line} reported: {stderr}");
    }
    for secret in [ann_key, bob_key, "sk-tooShortAndWrong"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "a key was printed");
    }

    for (user, key) in [(&ann, ann_key), (&bob, bob_key)] {
        let rows = instance.admin_get(&http, "/items/user_api_keys", &[("filter[user][_eq]", user)]).await;
        assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
        let stored = rows.to_string();
        assert!(!stored.contains(key) && !stored.contains(&key[10..]), "only ciphertext in Directus: {stored}");
        assert_eq!(rows[0]["status"], "unverified", "checked with the provider later");
        assert!(rows[0]["encrypted_key"].as_str().unwrap().starts_with("byok:v1:"), "{rows}");
    }
    let sidecar = Sidecar::start(&instance, &[]).await;
    let (status, body) = sidecar.route(&http, &ann_token, "openai").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("byok")), "{body}");
    sidecar.stop().await;
}

/// The BYOK-only pre-flight lists exactly the active premium and lifetime users without a usable key, and its
/// notice reaches each of them once, however often an operator sends it.
#[tokio::test]
async fn the_preflight_lists_entitled_users_without_a_usable_key_and_notifies_each_once() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let (no_key, _) = instance.new_user(&http, "premium", "0").await;
    let (has_key, _) = instance.new_user(&http, "lifetime", "0").await;
    let (refused_key, _) = instance.new_user(&http, "lifetime", "0").await;
    let (free, _) = instance.new_user(&http, "free", "0").await;
    let lines = [
        json!({"user": has_key, "provider": "openai", "key": "sk-proj-preflightHasKey000000000000000Aa"}),
        json!({"user": refused_key, "provider": "openai", "key": "sk-proj-preflightRefused00000000000000Bb"}),
    ];
    let mut child = instance.command(&["import-keys"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    tokio::io::AsyncWriteExt::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).await.unwrap();
    assert!(child.wait().await.unwrap().success());
    // The provider refused that key on a call since.
    let rows = instance.admin_get(&http, "/items/user_api_keys", &[("filter[user][_eq]", &refused_key)]).await;
    let response = http
        .patch(instance.directus(&format!("/items/user_api_keys/{}", rows[0]["id"].as_str().unwrap())))
        .bearer_auth(instance.var("DIRECTUS_ADMIN_TOKEN"))
        .json(&json!({"status": "invalid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let sidecar = Sidecar::start(&instance, &[]).await;
    let operator = crate::harness::OPERATOR_TOKEN;
    let ours = |list: &Value| -> Vec<String> {
        let mine = [&no_key, &has_key, &refused_key, &free];
        let mut ids: Vec<String> = list["users_without_usable_key"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["id"].as_str().map(str::to_owned))
            .filter(|id| mine.contains(&id))
            .collect();
        ids.sort();
        ids
    };
    let (_, list) = sidecar.get(&http, "/v1/admin/preflight", Some(operator)).await;
    let mut expected = vec![no_key.clone(), refused_key.clone()];
    expected.sort();
    assert_eq!(ours(&list), expected, "{list}");
    let user_token_refused = http.get(sidecar.url("/v1/admin/preflight")).send().await.unwrap();
    assert_eq!(user_token_refused.status(), 401);

    for _ in 0..2 {
        let response = http.post(sidecar.url("/v1/admin/preflight/notify")).bearer_auth(operator).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    for user in [&no_key, &refused_key] {
        let notes = instance.wait_for_rows(&http, "/notifications", &[("filter[recipient][_eq]", user)], 1).await;
        assert_eq!(notes.len(), 1, "once, though sent twice: {notes:?}");
        assert_eq!(notes[0]["subject"], "Add your own AI provider key");
    }
    for user in [&has_key, &free] {
        let notes = instance.admin_get(&http, "/notifications", &[("filter[recipient][_eq]", user)]).await;
        assert_eq!(notes.as_array().unwrap().len(), 0, "{notes}");
    }
    sidecar.stop().await;
}
