//! Credits against the real ledger in Directus: concurrent calls cannot overdraw it, and every call is
//! charged its exact fraction of a cent, which its answer states.

use byok_bridge::domain::money::Cents;
use serde_json::json;

use crate::fakes::{
    GOOD_KEY, GatewayScene as Scene, fake_providers, gateway_scene, gateway_sidecar, mount_expensive_gpt4o,
};
use crate::harness::{Instance, OPERATOR_TOKEN, Sidecar, serial};

/// BYOK-first flags, fake providers where `gpt-4o` answers a 90-cent call, and a sidecar in front of them with
/// `env` (and a free tier's rate limit out of the way).
async fn scene(env: &[(&str, &str)]) -> Scene {
    let mut env = env.to_vec();
    env.push(("RATE_LIMIT_FREE_PER_MIN", "1000"));
    let scene = gateway_scene(&env).await;
    mount_expensive_gpt4o(&scene._providers).await;
    scene
}

/// A `gpt-4o` call that may cost 95 cents (and costs 90 on the fakes of [`mount_expensive_gpt4o`]).
fn expensive_call() -> serde_json::Value {
    json!({"model": "gpt-4o", "max_tokens": 95_000, "messages": [{"role": "user", "content": "Go"}]})
}

/// One call of `body` per token in `tokens`, all at once: each answer's status, whether it said when to retry,
/// and its body (JSON, or null).
async fn at_once(
    http: &reqwest::Client,
    sidecar: &Sidecar,
    tokens: &[&str],
    body: &serde_json::Value,
) -> Vec<(u16, bool, serde_json::Value)> {
    let calls = tokens.iter().map(|token| async move {
        let response =
            http.post(sidecar.url("/v1/chat/completions")).bearer_auth(token).json(body).send().await.unwrap();
        let (status, retry_after) = (response.status().as_u16(), response.headers().contains_key("retry-after"));
        (status, retry_after, response.json().await.unwrap_or_default())
    });
    futures_util::future::join_all(calls).await
}

#[tokio::test]
async fn concurrent_calls_cannot_overdraw_the_ledger_and_each_call_is_charged_its_exact_fraction() {
    let Scene { _serial, _providers, instance, http, sidecar } = scene(&[]).await;
    let (user, token) = instance.new_user(&http, "free", "100").await;

    // Twenty calls at once, each of which may cost 95 cents, on 100 cents.
    let answers = at_once(&http, &sidecar, &[token.as_str(); 20], &expensive_call()).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 19, "{statuses:?}");

    // A 14-token call to gpt-4o-mini: 11 * $0.15/M + 3 * $0.60/M = 0.000345 cents, not a whole cent.
    let cheap = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&cheap).send().await;
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let (usage_id, cost_header) = (header("x-byok-usage-id"), header("x-byok-cost-cents"));

    let query = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &query, 2).await;
    let cost = |model: &str| {
        let row = rows.iter().find(|r| r["model"] == model).unwrap();
        row["cost_cents"].as_f64().or_else(|| row["cost_cents"].as_str().and_then(|s| s.parse().ok())).unwrap()
    };
    assert!((cost("gpt-4o") - 90.0025).abs() < 1e-9, "{rows:?}");
    assert!((cost("gpt-4o-mini") - 0.000345).abs() < 1e-12, "{rows:?}");
    // The answer said what the call cost, and which ledger row holds it: the same amount, to the billionth.
    let row = rows.iter().find(|r| r["request_id"] == usage_id.as_str()).expect("the usage id names the ledger row");
    assert_eq!(Cents::from_json(&row["cost_cents"]).unwrap(), Cents::parse(&cost_header).unwrap(), "{row}");
    let balance = instance.ledger_balance(&http, &user).await;
    assert!((balance - (100.0 - 90.0025 - 0.000345)).abs() < 1e-9, "the ledger says {balance}");
    assert!(balance >= 0.0);
    sidecar.stop().await;
}

