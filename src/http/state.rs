use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::accounting::Spool;
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

/// Shared by every handler. Cheap to clone: everything heavy is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub flags: Arc<FlagStore>,
    pub callers: Arc<CallerDirectory>,
    pub vault: Arc<KeyVault>,
    pub gateway: Arc<Gateway>,
    pub directus: DirectusClient,
    pub spool: Arc<Spool>,
    pub tokens: Arc<AccessTokenVerifier>,
    pub webhook_secret: Arc<WebhookSecret>,
    /// SHA-256 of the service token: enough to check a presented token, useless to anyone reading memory dumps
    /// of this struct.
    pub service_token_digest: [u8; 32],
    pub vault_configured: bool,
    pub flag_cache_ttl: Duration,
    /// Webhook ids already applied, kept for twice the replay window so a redelivery is a harmless no-op.
    pub applied_webhooks: Cache<String, ()>,
}

impl AppState {
    /// Opens the usage spool; fails if its directory cannot be created.
    pub fn new(settings: &Settings) -> std::io::Result<Self> {
        let directus = DirectusClient::new(
            settings.directus_url.clone(),
            settings.directus_token.clone(),
            settings.directus_timeout,
        );
        let providers = ProviderClient::new(
            settings.openai_base_url.clone(),
            settings.anthropic_base_url.clone(),
            settings.provider_timeout,
        );
        let flags = Arc::new(FlagStore::new(directus.clone(), settings.flag_cache_ttl));
        let callers = Arc::new(CallerDirectory::new(directus.clone(), settings.user_cache_ttl));
        let vault = Arc::new(KeyVault::new(settings.keyring.clone(), directus.clone(), providers.clone()));
        let spool = Arc::new(Spool::open(&settings.spool_dir)?);
        let gateway = Arc::new(Gateway {
            flags: Arc::clone(&flags),
            callers: Arc::clone(&callers),
            vault: Arc::clone(&vault),
            providers,
            internal_keys: InternalKeys {
                openai: settings.internal_openai_key.clone(),
                anthropic: settings.internal_anthropic_key.clone(),
            },
            meter: Arc::new(Meter::new(Arc::clone(&spool), Arc::clone(&settings.price_table))),
            notifier: Notifier::new(directus.clone()),
            breaker: CircuitBreaker::new(5, Duration::from_secs(30)),
            limiter: RateLimiter::new(settings.rate_limits),
            upstream_slots: Arc::new(Semaphore::new(settings.max_upstream_calls)),
            vault_configured: settings.keyring.is_some(),
            deadline: settings.upstream_deadline,
        });
        Ok(AppState {
            flags,
            callers,
            vault,
            gateway,
            directus,
            spool,
            tokens: Arc::new(AccessTokenVerifier::new(&settings.directus_secret)),
            webhook_secret: Arc::new(settings.webhook_secret.clone()),
            service_token_digest: Sha256::digest(settings.directus_token.expose_secret().as_bytes()).into(),
            vault_configured: settings.keyring.is_some(),
            flag_cache_ttl: settings.flag_cache_ttl,
            applied_webhooks: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(2 * TOLERANCE_SECS as u64))
                .build(),
        })
    }
}
