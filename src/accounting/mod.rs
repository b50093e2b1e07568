//! Usage accounting that loses no record and never makes a user's call wait on Directus or the disk: the
//! request path only queues the record for the [`OutboxWriter`], which commits whatever is queued as one
//! transaction in the local store's outbox; a background flusher delivers the records to Directus in batches
//! (one request per batch), retrying until Directus has them. Delivery is at least once (a batch stored just
//! before a crash is sent again); Directus's unique `request_id` makes a repeat harmless, so every record is
//! stored exactly once.

mod legacy_spool;
pub mod outbox;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use legacy_spool::import_legacy_spool;
pub use outbox::{Outbox, OutboxWriter, Waiting};

use time::OffsetDateTime;

use crate::config::Delivery;
use crate::domain::routing::Source;
use crate::domain::usage::UsageRecord;
use crate::metrics;
use crate::store::StoreError;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Directus is asked again at least this often while it is down, so records flow within seconds of its return.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The outbox is looked at this often even without a wake-up.
const IDLE_RECHECK: Duration = Duration::from_secs(30);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Directus unreachable, 5xx, timing out, or refusing the sidecar's token: the records stay in the outbox
    /// and are tried again.
    #[error("usage records not delivered yet: {0}")]
    Retryable(#[source] BoxError),
    /// Directus refused the records and always will (a 4xx about the data).
    #[error("usage records refused: {0}")]
    Permanent(#[source] BoxError),
    /// A record of the batch is already stored (delivered before, e.g. just before a crash).
    #[error("a usage record is already stored")]
    AlreadyStored,
}

/// Where outbox records are delivered. A batch holds records of one [`Source`] and is stored all or none;
/// records arrive at least once, so a lone record that is already stored must be answered
/// [`DeliveryError::AlreadyStored`] (or `Ok`). Deliveries must end in bounded time.
pub trait UsageSink: Send + Sync + 'static {
    fn deliver(&self, records: &[UsageRecord]) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Delivery handles hundreds of records at a time; done in one poll, that holds a tokio worker for a
/// millisecond or more, which a call waiting for the same worker feels as latency. A sink's loop over a batch
/// calls this after each record (`n` counts them) to give the worker's other tasks a turn now and then.
pub async fn yield_to_calls(n: usize) {
    const RECORDS_PER_POLL: usize = 32;
    if n % RECORDS_PER_POLL == RECORDS_PER_POLL - 1 {
        tokio::task::yield_now().await;
    }
}

/// What one pass over the outbox did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub delivered: usize,
    /// Still waiting for a later pass (a retryable failure ended this one).
    pub retry_later: usize,
    /// Refused for good: marked rejected in the outbox.
    pub rejected: usize,
}

/// Whether a pass goes on after a batch.
enum Next {
    Continue,
    Stop,
}

/// Delivers waiting records oldest first, a batch per request (`concurrency` at a time), until the outbox is
/// empty or a delivery fails with a retryable error (the records after it would meet the same
/// outage). A batch Directus refuses as a whole (a record already stored, or one it rejects) is sent again
/// record by record, so only the records at fault are set aside.
pub async fn flush_once<S: UsageSink>(outbox: &Arc<Outbox>, sink: &S, delivery: Delivery) -> FlushReport {
    let mut report = FlushReport::default();
    let mut cursor = 0;
    let batch = delivery.batch;
    loop {
        let mut groups = Vec::with_capacity(delivery.concurrency + 1);
        while groups.len() < delivery.concurrency {
            let page = match blocking(outbox, move |o| o.page(cursor, batch)).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the usage outbox; will try again");
                    report.retry_later = outbox.len();
                    return report;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            let (byok, internal): (Vec<Waiting>, Vec<Waiting>) =
                page.into_iter().partition(|w| w.record.source == Source::Byok);
            groups.extend([byok, internal].into_iter().filter(|g| !g.is_empty()));
        }
        if groups.is_empty() {
            return report;
        }
        let outcomes =
            futures_util::future::join_all(groups.into_iter().map(|group| deliver_group(outbox, sink, group))).await;
        let mut stop = false;
        for (next, part) in outcomes {
            report.delivered += part.delivered;
            report.rejected += part.rejected;
            stop |= matches!(next, Next::Stop);
        }
        if stop {
            report.retry_later = outbox.len();
            return report;
        }
    }
}

