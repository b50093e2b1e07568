//! The user's recent gateway calls, failed ones included: "why did this fail, and what did it cost".

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::error_code::Code;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, page_after};
use crate::services::call_log::CallLog;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;
const USAGE: &str = "Use ?limit=<1-200>&after=<call id>.";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CallsQuery {
    /// At most this many, newest first (default 50, at most 200).
    limit: Option<usize>,
    /// The previous page's `next`: calls older than it.
    after: Option<String>,
}

/// The user's calls through the gateway and jobs, newest first, a page at a time: time, provider, model, who
/// paid (`source`, null when refused first), the status answered, the error code of a failed call, tokens,
/// cost in cents (exact, as a string) and `id` (for a charged call, its `x-byok-usage-id`). `next` (when
/// present) is the `after` of the next page. Kept for `CALLS_RETENTION_DAYS`, at most `CALLS_KEPT_PER_USER`.
#[utoipa::path(get, path = "/v1/calls", tag = "usage", operation_id = "list_calls", security(("directus_token" = [])), params(CallsQuery),
    responses((status = 200, description = "`{\"calls\": [...], \"next\"?: \"<call id>\", \"kept\": {...}}`", body = Object),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 503, description = "`calls_unavailable`", body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(calls): State<Arc<CallLog>>,
    query: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::new(Code::InvalidRequest, USAGE))?;
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => return Err(ApiError::new(Code::InvalidRequest, USAGE)),
    };
    let after = page_after(query.after.as_deref(), "a call id")?;
    let page = calls.page(user, after, limit).await?;
    let retention = calls.retention();
    let mut answer = json!({
        "calls": page.calls,
        "kept": {"days": retention.max_age.as_secs() / 86_400, "calls": retention.kept_per_user},
    });
    if let Some(next) = page.next {
        answer["next"] = json!(next);
    }
    Ok(Json(answer))
}