#[tokio::test]
async fn the_platforms_daily_budget_refuses_credit_calls_of_every_user_but_not_own_key_calls() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    mount_expensive_gpt4o(&providers).await;
    // Whatever earlier tests spent today counts: the cap leaves room for one 95-cent hold on top.
    let midnight = format!("{}T00:00:00Z", time::OffsetDateTime::now_utc().date());
    let query = [
        ("aggregate[sum]", "cost_cents"),
        ("filter[transaction_type][_eq]", "deduction"),
        ("filter[provider][_nnull]", "true"),
        ("filter[occurred_at][_gte]", midnight.as_str()),
    ];
    let sums = instance.admin_get(&http, "/items/credit_transactions", &query).await;
    let spent = Cents::from_json(&sums[0]["sum"]["cost_cents"]).unwrap_or(Cents::ZERO);
    let cap = (spent.ceil_whole() + 100).to_string();
    // The admin hears of it (80%, then spent), in Directus and by e-mail.
    let admin_email = instance.vars["DIRECTUS_ADMIN_EMAIL"].clone();
    let admin_mails_before = instance.mails_to(&admin_email).await.len();
    let started = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let env = [
        ("PLATFORM_DAILY_BUDGET_CENTS", cap.as_str()),
        ("PLATFORM_BUDGET_ALERT_EMAILS", admin_email.as_str()),
        ("RATE_LIMIT_FREE_PER_MIN", "1000"),
    ];
    let sidecar = gateway_sidecar(&instance, &providers, &env).await;
    let (_, first) = instance.new_user(&http, "free", "1000").await;
    let (_, second) = instance.new_user(&http, "free", "1000").await;

    // Twenty calls at once from two users, each possibly costing 95 cents, with 100 left of the day.
    let body = expensive_call();
    let tokens: Vec<&str> = (0..20).map(|i| if i % 2 == 0 { first.as_str() } else { second.as_str() }).collect();
    let mut statuses = Vec::new();
    for (status, retry_after, error) in at_once(&http, &sidecar, &tokens, &body).await {
        if status == 503 {
            assert!(retry_after);
            assert_eq!(error["error"]["code"], "platform_budget_exhausted", "{error}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 19, "{statuses:?}");

    // Own keys are not the platform's money: they keep working.
    let (_, owner) = instance.new_user(&http, "premium", "0").await;
    sidecar.save_openai_key(&http, &owner, GOOD_KEY).await;
    let own = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&owner).json(&body).send().await.unwrap();
    assert_eq!(own.status(), 200);
    assert_eq!(own.headers()["x-byok-source"], "byok");
    let refused = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&first).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 503, "credits stay refused for the rest of the day");

    let admin = instance.admin_get(&http, "/users", &[("filter[email][_eq]", admin_email.as_str())]).await;
    let admin = admin[0]["id"].as_str().unwrap().to_owned();
    let query = [("filter[recipient][_eq]", admin.as_str()), ("filter[timestamp][_gte]", started.as_str())];
    let notices = instance.wait_for_rows(&http, "/notifications", &query, 2).await;
    let subjects: Vec<&str> = notices.iter().filter_map(|n| n["subject"].as_str()).collect();
    assert!(subjects.contains(&"The platform has used 80% of its daily AI budget"), "{subjects:?}");
    assert!(subjects.contains(&"The platform's daily AI budget is spent"), "{subjects:?}");
    assert_eq!(subjects.len(), 2, "once each: {subjects:?}");
    let mails = instance.wait_for_mail(&admin_email, admin_mails_before + 1).await;
    assert!(mails.iter().any(|m| m["subject"].as_str().is_some_and(|s| s.contains("daily AI budget"))), "{mails:?}");
    let (status, spend) = sidecar.get(&http, "/v1/admin/spend", Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, 200, "{spend}");
    assert_eq!(Cents::from_json(&spend["platform"]["cap_cents"]).unwrap(), Cents::parse(&cap).unwrap());
    assert!(spend["platform"]["percent"].as_f64().unwrap() >= 80.0, "{spend}");
    sidecar.stop().await;
}

