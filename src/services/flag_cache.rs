//! The flag cache. A webhook makes a change visible on the very next request; the TTL is only a safety
//! net for lost webhooks; when Directus is down the last known flags keep being served, marked stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use serde::Serialize;
use time::OffsetDateTime;

use crate::directus::{DirectusClient, DirectusError};
use crate::domain::error_code::{Code, Coded};
use crate::domain::flags::{FlagSet, PushedFlags};
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

/// What became of pushed flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// In force from the next request on.
    Applied,
    /// Older than flags already pushed (two changes whose webhooks crossed): ignored.
    Outdated,
    /// As old as the newest pushed but different: cannot tell which is newer, so the caller reloads.
    Ambiguous,
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

impl Coded for FlagsUnavailable {
    fn code(&self) -> Code {
        Code::FlagsUnavailable
    }
}

struct Failure {
    at: Instant,
    error: Arc<DirectusError>,
}

pub struct FlagCache {
    ttl: Duration,
    directus: DirectusClient,
    /// Keyed by generation: a webhook bumps it, so a request after the webhook can never join a load that
    /// started before the change was committed.
    fresh: Cache<u64, Arc<FlagSnapshot>>,
    generation: AtomicU64,
    last_known: RwLock<Option<(u64, Arc<FlagSnapshot>)>>,
    last_failure: Mutex<Option<Failure>>,
    /// The newest pushed flags: their `read_at` and content, to order pushes that arrive out of order.
    newest_push: Mutex<Option<(i64, FlagSet)>>,
}

impl FlagCache {
    pub fn new(directus: DirectusClient, ttl: Duration) -> Self {
        FlagCache {
            directus,
            ttl,
            fresh: Cache::builder().max_capacity(4).time_to_live(ttl).build(),
            generation: AtomicU64::new(0),
            last_known: RwLock::new(None),
            last_failure: Mutex::new(None),
            newest_push: Mutex::new(None),
        }
    }

    /// How long loaded flags are used before Directus is asked again (a safety net for lost webhooks).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The flags in force: cached, freshly loaded, or (Directus down) the last known ones marked stale.
    pub async fn current(&self) -> Result<FlagState, FlagsUnavailable> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(snapshot) = self.fresh.get(&generation).await {
            return Ok(FlagState { snapshot, stale: false });
        }
        // Boxed, as a caller's read is (`CallerDirectory::profile`): a miss is rare, and its future (the cache's
        // loader and the load, about 1.2 KB) would otherwise be part of every call's.
        Box::pin(self.on_miss(generation)).await
    }

    async fn on_miss(&self, generation: u64) -> Result<FlagState, FlagsUnavailable> {
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

    /// Puts pushed flags in force without asking Directus, unless newer ones were pushed already.
    pub async fn apply(&self, pushed: &PushedFlags) -> Pushed {
        let (flags, missing) = FlagSet::from_records(&pushed.records());
        {
            let mut newest = sync::lock(&self.newest_push);
            match *newest {
                Some((at, _)) if pushed.read_at < at => return Pushed::Outdated,
                Some((at, known)) if pushed.read_at == at && known != flags => return Pushed::Ambiguous,
                _ => *newest = Some((pushed.read_at, flags)),
            }
        }
        if !missing.is_empty() {
            tracing::warn!(?missing, "feature flag rows missing in Directus; using the spec defaults for them");
        }
        // A new generation: requests from now on see these flags (or, if one got in first, a load that
        // started after the change, which reads the same).
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.install(generation, flags).await;
        Pushed::Applied
    }

    /// Looks for changes made behind Directus's API (an SQL `UPDATE feature_flags`, which no hook sees): reads
    /// the flags, and puts them in force if they differ from those in force and nothing newer (a webhook, a
    /// reload) arrived meanwhile. True when it changed them.
    pub async fn poll(&self) -> Result<bool, DirectusError> {
        let generation = self.generation.load(Ordering::Acquire);
        let records = self.directus.feature_flags().await?;
        let (flags, _) = FlagSet::from_records(&records);
        if self.last_known().is_some_and(|known| known.flags == flags) {
            // Unchanged: confirmed as of now, so the cached flags never expire while Directus answers the
            // polls, and no request waits to load them (unless a change arrived meanwhile).
            if self.generation.load(Ordering::Acquire) == generation {
                self.install(generation, flags).await;
            }
            return Ok(false);
        }
        if self.generation.compare_exchange(generation, generation + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Ok(false);
        }
        self.install(generation + 1, flags).await;
        Ok(true)
    }

    async fn install(&self, generation: u64, flags: FlagSet) {
        let snapshot = Arc::new(FlagSnapshot { flags, loaded_at: OffsetDateTime::now_utc() });
        self.fresh.insert(generation, Arc::clone(&snapshot)).await;
        let mut last = sync::write(&self.last_known);
        if last.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *last = Some((generation, snapshot));
        }
        drop(last);
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

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::domain::flags::PushedRow;

    fn store() -> FlagCache {
        // Nothing here reaches Directus: pushed flags are applied without it.
        let directus = DirectusClient::new(
            "http://127.0.0.1:9".parse().unwrap(),
            SecretString::from("unused"),
            Duration::from_secs(1),
        );
        FlagCache::new(directus, Duration::from_secs(300))
    }

    fn pushed(read_at: i64, only: bool) -> PushedFlags {
        let row = |key: &str, is_enabled| PushedRow { key: key.into(), is_enabled, min_tier: None };
        PushedFlags {
            read_at,
            rows: vec![
                row("byok_enabled", true),
                row("byok_uses_internal_credits", false),
                row("byok_only_mode", only),
            ],
        }
    }

    #[tokio::test]
    async fn pushed_flags_take_effect_at_once_and_the_newest_push_wins() {
        let store = store();
        assert_eq!(store.apply(&pushed(10, true)).await, Pushed::Applied);
        let current = store.current().await.unwrap();
        assert!(current.snapshot.flags.byok_only_mode && !current.stale);

        assert_eq!(store.apply(&pushed(5, false)).await, Pushed::Outdated, "crossed with a newer change");
        assert!(store.current().await.unwrap().snapshot.flags.byok_only_mode);
        assert_eq!(store.apply(&pushed(10, false)).await, Pushed::Ambiguous, "same time, other content: reload");
        assert_eq!(store.apply(&pushed(10, true)).await, Pushed::Applied, "the same push again is harmless");
        assert_eq!(store.apply(&pushed(11, false)).await, Pushed::Applied);
        assert!(!store.current().await.unwrap().snapshot.flags.byok_only_mode);
    }

    #[test]
    fn only_a_handful_of_short_rows_is_plausible() {
        assert!(pushed(1, true).is_plausible());
        let mut long = pushed(1, true);
        long.rows[0].key = "k".repeat(65);
        assert!(!long.is_plausible());
        let many = PushedFlags {
            read_at: 1,
            rows: (0..65).map(|i| PushedRow { key: i.to_string(), is_enabled: true, min_tier: None }).collect(),
        };
        assert!(!many.is_plausible());
    }
}
