//! The sidecar's one local file: an embedded SQLite database in WAL mode, holding what must survive a restart.
//! That is the usage outbox (records on their way to Directus, see [`crate::accounting`]), the durable job
//! queue (see [`crate::services::jobs`]) and sign-in attempts in a row (see [`crate::services::sign_in`]).
//! Users' recent calls live beside it in a file of their own (see [`crate::services::call_log`]).
//!
//! One process at a time: the file is locked (an advisory lock on `<file>.lock`, held while the store is
//! open), so a second process pointed at the same file refuses to start instead of writing beside the first.
//! Operators can read it with any SQLite client (`sqlite3 data/byok-bridge.db`) while the sidecar runs.

mod batch;

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub use self::batch::BatchWriter;

/// Schema migrations, in order; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the usage outbox. `rejected_at` marks a record Directus refused for good: kept for the operator,
    // still counted against its user's credits.
    "CREATE TABLE usage_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        record TEXT NOT NULL,
        enqueued_at INTEGER NOT NULL,
        rejected_at INTEGER,
        rejection TEXT
    );
    CREATE INDEX usage_outbox_waiting ON usage_outbox (seq) WHERE rejected_at IS NULL;",
    // 2: facts about this store, e.g. the replica id it gives the process that opens it.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 3: waiting records are read in `seq` (rowid) order, skipping the few rejected ones; the partial index
    // cost every insert a third B-tree write for nothing.
    "DROP INDEX usage_outbox_waiting;",
    // 4: durable jobs (see `services::jobs`). `record` is the job as its user sees it (JSON, the same shape the
    // Redis backend keeps); the columns beside it are what the queue looks jobs up by.
    "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        status TEXT NOT NULL,
        idempotency_key TEXT,
        record TEXT NOT NULL,
        request BLOB NOT NULL,
        callback_secret TEXT,
        due INTEGER,
        finished_at INTEGER,
        callback_due INTEGER
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_by_user ON jobs (user_id, id);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX jobs_callbacks ON jobs (callback_due) WHERE callback_due IS NOT NULL;",
    // 5: every stored change of a job bumps its revision; writes compare it, so none lands on a newer state.
    "ALTER TABLE jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;",
    // 6: a user's jobs in one status are listed a bounded page at a time.
    "CREATE INDEX jobs_by_user_status ON jobs (user_id, status, id);",
    // 7: sign-in attempts in a row per account (see `services::sign_in`): a restart must not forget them, since
    // Directus does not.
    "CREATE TABLE sign_in_failures (account TEXT PRIMARY KEY, count INTEGER NOT NULL, last_at INTEGER NOT NULL)
     WITHOUT ROWID;",
];

/// WAL pages past which a commit also copies them into the database file (SQLite's default is 1,000). The
/// copy runs in the committing thread and holds a core for its length (the kernel does not preempt it for a
/// call's thread waking there): 1,000 pages were ~2 ms, twice a second at 5,000 calls/s, enough to be the slowest
/// calls' wait; 128 are ~0.3 ms, eight times as often.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 128;

/// Rows a background write handles between two pauses (see [`Pacer`]): ~0.1-0.2 ms of SQLite.
pub const ROWS_PER_PAUSE: usize = 32;

/// Paces background work on the store (usage records written, read and deleted; recent calls): every
/// [`ROWS_PER_PAUSE`] rows its thread sleeps for a moment (~60 µs with Linux's default timer slack). A write of
/// hundreds of rows holds its core for 1-3 ms, and the kernel does not preempt it for a call's thread woken on
/// that core, so the slowest 1% of calls waited that long. A sleep hands the core over at once; `sched_yield`
/// barely helped (it yields only within the thread's scheduling group, not to the proxy or client beside us).
#[derive(Debug, Default)]
pub struct Pacer {
    rows: usize,
}

impl Pacer {
    /// Counts `rows` more rows done, pausing if that crossed a multiple of [`ROWS_PER_PAUSE`].
    pub fn done(&mut self, rows: usize) {
        let before = self.rows / ROWS_PER_PAUSE;
        self.rows += rows;
        if self.rows / ROWS_PER_PAUSE > before {
            std::thread::sleep(Duration::from_micros(1));
        }
    }
}

/// A second connection waits this long for a lock the other holds (the writer and the flusher share the file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    Directory { path: PathBuf, source: std::io::Error },
    #[error("the store {path} is in use by another byok-bridge process; give each process its own DATA_DIR")]
    InUse { path: PathBuf },
    #[error("cannot lock the store {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("cannot start the store's writer thread: {0}")]
    Thread(std::io::Error),
    #[error("store {path}: commit failed: {message}")]
    Commit { path: PathBuf, message: String },
    #[error("the store's writer has stopped")]
    Stopped,
}

