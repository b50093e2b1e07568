//! Usage accounting that loses no record and never makes a user's call wait on Directus or the disk: the
//! request path only queues the record for the [`SpoolWriter`], which writes whatever is queued as one durable
//! batch file in the local [`Spool`]; a background flusher delivers the records, retrying until Directus has
//! them. Delivery is at least once (a batch partly delivered before a crash is delivered again in full);
//! Directus's unique `request_id` makes a repeated delivery a no-op, so every record is stored exactly once.

pub mod spool;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

pub use spool::{PendingRecord, Spool, SpoolWriter};

use crate::domain::usage::UsageRecord;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The spool is looked at this often even without a wake-up, in case records arrive some other way (a file
/// put back from `rejected/` by hand).
const IDLE_RECHECK: Duration = Duration::from_secs(30);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Directus unreachable, 5xx or timing out: the record stays spooled and is tried again.
    #[error("usage record not delivered yet: {0}")]
    Retryable(#[source] BoxError),
    /// Directus refused the record and always will (a 4xx other than `RECORD_NOT_UNIQUE`): it is moved to the
    /// spool's `rejected/` folder.
    #[error("usage record refused: {0}")]
    Permanent(#[source] BoxError),
}

/// Where spooled records are delivered. Records arrive at least once, so a record that is already stored must
/// be answered `Ok`. Records are delivered one at a time, so a delivery must end in bounded time.
pub trait UsageSink: Send + Sync + 'static {
    fn deliver(&self, record: &UsageRecord) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// What one pass over the spool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub delivered: usize,
    /// Still spooled for a later pass: the record that failed with a retryable error and all after it.
    pub retry_later: usize,
    /// Refused for good and moved to `rejected/`.
    pub rejected: usize,
}

/// Delivers spooled records oldest first until one fails with a retryable error, which ends the pass: the
/// records after it would meet the same outage. File I/O runs on the blocking pool; a delivered record is
/// marked in memory, and only the last record of a batch costs a trip there (to delete the file).
pub async fn flush_once<S: UsageSink>(spool: &Arc<Spool>, sink: &S) -> FlushReport {
    let pending = match blocking(spool, Spool::pending).await {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(%error, "cannot list the usage spool; will try again");
            return FlushReport { retry_later: spool.len(), ..FlushReport::default() };
        }
    };
    let mut report = FlushReport::default();
    let total = pending.len();
    for pending in pending {
        let request_id = pending.record.request_id;
        match sink.deliver(&pending.record).await {
            Ok(()) => {
                report.delivered += 1;
                let Some(batch) = spool.mark_delivered(&pending) else { continue };
                if let Err(error) = blocking(spool, move |s| s.remove_batch(&batch)).await {
                    tracing::warn!(%request_id, %error, "cannot remove a delivered usage batch; will try again");
                }
            }
            Err(error @ DeliveryError::Permanent(_)) => {
                report.rejected += 1;
                tracing::warn!(%request_id, %error, "usage record refused by Directus; moving it to rejected/");
                if let Err(error) = blocking(spool, move |s| s.reject(&pending)).await {
                    tracing::warn!(%request_id, %error, "cannot move a refused usage record to rejected/");
                }
            }
            Err(error @ DeliveryError::Retryable(_)) => {
                report.retry_later = total - report.delivered - report.rejected;
                tracing::warn!(%error, pending = report.retry_later, "cannot deliver usage records; will retry");
                break;
            }
        }
    }
    report
}

/// Delivers spooled records for as long as the process runs; start one per spool. Records left when the
/// process stops stay on disk and go out after the next start.
///
/// After a retryable failure it waits 100 ms, doubling up to 30 s until a delivery succeeds. New records do not
/// cut that wait short (they go out with the next pass): otherwise, during an outage, every batch written would
/// trigger another attempt and another read of the whole spool. With nothing left to retry, it sleeps until a
/// batch is written.
pub async fn run_flusher<S: UsageSink>(spool: Arc<Spool>, sink: Arc<S>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let report = flush_once(&spool, &*sink).await;
        if report.delivered > 0 {
            backoff = FIRST_BACKOFF;
        }
        if report.retry_later > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            let _ = tokio::time::timeout(IDLE_RECHECK, spool.enqueued()).await;
        }
    }
}

