use serde_json::{Value, json};

use crate::harness::{Instance, Sidecar, serial};

/// The issue's headline: an admin flips `byok_only_mode` in Directus and the decision changes as soon as the
/// hook's webhook lands (within a second; neither the 5-minute cache nor the 5-second poll is waited for).
#[tokio::test]
async fn flipping_byok_only_mode_in_directus_changes_the_next_decision() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_flag(&http, "byok_only_mode", false).await;
    let sidecar = Sidecar::start(&instance, &[]).await;
    let premium = instance.login(&http, "PREMIUM").await;

    let (status, body) = sidecar.route(&http, &premium, "openai").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("internal")), "{body}");

    // Directus answers the PATCH once the change is committed and runs the hook's action after it, not awaited:
    // the webhook usually lands first, but may trail the answer by a few milliseconds. So each flip is given
    // (bounded) until the webhook could land; a sidecar left on the 5-minute cache or its 5-second poll fails.
    for round in 0..3 {
        instance.set_flag(&http, "byok_only_mode", true).await;
        let (status, body) = route_until(&sidecar, &http, &premium, 403).await;
        assert_eq!(status, 403, "round {round}: {body}");
        assert_eq!(body["error"]["code"], "byok_key_required");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("Action Required: add your OpenAI API key"));

        instance.set_flag(&http, "byok_only_mode", false).await;
        let (status, body) = route_until(&sidecar, &http, &premium, 200).await;
        assert_eq!((status, body["source"].as_str()), (200, Some("internal")), "round {round}: {body}");
    }
    sidecar.stop().await;
}

