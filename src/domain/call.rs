//! One gateway call as its user and support see it afterwards (`GET /v1/calls`): answered or refused, who
//! paid, what it cost, and why it failed. Accounting does not read these; the ledger and `api_key_usage` do
//! that. They answer "why did this fail, and what did that cost" without the logs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::error_code::Code;
use super::money::{self, Cents};
use super::provider::Provider;
use super::routing::Source;
use super::usage::UsageRecord;
use super::user::UserId;

/// The longest model name an entry keeps: the name is the client's, and a user's stored calls are bounded.
const MODEL_CHARS: usize = 200;

/// How much of each user's history is kept (`CALLS_KEPT_PER_USER`, `CALLS_RETENTION_DAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRetention {
    pub kept_per_user: usize,
    pub max_age: std::time::Duration,
}

impl CallRetention {
    /// The oldest moment an entry kept at `now` may be from.
    pub fn since(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - self.max_age
    }

    /// Leaves in `calls` (a batch about to be kept) only each user's newest `kept_per_user` entries: the rest
    /// would be trimmed in the same write, so one user's flood of calls costs the store at most that many rows
    /// a batch instead of a row written and deleted per call. Order within the batch is not kept.
    pub fn newest_per_user(&self, calls: &mut Vec<(UserId, CallEntry)>) {
        let mut counts: HashMap<UserId, usize> = HashMap::new();
        for (user, _) in calls.iter() {
            *counts.entry(*user).or_default() += 1;
        }
        if counts.values().all(|&count| count <= self.kept_per_user) {
            return;
        }
        // Per user, newest first (ids are UUIDv7: time-ordered), then the first `kept_per_user` of each.
        calls.sort_unstable_by(|(a, x), (b, y)| a.cmp(b).then_with(|| y.id.cmp(&x.id)));
        let mut current = None;
        let mut taken = 0;
        calls.retain(|(user, _)| {
            if current != Some(*user) {
                (current, taken) = (Some(*user), 0);
            }
            taken += 1;
            taken <= self.kept_per_user
        });
    }
}

/// How a charged call ended, as its entry records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The provider answered (a stream the client left mid-way too: what passed is what was charged).
    Answered { status: u16 },
    /// The answer never arrived whole (timed out, broke off) and was charged all the same; the caller was
    /// answered with `code`.
    Unanswered(Code),
    /// A stream that had begun (200) broke off; the client got `upstream_stream_interrupted` in it.
    StreamBrokenOff,
}

