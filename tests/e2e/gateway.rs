//! The gateway end to end: real Directus, real sidecar binary, the official Python SDKs, fake providers.

use serde_json::json;
use wiremock::MockServer;

use crate::fakes::{GOOD_KEY, GatewayScene, REVOKED_KEY, fake_providers, gateway_scene, gateway_sidecar};
use crate::harness::{Instance, Sidecar, serial};

/// BYOK-first flags, fake providers, a sidecar in front of them, and `who` logged in with `key` stored.
struct Scene {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _providers: MockServer,
    instance: Instance,
    http: reqwest::Client,
    sidecar: Sidecar,
    token: String,
}

async fn scene(who: &str, key: &str) -> Scene {
    let GatewayScene { _serial, _providers, instance, http, sidecar } = gateway_scene(&[]).await;
    let token = instance.login(&http, who).await;
    sidecar.save_openai_key(&http, &token, key).await;
    Scene { _serial, _providers, instance, http, sidecar, token }
}

#[tokio::test]
async fn official_sdks_work_and_every_call_is_accounted_in_directus() {
    let Scene { _serial, _providers, instance, http, sidecar, token: premium } = scene("PREMIUM", GOOD_KEY).await;

    // The official SDKs, unchanged but for base URL and key.
    let python =
        std::env::var("BYOK_E2E_PYTHON").expect("BYOK_E2E_PYTHON: the venv python with the SDKs (scripts/test.sh)");
    let output = std::process::Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk")])
        .env("SIDECAR_URL", &sidecar.base)
        .env("USER_TOKEN", &premium)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "SDK tests failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("12 passed"), "{report}");

    // OpenAI calls went through the user's key, Anthropic calls (no key) through credits; token counts are
    // free at Anthropic and recorded nowhere.
    let user = instance.var("PREMIUM_USER_ID").to_owned();
    let byok = instance.wait_for_rows(&http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 6).await;
    let mut tokens: Vec<(&str, u64)> =
        byok.iter().map(|r| (r["model"].as_str().unwrap(), r["total_tokens"].as_u64().unwrap())).collect();
    tokens.sort();
    let expected = [("gpt-4o-mini", 10), ("gpt-4o-mini", 10), ("gpt-4o-mini", 11), ("gpt-4o-mini", 12)];
    assert_eq!(
        tokens,
        [&expected[..], &[("gpt-4o-mini", 14), ("text-embedding-3-small", 5)]].concat(),
        "chat 11+3 and two streams 8+2, responses 9+3 and a stream 7+4, embeddings 5: {byok:?}"
    );
    let ledger = instance
        .wait_for_rows(
            &http,
            "/items/credit_transactions",
            &[("filter[user][_eq]", &user), ("filter[transaction_type][_eq]", "deduction")],
            2,
        )
        .await;
    let mut tokens: Vec<u64> = ledger.iter().map(|r| r["total_tokens"].as_u64().unwrap()).collect();
    tokens.sort();
    assert_eq!(tokens, [13, 18], "non-streaming 10+3, streaming 12+6: {ledger:?}");
    assert!(ledger.iter().all(|r| r["cost_cents"].as_f64().unwrap() > 0.0 && r["provider"] == "anthropic"));

    // A free user is served on credits.
    let free = instance.login(&http, "FREE").await;
    let response = http
        .post(sidecar.url("/v1/chat/completions"))
        .bearer_auth(&free)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!((response.status().as_u16(), response.headers()["x-byok-source"].to_str().unwrap()), (200, "internal"));
    instance
        .wait_for_rows(
            &http,
            "/items/credit_transactions",
            &[("filter[user][_eq]", instance.var("FREE_USER_ID")), ("filter[transaction_type][_eq]", "deduction")],
            1,
        )
        .await;

    // The usage summary reads those records back.
    let (_, summary) = sidecar.get(&http, "/v1/usage?days=30", Some(&premium)).await;
    assert_eq!(summary["total"]["requests"], 8, "{summary}");

    http.delete(sidecar.url("/v1/keys/openai")).bearer_auth(&premium).send().await.unwrap();
    sidecar.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_marked_invalid_the_user_notified_in_directus_and_credits_take_over() {
    let Scene { _serial, _providers, instance, http, sidecar, token: lifetime } = scene("LIFETIME", REVOKED_KEY).await;
    let user = instance.var("LIFETIME_USER_ID").to_owned();
    let mails_before = instance.mails_to(instance.var("LIFETIME_USER_EMAIL")).await.len();

    for _ in 0..2 {
        let response = http
            .post(sidecar.url("/v1/chat/completions"))
            .bearer_auth(&lifetime)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-byok-source"], "internal");
    }
    let notes = instance.wait_for_rows(&http, "/notifications", &[("filter[recipient][_eq]", &user)], 1).await;
    assert_eq!(notes.len(), 1, "one notification per incident: {notes:?}");
    assert!(notes[0]["subject"].as_str().unwrap().contains("OpenAI API key stopped working"));
    // Directus e-mailed it too (the user has e-mail notifications on): once, saying what happened, what to do,
    // and where.
    let mails = instance.wait_for_mail(instance.var("LIFETIME_USER_EMAIL"), mails_before + 1).await;
    assert_eq!(mails.len(), mails_before + 1, "one e-mail per incident: {mails:?}");
    // A Maildir has no order, so this incident's e-mail is not known by its place: every e-mail to this user (an
    // earlier pass's, of the same incident, and this one) must say it.
    for mail in &mails {
        assert_eq!(mail["subject"], "Your OpenAI API key stopped working");
        let text = mail["text"].as_str().unwrap();
        assert!(text.contains("OpenAI rejected your saved API key"), "{text}");
        assert!(text.contains("https://platform.openai.com/api-keys"), "{text}");
        assert!(text.contains(&format!("http://{}/account#keys", instance.sidecar_addr)), "the key page: {text}");
    }
    let keys = instance
        .admin_get(&http, "/items/user_api_keys", &[("filter[user][_eq]", &user), ("filter[provider][_eq]", "openai")])
        .await;
    assert_eq!(keys[0]["status"], "invalid", "{keys}");
    http.delete(sidecar.url("/v1/keys/openai")).bearer_auth(&lifetime).send().await.unwrap();
    sidecar.stop().await;
}

/// A Responses stream is charged by the usage of `response.completed` when it completes, and for what reached
/// the client when the client leaves before the end, in the real ledger both times.
#[tokio::test]
async fn a_responses_stream_is_charged_when_it_completes_and_when_its_client_cuts_it() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;
    let stream = |sidecar: &Sidecar| {
        http.post(sidecar.url("/v1/responses"))
            .bearer_auth(&token)
            .json(&json!({"model": "gpt-4o-mini", "input": "Say hello", "stream": true}))
            .send()
    };
    let deductions = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];

    let providers = fake_providers().await;
    let sidecar = gateway_sidecar(&instance, &providers, &[]).await;
    let response = stream(&sidecar).await.unwrap();
    assert_eq!(response.headers()["x-byok-source"], "internal");
    let text = response.text().await.unwrap();
    assert!(text.contains("\"cost_cents\"") && text.contains("response.completed"), "{text}");
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &deductions, 1).await;
    assert_eq!((rows[0]["prompt_tokens"].as_u64(), rows[0]["completion_tokens"].as_u64()), (Some(7), Some(4)));
    assert_eq!(rows[0]["service_type"], "openai.responses", "{rows:?}");
    sidecar.stop().await;

    // A provider still generating (a keep-alive every 20 ms) when the client leaves after the first words.
    let created = json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_3", "status": "in_progress"}});
    let delta = json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0, "content_index": 0, "delta": "Hello there, general"});
    let events = vec![
        format!("event: response.created\ndata: {created}\n\n"),
        format!("event: response.output_text.delta\ndata: {delta}\n\n"),
    ];
    let base = format!("{}/v1", crate::streams::scripted_stream_provider(events, Some(": keep-alive\n\n")).await);
    let sidecar = crate::harness::Sidecar::start(
        &instance,
        &[("OPENAI_BASE_URL", &base), ("INTERNAL_OPENAI_API_KEY", crate::fakes::INTERNAL_OPENAI)],
    )
    .await;
    let response = stream(&sidecar).await.unwrap();
    crate::streams::read_until_then_leave(response, "general", 1).await;
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &deductions, 2).await;
    let cut = rows.iter().find(|r| r["completion_tokens"].as_u64() != Some(4)).expect("a second deduction");
    assert_eq!(cut["completion_tokens"], "Hello there, general".len().div_ceil(3), "what passed, estimated: {cut}");
    assert!(cut["cost_cents"].as_f64().unwrap() > 0.0, "{cut}");
    sidecar.stop().await;
}
