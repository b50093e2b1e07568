//! Durable jobs against the real Directus 12.4.0, fake providers, and (with `BYOK_E2E_REDIS_URL`) a real Redis.
//! Most tests run the application in this process, to give it a clock the test moves (hours of retries in
//! moments); the restart test runs the real binary and kills it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use byok_bridge::clock::Clock;
use byok_bridge::config::Settings;
use byok_bridge::startup::Application;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::fakes::{CHAT_OK, GOOD_KEY, INTERNAL_ANTHROPIC, INTERNAL_OPENAI, fake_providers, gateway_sidecar};
use crate::harness::{ENCRYPTION_KEY, Instance, serial};

const QUOTA_KEY: &str = "sk-proj-FAKE-e2e-quota-key-not-a-real-key-0000";

/// The application in this process, on the real Directus, with `clock`.
struct InProcess {
    base: String,
    http: reqwest::Client,
}

impl InProcess {
    async fn start(instance: &Instance, providers: &MockServer, clock: &Clock, extra: &[(&str, &str)]) -> InProcess {
        let data_dir = std::env::temp_dir().join(format!("byok-e2e-jobs-{}", uuid::Uuid::new_v4()));
        let (openai, anthropic) = (format!("{}/v1", providers.uri()), providers.uri());
        let mut vars: HashMap<String, String> = [
            ("BIND_ADDR", "127.0.0.1:0"),
            ("DIRECTUS_URL", instance.var("DIRECTUS_URL")),
            ("DIRECTUS_TOKEN", instance.var("DIRECTUS_TOKEN")),
            ("DIRECTUS_SECRET", instance.var("DIRECTUS_SECRET")),
            ("WEBHOOK_SECRET", instance.var("WEBHOOK_SECRET")),
            ("ENCRYPTION_KEY", ENCRYPTION_KEY),
            ("OPENAI_BASE_URL", &openai),
            ("ANTHROPIC_BASE_URL", &anthropic),
            ("INTERNAL_OPENAI_API_KEY", INTERNAL_OPENAI),
            ("INTERNAL_ANTHROPIC_API_KEY", INTERNAL_ANTHROPIC),
            ("DATA_DIR", &data_dir.display().to_string()),
            ("JOB_CALLBACKS_ALLOW_PRIVATE", "true"),
            ("CIRCUIT_COOL_DOWN_SECS", "1"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Ok(url) = std::env::var("BYOK_E2E_REDIS_URL") {
            vars.insert("REDIS_URL".into(), url);
        }
        let mut settings = Settings::from_lookup(|k| vars.get(k).cloned()).expect("valid settings");
        settings.clock = clock.clone();
        let app = Application::build(settings).await.expect("the application starts");
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        let started = InProcess { base, http: crate::harness::client() };
        for _ in 0..200 {
            let ready: Value = started.http.get(started.url("/readyz")).send().await.unwrap().json().await.unwrap();
            if ready["status"] == "ready" {
                return started;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the in-process application never became ready");
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Submitting, reading and waiting for jobs, on any sidecar.
struct Client<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    token: &'a str,
}

impl Client<'_> {
    async fn submit(&self, body: &Value, idempotency_key: Option<&str>) -> Value {
        let mut request = self.http.post(format!("{}/v1/jobs", self.base)).bearer_auth(self.token).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 202);
        response.json().await.unwrap()
    }

    async fn job(&self, id: &str) -> Value {
        let response =
            self.http.get(format!("{}/v1/jobs/{id}", self.base)).bearer_auth(self.token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls until `done`; the bounded wait (30 s) is the assertion.
    async fn wait(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1_500 {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {id} never got {what}: {}", self.job(id).await);
    }

    async fn put_key(&self, key: &str) {
        let response = self
            .http
            .put(format!("{}/v1/keys/openai", self.base))
            .bearer_auth(self.token)
            .json(&json!({"api_key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

fn chat_job(content: &str) -> Value {
    json!({"api": "chat.completions", "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}})
}

fn millis(at: &Value) -> i64 {
    let at = time::OffsetDateTime::parse(at.as_str().unwrap(), &time::format_description::well_known::Rfc3339);
    (at.unwrap().unix_timestamp_nanos() / 1_000_000) as i64
}

fn manual_clock() -> Clock {
    Clock::manual(time::OffsetDateTime::now_utc().unix_timestamp() * 1000)
}

#[tokio::test]
async fn a_job_survives_a_ten_minute_provider_outage_and_is_accounted_once_in_directus() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let down = Arc::new(AtomicBool::new(true));
    let outage = Arc::clone(&down);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |_: &Request| {
            if outage.load(Ordering::SeqCst) {
                ResponseTemplate::new(503).set_body_json(json!({"error": {"message": "overloaded"}}))
            } else {
                ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json")
            }
        })
        .with_priority(1)
        .mount(&providers)
        .await;
    let clock = manual_clock();
    let app = InProcess::start(&instance, &providers, &clock, &[]).await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;
    let client = Client { http: &http, base: &app.base, token: &token };
    client.put_key(GOOD_KEY).await;
    let id = client.submit(&chat_job("Hello"), None).await["id"].as_str().unwrap().to_owned();

    let started = clock.now();
    let mut attempts = 0;
    while down.load(Ordering::SeqCst) {
        let job = client.wait(&id, "another attempt", |j| j["attempts"].as_u64() > Some(attempts)).await;
        assert_eq!((job["status"].as_str(), job["error"]["code"].as_str()), (Some("queued"), Some("ai_unavailable")));
        attempts = job["attempts"].as_u64().unwrap();
        let next = millis(&job["next_attempt_at"]);
        if next - started >= 10 * 60_000 {
            down.store(false, Ordering::SeqCst);
        }
        clock.advance(Duration::from_millis((next - clock.now()).max(0) as u64));
    }
    assert!(attempts >= 6, "{attempts} attempts in ten minutes");
    // The circuit opened in the outage and lets a probe through after a (real) second.
    let job = loop {
        let job = client.wait(&id, "another attempt", |j| j["attempts"].as_u64() > Some(attempts)).await;
        attempts = job["attempts"].as_u64().unwrap();
        if job["status"] == "succeeded" {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        clock.advance(Duration::from_millis((millis(&job["next_attempt_at"]) - clock.now()).max(0) as u64));
    };
    assert_eq!(job["result"]["choices"][0]["message"]["content"], "Hi!");
    let rows = instance.wait_for_rows(&http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 1).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["request_id"], job["usage_id"]);
}

/// OpenAI's answer for `key` while its account has no quota: every time, or the first `times` times.
fn out_of_quota(key: &str, times: Option<u64>) -> Mock {
    let quota = json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}});
    let mock = Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {key}").as_str()))
        .respond_with(ResponseTemplate::new(429).set_body_json(quota))
        .with_priority(1);
    match times {
        Some(times) => mock.up_to_n_times(times),
        None => mock,
    }
}

#[tokio::test]
async fn a_quota_exhausted_key_pauses_the_users_jobs_notifies_once_and_saving_a_good_key_resumes_them() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    out_of_quota(QUOTA_KEY, None).mount(&providers).await;
    let app = InProcess::start(&instance, &providers, &Clock::system(), &[]).await;
    // No credits: nothing to fall back to, so the jobs wait for the key.
    let (user, token) = instance.new_user(&http, "premium", "0").await;
    let client = Client { http: &http, base: &app.base, token: &token };
    client.put_key(QUOTA_KEY).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(client.submit(&chat_job(&format!("job {n}")), None).await["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let job = client.wait(id, "paused", |j| j["status"] == "paused").await;
        assert_eq!(job["error"]["code"], "provider_quota_exhausted", "{job}");
    }
    let notes = instance.wait_for_rows(&http, "/notifications", &[("filter[recipient][_eq]", &user)], 1).await;
    assert!(notes[0]["subject"].as_str().unwrap().contains("out of quota"), "{notes:?}");

    client.put_key(GOOD_KEY).await;
    for id in &ids {
        let job = client.wait(id, "success", |j| j["status"] == "succeeded").await;
        assert_eq!(job["source"], "byok");
    }
    instance.wait_for_rows(&http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 3).await;
    let notes = instance.admin_get(&http, "/notifications", &[("filter[recipient][_eq]", &user)]).await;
    assert_eq!(notes.as_array().unwrap().len(), 1, "notified once: {notes}");
}

/// A user who tops up their provider account is not stuck until they press "verify": the key marked out of
/// quota is checked again in the background with a one-token call on it (listing models would pass without
/// quota), found paying it is `active` again, and the job paused on it runs, with nobody doing anything.
#[tokio::test]
async fn a_key_out_of_quota_is_checked_again_and_its_paused_job_runs_once_the_account_pays() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let bearer = format!("Bearer {QUOTA_KEY}");
    // The job's call and the first re-check find no quota; then the account has been topped up.
    out_of_quota(QUOTA_KEY, Some(2)).mount(&providers).await;
    let app =
        InProcess::start(&instance, &providers, &Clock::system(), &[("KEY_QUOTA_RECHECK_INTERVAL_SECS", "1")]).await;
    let (_, token) = instance.new_user(&http, "premium", "0").await;
    let client = Client { http: &http, base: &app.base, token: &token };
    client.put_key(QUOTA_KEY).await;
    let id = client.submit(&chat_job("after the top-up"), None).await["id"].as_str().unwrap().to_owned();
    client.wait(&id, "paused", |j| j["status"] == "paused").await;

    let job = client.wait(&id, "success", |j| j["status"] == "succeeded").await;
    assert_eq!(job["source"], "byok");
    let keys: Value =
        http.get(format!("{}/v1/keys", app.base)).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["keys"][0]["status"], "active", "{keys}");
    let probes: Vec<Value> = providers
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.url.path() == "/v1/chat/completions" && r.headers.get("authorization").unwrap() == bearer.as_str()
        })
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .filter(|body: &Value| body["max_tokens"] == 1)
        .collect();
    assert!(probes.len() >= 2, "one probe found no quota, the next found it: {probes:?}");
    assert!(probes.iter().all(|p| p["model"] == "gpt-4o-mini"), "{probes:?}");
}

#[tokio::test]
async fn callbacks_verify_with_the_standard_webhooks_library_and_a_job_failing_for_good_notifies_its_user() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"model": "gpt-nope"})))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"message": "The model `gpt-nope` does not exist", "type": "invalid_request_error", "code": "model_not_found"}})))
        .with_priority(1)
        .mount(&providers)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).mount(&receiver).await;
    let app = InProcess::start(&instance, &providers, &Clock::system(), &[]).await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;
    let client = Client { http: &http, base: &app.base, token: &token };
    client.put_key(GOOD_KEY).await;

    let mut body = chat_job("Summarize this");
    body["callback_url"] = json!(format!("{}/hooks/jobs", receiver.uri()));
    body["metadata"] = json!({"document": "doc-17"});
    let submitted = client.submit(&body, Some("doc-17-summary")).await;
    let again = client.submit(&body, Some("doc-17-summary")).await;
    assert_eq!(again["id"], submitted["id"], "the same Idempotency-Key makes no second job");
    let id = submitted["id"].as_str().unwrap();
    client.wait(id, "a delivered callback", |j| j["callback"]["state"] == "delivered").await;
    let delivery = &receiver.received_requests().await.unwrap()[0];
    let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|name| (name, delivery.headers.get(name).unwrap().to_str().unwrap()))
        .collect();
    let verify = |payload: &[u8]| {
        let dir = std::env::temp_dir().join(format!("byok-callback-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("payload"), payload).unwrap();
        std::fs::write(dir.join("headers"), serde_json::to_vec(&headers).unwrap()).unwrap();
        let python = std::env::var("BYOK_E2E_PYTHON").expect("BYOK_E2E_PYTHON: the venv python");
        std::process::Command::new(python)
            .args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/verify_webhook.py")])
            .arg(submitted["callback_secret"].as_str().unwrap())
            .arg(dir.join("payload"))
            .arg(dir.join("headers"))
            .output()
            .unwrap()
    };
    let verified = verify(&delivery.body);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let payload: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!((payload["type"].as_str(), payload["data"]["id"].as_str()), (Some("job.succeeded"), Some(id)));
    assert_eq!(payload["data"]["metadata"]["document"], "doc-17");
    let mut tampered = delivery.body.clone();
    tampered[10] ^= 1;
    assert!(!verify(&tampered).status.success(), "a changed body does not verify");

    let mut doomed = chat_job("Hello");
    doomed["request"]["model"] = json!("gpt-nope");
    doomed["notify_on_failure"] = json!(true);
    let id = client.submit(&doomed, None).await["id"].as_str().unwrap().to_owned();
    let job = client.wait(&id, "failure", |j| j["status"] == "failed").await;
    assert_eq!((job["error"]["code"].as_str(), job["attempts"].as_u64()), (Some("provider_refused_request"), Some(1)));
    let notes = instance.wait_for_rows(&http, "/notifications", &[("filter[recipient][_eq]", &user)], 1).await;
    assert_eq!(notes[0]["subject"], "A background AI request failed");
    assert!(notes[0]["message"].as_str().unwrap().contains(&id));
}

#[tokio::test]
async fn one_users_thousand_queued_jobs_do_not_delay_another_users_job() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    let order: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&order);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |request: &Request| {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            let content = body["messages"][0]["content"].as_str().unwrap().to_owned();
            // One busy job takes 30 ms: with four at a time, a thousand take seven seconds or so.
            let delay = if content.starts_with("busy") { 30 } else { 0 };
            seen.lock().unwrap().push(content);
            ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json").set_delay(Duration::from_millis(delay))
        })
        .with_priority(1)
        .mount(&providers)
        .await;
    // The own-key rate limit (600 a minute by default) would stretch the backlog's drain past the wait below;
    // what is measured here is the workers' fairness, so it is set out of the way.
    let settings = [("JOB_PER_USER_CONCURRENCY", "4"), ("RATE_LIMIT_BYOK_PREMIUM_PER_MIN", "100000")];
    let app = InProcess::start(&instance, &providers, &Clock::system(), &settings).await;
    let (_, busy_token) = instance.new_user(&http, "premium", "100").await;
    let (_, other_token) = instance.new_user(&http, "premium", "100").await;
    let busy = Client { http: &http, base: &app.base, token: &busy_token };
    let other = Client { http: &http, base: &app.base, token: &other_token };
    busy.put_key(GOOD_KEY).await;
    other.put_key(GOOD_KEY).await;
    // The other user's profile is read from Directus now, not while the backlog runs: what is measured below
    // is the workers' fairness, not a Directus read (during which busy jobs, faster than that read, go on).
    let route =
        http.post(format!("{}/v1/route", app.base)).bearer_auth(&other_token).json(&json!({"provider": "openai"}));
    assert_eq!(route.send().await.unwrap().status(), 200);
    // Submitted twenty at a time, so the backlog builds however busy the machine: one at a time, the submits
    // were once slower than the workers on a loaded machine, and the backlog was gone before the other job came.
    let backlog: Vec<Value> = (0..1_000).map(|n| chat_job(&format!("busy {n}"))).collect();
    let mut last = Vec::new();
    for jobs in backlog.chunks(20) {
        let submitted = futures_util::future::join_all(jobs.iter().map(|job| busy.submit(job, None))).await;
        last = submitted.iter().map(|job| job["id"].as_str().unwrap().to_owned()).collect();
    }
    let before = order.lock().unwrap().len();
    let id = other.submit(&chat_job("other"), None).await["id"].as_str().unwrap().to_owned();
    other.wait(&id, "success", |j| j["status"] == "succeeded").await;
    let position = order.lock().unwrap().iter().position(|c| c == "other").unwrap();
    // The busy jobs already running (four at a time) and those the workers take before the submit lands go on;
    // the backlog waits.
    assert!(position <= before + 12, "the other user's job went ahead of the backlog: {position} after {before}");
    assert!(position < 700, "the backlog was still there: the other job was call {position} of 1,001");
    // The backlog drains (so no job is left for the next test's sidecar).
    for id in &last {
        busy.wait(id, "the backlog's end", |j| j["status"] == "succeeded").await;
    }
}