/// One batch: how the pass goes on, and what this batch did.
async fn deliver_group<S: UsageSink>(outbox: &Arc<Outbox>, sink: &S, group: Vec<Waiting>) -> (Next, FlushReport) {
    let mut report = FlushReport::default();
    let next = deliver_records(outbox, sink, &group, &mut report).await;
    (next, report)
}

async fn deliver_records<S: UsageSink>(
    outbox: &Arc<Outbox>,
    sink: &S,
    group: &[Waiting],
    report: &mut FlushReport,
) -> Next {
    let records: Vec<UsageRecord> = group.iter().map(|w| w.record.clone()).collect();
    match sink.deliver(&records).await {
        Ok(()) => mark_delivered(outbox, group, report).await,
        Err(DeliveryError::Retryable(error)) => {
            tracing::warn!(%error, waiting = outbox.len(), "cannot deliver usage records; will retry");
            Next::Stop
        }
        Err(error) if group.len() == 1 => settle_single(outbox, &group[0], error, report).await,
        Err(_) => {
            for waiting in group {
                let outcome = match sink.deliver(std::slice::from_ref(&waiting.record)).await {
                    Ok(()) => mark_delivered(outbox, std::slice::from_ref(waiting), report).await,
                    Err(error) => settle_single(outbox, waiting, error, report).await,
                };
                if let Next::Stop = outcome {
                    return Next::Stop;
                }
            }
            Next::Continue
        }
    }
}

/// A lone record's failed delivery: already stored counts as delivered, a refusal sets it aside.
async fn settle_single(
    outbox: &Arc<Outbox>,
    waiting: &Waiting,
    error: DeliveryError,
    report: &mut FlushReport,
) -> Next {
    let request_id = waiting.record.request_id;
    match error {
        DeliveryError::AlreadyStored => mark_delivered(outbox, std::slice::from_ref(waiting), report).await,
        DeliveryError::Retryable(error) => {
            tracing::warn!(%request_id, %error, "cannot deliver a usage record; will retry");
            Next::Stop
        }
        DeliveryError::Permanent(error) => {
            report.rejected += 1;
            metrics::rejected();
            tracing::warn!(%request_id, %error, "usage record refused by Directus; kept in the outbox as rejected");
            let (seq, reason) = (waiting.seq, error.to_string());
            if let Err(error) = blocking(outbox, move |o| o.reject(seq, &reason)).await {
                tracing::warn!(%request_id, %error, "cannot mark a refused usage record; will try again");
                return Next::Stop;
            }
            Next::Continue
        }
    }
}

async fn mark_delivered(outbox: &Arc<Outbox>, delivered: &[Waiting], report: &mut FlushReport) -> Next {
    let now = OffsetDateTime::now_utc();
    for waiting in delivered {
        metrics::delivered((now - waiting.record.occurred_at).unsigned_abs());
    }
    let seqs: Vec<i64> = delivered.iter().map(|w| w.seq).collect();
    match blocking(outbox, move |o| o.delivered(&seqs)).await {
        Ok(()) => {
            report.delivered += delivered.len();
            Next::Continue
        }
        Err(error) => {
            // Delivered, but still in the outbox: they will be sent again and found already stored.
            tracing::warn!(%error, "cannot remove delivered usage records from the outbox; will try again");
            Next::Stop
        }
    }
}

