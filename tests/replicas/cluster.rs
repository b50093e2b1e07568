//! The several-replicas topology end to end (`scripts/cluster-up.sh`): PostgreSQL, Redis, Directus 12.4.0 on
//! both with our schema, hook and seed, and two sidecar replicas, a and b, running the real binary. The hook
//! posts flag webhooks to a only: b hears of every change through Redis. `scripts/test.sh` starts the cluster
//! with the fake provider's address and sets `BYOK_E2E_CLUSTER` (the cluster's file) and
//! `BYOK_E2E_PROVIDER_ADDR` (where these tests serve the fake provider). The replicas run with
//! `USER_CACHE_TTL_SECS=300`, so a change reaches the other replica through Redis or not for minutes, and with
//! `RATE_LIMIT_FREE_PER_MIN=6`.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use byok_bridge::accounting::Outbox;
use byok_bridge::store::Store;
use serde_json::{Value, json};
use tokio::process::Command;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{GOOD_KEY, mount_expensive_gpt4o, mount_fakes};
use crate::harness::{Instance, serial};

/// A key the provider refuses after 300 ms, so that calls on both replicas are in flight when it does.
const SLOWLY_REVOKED_KEY: &str = "sk-proj-clusterRevokedSlowly000000000000Qq";
const FREE_PER_MIN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replica {
    A,
    B,
}

impl Replica {
    fn name(self) -> &'static str {
        match self {
            Replica::A => "a",
            Replica::B => "b",
        }
    }

    fn alternate(i: usize) -> Replica {
        if i.is_multiple_of(2) { Replica::A } else { Replica::B }
    }
}

struct Cluster {
    instance: Instance,
    http: reqwest::Client,
}

impl Cluster {
    /// The cluster of `BYOK_E2E_CLUSTER`, with the fake provider serving and the default flags set.
    async fn get() -> Cluster {
        let file = std::env::var("BYOK_E2E_CLUSTER")
            .expect("BYOK_E2E_CLUSTER is not set: run the cluster tests through scripts/test.sh");
        start_fake_provider();
        let instance = Instance::from_file(&file, String::new());
        let http = crate::harness::client();
        instance.set_byok_first(&http).await;
        Cluster { instance, http }
    }

    fn url(&self, replica: Replica, path: &str) -> String {
        format!("{}{path}", self.instance.var(&format!("SIDECAR_{}_URL", replica.name().to_uppercase())))
    }

    /// Runs one of the cluster scripts (`cluster-redis.sh`, `cluster-sidecar.sh`) on this cluster.
    async fn script(&self, script: &str, args: &[&str]) {
        let status = Command::new(format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR")))
            .arg(self.instance.var("CLUSTER_DIR"))
            .args(args)
            .status()
            .await
            .unwrap();
        assert!(status.success(), "{script} {args:?} failed");
    }

    async fn directus_started(&self) {
        let status = Command::new(format!("{}/scripts/directus-up.sh", env!("CARGO_MANIFEST_DIR")))
            .args(["--dir", &format!("{}/directus", self.instance.var("CLUSTER_DIR")), "--start-only"])
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "Directus did not start again");
    }

    async fn chat(&self, replica: Replica, token: &str, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
        self.http.post(self.url(replica, "/v1/chat/completions")).bearer_auth(token).json(body).send().await
    }

