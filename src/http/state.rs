use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::accounting::{Outbox, OutboxWriter};
use crate::auth::AccessTokenVerifier;
use crate::config::Settings;
use crate::crypto::webhook_signature::{TOLERANCE_SECS, WebhookSecret};
use crate::directus::DirectusClient;
use crate::providers::ProviderClient;
use crate::services::callers::CallerDirectory;
use crate::services::circuit_breaker::CircuitBreaker;
use crate::services::flag_store::FlagStore;
use crate::services::gateway::{Gateway, InternalKeys};
use crate::services::key_vault::KeyVault;
use crate::services::meter::Meter;
use crate::services::notifier::Notifier;
use crate::services::rate_limit::RateLimiter;
use crate::services::reservations::Reservations;
use crate::services::sessions::Sessions;
use crate::store::{Store, StoreError};

/// Shared by every handler. Cheap to clone: everything heavy is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub flags: Arc<FlagStore>,
    pub callers: Arc<CallerDirectory>,
    pub vault: Arc<KeyVault>,
    pub gateway: Arc<Gateway>,
    pub reservations: Arc<Reservations>,
    pub directus: DirectusClient,
    /// Usage records waiting for Directus.
    pub outbox: Arc<Outbox>,
    pub tokens: Arc<AccessTokenVerifier>,
    pub sessions: Arc<Sessions>,
    pub webhook_secret: Arc<WebhookSecret>,
    /// SHA-256 of `OPERATOR_TOKEN`: enough to check a presented token, useless to anyone reading memory
    /// dumps of this struct. `None`: operator endpoints are off.
    pub operator_token_digest: Option<[u8; 32]>,
    pub vault_configured: bool,
    pub flag_cache_ttl: Duration,
    /// Webhook ids already applied, kept for twice the replay window so a redelivery is a harmless no-op.
    pub applied_webhooks: Cache<String, ()>,
    /// Per-user limits on endpoints that cost the platform a provider call or a Directus aggregate.
    pub key_checks: Arc<RateLimiter>,
    pub key_checks_per_minute: u32,
    pub usage_reads: Arc<RateLimiter>,
    pub usage_reads_per_minute: u32,
    pub max_llm_body_bytes: usize,
}

impl AppState {
    /// Opens the store in `DATA_DIR` (locking it for this process) and everything built on it.
    pub fn new(settings: &Settings) -> Result<Self, StoreError> {
        let directus = DirectusClient::new(
            settings.directus_url.clone(),
            settings.directus_token.clone(),
            settings.directus_timeout,
        );
        let providers = ProviderClient::new(
            settings.openai_base_url.clone(),
            settings.anthropic_base_url.clone(),
            settings.provider_timeout,
            settings.provider_generation_timeout,
        );
        let flags = Arc::new(FlagStore::new(directus.clone(), settings.flag_cache_ttl));
        let callers =
            Arc::new(CallerDirectory::new(directus.clone(), settings.user_cache_ttl, settings.stale_caller_max_age));
        let vault = Arc::new(KeyVault::new(settings.keyring.clone(), directus.clone(), providers.clone()));
        let store = Arc::new(Store::open(&settings.data_dir.join("byok-bridge.db"))?);
        let outbox = Arc::new(Outbox::open(store)?);
        // Stored costs are kept as long as any ledger reading in use can predate them.
        let reservations =
            Reservations::in_memory(settings.user_cache_ttl, settings.user_cache_ttl + settings.stale_caller_max_age);
        let gateway = Arc::new(Gateway {
            flags: Arc::clone(&flags),
            callers: Arc::clone(&callers),
            vault: Arc::clone(&vault),
            providers,
            internal_keys: InternalKeys {
                openai: settings.internal_openai_key.clone(),
                anthropic: settings.internal_anthropic_key.clone(),
            },
            meter: Arc::new(Meter::new(OutboxWriter::start(Arc::clone(&outbox))?, Arc::clone(&settings.price_table))),
            reservations: Arc::clone(&reservations),
            notifier: Notifier::new(directus.clone()),
            breaker: CircuitBreaker::new(settings.circuit_failure_threshold, settings.circuit_cool_down),
            limiter: RateLimiter::default(),
            tier_limits: settings.rate_limits,
            upstream_slots: Arc::new(Semaphore::new(settings.max_upstream_calls)),
            slot_wait: settings.upstream_slot_wait,
            vault_configured: settings.keyring.is_some(),
            deadline: settings.upstream_deadline,
        });
        Ok(AppState {
            flags,
            callers,
            vault,
            gateway,
            reservations,
            sessions: Arc::new(Sessions::new(
                directus.clone(),
                settings.session_check_ttl,
                settings.stale_caller_max_age,
            )),
            directus,
            outbox,
            tokens: Arc::new(AccessTokenVerifier::new(&settings.directus_secret)),
            webhook_secret: Arc::new(settings.webhook_secret.clone()),
            operator_token_digest: settings
                .operator_token
                .as_ref()
                .map(|token| Sha256::digest(token.expose_secret().as_bytes()).into()),
            vault_configured: settings.keyring.is_some(),
            flag_cache_ttl: settings.flag_cache_ttl,
            applied_webhooks: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(2 * TOLERANCE_SECS as u64))
                .build(),
            key_checks: Arc::new(RateLimiter::default()),
            key_checks_per_minute: settings.key_checks_per_minute,
            usage_reads: Arc::new(RateLimiter::default()),
            usage_reads_per_minute: settings.usage_reads_per_minute,
            max_llm_body_bytes: settings.max_llm_body_bytes,
        })
    }
}
