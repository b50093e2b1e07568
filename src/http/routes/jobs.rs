//! Durable jobs: an LLM call queued instead of waited for. Same authentication as the gateway, and the same
//! request bodies; a user sees and changes only their own jobs (another user's job id is a 404).

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::sync::Arc;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::error_code::Code;
use crate::domain::jobs::{CallbackUrl, JobStatus, parse_api};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{AuthenticatedUser, JsonBytes, Operator, ViaFlow, from_json, page_after};
use crate::http::limits::{Endpoint, EndpointLimits};
use crate::http::routes::gateway::refused_body;
use crate::services::jobs::{Jobs, JobsError, NewCallback, NewJob};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const DEFAULT_LIST: usize = 50;
const MAX_LIST: usize = 200;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob<'a> {
    /// `"chat.completions"` (OpenAI) or `"messages"` (Anthropic).
    api: Cow<'a, str>,
    /// The body the gateway's endpoint for `api` takes; not streaming. Kept as the text it arrived as: it is
    /// stored and sent exactly so, and never built into a tree (a body of many tiny values would cost many
    /// times its size).
    #[serde(borrow)]
    #[schema(value_type = Object)]
    request: &'a RawValue,
    /// Where the finished job is posted, signed per Standard Webhooks.
    callback_url: Option<Cow<'a, str>>,
    /// Kept with the job and returned as is (a JSON object of at most 16 KiB).
    #[serde(borrow)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<&'a RawValue>,
    /// Tell the user through Directus if the job fails for good.
    #[serde(default)]
    notify_on_failure: bool,
}

const EXPECTED: &str = r#"{"api": "chat.completions" | "messages" | "responses" | "embeddings", "request": {...}, "callback_url"?: "https://...", "metadata"?: {...}}"#;

/// What a replay with the same `Idempotency-Key` must repeat: everything the job was submitted with.
fn fingerprint(body: &SubmitJob<'_>) -> String {
    let mut digest = Sha256::new();
    for part in [
        body.api.as_bytes(),
        body.request.get().as_bytes(),
        body.callback_url.as_deref().unwrap_or_default().as_bytes(),
        body.metadata.map_or("", |m| m.get()).as_bytes(),
        if body.notify_on_failure { b"notify" } else { b"quiet" },
    ] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    hex::encode(&digest.finalize()[..16])
}

/// `metadata` as stored: an object of at most 16 KiB, measured before it is parsed.
fn metadata(raw: Option<&RawValue>) -> Result<Option<Value>, ApiError> {
    let refused = || ApiError::from(Code::InvalidMetadata);
    let Some(raw) = raw else { return Ok(None) };
    if raw.get().len() > MAX_METADATA_BYTES {
        return Err(refused());
    }
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => Ok(None),
        Ok(object @ Value::Object(_)) => Ok(Some(object)),
        _ => Err(refused()),
    }
}

/// Queues an LLM call. Answers `202` with the job's id at once; the result is read with `GET /v1/jobs/{id}`
/// or posted to `callback_url`. With an `Idempotency-Key`, a repeated submit returns the first job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", operation_id = "submit_job", security(("directus_token" = [])),
    request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried submit return the same job")),
    responses(
        (status = 202, description = "`{\"id\", \"status\"}`, and `callback_secret` (shown once) when the job has its own", body = Object),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "`payload_too_large`: more than `MAX_JOB_BODY_BYTES`", body = ErrorBody),
        (status = 422, description = "`streaming_not_supported`, `invalid_callback_url`, `idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: more than `RATE_LIMIT_JOB_SUBMITS_PER_MIN` submits; `job_queue_full`, `job_storage_full`: the user's caps", body = ErrorBody)))]