/// Asks `/v1/route` for OpenAI until it answers `status`, for at most a second (a webhook in flight), then
/// returns the last answer.
async fn route_until(sidecar: &Sidecar, http: &reqwest::Client, token: &str, status: u16) -> (u16, Value) {
    let mut answer = sidecar.route(http, token, "openai").await;
    for _ in 0..100 {
        if answer.0 == status {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        answer = sidecar.route(http, token, "openai").await;
    }
    answer
}

#[tokio::test]
async fn tiers_credits_and_stored_keys_come_from_directus() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let sidecar = Sidecar::start(&instance, &[("USER_CACHE_TTL_SECS", "1")]).await;

    let free = instance.login(&http, "FREE").await;
    let (status, body) = sidecar.route(&http, &free, "anthropic").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("internal")), "{body}");
    // 500 granted at signup, less whatever other tests charged this user.
    let balance = body["credit_balance_cents"].as_f64().unwrap();
    assert!(balance > 0.0 && balance <= 500.0, "{body}");

    let broke = instance.login(&http, "BROKE").await;
    let (status, body) = sidecar.route(&http, &broke, "anthropic").await;
    assert_eq!((status, body["error"]["code"].as_str()), (402, Some("no_credits_or_key")), "{body}");

    // A stored key (ciphertext-shaped, written with the sidecar's service token) makes BYOK-first pick it.
    let lifetime = instance.login(&http, "LIFETIME").await;
    let envelope = format!("byok:v1:0a1b2c3d:{}", "A".repeat(60));
    let response = http
        .post(instance.directus("/items/user_api_keys"))
        .bearer_auth(instance.var("DIRECTUS_TOKEN"))
        .json(&json!({"user": instance.var("LIFETIME_USER_ID"), "provider": "anthropic", "encrypted_key": envelope,
                      "key_hint": "sk-ant-...AAAA", "status": "active", "is_active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let (status, body) = sidecar.route(&http, &lifetime, "anthropic").await;
    assert_eq!((status, body["source"].as_str()), (200, Some("byok")), "{body}");
    let (_, body) = sidecar.route(&http, &lifetime, "openai").await;
    assert_eq!(body["source"], "internal", "the key is for Anthropic only");
    sidecar.stop().await;
}

#[tokio::test]
async fn only_admins_can_change_flags_and_plaintext_keys_never_land_in_directus() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let id = instance.flag_id(&http, "byok_only_mode").await;
    let premium = instance.login(&http, "PREMIUM").await;
    for (who, token) in [("service user", instance.var("DIRECTUS_TOKEN")), ("end user", premium.as_str())] {
        let response = http
            .patch(instance.directus(&format!("/items/feature_flags/{id}")))
            .bearer_auth(token)
            .json(&json!({"is_enabled": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{who} must not edit flags");
    }

    let plaintext = "sk-proj-thisIsAPlaintextKeyThatMustBeRefused1234";
    let disguised = format!("byok:v1:00000000:{plaintext}");
    for (token, value) in [
        (instance.var("DIRECTUS_ADMIN_TOKEN"), plaintext),
        (instance.var("DIRECTUS_TOKEN"), plaintext),
        (instance.var("DIRECTUS_TOKEN"), disguised.as_str()),
    ] {
        let response = http
            .post(instance.directus("/items/user_api_keys"))
            .bearer_auth(token)
            .json(&json!({"user": instance.var("PREMIUM_USER_ID"), "provider": "openai", "encrypted_key": value}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{value}");
        let text = response.text().await.unwrap();
        assert!(!text.contains(plaintext), "the refusal must not echo the value: {text}");
    }
    let rows = instance.admin_get(&http, "/items/user_api_keys", &[("filter[encrypted_key][_eq]", plaintext)]).await;
    assert_eq!(rows.as_array().unwrap().len(), 0, "nothing was stored: {rows}");
}

#[tokio::test]
async fn a_webhook_with_a_wrong_signature_is_refused_by_the_running_sidecar() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let sidecar = Sidecar::start(&instance, &[]).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = http
        .post(sidecar.url("/webhooks/directus"))
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", "v1,Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQtc2lnbmF0dXJlIQ==")
        .body(r#"{"type":"feature_flags.items.update","data":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_signature");
    sidecar.stop().await;
}

/// A leaked sidecar token can neither mint credits nor read users' login data (enforced by the hook, since
/// the Core license refuses narrower permissions).
#[tokio::test]
async fn the_sidecars_directus_role_cannot_grant_credits_or_read_login_data() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let service = instance.var("DIRECTUS_TOKEN");
    let user = instance.var("FREE_USER_ID");
    for kind in ["grant", "refund"] {
        let response = http
            .post(instance.directus("/items/credit_transactions"))
            .bearer_auth(service)
            .json(&json!({"user": user, "transaction_type": kind, "service_type": "mint", "cost_cents": "1000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "a {kind} by the sidecar's role");
    }
    for fields in ["auth_data", "id,password", "token", "*.*"] {
        let response = http
            .get(instance.directus(&format!("/users/{user}")))
            .query(&[("fields", fields)])
            .bearer_auth(service)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "reading {fields}");
    }
    let profile: Value = http
        .get(instance.directus(&format!("/users/{user}")))
        .query(&[("fields", "status,subscription_tier")])
        .bearer_auth(service)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["data"]["subscription_tier"], "free", "what the sidecar needs still reads");
    // Admins still grant (new_user grants as admin and checks the answer).
    instance.new_user(&http, "free", "0.5").await;
}

/// A session-mode token (Directus's app login) counts only while its session lives: after a logout the sidecar
/// refuses it as soon as its cached check expires.
#[tokio::test]
async fn a_logged_out_session_token_is_refused() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    let sidecar = Sidecar::start(&instance, &[("SESSION_CHECK_TTL_SECS", "1")]).await;
    let credentials = json!({"email": instance.var("PREMIUM_USER_EMAIL"), "password": instance.var("PREMIUM_USER_PASSWORD"), "mode": "session"});
    let login = http.post(instance.directus("/auth/login")).json(&credentials).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("directus_session_token="))
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = cookie.trim_start_matches("directus_session_token=").to_owned();
    let (status, body) = sidecar.route(&http, &token, "openai").await;
    assert_eq!(status, 200, "{body}");

    let logout = http
        .post(instance.directus("/auth/logout"))
        .header("cookie", &cookie)
        .json(&json!({"mode": "session"}))
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success(), "logout: {}", logout.status());
    let mut refused = false;
    for _ in 0..60 {
        let (status, body) = sidecar.route(&http, &token, "openai").await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "unauthorized");
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the ended session's token was still accepted");
    sidecar.stop().await;
}

/// The spec changes flags with SQL (`UPDATE feature_flags ...`), which no hook sees: the sidecar's periodic check
/// (`FLAG_POLL_SECS`, 5 s) puts the change in force within 10 s, and an operator can reload at once.
#[tokio::test]
async fn a_flag_changed_by_sql_behind_directus_is_in_force_within_ten_seconds() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_flag(&http, "byok_only_mode", false).await;
    let sidecar = Sidecar::start(&instance, &[]).await;
    let (_, premium) = instance.new_user(&http, "premium", "100").await;
    assert_eq!(sidecar.route(&http, &premium, "openai").await.0, 200);

    let sql = |enabled: bool| {
        let db = rusqlite::Connection::open(format!("{}/data.db", instance.dir)).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let changed = db
            .execute("UPDATE feature_flags SET is_enabled = ?1 WHERE key = 'byok_only_mode'", [i64::from(enabled)])
            .unwrap();
        assert_eq!(changed, 1);
    };
    sql(true);
    let changed_at = std::time::Instant::now();
    loop {
        let (status, body) = sidecar.route(&http, &premium, "openai").await;
        if status == 403 {
            assert_eq!(body["error"]["code"], "byok_key_required");
            break;
        }
        assert!(changed_at.elapsed() < std::time::Duration::from_secs(10), "still {status} after 10 s: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Back by SQL, then an operator's reload makes it count at once, without waiting for the check.
    sql(false);
    let response =
        http.post(sidecar.url("/v1/flags/reload")).bearer_auth(crate::harness::OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["flags"]["byok_only_mode"], false, "{body}");
    assert_eq!(sidecar.route(&http, &premium, "openai").await.0, 200);
    sidecar.stop().await;
}
