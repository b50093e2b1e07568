//! Usage records and the user's usage summary: `api_key_usage` for BYOK calls, `credit_transactions`
//! deductions for internal-credit calls.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{DirectusClient, DirectusError};
use crate::accounting::{DeliveryError, UsageSink, yield_to_calls};
use crate::domain::budget::{Period, Spending};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::Source;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::sync;

/// How long records go through the items API after the hook's usage route answered 404, before the route is
/// asked again (an extension updated meanwhile is picked up without a restart).
const BULK_USAGE_RECHECK: Duration = Duration::from_secs(600);

/// One line of the usage summary: per provider and source, in all or on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageLine {
    /// `YYYY-MM-DD` (UTC) for a day's line; absent in the totals per provider and source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub provider: String,
    pub source: Source,
    pub requests: u64,
    pub tokens: u64,
    pub cost_cents: Cents,
}

/// A user's usage: per day, and those days added up per provider and source.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSummary {
    pub totals: Vec<UsageLine>,
    pub daily: Vec<UsageLine>,
}

impl DirectusClient {
    /// Stores a batch of records of one source in one request. Through the byok-bridge extension's bulk route
    /// (`hooks/byok-bridge/src/usage-ingest.js`: a few hundred rows per INSERT, a record stored already is
    /// skipped) where Directus offers it; otherwise (404: an older extension, `BYOK_BRIDGE_BULK_USAGE=false`, a
    /// self-purging cache, a database the route does not support) through the items API for ten minutes before
    /// it asks again, which creates all or none and fails the batch with `RECORD_NOT_UNIQUE` when a record (same
    /// `request_id`) is stored already.
    pub async fn store_usage(&self, records: &[UsageRecord]) -> Result<(), DirectusError> {
        let Some(first) = records.first() else { return Ok(()) };
        let collection = match first.source {
            Source::Byok => "api_key_usage",
            Source::Internal => "credit_transactions",
        };
        let mut body = Vec::with_capacity(records.len() * 512);
        body.push(b'[');
        for (n, record) in records.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            serde_json::to_writer(&mut body, &usage_row(record)).expect("a usage row serializes");
            yield_to_calls(n).await;
        }
        body.push(b']');
        let body = bytes::Bytes::from(body);
        let json = |request: reqwest::RequestBuilder| {
            request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone())
        };
        let missing_since = *sync::lock(&self.bulk_usage_missing);
        if missing_since.is_none_or(|since| since.elapsed() >= BULK_USAGE_RECHECK) {
            let bulk = json(self.request(Method::POST, &format!("/byok-bridge/usage/{collection}")));
            match self.send(bulk).await {
                Err(DirectusError::Status { status: StatusCode::NOT_FOUND, .. }) => {
                    *sync::lock(&self.bulk_usage_missing) = Some(Instant::now());
                    if missing_since.is_none() {
                        tracing::info!(
                            recheck_secs = BULK_USAGE_RECHECK.as_secs(),
                            "Directus does not offer the hook's usage route (an older byok-bridge extension, \
                             BYOK_BRIDGE_BULK_USAGE=false, or a database it does not support): usage records go \
                             through the items API, one createOne per record"
                        );
                    }
                }
                stored => {
                    if missing_since.is_some() && stored.is_ok() {
                        *sync::lock(&self.bulk_usage_missing) = None;
                        tracing::info!("Directus offers the hook's usage route again: usage records go through it");
                    }
                    return stored.map(drop);
                }
            }
        }
        let items = json(self.request(Method::POST, &format!("/items/{collection}")).query(&[("fields", "id")]));
        self.send(items).await.map(drop)
    }

    /// What calls on the platform's keys (of `provider`, or all) cost since `since`, for every user together.
    pub async fn platform_spend_since(
        &self,
        since: OffsetDateTime,
        provider: Option<Provider>,
    ) -> Result<Cents, DirectusError> {
        self.credit_spend_since(None, since, provider).await
    }

    /// What the user's calls on credits cost today and this month (UTC), as of `now`.
    pub async fn credit_spending(&self, user: UserId, now: OffsetDateTime) -> Result<Spending, DirectusError> {
        let (today, this_month) = tokio::join!(
            self.credit_spend_since(Some(user), Period::Day.start(now), None),
            self.credit_spend_since(Some(user), Period::Month.start(now), None),
        );
        Ok(Spending { at: now, today: today?, this_month: this_month? })
    }

    /// What the user's calls with their own keys cost them at their providers today and this month (UTC).
    pub async fn own_key_spending(&self, user: UserId, now: OffsetDateTime) -> Result<Spending, DirectusError> {
        let user = user.to_string();
        let since =
            |period: Period| period.start(now).format(&Rfc3339).map_err(|e| DirectusError::Decode(e.to_string()));
        let (day, month) = (since(Period::Day)?, since(Period::Month)?);
        let spent = |since: String| {
            let user = user.clone();
            async move {
                let filters = [("filter[user][_eq]", user.as_str()), ("filter[occurred_at][_gte]", since.as_str())];
                self.sum("/items/api_key_usage", "estimated_cost_cents", &filters).await
            }
        };
        let (today, this_month) = tokio::join!(spent(day), spent(month));
        Ok(Spending { at: now, today: today?, this_month: this_month? })
    }

    /// Deductions that came from calls (they name a provider; a refunded purchase does not) since `since`:
    /// the user's, or everybody's.
    async fn credit_spend_since(
        &self,
        user: Option<UserId>,
        since: OffsetDateTime,
        provider: Option<Provider>,
    ) -> Result<Cents, DirectusError> {
        let since = since.format(&Rfc3339).map_err(|e| DirectusError::Decode(e.to_string()))?;
        let user = user.map(|user| user.to_string());
        let mut filters = vec![
            ("filter[transaction_type][_eq]", "deduction"),
            ("filter[provider][_nnull]", "true"),
            ("filter[occurred_at][_gte]", since.as_str()),
        ];
        filters.extend(user.as_deref().map(|user| ("filter[user][_eq]", user)));
        filters.extend(provider.map(|provider| ("filter[provider][_eq]", provider.as_str())));
        self.ledger_sum(&filters).await
    }

    /// The sum of `cost_cents` over the ledger rows `filters` select; zero when none do.
    pub(super) async fn ledger_sum(&self, filters: &[(&str, &str)]) -> Result<Cents, DirectusError> {
        self.sum("/items/credit_transactions", "cost_cents", filters).await
    }

    /// The sum of `field` (cents) over the rows of `collection` that `filters` select; zero when none do.
    async fn sum(&self, collection: &str, field: &str, filters: &[(&str, &str)]) -> Result<Cents, DirectusError> {
        let request = self.request(Method::GET, collection).query(&[("aggregate[sum]", field)]);
        let sums: Vec<Value> = self.data(request.query(filters)).await?;
        match sums.first().map(|group| &group["sum"][field]) {
            None | Some(Value::Null) => Ok(Cents::ZERO),
            Some(sum) => Cents::from_json(sum).map_err(|_| DirectusError::Decode(format!("{collection} sum"))),
        }
    }

    /// Requests, tokens and cost per day, provider and source for the calls of `user` (`None`: everyone's)
    /// since `since` (by the time of the call, `occurred_at`), and their totals. Directus adds them up: no rows
    /// are transferred.
    pub async fn usage_summary(
        &self,
        user: Option<UserId>,
        since: OffsetDateTime,
    ) -> Result<UsageSummary, DirectusError> {
        let since = since.format(&Rfc3339).map_err(|e| DirectusError::Decode(e.to_string()))?;
        let user = user.map(|user| user.to_string());
        let grouped = |collection: &str, sum: &str| {
            let request = self.request(Method::GET, collection).query(&[
                ("aggregate[count]", "*"),
                ("aggregate[sum]", sum),
                ("groupBy[]", "provider"),
                ("groupBy[]", "year(occurred_at)"),
                ("groupBy[]", "month(occurred_at)"),
                ("groupBy[]", "day(occurred_at)"),
                ("filter[occurred_at][_gte]", &since),
                ("limit", "-1"),
            ]);
            match &user {
                Some(user) => request.query(&[("filter[user][_eq]", user)]),
                None => request,
            }
        };
        let byok = grouped("/items/api_key_usage", "total_tokens,estimated_cost_cents");
        let internal = grouped("/items/credit_transactions", "total_tokens,cost_cents")
            .query(&[("filter[transaction_type][_eq]", "deduction")]);
        let (byok, internal): (Result<Vec<Value>, _>, Result<Vec<Value>, _>) =
            tokio::join!(self.data(byok), self.data(internal));
        let mut daily = Vec::new();
        for (groups, source, cost_field) in
            [(byok?, Source::Byok, "estimated_cost_cents"), (internal?, Source::Internal, "cost_cents")]
        {
            for group in groups {
                daily.push(UsageLine {
                    day: day_of(&group),
                    provider: group["provider"].as_str().unwrap_or("unknown").to_owned(),
                    source,
                    requests: number(&group["count"]) as u64,
                    tokens: number(&group["sum"]["total_tokens"]) as u64,
                    cost_cents: Cents::from_json(&group["sum"][cost_field]).unwrap_or_default(),
                });
            }
        }
        daily.sort_by(|a, b| (&a.day, &a.provider, a.source.as_str()).cmp(&(&b.day, &b.provider, b.source.as_str())));
        let mut totals: Vec<UsageLine> = Vec::new();
        for line in &daily {
            match totals.iter_mut().find(|t| t.provider == line.provider && t.source == line.source) {
                Some(total) => {
                    total.requests += line.requests;
                    total.tokens += line.tokens;
                    total.cost_cents += line.cost_cents;
                }
                None => totals.push(UsageLine { day: None, ..line.clone() }),
            }
        }
        Ok(UsageSummary { totals, daily })
    }

    /// The `limit` users whose calls on credits cost most since `since`: each with that cost, their number of
    /// calls, and their e-mail address (for admins).
    pub async fn top_credit_spenders(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(UserId, Option<String>, Cents, u64)>, DirectusError> {
        #[derive(serde::Deserialize)]
        struct User {
            id: UserId,
            email: Option<String>,
        }
        let since = since.format(&Rfc3339).map_err(|e| DirectusError::Decode(e.to_string()))?;
        let request = self.request(Method::GET, "/items/credit_transactions").query(&[
            ("aggregate[count]", "*"),
            ("aggregate[sum]", "cost_cents"),
            ("groupBy[]", "user"),
            ("filter[transaction_type][_eq]", "deduction"),
            ("filter[provider][_nnull]", "true"),
            ("filter[occurred_at][_gte]", since.as_str()),
            ("sort[]", "-sum.cost_cents"),
            ("limit", &limit.to_string()),
        ]);
        let groups: Vec<Value> = self.data(request).await?;
        let spenders: Vec<(UserId, Cents, u64)> = groups
            .iter()
            .filter_map(|group| {
                let user = UserId::parse(group["user"].as_str()?).ok()?;
                Some((
                    user,
                    Cents::from_json(&group["sum"]["cost_cents"]).unwrap_or_default(),
                    number(&group["count"]) as u64,
                ))
            })
            .collect();
        if spenders.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = spenders.iter().map(|(user, _, _)| user.to_string()).collect();
        let request = self.request(Method::GET, "/users").query(&[
            ("fields", "id,email"),
            ("filter[id][_in]", &ids.join(",")),
            ("limit", "-1"),
        ]);
        let users: Vec<User> = self.data(request).await?;
        let email = |id: UserId| users.iter().find(|u| u.id == id).and_then(|u| u.email.clone());
        Ok(spenders.into_iter().map(|(user, cost, calls)| (user, email(user), cost, calls)).collect())
    }
}

