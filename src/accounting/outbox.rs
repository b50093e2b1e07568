//! The usage outbox: records waiting for Directus, in the store's `usage_outbox` table.
//!
//! # Writing
//! Records reach the table through one [`OutboxWriter`]: a thread fed by a bounded queue. Each round it wakes
//! for the first record, lets the batch gather for `LINGER` (less if someone waits on a flush), then inserts
//! everything queued (at most [`MAX_BATCH`] records) in one transaction: one fsync however many records it
//! holds, so the batch size follows the load. `submit` never blocks the request path.
//!
//! # Reading
//! The flusher reads waiting records in insertion order by cursor (`seq`), a page at a time, deletes what
//! Directus stored and marks what it refused for good. A crash between Directus storing a record and its
//! deletion here means the record is sent again: Directus's unique `request_id` makes that harmless.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use tokio::sync::futures::Notified;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::domain::usage::UsageRecord;
use crate::store::{Pacer, ROWS_PER_PAUSE, Store, StoreError};
use crate::sync;

/// The most records one transaction inserts.
pub const MAX_BATCH: usize = 1_000;
/// Records waiting for the writer thread. When it is full, [`OutboxWriter::submit`] parks the record in a task
/// that waits for room: nothing is dropped and the caller still does not wait.
pub const QUEUE_CAPACITY: usize = 65_536;
/// A batch that cannot be written is tried again after each of these pauses, then logged as lost.
const WRITE_RETRY_DELAYS: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(500), Duration::from_secs(2)];
/// How long a batch gathers before its commit, at any load: a transaction (one fsync, half the writer's CPU) per
/// record was 22% of the sidecar's CPU at 28,000 records/s and 10% lingering. At one connection (5,000 calls/s
/// beside a busy Directus) writing each record at once woke the writer and fsynced for every call, and its
/// bursts of work on the two cores made the slowest calls 11-34 ms; lingering made them 8-16 ms and the
/// writer's CPU per record 40-50 µs to 9-13. A crash loses at most the records of the last few milliseconds' calls
/// either way (the call has answered before its record is written).
const LINGER: Duration = Duration::from_millis(5);
/// Dropping an [`OutboxWriter`] waits this long, at most, for the records still queued to be written.
const DRAIN_ON_DROP: Duration = Duration::from_secs(5);

/// A waiting record and its place in the outbox.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub seq: i64,
    pub record: UsageRecord,
}

/// The outbox table, read and changed by the flusher. Its file operations block: call them from a thread or
/// `tokio::task::spawn_blocking`.
pub struct Outbox {
    store: Arc<Store>,
    connection: Mutex<Connection>,
    /// Records waiting for delivery (written, not delivered, not refused); readable without touching the file.
    waiting: AtomicUsize,
    /// Transactions that inserted records: one per batch, however many records it held.
    commits: AtomicU64,
    wake: Notify,
}