    async fn route_source(&self, replica: Replica, token: &str) -> String {
        let response = self
            .http
            .post(self.url(replica, "/v1/route"))
            .bearer_auth(token)
            .json(&json!({"provider": "openai"}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["source"].as_str().unwrap_or_else(|| panic!("no decision: {body}")).to_owned()
    }

    /// Polls `replica`'s decision for `token` until it is `source` (bounded: 5 s), returning how long that took.
    async fn until_source(&self, replica: Replica, token: &str, source: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.route_source(replica, token).await == source {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("replica {replica:?} never decided {source}");
    }

    async fn save_key(&self, replica: Replica, token: &str, key: &str) {
        let response = self
            .http
            .put(self.url(replica, "/v1/keys/openai"))
            .bearer_auth(token)
            .json(&json!({"api_key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// A new user's key saved through a is used by b within moments, though b had read the user without a key
    /// and would reuse that for USER_CACHE_TTL_SECS (300 s) but for the notice through Redis.
    async fn a_key_saved_on_a_is_used_by_b(&self) {
        let (_, token) = self.instance.new_user(&self.http, "premium", "100").await;
        assert_eq!(self.route_source(Replica::B, &token).await, "internal");
        self.save_key(Replica::A, &token, GOOD_KEY).await;
        let lag = self.until_source(Replica::B, &token, "byok").await;
        assert!(lag < Duration::from_secs(2), "b used the new key only after {lag:?}");
    }

    async fn readyz(&self, replica: Replica) -> Value {
        self.http.get(self.url(replica, "/readyz")).send().await.unwrap().json().await.unwrap()
    }

    /// Polls until both replicas say Redis is `state` (bounded: 15 s).
    async fn until_redis(&self, state: &str) {
        let started = Instant::now();
        for replica in [Replica::A, Replica::B] {
            while self.readyz(replica).await["redis"] != state {
                assert!(started.elapsed() < Duration::from_secs(15), "{replica:?} never saw Redis {state}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The sum over both replicas of a counter's samples whose labels contain `labels`.
    async fn counter(&self, name: &str, labels: &str) -> f64 {
        let mut total = 0.0;
        for replica in [Replica::A, Replica::B] {
            let text = self.http.get(self.url(replica, "/metrics")).send().await.unwrap().text().await.unwrap();
            total += text
                .lines()
                .filter(|line| line.starts_with(name) && line.contains(labels))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        total
    }

    /// The `request_id`s of the user's deductions in Directus.
    async fn deductions(&self, user: &str) -> Vec<String> {
        let query = [
            ("filter[user][_eq]", user),
            ("filter[transaction_type][_eq]", "deduction"),
            ("fields", "request_id"),
            ("limit", "-1"),
        ];
        let rows = self.instance.admin_get(&self.http, "/items/credit_transactions", &query).await;
        rows.as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap().to_owned()).collect()
    }

    /// Polls until the user has `count` deductions in Directus (bounded: 60 s), then returns them.
    async fn until_deductions(&self, user: &str, count: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let rows = self.deductions(user).await;
            if rows.len() >= count || started.elapsed() > Duration::from_secs(60) {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The fake OpenAI, once for the whole test binary, on the address the replicas were started with. It runs on
/// its own thread and runtime: each test has its own runtime, which ends with the test.
fn start_fake_provider() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let addr = std::env::var("BYOK_E2E_PROVIDER_ADDR").expect("BYOK_E2E_PROVIDER_ADDR is not set");
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = std::net::TcpListener::bind(&addr).unwrap();
                let server = MockServer::builder().listener(listener).start().await;
                mount_fakes(&server).await;
                mount_expensive_gpt4o(&server).await;
                Mock::given(method("POST"))
                    .and(path("/v1/chat/completions"))
                    .and(body_partial_json(json!({"user": JOBS_MARK})))
                    .respond_with(|request: &wiremock::Request| {
                        let body: Value = serde_json::from_slice(&request.body).unwrap();
                        let job = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
                        *job_calls().lock().unwrap().entry(job).or_default() += 1;
                        ResponseTemplate::new(200)
                            .set_body_raw(crate::fakes::CHAT_OK, "application/json")
                            .set_delay(Duration::from_millis(20))
                    })
                    .with_priority(1)
                    .mount(&server)
                    .await;
                Mock::given(method("POST"))
                    .and(path("/v1/chat/completions"))
                    .and(header("authorization", format!("Bearer {SLOWLY_REVOKED_KEY}").as_str()))
                    .respond_with(
                        ResponseTemplate::new(401)
                            .set_body_json(json!({"error": {"message": "Incorrect API key provided",
                                "type": "invalid_request_error", "code": "invalid_api_key"}}))
                            .set_delay(Duration::from_millis(300)),
                    )
                    .with_priority(1)
                    .mount(&server)
                    .await;
                ready.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        started.recv().unwrap();
    });
}

/// Job calls carry this as OpenAI's `user` field, and their job's name as the prompt: the fake counts calls
/// per job.
const JOBS_MARK: &str = "cluster-jobs";

fn job_calls() -> &'static std::sync::Mutex<HashMap<String, usize>> {
    static CALLS: OnceLock<std::sync::Mutex<HashMap<String, usize>>> = OnceLock::new();
    CALLS.get_or_init(Default::default)
}

fn cheap_call() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
}

fn usage_id(response: &reqwest::Response) -> String {
    response.headers()["x-byok-usage-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_flag_flipped_in_directus_changes_the_next_decisions_of_both_replicas() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (_, token) = cluster.instance.new_user(&cluster.http, "premium", "100").await;
    cluster.save_key(Replica::A, &token, GOOD_KEY).await;
    for replica in [Replica::A, Replica::B] {
        assert_eq!(cluster.route_source(replica, &token).await, "byok");
    }

    for (enabled, source) in [(false, "internal"), (true, "byok")] {
        cluster.instance.set_flag(&cluster.http, "byok_enabled", enabled).await;
        // a hears from the hook (an action: it may land just after Directus answers the PATCH), b from a through
        // Redis. Milliseconds (scripts/bench.sh measures the p99); without Redis, b would keep the old flags
        // for FLAG_CACHE_TTL_SECS.
        for replica in [Replica::A, Replica::B] {
            let lag = cluster.until_source(replica, &token, source).await;
            assert!(lag < Duration::from_secs(2), "{replica:?} took {lag:?} (byok_enabled={enabled})");
        }
    }
}

#[tokio::test]
async fn a_key_saved_through_one_replica_is_used_by_the_other_at_once() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    cluster.a_key_saved_on_a_is_used_by_b().await;
}

#[tokio::test]
async fn a_users_rate_limit_holds_across_both_replicas_together() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (_, token) = cluster.instance.new_user(&cluster.http, "free", "100").await;
    let mut statuses = Vec::new();
    for i in 0..2 * FREE_PER_MIN {
        let response = cluster.chat(Replica::alternate(i), &token, &cheap_call()).await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), FREE_PER_MIN, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), FREE_PER_MIN, "{statuses:?}");
}

#[tokio::test]
async fn credit_holds_taken_on_one_replica_count_on_the_other() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (_, token) = cluster.instance.new_user(&cluster.http, "premium", "100").await;
    // Twenty calls at once, half on each replica, each of which may cost 95 cents, on 100 cents.
    let body = json!({"model": "gpt-4o", "max_tokens": 95_000, "messages": [{"role": "user", "content": "Go"}]});
    let calls = (0..20).map(|i| cluster.chat(Replica::alternate(i), &token, &body));
    let statuses: Vec<u16> =
        futures_util::future::join_all(calls).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 402).count(), 19, "{statuses:?}");
}

#[tokio::test]
async fn a_key_incident_seen_by_both_replicas_is_notified_once() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (user, token) = cluster.instance.new_user(&cluster.http, "premium", "100").await;
    cluster.save_key(Replica::A, &token, SLOWLY_REVOKED_KEY).await;
    for replica in [Replica::A, Replica::B] {
        assert_eq!(cluster.route_source(replica, &token).await, "byok");
    }
    let (incidents, notified_label) = ("byok_key_incidents_total", "outcome=\"notified\"");
    let (seen, notified) = (cluster.counter(incidents, "").await, cluster.counter(incidents, notified_label).await);

    // Ten calls at once, five per replica: all use the key, all see it refused, all fall back to credits.
    let body = cheap_call();
    let calls = (0..10).map(|i| cluster.chat(Replica::alternate(i), &token, &body));
    for response in futures_util::future::join_all(calls).await {
        let response = response.unwrap();
        assert_eq!(
            (response.status().as_u16(), response.headers()["x-byok-source"].to_str().unwrap()),
            (200, "internal")
        );
    }
    // Claims are made before a call answers: all ten are counted, one of them as the notified one.
    assert_eq!(cluster.counter(incidents, "").await - seen, 10.0, "incidents seen by both replicas");
    assert_eq!(cluster.counter(incidents, notified_label).await - notified, 1.0);
    let notes =
        cluster.instance.wait_for_rows(&cluster.http, "/notifications", &[("filter[recipient][_eq]", &user)], 1).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
}

/// `calls` calls from four clients at once, spread over `replicas`, returning each call's usage id; every call
/// must be answered.
async fn load(cluster: &Cluster, token: &str, replicas: &[Replica], calls: usize) -> Vec<String> {
    let clients = (0..4).map(|client| async move {
        let mut ids = Vec::new();
        for i in 0..calls / 4 {
            let replica = replicas[(client + i) % replicas.len()];
            let response = cluster.chat(replica, token, &cheap_call()).await.unwrap();
            assert_eq!(response.status(), 200, "{replica:?}: {}", response.text().await.unwrap());
            ids.push(usage_id(&response));
        }
        ids
    });
    futures_util::future::join_all(clients).await.into_iter().flatten().collect()
}

#[tokio::test]
async fn killing_redis_mid_load_loses_no_record_and_the_replicas_recover_when_it_returns() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (user, token) = cluster.instance.new_user(&cluster.http, "premium", "1000").await;
    let both = [Replica::A, Replica::B];

    let mut answered = load(&cluster, &token, &both, 80).await;
    cluster.script("cluster-redis.sh", &["kill"]).await;
    // Both replicas keep answering on their own state.
    answered.extend(load(&cluster, &token, &both, 80).await);
    cluster.until_redis("down").await;
    for replica in both {
        assert_eq!(cluster.readyz(replica).await["status"], "degraded");
    }
    assert_eq!(cluster.counter("byok_redis_up", "").await, 0.0, "both replicas report Redis down");
    answered.extend(load(&cluster, &token, &both, 80).await);
    cluster.script("cluster-redis.sh", &["start"]).await;
    // Directus 12.4.0 itself exits when its Redis stays unreachable for about ten seconds (ioredis gives up);
    // in production a supervisor starts it again, here the test does (a no-op if it is still running).
    cluster.directus_started().await;
    cluster.until_redis("up").await;
    assert_eq!(cluster.counter("byok_redis_up", "").await, 2.0, "both replicas report Redis up");
    answered.extend(load(&cluster, &token, &both, 80).await);

    let stored = cluster.until_deductions(&user, answered.len()).await;
    assert_eq!(stored.len(), answered.len(), "each call stored exactly once");
    assert_eq!(stored.into_iter().collect::<HashSet<_>>(), answered.into_iter().collect::<HashSet<_>>());

    // Shared again.
    cluster.a_key_saved_on_a_is_used_by_b().await;
}

#[tokio::test]
async fn a_replica_killed_mid_load_loses_no_record_once_it_restarts_on_its_store() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (user, token) = cluster.instance.new_user(&cluster.http, "premium", "1000").await;

