//! `/metrics` in the Prometheus text format. Gauges that describe a current state (outbox depth, open holds,
//! flag age, circuits) are read at scrape time; counters and histograms accumulate as things happen.

use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::domain::provider::Provider;
use std::sync::Arc;

use crate::accounting::Outbox;
use crate::metrics;
use crate::services::flag_cache::FlagCache;
use crate::services::gateway::Gateway;
use crate::services::reservations::Reservations;

/// Prometheus text format. No authentication: keep it private with `METRICS_ADDR`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn render(
    State(outbox): State<Arc<Outbox>>,
    State(reservations): State<Arc<Reservations>>,
    State(flags): State<Arc<FlagCache>>,
    State(gateway): State<Arc<Gateway>>,
) -> impl IntoResponse {
    let waiting = outbox.len();
    let oldest = tokio::task::spawn_blocking(move || outbox.oldest_age()).await.ok().and_then(Result::ok).flatten();
    metrics::outbox(waiting, oldest);
    metrics::holds_open(reservations.open_holds());
    if let Some(flags) = flags.last_known() {
        metrics::flags_age((time::OffsetDateTime::now_utc() - flags.loaded_at).unsigned_abs());
    }
    let now = Instant::now();
    for provider in Provider::all() {
        metrics::circuit_state(provider, gateway.circuit_open(provider, now));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::handle().render())
}