impl Outbox {
    pub fn open(store: Arc<Store>) -> Result<Outbox, StoreError> {
        let connection = store.connect()?;
        let waiting: i64 = connection
            .query_row("SELECT count(*) FROM usage_outbox WHERE rejected_at IS NULL", [], |row| row.get(0))
            .map_err(|e| store.error(e))?;
        let waiting = AtomicUsize::new(usize::try_from(waiting).unwrap_or(0));
        Ok(Outbox {
            store,
            connection: Mutex::new(connection),
            waiting,
            commits: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// Up to `limit` waiting records after `after` (a `seq`; 0 for the start), oldest first. A record that no
    /// longer parses is set aside as rejected, with an error logged.
    pub fn page(&self, after: i64, limit: usize) -> Result<Vec<Waiting>, StoreError> {
        let mut pacer = Pacer::default();
        let rows: Vec<(i64, String)> = {
            let connection = sync::lock(&self.connection);
            let mut statement = connection
                .prepare_cached(
                    "SELECT seq, record FROM usage_outbox WHERE rejected_at IS NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(|e| self.store.error(e))?;
            let mut read = || -> rusqlite::Result<Vec<(i64, String)>> {
                let mut found = statement.query(params![after, limit as i64])?;
                let mut rows = Vec::new();
                while let Some(row) = found.next()? {
                    pacer.done(1);
                    rows.push((row.get(0)?, row.get(1)?));
                }
                Ok(rows)
            };
            read().map_err(|e| self.store.error(e))?
        };
        let mut page = Vec::with_capacity(rows.len());
        for (seq, json) in rows {
            pacer.done(1);
            match serde_json::from_str(&json) {
                Ok(record) => page.push(Waiting { seq, record }),
                Err(error) => {
                    tracing::error!(seq, %error, "unreadable usage record in the outbox; set aside as rejected");
                    self.reject(seq, "unreadable record")?;
                }
            }
        }
        Ok(page)
    }

    /// Directus has these records: they leave the outbox. Consecutive `seq`s (a page of one kind of record,
    /// the usual case) go by range, [`ROWS_PER_PAUSE`] at a time, so the pace between statements stays as it
    /// was: deleted a row a statement, pages of 500 took 5.1-6.5 µs of CPU a record, by ranges 3.7-4.8.
    pub fn delivered(&self, seqs: &[i64]) -> Result<(), StoreError> {
        let mut connection = sync::lock(&self.connection);
        let transaction = connection.transaction().map_err(|e| self.store.error(e))?;
        let mut removed = 0;
        {
            let mut delete = transaction
                .prepare_cached("DELETE FROM usage_outbox WHERE seq BETWEEN ?1 AND ?2 AND rejected_at IS NULL")
                .map_err(|e| self.store.error(e))?;
            let mut pacer = Pacer::default();
            for (first, last) in ranges(seqs, ROWS_PER_PAUSE) {
                pacer.done(usize::try_from(last - first + 1).unwrap_or(ROWS_PER_PAUSE));
                removed += delete.execute([first, last]).map_err(|e| self.store.error(e))?;
            }
        }
        transaction.commit().map_err(|e| self.store.error(e))?;
        self.waiting.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    /// Directus refused the record for good: it stays in the outbox, marked, for an operator to look at (and
    /// counts against its user's credits meanwhile).
    pub fn reject(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let changed = sync::lock(&self.connection)
            .execute(
                "UPDATE usage_outbox SET rejected_at = ?1, rejection = ?2 WHERE seq = ?3 AND rejected_at IS NULL",
                params![now, reason, seq],
            )
            .map_err(|e| self.store.error(e))?;
        self.waiting.fetch_sub(changed, Ordering::Relaxed);
        Ok(())
    }

    /// Every record in the outbox, waiting or refused: what still counts against users' credits at startup.
    pub fn all_records(&self) -> Result<Vec<UsageRecord>, StoreError> {
        let connection = sync::lock(&self.connection);
        let mut statement =
            connection.prepare("SELECT record FROM usage_outbox ORDER BY seq").map_err(|e| self.store.error(e))?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(|e| self.store.error(e))?;
        let mut records = Vec::new();
        for json in rows {
            if let Ok(record) = serde_json::from_str(&json.map_err(|e| self.store.error(e))?) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Inserts records found elsewhere (the old file spool), as waiting or, with a reason, as refused.
    pub fn import(&self, records: &[UsageRecord], rejected: Option<&str>) -> Result<(), StoreError> {
        let mut connection = sync::lock(&self.connection);
        self.insert(&mut connection, records)?;
        if let Some(reason) = rejected {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            for record in records {
                let changed = connection
                    .execute(
                        "UPDATE usage_outbox SET rejected_at = ?1, rejection = ?2 WHERE request_id = ?3 AND rejected_at IS NULL",
                        params![now, reason, record.request_id.to_string()],
                    )
                    .map_err(|e| self.store.error(e))?;
                self.waiting.fetch_sub(changed, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Records waiting for delivery (refused ones not counted). Records still queued for the writer (a few
    /// milliseconds' worth) are not counted either.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches written since the outbox was opened.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How long the oldest waiting record has waited.
    pub fn oldest_age(&self) -> Result<Option<Duration>, StoreError> {
        let oldest: Option<i64> = sync::lock(&self.connection)
            .query_row(
                "SELECT enqueued_at FROM usage_outbox WHERE rejected_at IS NULL ORDER BY seq LIMIT 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.store.error(e))?;
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        Ok(oldest.map(|millis| Duration::from_millis(u64::try_from(now - i128::from(millis)).unwrap_or(0))))
    }

    /// Resolves after the next batch is written, or at once if one was since the last wake-up.
    pub(super) fn enqueued(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Inserts a batch in one transaction, on the writer's own connection. A record already there (the same
    /// `request_id`) is not inserted twice.
    fn insert(&self, connection: &mut Connection, records: &[UsageRecord]) -> Result<(), StoreError> {
        let transaction = connection.transaction().map_err(|e| self.store.error(e))?;
        let inserted = insert_within(&transaction, records).map_err(|e| self.store.error(e))?;
        transaction.commit().map_err(|e| self.store.error(e))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.inserted(inserted);
        Ok(())
    }

    /// Inserts `records` at once, on the outbox's own connection (blocking: call it from a thread or
    /// `spawn_blocking`), for a caller that must know they are on disk and has no transaction in this store.
    pub fn keep(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        self.insert(&mut sync::lock(&self.connection), records)
    }

    /// `count` records were committed (by [`insert_within`] in another writer's transaction, or by this
    /// outbox's writer): they are waiting, and the flusher is told.
    pub fn inserted(&self, count: usize) {
        self.waiting.fetch_add(count, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Inserts `records` into the outbox within `transaction`, a record already there (the same `request_id`) not
/// twice; returns how many were new. A writer whose own change must not outlive its usage record (a job marked
/// succeeded) inserts the record in the same transaction, then tells the outbox ([`Outbox::inserted`]).
pub fn insert_within(transaction: &rusqlite::Transaction<'_>, records: &[UsageRecord]) -> rusqlite::Result<usize> {
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut insert = transaction
        .prepare_cached("INSERT OR IGNORE INTO usage_outbox (request_id, record, enqueued_at) VALUES (?1, ?2, ?3)")?;
    let mut pacer = Pacer::default();
    let mut inserted = 0;
    for record in records {
        pacer.done(1);
        let json = serde_json::to_string(record).expect("a usage record serializes");
        inserted += insert.execute(params![record.request_id.to_string(), json, now as i64])?;
    }
    Ok(inserted)
}

/// `seqs` as inclusive ranges of consecutive numbers, each of at most `most` numbers: every number in a range
/// is one of `seqs`, in whatever order they came.
fn ranges(seqs: &[i64], most: usize) -> Vec<(i64, i64)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for seq in sorted {
        match ranges.last_mut() {
            Some((first, last)) if *last + 1 == seq && seq - *first < most as i64 => *last = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    ranges
}

enum Message {
    Record(UsageRecord),
    /// Answered once every record queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The single writer of an [`Outbox`]: a thread that inserts whatever is queued as one transaction, then looks
/// again. While it commits one batch the next one gathers. Dropping the writer writes what is still queued
/// (waiting up to 5 s).
pub struct OutboxWriter {
    queue: Option<mpsc::Sender<Message>>,
    thread: Option<JoinHandle<()>>,
    overflowing: AtomicBool,
}

impl OutboxWriter {
    /// Starts the writer thread with its own connection to the store.
    pub fn start(outbox: Arc<Outbox>) -> Result<OutboxWriter, StoreError> {
        let mut connection = outbox.store.connect()?;
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let thread = thread::Builder::new()
            .name("usage-outbox".into())
            .spawn(move || write_batches(&outbox, &mut connection, receiver, LINGER))
            .map_err(StoreError::Thread)?;
        Ok(OutboxWriter { queue: Some(queue), thread: Some(thread), overflowing: AtomicBool::new(false) })
    }

    /// Queues `record` for the next batch and returns at once: never blocks, never drops the record. When the
    /// queue is full (the disk has fallen [`QUEUE_CAPACITY`] records behind) the record waits in a task for room.
    pub fn submit(&self, record: UsageRecord) {
        let Some(queue) = &self.queue else { return log_lost(&record, &"the writer has stopped") };
        match queue.try_send(Message::Record(record)) {
            Ok(()) => {
                if self.overflowing.load(Ordering::Relaxed) {
                    self.overflowing.store(false, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Full(Message::Record(record))) => self.wait_for_room(queue, record),
            Err(TrySendError::Closed(Message::Record(record))) => log_lost(&record, &"the writer has stopped"),
            Err(_) => {}
        }
    }

    /// Resolves once every record submitted before the call is written (or logged as lost). Records that found
    /// the queue full may still be on their way.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else { return };
        let (done, written) = oneshot::channel();
        if queue.send(Message::Flush(done)).await.is_ok() {
            // A writer lingering over a batch writes it now (see `gather`).
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
            let _ = written.await;
        }
    }

    fn wait_for_room(&self, queue: &mpsc::Sender<Message>, record: UsageRecord) {
        if !self.overflowing.swap(true, Ordering::Relaxed) {
            tracing::warn!(capacity = QUEUE_CAPACITY, "the usage outbox queue is full: the disk is not keeping up");
        }
        let mut record = Unwritten(Some(record));
        let queue = queue.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Ok(permit) = queue.reserve().await {
                        permit.send(Message::Record(record.take()));
                    }
                });
            }
            // Not on the runtime, so blocking is allowed.
            Err(_) => {
                if let Err(mpsc::error::SendError(Message::Record(record))) =
                    queue.blocking_send(Message::Record(record.take()))
                {
                    log_lost(&record, &"the writer has stopped");
                }
            }
        }
    }
}

impl Drop for OutboxWriter {
    fn drop(&mut self) {
        drop(self.queue.take());
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + DRAIN_ON_DROP;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!("the usage outbox writer is still busy; not waiting for it any longer");
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
    }
}

/// The writer thread: until every sender is gone, take what is queued, insert it as one batch, answer flushes.
fn write_batches(outbox: &Outbox, connection: &mut Connection, mut queue: mpsc::Receiver<Message>, linger: Duration) {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    let mut records = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    while queue.blocking_recv_many(&mut messages, MAX_BATCH) > 0 {
        gather(&mut queue, &mut messages, linger);
        for message in messages.drain(..) {
            match message {
                Message::Record(record) => records.push(record),
                Message::Flush(done) => flushes.push(done),
            }
        }
        if !records.is_empty() {
            write_with_retries(outbox, connection, &records);
            records.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Lets a batch gather for `linger` ([`LINGER`]), unless someone waits on a flush (shutdown): then the batch is
/// written at once. Records do not wake the writer while it lingers (that would cost a wake-up per call); a
/// flush does, by unparking the thread, so whoever flushes waits for the commit, not for the linger as well.
fn gather(queue: &mut mpsc::Receiver<Message>, messages: &mut Vec<Message>, linger: Duration) {
    let is_flush = |message: &Message| matches!(message, Message::Flush(_));
    let deadline = Instant::now() + linger;
    let mut flushing = messages.iter().any(is_flush);
    while !flushing && messages.len() < MAX_BATCH {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::park_timeout(deadline - now);
        while messages.len() < MAX_BATCH {
            let Ok(message) = queue.try_recv() else { break };
            flushing |= is_flush(&message);
            messages.push(message);
        }
    }
}

fn write_with_retries(outbox: &Outbox, connection: &mut Connection, records: &[UsageRecord]) {
    let mut delays = WRITE_RETRY_DELAYS.iter();
    loop {
        let Err(error) = outbox.insert(connection, records) else { return };
        match delays.next() {
            Some(delay) => {
                tracing::warn!(%error, records = records.len(), retry_in_ms = delay.as_millis() as u64,
                    "cannot write usage records to the store; retrying");
                thread::sleep(*delay);
            }
            None => {
                for record in records {
                    log_lost(record, &error);
                }
                return;
            }
        }
    }
}

/// The one way a record is lost while the process lives (the disk is full or gone), so it is logged whole: the
/// log line is then its only copy.
fn log_lost(record: &UsageRecord, error: &dyn std::fmt::Display) {
    let json = serde_json::to_string(record).unwrap_or_default();
    tracing::error!(%error, request_id = %record.request_id, record = json, "usage record could not be stored");
}

/// A record on its way to the queue outside the caller's control; if it is dropped on the way (the runtime
/// shut down first), it is logged as lost instead of vanishing.
struct Unwritten(Option<UsageRecord>);

impl Unwritten {
    fn take(&mut self) -> UsageRecord {
        self.0.take().expect("an unwritten record is taken once")
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            log_lost(&record, &"the process is stopping");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashSet;

    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::domain::money::Cents;
    use crate::domain::provider::Provider;
    use crate::domain::routing::Source;
    use crate::domain::usage::TokenUsage;
    use crate::domain::user::UserId;
    use crate::store::tests::TempDir;

    pub(crate) fn record() -> UsageRecord {
        UsageRecord {
            request_id: Uuid::new_v4(),
            user: UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap(),
            provider: Provider::openai(),
            model: "gpt-4o-2024-08-06".into(),
            fallback_from: None,
            source: Source::Internal,
            service_type: "openai.chat_completions".into(),
            usage: TokenUsage::new(1_000, 500),
            cost_cents: Cents::parse("0.75").unwrap(),
            occurred_at: datetime!(2026-11-01 12:00:00.123456789 UTC),
        }
    }

    pub(crate) fn records(n: usize) -> Vec<UsageRecord> {
        (0..n).map(|_| record()).collect()
    }

    pub(crate) fn ids_of(records: &[UsageRecord]) -> Vec<Uuid> {
        records.iter().map(|r| r.request_id).collect()
    }

    pub(crate) fn open(dir: &TempDir) -> Arc<Outbox> {
        Arc::new(Outbox::open(Arc::new(Store::open(&dir.store_path()).unwrap())).unwrap())
    }

    fn waiting_ids(outbox: &Outbox) -> Vec<Uuid> {
        outbox.page(0, 1_000_000).unwrap().into_iter().map(|w| w.record.request_id).collect()
    }

    #[test]
    fn records_survive_a_restart_in_order_and_a_repeat_is_kept_once() {
        let dir = TempDir::new();
        let batch = records(5);
        {
            let outbox = open(&dir);
            outbox.import(&batch, None).unwrap();
            outbox.import(&batch[..2], None).unwrap();
            assert_eq!(outbox.len(), 5);
        }
        let outbox = open(&dir);
        assert_eq!(outbox.len(), 5, "counted again at open");
        assert_eq!(waiting_ids(&outbox), ids_of(&batch), "oldest first, each once");
        let page = outbox.page(0, 2).unwrap();
        assert_eq!(page.len(), 2);
        let next = outbox.page(page[1].seq, 10).unwrap();
        assert_eq!(next.iter().map(|w| w.record.request_id).collect::<Vec<_>>(), ids_of(&batch[2..]), "by cursor");
        assert_eq!(next[0].record, batch[2], "read back exactly");
    }

    #[test]
    fn delivered_records_leave_and_refused_ones_stay_marked_but_not_waiting() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let batch = records(4);
        outbox.import(&batch, None).unwrap();
        let page = outbox.page(0, 10).unwrap();
        outbox.delivered(&[page[0].seq, page[1].seq]).unwrap();
        outbox.delivered(&[page[0].seq]).unwrap();
        outbox.reject(page[2].seq, "400 INVALID_PAYLOAD").unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(waiting_ids(&outbox), [batch[3].request_id]);
        let all: Vec<_> = outbox.all_records().unwrap().iter().map(|r| r.request_id).collect();
        assert_eq!(all, [batch[2].request_id, batch[3].request_id], "refused ones still count");
        let reason: String = outbox
            .store
            .connect()
            .unwrap()
            .query_row("SELECT rejection FROM usage_outbox WHERE seq = ?1", [page[2].seq], |row| row.get(0))
            .unwrap();
        assert_eq!(reason, "400 INVALID_PAYLOAD", "an operator can see why");
    }

    #[test]
    fn consecutive_seqs_go_in_short_ranges_and_no_range_covers_a_seq_not_given() {
        assert_eq!(ranges(&[5, 1, 2, 3, 7, 8, 9, 10, 3], 3), [(1, 3), (5, 5), (7, 9), (10, 10)]);
        assert_eq!(ranges(&[], 32), []);
    }

    #[test]
    fn delivering_every_other_record_leaves_the_others_waiting() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let batch = records(70);
        outbox.import(&batch, None).unwrap();
        let page = outbox.page(0, 100).unwrap();
        let (even, odd): (Vec<_>, Vec<_>) = page.iter().partition(|w| w.seq % 2 == 0);
        outbox.delivered(&even.iter().map(|w| w.seq).collect::<Vec<_>>()).unwrap();
        assert_eq!(waiting_ids(&outbox), odd.iter().map(|w| w.record.request_id).collect::<Vec<_>>());
        assert_eq!(outbox.len(), odd.len());
        outbox.delivered(&page.iter().map(|w| w.seq).collect::<Vec<_>>()).unwrap();
        assert!(outbox.is_empty() && waiting_ids(&outbox).is_empty(), "the rest, given with those gone, leave too");
    }

    #[test]
    fn an_unreadable_record_is_set_aside_and_the_rest_still_read() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let good = records(2);
        outbox.import(&good, None).unwrap();
        outbox
            .store
            .connect()
            .unwrap()
            .execute(
                "UPDATE usage_outbox SET record = 'not json' WHERE request_id = ?1",
                [good[0].request_id.to_string()],
            )
            .unwrap();
        assert_eq!(waiting_ids(&outbox), [good[1].request_id]);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn the_oldest_waiting_record_has_an_age() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        assert_eq!(outbox.oldest_age().unwrap(), None);
        outbox.import(&records(1), None).unwrap();
        assert!(outbox.oldest_age().unwrap().unwrap() < Duration::from_secs(60));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn records_submitted_from_many_tasks_at_once_are_all_written_in_few_transactions() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let writer = Arc::new(OutboxWriter::start(Arc::clone(&outbox)).unwrap());
        let (tasks, each) = (32, 250);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let writer = Arc::clone(&writer);
            handles.push(tokio::spawn(async move {
                let mine = records(each);
                for record in &mine {
                    writer.submit(record.clone());
                    tokio::task::yield_now().await;
                }
                ids_of(&mine)
            }));
        }
        let mut submitted = HashSet::new();
        for handle in handles {
            submitted.extend(handle.await.unwrap());
        }
        writer.flush().await;
        assert_eq!(outbox.len(), tasks * each);
        let found = waiting_ids(&outbox);
        assert_eq!(found.len(), tasks * each, "each record once");
        assert_eq!(found.into_iter().collect::<HashSet<_>>(), submitted);
        let commits = outbox.commits() as usize;
        assert!(commits < tasks * each / 2, "{commits} commits for {} records", tasks * each);
    }

    #[tokio::test]
    async fn a_lone_record_is_written_after_the_linger_and_wakes_the_flusher() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let writer = OutboxWriter::start(Arc::clone(&outbox)).unwrap();
        let woken = outbox.enqueued();
        writer.submit(record());
        // No flush: the writer commits once the batch has gathered, without waiting for company.
        tokio::time::timeout(Duration::from_secs(5), woken).await.expect("the batch was written");
        assert_eq!(outbox.len(), 1);
    }

    #[tokio::test]
    async fn a_flush_cuts_the_linger_short() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writes_to = Arc::clone(&outbox);
        let mut connection = outbox.store.connect().unwrap();
        let an_hour = Duration::from_secs(3_600);
        let thread = thread::spawn(move || write_batches(&writes_to, &mut connection, receiver, an_hour));
        let writer = OutboxWriter { queue: Some(queue), thread: Some(thread), overflowing: false.into() };
        writer.submit(record());
        // The writer has taken the record and lingers over it, with nothing else queued.
        let queue = writer.queue.as_ref().unwrap();
        while queue.capacity() < queue.max_capacity() {
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), writer.flush())
            .await
            .expect("the flush did not wait out the linger");
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn dropping_the_writer_writes_everything_still_queued() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        let writer = OutboxWriter::start(Arc::clone(&outbox)).unwrap();
        let submitted = records(5_000);
        // Outside any runtime, as at the very end of the process.
        for record in &submitted {
            writer.submit(record.clone());
        }
        drop(writer);
        assert_eq!(outbox.len(), 5_000);
        let found: HashSet<_> = waiting_ids(&outbox).into_iter().collect();
        assert_eq!(found, ids_of(&submitted).into_iter().collect());
    }

    #[tokio::test]
    async fn a_full_queue_makes_records_wait_not_vanish() {
        let dir = TempDir::new();
        let outbox = open(&dir);
        // A writer with no thread behind its queue yet: every record beyond the capacity finds it full.
        let (queue, receiver) = mpsc::channel(2);
        let writer = OutboxWriter { queue: Some(queue), thread: None, overflowing: false.into() };
        let submitted = records(10);
        for record in &submitted {
            writer.submit(record.clone());
        }
        assert!(writer.overflowing.load(Ordering::Relaxed));
        let writes_to = Arc::clone(&outbox);
        let mut connection = outbox.store.connect().unwrap();
        let thread = thread::spawn(move || write_batches(&writes_to, &mut connection, receiver, LINGER));
        writer.flush().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while outbox.len() < submitted.len() {
            assert!(Instant::now() < deadline, "only {} of 10 written", outbox.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let found: HashSet<_> = waiting_ids(&outbox).into_iter().collect();
        assert_eq!(found, ids_of(&submitted).into_iter().collect());
        drop(writer);
        thread.join().unwrap();
    }
}
