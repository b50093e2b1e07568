use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// An HTTP client for the tests. Directus (Node) closes a keep-alive connection after 5 s idle, and a request
/// sent on it at that moment fails (`IncompleteMessage`): this client drops idle connections sooner.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(2)).build().expect("a client can be built")
}

/// Every test shares one Directus and the one sidecar address its hook posts to, so they run one at a time.
/// A tokio mutex: each test has its own runtime, and the guard is held across awaits.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// A user made for one test.
pub struct Account {
    pub id: String,
    pub email: String,
    pub password: String,
    /// A Directus access token of the user.
    pub token: String,
}

/// The `KEY=VALUE` file `scripts/directus-up.sh` writes for the instance.
pub struct Instance {
    pub vars: HashMap<String, String>,
    pub dir: String,
    pub sidecar_addr: String,
}

impl Instance {
    pub fn from_env() -> Instance {
        let file = std::env::var("BYOK_E2E_INSTANCE")
            .expect("BYOK_E2E_INSTANCE is not set: run the end-to-end tests through scripts/test.sh");
        let sidecar_addr = std::env::var("BYOK_E2E_SIDECAR_ADDR").expect("BYOK_E2E_SIDECAR_ADDR is not set");
        Instance::from_file(&file, sidecar_addr)
    }

    /// Reads a `KEY=VALUE` file (an instance's, or a cluster's, which holds its instance's variables too).
    pub fn from_file(file: &str, sidecar_addr: String) -> Instance {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let dir = std::path::Path::new(&file).parent().unwrap().to_string_lossy().into_owned();
        Instance { vars, dir, sidecar_addr }
    }