/// The open, locked store. Hands out connections: SQLite connections are used by one thread at a time, so
/// each user (the outbox's writer thread, the flusher) owns its own.
pub struct Store {
    path: PathBuf,
    /// Held for the life of the store: the lock is released when the process ends, however it ends.
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store at `path`, locks it, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Directory { path: dir.to_owned(), source })?;
        }
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| StoreError::Lock { path: lock_path.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse { path: path.to_owned() }),
            Err(std::fs::TryLockError::Error(source)) => return Err(StoreError::Lock { path: lock_path, source }),
        }
        let store = Store { path: path.to_owned(), _lock: lock };
        let mut connection = store.connect()?;
        store.migrate(&mut connection)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This store's replica id: made once, kept for good, so a replica is the same one after a restart (it
    /// names the replica's share of state in Redis).
    pub fn replica_id(&self) -> Result<String, StoreError> {
        let connection = self.connect()?;
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        connection
            .execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('replica_id', ?1)", [&fresh])
            .and_then(|_| connection.query_row("SELECT value FROM meta WHERE key = 'replica_id'", [], |row| row.get(0)))
            .map_err(|e| self.error(e))
    }

    /// A new connection: WAL (readers never wait for the writer), full fsync on commit (a committed record
    /// survives a power loss), short checkpoints, and a bounded wait for the other connection's lock.
    pub fn connect(&self) -> Result<Connection, StoreError> {
        let connection = Connection::open(&self.path).map_err(|e| self.error(e))?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .and_then(|()| connection.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES))
            .and_then(|()| connection.busy_timeout(BUSY_TIMEOUT))
            .map_err(|e| self.error(e))?;
        Ok(connection)
    }

    pub fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn migrate(&self, connection: &mut Connection) -> Result<(), StoreError> {
        let done: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| self.error(e))?;
        for (version, migration) in (1..).zip(MIGRATIONS).skip(usize::try_from(done).unwrap_or(0)) {
            let transaction = connection.transaction().map_err(|e| self.error(e))?;
            transaction
                .execute_batch(migration)
                .and_then(|()| transaction.pragma_update(None, "user_version", version))
                .and_then(|()| transaction.commit())
                .map_err(|e| self.error(e))?;
            tracing::info!(store = %self.path.display(), version, "store schema migrated");
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> TempDir {
            TempDir(std::env::temp_dir().join(format!("byok-store-test-{}", uuid::Uuid::new_v4())))
        }

        pub(crate) fn store_path(&self) -> PathBuf {
            self.0.join("byok-bridge.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn opens_creates_a_private_directory_and_migrates_once() {
        let dir = TempDir::new();
        let store = Store::open(&dir.store_path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir.0).unwrap().permissions().mode() & 0o777, 0o700);
        let version: i64 = store.connect().unwrap().query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        drop(store);
        let again = Store::open(&dir.store_path()).unwrap();
        let mode: String = again.connect().unwrap().query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn the_wal_is_copied_into_the_database_in_short_steps() {
        let dir = TempDir::new();
        let store = Store::open(&dir.store_path()).unwrap();
        let connection = store.connect().unwrap();
        connection.execute_batch("CREATE TABLE filler (body BLOB)").unwrap();
        // 60 commits of five 4 KB rows: about 420 WAL frames, all of which SQLite's default would keep.
        for _ in 0..60 {
            connection
                .execute_batch("INSERT INTO filler SELECT zeroblob(4000) FROM (VALUES (1),(2),(3),(4),(5))")
                .unwrap();
        }
        let frames: i64 = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1)).unwrap();
        assert!(frames < 200, "{frames} frames in the WAL: the copies are not short");
    }

    #[test]
    fn the_replica_id_is_made_once_and_kept() {
        let dir = TempDir::new();
        let id = Store::open(&dir.store_path()).unwrap().replica_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(Store::open(&dir.store_path()).unwrap().replica_id().unwrap(), id);
    }

    #[test]
    fn a_second_store_on_the_same_file_is_refused_until_the_first_is_closed() {
        let dir = TempDir::new();
        let first = Store::open(&dir.store_path()).unwrap();
        let second = Store::open(&dir.store_path());
        assert!(matches!(second, Err(StoreError::InUse { .. })), "{:?}", second.err());
        let message = Store::open(&dir.store_path()).err().unwrap().to_string();
        assert!(message.contains("another byok-bridge process") && message.contains("DATA_DIR"), "{message}");
        drop(first);
        assert!(Store::open(&dir.store_path()).is_ok());
    }
}
