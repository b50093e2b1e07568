//! The on-disk queue of usage records waiting for Directus, written by group commit.
//!
//! # Writing
//! Records reach the disk through one [`SpoolWriter`]: a thread fed by a bounded queue. Each round it takes
//! everything already queued (at most [`MAX_BATCH`] records; it never waits for more) and writes it as one
//! *batch file* `<number>.jsonl`, one JSON record per line: written to `<number>.jsonl.tmp`, `fsync`ed, renamed
//! into place, the directory `fsync`ed. So a batch is either wholly on disk or absent after a crash, one batch
//! costs two fsyncs however many records it holds, and the directory holds a few hundred files during a long
//! Directus outage instead of one per record. Batch numbers are nanoseconds since the epoch, raised to one more
//! than any number already in the directory, so a new batch never replaces an old one.
//!
//! A `<request_id>.json` file holding one record (what earlier versions wrote, or a record put back from
//! `rejected/` by hand) is read as a batch of one.
//!
//! # Delivering
//! [`Spool::pending`] lists the records of every batch, oldest batch first (file modification time, then
//! name), each batch in line order. The spool remembers, in memory only, which records of each batch were
//! delivered ([`Spool::complete`]) and deletes the file when its last record is. A crash or restart forgets
//! that: **a partly delivered batch is delivered again in full**. That is harmless: Directus stores each
//! `request_id` once, and the sink answers `Ok` for a record it already has (`RECORD_NOT_UNIQUE`). Delivery is
//! at least once, storage exactly once.
//!
//! # Damage
//! A batch with lines that do not parse keeps its good lines: the whole file is first copied to `corrupt/`
//! for inspection, then the batch is atomically rewritten with only its good lines (same modification time,
//! so it keeps its place in the order). A batch without a single good line, or a `.json` file that does not
//! parse, is moved to `corrupt/` whole. [`Spool::corrupt_count`] counts the unparseable records (lines).
//!
//! One process per directory: the spool assumes nobody else writes `*.tmp` files there.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::futures::Notified;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::domain::usage::UsageRecord;
use crate::sync;

const BATCH_SUFFIX: &str = ".jsonl";
const SINGLE_SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".tmp";
const CORRUPT_DIR: &str = "corrupt";
const REJECTED_DIR: &str = "rejected";

/// The most records one batch file holds.
pub const MAX_BATCH: usize = 1_000;
/// Records waiting for the writer thread. When it is full, [`SpoolWriter::submit`] parks the record in a task
/// that waits for room: nothing is dropped and the caller still does not wait.
pub const QUEUE_CAPACITY: usize = 65_536;
/// A batch that cannot be written is tried again after each of these pauses, then logged as lost.
const WRITE_RETRY_DELAYS: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(500), Duration::from_secs(2)];
/// Dropping a [`SpoolWriter`] waits this long, at most, for the records still queued to be written.
const DRAIN_ON_DROP: Duration = Duration::from_secs(5);

/// A spooled record and where it lives: its batch file, and its place among that batch's records.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub record: UsageRecord,
    file_name: String,
    /// Which reading of the file `index` refers to; a file found changed is a new batch with a new id.
    batch: u64,
    index: usize,
}

/// The spool directory. Its file operations block: call them from a thread or `tokio::task::spawn_blocking`.
pub struct Spool {
    dir: PathBuf,
    batches: Mutex<HashMap<String, Batch>>,
    /// Undelivered records: the sum of `remaining` over `batches`, changed only with that lock held, readable
    /// without it.
    pending: AtomicUsize,
    corrupt: AtomicU64,
    /// The number of the newest batch file, so the next one sorts after it and never takes its name.
    last_batch: AtomicU64,
    next_batch_id: AtomicU64,
    wake: Notify,
}

/// What the spool knows about one file.
struct Batch {
    id: u64,
    /// Per record, whether it was delivered. `None`: counted when the spool was opened, not read yet.
    delivered: Option<Vec<bool>>,
    remaining: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `<number>.jsonl`: JSON lines.
    Batch,
    /// `<request_id>.json`: one JSON record.
    Single,
}

fn kind(name: &str) -> Option<Kind> {
    if name.ends_with(BATCH_SUFFIX) {
        Some(Kind::Batch)
    } else if name.ends_with(SINGLE_SUFFIX) {
        Some(Kind::Single)
    } else {
        None
    }
}

/// What reading one file found.
enum Read {
    Records(Vec<UsageRecord>),
    /// Not there (any more), or nothing deliverable left in it.
    Gone,
    /// Could not be read this time; tried again on the next listing.
    Unreadable,
}

/// Why a batch did not become durable.
enum WriteError {
    /// Nothing was spooled; writing again is safe.
    Unwritten(io::Error),
    /// The batch is in place and will be delivered, but syncing the directory failed: it might not survive a
    /// power loss. Writing it again would spool it twice.
    Unsynced(io::Error),
}