pub async fn submit(
    AuthenticatedUser(user): AuthenticatedUser,
    via_flow: Option<Extension<ViaFlow>>,
    State(jobs): State<Arc<Jobs>>,
    State(limits): State<Arc<EndpointLimits>>,
    headers: HeaderMap,
    JsonBytes(raw): JsonBytes,
) -> Result<Response, ApiError> {
    let body: SubmitJob<'_> = from_json(&raw, EXPECTED)?;
    let api = parse_api(&body.api).ok_or_else(|| {
        ApiError::new(
            Code::InvalidRequest,
            r#""api" must be "chat.completions", "messages", "responses" or "embeddings"."#,
        )
    })?;
    let request = jobs.parse(api, &raw.slice_ref(body.request.get().as_bytes())).map_err(refused_body)?;
    if request.stream {
        return Err(Code::StreamingNotSupported.into());
    }
    let chosen = body
        .callback_url
        .as_deref()
        .map(|raw| CallbackUrl::parse(raw, jobs.allows_internal_callbacks()))
        .transpose()
        .map_err(|e| ApiError::new(Code::InvalidCallbackUrl, e.to_string()))?;
    let callback = match (chosen, via_flow) {
        (Some(url), _) => Some(NewCallback::App(url)),
        // A Flow's job reports to the Flows bundle in Directus, which writes the answer where the Flow said.
        (None, Some(_)) if jobs.reports_to_flows() => Some(NewCallback::Flows),
        (None, _) => None,
    };
    let metadata = metadata(body.metadata)?;
    let idempotency_key = idempotency_key(&headers)?;
    // Every job is stored and later calls a provider: a user may not fill the queue faster than this.
    limits.check(Endpoint::JobSubmits, user).await?;
    let (model, fingerprint) = (request.model.clone(), fingerprint(&body));
    let job = NewJob {
        api,
        request,
        metadata,
        idempotency_key,
        fingerprint: fingerprint.clone(),
        callback,
        notify_on_failure: body.notify_on_failure,
    };
    let submitted = jobs.submit(user, job).await?;
    let record = &submitted.record;
    if !submitted.created && !record.replayed_by(&body.api, &model, &fingerprint) {
        return Err(Code::IdempotencyKeyReused.into());
    }
    let mut answer = json!({"id": record.id, "status": record.status});
    if let Some(secret) = &submitted.callback_secret {
        answer["callback_secret"] = json!(secret.expose_secret());
    }
    let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
    response.headers_mut().insert("location", location(record.id));
    if !submitted.created {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn location(id: Uuid) -> HeaderValue {
    HeaderValue::try_from(format!("/v1/jobs/{id}")).expect("a path with a UUID is a header value")
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::new(
            Code::InvalidIdempotencyKey,
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice).",
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this status.
    status: Option<String>,
    /// At most this many, newest first (default 50, at most 200).
    limit: Option<usize>,
    /// The previous page's `next`: jobs older than it.
    after: Option<String>,
}

/// The user's jobs, newest first, a page at a time: `next` (when present) is the `after` of the next page.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", operation_id = "list_jobs", security(("directus_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "`{\"jobs\": [...], \"next\"?: \"<job id>\"}`", body = Object), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn list(
    AuthenticatedUser(user): AuthenticatedUser,
    State(jobs): State<Arc<Jobs>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(
            Code::InvalidRequest,
            "Use ?status=<queued|running|paused|succeeded|failed|cancelled>&limit=<1-200>&after=<job id>.",
        )
    })?;
    let status = query
        .status
        .as_deref()
        .map(|raw| {
            JobStatus::parse(raw).ok_or_else(|| {
                ApiError::new(
                    Code::InvalidRequest,
                    "status must be one of queued, running, paused, succeeded, failed, cancelled.",
                )
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
    let after = page_after(query.after.as_deref(), "a job id")?;
    let page = jobs.list(user, status, limit, after).await?;
    let mut answer = json!({"jobs": page.jobs.iter().map(|j| j.view()).collect::<Vec<_>>()});
    if let Some(next) = page.next {
        answer["next"] = json!(next);
    }
    Ok(Json(answer))
}

fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::from(JobsError::NotFound))
}

/// One of the user's jobs: status, attempts, next attempt, and the result (the provider's complete answer)
/// or a coded error, with its cost.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "get_job", security(("directus_token" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    AuthenticatedUser(user): AuthenticatedUser,
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = jobs.get(user, job_id(&id)?).await?;
    Ok(Json(job.view()))
}

/// Queues a failed or paused job again, now.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", operation_id = "retry_job", security(("directus_token" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "`job_not_retryable`: the job is not failed or paused", body = ErrorBody)))]
pub async fn retry(
    AuthenticatedUser(user): AuthenticatedUser,
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match jobs.retry(user, job_id(&id)?).await {
        Ok(job) => Ok(Json(job.view())),
        Err(error) => Err(error.into()),
    }
}

/// Cancels a queued, paused or running job. A running call still finishes (and is charged); its result is
/// not kept.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", operation_id = "cancel_job", security(("directus_token" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "`job_finished`", body = ErrorBody)))]
pub async fn cancel(
    AuthenticatedUser(user): AuthenticatedUser,
    State(jobs): State<Arc<Jobs>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match jobs.cancel(user, job_id(&id)?).await {
        Ok(job) => Ok(Json(job.view())),
        Err(error) => Err(error.into()),
    }
}

/// Jobs by status in the queue this replica uses (the whole cluster's with Redis), for the operations view.
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "operator", operation_id = "job_counts", security(("operator_token" = [])),
    responses((status = 200, description = "`{\"backend\": \"embedded\" | \"redis\", \"counts\": {status: n}}`", body = Object),
              (status = 401, body = ErrorBody), (status = 404, description = "no `OPERATOR_TOKEN` set", body = ErrorBody)))]
pub async fn counts(_: Operator, State(jobs): State<Arc<Jobs>>) -> Result<Json<Value>, ApiError> {
    let counts = jobs.counts().await?;
    let counts: serde_json::Map<String, Value> =
        JobStatus::ALL.iter().map(|s| (s.as_str().to_owned(), json!(counts.get(s).copied().unwrap_or(0)))).collect();
    Ok(Json(json!({"backend": jobs.backend(), "counts": counts})))
}
