//! The flag cache. A webhook makes a change visible on the very next request; the TTL is only a safety
//! net for lost webhooks; when Directus is down the last known flags keep being served, marked stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde::Serialize;
use time::OffsetDateTime;

use crate::directus::{DirectusClient, DirectusError};
use crate::domain::flags::FlagSet;
use crate::{metrics, sync};

/// After a failed load, stale flags are served for this long before Directus is asked again, so an outage
/// costs one slow request per interval instead of one per request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize)]
pub struct FlagSnapshot {
    pub flags: FlagSet,
    #[serde(with = "time::serde::rfc3339")]
    pub loaded_at: OffsetDateTime,
}

impl FlagSnapshot {
    pub fn loaded_at_rfc3339(&self) -> String {
        self.loaded_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
    }
}

/// The flags to decide with, and whether they may be out of date.
#[derive(Debug, Clone)]
pub struct FlagState {
    pub snapshot: Arc<FlagSnapshot>,
    pub stale: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("feature flags have never been loaded from Directus: {0}")]
pub struct FlagsUnavailable(pub Arc<DirectusError>);

struct Failure {
    at: Instant,
    error: Arc<DirectusError>,
}

pub struct FlagStore {
    directus: DirectusClient,
    /// Keyed by generation: a webhook bumps it, so a request after the webhook can never join a load that
    /// started before the change was committed.
    fresh: Cache<u64, Arc<FlagSnapshot>>,
    generation: AtomicU64,
    last_known: RwLock<Option<(u64, Arc<FlagSnapshot>)>>,
    last_failure: Mutex<Option<Failure>>,
}

impl FlagStore {
    pub fn new(directus: DirectusClient, ttl: Duration) -> Self {
        FlagStore {
            directus,
            fresh: Cache::builder().max_capacity(4).time_to_live(ttl).build(),
            generation: AtomicU64::new(0),
            last_known: RwLock::new(None),
            last_failure: Mutex::new(None),
        }
    }

    /// The flags in force: cached, freshly loaded, or (Directus down) the last known ones marked stale.
    pub async fn current(&self) -> Result<FlagState, FlagsUnavailable> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(snapshot) = self.fresh.get(&generation).await {
            return Ok(FlagState { snapshot, stale: false });
        }
        if let Some(stale) = self.stale_during_backoff() {
            return Ok(stale);
        }
        match self.fresh.try_get_with(generation, self.load(generation)).await {
            Ok(snapshot) => Ok(FlagState { snapshot, stale: false }),
            Err(error) => self.after_failure(error),
        }
    }

    /// Drops the cached flags and loads them again now. Requests arriving meanwhile wait for this load.
    pub async fn reload(&self) -> Result<FlagState, FlagsUnavailable> {
        self.invalidate();
        self.current().await
    }

    /// Drops the cached flags: every request from now on uses flags loaded after this call (it starts the
    /// load, or waits for the one under way).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.fresh.invalidate_all();
        sync::lock(&self.last_failure).take();
    }

    /// Whether flags were ever loaded, and the last load error if the current ones are stale.
    pub fn last_known(&self) -> Option<Arc<FlagSnapshot>> {
        sync::read(&self.last_known).as_ref().map(|(_, s)| Arc::clone(s))
    }

    async fn load(&self, generation: u64) -> Result<Arc<FlagSnapshot>, DirectusError> {
        let started = Instant::now();
        let records = self.directus.feature_flags().await?;
        metrics::flag_reload(started.elapsed());
        let (flags, missing) = FlagSet::from_records(&records);
        if !missing.is_empty() {
            tracing::warn!(?missing, "feature flag rows missing in Directus; using the spec defaults for them");
        }
        let snapshot = Arc::new(FlagSnapshot { flags, loaded_at: OffsetDateTime::now_utc() });
        let mut last = sync::write(&self.last_known);
        if last.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *last = Some((generation, Arc::clone(&snapshot)));
        }
        drop(last);
        if sync::lock(&self.last_failure).take().is_some() {
            tracing::info!("feature flags reloaded from Directus; no longer serving stale flags");
        }
        tracing::debug!(?flags, "feature flags loaded");
        Ok(snapshot)
    }

    fn stale_during_backoff(&self) -> Option<FlagState> {
        let failure = sync::lock(&self.last_failure);
        let recent = failure.as_ref().is_some_and(|f| f.at.elapsed() < RETRY_AFTER_FAILURE);
        drop(failure);
        if !recent {
            return None;
        }
        metrics::stale_answer("flags");
        self.last_known().map(|snapshot| FlagState { snapshot, stale: true })
    }

    fn after_failure(&self, error: Arc<DirectusError>) -> Result<FlagState, FlagsUnavailable> {
        let first =
            sync::lock(&self.last_failure).replace(Failure { at: Instant::now(), error: Arc::clone(&error) }).is_none();
        match self.last_known() {
            Some(snapshot) => {
                if first {
                    tracing::warn!(%error, "cannot reload feature flags; serving the last known flags");
                }
                Ok(FlagState { snapshot, stale: true })
            }
            None => Err(FlagsUnavailable(error)),
        }
    }

    /// The error behind stale flags, for `/readyz`.
    pub fn last_error(&self) -> Option<String> {
        sync::lock(&self.last_failure).as_ref().map(|f| f.error.to_string())
    }
}