#[tokio::test]
async fn a_sidecar_killed_mid_queue_loses_no_job_when_it_starts_again() {
    let _serial = serial().await;
    let instance = Instance::from_env();
    let http = crate::harness::client();
    instance.set_byok_first(&http).await;
    let providers = fake_providers().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(CHAT_OK, "application/json").set_delay(Duration::from_millis(150)),
        )
        .with_priority(1)
        .mount(&providers)
        .await;
    let workers = [("JOB_WORKERS", "2")];
    let sidecar = gateway_sidecar(&instance, &providers, &workers).await;
    let (user, token) = instance.new_user(&http, "premium", "100").await;
    let client = Client { http: &http, base: &sidecar.base, token: &token };
    client.put_key(GOOD_KEY).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(client.submit(&chat_job(&format!("job {n}")), None).await["id"].as_str().unwrap().to_owned());
    }
    client.wait(&ids[2], "a few done", |j| j["status"] == "succeeded").await;
    sidecar.stop().await;

    let sidecar = gateway_sidecar(&instance, &providers, &workers).await;
    let client = Client { http: &http, base: &sidecar.base, token: &token };
    let mut usage_ids = Vec::new();
    for id in &ids {
        let job = client.wait(id, "success after the restart", |j| j["status"] == "succeeded").await;
        usage_ids.push(job["usage_id"].as_str().unwrap().to_owned());
    }
    let rows = instance.wait_for_rows(&http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 20).await;
    let recorded: Vec<&str> = rows.iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert!(usage_ids.iter().all(|u| recorded.contains(&u.as_str())), "every job's call is accounted");
    // A call in flight at the kill may have reached the provider: it ran again, at most once per worker.
    assert!(rows.len() <= 20 + 2, "{} usage rows for 20 jobs", rows.len());
    sidecar.stop().await;
}