/// Delivers outbox records for as long as the process runs. Records left when the process stops stay in the
/// store and go out after the next start.
///
/// After a retryable failure it waits 100 ms, doubling up to 5 s until a delivery succeeds. New records do not
/// cut that wait short (they go out with the next pass). With nothing left to retry, it waits for the next
/// pass (`next_pass`).
pub async fn run_flusher<S: UsageSink>(outbox: Arc<Outbox>, sink: Arc<S>, delivery: Delivery) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let report = flush_once(&outbox, &*sink, delivery).await;
        if report.delivered > 0 {
            backoff = FIRST_BACKOFF;
        }
        if report.retry_later > 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            // Only a delivery lingers: the first record after a pass that found nothing goes at once.
            let linger = if report.delivered > 0 { delivery.linger } else { Duration::ZERO };
            next_pass(&outbox, delivery.batch, linger).await;
        }
    }
}

/// Returns when the next pass is due: once a batch has been written since the last pass (or the idle recheck
/// has come), and then once `batch` records are waiting or `linger` has passed since the last pass ended.
/// Records that come while Directus is busy go out in full batches, so it pays its cost per request less
/// often; one written after a quiet spell goes at once.
async fn next_pass(outbox: &Outbox, batch: usize, linger: Duration) {
    let lingered = tokio::time::sleep(linger);
    tokio::pin!(lingered);
    let _ = tokio::time::timeout(IDLE_RECHECK, outbox.enqueued()).await;
    while outbox.len() < batch {
        tokio::select! {
            () = &mut lingered => return,
            () = outbox.enqueued() => {}
        }
    }
}

