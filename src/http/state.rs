use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::auth::AccessTokenVerifier;
use crate::config::Settings;
use crate::crypto::webhook_signature::{TOLERANCE_SECS, WebhookSecret};
use crate::directus::DirectusClient;
use crate::providers::ProviderClient;
use crate::services::callers::CallerDirectory;
use crate::services::flag_store::FlagStore;
use crate::services::key_vault::KeyVault;

/// Shared by every handler. Cheap to clone: everything heavy is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub flags: Arc<FlagStore>,
    pub callers: Arc<CallerDirectory>,
    pub vault: Arc<KeyVault>,
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
    pub fn new(settings: &Settings) -> Self {
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
        AppState {
            flags: Arc::new(FlagStore::new(directus.clone(), settings.flag_cache_ttl)),
            callers: Arc::new(CallerDirectory::new(directus.clone(), settings.user_cache_ttl)),
            vault: Arc::new(KeyVault::new(settings.keyring.clone(), directus, providers)),
            tokens: Arc::new(AccessTokenVerifier::new(&settings.directus_secret)),
            webhook_secret: Arc::new(settings.webhook_secret.clone()),
            service_token_digest: Sha256::digest(settings.directus_token.expose_secret().as_bytes()).into(),
            vault_configured: settings.keyring.is_some(),
            flag_cache_ttl: settings.flag_cache_ttl,
            applied_webhooks: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(2 * TOLERANCE_SECS as u64))
                .build(),
        }
    }
}