    // Four clients call b until it dies under them.
    let answered: std::sync::Mutex<HashMap<String, Instant>> = Default::default();
    let clients = (0..4).map(|_| async {
        loop {
            match cluster.chat(Replica::B, &token, &cheap_call()).await {
                Ok(response) if response.status() == 200 => {
                    answered.lock().unwrap().insert(usage_id(&response), Instant::now());
                }
                _ => return,
            }
        }
    });
    let killer = async {
        while answered.lock().unwrap().len() < 300 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Then another 1.5 s of load: the calls answered before it had time to be committed.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.script("cluster-sidecar.sh", &["b", "kill"]).await;
        Instant::now()
    };
    let (_, killed_at) = tokio::join!(futures_util::future::join_all(clients), killer);

    // What b had committed when it died: delivered to Directus, or in its store.
    let in_directus: HashSet<String> = cluster.deductions(&user).await.into_iter().collect();
    let in_store: HashSet<String> = {
        let file = format!("{}/byok-bridge.db", cluster.instance.var("SIDECAR_B_DATA_DIR"));
        let store = Store::open(std::path::Path::new(&file)).expect("b's store opens once b is dead");
        let outbox = Outbox::open(std::sync::Arc::new(store)).unwrap();
        outbox.all_records().unwrap().into_iter().map(|r| r.request_id.to_string()).collect()
    };
    let committed: HashSet<String> = in_directus.union(&in_store).cloned().collect();

