//! Typed configuration, parsed and validated once at startup. Every error names the variable and the fix,
//! and never echoes a value (most of these are secrets).

mod delivery;
mod jobs;
mod keys;
mod limits;
mod payments;
mod providers;
mod reader;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

pub use self::delivery::Delivery;
pub use self::jobs::{JobsConfig, UserCaps};
pub use self::limits::TierLimits;
pub use self::payments::{PaymentsConfig, StripeConfig};
pub use self::providers::ProviderSettings;
pub use self::reader::{ConfigError, ConfigProblem};
use self::reader::{Reader, http_url};
use crate::clock::Clock;
use crate::crypto::envelope::Keyring;
use crate::crypto::webhook_signature::WebhookSecret;
use crate::domain::budget::{AlertThresholds, BudgetCaps, BudgetPolicy, LowBalance, TierBudget};
use crate::domain::call::CallRetention;
use crate::domain::client_address::TrustedProxies;
use crate::domain::money::Cents;
use crate::domain::pricing::PriceTable;
use crate::domain::provider::Provider;
use crate::domain::sign_in::SignInPolicy;
use crate::domain::tier::SubscriptionTier;

/// What a request body limit may be set to: 64 KiB to 64 MiB.
const BODY_LIMITS: std::ops::RangeInclusive<u64> = 64 << 10..=64 << 20;

