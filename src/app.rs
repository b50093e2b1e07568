//! Builds every service once, from [`Settings`], and hands them to the HTTP layer as its state.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::accounting::{Outbox, OutboxWriter};
use crate::auth::AccessTokenVerifier;
use crate::config::Settings;
use crate::crypto::webhook_signature::WebhookSecret;
use crate::directus::DirectusClient;
use crate::domain::jobs::CallbackUrl;
use crate::http::extract::{Access, LlmBodyLimit};
use crate::http::guard::Guard;
use crate::http::limits::EndpointLimits;
use crate::http::purchase_link::PurchaseLink;
use crate::http::routes::pages::AccountPage;
use crate::http::state::{AppState, Services};
use crate::providers::ProviderClient;
use crate::services::call_log::CallLog;
use crate::services::callers::{CallerDirectory, CallerReads};
use crate::services::circuit_breaker::CircuitBreaker;
use crate::services::flag_cache::FlagCache;
use crate::services::gateway::{CallLimits, Fallbacks, Gateway, KeyEvents, Upstream};
use crate::services::in_flight::InFlight;
use crate::services::jobs::{FlowCallbacks, JobServices, Jobs, JobsError};
use crate::services::key_vault::KeyVault;
use crate::services::meter::Meter;
use crate::services::notifier::Notifier;
use crate::services::payments::Payments;
use crate::services::platform_budget::{PlatformAlerts, PlatformBudget};
use crate::services::reservations::Reservations;
use crate::services::sessions::Sessions;
use crate::services::sign_in::SignInGuard;
use crate::services::spending_alerts::SpendingAlerts;
use crate::services::standing::Standings;
use crate::shared::bus::bus;
use crate::shared::claims::claims;
use crate::shared::redis::Redis;
use crate::store::Store;

/// Derives the secret of Flow jobs' callbacks from `FLOWS_TOKEN`; the Flows bundle uses the same words.
const FLOW_CALLBACK_PURPOSE: &str = "byok-bridge flow job callbacks";