impl Spool {
    /// Opens (creating with mode 0700 if missing) the spool in `dir`. Removes `*.tmp` files, which only a crash
    /// mid-write leaves behind: their records were never durable. Counts the records of every batch (its
    /// non-blank lines) without parsing them; [`Spool::pending`] parses.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Spool> {
        let dir = dir.into();
        if !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
        }
        for sub in [CORRUPT_DIR, REJECTED_DIR] {
            DirBuilder::new().recursive(true).mode(0o700).create(dir.join(sub))?;
        }
        let spool = Spool {
            dir,
            batches: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
            corrupt: AtomicU64::new(0),
            last_batch: AtomicU64::new(0),
            next_batch_id: AtomicU64::new(0),
            wake: Notify::new(),
        };
        let mut batches = HashMap::new();
        for (_, name) in list_files(&spool.dir)? {
            if let Some(written) = name.strip_suffix(TMP_SUFFIX) {
                if kind(written).is_some() {
                    remove_if_present(&spool.dir.join(&name))?;
                }
                continue;
            }
            let Some(kind) = kind(&name) else { continue };
            let records = match kind {
                Kind::Single => 1,
                Kind::Batch => {
                    if let Some(number) = name.strip_suffix(BATCH_SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
                        spool.last_batch.fetch_max(number, Ordering::Relaxed);
                    }
                    match fs::read(spool.dir.join(&name)) {
                        Ok(bytes) => bytes.split(|&b| b == b'\n').filter(|line| !line.trim_ascii().is_empty()).count(),
                        Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                        Err(error) => {
                            tracing::warn!(file = name, %error, "cannot read a usage batch; will try again");
                            1
                        }
                    }
                }
            };
            batches.insert(name, Batch { id: spool.new_batch_id(), delivered: None, remaining: records });
        }
        spool.pending.store(batches.values().map(|b| b.remaining).sum(), Ordering::Relaxed);
        *spool.batches() = batches;
        Ok(spool)
    }

    /// Stores `records` durably as one batch (data and directory entry synced) before returning, then wakes the
    /// flusher. Blocking: two fsyncs. An `Err` means the records are not spooled, unless only the directory sync
    /// failed (the error says so); then they are in place and will be delivered. Nothing is deduplicated here:
    /// a `request_id` spooled twice is delivered twice and stored once.
    pub fn enqueue_batch(&self, records: &[UsageRecord]) -> io::Result<()> {
        self.write_batch(records).map_err(|error| match error {
            WriteError::Unwritten(error) => error,
            WriteError::Unsynced(error) => {
                io::Error::new(error.kind(), format!("spooled, but syncing the spool directory failed: {error}"))
            }
        })
    }

    /// [`Spool::enqueue_batch`] for one record.
    pub fn enqueue(&self, record: &UsageRecord) -> io::Result<()> {
        self.enqueue_batch(std::slice::from_ref(record))
    }

    fn write_batch(&self, records: &[UsageRecord]) -> Result<(), WriteError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(records.len() * 320);
        for record in records {
            serde_json::to_writer(&mut lines, record).map_err(|e| WriteError::Unwritten(io::Error::other(e)))?;
            lines.push(b'\n');
        }
        let name = self.next_batch_name();
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        if let Err(error) = write_synced(&tmp, &lines, None).and_then(|()| fs::rename(&tmp, self.dir.join(&name))) {
            let _ = fs::remove_file(&tmp);
            return Err(WriteError::Unwritten(error));
        }
        let synced = sync_dir(&self.dir);
        {
            let mut batches = self.batches();
            // A listing may have found the file first.
            if let Entry::Vacant(entry) = batches.entry(name) {
                let delivered = Some(vec![false; records.len()]);
                entry.insert(Batch { id: self.new_batch_id(), delivered, remaining: records.len() });
                self.pending.fetch_add(records.len(), Ordering::Relaxed);
            }
        }
        self.wake.notify_one();
        synced.map_err(WriteError::Unsynced)
    }

    /// Every undelivered record, oldest batch first (file modification time, then name), in line order. Records
    /// this process already delivered from a batch are left out; after a restart the whole batch comes again.
    /// Damaged files are dealt with as the module documentation says; a file that cannot be read is logged and
    /// left for the next call.
    pub fn pending(&self) -> io::Result<Vec<PendingRecord>> {
        // Batches known before the listing and not found by it were removed by hand; batches the writer adds
        // meanwhile are not in this set and are kept.
        let known: HashSet<String> = self.batches().keys().cloned().collect();
        let mut files: Vec<_> = list_files(&self.dir)?
            .into_iter()
            .filter_map(|(modified, name)| kind(&name).map(|kind| (modified, name, kind)))
            .collect();
        files.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let read: Vec<_> =
            files.into_iter().map(|(modified, name, kind)| (self.read(&name, kind, modified), name)).collect();

        let mut records = Vec::new();
        let mut finished = Vec::new();
        {
            let mut batches = self.batches();
            let mut seen = HashSet::with_capacity(read.len());
            for (found, name) in read {
                match found {
                    Read::Gone => {
                        batches.remove(&name);
                    }
                    Read::Unreadable => {
                        batches.entry(name.clone()).or_insert_with(|| Batch {
                            id: self.new_batch_id(),
                            delivered: None,
                            remaining: 1,
                        });
                        seen.insert(name);
                    }
                    Read::Records(found) => {
                        let batch = batches.entry(name.clone()).or_insert_with(|| Batch {
                            id: self.new_batch_id(),
                            delivered: None,
                            remaining: 0,
                        });
                        // Unread so far, or changed since it was read (by hand): a new batch, all undelivered.
                        if batch.delivered.as_ref().is_none_or(|d| d.len() != found.len()) {
                            *batch = Batch {
                                id: self.new_batch_id(),
                                delivered: Some(vec![false; found.len()]),
                                remaining: found.len(),
                            };
                        }
                        let delivered = batch.delivered.as_deref().unwrap_or_default();
                        for (index, (record, done)) in found.into_iter().zip(delivered).enumerate() {
                            if !done {
                                let file_name = name.clone();
                                records.push(PendingRecord { record, file_name, batch: batch.id, index });
                            }
                        }
                        if batch.remaining == 0 {
                            finished.push(name.clone());
                        }
                        seen.insert(name);
                    }
                }
            }
            batches.retain(|name, _| seen.contains(name) || !known.contains(name));
            self.pending.store(batches.values().map(|b| b.remaining).sum(), Ordering::Relaxed);
        }
        // Delivered in full, but an earlier removal failed.
        for file_name in finished {
            if let Err(error) = self.remove_batch(&file_name) {
                tracing::warn!(file = file_name, %error, "cannot remove a delivered usage batch; will try again");
            }
        }
        Ok(records)
    }

    /// Forgets a delivered record, and deletes its batch file once every record in it is delivered. The deletion
    /// is not synced: if it is lost in a crash, the batch is delivered again, which Directus's unique
    /// `request_id` makes harmless. Completing twice, or after the batch is gone, is fine.
    pub fn complete(&self, pending: &PendingRecord) -> io::Result<()> {
        match self.mark_delivered(pending) {
            Some(file_name) => self.remove_batch(&file_name),
            None => Ok(()),
        }
    }

    /// The in-memory half of [`Spool::complete`], which never blocks on the disk: returns the batch file to
    /// remove with [`Spool::remove_batch`] if this was its last undelivered record.
    pub(super) fn mark_delivered(&self, pending: &PendingRecord) -> Option<String> {
        let mut batches = self.batches();
        let batch = batches.get_mut(&pending.file_name).filter(|b| b.id == pending.batch)?;
        let done = batch.delivered.as_mut()?.get_mut(pending.index)?;
        if !*done {
            *done = true;
            batch.remaining -= 1;
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
        (batch.remaining == 0).then(|| pending.file_name.clone())
    }

    /// Deletes a batch file whose records were all delivered.
    pub(super) fn remove_batch(&self, file_name: &str) -> io::Result<()> {
        remove_if_present(&self.dir.join(file_name))?;
        let mut batches = self.batches();
        if batches.get(file_name).is_some_and(|b| b.remaining == 0) {
            batches.remove(file_name);
        }
        Ok(())
    }

    /// Records waiting for delivery: written to disk and not yet delivered. Records still queued for the
    /// writer (a few milliseconds' worth) are not counted.
    pub fn len(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unparseable records (lines of a batch, or `.json` files) set aside in `corrupt/` since the spool was
    /// opened.
    pub fn corrupt_count(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Keeps a record Directus will never accept as `rejected/<request_id>.json`, where an operator can inspect
    /// it (and move it back into the spool to have it sent again), then completes it.
    pub(super) fn reject(&self, pending: &PendingRecord) -> io::Result<()> {
        let folder = self.dir.join(REJECTED_DIR);
        DirBuilder::new().recursive(true).mode(0o700).create(&folder)?;
        let json = serde_json::to_vec(&pending.record).map_err(io::Error::other)?;
        write_synced(&folder.join(format!("{}{SINGLE_SUFFIX}", pending.record.request_id)), &json, None)?;
        sync_dir(&folder)?;
        self.complete(pending)
    }

    /// Records Directus refused for good, kept in `rejected/` until an operator deals with them. Their cost
    /// still counts against the user's balance, so they are read back at startup.
    pub fn rejected(&self) -> io::Result<Vec<UsageRecord>> {
        let folder = self.dir.join(REJECTED_DIR);
        let mut records = Vec::new();
        for (_, name) in list_files(&folder)? {
            if !name.ends_with(SINGLE_SUFFIX) {
                continue;
            }
            match fs::read(folder.join(&name)).map(|bytes| serde_json::from_slice::<UsageRecord>(&bytes)) {
                Ok(Ok(record)) => records.push(record),
                _ => tracing::warn!(file = %name, "cannot read a refused usage record in rejected/; skipped"),
            }
        }
        Ok(records)
    }

    /// Resolves after the next batch is written, or at once if one was since the last wake-up.
    pub(super) fn enqueued(&self) -> Notified<'_> {
        self.wake.notified()
    }

    /// Reads and parses one file, setting aside what does not parse.
    fn read(&self, name: &str, kind: Kind, modified: SystemTime) -> Read {
        let bytes = match fs::read(self.dir.join(name)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Read::Gone,
            Err(error) => {
                tracing::warn!(file = name, %error, "cannot read a spooled usage batch; will try again");
                return Read::Unreadable;
            }
        };
        if kind == Kind::Single {
            return match serde_json::from_slice(&bytes) {
                Ok(record) => Read::Records(vec![record]),
                Err(_) => {
                    self.set_aside_corrupt(name, 1);
                    Read::Gone
                }
            };
        }
        let mut records = Vec::new();
        let mut good_lines = Vec::new();
        let mut bad_lines = 0;
        for line in bytes.split(|&b| b == b'\n').filter(|line| !line.trim_ascii().is_empty()) {
            match serde_json::from_slice(line) {
                Ok(record) => {
                    records.push(record);
                    good_lines.push(line);
                }
                Err(_) => bad_lines += 1,
            }
        }
        match (records.is_empty(), bad_lines) {
            (true, 0) => {
                // Empty: never written by the spool; nothing to deliver.
                let _ = remove_if_present(&self.dir.join(name));
                Read::Gone
            }
            (true, _) => {
                self.set_aside_corrupt(name, bad_lines);
                Read::Gone
            }
            (false, 0) => Read::Records(records),
            (false, _) => {
                self.keep_good_lines(name, &bytes, &good_lines, bad_lines, modified);
                Read::Records(records)
            }
        }
    }

    /// Copies a partly damaged batch to `corrupt/`, then replaces it with its good lines. If either step fails
    /// the batch stays as it is and its good records are still delivered; the next listing tries again.
    fn keep_good_lines(&self, name: &str, original: &[u8], good: &[&[u8]], bad_lines: usize, modified: SystemTime) {
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        match self.rewrite_with(name, &tmp, original, good, modified) {
            Ok(()) => {
                self.corrupt.fetch_add(bad_lines as u64, Ordering::Relaxed);
                tracing::warn!(
                    file = name,
                    bad_lines,
                    kept = good.len(),
                    "unparseable lines in a usage batch: the file is copied to corrupt/ and the batch keeps its good lines"
                );
            }
            Err(error) => {
                let _ = fs::remove_file(&tmp);
                tracing::warn!(file = name, bad_lines, %error,
                    "cannot set aside unparseable lines of a usage batch; its good records are still delivered");
            }
        }
    }

    fn rewrite_with(
        &self,
        name: &str,
        tmp: &Path,
        original: &[u8],
        good: &[&[u8]],
        modified: SystemTime,
    ) -> io::Result<()> {
        let folder = self.dir.join(CORRUPT_DIR);
        DirBuilder::new().recursive(true).mode(0o700).create(&folder)?;
        write_synced(&folder.join(name), original, None)?;
        sync_dir(&folder)?;
        let mut kept = Vec::with_capacity(original.len());
        for line in good {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
        write_synced(tmp, &kept, Some(modified))?;
        fs::rename(tmp, self.dir.join(name))?;
        sync_dir(&self.dir)
    }

    fn set_aside_corrupt(&self, file_name: &str, bad_lines: usize) {
        let folder = self.dir.join(CORRUPT_DIR);
        let moved = DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&folder)
            .and_then(|()| fs::rename(self.dir.join(file_name), folder.join(file_name)));
        match moved {
            Ok(()) => {
                self.corrupt.fetch_add(bad_lines as u64, Ordering::Relaxed);
                tracing::warn!(file = file_name, "unparseable usage records moved to the spool's corrupt/ folder");
            }
            Err(error) => tracing::warn!(file = file_name, %error, "cannot move unparseable usage records aside"),
        }
    }

    fn next_batch_name(&self) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let previous = self
            .last_batch
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
            .unwrap_or_else(|last| last);
        format!("{:020}{BATCH_SUFFIX}", now.max(previous + 1))
    }

    fn new_batch_id(&self) -> u64 {
        self.next_batch_id.fetch_add(1, Ordering::Relaxed)
    }

    fn batches(&self) -> MutexGuard<'_, HashMap<String, Batch>> {
        sync::lock(&self.batches)
    }
}