#[derive(Debug)]
pub struct Settings {
    pub bind_addr: SocketAddr,
    /// Serves `/metrics` on a listener of its own (e.g. an internal interface) instead of the API's.
    pub metrics_addr: Option<SocketAddr>,
    pub directus_url: Url,
    /// Static token of the sidecar's API-only Directus user.
    pub directus_token: SecretString,
    /// Redis for state shared by replicas (flag fan-out, rate limits, credit holds, deduplication); `None`
    /// keeps everything in this process.
    pub redis_url: Option<SecretString>,
    /// Bearer token for operator endpoints (`/v1/flags`); `None` turns them off. Never the Directus token, so
    /// neither credential opens the other's doors.
    pub operator_token: Option<SecretString>,
    /// The credential of the Directus Flows operation: it may call `/v1/route` and the gateway on behalf of a
    /// user named in `x-byok-on-behalf-of`, and nothing else. `None`: Flows cannot call the sidecar.
    pub flows_token: Option<SecretString>,
    /// The Directus `SECRET`, which signs its HS256 access tokens.
    pub directus_secret: SecretString,
    pub webhook_secret: WebhookSecret,
    /// Safety net when a webhook is lost; webhooks make flag changes visible at once.
    pub flag_cache_ttl: Duration,
    /// How often Directus is asked whether the flags changed without a webhook (SQL); `None`: never.
    pub flag_poll_interval: Option<Duration>,
    /// How long a user's tier, balance and key status are reused before Directus is asked again.
    pub user_cache_ttl: Duration,
    /// While Directus is unreachable, callers read within this long are served on their last known profile.
    pub stale_caller_max_age: Duration,
    /// How long a session-mode token's session is trusted after Directus last confirmed it.
    pub session_check_ttl: Duration,
    pub directus_timeout: Duration,
    /// `None` when `ENCRYPTION_KEY` is unset: BYOK reports "not configured", internal credits keep working.
    /// `ENCRYPTION_KEYS_PREVIOUS` adds keys that still decrypt, for rotation.
    pub keyring: Option<Arc<Keyring>>,
    /// Every declared provider's API root and platform key.
    pub providers: ProviderSettings,
    pub provider_timeout: Duration,
    /// How long a non-streaming gateway call may take to answer (its headers come when generation is done).
    pub provider_generation_timeout: Duration,
    /// How often keys stored `unverified` (provider unreachable when saved) are checked again.
    pub key_reverify_interval: Duration,
    /// How often keys marked `quota_exceeded` are checked again, each with a one-token call on its account.
    pub key_quota_recheck_interval: Duration,
    /// Holds the store (`byok-bridge.db`): usage records waiting for Directus. Must survive restarts (a volume
    /// in containers), and belongs to one process.
    pub data_dir: PathBuf,
    /// The file spool of earlier versions, imported into the store at startup if anything is left in it.
    pub legacy_spool_dir: PathBuf,
    /// How usage records go to Directus: records per request, requests in flight.
    pub delivery: Delivery,
    pub price_table: Arc<PriceTable>,
    pub rate_limits: TierLimits,
    /// Per user and minute: key saves and checks (each asks the provider from the platform's address), and
    /// usage summaries (each reads Directus).
    pub key_checks_per_minute: u32,
    pub usage_reads_per_minute: u32,
    /// Per user and minute: jobs submitted (each is stored, and later costs a provider call).
    pub job_submits_per_minute: u32,
    /// Per user and minute: changes to their own spending caps (each writes Directus).
    pub budget_changes_per_minute: u32,
    /// Total time one gateway call may spend retrying a provider.
    pub upstream_deadline: Duration,
    /// A provider's circuit opens after this many outages in a row and stays open this long.
    pub circuit_failure_threshold: u32,
    pub circuit_cool_down: Duration,
    /// Upper bound on concurrent provider calls; more wait for a slot, at most `upstream_slot_wait`.
    pub max_upstream_calls: usize,
    /// Calls one user may have running at once (in this replica); more are refused at once.
    pub max_upstream_calls_per_user: u32,
    pub upstream_slot_wait: Duration,
    /// Largest gateway request body accepted (prompts with images are large; the body is held in memory).
    pub max_llm_body_bytes: usize,
    /// Largest `POST /v1/jobs` body accepted: a job is stored until it is removed, so less than a live call.
    pub max_job_body_bytes: usize,
    /// A request body must arrive at `body_min_bytes_per_sec` after this grace period, or is answered `408`.
    pub body_read_grace: Duration,
    pub body_min_bytes_per_sec: u64,
    /// Bytes of request bodies held at once by the whole process; past it, `503 server_busy`.
    pub max_body_bytes_in_flight: usize,
    /// Requests one signed-in user may have in flight at once (in this replica).
    pub max_requests_in_flight_per_user: u32,
    /// A client that takes no bytes of its response for this long is disconnected, freeing its upstream slot.
    pub client_write_timeout: Duration,
    pub log_format: LogFormat,
    /// Where users reach this sidecar (`https://ai.example.com`): links in notifications and e-mails point to
    /// its account page. `None`: messages name the page without a link.
    pub public_url: Option<Url>,
    /// Origins (`https://app.example.com`) that may frame the account page and hand it a token.
    pub account_embed_origins: Vec<String>,
    /// Sign-in attempts let through per account in a row, and per client address a minute.
    pub sign_in: SignInPolicy,
    /// Proxies whose `X-Forwarded-For` names the client; empty: the socket's peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// Durable jobs: workers, per-user cap, retry horizon, retention, callback signing and reach.
    pub jobs: JobsConfig,
    /// Buying credits: the Stripe webhook and the "Buy credits" link.
    pub payments: PaymentsConfig,
    /// What all users together may spend on the platform's keys in a UTC day; `None`: no cap.
    pub platform_daily_budget: Option<Cents>,
    /// What all users together may spend in a UTC day on one provider's platform key
    /// (`PLATFORM_DAILY_BUDGET_CENTS_<PROVIDER>`), beside the budget for all.
    pub platform_provider_budgets: Vec<(Provider, Cents)>,
    /// E-mail addresses of the Directus users (admins) told when a platform budget is 80% and 100% spent.
    pub platform_budget_alert_emails: Vec<String>,
    /// Each tier's caps on credit spending per day and month.
    pub budgets: Arc<BudgetPolicy>,
    /// The shares of a cap at which its user is told how much is spent.
    pub budget_alerts: AlertThresholds,
    /// When a call leaves its user's credits low enough that they are told (once a day).
    pub low_balance_alert: LowBalance,
    /// How many of each user's calls `/v1/calls` keeps, and for how long.
    pub call_retention: CallRetention,
    /// The job queue's clock: the system's, except in tests that move through hours of retries at once.
    pub clock: Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Origins as a browser writes them (`https://app.example.com`, no path, no trailing slash): they go into the
/// account page's Content-Security-Policy and its token hand-over check, so nothing else may pass.
fn embed_origins(raw: &str) -> Result<Vec<String>, String> {
    raw.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(|entry| match Url::parse(entry) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && url.username().is_empty()
                    && url.password().is_none()
                    && !entry.ends_with('/') =>
            {
                Ok(url.origin().ascii_serialization())
            }
            _ => Err(format!("{entry:?} is not an origin")),
        })
        .collect()
}

