//! Calls kept on this replica, in a SQLite file of their own beside the store (`calls.db` in `DATA_DIR`), trimmed
//! per user as they are written. Apart from the store so their writes never wait on the usage outbox's (one
//! writer at a time per SQLite file), and without an fsync per batch: it is a view for people, not accounting.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{CallHistory, CallLogError};
use crate::domain::call::{CallEntry, CallRetention};
use crate::domain::user::UserId;
use crate::store::{Pacer, ROWS_PER_PAUSE, StoreError, WAL_AUTOCHECKPOINT_PAGES};
use crate::sync;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    CREATE TABLE IF NOT EXISTS calls (
        user_id TEXT NOT NULL,
        id TEXT NOT NULL,
        at INTEGER NOT NULL,
        entry TEXT NOT NULL,
        PRIMARY KEY (user_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS calls_at ON calls (at);";

pub struct EmbeddedHistory {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    retention: CallRetention,
}

impl EmbeddedHistory {
    /// Opens (or makes) the calls file at `path`; the store's lock on `DATA_DIR` keeps it to one process.
    pub fn open(path: &Path, retention: CallRetention) -> Result<EmbeddedHistory, StoreError> {
        let error = |source| StoreError::Sqlite { path: path.to_owned(), source };
        let connection = Connection::open(path).map_err(error)?;
        connection.execute_batch(SCHEMA).map_err(error)?;
        connection.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).map_err(error)?;
        connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(error)?;
        Ok(EmbeddedHistory { path: path.to_owned(), connection: Arc::new(Mutex::new(connection)), retention })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, CallLogError> {
        let (path, connection) = (self.path.clone(), Arc::clone(&self.connection));
        let done = tokio::task::spawn_blocking(move || {
            op(&mut sync::lock(&connection)).map_err(|source| StoreError::Sqlite { path, source })
        });
        Ok(done.await.map_err(|e| StoreError::Thread(std::io::Error::other(e)))??)
    }
}

#[async_trait::async_trait]
impl CallHistory for EmbeddedHistory {
    async fn keep(&self, calls: Vec<(UserId, CallEntry)>) -> Result<(), CallLogError> {
        let kept = self.retention.kept_per_user as i64;
        self.blocking(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut insert = transaction
                    .prepare_cached("INSERT OR IGNORE INTO calls (user_id, id, at, entry) VALUES (?1, ?2, ?3, ?4)")?;
                // The newest entry past the user's newest `kept`: it and everything older go, a few at a time.
                let mut cutoff = transaction
                    .prepare_cached("SELECT id FROM calls WHERE user_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2")?;
                // The entry `ROWS_PER_PAUSE` up from the user's oldest (at most `?2`): what one short delete reaches.
                let mut step = transaction.prepare_cached(
                    "SELECT id FROM calls WHERE user_id = ?1 AND id <= ?2 ORDER BY id LIMIT 1 OFFSET ?3",
                )?;
                let mut trim = transaction.prepare_cached("DELETE FROM calls WHERE user_id = ?1 AND id <= ?2")?;
                let mut pacer = Pacer::default();
                let mut users = HashSet::new();
                for (user, entry) in &calls {
                    pacer.done(1);
                    let json = serde_json::to_string(entry).expect("a call entry serializes");
                    insert.execute(params![user.to_string(), entry.id.to_string(), entry.at.unix_timestamp(), json])?;
                    users.insert(*user);
                }
                for user in users.iter().map(UserId::to_string) {
                    let Some(last) = cutoff.query_row(params![user, kept], |row| row.get::<_, String>(0)).optional()?
                    else {
                        continue;
                    };
                    loop {
                        let upto = step
                            .query_row(params![user, last, ROWS_PER_PAUSE as i64 - 1], |row| row.get::<_, String>(0))
                            .optional()?
                            .unwrap_or_else(|| last.clone());
                        pacer.done(trim.execute(params![user, upto])?);
                        if upto == last {
                            break;
                        }
                    }
                }
            }
            transaction.commit()
        })
        .await
    }

    async fn page(
        &self,
        user: UserId,
        after: Option<Uuid>,
        limit: usize,
        since: OffsetDateTime,
    ) -> Result<Vec<CallEntry>, CallLogError> {
        // Past every v7 id: the first page.
        let after = after.map_or_else(|| "~".to_owned(), |id| id.to_string());
        let rows: Vec<String> = self
            .blocking(move |connection| {
                let mut select = connection.prepare_cached(
                    "SELECT entry FROM calls WHERE user_id = ?1 AND id < ?2 AND at >= ?3 ORDER BY id DESC LIMIT ?4",
                )?;
                let rows = select
                    .query_map(params![user.to_string(), after, since.unix_timestamp(), limit as i64], |row| {
                        row.get(0)
                    })?;
                rows.collect()
            })
            .await?;
        Ok(rows.iter().filter_map(|json| serde_json::from_str(json).ok()).collect())
    }

    async fn forget_before(&self, since: OffsetDateTime) -> Result<(), CallLogError> {
        let forgotten = self
            .blocking(move |connection| connection.execute("DELETE FROM calls WHERE at < ?1", [since.unix_timestamp()]))
            .await?;
        tracing::debug!(forgotten, "calls past their retention forgotten");
        Ok(())
    }
}
