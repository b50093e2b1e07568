//! The credit reservation path on its own (run through `scripts/bench.sh`, or `cargo bench --bench
//! reservations`): what an internal-credit call adds for its hold, from reading what is available to
//! settling the real cost and Directus storing it. Single-threaded, then two threads on one user (the worst
//! contention: one lock, one book); then the same path with every budget check on (a tier's daily and monthly
//! caps, the platform's daily budgets for all providers and for the call's provider, the spending alerts of
//! both kinds of cap), against it without them, alternating; and what an own-key call adds under an own-key
//! cap (its hold, settled and stored), where it adds nothing without one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_bridge::directus::DirectusClient;
use byok_bridge::domain::budget::{self, AlertThresholds, BudgetCaps, Cap, LowBalance, Spend, Spending};
use byok_bridge::domain::credit_book::LedgerReading;
use byok_bridge::domain::money::Cents;
use byok_bridge::domain::provider::Provider;
use byok_bridge::domain::routing::Source;
use byok_bridge::domain::usage::{TokenUsage, UsageRecord};
use byok_bridge::domain::user::UserId;
use byok_bridge::services::notifier::Notifier;
use byok_bridge::services::platform_budget::PlatformBudget;
use byok_bridge::services::reservations::{Reservations, now_millis};
use byok_bridge::services::spending_alerts::SpendingAlerts;
use byok_bridge::shared::claims::claims;
use secrecy::SecretString;
use time::OffsetDateTime;
use uuid::Uuid;

const CALLS: usize = 200_000;

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    format!("p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs", us(at(0.50)), us(at(0.99)), us(at(0.999)))
}

/// One call's reservation path: available, reserve, settle, and the flusher's "stored".
async fn one_call(reservations: &Arc<Reservations>, user: UserId, ledger: LedgerReading) -> Duration {
    let started = Instant::now();
    let available = reservations.available(user, ledger).await;
    assert!(available.is_positive());
    let hold = reservations.reserve(user, ledger, Cents::parse("0.27").unwrap(), Provider::openai()).await.unwrap();
    let record = record(user);
    hold.settle(record.request_id, record.cost_cents);
    reservations.stored(&record, OffsetDateTime::now_utc()).await;
    started.elapsed()
}

/// The call's record, as the meter writes it.
fn record(user: UserId) -> UsageRecord {
    UsageRecord {
        request_id: Uuid::new_v4(),
        user,
        provider: Provider::openai(),
        model: "gpt-4o-mini".into(),
        fallback_from: None,
        source: Source::Internal,
        service_type: "openai.chat_completions".into(),
        usage: TokenUsage::default(),
        cost_cents: Cents::from_nanos(345_000),
        occurred_at: OffsetDateTime::now_utc(),
    }
}

async fn run(threads: usize) -> Vec<Duration> {
    let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(905), Vec::new());
    let user = UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap();
    let ledger = LedgerReading { balance: Cents::whole(1_000_000_000), read_at: now_millis() };
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            let reservations = Arc::clone(&reservations);
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(CALLS / threads);
                for _ in 0..CALLS / threads {
                    samples.push(one_call(&reservations, user, ledger).await);
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(CALLS);
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    samples
}

/// The same call with the budget checks: the tightest cap lowers the reading, the platform's book holds too,
/// and the alerts look at what is spent of each cap.
async fn one_budgeted_call(budgets: &Budgets, user: UserId, ledger: LedgerReading) -> Duration {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let (reading, _) = budget::capped_reading(ledger, &budgets.caps, Some(&budgets.spending), now);
    let available = budgets.reservations.available(user, reading).await;
    let pending = (reading.balance - available).max(Cents::ZERO);
    let credits = budget::cap_use(&budgets.caps, Spend::Credits, Some(budgets.spending), pending, now);
    let own_keys = budget::cap_use(&budgets.caps, Spend::OwnKeys, Some(budgets.spending), Cents::ZERO, now);
    budgets.alerts.check(user, credits.chain(own_keys), now).await;
    let hold =
        budgets.reservations.reserve(user, reading, Cents::parse("0.27").unwrap(), Provider::openai()).await.unwrap();
    let record = record(user);
    hold.settle(record.request_id, record.cost_cents);
    budgets.reservations.stored(&record, OffsetDateTime::now_utc()).await;
    started.elapsed()
}

/// An own-key call under an own-key cap: the tightest cap's reading, the hold, settled and stored.
async fn one_capped_own_key_call(budgets: &Budgets, user: UserId) -> Duration {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let (reading, _) = budget::own_key_reading(&budgets.caps, Some(&budgets.spending), now_millis(), now).unwrap();
    let hold = budgets.reservations.reserve_own_keys(user, reading, Cents::parse("0.27").unwrap()).await.unwrap();
    let record = UsageRecord { source: Source::Byok, ..record(user) };
    hold.settle(record.request_id, record.cost_cents);
    budgets.reservations.stored(&record, OffsetDateTime::now_utc()).await;
    started.elapsed()
}

struct Budgets {
    reservations: Arc<Reservations>,
    caps: Vec<Cap>,
    spending: Spending,
    alerts: SpendingAlerts,
    _directus: wiremock::MockServer,
}

/// Caps far above what the run spends (no alert is due: the common case), and a platform budget whose day
/// was read once from a fake Directus.
async fn budgets() -> Budgets {
    let directus = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"data": [{"sum": {"cost_cents": "0"}}]})),
        )
        .mount(&directus)
        .await;
    let client =
        DirectusClient::new(directus.uri().parse().unwrap(), SecretString::from("token"), Duration::from_secs(1));
    let platform = |scope| {
        PlatformBudget::new(scope, Cents::whole(1_000_000_000_000), client.clone(), Duration::from_secs(3_600), None)
    };
    let (all, openai) = (platform(None), platform(Some(Provider::openai())));
    all.read().await;
    openai.read().await;
    let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(905), vec![all, openai]);
    reservations.count_own_keys();
    let claims = claims(None);
    let notifier = Arc::new(Notifier::new(client, Arc::clone(&claims), None, None));
    Budgets {
        reservations,
        caps: "credits.daily=100000000000,credits.monthly=1000000000000,own_keys.daily=100000000000"
            .parse::<BudgetCaps>()
            .unwrap()
            .0,
        spending: Spending { at: OffsetDateTime::now_utc(), today: Cents::whole(5), this_month: Cents::whole(50) },
        alerts: SpendingAlerts::new(AlertThresholds::default(), LowBalance::default(), notifier, claims),
        _directus: directus,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("reservation path, 1 thread:  {}", percentiles(run(1).await));
    println!("reservation path, 2 threads on one user: {}", percentiles(run(2).await));

    let plain = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(905), Vec::new());
    let budgeted = budgets().await;
    let user = UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap();
    let ledger = LedgerReading { balance: Cents::whole(1_000_000_000), read_at: now_millis() };
    let (mut without, mut with) = (Vec::with_capacity(CALLS), Vec::with_capacity(CALLS));
    for _ in 0..CALLS {
        without.push(one_call(&plain, user, ledger).await);
        with.push(one_budgeted_call(&budgeted, user, ledger).await);
    }
    let p50 = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2].as_secs_f64() * 1e6
    };
    let (base, checked) = (p50(&mut without), p50(&mut with));
    println!("reservation path without budget checks: {}", percentiles(without));
    println!("reservation path with every budget check: {}", percentiles(with));
    println!("the budget checks add {:.2} µs p50 per call", checked - base);
    let mut own = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        own.push(one_capped_own_key_call(&budgeted, user).await);
    }
    println!("an own-key call under an own-key cap adds: {}", percentiles(own));
}
