//! The shared backends against a real Redis, as two replicas would use them: one allowance, one set of credit
//! holds, one claim per incident, and changes fanned out; and each replica carries on alone when Redis is gone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_bridge::domain::call::CallEntry;
use byok_bridge::domain::credit_book::LedgerReading;
use byok_bridge::domain::error_code::Code;
use byok_bridge::domain::money::Cents;
use byok_bridge::domain::provider::Provider;
use byok_bridge::domain::user::UserId;
use byok_bridge::services::call_log::CallHistory;
use byok_bridge::services::call_log::redis::RedisHistory;
use byok_bridge::services::jobs::redis::RedisJobs;
use byok_bridge::services::rate_limit::RateLimiter;
use byok_bridge::services::rate_limit::redis::RedisRateLimit;
use byok_bridge::services::reservations::redis::RedisReservations;
use byok_bridge::services::reservations::{Reservations, ReserveError, Shortfall, now_millis};
use byok_bridge::shared::bus::redis::RedisBus;
use byok_bridge::shared::bus::{Bus, Event};
use byok_bridge::shared::claims::Claims;
use byok_bridge::shared::claims::redis::RedisClaims;
use byok_bridge::shared::redis::Redis;
use secrecy::SecretString;
use uuid::Uuid;

fn redis_url() -> SecretString {
    SecretString::from(
        std::env::var("BYOK_E2E_REDIS_URL")
            .expect("BYOK_E2E_REDIS_URL is not set: run these tests through scripts/test.sh"),
    )
}

fn redis() -> Arc<Redis> {
    Arc::new(Redis::new(&redis_url()).unwrap())
}

/// A Redis nobody listens on.
fn unreachable_redis() -> Arc<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    Arc::new(Redis::new(&SecretString::from(format!("redis://127.0.0.1:{port}/0"))).unwrap())
}

/// The bus tests share one channel (the database's) and check who hears what: one at a time.
async fn one_bus_test_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static BUS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    BUS.lock().await
}

fn user() -> UserId {
    UserId::parse(&Uuid::new_v4().to_string()).unwrap()
}

fn replica(name: &str, redis: &Arc<Redis>) -> Arc<Reservations> {
    Reservations::in_redis(
        Arc::clone(redis),
        format!("{name}-{}", Uuid::new_v4().simple()),
        Duration::from_secs(5),
        Duration::from_secs(905),
        Vec::new(),
    )
}

fn reading(cents: i64) -> LedgerReading {
    LedgerReading { balance: Cents::whole(cents), read_at: now_millis() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_taken_on_one_replica_count_on_the_other() {
    let redis = redis();
    let (a, b) = (replica("a", &redis), replica("b", &redis));
    let u = user();
    // Twenty calls at once, half on each replica, each possibly costing 95 cents, on 100 cents.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let replica = Arc::clone(if i % 2 == 0 { &a } else { &b });
            tokio::spawn(async move { replica.reserve(u, reading(100), Cents::whole(95), Provider::openai()).await })
        })
        .collect();
    let mut holds = Vec::new();
    for task in tasks {
        if let Ok(hold) = task.await.unwrap() {
            holds.push(hold);
        }
    }
    assert_eq!(holds.len(), 1, "one reservation across both replicas");
    assert_eq!(b.available(u, reading(100)).await, Cents::whole(5));
    assert_eq!(a.available(u, reading(100)).await, Cents::whole(5));

    // Settled on whichever replica took it: the real cost counts everywhere until Directus has it.
    holds.pop().unwrap().settle(Uuid::new_v4(), Cents::whole(90));
    let mut settled = false;
    for _ in 0..100 {
        if a.available(u, reading(100)).await == Cents::whole(10)
            && b.available(u, reading(100)).await == Cents::whole(10)
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "both replicas see 10 cents left");
}

