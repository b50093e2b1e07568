//! Group commit for small writes that must be durable before their caller goes on (a job accepted, a job's
//! result): one writer thread runs every write queued meanwhile in one transaction, so a thousand writers
//! wait for one fsync, not a thousand.

use std::sync::Arc;
use std::thread;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};

/// The most writes one transaction runs.
const MAX_BATCH: usize = 1_000;
const RETRY_BEGIN: std::time::Duration = std::time::Duration::from_millis(100);

/// What runs inside the transaction; returns what to do once the transaction is committed (or not).
type Write = Box<dyn FnOnce(&Transaction<'_>) -> Box<dyn FnOnce(Result<(), StoreError>) + Send> + Send>;

pub struct BatchWriter {
    queue: mpsc::UnboundedSender<Write>,
    store: Arc<Store>,
}

impl BatchWriter {
    /// Starts the writer thread (`name`) with its own connection.
    pub fn start(store: Arc<Store>, name: &str) -> Result<BatchWriter, StoreError> {
        let mut connection = store.connect()?;
        let (queue, writes) = mpsc::unbounded_channel();
        let thread_store = Arc::clone(&store);
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&thread_store, &mut connection, writes))
            .map_err(StoreError::Thread)?;
        Ok(BatchWriter { queue, store })
    }

    /// Runs `write` in the next transaction and resolves with its result once that transaction is committed.
    /// A statement that fails fails its own write only; a commit that fails fails every write in it.
    pub async fn write<R, F>(&self, write: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<R> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let store = Arc::clone(&self.store);
        let job: Write = Box::new(move |transaction| {
            let outcome = write(transaction);
            Box::new(move |committed: Result<(), StoreError>| {
                let _ = done.send(committed.and_then(|()| outcome.map_err(|e| store.error(e))));
            })
        });
        self.queue.send(job).map_err(|_| StoreError::Stopped)?;
        result.await.map_err(|_| StoreError::Stopped)?
    }
}

fn run(store: &Store, connection: &mut Connection, mut writes: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while writes.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
        let transaction = loop {
            // IMMEDIATE: the write lock is taken here, so a write that reads first (an idempotency key looked
            // up before the insert) reads the latest state and can never fail to upgrade because another
            // connection committed since its read began (SQLITE_BUSY_SNAPSHOT).
            match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(transaction) => break transaction,
                // Only a disk or lock problem gets here; the writes wait for it to pass rather than fail.
                Err(error) => {
                    tracing::error!(store = %store.path().display(), %error, "cannot start a transaction; retrying");
                    thread::sleep(RETRY_BEGIN);
                }
            }
        };
        let finishers: Vec<_> = batch.drain(..).map(|write| write(&transaction)).collect();
        let committed = transaction.commit().map_err(|e| e.to_string());
        for finish in finishers {
            let path = store.path().to_owned();
            finish(committed.clone().map_err(|message| StoreError::Commit { path, message }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::tests::TempDir;

    #[tokio::test]
    async fn a_write_that_reads_first_is_not_undone_by_another_connections_commit() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(&dir.store_path()).unwrap());
        store.connect().unwrap().execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)").unwrap();
        let writer = BatchWriter::start(Arc::clone(&store), "test-writer").unwrap();
        let other = store.connect().unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        let other = std::sync::Mutex::new(other);
        let (ours, theirs) = writer
            .write(move |t| {
                // Looked up first, as an idempotency key is; then another connection tries to commit meanwhile.
                let found: i64 = t.query_row("SELECT count(*) FROM t WHERE k = 'ours'", [], |row| row.get(0))?;
                let theirs = crate::sync::lock(&other).execute("INSERT INTO t (k) VALUES ('theirs')", []);
                let ours = t.execute("INSERT INTO t (k) VALUES ('ours')", []);
                Ok((ours.map(|n| n + found as usize), theirs.is_ok()))
            })
            .await
            .unwrap();
        assert_eq!(ours.unwrap(), 1, "our write went through");
        assert!(!theirs, "the other connection waited for the write lock ours held from the start");
    }
}
