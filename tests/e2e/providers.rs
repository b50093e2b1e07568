//! Providers as data: a shipped declaration (Mistral) and one an operator adds by file serve own keys and
//! credits through the same gateway, routed to their base URLs, with their own auth and prices.

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Instance, Sidecar, client, serial};

/// Mistral keys are 32 letters and digits, with no prefix.
const MISTRAL_KEY: &str = "e2eMistralKeyNotReal000000000xAb";
const ACME_INTERNAL: &str = "acme-internal-e2e-0000000000000";

fn completion(prompt: u64, completion: u64) -> Value {
    json!({"id": "c-1", "object": "chat.completion", "created": 1700000000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
}

/// Who paid and who served: `x-byok-source`, `x-byok-provider`.
fn labels(response: &reqwest::Response) -> (&str, &str) {
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    (header("x-byok-source"), header("x-byok-provider"))
}

fn cost_header(response: &reqwest::Response) -> f64 {
    response.headers()["x-byok-cost-cents"].to_str().unwrap().parse().unwrap()
}

/// A file an operator would write: a new OpenAI-compatible provider whose keys go in an `api-key` header,
/// and a shipped one taken out.
fn acme_declaration(base_url: &str) -> Value {
    json!({"providers": [{"id": "xai", "enabled": false}, {
        "id": "acme", "name": "Acme AI", "api": "openai", "base_url": base_url, "auth": "api-key",
        "key": {"prefixes": ["acme-"], "hint": "Starts with \"acme-\"."}, "verify": {"path": "models"},
        "links": {"signup": "https://acme.example/", "keys": "https://acme.example/keys", "billing": "https://acme.example/billing"},
        "models": {"acme-large": {"input_per_mtok_usd": 2.0, "output_per_mtok_usd": 4.0}},
        "unknown_model": {"input_per_mtok_usd": 10.0, "output_per_mtok_usd": 20.0, "max_output_tokens": 4096}
    }]})
}

#[tokio::test]
async fn a_provider_that_exists_only_as_a_declaration_serves_own_keys_and_credits_at_its_price() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = client();
    instance.set_byok_first(&http).await;

    let fake = MockServer::start().await;
    let bearer = format!("Bearer {MISTRAL_KEY}");
    Mock::given(method("GET"))
        .and(path("/mistral/v1/models"))
        .and(header("authorization", bearer.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": []})))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/mistral/v1/chat/completions"))
        .and(header("authorization", bearer.as_str()))
        .and(body_partial_json(json!({"model": "mistral-small-latest"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(11, 3)))
        .expect(1)
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/acme/v1/chat/completions"))
        .and(header("api-key", ACME_INTERNAL))
        .and(body_partial_json(json!({"model": "acme-large"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(1_000, 500)))
        .expect(2)
        .mount(&fake)
        .await;

    let file = format!("{}/providers-e2e.json", instance.dir);
    std::fs::write(&file, acme_declaration(&format!("{}/acme/v1", fake.uri())).to_string()).unwrap();
    let mistral_base = format!("{}/mistral/v1", fake.uri());
    let sidecar = Sidecar::start(
        &instance,
        &[("PROVIDERS_FILE", &file), ("MISTRAL_BASE_URL", &mistral_base), ("INTERNAL_ACME_API_KEY", ACME_INTERNAL)],
    )
    .await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;

    // Both appear where users add keys, with their own links.
    let (status, providers) = sidecar.get(&http, "/v1/providers", Some(&token)).await;
    assert_eq!(status, 200);
    let listed = |id: &str| providers["providers"].as_array().unwrap().iter().find(|p| p["provider"] == id).cloned();
    assert_eq!(listed("mistral").unwrap()["keys_url"], "https://console.mistral.ai/api-keys");
    assert_eq!(listed("acme").unwrap()["name"], "Acme AI");
    assert!(listed("xai").is_none(), "taken out by the file");
    let refused = http
        .put(sidecar.url("/v1/keys/xai"))
        .bearer_auth(&token)
        .json(&json!({"api_key": "xai-FAKE-not-a-real-key-0000000"}));
    let refused = refused.send().await.unwrap();
    assert_eq!(refused.status(), 404);

    // The Mistral key is checked against Mistral's base URL with Mistral's auth, and saved.
    let saved = http
        .put(sidecar.url("/v1/keys/mistral"))
        .bearer_auth(&token)
        .json(&json!({"api_key": MISTRAL_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let saved: Value = saved.json().await.unwrap();
    assert_eq!((saved["status"].as_str(), saved["hint"].as_str()), (Some("active"), Some("...0xAb")), "{saved}");

    // A Mistral model goes to Mistral on the user's key, charged at Mistral's price: 11 * $0.10/M + 3 * $0.30/M.
    let chat = |model: &str| {
        http.post(sidecar.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "Salut"}]}))
            .send()
    };
    let response = chat("mistral-small-latest").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(labels(&response), ("byok", "mistral"));
    assert!((cost_header(&response) - 0.0002).abs() < 1e-12, "{:?}", response.headers());

    // Acme, by its `provider/model` name and by a model it lists: credits (no key), the platform's key in
    // `api-key`, 1000 * $2/M + 500 * $4/M = 0.4 cents each.
    for model in ["acme/acme-large", "acme-large"] {
        let response = chat(model).await.unwrap();
        assert_eq!(response.status(), 200, "{model}");
        assert_eq!(labels(&response), ("internal", "acme"), "{model}");
        assert!((cost_header(&response) - 0.4).abs() < 1e-9, "{:?}", response.headers());
    }

    let own = instance.wait_for_rows(&http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 1).await;
    assert_eq!(
        (own[0]["provider"].as_str(), own[0]["model"].as_str()),
        (Some("mistral"), Some("mistral-small-latest"))
    );
    assert_eq!(own[0]["total_tokens"], 14);
    let query = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let paid = instance.wait_for_rows(&http, "/items/credit_transactions", &query, 2).await;
    for row in &paid {
        assert_eq!((row["provider"].as_str(), row["model"].as_str()), (Some("acme"), Some("acme-large")), "{row}");
    }
    assert!((instance.ledger_balance(&http, &user).await - 99.2).abs() < 1e-6);
    sidecar.stop().await;
}

#[tokio::test]
async fn a_providers_file_that_cannot_be_used_stops_the_sidecar_naming_the_variable() {
    let instance = Instance::from_env();
    let file = format!("{}/providers-bad.json", instance.dir);
    std::fs::write(&file, r#"{"providers":[{"id":"acme","name":"Acme"}]}"#).unwrap();
    let output = instance.command(&["serve"]).env("PROVIDERS_FILE", &file).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("PROVIDERS_FILE") && stderr.contains("needs `base_url`"), "{stderr}");
}

/// A model whose provider is down falls back to the next model of its chain: the call is held and charged at
/// that model's price, the answer says which model served it, and the ledger row and the metrics record the
/// fallback.
#[tokio::test]
async fn a_model_whose_provider_is_down_falls_back_to_the_next_model_of_its_chain_and_it_is_recorded() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = client();
    instance.set_byok_first(&http).await;

    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/openai/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(json!({"error": {"message": "overloaded", "type": "server_error"}})),
        )
        .mount(&fake)
        .await;
    Mock::given(method("POST"))
        .and(path("/mistral/v1/chat/completions"))
        .and(header("authorization", "Bearer mistral-platform-key-e2e-000000"))
        .and(body_partial_json(
            json!({"model": "mistral-large-latest", "messages": [{"role": "user", "content": "Salut"}]}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(1_000, 500)))
        .expect(1)
        .mount(&fake)
        .await;
    let file = format!("{}/fallbacks-e2e.json", instance.dir);
    let chains = json!({"fallbacks": {"gpt-4o": ["claude-sonnet-4", "mistral-large-latest"]}});
    std::fs::write(&file, chains.to_string()).unwrap();
    let (openai, mistral) = (format!("{}/openai/v1", fake.uri()), format!("{}/mistral/v1", fake.uri()));
    let sidecar = Sidecar::start(
        &instance,
        &[
            ("PROVIDERS_FILE", &file),
            ("OPENAI_BASE_URL", &openai),
            ("MISTRAL_BASE_URL", &mistral),
            ("INTERNAL_OPENAI_API_KEY", crate::fakes::INTERNAL_OPENAI),
            ("INTERNAL_MISTRAL_API_KEY", "mistral-platform-key-e2e-000000"),
            ("UPSTREAM_DEADLINE_SECS", "1"),
        ],
    )
    .await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;

    let response = http
        .post(sidecar.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Salut"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(labels(&response), ("internal", "mistral"));
    assert_eq!(
        response.headers()["x-byok-model"],
        "mistral-large-latest",
        "claude-sonnet-4 is skipped: not of this API"
    );
    // 1000 * $2/M + 500 * $6/M: Mistral Large's price, not GPT-4o's.
    assert!((cost_header(&response) - 0.5).abs() < 1e-9, "{:?}", response.headers());

    let query = [("filter[user][_eq]", user.as_str()), ("filter[transaction_type][_eq]", "deduction")];
    let rows = instance.wait_for_rows(&http, "/items/credit_transactions", &query, 1).await;
    let row = &rows[0];
    assert_eq!((row["provider"].as_str(), row["model"].as_str()), (Some("mistral"), Some("mistral-large-latest")));
    assert_eq!(row["fallback_from"], "gpt-4o", "{row}");
    let metrics = http.get(sidecar.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("byok_fallbacks_total")
            && l.contains(r#"from="openai""#)
            && l.contains(r#"to="mistral""#)
            && l.contains(r#"reason="outage""#)),
        "{metrics}"
    );
    sidecar.stop().await;
}
