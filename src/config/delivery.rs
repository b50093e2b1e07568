//! How usage records go to Directus.

use std::time::Duration;

use super::reader::Reader;

/// How records go to Directus (`USAGE_BATCH_SIZE`, `USAGE_DELIVERY_CONCURRENCY`, `USAGE_DELIVERY_LINGER_MS`).
/// The hook's usage route stores a batch of 500 in about 40 ms; through the items API (where the route is off)
/// Directus 12.4.0 stores a batch's records one by one in its single Node.js process, and a second batch in
/// flight adds about half on PostgreSQL and nothing on SQLite, whose one connection serializes them
/// (`scripts/measure-directus-ingest.mjs`; figures in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Records per request (and per outbox page). A record is at most about 700 bytes of JSON (model names
    /// are at most 200 characters), so 1,000 stay under Directus's 1 MiB `MAX_PAYLOAD_SIZE`.
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// After a delivery, how long the next waits for a full batch. Directus's cost is mostly per request: at
    /// 8,000 records a second, sending whatever the last 5 ms wrote cost its process about 100 µs of CPU a
    /// record, full batches about half that. A record written after a quiet spell goes at once.
    pub linger: Duration,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery { batch: 500, concurrency: 1, linger: Duration::from_millis(100) }
    }
}

pub(super) fn read<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Delivery {
    let defaults = Delivery::default();
    Delivery {
        batch: r.whole(
            "USAGE_BATCH_SIZE",
            defaults.batch,
            1..=1_000,
            "records",
            "Use e.g. 500 (250 keeps a SQLite Directus more responsive)",
        ),
        concurrency: r.whole(
            "USAGE_DELIVERY_CONCURRENCY",
            defaults.concurrency,
            1..=8,
            "requests",
            "Use 1 for a Directus on SQLite, 2 on PostgreSQL (more adds only latency)",
        ),
        linger: Duration::from_millis(r.whole(
            "USAGE_DELIVERY_LINGER_MS",
            defaults.linger.as_millis() as u64,
            0..=5_000,
            "milliseconds",
            "Use e.g. 100 (0 sends what is written at once, in more and smaller batches)",
        )),
    }
}