impl Ending {
    fn status_and_code(self) -> (u16, Option<Code>) {
        match self {
            Ending::Answered { status } => (status, None),
            Ending::Unanswered(code) => (code.status(), Some(code)),
            Ending::StreamBrokenOff => (200, Some(Code::UpstreamStreamInterrupted)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEntry {
    /// Time-ordered (UUIDv7). For a charged call, its usage record's `request_id` (`x-byok-usage-id`).
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub provider: Provider,
    pub model: String,
    /// Who paid; `None` when the call was refused before anyone did.
    pub source: Option<Source>,
    /// What the caller was answered with (the provider's status for an answer or its own refusal).
    pub status: u16,
    pub error_code: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(with = "money::exact")]
    pub cost_cents: Cents,
}

impl CallEntry {
    /// A charged call, from its usage record.
    pub fn charged(record: &UsageRecord, ending: Ending) -> CallEntry {
        let (status, code) = ending.status_and_code();
        CallEntry {
            id: record.request_id,
            at: record.occurred_at,
            provider: record.provider,
            model: bounded(&record.model),
            source: Some(record.source),
            status,
            error_code: code.map(|c| c.as_str().to_owned()),
            prompt_tokens: record.usage.prompt_tokens,
            completion_tokens: record.usage.completion_tokens,
            cost_cents: record.cost_cents,
        }
    }

    /// A call that cost nothing: refused here, or refused by the provider itself (`status` and `code` then say
    /// so), with `source` when a credential had been chosen.
    pub fn uncharged(provider: Provider, model: &str, source: Option<Source>, status: u16, code: Code) -> CallEntry {
        CallEntry {
            id: Uuid::now_v7(),
            at: OffsetDateTime::now_utc(),
            provider,
            model: bounded(model),
            source,
            status,
            error_code: Some(code.as_str().to_owned()),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_cents: Cents::ZERO,
        }
    }

    pub fn failed(&self) -> bool {
        self.error_code.is_some()
    }
}

/// The smallest time-ordered (UUIDv7) id of `moment`'s millisecond: ids from `moment` on sort at or after it,
/// earlier ones before, as bytes and as hyphenated text.
pub fn first_id_at(moment: OffsetDateTime) -> Uuid {
    let millis = u64::try_from(moment.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

fn bounded(model: &str) -> String {
    model.chars().take(MODEL_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::domain::usage::TokenUsage;

    fn record(model: &str) -> UsageRecord {
        UsageRecord {
            request_id: Uuid::now_v7(),
            user: UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap(),
            provider: Provider::openai(),
            model: model.to_owned(),
            fallback_from: None,
            source: Source::Internal,
            service_type: "openai.chat_completions".into(),
            usage: TokenUsage::new(12, 34),
            cost_cents: Cents::whole(7),
            occurred_at: datetime!(2026-12-05 10:00 UTC),
        }
    }

    #[test]
    fn a_charged_call_keeps_its_usage_ids_tokens_and_cost_and_an_unanswered_one_its_code() {
        let usage = record("gpt-4o-mini");
        let answered = CallEntry::charged(&usage, Ending::Answered { status: 200 });
        assert_eq!((answered.id, answered.at), (usage.request_id, usage.occurred_at));
        assert_eq!(
            (answered.prompt_tokens, answered.completion_tokens, answered.cost_cents),
            (12, 34, usage.cost_cents)
        );
        assert_eq!((answered.status, answered.error_code.as_deref(), answered.failed()), (200, None, false));

        let timed_out = CallEntry::charged(&usage, Ending::Unanswered(Code::AiTimeout));
        assert_eq!((timed_out.status, timed_out.error_code.as_deref()), (504, Some("ai_timeout")));
        assert!(timed_out.failed() && timed_out.cost_cents == usage.cost_cents, "failed, and what it cost is kept");
    }

    #[test]
    fn ids_from_a_moment_on_sort_after_its_first_id_and_earlier_ones_before() {
        let v7 = |moment: OffsetDateTime| {
            let nanos = moment.unix_timestamp_nanos();
            let (secs, subsec) = ((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
            Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, subsec))
        };
        let moment = datetime!(2026-12-05 10:00:00.5 UTC);
        let first = first_id_at(moment);
        assert_eq!(first.get_version_num(), 7);
        for _ in 0..100 {
            let (before, at, after) = (
                v7(moment - time::Duration::milliseconds(1)),
                v7(moment),
                v7(moment + time::Duration::microseconds(999)),
            );
            assert!(before < first && first <= at && first <= after, "{before} < {first} <= {at}, {after}");
            assert!(before.to_string() < first.to_string() && first.to_string() <= at.to_string(), "as text too");
        }
    }

    #[test]
    fn a_refused_call_costs_nothing_and_a_client_cannot_make_an_entry_large() {
        let refused = CallEntry::uncharged(Provider::anthropic(), &"m".repeat(10_000), None, 402, Code::BudgetExceeded);
        assert_eq!(refused.model.len(), MODEL_CHARS);
        assert_eq!((refused.cost_cents, refused.source, refused.status), (Cents::ZERO, None, 402));
        assert_eq!(refused.error_code.as_deref(), Some("budget_exceeded"));
        let json = serde_json::to_value(&refused).unwrap();
        assert_eq!(json["cost_cents"], "0.000000000", "exact, as the cost header has it");
        assert_eq!(serde_json::from_value::<CallEntry>(json).unwrap(), refused, "stored and read back unchanged");
    }

    #[test]
    fn a_batch_keeps_only_each_users_newest_entries_and_is_untouched_when_nobody_is_over() {
        let retention = CallRetention { kept_per_user: 3, max_age: std::time::Duration::from_secs(60) };
        let (flooder, other) = (
            UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e01").unwrap(),
            UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e02").unwrap(),
        );
        let entry = || CallEntry::uncharged(Provider::openai(), "gpt-4o-mini", None, 429, Code::RateLimited);
        let mut batch: Vec<(UserId, CallEntry)> =
            (0..7).map(|n| (if n % 3 == 1 { other } else { flooder }, entry())).collect();
        let ids_of = |batch: &[(UserId, CallEntry)], user: UserId| {
            let mut ids: Vec<Uuid> = batch.iter().filter(|(u, _)| *u == user).map(|(_, e)| e.id).collect();
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids
        };
        let (flooders, others) = (ids_of(&batch, flooder), ids_of(&batch, other));
        assert_eq!((flooders.len(), others.len()), (5, 2));

        let under = batch[..4].to_vec();
        let mut untouched = under.clone();
        retention.newest_per_user(&mut untouched);
        assert_eq!(untouched, under, "3 and 1 entries: nothing to drop, order kept");

        retention.newest_per_user(&mut batch);
        assert_eq!(ids_of(&batch, flooder), flooders[..3], "the flooder's newest three");
        assert_eq!(ids_of(&batch, other), others, "the other user loses nothing");
        assert_eq!(batch.len(), 5);
    }
}