#[tokio::test]
async fn a_released_shared_hold_frees_its_amount_for_every_replica() {
    let redis = redis();
    let (a, b) = (replica("a", &redis), replica("b", &redis));
    let u = user();
    let hold = a.reserve(u, reading(100), Cents::whole(60), Provider::openai()).await.unwrap();
    let short = ReserveError::Credits(Shortfall { available: Cents::whole(40) });
    assert_eq!(b.reserve(u, reading(100), Cents::whole(60), Provider::openai()).await.unwrap_err(), short);
    drop(hold);
    let mut freed = false;
    for _ in 0..100 {
        if b.available(u, reading(100)).await == Cents::whole(100) {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(freed);
}

#[tokio::test]
async fn a_users_allowance_is_one_across_replicas() {
    let redis = redis();
    let (a, b) =
        (RateLimiter::new("tier", Some(Arc::clone(&redis))), RateLimiter::new("tier", Some(Arc::clone(&redis))));
    let u = user();
    let mut allowed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        if limiter.acquire(u, 4).await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "4 a minute in all, not 4 per replica");
    let wait = a.acquire(u, 4).await.unwrap_err();
    assert!(wait <= Duration::from_secs(15) && wait > Duration::from_secs(10), "{wait:?}: one every 15 s refills");
}

#[tokio::test]
async fn an_incident_is_claimed_once_across_replicas() {
    let redis = redis();
    let (a, b) = (RedisClaims::new(Arc::clone(&redis)), RedisClaims::new(Arc::clone(&redis)));
    let incident = format!("notified:{}:openai:invalid", Uuid::new_v4());
    assert!(a.claim(&incident, Duration::from_secs(60)).await);
    assert!(!b.claim(&incident, Duration::from_secs(60)).await);
    b.release(&incident).await;
    assert!(a.claim(&incident, Duration::from_secs(60)).await, "released: the next incident is claimed again");
}

#[tokio::test]
async fn a_webhook_id_is_claimed_here_then_once_across_replicas() {
    let redis = redis();
    let (a, b) = (RedisClaims::new(Arc::clone(&redis)), RedisClaims::new(Arc::clone(&redis)));
    let id = format!("webhook:{}", Uuid::new_v4());
    let window = Duration::from_secs(60);
    assert!(a.claim_here(&id, window).await && a.claim_everywhere(&id, window).await);
    assert!(!a.claim_here(&id, window).await, "a repeat on the same replica is refused without Redis");
    assert!(b.claim_here(&id, window).await, "b has not seen it itself");
    assert!(!b.claim_everywhere(&id, window).await, "but a applied it already");
}

#[tokio::test]
async fn changes_reach_the_other_replicas_and_not_the_sender() {
    let _alone = one_bus_test_at_a_time().await;
    let redis = redis();
    let (a, b) = (Arc::new(RedisBus::new(Arc::clone(&redis))), Arc::new(RedisBus::new(Arc::clone(&redis))));
    let heard: Arc<Mutex<Vec<(char, Event)>>> = Arc::default();
    for (name, bus) in [('a', &a), ('b', &b)] {
        let (bus, heard) = (Arc::clone(bus), Arc::clone(&heard));
        tokio::spawn(async move { bus.run(Box::new(move |event| heard.lock().unwrap().push((name, event)))).await });
    }
    let subscribed = || heard.lock().unwrap().iter().filter(|(_, e)| *e == Event::Resubscribed).count() == 2;
    for _ in 0..200 {
        if subscribed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(subscribed(), "both subscribed, and told so (to reload what they may have missed)");
    let u = user();
    a.publish(Event::FlagsChanged).await;
    a.publish(Event::CallerChanged(u)).await;
    let expected = [('b', Event::FlagsChanged), ('b', Event::CallerChanged(u))];
    for _ in 0..200 {
        let others: Vec<_> =
            heard.lock().unwrap().iter().filter(|&(_, e)| *e != Event::Resubscribed).cloned().collect();
        if others == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("heard {:?}", heard.lock().unwrap());
}

#[tokio::test]
async fn without_redis_each_replica_carries_on_alone() {
    let redis = unreachable_redis();
    let reservations = replica("a", &redis);
    let u = user();
    let hold =
        reservations.reserve(u, reading(100), Cents::whole(60), Provider::openai()).await.expect("local fallback");
    assert!(!redis.is_up(), "and Redis is reported down");
    let short = ReserveError::Credits(Shortfall { available: Cents::whole(40) });
    assert_eq!(reservations.reserve(u, reading(100), Cents::whole(60), Provider::openai()).await.unwrap_err(), short);
    hold.settle(Uuid::new_v4(), Cents::whole(50));
    for _ in 0..100 {
        if reservations.available(u, reading(100)).await == Cents::whole(50) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(reservations.available(u, reading(100)).await, Cents::whole(50), "the cost counts locally");
    let limiter = RateLimiter::new("tier", Some(Arc::clone(&redis)));
    assert!(limiter.acquire(u, 1).await.is_ok() && limiter.acquire(u, 1).await.is_err(), "local allowance");
    let claims = RedisClaims::new(redis);
    assert!(claims.claim("x", Duration::from_secs(60)).await && !claims.claim("x", Duration::from_secs(60)).await);
}

#[tokio::test]
async fn redis_rate_limit_conforms() {
    crate::suites::rate_limit::suite(&RedisRateLimit::new("conformance", redis())).await;
    // Unreachable, it falls back to this replica's buckets, which keep the same contract.
    crate::suites::rate_limit::suite(&RedisRateLimit::new("conformance", unreachable_redis())).await;
}

#[tokio::test]
async fn redis_claims_conform() {
    crate::suites::claims::suite(&RedisClaims::new(redis())).await;
    crate::suites::claims::suite(&RedisClaims::new(unreachable_redis())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_credit_books_conform() {
    let (fresh, oldest) = (Duration::from_secs(5), Duration::from_secs(60));
    let books = |redis| Arc::new(RedisReservations::new(redis, crate::suites::fresh("replica"), fresh, oldest));
    crate::suites::credit_books::suite(books(redis())).await;
    crate::suites::credit_books::suite(books(unreachable_redis())).await;
}

#[tokio::test]
async fn redis_bus_conforms() {
    let _alone = one_bus_test_at_a_time().await;
    let redis = redis();
    crate::suites::bus::suite(Arc::new(RedisBus::new(Arc::clone(&redis))), Arc::new(RedisBus::new(redis))).await;
}

#[tokio::test]
async fn redis_job_queue_conforms() {
    let temp = crate::suites::TempStore::new();
    let outbox = Arc::new(byok_bridge::accounting::Outbox::open(Arc::clone(&temp.store)).unwrap());
    let replica = crate::suites::fresh("replica");
    let queue = RedisJobs::new(redis(), Arc::clone(&outbox), replica, 4, byok_bridge::clock::Clock::system());
    crate::suites::job_queue::suite(Arc::new(queue), outbox).await;
}

#[tokio::test]
async fn redis_call_history_conforms() {
    let retention = crate::suites::call_history::RETENTION;
    crate::suites::call_history::suite(&RedisHistory::new(redis(), retention)).await;
    // Unreachable: nothing is kept and pages are refused (503 calls_unavailable) within the command timeout.
    let down = RedisHistory::new(unreachable_redis(), retention);
    let user = UserId::parse(&Uuid::new_v4().to_string()).unwrap();
    let call = CallEntry::uncharged(Provider::openai(), "gpt-4o-mini", None, 402, Code::BudgetExceeded);
    assert!(down.keep(vec![(user, call)]).await.is_err(), "not kept");
    assert!(down.page(user, None, 10, time::OffsetDateTime::UNIX_EPOCH).await.is_err(), "no page");
}