/// Runs `op` (the outbox's file operations block) on a blocking thread.
pub async fn blocking<T, F>(outbox: &Arc<Outbox>, op: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Outbox) -> Result<T, StoreError> + Send + 'static,
{
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || op(&outbox)).await.map_err(|e| StoreError::Thread(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use uuid::Uuid;

    use super::outbox::tests::{ids_of, open, record, records};
    use super::*;
    use crate::store::tests::TempDir;

    fn batches_of(batch: usize) -> Delivery {
        Delivery { batch, concurrency: 1, linger: Duration::ZERO }
    }

    /// Directus, as far as the flusher can tell: `stored` is the table with its unique `request_id`; a batch
    /// holding a record already stored fails whole, as Directus's create-many does.
    #[derive(Default)]
    struct FakeDirectus {
        stored: Mutex<Vec<Uuid>>,
        accepted: Mutex<HashMap<Uuid, usize>>,
        /// Sizes of the batches that reached it, failed ones included.
        batches: Mutex<Vec<usize>>,
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

        fn batches(&self) -> Vec<usize> {
            self.batches.lock().unwrap().clone()
        }
    }

    impl UsageSink for FakeDirectus {
        async fn deliver(&self, records: &[UsageRecord]) -> Result<(), DeliveryError> {
            self.batches.lock().unwrap().push(records.len());
            if self.outage.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(DeliveryError::Retryable("503 Service Unavailable".into()));
            }
            let mut stored = self.stored.lock().unwrap();
            if records.iter().any(|r| self.refused.lock().unwrap().contains(&r.request_id)) {
                return Err(DeliveryError::Permanent("400 FAILED_VALIDATION".into()));
            }
            if records.iter().any(|r| stored.contains(&r.request_id)) {
                return Err(DeliveryError::AlreadyStored);
            }
            for record in records {
                stored.push(record.request_id);
                *self.accepted.lock().unwrap().entry(record.request_id).or_default() += 1;
            }
            Ok(())
        }
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

    fn with_records(dir: &TempDir, n: usize) -> (Arc<Outbox>, Vec<Uuid>) {
        let outbox = open(dir);
        let batch = records(n);
        outbox.import(&batch, None).unwrap();
        (outbox, ids_of(&batch))
    }

    #[tokio::test]
    async fn records_go_out_in_batches_of_the_given_size_oldest_first_each_once() {
        let dir = TempDir::new();
        let (outbox, ids) = with_records(&dir, 25);
        let directus = FakeDirectus::default();
        assert_eq!(flush_once(&outbox, &directus, batches_of(10)).await, report(25, 0, 0));
        assert_eq!(directus.batches(), [10, 10, 5], "one request per batch");
        assert_eq!(directus.stored(), ids);
        assert!(outbox.is_empty() && outbox.all_records().unwrap().is_empty());
        assert_eq!(flush_once(&outbox, &directus, batches_of(10)).await, report(0, 0, 0));
    }

    #[tokio::test]
    async fn byok_and_internal_records_go_in_separate_batches() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let mut mixed = records(6);
        for r in mixed.iter_mut().step_by(2) {
            r.source = Source::Byok;
        }
        outbox.import(&mixed, None).unwrap();
        let directus = FakeDirectus::default();
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(6, 0, 0));
        assert_eq!(directus.batches(), [3, 3]);
    }

    #[tokio::test]
    async fn an_outage_delays_records_and_each_is_then_delivered_once() {
        let dir = TempDir::new();
        let (outbox, ids) = with_records(&dir, 3);
        let directus = FakeDirectus::down_for(2);
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(0, 3, 0));
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(0, 3, 0));
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(3, 0, 0));
        assert_eq!(directus.stored(), ids);
        assert!(ids.iter().all(|id| directus.accepted(*id) == 1));
    }

    #[tokio::test]
    async fn a_batch_with_a_record_already_stored_is_sent_again_one_by_one() {
        let dir = TempDir::new();
        let (outbox, ids) = with_records(&dir, 4);
        let directus = FakeDirectus::default();
        // Delivered just before a crash: Directus has it, the outbox still does.
        let first = outbox.page(0, 1).unwrap().remove(0).record;
        directus.deliver(std::slice::from_ref(&first)).await.unwrap();
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(4, 0, 0));
        assert_eq!(directus.batches(), [1, 4, 1, 1, 1, 1], "the batch of 4 failed whole, then singles");
        assert_eq!(directus.stored(), ids);
        assert!(ids.iter().all(|id| directus.accepted(*id) == 1), "stored once each");
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn a_refused_record_is_set_aside_and_does_not_hold_up_the_rest() {
        let dir = TempDir::new();
        let (outbox, ids) = with_records(&dir, 3);
        let directus = FakeDirectus::default();
        directus.refused.lock().unwrap().insert(ids[1]);
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(2, 0, 1));
        assert_eq!(directus.stored(), [ids[0], ids[2]]);
        assert!(outbox.is_empty());
        assert_eq!(ids_of(&outbox.all_records().unwrap()), [ids[1]], "kept, marked rejected");
        assert_eq!(flush_once(&outbox, &directus, batches_of(100)).await, report(0, 0, 0), "not offered again");
    }

    /// Fails at random, as if Directus came and went.
    struct Flaky(FakeDirectus);

    impl UsageSink for Flaky {
        async fn deliver(&self, records: &[UsageRecord]) -> Result<(), DeliveryError> {
            if fastrand::u8(..) < 100 {
                return Err(DeliveryError::Retryable("connection reset".into()));
            }
            self.0.deliver(records).await
        }
    }

    #[tokio::test]
    async fn a_flaky_directus_gets_every_record_exactly_once() {
        let dir = TempDir::new();
        let (outbox, ids) = with_records(&dir, 57);
        let flaky = Flaky(FakeDirectus::default());
        let mut passes = 0;
        while !outbox.is_empty() {
            passes += 1;
            assert!(passes < 10_000, "never finished");
            flush_once(&outbox, &flaky, Delivery { batch: 7, concurrency: 2, linger: Duration::ZERO }).await;
        }
        // Two batches in flight at a time: a failed one may be stored after the next, so order is not kept.
        let (mut stored, mut expected) = (flaky.0.stored(), ids.clone());
        stored.sort();
        expected.sort();
        assert_eq!(stored, expected);
        assert!(ids.iter().all(|id| flaky.0.accepted(*id) == 1));
    }

    #[tokio::test]
    async fn the_flusher_delivers_as_soon_as_a_record_is_written_and_retries_until_directus_is_back() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let writer = OutboxWriter::start(Arc::clone(&outbox)).unwrap();
        // 100 + 200 + 400 ms of backoff before the fourth attempt succeeds.
        let directus = Arc::new(FakeDirectus::down_for(3));
        let flusher = tokio::spawn(run_flusher(Arc::clone(&outbox), Arc::clone(&directus), Delivery::default()));
        let (a, b) = (record(), record());
        writer.submit(a.clone());
        eventually("the first record", || directus.stored().len() == 1).await;
        // The flusher is idle now, with its 30 s recheck far away: only the new batch can wake it in time.
        writer.submit(b.clone());
        eventually("the second record", || directus.stored().len() == 2).await;
        assert_eq!(directus.stored(), [a.request_id, b.request_id]);
        eventually("an empty outbox", || outbox.is_empty()).await;
        flusher.abort();
    }

    /// Polls, a millisecond of the (paused) clock at a time, until `directus` has stored `count` records;
    /// returns how long that took.
    async fn stored_after(directus: &FakeDirectus, count: usize) -> Duration {
        let started = tokio::time::Instant::now();
        while directus.stored().len() < count {
            assert!(started.elapsed() < Duration::from_secs(60), "{count} records were never stored");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_delivery_records_wait_for_a_full_batch_or_the_linger_and_after_a_quiet_spell_go_at_once() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let directus = Arc::new(FakeDirectus::default());
        let linger = Duration::from_millis(100);
        let delivery = Delivery { batch: 4, concurrency: 1, linger };
        let flusher = tokio::spawn(run_flusher(Arc::clone(&outbox), Arc::clone(&directus), delivery));
        let at_once = Duration::from_millis(5);
        tokio::time::sleep(at_once).await;

        outbox.keep(&records(1)).unwrap();
        assert!(stored_after(&directus, 1).await <= at_once, "the first record (after a pass with none) goes at once");
        outbox.keep(&records(1)).unwrap();
        let waited = stored_after(&directus, 2).await;
        assert!(waited >= linger - at_once && waited <= linger + at_once, "the next waits out the linger: {waited:?}");
        outbox.keep(&records(4)).unwrap();
        assert!(stored_after(&directus, 6).await <= at_once, "a full batch does not wait");
        tokio::time::sleep(linger * 3).await;
        outbox.keep(&records(1)).unwrap();
        assert!(stored_after(&directus, 7).await <= at_once, "nor does a record after a quiet spell");
        assert_eq!(directus.batches(), [1, 1, 4, 1]);
        flusher.abort();
    }

    #[test]
    fn records_of_the_old_file_spool_are_moved_into_the_store() {
        let dir = TempDir::new();
        let spool = dir.0.join("spool");
        std::fs::create_dir_all(spool.join("rejected")).unwrap();
        let (batch, single, refused) = (records(3), record(), record());
        let lines: Vec<String> = batch.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
        std::fs::write(spool.join("00000000000000000001.jsonl"), lines.join("\n")).unwrap();
        std::fs::write(spool.join(format!("{}.json", single.request_id)), serde_json::to_vec(&single).unwrap())
            .unwrap();
        let old_format = serde_json::to_string(&refused).unwrap().replace("\"0.750000000\"", "0.75");
        std::fs::write(spool.join("rejected").join(format!("{}.json", refused.request_id)), old_format).unwrap();
        std::fs::write(spool.join("garbage.jsonl"), "not json").unwrap();

        let outbox = open(&dir);
        assert_eq!(import_legacy_spool(&spool, &outbox).unwrap(), 5);
        assert_eq!(outbox.len(), 4, "the refused one is kept as refused");
        let all = outbox.all_records().unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.iter().any(|r| r.request_id == refused.request_id && r.cost_cents == refused.cost_cents));
        assert!(spool.join("garbage.jsonl").exists(), "an unreadable file is left for the operator");
        assert!(!spool.join("00000000000000000001.jsonl").exists());
        assert_eq!(import_legacy_spool(&spool, &outbox).unwrap(), 0, "nothing twice");
    }
}