    cluster.script("cluster-sidecar.sh", &["b", "start"]).await;
    let stored = cluster.until_deductions(&user, committed.len()).await;
    assert_eq!(stored.len(), committed.len(), "each record stored exactly once");
    assert_eq!(stored.into_iter().collect::<HashSet<_>>(), committed);
    // Every call answered before the kill is among them, but for the last milliseconds' (the documented
    // window between answering a call and its batch's commit).
    let answered = answered.into_inner().unwrap();
    let settled: Vec<_> = answered
        .iter()
        .filter(|(_, at)| killed_at.duration_since(**at) > Duration::from_secs(1))
        .map(|(id, _)| id)
        .collect();
    assert!(settled.len() >= 300, "only {} calls answered a second before the kill", settled.len());
    let missing: Vec<_> = settled.iter().filter(|id| !committed.contains(**id)).collect();
    assert!(missing.is_empty(), "answered but lost: {missing:?}");
}

#[tokio::test]
async fn a_thousand_jobs_over_both_replicas_each_finish_once_though_one_replica_is_killed_mid_run() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let (user, token) = cluster.instance.new_user(&cluster.http, "premium", "100").await;
    cluster.save_key(Replica::A, &token, GOOD_KEY).await;
    let (cluster_ref, token_ref, user_ref) = (&cluster, &token, &user);
    let submit = |n: usize| {
        let (cluster, token, user) = (cluster_ref, token_ref, user_ref);
        async move {
            let body = json!({"api": "chat.completions", "request": {"model": "gpt-4o-mini", "user": JOBS_MARK,
                "messages": [{"role": "user", "content": format!("{user}-{n}")}]}});
            let response = cluster
                .http
                .post(cluster.url(Replica::alternate(n), "/v1/jobs"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }
    };
    let mut ids = Vec::new();
    for chunk in (0..1_000).collect::<Vec<_>>().chunks(50) {
        ids.extend(futures_util::future::join_all(chunk.iter().map(|n| submit(*n))).await);
    }
    let calls_for_user = || job_calls().lock().unwrap().iter().filter(|(k, _)| k.starts_with(&user)).count();
    while calls_for_user() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // b dies mid-run, holding jobs: a takes them over when their leases lapse.
    cluster.script("cluster-sidecar.sh", &["b", "kill"]).await;

    let started = Instant::now();
    let mut usage_ids = HashSet::new();
    for id in &ids {
        loop {
            let job: Value = cluster
                .http
                .get(cluster.url(Replica::A, &format!("/v1/jobs/{id}")))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if job["status"] == "succeeded" {
                assert!(usage_ids.insert(job["usage_id"].as_str().unwrap().to_owned()), "one result per job");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "job {id} never finished: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.script("cluster-sidecar.sh", &["b", "start"]).await;

    let calls: HashMap<String, usize> = job_calls()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(&user))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(calls.len(), 1_000, "every job reached the provider");
    let again = calls.values().filter(|n| **n > 1).count();
    // Only calls in flight on b when it died ran again: at most the per-user cap (4) of them, never more.
    assert!(again <= 4 && calls.values().all(|n| *n <= 2), "{again} jobs called twice: {calls:?}");
    let rows = cluster
        .instance
        .wait_for_rows(&cluster.http, "/items/api_key_usage", &[("filter[user][_eq]", &user)], 1_000)
        .await;
    let recorded: HashSet<&str> = rows.iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert!(usage_ids.iter().all(|u| recorded.contains(u.as_str())), "every result is accounted in Directus");
    assert!(rows.len() <= 1_000 + again, "{} usage rows for 1,000 jobs", rows.len());
}

#[tokio::test]
async fn the_healthcheck_command_says_whether_the_replica_is_ready() {
    let _serial = serial().await;
    let cluster = Cluster::get().await;
    let env_file = std::fs::read_to_string(cluster.instance.var("SIDECAR_A_ENV")).unwrap();
    let env: Vec<(String, String)> = env_file
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let healthcheck = |bind: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_byok-bridge"));
        command.arg("healthcheck").env_clear().envs(env.iter().cloned());
        if let Some(bind) = bind {
            command.env("BIND_ADDR", bind);
        }
        command.output()
    };
    assert!(healthcheck(None).await.unwrap().status.success());
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let refused = healthcheck(Some(&nobody)).await.unwrap();
    assert_eq!(refused.status.code(), Some(1));
}