/// `a@example.com, b@example.com`: addresses as Directus keeps them (lowercase), each once.
fn alert_emails(raw: &str) -> Result<Vec<String>, String> {
    let mut emails: Vec<String> = Vec::new();
    for email in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let plausible = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            return Err(format!("`{email}` is not an e-mail address"));
        }
        let email = email.to_lowercase();
        if !emails.contains(&email) {
            emails.push(email);
        }
    }
    Ok(emails)
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Parses settings from any variable source; tests pass a map instead of touching the process env.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader { lookup, problems: Vec::new() };

        let bind_addr = r.parsed(
            "BIND_ADDR",
            SocketAddr::from(([127, 0, 0, 1], 8787)),
            "Use host:port, e.g. 127.0.0.1:8787 (0.0.0.0:8787 inside a container)",
            |raw| raw.parse::<SocketAddr>().map_err(|_| "is not a host:port socket address"),
        );
        let metrics_addr = r.parsed(
            "METRICS_ADDR",
            None,
            "Use host:port, e.g. 127.0.0.1:9187, or leave it unset to serve /metrics on BIND_ADDR",
            |raw| raw.parse::<SocketAddr>().map(Some).map_err(|_| "is not a host:port socket address"),
        );
        let directus_url = r
            .required("DIRECTUS_URL", "Set it to the Directus base URL, e.g. http://127.0.0.1:8055")
            .and_then(|raw| match http_url(raw.trim()) {
                Ok(url) => Some(url),
                Err(problem) => {
                    r.problem("DIRECTUS_URL", problem, "Set it to the Directus base URL, e.g. http://127.0.0.1:8055");
                    None
                }
            });
        let directus_token = r
            .required("DIRECTUS_TOKEN", "Set it to the static token of the sidecar's API-only Directus user")
            .map(SecretString::from);
        let operator_token = r.get("OPERATOR_TOKEN").map(|t| SecretString::from(t.trim()));
        let flows_token = r.get("FLOWS_TOKEN").map(|t| SecretString::from(t.trim()));
        if let Some(flows) = &flows_token {
            let others = [&operator_token, &directus_token];
            if flows.expose_secret().len() < 32 {
                r.problem("FLOWS_TOKEN", "is shorter than 32 characters", "Generate one with: openssl rand -hex 32");
            } else if others.iter().any(|o| o.as_ref().is_some_and(|o| o.expose_secret() == flows.expose_secret())) {
                r.problem(
                    "FLOWS_TOKEN",
                    "is the same as OPERATOR_TOKEN or DIRECTUS_TOKEN",
                    "Generate a separate one: openssl rand -hex 32",
                );
            }
        }
        let redis_url = r.get("REDIS_URL").and_then(|raw| {
            let raw = raw.trim();
            match Url::parse(raw) {
                Ok(url) if matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {
                    Some(SecretString::from(raw))
                }
                _ => {
                    r.problem(
                        "REDIS_URL",
                        "is not a redis:// or rediss:// URL",
                        "Use e.g. redis://redis:6379/0 (the same Redis Directus uses is fine), or unset it for one replica",
                    );
                    None
                }
            }
        });
        if operator_token.as_ref().is_some_and(|operator| operator.expose_secret().len() < 32) {
            r.problem("OPERATOR_TOKEN", "is shorter than 32 characters", "Generate one with: openssl rand -hex 32");
        } else if let (Some(operator), Some(directus)) = (&operator_token, &directus_token)
            && operator.expose_secret() == directus.expose_secret()
        {
            r.problem(
                "OPERATOR_TOKEN",
                "is the same as DIRECTUS_TOKEN",
                "Generate a separate one: openssl rand -hex 32",
            );
        }
        let directus_secret = r
            .required("DIRECTUS_SECRET", "Set it to the same value as the SECRET of your Directus instance")
            .map(SecretString::from);
        let webhook_secret = r
            .required("WEBHOOK_SECRET", "Set it to the same whsec_... value as BYOK_BRIDGE_WEBHOOK_SECRET in Directus")
            .and_then(|raw| {
                WebhookSecret::parse(raw.trim())
                    .map_err(|e| {
                        r.problem(
                            "WEBHOOK_SECRET",
                            e.to_string(),
                            "Generate one with: echo whsec_$(openssl rand -base64 32)",
                        )
                    })
                    .ok()
            });
        let flag_cache_ttl = r.seconds("FLAG_CACHE_TTL_SECS", 300, 1..=86_400);
        let flag_poll_interval = Some(r.seconds("FLAG_POLL_SECS", 5, 0..=3_600)).filter(|d| !d.is_zero());
        let user_cache_ttl = r.seconds("USER_CACHE_TTL_SECS", 5, 1..=300);
        let stale_caller_max_age = r.seconds("STALE_CALLER_MAX_AGE_SECS", 900, 0..=86_400);
        let session_check_ttl = r.seconds("SESSION_CHECK_TTL_SECS", 30, 1..=3_600);
        let directus_timeout = r.seconds("DIRECTUS_TIMEOUT_SECS", 5, 1..=120);
        let keyring = keys::keyring(&mut r);
        let (providers, price_table) = providers::read(&mut r);
        let provider_timeout = r.seconds("PROVIDER_TIMEOUT_SECS", 30, 1..=600);
        let provider_generation_timeout = r.seconds("PROVIDER_GENERATION_TIMEOUT_SECS", 600, 1..=3_600);
        let key_reverify_interval = r.seconds("KEY_REVERIFY_INTERVAL_SECS", 600, 1..=86_400);
        let key_quota_recheck_interval = r.seconds("KEY_QUOTA_RECHECK_INTERVAL_SECS", 3_600, 1..=604_800);
        let data_dir = PathBuf::from(r.get("DATA_DIR").unwrap_or_else(|| "data".into()));
        let legacy_spool_dir = r.get("SPOOL_DIR").map_or_else(|| data_dir.join("spool"), PathBuf::from);
        let delivery = delivery::read(&mut r);
        let rate_limits = limits::read(&mut r);
        let max_upstream_calls_per_user = r.whole(
            "MAX_UPSTREAM_CALLS_PER_USER",
            32,
            limits::COUNTS,
            "calls",
            "Use a number below MAX_UPSTREAM_CALLS, e.g. 32",
        );
        let key_checks_per_minute = limits::per_minute(&mut r, "RATE_LIMIT_KEY_CHECKS_PER_MIN", 10);
        let usage_reads_per_minute = limits::per_minute(&mut r, "RATE_LIMIT_USAGE_READS_PER_MIN", 60);
        let job_submits_per_minute = limits::per_minute(&mut r, "RATE_LIMIT_JOB_SUBMITS_PER_MIN", 6_000);
        let budget_changes_per_minute = limits::per_minute(&mut r, "RATE_LIMIT_BUDGET_CHANGES_PER_MIN", 10);
        let upstream_deadline = r.seconds("UPSTREAM_DEADLINE_SECS", 30, 1..=600);
        let max_upstream_calls = r.whole("MAX_UPSTREAM_CALLS", 512, limits::COUNTS, "calls", "Use e.g. 512") as usize;
        let upstream_slot_wait = r.seconds("UPSTREAM_SLOT_WAIT_SECS", 10, 1..=600);
        let circuit_failure_threshold =
            r.whole("CIRCUIT_FAILURE_THRESHOLD", 5, 1..=1_000, "failures in a row", "Use e.g. 5");
        let circuit_cool_down = r.seconds("CIRCUIT_COOL_DOWN_SECS", 30, 1..=3_600);
        let max_llm_body_bytes =
            r.bytes("MAX_LLM_BODY_BYTES", 16 << 20, BODY_LIMITS, "Use e.g. 16777216 (16 MiB)") as usize;
        let max_job_body_bytes =
            r.bytes("MAX_JOB_BODY_BYTES", 4 << 20, BODY_LIMITS, "Use e.g. 4194304 (4 MiB)") as usize;
        let body_read_grace = r.seconds("BODY_READ_GRACE_SECS", 10, 1..=300);
        let body_min_bytes_per_sec =
            r.whole("BODY_MIN_BYTES_PER_SEC", 32 * 1024, 1024..=100 << 20, "bytes per second", "Use e.g. 32768");
        let max_body_bytes_in_flight = r.bytes(
            "MAX_BODY_BYTES_IN_FLIGHT",
            512 << 20,
            max_llm_body_bytes as u64..=64 << 30,
            "Use a number of bytes at least MAX_LLM_BODY_BYTES, e.g. 536870912 (512 MiB)",
        ) as usize;
        let max_requests_in_flight_per_user =
            r.whole("MAX_REQUESTS_IN_FLIGHT_PER_USER", 64, limits::COUNTS, "requests", "Use e.g. 64");
        let client_write_timeout = r.seconds("CLIENT_WRITE_TIMEOUT_SECS", 60, 1..=3_600);
        let log_format = r.parsed("LOG_FORMAT", LogFormat::Json, "Use json or text", |raw| match raw {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            _ => Err("must be json or text"),
        });

        let public_url = r.optional_url(
            "PUBLIC_URL",
            "Use the http(s) base URL users reach the sidecar at, e.g. https://ai.example.com",
        );
        let account_embed_origins = r.parsed(
            "ACCOUNT_EMBED_ORIGINS",
            Vec::new(),
            "List origins separated by spaces, each scheme://host[:port] with no path, e.g. https://app.example.com",
            embed_origins,
        );

        let jobs = jobs::read(&mut r);
        let payments = payments::read(&mut r);
        let mut tiers = Vec::new();
        for (defaults, ceilings, tier) in [
            ("BUDGET_FREE", "BUDGET_FREE_MAX", SubscriptionTier::Free),
            ("BUDGET_PREMIUM", "BUDGET_PREMIUM_MAX", SubscriptionTier::Premium),
            ("BUDGET_LIFETIME", "BUDGET_LIFETIME_MAX", SubscriptionTier::Lifetime),
        ] {
            const FIX: &str = "List caps in whole cents, e.g. credits.daily=500,credits.monthly=5000";
            let defaults = r.parsed(defaults, BudgetCaps::default(), FIX, str::parse).0;
            let ceilings = r.parsed(ceilings, BudgetCaps::default(), FIX, str::parse).0;
            tiers.push((tier, TierBudget { defaults, ceilings }));
        }
        let budgets = Arc::new(BudgetPolicy::with(tiers));
        let budget_alerts = r.parsed(
            "BUDGET_ALERT_PERCENTS",
            AlertThresholds::default(),
            "List percents of a cap, e.g. 50,80,100",
            str::parse,
        );
        let low_balance_alert = LowBalance {
            below: r.cents(
                "LOW_BALANCE_ALERT_CENTS",
                "Use whole cents, e.g. 200 to tell users when less than $2.00 is left",
            ),
            percent_of_last_grant: r.parsed(
                "LOW_BALANCE_ALERT_PERCENT",
                None,
                "Use a percent of the user's last grant, e.g. 10 to tell a $50 buyer when less than $5.00 is left",
                |raw| match raw.parse::<u8>() {
                    Ok(percent) if (1..=100).contains(&percent) => Ok(Some(percent)),
                    _ => Err("must be a whole percent from 1 to 100"),
                },
            ),
        };
        let platform_daily_budget = r.cents(
            "PLATFORM_DAILY_BUDGET_CENTS",
            "Use whole cents, e.g. 50000 for $500 a day, or leave it unset for no cap",
        );
        let call_retention = CallRetention {
            kept_per_user: r.whole("CALLS_KEPT_PER_USER", 500, 10..=10_000, "calls", "Use e.g. 500") as usize,
            max_age: Duration::from_secs(86_400 * r.whole("CALLS_RETENTION_DAYS", 30, 1..=400, "days", "Use e.g. 30")),
        };
        let platform_provider_budgets: Vec<(Provider, Cents)> = Provider::all()
            .filter_map(|provider| {
                let fix = "Use whole cents, e.g. 20000 for $200 a day on this provider's key";
                Some((provider, r.cents(provider.daily_budget_var(), fix)?))
            })
            .collect();
        let platform_budget_alert_emails = r.parsed(
            "PLATFORM_BUDGET_ALERT_EMAILS",
            Vec::new(),
            "List the e-mail addresses of Directus users (your admins), e.g. ops@example.com,admin@example.com",
            alert_emails,
        );
        let no_budget = platform_daily_budget.is_none() && platform_provider_budgets.is_empty();
        if no_budget && !platform_budget_alert_emails.is_empty() {
            r.problem(
                "PLATFORM_BUDGET_ALERT_EMAILS",
                "is set but PLATFORM_DAILY_BUDGET_CENTS is not: there is no budget to warn of",
                "Set PLATFORM_DAILY_BUDGET_CENTS (or one per provider) too, or unset PLATFORM_BUDGET_ALERT_EMAILS",
            );
        }
        let sign_in = SignInPolicy {
            failures_per_account: r.whole(
                "LOGIN_FAILURES_PER_ACCOUNT",
                10,
                1..=1_000,
                "",
                "Use a number below Directus's auth_login_attempts (25 by default), e.g. 10",
            ),
            attempts_per_address_per_minute: limits::per_minute(&mut r, "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MIN", 10),
        };
        let trusted_proxies = r.parsed(
            "TRUSTED_PROXIES",
            TrustedProxies::default(),
            "List the proxies' addresses or networks, e.g. 10.0.0.0/8, 127.0.0.1",
            TrustedProxies::parse,
        );

        match (directus_url, directus_token, directus_secret, webhook_secret, price_table) {
            (
                Some(directus_url),
                Some(directus_token),
                Some(directus_secret),
                Some(webhook_secret),
                Some(price_table),
            ) if r.problems.is_empty() => Ok(Settings {
                bind_addr,
                metrics_addr,
                directus_url,
                directus_token,
                operator_token,
                flows_token,
                redis_url,
                directus_secret,
                webhook_secret,
                flag_cache_ttl,
                flag_poll_interval,
                user_cache_ttl,
                stale_caller_max_age,
                session_check_ttl,
                directus_timeout,
                keyring,
                providers,
                provider_timeout,
                provider_generation_timeout,
                key_reverify_interval,
                key_quota_recheck_interval,
                data_dir,
                legacy_spool_dir,
                delivery,
                price_table,
                rate_limits,
                key_checks_per_minute,
                usage_reads_per_minute,
                job_submits_per_minute,
                budget_changes_per_minute,
                upstream_deadline,
                max_upstream_calls,
                max_upstream_calls_per_user,
                upstream_slot_wait,
                circuit_failure_threshold,
                circuit_cool_down,
                max_llm_body_bytes,
                max_job_body_bytes,
                body_read_grace,
                body_min_bytes_per_sec,
                max_body_bytes_in_flight,
                max_requests_in_flight_per_user,
                client_write_timeout,
                log_format,
                public_url,
                account_embed_origins,
                sign_in,
                trusted_proxies,
                jobs,
                payments,
                platform_daily_budget,
                platform_provider_budgets,
                platform_budget_alert_emails,
                budgets,
                budget_alerts,
                low_balance_alert,
                call_retention,
                clock: Clock::system(),
            }),
            _ => Err(ConfigError(r.problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY_HEX: &str = "8f3a9c2e71d4b6a05e9f1c3d7b2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f";
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("DIRECTUS_URL", "http://127.0.0.1:8055".to_owned()),
            ("DIRECTUS_TOKEN", "service-token-value".to_owned()),
            ("DIRECTUS_SECRET", "directus-secret-value".to_owned()),
            ("WEBHOOK_SECRET", WHSEC.to_owned()),
        ])
    }

    fn parse(vars: &HashMap<&'static str, String>) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let s = parse(&base()).unwrap();
        assert_eq!(s.bind_addr.to_string(), "127.0.0.1:8787");
        assert_eq!(s.flag_cache_ttl, Duration::from_secs(300));
        assert!(s.keyring.is_none());
        assert_eq!(s.providers.base_urls.get(Provider::openai()).as_str(), "https://api.openai.com/v1");
        let mistral = "mistral".parse().unwrap();
        assert_eq!(s.providers.base_urls.get(mistral).as_str(), "https://api.mistral.ai/v1");
        assert!(s.providers.internal_keys.get(mistral).is_none());
        assert_eq!((s.jobs.workers, s.jobs.per_user_cap), (32, 4));
        assert_eq!(s.jobs.retry.give_up_after, Duration::from_secs(24 * 3600));
        assert!(s.jobs.callback_secret.is_none() && !s.jobs.allow_internal_callbacks);
    }

    #[test]
    fn spending_alerts_are_checked_and_named() {
        let mut vars = base();
        vars.insert("PLATFORM_DAILY_BUDGET_CENTS", "50000".to_owned());
        vars.insert("PLATFORM_BUDGET_ALERT_EMAILS", " Ops@Example.com, admin@example.com,ops@example.com ".to_owned());
        vars.insert("LOW_BALANCE_ALERT_PERCENT", "10".to_owned());
        let s = parse(&vars).unwrap();
        assert_eq!(s.platform_budget_alert_emails, ["ops@example.com", "admin@example.com"]);
        assert_eq!(s.low_balance_alert, LowBalance { below: None, percent_of_last_grant: Some(10) });
        vars.insert("PLATFORM_BUDGET_ALERT_EMAILS", "ops@example.com, not an address".to_owned());
        vars.insert("LOW_BALANCE_ALERT_PERCENT", "0".to_owned());
        let named: Vec<_> = parse(&vars).unwrap_err().0.iter().map(|p| p.var).collect();
        assert_eq!(named, ["LOW_BALANCE_ALERT_PERCENT", "PLATFORM_BUDGET_ALERT_EMAILS"]);
        vars.remove("PLATFORM_DAILY_BUDGET_CENTS");
        vars.remove("LOW_BALANCE_ALERT_PERCENT");
        vars.insert("PLATFORM_BUDGET_ALERT_EMAILS", "ops@example.com".to_owned());
        let problems = parse(&vars).unwrap_err().0;
        assert!(problems[0].to_string().contains("PLATFORM_DAILY_BUDGET_CENTS is not"), "{problems:?}");
    }

    #[test]
    fn job_settings_are_checked_and_named() {
        let mut vars = base();
        vars.insert("JOB_WORKERS", "8".to_owned());
        vars.insert("JOB_RETRY_HOURS", "48".to_owned());
        vars.insert("JOB_CALLBACKS_ALLOW_PRIVATE", "true".to_owned());
        let s = parse(&vars).unwrap();
        assert_eq!((s.jobs.workers, s.jobs.retry.give_up_after), (8, Duration::from_secs(48 * 3600)));
        assert!(s.jobs.allow_internal_callbacks);
        vars.insert("JOB_RETRY_HOURS", "0".to_owned());
        vars.insert("JOB_CALLBACK_SECRET", "not-a-whsec".to_owned());
        vars.insert("JOB_CALLBACKS_ALLOW_PRIVATE", "maybe".to_owned());
        let problems = parse(&vars).unwrap_err().0;
        let named: Vec<_> = problems.iter().map(|p| p.var).collect();
        assert_eq!(named, ["JOB_RETRY_HOURS", "JOB_CALLBACK_SECRET", "JOB_CALLBACKS_ALLOW_PRIVATE"], "{problems:?}");
        assert!(problems.iter().all(|p| !p.to_string().contains("not-a-whsec")));
    }

    #[test]
    fn embedding_origins_must_be_bare_origins() {
        let mut vars = base();
        vars.insert("ACCOUNT_EMBED_ORIGINS", "https://app.example.com, http://localhost:3000".to_owned());
        assert_eq!(parse(&vars).unwrap().account_embed_origins, ["https://app.example.com", "http://localhost:3000"]);
        for bad in ["https://app.example.com/", "https://app.example.com/x", "javascript:alert(1)", "'none'", "*"] {
            vars.insert("ACCOUNT_EMBED_ORIGINS", bad.to_owned());
            let text = parse(&vars).unwrap_err().to_string();
            assert!(text.contains("ACCOUNT_EMBED_ORIGINS"), "{bad}: {text}");
        }
        assert!(parse(&base()).unwrap().account_embed_origins.is_empty());
    }

    #[test]
    fn the_flows_token_is_long_and_its_own() {
        let mut vars = base();
        vars.insert("FLOWS_TOKEN", "f".repeat(40));
        assert!(parse(&vars).unwrap().flows_token.is_some());
        vars.insert("FLOWS_TOKEN", "too-short".to_owned());
        assert!(parse(&vars).unwrap_err().to_string().contains("FLOWS_TOKEN: is shorter than 32 characters"));
        vars.insert("DIRECTUS_TOKEN", "d".repeat(40));
        vars.insert("FLOWS_TOKEN", "d".repeat(40));
        let text = parse(&vars).unwrap_err().to_string();
        assert!(text.contains("FLOWS_TOKEN: is the same as") && !text.contains(&"d".repeat(40)), "{text}");
    }

    #[test]
    fn reports_every_missing_variable_at_once() {
        let err = parse(&HashMap::new()).unwrap_err();
        let vars: Vec<_> = err.0.iter().map(|p| p.var).collect();
        assert_eq!(vars, ["DIRECTUS_URL", "DIRECTUS_TOKEN", "DIRECTUS_SECRET", "WEBHOOK_SECRET"]);
    }

    #[test]
    fn bad_encryption_keys_name_the_variable_but_never_the_value() {
        for bad in [KEY_HEX[..63].to_owned(), format!("{KEY_HEX}a"), KEY_HEX.replace('f', "z"), "0".repeat(64)] {
            let bad = bad.as_str();
            let mut vars = base();
            vars.insert("ENCRYPTION_KEY", bad.to_string());
            let err = parse(&vars).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.0.len(), 1, "{text}");
            assert!(text.contains("ENCRYPTION_KEY") && text.contains("openssl rand -hex 32"), "{text}");
            assert!(!text.contains(bad), "value leaked: {text}");
        }
    }

    #[test]
    fn a_valid_encryption_key_configures_the_vault() {
        let mut vars = base();
        vars.insert("ENCRYPTION_KEY", KEY_HEX.to_owned());
        assert!(parse(&vars).unwrap().keyring.is_some());
    }

    #[test]
    fn previous_keys_are_validated_one_by_one_and_need_a_current_key() {
        let other = KEY_HEX.replace('8', "9");
        let mut vars = base();
        vars.insert("ENCRYPTION_KEY", KEY_HEX.to_owned());
        vars.insert("ENCRYPTION_KEYS_PREVIOUS", format!("{other}, {}", &other[..10]));
        let text = parse(&vars).unwrap_err().to_string();
        assert!(text.contains("ENCRYPTION_KEYS_PREVIOUS: entry 2 must be exactly 64 hex"), "{text}");
        assert!(!text.contains(&other[..10]), "{text}");

        vars.insert("ENCRYPTION_KEYS_PREVIOUS", KEY_HEX.to_owned());
        assert!(parse(&vars).unwrap_err().to_string().contains("share the key id"));

        vars.insert("ENCRYPTION_KEYS_PREVIOUS", other.clone());
        assert!(parse(&vars).is_ok());
        vars.remove("ENCRYPTION_KEY");
        assert!(parse(&vars).unwrap_err().to_string().contains("ENCRYPTION_KEY: is not set"));
    }

    #[test]
    fn invalid_values_are_reported_without_echoing_them() {
        let mut vars = base();
        vars.insert("WEBHOOK_SECRET", "plain-secret-without-prefix".to_owned());
        vars.insert("DIRECTUS_URL", "ftp://example.com".to_owned());
        vars.insert("FLAG_CACHE_TTL_SECS", "0".to_owned());
        vars.insert("BIND_ADDR", "localhost".to_owned());
        let err = parse(&vars).unwrap_err();
        let text = err.to_string();
        let vars_named: Vec<_> = err.0.iter().map(|p| p.var).collect();
        assert_eq!(vars_named, ["BIND_ADDR", "DIRECTUS_URL", "WEBHOOK_SECRET", "FLAG_CACHE_TTL_SECS"]);
        assert!(!text.contains("plain-secret-without-prefix"), "{text}");
    }

    #[test]
    fn usage_delivery_is_tunable_within_what_directus_takes() {
        assert_eq!(
            parse(&base()).unwrap().delivery,
            Delivery { batch: 500, concurrency: 1, linger: Duration::from_millis(100) }
        );
        let mut vars = base();
        vars.insert("USAGE_BATCH_SIZE", "250".to_owned());
        vars.insert("USAGE_DELIVERY_CONCURRENCY", "2".to_owned());
        vars.insert("USAGE_DELIVERY_LINGER_MS", "20".to_owned());
        assert_eq!(
            parse(&vars).unwrap().delivery,
            Delivery { batch: 250, concurrency: 2, linger: Duration::from_millis(20) }
        );
        vars.insert("USAGE_BATCH_SIZE", "5000".to_owned());
        vars.insert("USAGE_DELIVERY_CONCURRENCY", "0".to_owned());
        vars.insert("USAGE_DELIVERY_LINGER_MS", "60000".to_owned());
        let named: Vec<_> = parse(&vars).unwrap_err().0.iter().map(|p| p.var).collect();
        assert_eq!(named, ["USAGE_BATCH_SIZE", "USAGE_DELIVERY_CONCURRENCY", "USAGE_DELIVERY_LINGER_MS"]);
    }

    #[test]
    fn the_operator_token_must_differ_from_the_directus_token() {
        let mut vars = base();
        let shared = "service-token-value-of-32-characters";
        vars.insert("DIRECTUS_TOKEN", shared.to_owned());
        vars.insert("OPERATOR_TOKEN", shared.to_owned());
        let err = parse(&vars).unwrap_err();
        assert_eq!(err.0.iter().map(|p| p.var).collect::<Vec<_>>(), ["OPERATOR_TOKEN"]);
        assert!(!err.to_string().contains(shared), "{err}");
        vars.insert("OPERATOR_TOKEN", "operator-token-value-of-32-characters".to_owned());
        assert!(parse(&vars).unwrap().operator_token.is_some());
        assert!(parse(&base()).unwrap().operator_token.is_none(), "unset: operator endpoints are off");
    }

    #[test]
    fn the_operator_token_is_long_enough_not_to_be_guessed() {
        let mut vars = base();
        vars.insert("OPERATOR_TOKEN", "short-operator-token".to_owned());
        let text = parse(&vars).unwrap_err().to_string();
        assert!(text.contains("OPERATOR_TOKEN: is shorter than 32 characters"), "{text}");
        assert!(!text.contains("short-operator-token"), "{text}");
        vars.insert("OPERATOR_TOKEN", "o".repeat(32));
        assert!(parse(&vars).is_ok());
    }

    #[test]
    fn debug_output_redacts_every_secret() {
        let mut vars = base();
        vars.insert("ENCRYPTION_KEY", KEY_HEX.to_owned());
        vars.insert("OPERATOR_TOKEN", "operator-token-value-of-32-characters".to_owned());
        let callbacks = "whsec_Y2FsbGJhY2stc2VjcmV0LWZvci1qb2JzLTAxMjM0NQ==";
        vars.insert("JOB_CALLBACK_SECRET", callbacks.to_owned());
        let debug = format!("{:?}", parse(&vars).unwrap());
        for secret in [
            "service-token-value",
            "operator-token-value-of-32-characters",
            "directus-secret-value",
            WHSEC,
            &WHSEC[6..],
            KEY_HEX,
            &callbacks[6..],
        ] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }
}