    /// The sidecar binary with `args`, configured for this instance as the tests' sidecars are.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_byok-bridge"));
        command
            .args(args)
            .env_clear()
            .env("BIND_ADDR", &self.sidecar_addr)
            .env("DIRECTUS_URL", self.var("DIRECTUS_URL"))
            .env("DIRECTUS_TOKEN", self.var("DIRECTUS_TOKEN"))
            .env("DIRECTUS_SECRET", self.var("DIRECTUS_SECRET"))
            .env("WEBHOOK_SECRET", self.var("WEBHOOK_SECRET"))
            .env("STRIPE_WEBHOOK_SECRET", self.var("STRIPE_WEBHOOK_SECRET"))
            .env("ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("RUST_LOG", "info")
            .env("DATA_DIR", format!("{}/sidecar-data", self.dir))
            .envs(std::env::var("BYOK_E2E_REDIS_URL").ok().map(|url| ("REDIS_URL", url)));
        command
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| panic!("{key} missing from the instance file"))
    }

    pub fn directus(&self, path: &str) -> String {
        format!("{}{path}", self.var("DIRECTUS_URL"))
    }

    /// Logs in as a seeded user (`PREMIUM`, `FREE`, ...) and returns the Directus access token.
    pub async fn login(&self, http: &reqwest::Client, who: &str) -> String {
        let body = json!({"email": self.var(&format!("{who}_USER_EMAIL")), "password": self.var(&format!("{who}_USER_PASSWORD"))});
        let response = http.post(self.directus("/auth/login")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "login as {who}");
        let body: Value = response.json().await.unwrap();
        body["data"]["access_token"].as_str().unwrap().to_owned()
    }

    /// Sets a flag as admin through the Directus REST API, returning once Directus has answered.
    pub async fn set_flag(&self, http: &reqwest::Client, key: &str, enabled: bool) {
        let id = self.flag_id(http, key).await;
        let response = http
            .patch(self.directus(&format!("/items/feature_flags/{id}")))
            .bearer_auth(self.var("DIRECTUS_ADMIN_TOKEN"))
            .json(&json!({"is_enabled": enabled}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "PATCH {key}");
    }

    /// GET on Directus as admin, returning `data`.
    pub async fn admin_get(&self, http: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let response = http
            .get(self.directus(path))
            .query(query)
            .bearer_auth(self.var("DIRECTUS_ADMIN_TOKEN"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json::<Value>().await.unwrap()["data"].clone()
    }

    /// The spec's default configuration: BYOK on, BYOK first with credits as fallback.
    pub async fn set_byok_first(&self, http: &reqwest::Client) {
        for (flag, value) in [("byok_enabled", true), ("byok_only_mode", false), ("byok_uses_internal_credits", false)]
        {
            self.set_flag(http, flag, value).await;
        }
    }

    /// A new end user of `tier` with `grant_cents` of credits, created as admin, logged in: returns the user id
    /// and an access token. Each test gets a ledger nobody else touches.
    pub async fn new_user(&self, http: &reqwest::Client, tier: &str, grant_cents: &str) -> (String, String) {
        let user = self.new_account(http, tier, grant_cents).await;
        (user.id, user.token)
    }

    /// [`Instance::new_user`] with the e-mail address and password, for tests that sign in themselves.
    pub async fn new_account(&self, http: &reqwest::Client, tier: &str, grant_cents: &str) -> Account {
        let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = uuid::Uuid::new_v4().simple().to_string();
        let response = http
            .post(self.directus("/users"))
            .bearer_auth(self.var("DIRECTUS_ADMIN_TOKEN"))
            .json(&json!({"email": email, "password": password, "status": "active", "subscription_tier": tier}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "create user");
        let id = response.json::<Value>().await.unwrap()["data"]["id"].as_str().unwrap().to_owned();
        let response = http
            .post(self.directus("/items/credit_transactions"))
            .bearer_auth(self.var("DIRECTUS_ADMIN_TOKEN"))
            .json(&json!({"user": id, "transaction_type": "grant", "service_type": "e2e", "cost_cents": grant_cents}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "grant credits");
        let login = http
            .post(self.directus("/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let token = login.json::<Value>().await.unwrap()["data"]["access_token"].as_str().unwrap().to_owned();
        Account { id, email, password, token }
    }

    /// Polls the SMTP sink's Maildir (bounded: 15 s) until at least `count` messages to `address` are there,
    /// then returns them as `{to, subject, text}`.
    pub async fn wait_for_mail(&self, address: &str, count: usize) -> Vec<Value> {
        let mut found = Vec::new();
        for _ in 0..150 {
            found = self.mails_to(address).await;
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{count} e-mails to {address} never arrived; found {found:?}");
    }

    /// The e-mails to `address` in the SMTP sink's Maildir now, as `{to, subject, text}`. The sink outlives one
    /// run of the suite (the Redis pass follows the memory pass), so a seeded user's address may already have
    /// mail: a test counts what arrives after it starts.
    pub async fn mails_to(&self, address: &str) -> Vec<Value> {
        let maildir = std::env::var("BYOK_E2E_MAILDIR").expect("BYOK_E2E_MAILDIR: the SMTP sink's Maildir");
        let python = std::env::var("BYOK_E2E_PYTHON").expect("BYOK_E2E_PYTHON: the venv python");
        let output = Command::new(&python)
            .args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/maildir.py"), &maildir])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let all: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        all.into_iter().filter(|m| m["to"].as_str().is_some_and(|to| to.contains(address))).collect()
    }

    /// Polls Directus (bounded) until `collection` has `count` rows matching `query`, then returns them.
    pub async fn wait_for_rows(
        &self,
        http: &reqwest::Client,
        collection: &str,
        query: &[(&str, &str)],
        count: usize,
    ) -> Vec<Value> {
        let mut query = query.to_vec();
        query.push(("limit", "-1"));
        let mut found = 0;
        for _ in 0..300 {
            let rows = self.admin_get(http, collection, &query).await;
            let rows = rows.as_array().cloned().unwrap_or_default();
            if rows.len() >= count {
                return rows;
            }
            found = rows.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{collection} never reached {count} rows for {query:?}: {found} found");
    }

    /// The user's balance as the ledger in Directus says: grants + refunds - deductions.
    pub async fn ledger_balance(&self, http: &reqwest::Client, user: &str) -> f64 {
        let query = [("aggregate[sum]", "cost_cents"), ("groupBy[]", "transaction_type"), ("filter[user][_eq]", user)];
        let groups = self.admin_get(http, "/items/credit_transactions", &query).await;
        groups
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let sum = &g["sum"]["cost_cents"];
                let amount = sum.as_f64().or_else(|| sum.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0);
                if g["transaction_type"] == "deduction" { -amount } else { amount }
            })
            .sum()
    }

    pub async fn flag_id(&self, http: &reqwest::Client, key: &str) -> String {
        let response = http
            .get(self.directus("/items/feature_flags"))
            .query(&[("filter[key][_eq]", key), ("fields", "id")])
            .bearer_auth(self.var("DIRECTUS_ADMIN_TOKEN"))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["data"][0]["id"].to_string()
    }
}

/// The operator token every e2e sidecar runs with (`/v1/flags`).
pub const OPERATOR_TOKEN: &str = "e2e-operator-token-4d5e6f708192a3b4";

/// The vault key every e2e sidecar runs with, so tests can open what it stored.
pub const ENCRYPTION_KEY: &str = "5e1f0c2b7a9d4e3f8c6b1a0d9e8f7c6b5a4d3e2f1c0b9a8d7e6f5c4b3a2d1e0f";

/// The real sidecar binary, configured from the instance, killed on drop.
pub struct Sidecar {
    child: Child,
    pub base: String,
}

impl Sidecar {
    pub async fn start(instance: &Instance, extra: &[(&str, &str)]) -> Sidecar {
        let log_path = format!("{}/sidecar.log", instance.dir);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let mut command = instance.command(&["serve"]); // the Dockerfile's CMD
        command
            .envs(extra.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let sidecar = Sidecar { child: command.spawn().unwrap(), base: format!("http://{}", instance.sidecar_addr) };
        sidecar.wait_for_readyz("ready").await;
        sidecar
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`, as `token` when given: the status, and the JSON body (`null` when there is none).
    pub async fn get(&self, http: &reqwest::Client, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or_default())
    }

    /// Polls `/readyz` until it reports `status` (bounded: 30 s).
    pub async fn wait_for_readyz(&self, status: &str) {
        self.wait_for_readiness(&format!("status {status}"), |body| body["status"] == status).await;
    }

    /// Polls `/readyz` until it says the sidecar serves `part` (flags, callers, ...) from its last known copy.
    pub async fn wait_for_stale(&self, part: &str) {
        self.wait_for_readiness(&format!("stale {part}"), |body| body["stale"][part] == true).await;
    }

    async fn wait_for_readiness(&self, what: &str, done: impl Fn(&Value) -> bool) {
        let http = client();
        for _ in 0..600 {
            if let Ok(response) = http.get(self.url("/readyz")).send().await {
                let body: Value = response.json().await.unwrap_or_default();
                if done(&body) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sidecar /readyz never reported {what} within 30 s");
    }

    /// Saves `key` as the OpenAI key of the user `token` signs in, through the sidecar; it must be accepted.
    pub async fn save_openai_key(&self, http: &reqwest::Client, token: &str, key: &str) {
        let response = http
            .put(self.url("/v1/keys/openai"))
            .bearer_auth(token)
            .json(&json!({"api_key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    pub async fn route(&self, http: &reqwest::Client, token: &str, provider: &str) -> (u16, Value) {
        let response = http
            .post(self.url("/v1/route"))
            .bearer_auth(token)
            .json(&json!({"provider": provider}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}