/// `YYYY-MM-DD` from Directus's grouping by `year(...)`, `month(...)` and `day(...)` of `occurred_at`, which
/// it answers as `occurred_at_year`, `occurred_at_month`, `occurred_at_day`.
fn day_of(group: &Value) -> Option<String> {
    let part = |name: &str| {
        let value = number(&group[format!("occurred_at_{name}")]);
        (value >= 1.0).then_some(value as u32)
    };
    Some(format!("{:04}-{:02}-{:02}", part("year")?, part("month")?, part("day")?))
}

/// A record as its collection's row: `api_key_usage` for BYOK calls, a `credit_transactions` deduction for
/// internal-credit calls. Money goes as an exact decimal string: the ledger keeps nine decimals.
fn usage_row(record: &UsageRecord) -> Value {
    let occurred_at = record.occurred_at.format(&Rfc3339).unwrap_or_default();
    let mut row = match record.source {
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
            "description": match &record.fallback_from {
                Some(asked) => format!("{} {} (fallback from {asked})", record.provider, record.model),
                None => format!("{} {}", record.provider, record.model),
            },
        }),
    };
    // Only when set: an install that predates the field stores the rest (Directus drops unknown fields).
    if let Some(asked) = &record.fallback_from {
        row["fallback_from"] = json!(asked);
    }
    row
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::accounting::outbox::tests::records;

    async fn directus(bulk: u16) -> (MockServer, DirectusClient) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/byok-bridge/usage/credit_transactions"))
            .respond_with(ResponseTemplate::new(bulk).set_body_json(json!({"data": {"received": 2}})))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/items/credit_transactions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
            .mount(&server)
            .await;
        let url = reqwest::Url::parse(&server.uri()).unwrap();
        let client = DirectusClient::new(url, SecretString::from("token"), Duration::from_secs(5));
        (server, client)
    }

    async fn posts_to(server: &MockServer, route: &str) -> Vec<Value> {
        let requests = server.received_requests().await.unwrap();
        requests.iter().filter(|r| r.url.path() == route).map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
    }

    #[tokio::test]
    async fn records_go_through_the_bulk_route_where_directus_offers_it() {
        let (server, client) = directus(200).await;
        let batch = records(2);
        client.store_usage(&batch).await.unwrap();
        client.store_usage(&batch).await.unwrap();
        let bulk = posts_to(&server, "/byok-bridge/usage/credit_transactions").await;
        assert_eq!(bulk.len(), 2, "both batches went through the bulk route");
        assert_eq!(bulk[0][1]["request_id"], json!(batch[1].request_id), "the whole batch in one request");
        assert_eq!(bulk[0][0]["transaction_type"], json!("deduction"));
        assert!(posts_to(&server, "/items/credit_transactions").await.is_empty(), "nothing through the items API");
    }

    #[tokio::test]
    async fn without_the_bulk_route_records_go_through_the_items_api_for_a_while() {
        let (server, client) = directus(404).await;
        let batch = records(2);
        client.store_usage(&batch).await.unwrap();
        client.clone().store_usage(&batch).await.unwrap();
        assert_eq!(posts_to(&server, "/byok-bridge/usage/credit_transactions").await.len(), 1, "asked once");
        let items = posts_to(&server, "/items/credit_transactions").await;
        assert_eq!(items.len(), 2, "each batch stored through the items API, the clone's too");
        assert_eq!(items[0], posts_to(&server, "/byok-bridge/usage/credit_transactions").await[0], "the same rows");
    }

    #[tokio::test]
    async fn the_bulk_route_is_asked_again_once_the_recheck_is_due() {
        let (server, client) = directus(404).await;
        client.store_usage(&records(1)).await.unwrap();
        let due = Instant::now().checked_sub(BULK_USAGE_RECHECK).unwrap();
        *sync::lock(&client.bulk_usage_missing) = Some(due);
        client.store_usage(&records(1)).await.unwrap();
        assert_eq!(posts_to(&server, "/byok-bridge/usage/credit_transactions").await.len(), 2, "asked again");
        assert_eq!(posts_to(&server, "/items/credit_transactions").await.len(), 2);
    }

    #[tokio::test]
    async fn once_the_bulk_route_is_back_records_go_through_it_again() {
        let (server, client) = directus(200).await;
        let due = Instant::now().checked_sub(BULK_USAGE_RECHECK).unwrap();
        *sync::lock(&client.bulk_usage_missing) = Some(due);
        client.store_usage(&records(1)).await.unwrap();
        assert_eq!(*sync::lock(&client.bulk_usage_missing), None, "no longer missing");
        client.store_usage(&records(1)).await.unwrap();
        assert_eq!(posts_to(&server, "/byok-bridge/usage/credit_transactions").await.len(), 2);
        assert!(posts_to(&server, "/items/credit_transactions").await.is_empty());
    }

    #[tokio::test]
    async fn a_batch_the_bulk_route_refuses_is_not_sent_to_the_items_api() {
        let (server, client) = directus(400).await;
        let refused = client.deliver(&records(2)).await.unwrap_err();
        assert!(matches!(refused, DeliveryError::Permanent(_)), "a refused batch is sent again record by record");
        assert!(posts_to(&server, "/items/credit_transactions").await.is_empty());
    }
}
