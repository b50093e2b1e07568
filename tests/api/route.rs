use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn premium_user_with_a_key_routes_to_byok_and_without_one_to_credits() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { keys: &[("openai", "active")], ..Default::default() }).await;

    let openai: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(openai["source"], "byok");
    assert_eq!(openai["mode"], "byok_first");
    assert_eq!(openai["flags_stale"], false);

    let anthropic: Value = app.route(&token_for(&user), "anthropic").await.json().await.unwrap();
    assert_eq!(anthropic["source"], "internal");
    assert_eq!(anthropic["credit_balance_cents"], 1000);
}

#[tokio::test]
async fn byok_only_mode_without_a_key_asks_the_user_to_add_one() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, true, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;

    let response = app.route(&token_for(&user), "openai").await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "byok_key_required");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Action Required: add your OpenAI API key"), "{message}");
    assert!(message.contains("https://platform.openai.com/api-keys"), "{message}");
}

#[tokio::test]
async fn invalid_or_exhausted_keys_are_not_used() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    let keys = [("openai", "invalid"), ("anthropic", "quota_exceeded")];
    mount_user(&app.directus, &user, FakeUser { keys: &keys, grants: 0, ..Default::default() }).await;
    for provider in ["openai", "anthropic"] {
        let response = app.route(&token_for(&user), provider).await;
        assert_eq!(response.status(), 402);
        assert_eq!(error_code(response).await, "no_credits_or_key");
    }
}

#[tokio::test]
async fn free_users_never_get_byok_even_with_a_stored_key() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    let free = FakeUser { tier: "free", keys: &[("openai", "active")], ..Default::default() };
    mount_user(&app.directus, &user, free).await;
    let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(body["source"], "internal");
}

#[tokio::test]
async fn without_an_encryption_key_byok_is_not_configured_but_credits_work() {
    let app = spawn_app_with(&[("ENCRYPTION_KEY", "")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { keys: &[("openai", "active")], ..Default::default() }).await;
    let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert_eq!(body["source"], "internal");

    mount_flags(&app.directus, true, true, false).await;
    assert_eq!(app.flag_webhook().await.status(), 200);
    let response = app.route(&token_for(&user), "openai").await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "byok_not_configured");
}

#[tokio::test]
async fn suspended_and_deleted_users_are_refused() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let suspended = new_user_id();
    mount_user(&app.directus, &suspended, FakeUser { status: "suspended", ..Default::default() }).await;
    let response = app.route(&token_for(&suspended), "openai").await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "account_inactive");

    // Directus answers 403 for ids it does not know.
    let deleted = new_user_id();
    Mock::given(method("GET"))
        .and(path(format!("/users/{deleted}")))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"errors": [{"extensions": {"code": "FORBIDDEN"}}]})),
        )
        .mount(&app.directus)
        .await;
    let response = app.route(&token_for(&deleted), "openai").await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn directus_down_while_reading_the_caller_is_a_clear_503() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    Mock::given(method("GET"))
        .and(path(format!("/users/{user}")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.directus)
        .await;
    let response = app.route(&token_for(&user), "openai").await;
    assert_eq!(response.status(), 503);
    assert_eq!(error_code(response).await, "account_service_unavailable");
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    let claims = claims_for(&user);
    let now = jsonwebtoken::get_current_timestamp();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        token_with(&c, Algorithm::HS256, DIRECTUS_SECRET)
    };
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let many_claims = {
        let mut c = claims.clone();
        for i in 0..10_000 {
            c[format!("claim{i}")] = json!(i);
        }
        token_with(&c, Algorithm::HS256, DIRECTUS_SECRET)
    };
    let bad_tokens = [
        ("wrong secret", token_with(&claims, Algorithm::HS256, "not-the-directus-secret")),
        ("HS512", token_with(&claims, Algorithm::HS512, DIRECTUS_SECRET)),
        ("alg none", alg_none),
        ("expired", with(&|c| c["exp"] = json!(now - 3600))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now + 3600))),
        ("issued in the future", with(&|c| c["iat"] = json!(now + 3600))),
        ("no exp", with(&|c| _ = c.as_object_mut().unwrap().remove("exp"))),
        ("wrong issuer", with(&|c| c["iss"] = json!("evil"))),
        ("static token, not a JWT", SERVICE_TOKEN.to_owned()),
        ("garbage", "a.b.c".to_owned()),
    ];
    let mut bodies = Vec::new();
    for (name, token) in &bad_tokens {
        let response = app.route(token, "openai").await;
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{name}");
        bodies.push(response.text().await.unwrap());
    }
    let no_header = app.http.post(app.url("/v1/route")).json(&json!({"provider": "openai"})).send().await.unwrap();
    assert_eq!(no_header.status(), 401);
    bodies.push(no_header.text().await.unwrap());
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "401 bodies differ: {bodies:?}");
    // Too large for the header limit: refused before any parsing, with 431.
    let response = app.route(&many_claims, "openai").await;
    assert_eq!(response.status(), 431);
    assert_eq!(app.directus_hits(&format!("/users/{user}")).await, 0, "no Directus read for a bad token");
}

