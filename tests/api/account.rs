//! The end-user endpoints with Directus faked: account, providers, recommendations, notifications, sign-in,
//! status, the account page and the OpenAPI document. The real-Directus versions are in `tests/e2e/account.rs`.

use byok_bridge::domain::error_code::Code;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

/// The masked key list the page reads (`GET /v1/keys` and `/v1/providers`).
async fn mount_key_summaries(app: &TestApp, user: &str, rows: Value) {
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("filter[user][_eq]", user))
        .and(query_param("fields", "id,provider,key_hint,is_active,status,last_validated_at,last_error"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": rows})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
}

#[tokio::test]
async fn status_is_public_and_all_clear_when_nothing_failed() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    app.wait_until_ready("ready").await;
    let before = app.directus_hits("/items/feature_flags").await;
    let (status, body) = app.get("/v1/status", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ai_available"], true);
    assert!(body["banner"].is_null());
    assert_eq!(
        body["providers"][0],
        json!({"provider": "openai", "name": "OpenAI", "status": "operational", "retry_after_secs": null})
    );
    assert_eq!(body["providers"][1]["provider"], "anthropic");
    assert_eq!(app.directus_hits("/items/feature_flags").await, before, "asking costs nothing upstream");
}

#[tokio::test]
async fn the_account_says_plan_mode_byok_access_and_credits() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, true).await;
    let premium = new_user_id();
    mount_user(&app.directus, &premium, FakeUser { grants: 750, ..Default::default() }).await;
    let (status, body) = app.get("/v1/account", Some(&token_for(&premium))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], premium.as_str());
    assert_eq!(body["user"]["tier"], "premium");
    assert_eq!(body["mode"], "credit_first");
    assert_eq!(body["byok"], json!({"enabled": true, "allowed": true, "reason": null}));
    assert_eq!(body["credits"], json!({"balance_cents": 750, "available_cents": 750}));

    let free = new_user_id();
    mount_user(&app.directus, &free, FakeUser { tier: "free", ..Default::default() }).await;
    let (_, body) = app.get("/v1/account", Some(&token_for(&free))).await;
    assert_eq!(body["byok"]["allowed"], false);
    assert_eq!(body["byok"]["reason"]["code"], "premium_required");
    assert_eq!(app.get("/v1/account", None).await.0, 401);
}

#[tokio::test]
async fn providers_tell_where_to_get_a_key_and_why_byok_is_not_usable_yet() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    mount_key_summaries(
        &app,
        &user,
        json!([{"id": "k1", "provider": "anthropic", "key_hint": "sk-ant-...wxyz", "is_active": true,
                "status": "quota_exceeded", "last_validated_at": null, "last_error": "Out of credit."}]),
    )
    .await;
    let (status, body) = app.get("/v1/providers", Some(&token_for(&user))).await;
    assert_eq!(status, 200, "{body}");
    let (openai, anthropic) = (&body["providers"][0], &body["providers"][1]);
    assert_eq!(openai["provider"], "openai");
    assert_eq!(openai["keys_url"], "https://platform.openai.com/api-keys");
    assert!(openai["key_format"].as_str().unwrap().contains("sk-"));
    assert_eq!(openai["byok"]["usable_now"], false);
    assert_eq!(openai["byok"]["reason"]["code"], "no_key");
    assert_eq!(anthropic["byok"]["reason"]["code"], "key_quota_exceeded");
    assert_eq!(anthropic["key"]["hint"], "sk-ant-...wxyz");
    assert_eq!(anthropic["key"]["status"], "quota_exceeded");

    let free = new_user_id();
    mount_user(&app.directus, &free, FakeUser { tier: "free", ..Default::default() }).await;
    let (_, body) = app.get("/v1/providers", Some(&token_for(&free))).await;
    assert_eq!(body["providers"][0]["byok"]["reason"]["code"], "premium_required");
    assert!(body["providers"][0]["key"].is_null(), "keys are not even read for a user who may not manage them");
}

