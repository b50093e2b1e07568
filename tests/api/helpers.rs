use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};

use byok_bridge::config::Settings;
use byok_bridge::crypto::webhook_signature::WebhookSecret;
use byok_bridge::startup::Application;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const DIRECTUS_SECRET: &str = "test-directus-secret-0123456789abcdef";
pub const SERVICE_TOKEN: &str = "test-service-token-9f8e7d6c5b4a";
pub const OPERATOR_TOKEN: &str = "test-operator-token-0a1b2c3d4e5f";
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm";
pub const ENCRYPTION_KEY: &str = "4f2b8c1d9e0a7f3b6c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b";

pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub directus: MockServer,
    /// Stands in for both OpenAI (under `/v1`) and Anthropic (under `/v1` too, per its own base URL).
    pub providers: MockServer,
    _data: DataDir,
}

/// The app's `DATA_DIR`, removed with the app (each test's sidecar has its own; left behind, a few hundred a
/// run filled the disk over many runs).
pub struct DataDir(pub std::path::PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings for a sidecar talking to `directus_url`, with `overrides` applied on top.
pub fn test_env(directus_url: &str, overrides: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
    let mut vars: HashMap<&'static str, String> = HashMap::from([
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("DIRECTUS_URL", directus_url.to_owned()),
        ("DIRECTUS_TOKEN", SERVICE_TOKEN.to_owned()),
        ("OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
        ("DIRECTUS_SECRET", DIRECTUS_SECRET.to_owned()),
        ("WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("ENCRYPTION_KEY", ENCRYPTION_KEY.to_owned()),
        ("DIRECTUS_TIMEOUT_SECS", "2".to_owned()),
        ("DATA_DIR", std::env::temp_dir().join(format!("byok-data-{}", Uuid::new_v4())).display().to_string()),
    ]);
    for (k, v) in overrides {
        vars.insert(k, (*v).to_owned());
    }
    vars
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&'static str, &str)]) -> TestApp {
    spawn_app_tweaked(overrides, |_| {}).await
}

/// [`spawn_app_with`], with `tweak` applied to the parsed settings (what no variable sets, e.g. the clock).
pub async fn spawn_app_tweaked(overrides: &[(&'static str, &str)], tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let directus = MockServer::start().await;
    let providers = MockServer::start().await;
    let openai = format!("{}/v1", providers.uri());
    let anthropic = providers.uri();
    let mut all = vec![("OPENAI_BASE_URL", openai.as_str()), ("ANTHROPIC_BASE_URL", anthropic.as_str())];
    all.extend_from_slice(overrides);
    let vars = test_env(&directus.uri(), &all);
    let mut settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("test settings are valid");
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("binds port 0");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let data = DataDir(vars["DATA_DIR"].clone().into());
    TestApp { addr, http: reqwest::Client::new(), directus, providers, _data: data }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path`, as `token` when given: the status, and the JSON body (`null` when there is none).
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.send(self.http.get(self.url(path)), token).await
    }

    /// POST `body` as JSON to `path`, as `token` when given: the status and the JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(self.http.post(self.url(path)).json(&body), token).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder, token: Option<&str>) -> (u16, Value) {
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or_default())
    }

    pub async fn route(&self, token: &str, provider: &str) -> reqwest::Response {
        self.http
            .post(self.url("/v1/route"))
            .bearer_auth(token)
            .json(&json!({"provider": provider}))
            .send()
            .await
            .unwrap()
    }

    /// Sends a webhook signed with the test secret at `timestamp` (unix seconds).
    pub async fn webhook_at(&self, id: &str, timestamp: i64, body: &str) -> reqwest::Response {
        let signature = webhook_secret().sign(id, timestamp, body.as_bytes());
        self.http
            .post(self.url("/webhooks/directus"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn flag_webhook(&self) -> reqwest::Response {
        let id = format!("msg_{}", Uuid::new_v4());
        self.webhook_at(&id, now(), FLAG_UPDATE_BODY).await
    }

    /// Polls `/readyz` until it answers `status`; the bounded wait is the assertion.
    pub async fn wait_until_ready(&self, status: &str) {
        for _ in 0..200 {
            let (_, body) = self.get("/readyz", None).await;
            if body["status"] == status {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("/readyz never reported {status}");
    }

    /// How many requests Directus received for `path`.
    pub async fn directus_hits(&self, path_: &str) -> usize {
        self.directus.received_requests().await.unwrap().iter().filter(|r| r.url.path() == path_).count()
    }
}

pub const FLAG_UPDATE_BODY: &str = r#"{"type":"feature_flags.items.update","timestamp":"2026-11-23T00:00:00Z","data":{"collection":"feature_flags","keys":["3"]}}"#;

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn webhook_secret() -> WebhookSecret {
    WebhookSecret::parse(WEBHOOK_SECRET).unwrap()
}

/// A Directus-shaped access token for `user`, signed with `secret`.
pub fn token_with(claims: &Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

pub fn claims_for(user: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"id": user, "role": null, "app_access": false, "admin_access": false,
           "iat": now, "exp": now + 900, "iss": "directus"})
}

pub fn token_for(user: &str) -> String {
    token_with(&claims_for(user), Algorithm::HS256, DIRECTUS_SECRET)
}

pub fn flag_rows(enabled: bool, only: bool, credit_first: bool) -> Value {
    json!({"data": [
        {"key": "byok_enabled", "is_enabled": enabled, "min_tier": "premium"},
        {"key": "byok_uses_internal_credits", "is_enabled": credit_first, "min_tier": null},
        {"key": "byok_only_mode", "is_enabled": only, "min_tier": null},
    ]})
}

/// Replaces whatever `feature_flags` answered before: wiremock prefers higher priority (lower number), so
/// each mount outranks the previous ones.
pub async fn mount_flags(server: &MockServer, enabled: bool, only: bool, credit_first: bool) {
    static NEXT_PRIORITY: AtomicU8 = AtomicU8::new(u8::MAX);
    let priority = NEXT_PRIORITY.fetch_sub(1, Ordering::Relaxed);
    assert!(priority > 1, "too many flag mounts in one test binary");
    Mock::given(method("GET"))
        .and(path("/items/feature_flags"))
        .respond_with(ResponseTemplate::new(200).set_body_json(flag_rows(enabled, only, credit_first)))
        .with_priority(priority)
        .mount(server)
        .await;
}

/// A Directus user with a tier, status, credit ledger and stored keys `(provider, status)`.
pub struct FakeUser<'a> {
    pub tier: &'a str,
    pub status: &'a str,
    pub grants: i64,
    pub deductions: i64,
    pub keys: &'a [(&'a str, &'a str)],
}

impl Default for FakeUser<'_> {
    fn default() -> Self {
        FakeUser { tier: "premium", status: "active", grants: 1000, deductions: 0, keys: &[] }
    }
}

pub async fn mount_user(server: &MockServer, id: &str, user: FakeUser<'_>) {
    Mock::given(method("GET"))
        .and(path(format!("/users/{id}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"status": user.status, "subscription_tier": user.tier}})),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/credit_transactions"))
        .and(query_param("filter[user][_eq]", id))
        .and(query_param("aggregate[sum]", "cost_cents"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"transaction_type": "grant", "sum": {"cost_cents": user.grants.to_string()}},
            {"transaction_type": "deduction", "sum": {"cost_cents": user.deductions}},
        ]})))
        .mount(server)
        .await;
    // What the user's own keys spent (read with spending caps): nothing.
    Mock::given(method("GET"))
        .and(path("/items/api_key_usage"))
        .and(query_param("filter[user][_eq]", id))
        .and(query_param("aggregate[sum]", "estimated_cost_cents"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": [{"sum": {"estimated_cost_cents": null}}]})),
        )
        .mount(server)
        .await;
    let keys: Vec<Value> = user
        .keys
        .iter()
        .map(|(p, s)| {
            let plaintext = if *p == "anthropic" { ANTHROPIC_KEY } else { OPENAI_KEY };
            let envelope = test_keyring().seal(owner(id, p), plaintext.as_bytes());
            json!({"provider": p, "status": s, "is_active": true, "encrypted_key": envelope})
        })
        .collect();
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("filter[user][_eq]", id))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": keys})))
        .mount(server)
        .await;
}

pub fn new_user_id() -> String {
    Uuid::new_v4().to_string()
}

/// Sends raw bytes and returns the raw response, for requests a well-behaved client would not send.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Asserts the standard error shape and returns the code.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("error bodies are JSON");
    let message = body["error"]["message"].as_str().expect("error.message is a string");
    assert!(!message.is_empty());
    body["error"]["code"].as_str().expect("error.code is a string").to_owned()
}

pub const OPENAI_KEY: &str = "sk-proj-testKEYnotReal0123456789abcdefAbCd";
pub const ANTHROPIC_KEY: &str = "sk-ant-api03-testKEYnotReal0123456789-WxYz";

/// The test keyring, to open what the app sealed.
pub fn test_keyring() -> byok_bridge::crypto::envelope::Keyring {
    use byok_bridge::crypto::encryption_key::EncryptionKey;
    byok_bridge::crypto::envelope::Keyring::new(EncryptionKey::parse_hex(ENCRYPTION_KEY).unwrap(), vec![]).unwrap()
}

pub fn owner(user: &str, provider: &str) -> byok_bridge::crypto::envelope::KeyOwner {
    byok_bridge::crypto::envelope::KeyOwner {
        user: byok_bridge::domain::user::UserId::parse(user).unwrap(),
        provider: provider.parse().unwrap(),
    }
}

/// A stored, sealed OpenAI key row `row-1` for `user`, and a PATCH that echoes what it was given.
pub async fn mount_sealed_row(app: &TestApp, user: &str, envelope: &str) {
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("fields", "id,user,provider,encrypted_key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [
            {"id": "row-1", "user": user, "provider": "openai", "encrypted_key": envelope}
        ]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/user_api_keys"))
        .and(query_param("fields", "id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": "row-1"}]})))
        .with_priority(1)
        .mount(&app.directus)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/items/user_api_keys/row-1"))
        .respond_with(|req: &Request| {
            let mut row: Value = serde_json::from_slice(&req.body).unwrap();
            row["id"] = json!("row-1");
            row["provider"] = json!("openai");
            ResponseTemplate::new(200).set_body_json(json!({"data": row}))
        })
        .mount(&app.directus)
        .await;
}

/// Waits (bounded) until `server` has received `count` items by `method` on `path`, and returns them: each
/// request's body, or each element of a body that is an array (usage records go in batches).
pub async fn wait_for_requests(server: &MockServer, method_: &str, path_: &str, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let bodies: Vec<Value> = server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == method_ && r.url.path() == path_)
            .flat_map(|r| match serde_json::from_slice(&r.body).unwrap_or(Value::Null) {
                Value::Array(items) => items,
                body => vec![body],
            })
            .collect();
        if bodies.len() >= count {
            return bodies;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{method_} {path_} was not received {count} time(s)");
}