enum Message {
    Record(UsageRecord),
    /// Answered once every record queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The single writer of a [`Spool`]: a thread that turns whatever is queued into one batch file, then looks
/// again. While it fsyncs one batch the next one gathers, so the batch size follows the load by itself and an
/// idle spool writes a lone record at once. Dropping the writer writes what is still queued (waiting up to 5 s).
pub struct SpoolWriter {
    spool: Arc<Spool>,
    /// `None` if the thread could not be started; records are then written one by one on the blocking pool.
    queue: Option<mpsc::Sender<Message>>,
    thread: Option<JoinHandle<()>>,
    overflowing: AtomicBool,
}

impl SpoolWriter {
    pub fn start(spool: Arc<Spool>) -> SpoolWriter {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writes_to = Arc::clone(&spool);
        let started =
            thread::Builder::new().name("usage-spool".into()).spawn(move || write_batches(&writes_to, receiver));
        let (queue, thread) = match started {
            Ok(thread) => (Some(queue), Some(thread)),
            Err(error) => {
                tracing::error!(%error, "cannot start the usage spool writer; records are written one at a time");
                (None, None)
            }
        };
        SpoolWriter { spool, queue, thread, overflowing: AtomicBool::new(false) }
    }

    /// Queues `record` for the next batch and returns at once: never blocks, never drops the record. When the
    /// queue is full (the disk has fallen [`QUEUE_CAPACITY`] records behind) the record waits in a task for room.
    /// A record that cannot be spooled at all is logged with `tracing::error!`, in full.
    pub fn submit(&self, record: UsageRecord) {
        let Some(queue) = &self.queue else { return self.write_alone(record) };
        match queue.try_send(Message::Record(record)) {
            Ok(()) => {
                if self.overflowing.load(Ordering::Relaxed) {
                    self.overflowing.store(false, Ordering::Relaxed);
                }
            }
            Err(TrySendError::Full(Message::Record(record))) => self.wait_for_room(queue, record),
            Err(TrySendError::Closed(Message::Record(record))) => self.write_alone(record),
            Err(_) => {}
        }
    }

