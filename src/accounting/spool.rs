//! The on-disk queue of usage records waiting for Directus: one JSON file per record, named by its
//! `request_id`, written so that a record is either wholly on disk or absent after a crash.
//!
//! One process per directory: the spool assumes nobody else writes `*.tmp` files there.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::domain::usage::UsageRecord;

const RECORD_SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".json.tmp";
const CORRUPT_DIR: &str = "corrupt";
const REJECTED_DIR: &str = "rejected";

/// A spooled record and the file it lives in.
#[derive(Debug, Clone)]
pub struct PendingRecord {
    pub record: UsageRecord,
    file_name: String,
}

/// The spool directory. Its file operations block: call them from `tokio::task::spawn_blocking`.
pub struct Spool {
    dir: PathBuf,
    /// Records on disk, kept in step by every operation and recounted on every [`Spool::pending`] listing, so
    /// files removed by hand cannot leave it wrong for longer than one flush pass.
    pending: AtomicUsize,
    corrupt: AtomicU64,
    wake: Notify,
}

impl Spool {
    /// Opens (creating with mode 0700 if missing) the spool in `dir`. Removes `*.tmp` files, which only a crash
    /// mid-write leaves behind: their records were never acknowledged to the caller as spooled.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Spool> {
        let dir = dir.into();
        if !dir.exists() {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            sync_dir(dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
        }
        for sub in [CORRUPT_DIR, REJECTED_DIR] {
            DirBuilder::new().recursive(true).mode(0o700).create(dir.join(sub))?;
        }
        let spool = Spool { dir, pending: AtomicUsize::new(0), corrupt: AtomicU64::new(0), wake: Notify::new() };
        let mut records = 0;
        for (_, name) in spool.files()? {
            if name.ends_with(TMP_SUFFIX) {
                remove_if_present(&spool.dir.join(&name))?;
            } else if name.ends_with(RECORD_SUFFIX) {
                records += 1;
            }
        }
        spool.pending.store(records, Ordering::Relaxed);
        Ok(spool)
    }