#[tokio::test]
async fn a_megabyte_authorization_header_is_refused_quickly() {
    let app = spawn_app().await;
    let huge = "a".repeat(1024 * 1024);
    let request =
        format!("POST /v1/route HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {huge}\r\nContent-Length: 2\r\n\r\n{{}}");
    let started = std::time::Instant::now();
    let response = raw_request(app.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{}", &response[..response.len().min(200)]);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn bad_bodies_get_clear_4xx_errors_and_touch_nothing() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    let token = token_for(&user);
    let post = |body: Vec<u8>, content_type: &'static str| {
        app.http.post(app.url("/v1/route")).bearer_auth(&token).header("content-type", content_type).body(body).send()
    };
    let json = "application/json";
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        ("malformed", post(b"{\"provider\":".to_vec(), json).await.unwrap(), 400, "invalid_json"),
        ("invalid utf-8", post(b"{\"provider\":\"\xff\xfe\"}".to_vec(), json).await.unwrap(), 400, "invalid_json"),
        ("deeply nested", post(deep.into_bytes(), json).await.unwrap(), 422, "invalid_request"),
        ("wrong type", post(br#"{"provider":42}"#.to_vec(), json).await.unwrap(), 422, "invalid_request"),
        (
            "unknown field",
            post(br#"{"provider":"openai","user":"x"}"#.to_vec(), json).await.unwrap(),
            422,
            "invalid_request",
        ),
        (
            "unknown provider",
            post(br#"{"provider":"../openai"}"#.to_vec(), json).await.unwrap(),
            400,
            "unknown_provider",
        ),
        (
            "not json",
            post(br#"{"provider":"openai"}"#.to_vec(), "text/plain").await.unwrap(),
            415,
            "unsupported_media_type",
        ),
        ("10 MB", post(vec![b' '; 10 * 1024 * 1024], json).await.unwrap(), 413, "payload_too_large"),
    ];
    for (name, response, status, code) in cases {
        assert_eq!(response.status(), status, "{name}");
        assert_eq!(error_code(response).await, code, "{name}");
    }
    // None of that reached Directus for the user.
    assert_eq!(app.directus_hits(&format!("/users/{user}")).await, 0);
}

#[tokio::test]
async fn error_messages_never_echo_the_request() {
    let app = spawn_app().await;
    let user = new_user_id();
    let planted = "sk-planted-secret-value-1234567890";
    let body = format!(r#"{{"provider": {{"nested": "{planted}"}}}}"#);
    let response = app
        .http
        .post(app.url("/v1/route"))
        .bearer_auth(token_for(&user))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(!response.text().await.unwrap().contains(planted));
}

#[tokio::test]
async fn the_user_id_in_directus_filters_comes_from_the_token() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    assert_eq!(app.route(&token_for(&user), "openai").await.status(), 200);
    let requests = app.directus.received_requests().await.unwrap();
    let filters: Vec<String> = requests
        .iter()
        .flat_map(|r| r.url.query_pairs().filter(|(k, _)| k.starts_with("filter")).map(|(k, v)| format!("{k}={v}")))
        .collect();
    assert!(!filters.is_empty());
    for filter in filters {
        assert!(
            filter == format!("filter[user][_eq]={user}") || filter == "filter[is_active][_eq]=true",
            "unexpected filter {filter}"
        );
    }
}

/// Directus answering every read of `user` after `delay`, with `grants` cents of credit: higher priority than
/// what was mounted before.
async fn slow_directus_for(app: &TestApp, user: &str, grants: i64, delay: std::time::Duration) {
    let answer = |body: Value| ResponseTemplate::new(200).set_body_json(body).set_delay(delay);
    let mounts = [
        (format!("/users/{user}"), json!({"data": {"status": "active", "subscription_tier": "free"}})),
        (
            "/items/credit_transactions".to_owned(),
            json!({"data": [{"transaction_type": "grant", "sum": {"cost_cents": grants.to_string()}}]}),
        ),
        ("/items/user_api_keys".to_owned(), json!({"data": []})),
    ];
    for (route, body) in mounts {
        let mut mock = Mock::given(method("GET")).and(path(route.as_str()));
        if route.starts_with("/items/") {
            mock = mock.and(wiremock::matchers::query_param("filter[user][_eq]", user));
        }
        mock.respond_with(answer(body)).with_priority(1).mount(&app.directus).await;
    }
}

#[tokio::test]
async fn a_known_user_never_waits_for_a_slow_directus() {
    let app = spawn_app_with(&[("USER_CACHE_TTL_SECS", "1")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { tier: "free", grants: 500, ..Default::default() }).await;
    let token = token_for(&user);
    assert_eq!(app.route(&token, "openai").await.status(), 200);

    // Directus gets slow (storing a large batch, say) and the user's balance changes meanwhile.
    let slow = std::time::Duration::from_millis(1_500);
    slow_directus_for(&app, &user, 800, slow).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let started = std::time::Instant::now();
    let body: Value = app.route(&token, "openai").await.json().await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "waited {:?}", started.elapsed());
    assert_eq!((body["credit_balance_cents"].as_f64(), body["caller_stale"].as_bool()), (Some(500.0), Some(false)));
    // The profile read in the background arrives for a later request.
    let mut balance = 0.0;
    for _ in 0..100 {
        let body: Value = app.route(&token, "openai").await.json().await.unwrap();
        balance = body["credit_balance_cents"].as_f64().unwrap();
        if balance == 800.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(balance, 800.0, "the newer reading is used once it is there");

    // A user never seen before has nothing to be served with: that request waits for Directus.
    let stranger = new_user_id();
    slow_directus_for(&app, &stranger, 100, slow).await;
    let started = std::time::Instant::now();
    assert_eq!(app.route(&token_for(&stranger), "openai").await.status(), 200);
    assert!(started.elapsed() >= slow);
}

#[tokio::test]
async fn refusals_for_credit_and_the_account_link_to_the_checkout_when_one_is_set() {
    let checkout = "https://app.example.com/billing";
    let app = spawn_app_with(&[("CREDITS_PURCHASE_URL", checkout)]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { grants: 0, ..Default::default() }).await;
    let response = app.route(&token_for(&user), "openai").await;
    assert_eq!(response.status(), 402);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_credits_or_key");
    assert_eq!(body["error"]["purchase_url"], checkout);
    assert!(body["error"]["message"].as_str().unwrap().ends_with(&format!("Buy credits: {checkout}")), "{body}");
    let (status, account) = app.get("/v1/account", Some(&token_for(&user))).await;
    assert_eq!((status, &account["credits"]["purchase_url"]), (200, &json!(checkout)), "{account}");

    // Without one, neither says anything about buying.
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    mount_user(&app.directus, &user, FakeUser { grants: 0, ..Default::default() }).await;
    let body: Value = app.route(&token_for(&user), "openai").await.json().await.unwrap();
    assert!(body["error"].get("purchase_url").is_none(), "{body}");
    let (_, account) = app.get("/v1/account", Some(&token_for(&user))).await;
    assert!(account["credits"].get("purchase_url").is_none(), "{account}");
}