#[tokio::test]
async fn a_tiers_daily_cap_refuses_the_call_that_would_pass_it_even_under_twenty_at_once() {
    let Scene { _serial, _providers, instance, http, sidecar } =
        scene(&[("BUDGET_FREE", "credits.daily=100,credits.monthly=100000")]).await;
    // Plenty of credits: only the cap can refuse.
    let (user, token) = instance.new_user(&http, "free", "10000").await;

    let mut statuses = Vec::new();
    let mut refusal = serde_json::Value::Null;
    for (status, _, answer) in at_once(&http, &sidecar, &[token.as_str(); 20], &expensive_call()).await {
        statuses.push(status);
        if status == 402 {
            refusal = answer;
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 19, "{statuses:?}");
    let error = &refusal["error"];
    assert_eq!((&error["code"], &error["cap"]), (&json!("budget_exceeded"), &json!("credits.daily")), "{refusal}");
    let tomorrow = time::OffsetDateTime::now_utc().date().next_day().unwrap();
    assert_eq!(error["resets_at"], format!("{tomorrow}T00:00:00Z"), "{refusal}");
    assert!(error["message"].as_str().unwrap().contains("daily cap of 100 cents"), "{refusal}");

    // What the cap leaves still pays for a small call; the ledger shows spending within the cap.
    let cheap = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&cheap).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let query = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &query, 2).await;
    let spent: f64 = rows.iter().map(|r| Cents::from_json(&r["cost_cents"]).unwrap().as_f64()).sum();
    assert!(spent <= 100.0, "spent {spent} cents under a 100-cent cap");

    // The user's calls list all 21: each refusal with its code, each charged call at its ledger row's cost.
    let calls = listed_calls(&http, &sidecar, &token, 21).await;
    let refused: Vec<_> = calls.iter().filter(|c| c["error_code"] == "budget_exceeded").collect();
    assert_eq!(refused.len(), 19, "{calls:?}");
    assert!(refused.iter().all(|c| c["status"] == 402 && c["source"].is_null() && c["cost_cents"] == "0.000000000"));
    for row in &rows {
        let call = calls.iter().find(|c| c["id"] == row["request_id"]).expect("a charged call is listed by its id");
        assert_eq!(
            (&call["status"], &call["source"], &call["error_code"]),
            (&json!(200), &json!("internal"), &json!(null))
        );
        let (listed, ledger) =
            (Cents::from_json(&call["cost_cents"]).unwrap(), Cents::from_json(&row["cost_cents"]).unwrap());
        assert_eq!(listed, ledger, "its cost is the ledger's");
    }
    sidecar.stop().await;
}

