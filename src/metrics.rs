//! Prometheus metrics: every name and label set is defined here, once, with its help text. Code elsewhere
//! calls the small functions below; `/metrics` renders the registry (see [`crate::http::routes::metrics`]).
//!
//! Labels carry only closed sets (routes, providers, sources, error codes, reasons): never a user id, a model
//! name a client chose, or anything secret.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::budget::{Period, Spend};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::Source;

const HTTP_REQUESTS: &str = "byok_http_requests_total";
const HTTP_DURATION: &str = "byok_http_request_duration_seconds";
const GATEWAY_CALLS: &str = "byok_gateway_calls_total";
const ROUTE_DECISIONS: &str = "byok_route_decisions_total";
const UPSTREAM_DURATION: &str = "byok_upstream_duration_seconds";
const UPSTREAM_RETRIES: &str = "byok_upstream_retries_total";
const FALLBACKS: &str = "byok_fallbacks_total";
const CIRCUIT_OPEN: &str = "byok_circuit_open";
const CIRCUIT_OPENINGS: &str = "byok_circuit_openings_total";
const RATE_LIMITED: &str = "byok_rate_limit_refusals_total";
const FLAG_RELOAD_DURATION: &str = "byok_flag_reload_duration_seconds";
const FLAGS_AGE: &str = "byok_flags_age_seconds";
const WEBHOOK_LAG: &str = "byok_webhook_lag_seconds";
const OUTBOX_WAITING: &str = "byok_outbox_waiting_records";
const OUTBOX_OLDEST: &str = "byok_outbox_oldest_record_age_seconds";
const FLUSHER_DELIVERED: &str = "byok_flusher_delivered_total";
const FLUSHER_REJECTED: &str = "byok_flusher_rejected_total";
const FLUSHER_LAG: &str = "byok_flusher_lag_seconds";
const HOLDS_OPEN: &str = "byok_credit_holds_open";
const STALE_ANSWERS: &str = "byok_stale_answers_total";
const REDIS_UP: &str = "byok_redis_up";
const KEY_INCIDENTS: &str = "byok_key_incidents_total";
const JOBS: &str = "byok_jobs";
const JOB_ATTEMPTS: &str = "byok_job_attempts_total";
const JOB_CALLBACKS: &str = "byok_job_callbacks_total";
const JOB_FAILURE_NOTICES: &str = "byok_job_failure_notices_total";
const PAYMENT_EVENTS: &str = "byok_payment_events_total";
const SPENDING_ALERTS: &str = "byok_spending_alerts_total";
const PLATFORM_SPEND: &str = "byok_platform_spend_today_cents";
const PLATFORM_BUDGET: &str = "byok_platform_daily_budget_cents";
const PLATFORM_REFUSALS: &str = "byok_platform_budget_refusals_total";
const PLATFORM_ALERTS: &str = "byok_platform_budget_alerts_total";
const CALLS_DROPPED: &str = "byok_call_log_dropped_total";

/// Latency buckets from 0.5 ms to 10 min: sidecar overheads, provider answers, and delivery lag alike.
const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0];

