//! Builds the application from typed settings and serves it. Binding happens in `build`, so tests can
//! bind port 0 and read the real port before serving.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt as _;

use crate::accounting;
use crate::config::{Delivery, Settings};
use crate::domain::api_key::KeyStatus;
use crate::http::{self, state::AppState};
use crate::services::flag_cache::Pushed;
use crate::services::jobs::JobsError;
use crate::services::key_rechecks::KeyRechecks;
use crate::services::reservations::LedgerSink;
use crate::shared::bus::Event;
use crate::shared::redis::{Redis, RedisFailure};
use crate::store::StoreError;

/// A client gets this long to send its request headers (slowloris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; a larger request is answered 431 without being buffered further.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Open connections beyond this are closed at accept time instead of exhausting memory or file handles.
const MAX_CONNECTIONS: usize = 10_000;
/// In-flight requests get this long to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("REDIS_URL: {0}")]
    Redis(#[from] RedisFailure),
    #[error("job queue: {0}")]
    Jobs(#[from] JobsError),
}

pub struct Application {
    listener: TcpListener,
    /// `/metrics` on its own listener (`METRICS_ADDR`).
    metrics_listener: Option<TcpListener>,
    router: Router,
    state: AppState,
    /// How often `unverified` and `quota_exceeded` keys are checked again.
    recheck_intervals: [(KeyStatus, Duration); 2],
    flag_poll_interval: Option<Duration>,
    delivery: Delivery,
    client_write_timeout: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
        };
        let listener = bind(settings.bind_addr).await?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        crate::metrics::handle();
        let redis = settings.redis_url.as_ref().map(Redis::new).transpose()?.map(Arc::new);
        let state = crate::app::build(&settings, redis).map_err(|error| match error {
            JobsError::Store(error) => StartupError::Store(error),
            other => StartupError::Jobs(other),
        })?;
        accounting::import_legacy_spool(&settings.legacy_spool_dir, &state.services().outbox)?;
        let restored = state.services().reservations.restore_from(&state.services().outbox).await?;
        if restored > 0 {
            tracing::info!(restored, "deductions waiting for Directus count against their users' credits again");
        }
        state.services().reservations.prime().await;
        if let Some(keyring) = &settings.keyring {
            tracing::info!(?keyring, "key vault configured");
        } else {
            tracing::warn!("ENCRYPTION_KEY is not set: BYOK is not configured, internal credits still work");
        }
        Ok(Application {
            router: http::router(state.clone(), metrics_listener.is_none()),
            listener,
            metrics_listener,
            state,
            recheck_intervals: [
                (KeyStatus::Unverified, settings.key_reverify_interval),
                (KeyStatus::QuotaExceeded, settings.key_quota_recheck_interval),
            ],
            flag_poll_interval: settings.flag_poll_interval,
            delivery: settings.delivery,
            client_write_timeout: settings.client_write_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Where `/metrics` is served when `METRICS_ADDR` gives it a listener of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (bounded).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        tokio::spawn(load_flags_until_ready(self.state.clone()));
        if let Some(every) = self.flag_poll_interval {
            tokio::spawn(poll_flags(self.state.clone(), every));
        }
        let (bus, apply) = (Arc::clone(&self.state.services().bus), apply_event(self.state.clone()));
        tokio::spawn(async move { bus.run(Box::new(apply)).await });
        if let Some(listener) = self.metrics_listener {
            let router = http::metrics_router(self.state.clone());
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "the metrics listener stopped");
                }
            });
        }
        let sink = LedgerSink {
            inner: self.state.services().directus.clone(),
            reservations: Arc::clone(&self.state.services().reservations),
        };
        tokio::spawn(accounting::run_flusher(Arc::clone(&self.state.services().outbox), Arc::new(sink), self.delivery));
        self.state.services().jobs.start();
        self.state.services().calls.start();
        if self.state.services().vault.is_configured() {
            let services = self.state.services();
            let rechecks = Arc::new(KeyRechecks::new(
                Arc::clone(&services.vault),
                Arc::clone(&services.key_events),
                Arc::clone(&services.jobs),
                Arc::clone(&services.claims),
            ));
            for (status, every) in self.recheck_intervals {
                tokio::spawn(recheck_keys(Arc::clone(&rechecks), status, every));
            }
        }
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEADER_BYTES);
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Usually EMFILE: back off briefly instead of spinning on the error.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached; closing new connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            // A client that stops reading would otherwise hold its connection, and the upstream slot of the
            // stream it is not reading, forever: a write stuck this long closes the connection.
            let mut stream = TimeoutStream::new(stream);
            stream.set_write_timeout(Some(self.client_write_timeout));
            // Handlers that need the client's address (sign-in throttling) read it from here.
            let service = TowerToHyperService::new(self.router.clone().map_request(
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                },
            ));
            let connection = graceful.watch(builder.serve_connection(TokioIo::new(Box::pin(stream)), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
                drop(permit);
            });
        }

        tracing::info!("shutting down; waiting for in-flight requests");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        // Usage recorded by the last requests reaches the disk before the process exits.
        self.state.services().gateway.flush().await;
        Ok(())
    }
}

/// What another replica's change means here.
fn apply_event(state: AppState) -> impl Fn(Event) + Send + Sync + 'static {
    move |event| {
        let state = state.clone();
        tokio::spawn(async move {
            match event {
                Event::FlagsChanged => {
                    if let Err(error) = state.services().flags.reload().await {
                        tracing::warn!(%error, "cannot reload the flags another replica reported changed");
                    }
                }
                Event::FlagsPushed(flags) => {
                    if state.services().flags.apply(&flags).await == Pushed::Ambiguous
                        && let Err(error) = state.services().flags.reload().await
                    {
                        tracing::warn!(%error, "cannot reload the flags another replica reported changed");
                    }
                }
                Event::CallerChanged(user) => state.services().callers.forget(user).await,
                Event::Resubscribed => {
                    tracing::info!("subscribed to other replicas' changes; reloading what may have been missed");
                    state.services().callers.forget_all();
                    if let Err(error) = state.services().flags.reload().await {
                        tracing::warn!(%error, "cannot reload the flags after subscribing");
                    }
                }
            }
        });
    }
}

/// Flags changed behind Directus's API (SQL) send no webhook: a small read every `every` finds them. A failed
/// read is left to the next tick (the flag cache already serves the last known flags while Directus is down).
async fn poll_flags(state: AppState, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match state.services().flags.poll().await {
            Ok(true) => {
                let flags = state.services().flags.last_known().map(|s| s.flags);
                tracing::warn!(?flags, "feature flags changed without a webhook (an SQL update?); now in force");
            }
            Ok(false) => {}
            Err(error) => tracing::debug!(%error, "flag check failed; the next one retries"),
        }
    }
}

/// Loads flags right away so `/readyz` turns green as soon as Directus answers, retrying with backoff.
async fn load_flags_until_ready(state: AppState) {
    let mut delay = Duration::from_millis(100);
    loop {
        match state.services().flags.current().await {
            Ok(current) if !current.stale => {
                tracing::info!(flags = ?current.snapshot.flags, "feature flags loaded");
                return;
            }
            Ok(_) => return,
            Err(error) => tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "waiting for Directus"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Keys whose state can change by itself (see [`KeyRechecks`]) are checked again every `every`.
async fn recheck_keys(rechecks: Arc<KeyRechecks>, status: KeyStatus, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        rechecks.round(status, every).await;
    }
}