#[tokio::test]
async fn an_own_key_cap_refuses_the_call_that_would_pass_it_even_under_twenty_at_once() {
    let Scene { _serial, _providers, instance, http, sidecar } =
        scene(&[("BUDGET_PREMIUM", "credits.daily=100000")]).await;
    // No credits: every call goes to the user's own key, under the daily cap they set on it.
    let (user, token) = instance.new_user(&http, "premium", "0").await;
    sidecar.save_openai_key(&http, &token, GOOD_KEY).await;
    let caps = json!({"own_keys": {"daily_cents": 100, "monthly_cents": null}});
    let response = http.put(sidecar.url("/v1/budget")).bearer_auth(&token).json(&caps).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let stored = instance.admin_get(&http, "/items/user_budgets", &[("filter[user][_eq]", user.as_str())]).await;
    assert_eq!(stored[0]["own_keys_daily_cents"], 100, "kept in Directus: {stored}");

    let answers = at_once(&http, &sidecar, &[token.as_str(); 20], &expensive_call()).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    let (_, _, refusal) = answers.iter().find(|(status, _, _)| *status == 402).expect("refusals");
    let error = &refusal["error"];
    assert_eq!((&error["code"], &error["cap"]), (&json!("budget_exceeded"), &json!("own_keys.daily")), "{refusal}");
    assert!(error["message"].as_str().unwrap().contains("your own API keys past your daily cap of 100 cents"));

    // What the provider billed is in api_key_usage, within the cap; the ledger is untouched.
    let rows = instance.wait_for_rows(&http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 1).await;
    let spent: f64 = rows.iter().map(|r| Cents::from_json(&r["estimated_cost_cents"]).unwrap().as_f64()).sum();
    assert!((1.0..=100.0).contains(&spent) && rows.len() == 1, "{} rows, {spent} cents", rows.len());
    assert_eq!(instance.ledger_balance(&http, &user).await, 0.0);
    let (status, budget) = sidecar.get(&http, "/v1/budget", Some(&token)).await;
    assert_eq!(status, 200);
    let day = &budget["own_keys"]["daily"];
    assert_eq!(Cents::from_json(&day["limit_cents"]).unwrap(), Cents::whole(100), "{budget}");
    assert_eq!(Cents::from_json(&day["spent_cents"]).unwrap().as_f64(), spent, "{budget}");
    let calls = listed_calls(&http, &sidecar, &token, 20).await;
    assert_eq!(calls.iter().filter(|c| c["error_code"] == "budget_exceeded").count(), 19);
    sidecar.stop().await;
}

#[tokio::test]
async fn credits_running_low_can_be_a_share_of_the_last_grant() {
    let Scene { _serial, _providers, instance, http, sidecar } = scene(&[("LOW_BALANCE_ALERT_PERCENT", "50")]).await;
    // Granted $1.50: half of it is 75 cents, and one call may take 95 of them.
    let account = instance.new_account(&http, "free", "150").await;
    let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&account.token).json(&expensive_call());
    assert_eq!(response.send().await.unwrap().status(), 200);
    let mails = instance.wait_for_mail(&account.email, 1).await;
    assert_eq!(mails[0]["subject"], "Your credits are running low");
    let text = mails[0]["text"].as_str().unwrap();
    assert!(text.contains("You have $0.55 of platform credits left, below the $0.75"), "{text}");
    sidecar.stop().await;
}

