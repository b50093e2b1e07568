//! Durable jobs (`JOB_*`): workers, per-user caps, retries, retention and callbacks.

use std::time::Duration;

use super::reader::Reader;
use crate::crypto::webhook_signature::WebhookSecret;
use crate::domain::jobs::RetryPolicy;

/// What one user may keep in the queue (`JOB_MAX_WAITING_PER_USER`, `JOB_MAX_STORED_BYTES_PER_USER`): jobs
/// not finished, and bytes of requests of every job kept (until removed after `JOB_RETENTION_HOURS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCaps {
    pub waiting: u64,
    pub stored_bytes: u64,
}

/// How jobs run (`JOB_*` settings).
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Jobs running at once in this replica.
    pub workers: usize,
    /// Jobs of one user running at once (in this replica; across all replicas with Redis).
    pub per_user_cap: usize,
    pub retry: RetryPolicy,
    /// Finished jobs are removed this long after they finish.
    pub retention: Duration,
    /// Signs callbacks of jobs submitted without a per-job secret. Without it, each job gets its own secret,
    /// returned once when the job is submitted.
    pub callback_secret: Option<WebhookSecret>,
    /// Lets callbacks reach loopback and private addresses (development, or an app on the same network).
    pub allow_internal_callbacks: bool,
    pub callback_timeout: Duration,
    pub caps: UserCaps,
    /// Callbacks sent at once by this replica, of one user's jobs, and to one host.
    pub callbacks_at_once: usize,
    pub callbacks_per_user: usize,
    pub callbacks_per_host: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 32,
            per_user_cap: 4,
            retry: RetryPolicy::default(),
            retention: Duration::from_secs(7 * 86_400),
            callback_secret: None,
            allow_internal_callbacks: false,
            callback_timeout: Duration::from_secs(10),
            caps: UserCaps { waiting: 1_000, stored_bytes: 256 * 1024 * 1024 },
            callbacks_at_once: 64,
            callbacks_per_user: 4,
            callbacks_per_host: 8,
        }
    }
}

pub(super) fn read<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> JobsConfig {
    let defaults = JobsConfig::default();
    let workers = r.whole("JOB_WORKERS", defaults.workers, 0..=1024, "", "Use a number of workers, e.g. 32");
    let per_user_cap = r.whole(
        "JOB_PER_USER_CONCURRENCY",
        defaults.per_user_cap,
        1..=1024,
        "",
        "Use a number below JOB_WORKERS so one user cannot hold every worker, e.g. 4",
    );
    let hours = |h: u64| Duration::from_secs(h * 3600);
    let give_up_after = hours(r.whole("JOB_RETRY_HOURS", 24, 1..=720, "hours", "Use e.g. 24"));
    let retention = hours(r.whole("JOB_RETENTION_HOURS", 168, 1..=8760, "hours", "Use e.g. 168 (a week)"));
    let callback_secret = r.get("JOB_CALLBACK_SECRET").and_then(|raw| {
        WebhookSecret::parse(raw.trim())
            .map_err(|e| {
                r.problem(
                    "JOB_CALLBACK_SECRET",
                    e.to_string(),
                    "Generate one with: echo whsec_$(openssl rand -base64 32)",
                )
            })
            .ok()
    });
    let allow_internal_callbacks = r.boolean(
        "JOB_CALLBACKS_ALLOW_PRIVATE",
        false,
        "Use true only when the app that receives callbacks is on a private network or this machine",
    );
    let caps = UserCaps {
        waiting: r.whole("JOB_MAX_WAITING_PER_USER", defaults.caps.waiting, 1..=1_000_000, "jobs", "Use e.g. 1000"),
        stored_bytes: r.bytes(
            "JOB_MAX_STORED_BYTES_PER_USER",
            defaults.caps.stored_bytes,
            1 << 20..=1 << 40,
            "Use e.g. 268435456 (256 MiB)",
        ),
    };
    let callbacks_per_host =
        r.whole("JOB_CALLBACKS_PER_HOST", defaults.callbacks_per_host, 1..=1024, "callbacks", "Use e.g. 8");
    JobsConfig {
        workers,
        per_user_cap,
        retry: RetryPolicy { give_up_after, ..defaults.retry },
        retention,
        callback_secret,
        allow_internal_callbacks,
        callback_timeout: defaults.callback_timeout,
        caps,
        callbacks_per_host,
        ..defaults
    }
}