/// The process-wide registry, installed on first use (tests start many apps in one process).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (only possible in tests) keeps this one's output empty.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        // Histogram samples pile up until they are folded into their buckets: without this, at every scrape
        // only (tens of MB an hour at a few thousand requests per second when nobody scrapes).
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    upkeep.run_upkeep();
                }
            })
            .expect("a thread can be started at startup");
        handle
    })
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "Requests answered, by route template, status and error code (\"ok\" for 2xx).");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to the response head, by route template.");
    describe_counter!(ROUTE_DECISIONS, "/v1/route answers that named a source, by provider and source.");
    describe_counter!(GATEWAY_CALLS, "LLM gateway calls by provider, paying source and outcome code.");
    describe_histogram!(UPSTREAM_DURATION, Unit::Seconds, "Provider response time to headers, per attempt.");
    describe_counter!(UPSTREAM_RETRIES, "Provider calls tried again, by provider and reason.");
    describe_counter!(
        FALLBACKS,
        "Calls moved on: to the next model of a chain (reason \"outage\", \"platform_key_rate_limited\"), or from \
         a rate-limited own key to credits (\"own_key_rate_limited\"), by the provider left and the one tried."
    );
    describe_gauge!(
        CIRCUIT_OPEN,
        "1 while the platform key's circuit for a provider is open (calls fail fast), else 0."
    );
    describe_counter!(CIRCUIT_OPENINGS, "Times a circuit opened, by provider and key (platform, or a user's own).");
    describe_counter!(RATE_LIMITED, "Requests refused by a per-user limit, by limit.");
    describe_histogram!(FLAG_RELOAD_DURATION, Unit::Seconds, "Time to load the feature flags from Directus.");
    describe_gauge!(FLAGS_AGE, Unit::Seconds, "How long ago the flags in force were loaded.");
    describe_histogram!(WEBHOOK_LAG, Unit::Seconds, "From a flag webhook's timestamp to its arrival.");
    describe_gauge!(OUTBOX_WAITING, "Usage records waiting for Directus.");
    describe_gauge!(OUTBOX_OLDEST, Unit::Seconds, "How long the oldest waiting usage record has waited.");
    describe_counter!(FLUSHER_DELIVERED, "Usage records stored in Directus.");
    describe_counter!(FLUSHER_REJECTED, "Usage records Directus refused for good (kept in the outbox).");
    describe_histogram!(FLUSHER_LAG, Unit::Seconds, "From the end of a call to its record being stored.");
    describe_gauge!(HOLDS_OPEN, "Credit holds of internal-credit calls in flight.");
    describe_counter!(STALE_ANSWERS, "Answers that rested on last known data while Directus was unreachable.");
    describe_counter!(
        KEY_INCIDENTS,
        "Key failures seen, by outcome: notified (the user is told), already_notified (once per incident)."
    );
    describe_gauge!(JOBS, "Durable jobs by status (queued, running, paused, succeeded, failed, cancelled).");
    describe_counter!(
        JOB_ATTEMPTS,
        "Job attempts by outcome: succeeded, retry (rate limit, outage), paused (the user's key), failed."
    );
    describe_counter!(JOB_CALLBACKS, "Job completion callbacks by outcome: delivered, retry, failed.");
    describe_counter!(
        JOB_FAILURE_NOTICES,
        "Failed-job notices by outcome: sent, throttled (the user was told within the hour)."
    );
    describe_gauge!(PLATFORM_SPEND, "Spent today (UTC) on the platform's keys, as Directus last reported, in cents.");
    describe_gauge!(
        PLATFORM_BUDGET,
        "PLATFORM_DAILY_BUDGET_CENTS (provider all), PLATFORM_DAILY_BUDGET_CENTS_<PROVIDER>."
    );
    describe_counter!(PLATFORM_REFUSALS, "Credit calls refused because the platform's daily budget was spent.");
    describe_counter!(PLATFORM_ALERTS, "Days the admins were told the platform's budget reached a percent (80, 100).");
    describe_counter!(
        SPENDING_ALERTS,
        "Spending notices sent: caps by period (daily, monthly), spend (credits, own_keys) and threshold percent; \
         low_balance (percent 0)."
    );
    describe_counter!(
        PAYMENT_EVENTS,
        "Stripe events by outcome: granted, refunded, duplicate, ignored, unknown_user, wrong_currency, \
         unknown_payment, failed (answered 503, Stripe retries)."
    );
    describe_counter!(CALLS_DROPPED, "Entries of /v1/calls not kept: the queue was full or the backend failed.");
    describe_gauge!(REDIS_UP, "1 while Redis (REDIS_URL) answers, 0 while replicas run on their own state.");
}