/// Polls `GET /v1/calls` (bounded) until it lists `count` of the user's calls, then returns them.
async fn listed_calls(http: &reqwest::Client, sidecar: &Sidecar, token: &str, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        let (status, page) = sidecar.get(http, "/v1/calls?limit=200", Some(token)).await;
        assert_eq!(status, 200, "{page}");
        let calls = page["calls"].as_array().cloned().unwrap_or_default();
        if calls.len() >= count {
            return calls;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("GET /v1/calls never listed {count} calls");
}

#[tokio::test]
async fn each_cap_threshold_is_told_once_in_directus_and_by_e_mail() {
    let Scene { _serial, _providers, instance, http, sidecar } = scene(&[("BUDGET_FREE", "credits.daily=200")]).await;
    let account = instance.new_account(&http, "free", "10000").await;
    let subjects = |notes: &serde_json::Value| -> Vec<String> {
        let notes = notes.as_array().unwrap();
        notes.iter().map(|n| n["subject"].as_str().unwrap().to_owned()).collect()
    };
    let recipient = [("filter[recipient][_eq]", account.id.as_str())];

    // 90 cents a call under a 200-cent daily cap: 45%, then 90% (the 50% and the 80% thresholds at once).
    let body = expensive_call();
    for expected in [200, 200, 402, 402] {
        let response =
            http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&account.token).json(&body).send().await;
        assert_eq!(response.unwrap().status(), expected);
    }
    // Told once of the highest share reached (80%), and once that the cap is reached (the first refusal);
    // the refusal after that tells nothing new.
    let mails = instance.wait_for_mail(&account.email, 2).await;
    let mut mail_subjects: Vec<&str> = mails.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    mail_subjects.sort_unstable();
    assert_eq!(mail_subjects, ["You have used 80% of your daily credit cap", "You reached your daily credit cap"]);
    let at_80 = mails.iter().find(|m| m["subject"] == "You have used 80% of your daily credit cap").unwrap();
    let text = at_80["text"].as_str().unwrap();
    assert!(text.contains("of your daily cap of 200 cents") && text.contains("00:00 UTC"), "{text}");
    let mut notices = subjects(&instance.admin_get(&http, "/notifications", &recipient).await);
    notices.sort_unstable();
    assert_eq!(notices, mail_subjects);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_users_own_cap_is_kept_in_directus_and_refuses_what_would_pass_it() {
    let Scene { _serial, _providers, instance, http, sidecar } =
        scene(&[("BUDGET_FREE_MAX", "credits.daily=1000")]).await;
    let (user, token) = instance.new_user(&http, "free", "10000").await;
    let put = |body: serde_json::Value| http.put(sidecar.url("/v1/budget")).bearer_auth(&token).json(&body).send();

    let above = put(json!({"credits": {"daily_cents": 5000}})).await.unwrap();
    assert_eq!(above.status(), 422);
    let set = put(json!({"credits": {"daily_cents": 50, "monthly_cents": null}})).await.unwrap();
    assert_eq!(set.status(), 200);
    let budget: serde_json::Value = set.json().await.unwrap();
    assert_eq!(budget["credits"]["daily"]["limit_cents"], 50, "{budget}");
    assert_eq!(budget["yours"]["credits"]["daily_cents"], 50, "{budget}");
    assert_eq!(budget["ceilings"]["credits"]["daily_cents"], 1000, "{budget}");
    let rows = instance.admin_get(&http, "/items/user_budgets", &[("filter[user][_eq]", user.as_str())]).await;
    assert_eq!(rows[0]["credits_daily_cents"], 50, "kept in Directus: {rows}");

    let body = expensive_call();
    let refused = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        (&error["error"]["cap"], &error["error"]["limit_cents"]),
        (&json!("credits.daily"), &json!(50)),
        "{error}"
    );

    // Back to the plan's default (none below the ceiling): the same call goes through.
    let cleared = put(json!({"credits": {"daily_cents": null}})).await.unwrap();
    assert_eq!(cleared.status(), 200);
    let served = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(served.status(), 200);
    sidecar.stop().await;
}

#[tokio::test]
async fn credits_running_low_are_told_once_with_where_to_buy_more() {
    let checkout = "https://app.example.com/billing";
    let Scene { _serial, _providers, instance, http, sidecar } =
        scene(&[("LOW_BALANCE_ALERT_CENTS", "1000"), ("CREDITS_PURCHASE_URL", checkout)]).await;
    let account = instance.new_account(&http, "free", "1000").await;
    let body = expensive_call();
    for _ in 0..2 {
        let response = http.post(sidecar.url("/v1/chat/completions")).bearer_auth(&account.token).json(&body).send();
        assert_eq!(response.await.unwrap().status(), 200);
    }
    let mails = instance.wait_for_mail(&account.email, 1).await;
    assert_eq!(mails.len(), 1, "once, not once per call: {mails:?}");
    assert_eq!(mails[0]["subject"], "Your credits are running low");
    let text = mails[0]["text"].as_str().unwrap();
    assert!(text.contains("You have $9.05 of platform credits left") && text.contains(checkout), "{text}");
    let notices = instance.admin_get(&http, "/notifications", &[("filter[recipient][_eq]", account.id.as_str())]).await;
    assert_eq!(notices.as_array().unwrap().len(), 1, "{notices}");
    sidecar.stop().await;
}