async fn blocking<T, F>(spool: &Arc<Spool>, op: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Spool) -> io::Result<T> + Send + 'static,
{
    let spool = Arc::clone(spool);
    tokio::task::spawn_blocking(move || op(&spool)).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use uuid::Uuid;

    use super::spool::tests::{TempDir, batch_files, ids_of, record, records};
    use super::*;

    /// Directus, as far as the spool can tell: `stored` is the table with its unique `request_id`; a repeated
    /// record is answered `Ok` (the real sink maps `RECORD_NOT_UNIQUE` so).
    #[derive(Default)]
    struct FakeDirectus {
        stored: Mutex<Vec<Uuid>>,
        accepted: Mutex<HashMap<Uuid, usize>>,
        attempts: AtomicUsize,
        /// The next this many deliveries fail as if Directus were down.
        outage: AtomicUsize,
        refused: Mutex<HashSet<Uuid>>,
    }

    impl FakeDirectus {
        fn down_for(attempts: usize) -> FakeDirectus {
            FakeDirectus { outage: AtomicUsize::new(attempts), ..FakeDirectus::default() }
        }

        fn stored(&self) -> Vec<Uuid> {
            self.stored.lock().unwrap().clone()
        }

        fn accepted(&self, id: Uuid) -> usize {
            self.accepted.lock().unwrap().get(&id).copied().unwrap_or(0)
        }

        fn attempts(&self) -> usize {
            self.attempts.load(Ordering::SeqCst)
        }
    }

    impl UsageSink for FakeDirectus {
        async fn deliver(&self, record: &UsageRecord) -> Result<(), DeliveryError> {
            let id = record.request_id;
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.outage.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(DeliveryError::Retryable("503 Service Unavailable".into()));
            }
            if self.refused.lock().unwrap().contains(&id) {
                return Err(DeliveryError::Permanent("400 INVALID_PAYLOAD".into()));
            }
            let mut stored = self.stored.lock().unwrap();
            if !stored.contains(&id) {
                stored.push(id);
            }
            *self.accepted.lock().unwrap().entry(id).or_default() += 1;
            Ok(())
        }
    }

    /// Spools `n` records in batches of two, the first the oldest.
    fn spool_with(dir: &TempDir, n: usize) -> (Arc<Spool>, Vec<Uuid>) {
        let spool = Spool::open(&dir.0).unwrap();
        let records = records(n);
        for batch in records.chunks(2) {
            spool.enqueue_batch(batch).unwrap();
        }
        (Arc::new(spool), ids_of(&records))
    }

    fn report(delivered: usize, retry_later: usize, rejected: usize) -> FlushReport {
        FlushReport { delivered, retry_later, rejected }
    }

    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_outage_delays_records_and_each_is_then_delivered_once_in_order() {
        let dir = TempDir::new();
        let (spool, ids) = spool_with(&dir, 3);
        let directus = FakeDirectus::down_for(2);

        assert_eq!(flush_once(&spool, &directus).await, report(0, 3, 0));
        assert_eq!(directus.attempts(), 1, "a pass stops at the first retryable failure");
        assert_eq!(flush_once(&spool, &directus).await, report(0, 3, 0));
        assert_eq!(spool.len(), 3);
        assert_eq!(flush_once(&spool, &directus).await, report(3, 0, 0));

        assert_eq!(directus.stored(), ids, "oldest first");
        assert!(ids.iter().all(|id| directus.accepted(*id) == 1));
        assert!(spool.is_empty());
        assert!(batch_files(&dir.0).is_empty());
        assert_eq!(flush_once(&spool, &directus).await, report(0, 0, 0));
        assert_eq!(directus.attempts(), 5);
    }

    /// Fails at random, as if Directus came and went.
    struct Flaky {
        inner: FakeDirectus,
        failures: AtomicUsize,
    }

    impl UsageSink for Flaky {
        async fn deliver(&self, record: &UsageRecord) -> Result<(), DeliveryError> {
            if fastrand::u8(..) < 80 {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(DeliveryError::Retryable("connection reset".into()));
            }
            self.inner.deliver(record).await
        }
    }

    #[tokio::test]
    async fn a_flaky_directus_gets_every_record_exactly_once_in_order() {
        let dir = TempDir::new();
        let spool = Arc::new(Spool::open(&dir.0).unwrap());
        let mut ids = Vec::new();
        for size in [7, 1, 30, 12] {
            let batch = records(size);
            spool.enqueue_batch(&batch).unwrap();
            ids.extend(ids_of(&batch));
        }
        let flaky = Flaky { inner: FakeDirectus::default(), failures: AtomicUsize::new(0) };
        let mut passes = 0;
        while !spool.is_empty() {
            passes += 1;
            assert!(passes < 10_000, "never finished");
            flush_once(&spool, &flaky).await;
        }
        assert!(flaky.failures.load(Ordering::SeqCst) > 0, "the sink did fail sometimes");
        assert_eq!(flaky.inner.stored(), ids, "oldest first, across batches");
        assert!(ids.iter().all(|id| flaky.inner.accepted(*id) == 1), "no record sent twice without a restart");
        assert!(batch_files(&dir.0).is_empty());
    }

    #[tokio::test]
    async fn a_crash_between_delivery_and_completion_only_causes_a_harmless_repeat() {
        let dir = TempDir::new();
        let (spool, ids) = spool_with(&dir, 2);
        let directus = FakeDirectus::default();
        let first = spool.pending().unwrap().remove(0);
        directus.deliver(&first.record).await.unwrap();
        drop(spool);

        let spool = Arc::new(Spool::open(&dir.0).unwrap());
        assert_eq!(flush_once(&spool, &directus).await, report(2, 0, 0));
        assert_eq!(directus.stored(), ids);
        assert_eq!((directus.accepted(ids[0]), directus.accepted(ids[1])), (2, 1));
        assert!(spool.is_empty() && spool.pending().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_partly_delivered_before_a_restart_is_delivered_again_and_every_record_is_stored_once() {
        let dir = TempDir::new();
        let spool = Arc::new(Spool::open(&dir.0).unwrap());
        let (first, second) = (records(5), records(3));
        spool.enqueue_batch(&first).unwrap();
        spool.enqueue_batch(&second).unwrap();
        // Two records of the first batch go out, then Directus goes down, then the process dies.
        let flaky = FlakyAfter { inner: FakeDirectus::default(), ok_deliveries: AtomicUsize::new(2) };
        assert_eq!(flush_once(&spool, &flaky).await, report(2, 6, 0));
        assert_eq!(spool.len(), 6);
        drop(spool);

        let spool = Arc::new(Spool::open(&dir.0).unwrap());
        assert_eq!(spool.len(), 8, "the whole batch is back");
        let directus = flaky.inner;
        assert_eq!(flush_once(&spool, &directus).await, report(8, 0, 0));
        let all = ids_of(&[first, second].concat());
        assert_eq!(directus.stored(), all, "each request id stored once, oldest first");
        let distinct: HashSet<_> = directus.stored().into_iter().collect();
        assert_eq!(distinct.len(), 8);
        let repeats: Vec<_> = all.iter().map(|id| directus.accepted(*id)).collect();
        assert_eq!(repeats, [2, 2, 1, 1, 1, 1, 1, 1], "only the delivered part of the batch went twice");
        assert!(spool.is_empty() && batch_files(&dir.0).is_empty());
    }

    #[tokio::test]
    async fn refused_records_move_to_rejected_and_do_not_hold_up_the_rest() {
        let dir = TempDir::new();
        let (spool, ids) = spool_with(&dir, 3);
        let directus = FakeDirectus::default();
        directus.refused.lock().unwrap().insert(ids[1]);

        assert_eq!(flush_once(&spool, &directus).await, report(2, 0, 1));
        assert_eq!(directus.stored(), [ids[0], ids[2]]);
        assert!(dir.0.join("rejected").join(format!("{}.json", ids[1])).exists());
        assert!(spool.is_empty());
        assert!(batch_files(&dir.0).is_empty());
        assert_eq!(flush_once(&spool, &directus).await, report(0, 0, 0));
        assert_eq!(directus.attempts(), 3, "a refused record is not offered again");
    }

    #[tokio::test]
    async fn an_outage_mid_pass_keeps_what_was_not_delivered() {
        let dir = TempDir::new();
        let (spool, ids) = spool_with(&dir, 4);
        let directus = FakeDirectus::default();
        directus.refused.lock().unwrap().insert(ids[0]);
        // Refuse the first, store the second, then go down: two records wait.
        let flaky = FlakyAfter { inner: directus, ok_deliveries: AtomicUsize::new(2) };
        assert_eq!(flush_once(&spool, &flaky).await, report(1, 2, 1));
        assert_eq!(spool.len(), 2);
        assert_eq!(flaky.inner.stored(), [ids[1]]);
        assert_eq!(batch_files(&dir.0).len(), 1, "the first batch is done, the second waits");
    }

    /// Answers normally for a number of deliveries, then as if Directus went down.
    struct FlakyAfter {
        inner: FakeDirectus,
        ok_deliveries: AtomicUsize,
    }

    impl UsageSink for FlakyAfter {
        async fn deliver(&self, record: &UsageRecord) -> Result<(), DeliveryError> {
            if self.ok_deliveries.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
                return Err(DeliveryError::Retryable("connection refused".into()));
            }
            self.inner.deliver(record).await
        }
    }

    #[tokio::test]
    async fn the_flusher_delivers_as_soon_as_a_record_is_written() {
        let dir = TempDir::new();
        let spool = Arc::new(Spool::open(&dir.0).unwrap());
        let writer = SpoolWriter::start(Arc::clone(&spool));
        let directus = Arc::new(FakeDirectus::default());
        let flusher = tokio::spawn(run_flusher(Arc::clone(&spool), Arc::clone(&directus)));

        let (a, b) = (record(), record());
        writer.submit(a.clone());
        eventually("the first record", || directus.stored().len() == 1).await;
        // The flusher is idle now, with its 30 s recheck far away: only the new batch can wake it in time.
        writer.submit(b.clone());
        eventually("the second record", || directus.stored().len() == 2).await;
        assert_eq!(directus.stored(), [a.request_id, b.request_id]);
        eventually("an empty spool", || spool.is_empty()).await;
        flusher.abort();
    }

    #[tokio::test]
    async fn the_flusher_retries_until_directus_is_back() {
        let dir = TempDir::new();
        let (spool, ids) = spool_with(&dir, 2);
        // 100 + 200 + 400 ms of backoff before the fourth attempt succeeds.
        let directus = Arc::new(FakeDirectus::down_for(3));
        let flusher = tokio::spawn(run_flusher(Arc::clone(&spool), Arc::clone(&directus)));

        eventually("both records", || directus.stored().len() == 2).await;
        assert_eq!(directus.stored(), ids);
        assert_eq!(directus.attempts(), 5);
        eventually("an empty spool", || spool.is_empty()).await;
        flusher.abort();
    }
}