/// A route's request counters and its duration histogram, by status and code.
type RequestHandles = HashMap<(u16, &'static str), (Counter, Histogram)>;

thread_local! {
    /// This thread's handles of the metrics every call records, by label values (closed sets, so these stay
    /// small). Registering a labelled metric builds its key (labels copied into owned strings) and looks it up
    /// in the registry each time, 2% of the sidecar's CPU at 32 connections; a handle is an `Arc`. The
    /// recorder forgets no metric (no idle timeout), so a kept handle is the one `/metrics` renders.
    static REQUESTS: RefCell<HashMap<Box<str>, RequestHandles>> = RefCell::default();
    static CALLS: RefCell<HashMap<(&'static str, &'static str, &'static str), Counter>> = RefCell::default();
    static ATTEMPTS: RefCell<HashMap<(&'static str, &'static str), Histogram>> = RefCell::default();
    static DELIVERIES: (Counter, Histogram) = {
        handle();
        (counter!(FLUSHER_DELIVERED), histogram!(FLUSHER_LAG))
    };
}

/// The handle for `labels` in `handles`, registered the first time (after the recorder is installed).
fn kept<K: Eq + std::hash::Hash, H: Clone>(handles: &mut HashMap<K, H>, labels: K, register: impl FnOnce() -> H) -> H {
    handles
        .entry(labels)
        .or_insert_with(|| {
            handle();
            register()
        })
        .clone()
}

/// A handle from `cache`, registered once per thread and label set.
fn cached<K: Eq + std::hash::Hash, H: Clone>(
    cache: &'static std::thread::LocalKey<RefCell<HashMap<K, H>>>,
    labels: K,
    register: impl FnOnce() -> H,
) -> H {
    cache.with_borrow_mut(|handles| kept(handles, labels, register))
}

pub fn http_request(route: &str, status: u16, code: &'static str, elapsed: Duration) {
    let (requests, duration) = REQUESTS.with_borrow_mut(|routes| {
        // Looked up by `&str` first: the route is copied only the first time this thread sees it.
        if !routes.contains_key(route) {
            routes.insert(route.into(), HashMap::new());
        }
        let by_outcome = routes.get_mut(route).expect("inserted above");
        kept(by_outcome, (status, code), || {
            let route = route.to_owned();
            (
                counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string(), "code" => code),
                histogram!(HTTP_DURATION, "route" => route),
            )
        })
    });
    requests.increment(1);
    duration.record(elapsed.as_secs_f64());
}

pub fn route_decision(provider: Provider, source: Source) {
    counter!(ROUTE_DECISIONS, "provider" => provider.as_str(), "source" => source.as_str()).increment(1);
}

pub fn gateway_call(provider: Provider, source: &'static str, code: &'static str) {
    let provider = provider.as_str();
    cached(
        &CALLS,
        (provider, source, code),
        || counter!(GATEWAY_CALLS, "provider" => provider, "source" => source, "code" => code),
    )
    .increment(1);
}

pub fn upstream_attempt(provider: Provider, outcome: &'static str, elapsed: Duration) {
    let provider = provider.as_str();
    cached(
        &ATTEMPTS,
        (provider, outcome),
        || histogram!(UPSTREAM_DURATION, "provider" => provider, "outcome" => outcome),
    )
    .record(elapsed.as_secs_f64());
}

pub fn upstream_retry(provider: Provider, reason: &'static str) {
    counter!(UPSTREAM_RETRIES, "provider" => provider.as_str(), "reason" => reason).increment(1);
}

pub fn fallback(from: Provider, to: Provider, reason: &'static str) {
    counter!(FALLBACKS, "from" => from.as_str(), "to" => to.as_str(), "reason" => reason).increment(1);
}

pub fn circuit_state(provider: Provider, open: bool) {
    gauge!(CIRCUIT_OPEN, "provider" => provider.as_str()).set(f64::from(u8::from(open)));
}

/// `key`: `platform`, or `user` for a user's own key (never which user).
pub fn circuit_opened(provider: Provider, key: &'static str) {
    counter!(CIRCUIT_OPENINGS, "provider" => provider.as_str(), "key" => key).increment(1);
}

pub fn rate_limited(limit: &'static str) {
    counter!(RATE_LIMITED, "limit" => limit).increment(1);
}

pub fn flag_reload(elapsed: Duration) {
    histogram!(FLAG_RELOAD_DURATION).record(elapsed.as_secs_f64());
}

pub fn flags_age(age: Duration) {
    gauge!(FLAGS_AGE).set(age.as_secs_f64());
}

pub fn webhook_lag(lag: Duration) {
    histogram!(WEBHOOK_LAG).record(lag.as_secs_f64());
}

pub fn outbox(waiting: usize, oldest: Option<Duration>) {
    gauge!(OUTBOX_WAITING).set(waiting as f64);
    gauge!(OUTBOX_OLDEST).set(oldest.map_or(0.0, |age| age.as_secs_f64()));
}

pub fn delivered(lag: Duration) {
    DELIVERIES.with(|(delivered, lags)| {
        delivered.increment(1);
        lags.record(lag.as_secs_f64());
    });
}

pub fn rejected() {
    counter!(FLUSHER_REJECTED).increment(1);
}

pub fn holds_open(open: usize) {
    gauge!(HOLDS_OPEN).set(open as f64);
}

pub fn stale_answer(what: &'static str) {
    counter!(STALE_ANSWERS, "what" => what).increment(1);
}

pub fn key_incident(outcome: &'static str) {
    counter!(KEY_INCIDENTS, "outcome" => outcome).increment(1);
}

pub fn redis_up(up: bool) {
    gauge!(REDIS_UP).set(f64::from(u8::from(up)));
}

pub fn jobs(status: crate::domain::jobs::JobStatus, count: u64) {
    gauge!(JOBS, "status" => status.as_str()).set(count as f64);
}

pub fn job_attempt(outcome: &'static str) {
    counter!(JOB_ATTEMPTS, "outcome" => outcome).increment(1);
}

pub fn job_callback(outcome: &'static str) {
    counter!(JOB_CALLBACKS, "outcome" => outcome).increment(1);
}

pub fn job_failure_notice(outcome: &'static str) {
    counter!(JOB_FAILURE_NOTICES, "outcome" => outcome).increment(1);
}

/// Today's spending on the platform's keys as last read, beside the cap.
/// `provider`: `all`, or the provider a budget of its own is for.
pub fn platform_spend(provider: &'static str, spent: Cents, cap: Cents) {
    gauge!(PLATFORM_SPEND, "provider" => provider).set(spent.as_f64());
    gauge!(PLATFORM_BUDGET, "provider" => provider).set(cap.as_f64());
}

pub fn platform_budget_refusal() {
    counter!(PLATFORM_REFUSALS).increment(1);
}

pub fn platform_budget_alert(provider: &'static str, percent: u8) {
    counter!(PLATFORM_ALERTS, "provider" => provider, "percent" => percent.to_string()).increment(1);
}

pub fn spending_alert(spend: Spend, period: Period, percent: u8) {
    counter!(SPENDING_ALERTS, "kind" => period.name(), "spend" => spend.name(), "percent" => percent.to_string())
        .increment(1);
}

pub fn low_balance_alert() {
    counter!(SPENDING_ALERTS, "kind" => "low_balance", "spend" => "credits", "percent" => "0").increment(1);
}

pub fn payment_event(outcome: &'static str) {
    counter!(PAYMENT_EVENTS, "outcome" => outcome).increment(1);
}

pub fn calls_dropped(count: u64) {
    counter!(CALLS_DROPPED).increment(count);
}