/// Opens the store in `DATA_DIR` (locking it for this process) and everything built on it; with `redis`,
/// state replicas must agree on is kept there.
pub fn build(settings: &Settings, redis: Option<Arc<Redis>>) -> Result<AppState, JobsError> {
    let directus =
        DirectusClient::new(settings.directus_url.clone(), settings.directus_token.clone(), settings.directus_timeout);
    let providers = ProviderClient::new(
        settings.providers.base_urls.clone(),
        settings.provider_timeout,
        settings.provider_generation_timeout,
    );
    let flags = Arc::new(FlagCache::new(directus.clone(), settings.flag_cache_ttl));
    let callers = Arc::new(CallerDirectory::new(
        directus.clone(),
        settings.user_cache_ttl,
        settings.stale_caller_max_age,
        CallerReads {
            budgets: !settings.budgets.is_empty(),
            last_grant: settings.low_balance_alert.percent_of_last_grant.is_some(),
        },
    ));
    let vault = Arc::new(KeyVault::new(settings.keyring.clone(), directus.clone(), providers.clone()));
    let store = Arc::new(Store::open(&settings.data_dir.join("byok-bridge.db"))?);
    // Stored costs are kept as long as any ledger reading in use can predate them.
    let (fresh_reading, oldest_reading) =
        (settings.user_cache_ttl, settings.user_cache_ttl + settings.stale_caller_max_age);

    let claims = claims(redis.clone());
    let notifier = Arc::new(Notifier::new(
        directus.clone(),
        Arc::clone(&claims),
        settings.public_url.as_ref(),
        settings.payments.purchase_url.as_ref(),
    ));
    let scopes = std::iter::once((None, settings.platform_daily_budget))
        .chain(settings.platform_provider_budgets.iter().map(|(provider, cap)| (Some(*provider), Some(*cap))));
    let platform: Vec<_> = scopes
        .filter_map(|(scope, cap)| Some((scope, cap?)))
        .map(|(scope, cap)| {
            let recipients = settings.platform_budget_alert_emails.clone();
            let alerts =
                (!recipients.is_empty()).then(|| PlatformAlerts { notifier: Arc::clone(&notifier), recipients });
            PlatformBudget::new(scope, cap, directus.clone(), fresh_reading, alerts)
        })
        .collect();
    let reservations = match &redis {
        Some(redis) => {
            Reservations::in_redis(Arc::clone(redis), store.replica_id()?, fresh_reading, oldest_reading, platform)
        }
        None => Reservations::in_memory(fresh_reading, oldest_reading, platform),
    };
    if !settings.budgets.is_empty() {
        reservations.count_own_keys();
    }
    let outbox = Arc::new(Outbox::open(Arc::clone(&store))?);
    let bus = bus(redis.clone());
    let alerts = (!settings.budgets.is_empty() || settings.low_balance_alert.is_set()).then(|| {
        SpendingAlerts::new(
            settings.budget_alerts.clone(),
            settings.low_balance_alert,
            Arc::clone(&notifier),
            Arc::clone(&claims),
        )
    });
    let standings = Arc::new(Standings::new(
        Arc::clone(&flags),
        Arc::clone(&callers),
        Arc::clone(&reservations),
        Arc::clone(&settings.budgets),
        alerts,
        vault.is_configured(),
    ));
    let key_events =
        Arc::new(KeyEvents::new(Arc::clone(&vault), Arc::clone(&notifier), Arc::clone(&callers), Arc::clone(&bus)));
    let internal_keys = settings.providers.internal_keys.clone();
    let breaker = CircuitBreaker::new(settings.circuit_failure_threshold, settings.circuit_cool_down);
    let limits = CallLimits::new(
        settings.rate_limits,
        redis.clone(),
        settings.max_upstream_calls,
        settings.max_upstream_calls_per_user,
        settings.upstream_slot_wait,
    );
    let calls = Arc::new(CallLog::new(Arc::clone(&store), redis.clone(), settings.call_retention)?);
    let gateway = Arc::new(Gateway::new(
        Arc::clone(&standings),
        Arc::clone(&reservations),
        Arc::clone(&vault),
        Arc::new(Meter::new(
            OutboxWriter::start(Arc::clone(&outbox))?,
            Arc::clone(&settings.price_table),
            Arc::clone(&calls),
        )),
        Upstream::new(
            providers,
            internal_keys,
            breaker,
            settings.upstream_deadline,
            Fallbacks {
                chains: Arc::clone(&settings.providers.model_chains),
                rate_limited_own_keys: settings.providers.rate_limited_own_keys_fall_back,
            },
        ),
        limits,
        Arc::clone(&key_events),
    ));
    let payments = settings.payments.stripe.as_ref().map(|stripe| {
        Arc::new(Payments::new(
            stripe,
            directus.clone(),
            Arc::clone(&callers),
            Arc::clone(&bus),
            Arc::clone(&claims),
            Arc::clone(&notifier),
        ))
    });
    let sign_in = Arc::new(SignInGuard::open(Arc::clone(&store), redis.clone(), settings.sign_in)?);
    let jobs = Jobs::new(
        store,
        Arc::clone(&outbox),
        redis.clone(),
        JobServices { gateway: Arc::clone(&gateway), callers: Arc::clone(&callers), notifier },
        settings.clock.clone(),
        settings.jobs.clone(),
        flow_callbacks(settings),
    )?;
    Ok(AppState::new(Services {
        flags,
        callers,
        standings,
        key_events,
        vault,
        gateway,
        calls,
        jobs: Arc::new(jobs),
        reservations,
        access: Arc::new(access(settings, directus.clone())),
        directus,
        outbox,
        webhook_secret: Arc::new(settings.webhook_secret.clone()),
        bus,
        claims,
        limits: Arc::new(EndpointLimits::new(
            redis.clone(),
            settings.key_checks_per_minute,
            settings.usage_reads_per_minute,
            settings.job_submits_per_minute,
            settings.budget_changes_per_minute,
        )),
        redis,
        llm_body_limit: LlmBodyLimit(settings.max_llm_body_bytes),
        max_job_body_bytes: settings.max_job_body_bytes,
        guard: Guard {
            grace: settings.body_read_grace,
            min_bytes_per_sec: settings.body_min_bytes_per_sec,
            body_budget: Arc::new(Semaphore::new(settings.max_body_bytes_in_flight)),
        },
        sign_in,
        payments,
        purchase_link: PurchaseLink(settings.payments.purchase_url.as_ref().map(|url| Arc::from(url.as_str()))),
        account_page: Arc::new(AccountPage::new(&settings.account_embed_origins)),
    }))
}

/// What callers are checked against. Only digests of the operator and Flows tokens are kept.
fn access(settings: &Settings, directus: DirectusClient) -> Access {
    let digest = |token: &SecretString| Sha256::digest(token.expose_secret().as_bytes()).into();
    Access {
        tokens: AccessTokenVerifier::new(&settings.directus_secret),
        sessions: Arc::new(Sessions::new(directus, settings.session_check_ttl, settings.stale_caller_max_age)),
        operator_token_digest: settings.operator_token.as_ref().map(digest),
        flows_token_digest: settings.flows_token.as_ref().map(digest),
        trusted_proxies: settings.trusted_proxies.clone(),
        user_requests: InFlight::new(settings.max_requests_in_flight_per_user),
    }
}

/// Where jobs a Flow queues report back (the Flows bundle's endpoint in Directus), signed with a secret both ends
/// derive from `FLOWS_TOKEN`.
fn flow_callbacks(settings: &Settings) -> Option<FlowCallbacks> {
    let token = settings.flows_token.as_ref()?;
    let base = settings.directus_url.as_str().trim_end_matches('/');
    let url = CallbackUrl::parse(&format!("{base}/byok-bridge-flows/job-result"), true).ok()?;
    let secret = WebhookSecret::derived(token.expose_secret(), FLOW_CALLBACK_PURPOSE);
    Some(FlowCallbacks { url, secret: WebhookSecret::parse(secret.expose_secret()).ok()? })
}