#[tokio::test]
async fn recommendations_are_the_cheapest_models_the_user_can_use_priced_like_a_call() {
    let app = spawn_app_with(&[("INTERNAL_OPENAI_API_KEY", "sk-internal-test-0000000000000000")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { keys: &[("anthropic", "active")], ..Default::default() }).await;
    let token = token_for(&user);

    let (status, body) = app
        .post(
            "/v1/recommendations",
            Some(&token),
            json!({"prompt_tokens": 2000, "max_output_tokens": 400, "limit": 20}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let list = body["recommendations"].as_array().unwrap();
    assert_eq!(list.len(), 20);
    let costs: Vec<f64> = list.iter().map(|r| r["estimated_cost_cents"].as_f64().unwrap()).collect();
    assert!(costs.windows(2).all(|w| w[0] <= w[1]), "{costs:?}");
    assert!(list.iter().all(|r| !r["model"].as_str().unwrap().contains("audio")), "no specialised products");
    for r in list {
        let expected = if r["provider"] == "anthropic" { "byok" } else { "internal" };
        assert_eq!(r["source"], expected, "{r}");
    }
    let (_, estimate) = app.post(
        "/v1/estimate",
        Some(&token),
        json!({"provider": list[0]["provider"], "model": list[0]["model"], "prompt_tokens": 2000, "max_output_tokens": 400}),
    )
    .await;
    assert_eq!(estimate["estimated_cost_cents"], list[0]["estimated_cost_cents"]);

    for bad in [
        json!({}),
        json!({"prompt": "x", "limit": 0}),
        json!({"prompt": "x", "max_output_tokens": 0}),
        json!({"prompt": "x", "model": "y"}),
    ] {
        let (status, body) = app.post("/v1/recommendations", Some(&token), bad.clone()).await;
        assert!(matches!(status, 400 | 422), "{bad}: {status}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}: {body}");
    }
}

#[tokio::test]
async fn byok_only_recommends_only_providers_the_user_has_a_key_for() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, true, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { keys: &[("openai", "active")], ..Default::default() }).await;
    let (status, body) = app.post("/v1/recommendations", Some(&token_for(&user)), json!({"prompt": "hello"})).await;
    assert_eq!(status, 200, "{body}");
    let list = body["recommendations"].as_array().unwrap();
    assert_eq!(list.len(), 5, "the default limit");
    assert!(list.iter().all(|r| r["provider"] == "openai" && r["source"] == "byok"), "{body}");
}

#[tokio::test]
async fn notifications_are_read_and_marked_for_the_token_user_only() {
    let app = spawn_app().await;
    let user = new_user_id();
    Mock::given(method("GET"))
        .and(path("/notifications"))
        .and(query_param("filter[recipient][_eq]", user.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": 7, "subject": "Your OpenAI API key stopped working", "message": "Create a new key.", "timestamp": "2026-11-28T10:00:00.000Z", "status": "inbox"},
            {"id": 3, "subject": "Older", "message": null, "timestamp": "2026-11-20T10:00:00.000Z", "status": "archived"},
        ]})))
        .mount(&app.directus)
        .await;
    // The update is one query filtered on id and recipient: only the user's own notification can match.
    Mock::given(method("PATCH"))
        .and(path("/notifications"))
        .and(body_partial_json(json!({"query": {"filter": {"id": {"_eq": 7}, "recipient": {"_eq": user}}}, "data": {"status": "archived"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": 7}]})))
        .mount(&app.directus)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/notifications"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .with_priority(10)
        .mount(&app.directus)
        .await;
    let token = token_for(&user);

    let (status, body) = app.get("/v1/notifications", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["notifications"][0],
        json!({"id": 7, "subject": "Your OpenAI API key stopped working", "message": "Create a new key.", "timestamp": "2026-11-28T10:00:00.000Z", "read": false})
    );
    assert_eq!(body["notifications"][1]["read"], true);

    assert_eq!(
        app.post("/v1/notifications/7/read", Some(&token), json!({})).await,
        (200, json!({"id": 7, "read": true}))
    );
    let (status, body) = app.post("/v1/notifications/8/read", Some(&token), json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("notification_not_found")));
    for bad in ["-1", "7x", "99999999999999999999999"] {
        assert_eq!(app.post(&format!("/v1/notifications/{bad}/read"), Some(&token), json!({})).await.0, 404, "{bad}");
    }
    assert_eq!(app.get("/v1/notifications", None).await.0, 401);
}

#[tokio::test]
async fn sign_in_passes_through_to_directus_and_never_echoes_the_password() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/auth/login"))
        .and(body_partial_json(json!({"email": "ann@example.com", "password": "right-password", "mode": "json"})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"data": {"access_token": "at-123", "refresh_token": "rt-456", "expires": 900000}}),
            ),
        )
        .mount(&app.directus)
        .await;
    Mock::given(method("POST"))
        .and(path("/auth/login"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"errors": [{"message": "Invalid user credentials.", "extensions": {"code": "INVALID_CREDENTIALS"}}]}),
        ))
        .with_priority(10)
        .mount(&app.directus)
        .await;

    let ok = json!({"email": "ann@example.com", "password": "right-password"});
    assert_eq!(
        app.post("/v1/auth/login", None, ok).await,
        (200, json!({"access_token": "at-123", "refresh_token": "rt-456", "expires_in_secs": 900}))
    );
    let (status, body) =
        app.post("/v1/auth/login", None, json!({"email": "ann@example.com", "password": "wrong-password"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    assert!(!body.to_string().contains("wrong-password"));
    let (status, body) = app.post("/v1/auth/login", None, json!({"email": "ann@example.com"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(!body.to_string().contains("ann@example.com"), "input is never echoed: {body}");
}

#[tokio::test]
async fn the_account_page_is_served_under_a_strict_policy() {
    let app = spawn_app_with(&[("ACCOUNT_EMBED_ORIGINS", "https://app.example.com")]).await;
    let response = app.http.get(app.url("/account")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self';") && csp.contains("connect-src 'self';"), "{csp}");
    assert!(csp.ends_with("frame-ancestors 'self' https://app.example.com"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"<meta name="byok-allowed-origins" content="https://app.example.com">"#));
    assert!(!html.contains("<script>") && !html.contains(" onclick="), "no inline script");
    for (asset, kind) in [("/account/account.js", "text/javascript"), ("/account/account.css", "text/css")] {
        let response = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind));
    }
    // The entry script's imports, and theirs, are all served (a module the server lacks breaks the page).
    let mut pending = vec!["account.js".to_owned()];
    let mut served = std::collections::HashSet::new();
    while let Some(module) = pending.pop() {
        let response = app.http.get(app.url(&format!("/account/{module}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{module}");
        let source = response.text().await.unwrap();
        for import in source.split("from './").skip(1) {
            let imported = import.split('\'').next().unwrap().to_owned();
            if served.insert(imported.clone()) {
                pending.push(imported);
            }
        }
    }
    assert!(served.len() >= 6, "the sections are modules of their own: {served:?}");
    assert_eq!(app.http.get(app.url("/account/nothing.js")).send().await.unwrap().status(), 404);
    assert_eq!(app.http.get(app.url("/account/../Cargo.toml")).send().await.unwrap().status(), 404);
    assert_eq!(app.http.post(app.url("/account")).send().await.unwrap().status(), 405);
}

/// Every route the router serves: the OpenAPI document must list exactly these.
const ROUTES: &[(&str, &str)] = &[
    ("delete", "/v1/keys/{provider}"),
    ("get", "/account"),
    ("get", "/account/account.css"),
    ("get", "/account/{script}"),
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/readyz"),
    ("get", "/v1/account"),
    ("get", "/v1/flags"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("delete", "/v1/jobs/{id}"),
    ("get", "/v1/budget"),
    ("get", "/v1/calls"),
    ("get", "/v1/keys"),
    ("get", "/v1/models"),
    ("get", "/v1/notifications"),
    ("get", "/v1/providers"),
    ("get", "/v1/status"),
    ("get", "/v1/usage"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/embeddings"),
    ("post", "/v1/estimate"),
    ("post", "/v1/flags/reload"),
    ("post", "/v1/jobs"),
    ("post", "/v1/jobs/{id}/retry"),
    ("get", "/v1/admin/jobs"),
    ("get", "/v1/admin/spend"),
    ("get", "/v1/admin/preflight"),
    ("post", "/v1/admin/preflight/notify"),
    ("post", "/v1/admin/sign-in/unlock"),
    ("post", "/v1/keys/{provider}/verify"),
    ("post", "/v1/messages"),
    ("post", "/v1/messages/count_tokens"),
    ("post", "/v1/notifications/{id}/read"),
    ("post", "/v1/recommendations"),
    ("post", "/v1/responses"),
    ("post", "/v1/route"),
    ("post", "/webhooks/directus"),
    ("post", "/webhooks/stripe"),
    ("put", "/v1/budget"),
    ("put", "/v1/keys/{provider}"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_listed_route_is_served() {
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    let (status, document) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(route, item)| item.as_object().unwrap().keys().map(move |m| (m.clone(), route.clone())))
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    let listed_codes: Vec<&str> = document["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_array()
        .expect("the error code lists its values")
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    for code in Code::ALL {
        assert!(listed_codes.contains(&code.as_str()), "{} is not in the document", code.as_str());
    }
    for (method, route) in &documented {
        let url =
            app.url(&route.replace("{provider}", "openai").replace("{id}", "1").replace("{script}", "account.js"));
        let request = match method.as_str() {
            "get" => app.http.get(url),
            "post" => app.http.post(url).json(&json!({})),
            "put" => app.http.put(url).json(&json!({})),
            _ => app.http.delete(url),
        };
        let response = request.send().await.unwrap();
        let body: Value = response.json().await.unwrap_or_default();
        assert!(
            !matches!(body["error"]["code"].as_str(), Some("not_found" | "method_not_allowed")),
            "{method} {route} is documented but not served: {body}"
        );
        if let Some(code) = body["error"]["code"].as_str() {
            assert!(listed_codes.contains(&code), "{method} {route} answered {code}, which the document does not list");
        }
    }
    let mut ids: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values().map(|op| op["operationId"].as_str().unwrap()))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are unique (OpenAPI requires it)");
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["directus_token"]["scheme"], "bearer");
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn the_budget_says_each_cap_of_the_users_tier_what_is_spent_of_it_and_when_it_starts_over() {
    let app = spawn_app_with(&[("BUDGET_FREE", "credits.daily=500,credits.monthly=5000,own_keys.daily=2000")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { tier: "free", ..Default::default() }).await;
    // What the user's own keys cost them today (api_key_usage).
    Mock::given(method("GET"))
        .and(path("/items/api_key_usage"))
        .and(query_param("aggregate[sum]", "estimated_cost_cents"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [{"sum": {"estimated_cost_cents": 30.25}}]})),
        )
        .with_priority(1)
        .mount(&app.directus)
        .await;
    // The ledger's spending from calls (deductions naming a provider), today and this month alike here.
    Mock::given(method("GET"))
        .and(path("/items/credit_transactions"))
        .and(query_param("filter[provider][_nnull]", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"sum": {"cost_cents": "12.5"}}]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/user_budgets"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&app.directus)
        .await;
    let (status, budget) = app.get("/v1/budget", Some(&token_for(&user))).await;
    assert_eq!(status, 200, "{budget}");
    let none = json!({"daily_cents": null, "monthly_cents": null});
    assert_eq!(budget["yours"], json!({"credits": none, "own_keys": none}));
    assert_eq!(budget["ceilings"], json!({"credits": none, "own_keys": none}));
    let tomorrow = time::OffsetDateTime::now_utc().date().next_day().unwrap();
    assert_eq!(
        budget["credits"]["daily"],
        json!({"limit_cents": 500, "spent_cents": 12.5, "resets_at": format!("{tomorrow}T00:00:00Z")})
    );
    assert_eq!(budget["credits"]["monthly"]["limit_cents"], 5000);
    assert_eq!(budget["credits"]["monthly"]["spent_cents"], 12.5);
    assert_eq!(
        budget["own_keys"],
        json!({"daily": {"limit_cents": 2000, "spent_cents": 30.25, "resets_at": format!("{tomorrow}T00:00:00Z")},
               "monthly": null}),
        "own-key spending against its own cap"
    );
    assert_eq!(budget["alerts_at_percent"], json!([50, 80, 100]));

    // A tier without caps: nothing to show, nothing read.
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    mount_user(&app.directus, &user, FakeUser { tier: "free", ..Default::default() }).await;
    let (status, budget) = app.get("/v1/budget", Some(&token_for(&user))).await;
    assert_eq!((status, &budget["credits"]), (200, &json!({"daily": null, "monthly": null})), "{budget}");
    assert_eq!(budget["own_keys"], json!({"daily": null, "monthly": null}), "{budget}");
    assert_eq!(budget["alerts_at_percent"], json!([]));
    let (status, _) = app.get("/v1/budget", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn users_set_their_own_caps_up_to_their_plans_ceiling_and_nothing_else() {
    let (app, user) = budget_app(&[
        ("BUDGET_FREE", "credits.daily=100"),
        ("BUDGET_FREE_MAX", "credits.daily=1000,own_keys.monthly=30000"),
    ])
    .await;
    let token = token_for(&user);
    let put = |body: Value| {
        let request = app.http.put(app.url("/v1/budget")).bearer_auth(&token).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    for (body, status, code) in [
        (json!({"credits": {"daily_cents": 5000}}), 422, "budget_above_ceiling"),
        (json!({"credits": {"daily_cents": 50}, "own_keys": {"monthly_cents": 30001}}), 422, "budget_above_ceiling"),
        (json!({"own_keys": {"yearly_cents": 5}}), 422, "invalid_request"),
        (json!({"credits": {"weekly_cents": 5}}), 422, "invalid_request"),
        (json!({"credits": {"daily_cents": -5}}), 422, "invalid_request"),
    ] {
        let (got, answer) = put(body.clone()).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{body}: {answer}");
    }
    let (_, above) = put(json!({"credits": {"daily_cents": 5000}})).await;
    assert!(above["error"]["message"].as_str().unwrap().contains("at most 1000 cents"), "{above}");
    let written = || async {
        let requests = app.directus.received_requests().await.unwrap();
        requests.iter().filter(|r| r.method.as_str() == "POST" && r.url.path() == "/items/user_budgets").count()
    };
    assert_eq!(written().await, 0, "refused changes write nothing");

    let both = json!({"credits": {"daily_cents": 50, "monthly_cents": null}, "own_keys": {"daily_cents": 700}});
    let (status, budget) = put(both).await;
    assert_eq!(status, 200, "{budget}");
    assert_eq!(budget["ceilings"]["credits"]["daily_cents"], 1000);
    assert_eq!(budget["ceilings"]["own_keys"], json!({"daily_cents": null, "monthly_cents": 30000}));
    let requests = app.directus.received_requests().await.unwrap();
    let stored =
        requests.iter().find(|r| r.method.as_str() == "POST" && r.url.path() == "/items/user_budgets").unwrap();
    let row: Value = serde_json::from_slice(&stored.body).unwrap();
    let expected = json!({"user": user, "credits_daily_cents": 50, "credits_monthly_cents": null,
        "own_keys_daily_cents": 700, "own_keys_monthly_cents": null});
    assert_eq!(row, expected);

    // Without caps set up, there is nothing to set.
    let app = spawn_app().await;
    mount_flags(&app.directus, true, false, false).await;
    mount_user(&app.directus, &user, FakeUser { tier: "free", ..Default::default() }).await;
    let response = app.http.put(app.url("/v1/budget")).bearer_auth(&token).json(&json!({"credits": {}})).send().await;
    assert_eq!(error_code(response.unwrap()).await, "budgets_not_enabled");
}

#[tokio::test]
async fn a_user_changes_their_caps_a_few_times_a_minute_at_most() {
    let (app, user) =
        budget_app(&[("BUDGET_FREE", "credits.daily=100"), ("RATE_LIMIT_BUDGET_CHANGES_PER_MIN", "2")]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app
            .http
            .put(app.url("/v1/budget"))
            .bearer_auth(token_for(&user))
            .json(&json!({"credits": {"daily_cents": 50}}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(error_code(response).await, "rate_limited");
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    let writes = app.directus.received_requests().await.unwrap();
    assert_eq!(
        writes.iter().filter(|r| r.method.as_str() == "POST" && r.url.path() == "/items/user_budgets").count(),
        2
    );
}

/// An app with `env`, a free user, and a Directus where that user has set no caps yet (and may set some).
async fn budget_app(env: &[(&'static str, &str)]) -> (TestApp, String) {
    let app = spawn_app_with(env).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser { tier: "free", ..Default::default() }).await;
    Mock::given(method("GET"))
        .and(path("/items/user_budgets"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&app.directus)
        .await;
    Mock::given(method("POST"))
        .and(path("/items/user_budgets"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"id": 1}})))
        .mount(&app.directus)
        .await;
    (app, user)
}
