use std::sync::Arc;
use std::time::Duration;

use byok_bridge::accounting::Outbox;
use byok_bridge::clock::Clock;
use byok_bridge::config::UserCaps;
use byok_bridge::domain::jobs::{Attempt, JobRecord, JobStatus, RetryPolicy};
use byok_bridge::domain::llm::Api;
use byok_bridge::domain::money::Cents;
use byok_bridge::domain::provider::Provider;
use byok_bridge::domain::routing::Source;
use byok_bridge::domain::usage::{TokenUsage, UsageRecord};
use byok_bridge::domain::user::UserId;
use byok_bridge::services::jobs::{Claimed, Inserted, JobCap, JobQueue, JobsError};
use bytes::Bytes;
use uuid::Uuid;

fn job(user: UserId, key: Option<&str>) -> JobRecord {
    let mut record = JobRecord::new(
        user,
        Api::ChatCompletions,
        "gpt-4o-mini".into(),
        Clock::system().now(),
        &RetryPolicy::default(),
    );
    record.idempotency_key = key.map(str::to_owned);
    record
}

/// A charged call's record, as a worker hands it to `finish`.
fn usage(user: UserId) -> UsageRecord {
    UsageRecord {
        request_id: Uuid::now_v7(),
        user,
        provider: Provider::openai(),
        model: "gpt-4o-mini".into(),
        fallback_from: None,
        source: Source::Internal,
        service_type: "openai.chat_completions".into(),
        usage: TokenUsage::new(10, 5),
        cost_cents: Cents::whole(1),
        occurred_at: time::OffsetDateTime::now_utc(),
    }
}

fn in_outbox(outbox: &Outbox) -> Vec<Uuid> {
    outbox.page(0, 100).unwrap().into_iter().map(|waiting| waiting.record.request_id).collect()
}

async fn claim(queue: &Arc<dyn JobQueue>) -> Claimed {
    tokio::time::timeout(Duration::from_secs(10), queue.claim()).await.expect("a due job is handed to a worker")
}

/// Jobs are stored and read back per user, an idempotency key finds its first job, a user's cap refuses more,
/// due jobs go to workers once each, a finished job's result is kept with its usage record in `outbox` (the
/// record kept even when the job was cancelled meanwhile), a stale write never lands, and finished jobs are
/// purged.
pub async fn suite(queue: Arc<dyn JobQueue>, outbox: Arc<Outbox>) {
    tokio::spawn(Arc::clone(&queue).maintain());
    let caps = UserCaps { waiting: 2, stored_bytes: 1 << 20 };
    let user = UserId::parse(&Uuid::new_v4().to_string()).unwrap();
    let request = Bytes::from_static(br#"{"model":"gpt-4o-mini","messages":[]}"#);

    let first = job(user, None);
    let Inserted::New(first) = queue.insert(first, request.clone(), None, caps).await.unwrap() else {
        panic!("a new job")
    };
    let read = queue.get(user, first.id).await.unwrap().expect("stored");
    assert_eq!((read.id, read.status), (first.id, JobStatus::Queued));
    let stranger = UserId::parse(&Uuid::new_v4().to_string()).unwrap();
    assert!(queue.get(stranger, first.id).await.unwrap().is_none(), "another user's job is not found");
    assert_eq!(queue.waiting(user).await.unwrap(), 1);

    let key = Uuid::new_v4().to_string();
    let Inserted::New(second) = queue.insert(job(user, Some(&key)), request.clone(), None, caps).await.unwrap() else {
        panic!("a new job")
    };
    match queue.insert(job(user, Some(&key)), request.clone(), None, caps).await.unwrap() {
        Inserted::Existing(existing, _) => assert_eq!(existing.id, second.id, "the key's first job"),
        Inserted::New(_) => panic!("an idempotency key made a second job"),
    }
    match queue.insert(job(user, None), request.clone(), None, caps).await {
        Err(JobsError::Full(JobCap::Waiting(2))) => {}
        other => panic!("a third waiting job passed a cap of 2: {:?}", other.map(|_| ())),
    }
    let page = queue.list(user, None, 10, None).await.unwrap();
    let mut listed: Vec<Uuid> = page.jobs.iter().map(|j| j.id).collect();
    listed.sort();
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(listed, expected, "the user's jobs, and only theirs");

    let claimed = [claim(&queue).await, claim(&queue).await];
    let mut ids: Vec<Uuid> = claimed.iter().map(|c| c.record.id).collect();
    ids.sort();
    assert_eq!(ids, expected, "each due job goes to one worker");
    assert!(claimed.iter().all(|c| c.record.status == JobStatus::Running && c.request == request));

    let [done, other] = claimed;
    let mut record = done.record;
    let now = Clock::system().now();
    let charged = usage(user);
    let succeeded = Attempt::Succeeded {
        result: serde_json::json!({"ok": true}),
        source: Source::Internal,
        cost: charged.cost_cents,
        usage_id: charged.request_id,
    };
    record.settle(succeeded, now, &RetryPolicy::default(), 0.5);
    let finished = queue.finish(&record, done.lease.as_deref(), Some(&charged)).await.unwrap();
    assert!(finished, "the worker's attempt is recorded");
    assert_eq!(in_outbox(&outbox), [charged.request_id], "the call's usage record is in the outbox with the result");
    let read = queue.get(user, record.id).await.unwrap().unwrap();
    assert_eq!((read.status, read.result), (JobStatus::Succeeded, Some(serde_json::json!({"ok": true}))));
    assert_eq!(queue.waiting(user).await.unwrap(), 1, "a finished job no longer waits");

    let mut cancelled = queue.get(user, other.record.id).await.unwrap().unwrap();
    let stale = cancelled.clone();
    cancelled.cancel(Clock::system().now());
    assert!(queue.update(&cancelled, JobStatus::Running).await.unwrap());
    assert!(!queue.update(&stale, JobStatus::Running).await.unwrap(), "a write based on an older reading");
    let mut late = other.record;
    late.settle(
        Attempt::Retry {
            error: byok_bridge::domain::jobs::JobError::new(
                byok_bridge::domain::error_code::Code::AiUnavailable,
                "down",
            ),
            asked: None,
        },
        now,
        &RetryPolicy::default(),
        0.5,
    );
    let served = usage(user);
    let finished = queue.finish(&late, other.lease.as_deref(), Some(&served)).await.unwrap();
    assert!(!finished, "cancelled while it ran: not kept");
    assert_eq!(in_outbox(&outbox), [charged.request_id, served.request_id], "its call is charged all the same");
    assert_eq!(queue.get(user, late.id).await.unwrap().unwrap().status, JobStatus::Cancelled);

    let purged = queue.purge(Clock::system().now() + 1_000, 100).await.unwrap();
    assert!(purged >= 2, "both finished jobs are purged: {purged}");
    assert!(queue.get(user, first.id).await.unwrap().is_none() && queue.get(user, second.id).await.unwrap().is_none());
    assert_eq!(queue.waiting(user).await.unwrap(), 0);
}
