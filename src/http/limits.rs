//! Per-user limits on the endpoints that cost the platform something per call: key saves and checks (each asks
//! the provider from the platform's address), usage summaries (each reads a Directus aggregate), job submits
//! (each is stored, and later costs a provider call), budget changes (each writes Directus).

use std::sync::Arc;

use super::error::ApiError;
use crate::domain::user::UserId;
use crate::services::rate_limit::RateLimiter;
use crate::shared::redis::Redis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    KeyChecks,
    UsageReads,
    JobSubmits,
    /// `PUT /v1/budget`: each writes Directus.
    BudgetChanges,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::KeyChecks => "key_checks",
            Endpoint::UsageReads => "usage_reads",
            Endpoint::JobSubmits => "job_submits",
            Endpoint::BudgetChanges => "budget_changes",
        }
    }
}

struct Limit {
    limiter: RateLimiter,
    per_minute: u32,
}

pub struct EndpointLimits {
    key_checks: Limit,
    usage_reads: Limit,
    job_submits: Limit,
    budget_changes: Limit,
}

impl EndpointLimits {
    /// Per minute and user: key checks, usage reads, job submits, budget changes; with `redis`, across every
    /// replica.
    pub fn new(
        redis: Option<Arc<Redis>>,
        key_checks: u32,
        usage_reads: u32,
        job_submits: u32,
        budget_changes: u32,
    ) -> Self {
        let limit = |endpoint: Endpoint, per_minute| Limit {
            limiter: RateLimiter::new(endpoint.name(), redis.clone()),
            per_minute,
        };
        EndpointLimits {
            key_checks: limit(Endpoint::KeyChecks, key_checks),
            usage_reads: limit(Endpoint::UsageReads, usage_reads),
            job_submits: limit(Endpoint::JobSubmits, job_submits),
            budget_changes: limit(Endpoint::BudgetChanges, budget_changes),
        }
    }

    /// One call of `user` to `endpoint`, or `429 rate_limited` with the wait.
    pub async fn check(&self, endpoint: Endpoint, user: UserId) -> Result<(), ApiError> {
        let limit = match endpoint {
            Endpoint::KeyChecks => &self.key_checks,
            Endpoint::UsageReads => &self.usage_reads,
            Endpoint::JobSubmits => &self.job_submits,
            Endpoint::BudgetChanges => &self.budget_changes,
        };
        limit.limiter.acquire(user, limit.per_minute).await.map_err(|retry_after| {
            crate::metrics::rate_limited(endpoint.name());
            ApiError::TooManyRequests { retry_after }
        })
    }
}