    /// Resolves once every record submitted before the call is written (or logged as lost). Records that found
    /// the queue full may still be on their way.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else { return };
        let (done, written) = oneshot::channel();
        if queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    fn wait_for_room(&self, queue: &mpsc::Sender<Message>, record: UsageRecord) {
        if !self.overflowing.swap(true, Ordering::Relaxed) {
            tracing::warn!(capacity = QUEUE_CAPACITY, "the usage spool queue is full: the disk is not keeping up");
        }
        let mut record = Unspooled(Some(record));
        let queue = queue.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let spool = Arc::clone(&self.spool);
                runtime.spawn(async move {
                    match queue.reserve().await {
                        Ok(permit) => permit.send(Message::Record(record.take())),
                        Err(_) => write_alone(spool, record.take()),
                    }
                });
            }
            // Not on the runtime, so blocking is allowed.
            Err(_) => {
                if let Err(mpsc::error::SendError(Message::Record(record))) =
                    queue.blocking_send(Message::Record(record.take()))
                {
                    self.write_alone(record);
                }
            }
        }
    }

    fn write_alone(&self, record: UsageRecord) {
        write_alone(Arc::clone(&self.spool), record);
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        drop(self.queue.take());
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + DRAIN_ON_DROP;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!("the usage spool writer is still busy; not waiting for it any longer");
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
    }
}

