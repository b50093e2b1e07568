use std::time::Duration;

use byok_bridge::domain::call::{CallEntry, CallRetention};
use byok_bridge::domain::error_code::Code;
use byok_bridge::domain::provider::Provider;
use byok_bridge::domain::user::UserId;
use byok_bridge::services::call_log::CallHistory;
use time::OffsetDateTime;
use uuid::Uuid;

/// What the suite expects its backend to have been built with.
pub const RETENTION: CallRetention = CallRetention { kept_per_user: 12, max_age: Duration::from_secs(86_400) };

fn user() -> UserId {
    UserId::parse(&Uuid::new_v4().to_string()).unwrap()
}

/// A refused call at `at`, with an id of that moment (ids sort by time, as the gateway's do).
fn call_at(at: OffsetDateTime) -> CallEntry {
    let nanos = at.unix_timestamp_nanos();
    let stamp =
        uuid::Timestamp::from_unix(uuid::NoContext, (nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
    let mut entry = CallEntry::uncharged(Provider::openai(), "gpt-4o-mini", None, 402, Code::BudgetExceeded);
    (entry.id, entry.at) = (Uuid::new_v7(stamp), at);
    entry
}

/// Pages come newest first, after a cursor; a user keeps only the newest `kept_per_user`, and another user's
/// calls are untouched by that; nothing older than the retention is listed, and forgetting removes it.
pub async fn suite(history: &dyn CallHistory) {
    let now = OffsetDateTime::now_utc();
    let since = RETENTION.since(now);
    let (busy, quiet, returning) = (user(), user(), user());
    let busy_calls: Vec<CallEntry> = (0..15).map(|i| call_at(now - time::Duration::seconds(60 - i))).collect();
    let mut first: Vec<(UserId, CallEntry)> = busy_calls[..10].iter().map(|c| (busy, c.clone())).collect();
    first.extend((0..3).map(|i| (quiet, call_at(now - time::Duration::seconds(30 - i)))));
    history.keep(first).await.unwrap();
    history.keep(busy_calls[10..].iter().map(|c| (busy, c.clone())).collect()).await.unwrap();

    let newest: Vec<Uuid> = busy_calls.iter().rev().take(RETENTION.kept_per_user).map(|c| c.id).collect();
    let page = history.page(busy, None, 5, since).await.unwrap();
    assert_eq!(page.iter().map(|c| c.id).collect::<Vec<_>>(), newest[..5], "the newest five, newest first");
    assert_eq!(page[0], busy_calls[14], "an entry reads back as it was kept");
    let rest = history.page(busy, Some(page[4].id), 100, since).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), newest[5..], "the rest, and only the newest 12");
    assert_eq!(history.page(quiet, None, 100, since).await.unwrap().len(), 3, "another user keeps theirs");
    assert!(history.page(user(), None, 100, since).await.unwrap().is_empty());

    // One write far past what a user keeps leaves only the newest (the embedded backend trims a few at a time).
    let flooder = user();
    let flood: Vec<CallEntry> = (0..100).map(|i| call_at(now - time::Duration::milliseconds(1_000 - i))).collect();
    history.keep(flood.iter().map(|c| (flooder, c.clone())).collect()).await.unwrap();
    let kept: Vec<Uuid> = history.page(flooder, None, 1_000, since).await.unwrap().iter().map(|c| c.id).collect();
    let newest: Vec<Uuid> = flood.iter().rev().take(RETENTION.kept_per_user).map(|c| c.id).collect();
    assert_eq!(kept, newest, "a flood of 100 leaves the newest 12");

    let old = call_at(now - time::Duration::days(2));
    let recent = call_at(now - time::Duration::seconds(1));
    history.keep(vec![(returning, old.clone()), (returning, recent.clone())]).await.unwrap();
    let listed = history.page(returning, None, 100, since).await.unwrap();
    assert_eq!(listed, vec![recent.clone()], "past the retention: not listed");
    history.forget_before(since).await.unwrap();
    let everything = history.page(returning, None, 100, OffsetDateTime::UNIX_EPOCH).await.unwrap();
    assert_eq!(everything, vec![recent], "past the retention: forgotten");
}
