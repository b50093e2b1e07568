//! Usage records and the user's usage summary: `api_key_usage` for BYOK calls, `credit_transactions`
//! deductions for internal-credit calls.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DirectusClient, DirectusError};
use crate::accounting::{DeliveryError, UsageSink};
use crate::domain::money::Cents;
use crate::domain::routing::Source;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;

/// One line of the usage summary: per provider and source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageLine {
    pub provider: String,
    pub source: Source,
    pub requests: u64,
    pub tokens: u64,
    pub cost_cents: Cents,
}

impl DirectusClient {
    /// Stores a batch of records of one source in one request (Directus creates all or none). A record
    /// already stored (same `request_id`) fails the batch with `RECORD_NOT_UNIQUE`.
    pub async fn store_usage(&self, records: &[UsageRecord]) -> Result<(), DirectusError> {
        let Some(first) = records.first() else { return Ok(()) };
        let collection = match first.source {
            Source::Byok => "/items/api_key_usage",
            Source::Internal => "/items/credit_transactions",
        };
        let body: Vec<Value> = records.iter().map(usage_row).collect();
        let request = self.request(Method::POST, collection).query(&[("fields", "id")]).json(&body);
        self.send(request).await.map(drop)
    }

    /// Requests, tokens and cost per provider and source since `since`.
    pub async fn usage_summary(&self, user: UserId, since: OffsetDateTime) -> Result<Vec<UsageLine>, DirectusError> {
        let since = since.format(&Rfc3339).map_err(|e| DirectusError::Decode(e.to_string()))?;
        let user = user.to_string();
        let byok = self.request(Method::GET, "/items/api_key_usage").query(&[
            ("aggregate[count]", "*"),
            ("aggregate[sum]", "total_tokens,estimated_cost_cents"),
            ("groupBy[]", "provider"),
            ("filter[user][_eq]", &user),
            ("filter[created_at][_gte]", &since),
        ]);
        let internal = self.request(Method::GET, "/items/credit_transactions").query(&[
            ("aggregate[count]", "*"),
            ("aggregate[sum]", "total_tokens,cost_cents"),
            ("groupBy[]", "provider"),
            ("filter[user][_eq]", &user),
            ("filter[transaction_type][_eq]", "deduction"),
            ("filter[created_at][_gte]", &since),
        ]);
        let (byok, internal): (Result<Vec<Value>, _>, Result<Vec<Value>, _>) =
            tokio::join!(self.data(byok), self.data(internal));
        let mut lines = Vec::new();
        for (groups, source, cost_field) in
            [(byok?, Source::Byok, "estimated_cost_cents"), (internal?, Source::Internal, "cost_cents")]
        {
            for group in groups {
                lines.push(UsageLine {
                    provider: group["provider"].as_str().unwrap_or("unknown").to_owned(),
                    source,
                    requests: number(&group["count"]) as u64,
                    tokens: number(&group["sum"]["total_tokens"]) as u64,
                    cost_cents: Cents::from_json(&group["sum"][cost_field]).unwrap_or_default(),
                });
            }
        }
        Ok(lines)
    }
}

/// A record as its collection's row: `api_key_usage` for BYOK calls, a `credit_transactions` deduction for
/// internal-credit calls. Money goes as an exact decimal string: the ledger keeps nine decimals.
fn usage_row(record: &UsageRecord) -> Value {
    let occurred_at = record.occurred_at.format(&Rfc3339).unwrap_or_default();
    match record.source {
        Source::Byok => json!({
            "user": record.user, "provider": record.provider, "model": record.model,
            "prompt_tokens": record.usage.prompt_tokens, "completion_tokens": record.usage.completion_tokens,
            "total_tokens": record.usage.total(), "estimated_cost_cents": record.cost_cents.to_string(),
            "request_id": record.request_id, "occurred_at": occurred_at,
        }),
        Source::Internal => json!({
            "user": record.user, "transaction_type": "deduction", "service_type": record.service_type,
            "cost_cents": record.cost_cents.max(Cents::ZERO).to_string(),
            "provider": record.provider, "model": record.model,
            "prompt_tokens": record.usage.prompt_tokens, "completion_tokens": record.usage.completion_tokens,
            "total_tokens": record.usage.total(), "request_id": record.request_id, "occurred_at": occurred_at,
            "description": format!("{} {}", record.provider, record.model),
        }),
    }
}

/// The flusher delivers to Directus. A batch with a record Directus already has is `AlreadyStored`; refusals
/// that will never succeed (validation) are permanent; everything else, including 401/403 from a
/// misconfigured token, is retried so no record is thrown away while an operator fixes the configuration.
impl UsageSink for DirectusClient {
    async fn deliver(&self, records: &[UsageRecord]) -> Result<(), DeliveryError> {
        self.store_usage(records).await.map_err(|error| match &error {
            DirectusError::Status { status: StatusCode::BAD_REQUEST, code: Some(code) }
                if code == "RECORD_NOT_UNIQUE" =>
            {
                DeliveryError::AlreadyStored
            }
            DirectusError::Status { status, .. } if matches!(status.as_u16(), 400 | 422) => {
                DeliveryError::Permanent(Box::new(error))
            }
            _ => DeliveryError::Retryable(Box::new(error)),
        })
    }
}

/// Aggregates arrive as numbers (SQLite) or strings (PostgreSQL); `count` may be an object in some versions.
fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        Value::Object(o) => o.values().next().map_or(0.0, number),
        _ => 0.0,
    }
}