/// The writer thread: until every sender is gone, take what is queued, write it as one batch, answer flushes.
fn write_batches(spool: &Spool, mut queue: mpsc::Receiver<Message>) {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    let mut records = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    while queue.blocking_recv_many(&mut messages, MAX_BATCH) > 0 {
        for message in messages.drain(..) {
            match message {
                Message::Record(record) => records.push(record),
                Message::Flush(done) => flushes.push(done),
            }
        }
        write_with_retries(spool, &records);
        records.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

fn write_with_retries(spool: &Spool, records: &[UsageRecord]) {
    let mut delays = WRITE_RETRY_DELAYS.iter();
    loop {
        let error = match spool.write_batch(records) {
            Ok(()) => return,
            Err(WriteError::Unsynced(error)) => {
                tracing::error!(%error, records = records.len(),
                    "usage records spooled, but syncing the spool directory failed: a power loss could lose them");
                return;
            }
            Err(WriteError::Unwritten(error)) => error,
        };
        match delays.next() {
            Some(delay) => {
                tracing::warn!(%error, records = records.len(), retry_in_ms = delay.as_millis() as u64,
                    "cannot write a usage batch; retrying");
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

/// Spools one record by itself, on the blocking pool if there is a runtime: the path for when the writer
/// thread is not there.
fn write_alone(spool: Arc<Spool>, record: UsageRecord) {
    let record = Unspooled(Some(record));
    let write = move || {
        let mut record = record;
        let record = record.take();
        if let Err(error) = spool.enqueue(&record) {
            log_lost(&record, &error);
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(write)),
        Err(_) => write(),
    }
}

/// The one way a record is lost while the process lives (the disk is full or gone), so it is logged whole: the
/// log line is then its only copy.
fn log_lost(record: &UsageRecord, error: &dyn std::fmt::Display) {
    let json = serde_json::to_string(record).unwrap_or_default();
    tracing::error!(%error, request_id = %record.request_id, record = json, "usage record could not be spooled");
}

/// A record on its way to the queue outside the caller's control; if it is dropped on the way (the runtime
/// shut down first), it is logged as lost instead of vanishing.
struct Unspooled(Option<UsageRecord>);

impl Unspooled {
    fn take(&mut self) -> UsageRecord {
        self.0.take().expect("an unspooled record is taken once")
    }
}

impl Drop for Unspooled {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            log_lost(&record, &"the process is stopping");
        }
    }
}

/// Regular files directly in `dir`, with their modification times. Names that are not UTF-8 are skipped: the
/// spool never creates them.
fn list_files(dir: &Path) -> io::Result<Vec<(SystemTime, String)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(metadata) = entry.metadata() else { continue };
        if let (true, Some(name)) = (metadata.is_file(), entry.file_name().to_str()) {
            files.push((metadata.modified()?, name.to_owned()));
        }
    }
    Ok(files)
}

/// Writes `bytes` to `path` (mode 0600), optionally backdated to `modified`, and syncs it.
fn write_synced(path: &Path, bytes: &[u8], modified: Option<SystemTime>) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    if let Some(modified) = modified {
        file.set_modified(modified)?;
    }
    file.sync_all()
}

/// Makes renames and creations in `dir` survive a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// True if the file was there.
fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
    use crate::domain::money::Cents;
    use crate::domain::provider::Provider;
    use crate::domain::routing::Source;
    use crate::domain::usage::TokenUsage;
    use crate::domain::user::UserId;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(in crate::accounting) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(in crate::accounting) fn new() -> TempDir {
            TempDir(std::env::temp_dir().join(format!("byok-spool-test-{}", Uuid::new_v4())))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(in crate::accounting) fn record() -> UsageRecord {
        UsageRecord {
            request_id: Uuid::new_v4(),
            user: UserId::parse("6f1c2d0e-8a1b-4c3d-9e8f-0a1b2c3d4e5f").unwrap(),
            provider: Provider::OpenAi,
            model: "gpt-4o-2024-08-06".into(),
            source: Source::Internal,
            service_type: "chat_completions".into(),
            usage: TokenUsage::new(1_000, 500),
            cost_cents: Cents::parse("0.75").unwrap(),
            occurred_at: datetime!(2026-11-01 12:00:00.123456789 UTC),
        }
    }

    pub(in crate::accounting) fn records(n: usize) -> Vec<UsageRecord> {
        (0..n).map(|_| record()).collect()
    }

    pub(in crate::accounting) fn ids_of(records: &[UsageRecord]) -> Vec<Uuid> {
        records.iter().map(|r| r.request_id).collect()
    }

    fn ids(pending: &[PendingRecord]) -> Vec<Uuid> {
        pending.iter().map(|p| p.record.request_id).collect()
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// The batch files in the spool, in name order.
    pub(in crate::accounting) fn batch_files(dir: &Path) -> Vec<String> {
        names_in(dir).into_iter().filter(|n| n.ends_with(BATCH_SUFFIX)).collect()
    }

    /// Makes a file look `age_secs` old.
    fn backdate(dir: &Path, name: &str, age_secs: u64) {
        let file = File::options().write(true).open(dir.join(name)).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs)).unwrap();
    }

    fn line(record: &UsageRecord) -> String {
        serde_json::to_string(record).unwrap()
    }

    #[test]
    fn open_creates_private_directories() {
        let tmp = TempDir::new();
        let dir = tmp.0.join("nested").join("spool");
        let spool = Spool::open(&dir).unwrap();
        assert!(spool.is_empty());
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(names_in(&dir), ["corrupt", "rejected"]);
    }

    #[test]
    fn a_batch_is_one_private_file_of_json_lines_and_survives_a_restart() {
        let tmp = TempDir::new();
        let (first, second) = (records(3), record());
        {
            let spool = Spool::open(&tmp.0).unwrap();
            spool.enqueue_batch(&first).unwrap();
            spool.enqueue(&second).unwrap();
            assert_eq!(spool.len(), 4);
        }
        let files = batch_files(&tmp.0);
        assert_eq!(files.len(), 2, "one file per batch: {files:?}");
        let content = fs::read_to_string(tmp.0.join(&files[0])).unwrap();
        assert_eq!(content, first.iter().map(|r| line(r) + "\n").collect::<String>());
        assert_eq!(fs::metadata(tmp.0.join(&files[0])).unwrap().permissions().mode() & 0o777, 0o600);

        let spool = Spool::open(&tmp.0).unwrap();
        assert_eq!(spool.len(), 4);
        let found: Vec<_> = spool.pending().unwrap().into_iter().map(|p| p.record).collect();
        assert_eq!(found, [first, vec![second]].concat());
        assert_eq!(spool.len(), 4);
    }

    #[test]
    fn pending_is_oldest_batch_first_then_by_name_each_in_line_order() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let batches: Vec<_> = (0..4).map(|i| records(i + 1)).collect();
        for batch in &batches {
            spool.enqueue_batch(batch).unwrap();
        }
        let files = batch_files(&tmp.0);
        assert_eq!(files.len(), 4);
        let in_write_order = ids_of(&batches.concat());
        assert_eq!(ids(&spool.pending().unwrap()), in_write_order, "written one after another: write order");

        // Modification time decides first; the same time falls back to the name.
        backdate(&tmp.0, &files[2], 30);
        backdate(&tmp.0, &files[0], 10);
        let same_time = SystemTime::now() - Duration::from_secs(20);
        for file in [&files[3], &files[1]] {
            File::options().write(true).open(tmp.0.join(file)).unwrap().set_modified(same_time).unwrap();
        }
        // A single-record file from an earlier version, older than everything.
        let legacy = record();
        fs::write(tmp.0.join(format!("{}.json", legacy.request_id)), line(&legacy)).unwrap();
        backdate(&tmp.0, &format!("{}.json", legacy.request_id), 60);

        let expected =
            [vec![legacy.clone()], batches[2].clone(), batches[1].clone(), batches[3].clone(), batches[0].clone()];
        assert_eq!(ids(&spool.pending().unwrap()), ids_of(&expected.concat()));
        assert_eq!(spool.len(), 11);
    }

    #[test]
    fn a_new_batch_never_takes_the_name_of_an_old_one() {
        let tmp = TempDir::new();
        let from_the_future = record();
        // As if an earlier run had a clock far ahead.
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(tmp.0.join("18000000000000000000.jsonl"), line(&from_the_future) + "\n").unwrap();
        let spool = Spool::open(&tmp.0).unwrap();
        let (a, b) = (record(), record());
        spool.enqueue(&a).unwrap();
        spool.enqueue(&b).unwrap();
        assert_eq!(
            batch_files(&tmp.0),
            ["18000000000000000000.jsonl", "18000000000000000001.jsonl", "18000000000000000002.jsonl"]
        );
        let mut found = ids(&spool.pending().unwrap());
        found.sort();
        let mut expected = vec![from_the_future.request_id, a.request_id, b.request_id];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_batch_is_deleted_when_its_last_record_is_delivered_and_completing_twice_is_fine() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let batch = records(3);
        spool.enqueue_batch(&batch).unwrap();
        let pending = spool.pending().unwrap();

        spool.complete(&pending[1]).unwrap();
        spool.complete(&pending[1]).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(batch_files(&tmp.0).len(), 1, "kept while records in it wait");
        assert_eq!(ids(&spool.pending().unwrap()), [batch[0].request_id, batch[2].request_id]);
        assert_eq!(spool.len(), 2);

        spool.complete(&pending[0]).unwrap();
        spool.complete(&pending[2]).unwrap();
        assert!(spool.is_empty());
        assert!(batch_files(&tmp.0).is_empty());
        spool.complete(&pending[2]).unwrap();
        assert!(spool.is_empty() && spool.pending().unwrap().is_empty());
        assert!(Spool::open(&tmp.0).unwrap().is_empty());
    }

    #[test]
    fn a_partly_delivered_batch_comes_back_whole_after_a_restart() {
        let tmp = TempDir::new();
        let batch = records(3);
        {
            let spool = Spool::open(&tmp.0).unwrap();
            spool.enqueue_batch(&batch).unwrap();
            let pending = spool.pending().unwrap();
            spool.complete(&pending[0]).unwrap();
            spool.complete(&pending[2]).unwrap();
            assert_eq!(ids(&spool.pending().unwrap()), [batch[1].request_id]);
        }
        let spool = Spool::open(&tmp.0).unwrap();
        assert_eq!(spool.len(), 3);
        assert_eq!(ids(&spool.pending().unwrap()), ids_of(&batch));
    }

    #[test]
    fn a_batch_with_unparseable_lines_keeps_its_good_lines_and_the_original_goes_to_corrupt() {
        let tmp = TempDir::new();
        let (a, b) = (record(), record());
        let name = "00000000000000000042.jsonl";
        fs::create_dir_all(&tmp.0).unwrap();
        let original =
            format!("{}\n\x00not json\n\n{}\n{{\"request_id\": \"not a uuid\"}}\n{}", line(&a), line(&b), "{\"torn");
        fs::write(tmp.0.join(name), &original).unwrap();
        backdate(&tmp.0, name, 100);
        let modified = fs::metadata(tmp.0.join(name)).unwrap().modified().unwrap();

        let spool = Spool::open(&tmp.0).unwrap();
        assert_eq!(spool.len(), 5, "non-blank lines are counted until parsed");
        let pending = spool.pending().unwrap();
        assert_eq!(ids(&pending), [a.request_id, b.request_id]);
        assert_eq!((spool.len(), spool.corrupt_count()), (2, 3));
        assert_eq!(fs::read_to_string(tmp.0.join("corrupt").join(name)).unwrap(), original);
        assert_eq!(fs::read_to_string(tmp.0.join(name)).unwrap(), format!("{}\n{}\n", line(&a), line(&b)));
        assert_eq!(fs::metadata(tmp.0.join(name)).unwrap().modified().unwrap(), modified, "keeps its place");
        assert!(!names_in(&tmp.0).iter().any(|n| n.ends_with(".tmp")));

        // What was handed out before the rewrite still completes the right record.
        spool.complete(&pending[0]).unwrap();
        assert_eq!(ids(&spool.pending().unwrap()), [b.request_id]);
        assert_eq!((spool.len(), spool.corrupt_count()), (1, 3), "set aside once");
        assert_eq!(ids(&Spool::open(&tmp.0).unwrap().pending().unwrap()), [a.request_id, b.request_id]);
    }

    #[test]
    fn unparseable_files_are_moved_aside_and_leftover_tmp_files_removed() {
        let tmp = TempDir::new();
        let (good, legacy) = (record(), record());
        {
            let spool = Spool::open(&tmp.0).unwrap();
            spool.enqueue(&good).unwrap();
        }
        let legacy_name = format!("{}.json", legacy.request_id);
        fs::write(tmp.0.join(&legacy_name), serde_json::to_vec_pretty(&legacy).unwrap()).unwrap();
        backdate(&tmp.0, &legacy_name, 100);
        fs::write(tmp.0.join("half-written.json.tmp"), b"{\"request_id\":").unwrap();
        fs::write(tmp.0.join("00000000000000000001.jsonl.tmp"), b"{\"request_id\":").unwrap();
        fs::write(tmp.0.join("garbage.json"), b"\x00not json").unwrap();
        fs::write(tmp.0.join("wrong-shape.json"), br#"{"request_id": "not a uuid"}"#).unwrap();
        fs::write(tmp.0.join("00000000000000000002.jsonl"), b"garbage\n{}\n").unwrap();
        fs::write(tmp.0.join("00000000000000000003.jsonl"), b"\n").unwrap();
        fs::write(tmp.0.join("notes.txt"), b"ignored").unwrap();

        let spool = Spool::open(&tmp.0).unwrap();
        assert!(!tmp.0.join("half-written.json.tmp").exists());
        assert!(!tmp.0.join("00000000000000000001.jsonl.tmp").exists());
        assert_eq!(spool.len(), 6, "counted until parsed");
        assert_eq!(ids(&spool.pending().unwrap()), [legacy.request_id, good.request_id]);
        assert_eq!((spool.len(), spool.corrupt_count()), (2, 4));
        assert_eq!(
            names_in(&tmp.0.join("corrupt")),
            ["00000000000000000002.jsonl", "garbage.json", "wrong-shape.json"]
        );
        assert!(!tmp.0.join("00000000000000000003.jsonl").exists(), "an empty batch is removed");
        assert_eq!(fs::read(tmp.0.join("notes.txt")).unwrap(), b"ignored");
        assert_eq!(ids(&spool.pending().unwrap()), [legacy.request_id, good.request_id]);
        assert_eq!(spool.corrupt_count(), 4);
    }

    #[test]
    fn a_batch_removed_by_hand_stops_being_counted() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let (first, second) = (records(2), records(3));
        spool.enqueue_batch(&first).unwrap();
        spool.enqueue_batch(&second).unwrap();
        assert_eq!(spool.len(), 5);
        fs::remove_file(tmp.0.join(&batch_files(&tmp.0)[0])).unwrap();
        assert_eq!(ids(&spool.pending().unwrap()), ids_of(&second));
        assert_eq!(spool.len(), 3);
    }

    #[test]
    fn rejected_records_are_kept_for_inspection_even_if_the_folder_was_removed() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let batch = records(2);
        spool.enqueue_batch(&batch).unwrap();
        let pending = spool.pending().unwrap();
        fs::remove_dir(tmp.0.join("rejected")).unwrap();
        spool.reject(&pending[0]).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(ids(&spool.pending().unwrap()), [batch[1].request_id]);
        let kept = fs::read(tmp.0.join("rejected").join(format!("{}.json", batch[0].request_id))).unwrap();
        assert_eq!(serde_json::from_slice::<UsageRecord>(&kept).unwrap(), batch[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn records_submitted_from_many_tasks_at_once_all_reach_the_spool_in_few_batches() {
        let tmp = TempDir::new();
        let spool = Arc::new(Spool::open(&tmp.0).unwrap());
        let writer = Arc::new(SpoolWriter::start(Arc::clone(&spool)));
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
        assert_eq!(spool.len(), tasks * each);
        let found: Vec<_> = ids(&spool.pending().unwrap());
        assert_eq!(found.len(), tasks * each, "each record once");
        assert_eq!(found.into_iter().collect::<HashSet<_>>(), submitted);
        let files = batch_files(&tmp.0);
        assert!(files.len() < tasks * each / 2, "{} batch files for {} records", files.len(), tasks * each);
        for file in &files {
            let lines = fs::read_to_string(tmp.0.join(file)).unwrap().lines().count();
            assert!((1..=MAX_BATCH).contains(&lines), "{file}: {lines} lines");
        }
        assert_eq!(Spool::open(&tmp.0).unwrap().len(), tasks * each);
    }

    #[tokio::test]
    async fn a_lone_record_is_written_at_once_and_wakes_the_flusher() {
        let tmp = TempDir::new();
        let spool = Arc::new(Spool::open(&tmp.0).unwrap());
        let writer = SpoolWriter::start(Arc::clone(&spool));
        let woken = spool.enqueued();
        writer.submit(record());
        // No flush, no timer: the writer does not wait for company.
        tokio::time::timeout(Duration::from_secs(5), woken).await.expect("the batch was written");
        assert_eq!(spool.len(), 1);
        assert_eq!(batch_files(&tmp.0).len(), 1);
    }

    #[test]
    fn dropping_the_writer_writes_everything_still_queued() {
        let tmp = TempDir::new();
        let spool = Arc::new(Spool::open(&tmp.0).unwrap());
        let writer = SpoolWriter::start(Arc::clone(&spool));
        let submitted = records(5_000);
        // Outside any runtime, as at the very end of the process.
        for record in &submitted {
            writer.submit(record.clone());
        }
        drop(writer);
        assert_eq!(spool.len(), 5_000);
        let found: HashSet<_> = ids(&spool.pending().unwrap()).into_iter().collect();
        assert_eq!(found, ids_of(&submitted).into_iter().collect());
    }

    #[tokio::test]
    async fn a_full_queue_makes_records_wait_not_vanish() {
        let tmp = TempDir::new();
        let spool = Arc::new(Spool::open(&tmp.0).unwrap());
        // A writer with no thread behind its queue yet: every record beyond the capacity finds it full.
        let (queue, receiver) = mpsc::channel(2);
        let writer =
            SpoolWriter { spool: Arc::clone(&spool), queue: Some(queue), thread: None, overflowing: false.into() };
        let submitted = records(10);
        for record in &submitted {
            writer.submit(record.clone());
        }
        assert!(writer.overflowing.load(Ordering::Relaxed));
        let writes_to = Arc::clone(&spool);
        let thread = thread::spawn(move || write_batches(&writes_to, receiver));
        writer.flush().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while spool.len() < submitted.len() {
            assert!(Instant::now() < deadline, "only {} of 10 spooled", spool.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let found: HashSet<_> = ids(&spool.pending().unwrap()).into_iter().collect();
        assert_eq!(found, ids_of(&submitted).into_iter().collect());
        drop(writer);
        thread.join().unwrap();
    }
}