    /// Stores `record` durably (data and directory entry synced) before returning, then wakes the flusher.
    /// Blocking, about two fsyncs. An `Err` means the record is not spooled. Enqueueing the same `request_id`
    /// again replaces the file, so it is still delivered once.
    pub fn enqueue(&self, record: &UsageRecord) -> io::Result<()> {
        let name = format!("{}{RECORD_SUFFIX}", record.request_id);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{}{TMP_SUFFIX}", record.request_id));
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        if let Err(error) = write_synced(&tmp, &json) {
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        // Counted before the file appears, so a flusher completing it at once can never count below zero.
        let new = !path.exists();
        if new {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(error) = fs::rename(&tmp, &path) {
            if new {
                self.forget_one();
            }
            let _ = fs::remove_file(&tmp);
            return Err(error);
        }
        let synced = sync_dir(&self.dir);
        self.wake.notify_one();
        synced
    }

    /// Every spooled record, oldest first (file modification time, then name). A file that does not parse is
    /// moved to `corrupt/` and logged by name; one that cannot be read is logged and left for the next call.
    pub fn pending(&self) -> io::Result<Vec<PendingRecord>> {
        let mut files: Vec<_> = self.files()?.into_iter().filter(|(_, name)| name.ends_with(RECORD_SUFFIX)).collect();
        files.sort();
        let mut records = Vec::with_capacity(files.len());
        let mut unreadable = 0;
        for (_, file_name) in files {
            match fs::read(self.dir.join(&file_name)) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(record) => records.push(PendingRecord { record, file_name }),
                    Err(_) => self.set_aside_corrupt(&file_name),
                },
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    unreadable += 1;
                    tracing::warn!(file = file_name, %error, "cannot read a spooled usage record; will try again");
                }
            }
        }
        self.pending.store(records.len() + unreadable, Ordering::Relaxed);
        Ok(records)
    }

    /// Forgets a delivered record. Not synced: if the removal is lost in a crash, the record is delivered again,
    /// which Directus's unique `request_id` makes harmless. Completing twice is fine.
    pub fn complete(&self, pending: &PendingRecord) -> io::Result<()> {
        if remove_if_present(&self.dir.join(&pending.file_name))? {
            self.forget_one();
        }
        Ok(())
    }

    /// Records waiting for delivery.
    pub fn len(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Unparseable files moved to `corrupt/` since the spool was opened.
    pub fn corrupt_count(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Moves a record Directus will never accept to `rejected/`, where an operator can inspect it.
    pub(super) fn reject(&self, pending: &PendingRecord) -> io::Result<()> {
        self.move_aside(&pending.file_name, REJECTED_DIR)?;
        self.forget_one();
        Ok(())
    }

    /// Resolves after the next [`Spool::enqueue`], or at once if one happened since the last wake-up.
    pub(super) fn enqueued(&self) -> Notified<'_> {
        self.wake.notified()
    }

    fn set_aside_corrupt(&self, file_name: &str) {
        match self.move_aside(file_name, CORRUPT_DIR) {
            Ok(()) => {
                self.corrupt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = file_name, "unparseable usage record moved to the spool's corrupt/ folder");
            }
            Err(error) => tracing::warn!(file = file_name, %error, "cannot move an unparseable usage record aside"),
        }
    }

    /// Moves a record file into a subfolder, recreating the folder should someone have removed it.
    fn move_aside(&self, file_name: &str, folder: &str) -> io::Result<()> {
        let folder = self.dir.join(folder);
        DirBuilder::new().recursive(true).mode(0o700).create(&folder)?;
        fs::rename(self.dir.join(file_name), folder.join(file_name))
    }

    fn forget_one(&self) {
        let _ = self.pending.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Regular files directly in the spool directory, with their modification times. Names that are not UTF-8
    /// are skipped: the spool never creates them.
    fn files(&self) -> io::Result<Vec<(SystemTime, String)>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Ok(metadata) = entry.metadata() else { continue };
            if let (true, Some(name)) = (metadata.is_file(), entry.file_name().to_str()) {
                files.push((metadata.modified()?, name.to_owned()));
            }
        }
        Ok(files)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
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
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use time::macros::datetime;
    use uuid::Uuid;

    use super::*;
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
            usage: TokenUsage { prompt_tokens: 1_000, completion_tokens: 500 },
            cost_cents: 0.75,
            occurred_at: datetime!(2026-11-01 12:00:00.123456789 UTC),
        }
    }

    /// Makes `record`'s file look `age_secs` old, so tests can fix the order without sleeping.
    pub(in crate::accounting) fn age(dir: &Path, record: &UsageRecord, age_secs: u64) {
        let file = File::options().write(true).open(dir.join(format!("{}.json", record.request_id))).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs)).unwrap();
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
    fn enqueued_records_survive_a_restart() {
        let tmp = TempDir::new();
        let (a, b) = (record(), record());
        {
            let spool = Spool::open(&tmp.0).unwrap();
            spool.enqueue(&a).unwrap();
            spool.enqueue(&b).unwrap();
            assert_eq!(spool.len(), 2);
        }
        let spool = Spool::open(&tmp.0).unwrap();
        assert_eq!(spool.len(), 2);
        let mut found: Vec<_> = spool.pending().unwrap().into_iter().map(|p| p.record).collect();
        found.sort_by_key(|r| r.request_id);
        let mut expected = vec![a, b];
        expected.sort_by_key(|r| r.request_id);
        assert_eq!(found, expected);
        let mode = fs::metadata(tmp.0.join(format!("{}.json", found[0].request_id))).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn pending_is_oldest_first_then_by_name() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let records: Vec<_> = (0..4).map(|_| record()).collect();
        for r in &records {
            spool.enqueue(r).unwrap();
        }
        age(&tmp.0, &records[0], 10);
        age(&tmp.0, &records[1], 30);
        age(&tmp.0, &records[2], 20);
        let same_time = SystemTime::now() - Duration::from_secs(5);
        let mut newest = [records[3].request_id, Uuid::new_v4()];
        let extra = UsageRecord { request_id: newest[1], ..record() };
        spool.enqueue(&extra).unwrap();
        for id in newest {
            let file = File::options().write(true).open(tmp.0.join(format!("{id}.json"))).unwrap();
            file.set_modified(same_time).unwrap();
        }
        newest.sort_by_key(|id| id.to_string());

        let order = ids(&spool.pending().unwrap());
        let expected = [records[1].request_id, records[2].request_id, records[0].request_id, newest[0], newest[1]];
        assert_eq!(order, expected);
    }

    #[test]
    fn complete_removes_the_record_and_is_idempotent() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let (a, b) = (record(), record());
        spool.enqueue(&a).unwrap();
        spool.enqueue(&b).unwrap();
        let pending = spool.pending().unwrap();
        let done = pending.iter().find(|p| p.record.request_id == a.request_id).unwrap();
        spool.complete(done).unwrap();
        spool.complete(done).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(ids(&spool.pending().unwrap()), [b.request_id]);
        assert_eq!(Spool::open(&tmp.0).unwrap().len(), 1);
    }

    #[test]
    fn enqueueing_the_same_request_twice_keeps_one_record() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let a = record();
        spool.enqueue(&a).unwrap();
        spool.enqueue(&a).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(ids(&spool.pending().unwrap()), [a.request_id]);
    }

    #[test]
    fn corrupt_files_are_moved_aside_and_leftover_tmp_files_removed() {
        let tmp = TempDir::new();
        let good = record();
        {
            let spool = Spool::open(&tmp.0).unwrap();
            spool.enqueue(&good).unwrap();
        }
        fs::write(tmp.0.join("half-written.json.tmp"), b"{\"request_id\":").unwrap();
        fs::write(tmp.0.join("garbage.json"), b"\x00not json").unwrap();
        fs::write(tmp.0.join("wrong-shape.json"), br#"{"request_id": "not a uuid"}"#).unwrap();
        fs::write(tmp.0.join("notes.txt"), b"ignored").unwrap();

        let spool = Spool::open(&tmp.0).unwrap();
        assert!(!tmp.0.join("half-written.json.tmp").exists());
        assert_eq!(spool.len(), 3, "counted until parsed");
        assert_eq!(ids(&spool.pending().unwrap()), [good.request_id]);
        assert_eq!((spool.len(), spool.corrupt_count()), (1, 2));
        assert_eq!(names_in(&tmp.0.join("corrupt")), ["garbage.json", "wrong-shape.json"]);
        assert_eq!(fs::read(tmp.0.join("notes.txt")).unwrap(), b"ignored");
        assert_eq!(ids(&spool.pending().unwrap()), [good.request_id]);
    }

    #[test]
    fn rejected_records_are_kept_for_inspection_even_if_the_folder_was_removed() {
        let tmp = TempDir::new();
        let spool = Spool::open(&tmp.0).unwrap();
        let a = record();
        spool.enqueue(&a).unwrap();
        let pending = spool.pending().unwrap();
        fs::remove_dir(tmp.0.join("rejected")).unwrap();
        spool.reject(&pending[0]).unwrap();
        assert!(spool.is_empty());
        assert!(spool.pending().unwrap().is_empty());
        let kept = fs::read(tmp.0.join("rejected").join(format!("{}.json", a.request_id))).unwrap();
        assert_eq!(serde_json::from_slice::<UsageRecord>(&kept).unwrap(), a);
    }
}
