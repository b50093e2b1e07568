//! Credit reservations: where every internal-credit call reserves its most expensive outcome before it
//! starts, and where finished calls' costs count until the ledger shows them (see
//! [`crate::domain::credit_book`] for the rules).
//!
//! One interface, [`CreditBooks`], with a backend per `REDIS_URL` setting: [`memory`] serves one replica with
//! no moving part; [`redis`] keeps the books in Redis for several replicas, and this replica's own while Redis
//! is unreachable. Callers hold [`Reservations`] and never know which.

pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use time::OffsetDateTime;
use uuid::Uuid;

use self::memory::MemoryReservations;
use self::redis::RedisReservations;
use crate::accounting::{DeliveryError, Outbox, UsageSink};
use crate::domain::credit_book::{HoldId, LedgerReading, UnixMillis};
use crate::domain::money::Cents;
use crate::domain::routing::Source;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::shared::redis::Redis;
use crate::store::StoreError;

/// How long a hold lives without news from its call. Streams extend theirs while they run, so this only
/// frees what a lost call left behind.
pub const HOLD_TTL: Duration = Duration::from_secs(300);

/// Not enough credits for the reservation: what the user can spend right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub available: Cents,
}

/// Where a hold was taken: Redis, or this replica's memory (the memory backend, or Redis down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Redis,
    Local,
}

/// A hold as its backend knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldRef {
    pub id: HoldId,
    pub place: Place,
}

/// Costs not stored by Directus yet, per user: their total and the calls they came from.
pub type Unstored = HashMap<UserId, (Cents, Vec<Uuid>)>;

/// The users' credit books: holds of calls in flight, costs Directus has not stored yet, and costs stored
/// since a ledger reading.
#[async_trait::async_trait]
pub trait CreditBooks: Send + Sync {
    /// What `user` can spend now, given the ledger as last read.
    async fn available(&self, user: UserId, ledger: LedgerReading) -> Cents;

    /// Reserves `amount` atomically: concurrent reservations never exceed what is available.
    async fn reserve(&self, user: UserId, ledger: LedgerReading, amount: Cents) -> Result<HoldRef, Shortfall>;

    /// The call still runs (a long stream): its hold of `amount` does not expire yet.
    async fn extend(&self, user: UserId, hold: HoldRef, amount: Cents);

    /// The call `request_id` ended and cost `cost`, which replaces its hold (no hold: a cost counted again).
    async fn settle(&self, user: UserId, hold: Option<HoldRef>, request_id: Uuid, cost: Cents);

    /// The call ended without a cost: its hold is gone.
    async fn release(&self, user: UserId, hold: HoldRef);

    /// Directus stored `request_id`'s cost at `at`: ledger readings made after that count it themselves.
    async fn stored(&self, user: UserId, request_id: Uuid, cost: Cents, at: UnixMillis);

    /// At startup: the costs this replica's outbox still holds count again (and only those).
    async fn restore(&self, unstored: Unstored);
}

pub struct Reservations {
    books: Arc<dyn CreditBooks>,
    /// Holds of calls in flight in this process.
    open: AtomicUsize,
}

impl Reservations {
    /// How old a ledger reading can be when it is used: `fresh_reading` normally (the caller cache's
    /// lifetime), `oldest_reading` at most (stale service during a Directus outage included). Stored costs are
    /// kept that long, to the second while fresh readings may predate them, to the minute after.
    pub fn in_memory(fresh_reading: Duration, oldest_reading: Duration) -> Arc<Reservations> {
        Reservations::with(Arc::new(MemoryReservations::new(fresh_reading, oldest_reading)))
    }

    /// In Redis, shared by every replica; `replica` names this one (stable across its restarts).
    pub fn in_redis(
        redis: Arc<Redis>,
        replica: String,
        fresh_reading: Duration,
        oldest_reading: Duration,
    ) -> Arc<Self> {
        Reservations::with(Arc::new(RedisReservations::new(redis, replica, fresh_reading, oldest_reading)))
    }

    fn with(books: Arc<dyn CreditBooks>) -> Arc<Reservations> {
        Arc::new(Reservations { books, open: AtomicUsize::new(0) })
    }

    /// What `user` can spend now, given the ledger as last read.
    pub async fn available(&self, user: UserId, ledger: LedgerReading) -> Cents {
        self.books.available(user, ledger).await
    }

    /// Reserves `amount` for one call, atomically: concurrent calls can never reserve more than is available.
    pub async fn reserve(
        self: &Arc<Self>,
        user: UserId,
        ledger: LedgerReading,
        amount: Cents,
    ) -> Result<Hold, Shortfall> {
        let hold = self.books.reserve(user, ledger, amount).await?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Hold { reservations: Arc::clone(self), user, hold, amount, done: false })
    }

    /// Directus stored `record`'s deduction at `at`: from then on the ledger counts it.
    pub async fn stored(&self, record: &UsageRecord, at: OffsetDateTime) {
        self.books.stored(record.user, record.request_id, record.cost_cents, unix_millis(at)).await;
    }

    /// After a restart: every internal-credit record still in the outbox, waiting or refused by Directus,
    /// counts against its user again until Directus stores it. Call before the flusher starts.
    pub async fn restore_from(&self, outbox: &Outbox) -> Result<usize, StoreError> {
        let mut unstored = Unstored::new();
        let records = outbox.all_records()?;
        let restored = records.iter().filter(|r| r.source == Source::Internal).count();
        for record in records.into_iter().filter(|r| r.source == Source::Internal) {
            let entry = unstored.entry(record.user).or_default();
            entry.0 += record.cost_cents;
            entry.1.push(record.request_id);
        }
        self.books.restore(unstored).await;
        Ok(restored)
    }

    /// Holds of calls in flight in this process, for operators (summed over replicas by the metrics server).
    pub fn open_holds(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The call ended; its cost replaces its hold. Until a slow backend (Redis) has it, the hold itself (at
    /// least the cost) still counts.
    fn settle(&self, hold: &Hold, request_id: Uuid, cost: Cents) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let (books, user, held) = (Arc::clone(&self.books), hold.user, hold.hold);
        now_or_later(async move { books.settle(user, Some(held), request_id, cost).await });
    }

    fn release(&self, hold: &Hold) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let (books, user, held) = (Arc::clone(&self.books), hold.user, hold.hold);
        now_or_later(async move { books.release(user, held).await });
    }

    fn extend(&self, hold: &Hold) {
        let (books, user, held, amount) = (Arc::clone(&self.books), hold.user, hold.hold, hold.amount);
        now_or_later(async move { books.extend(user, held, amount).await });
    }
}

/// Holds end in synchronous places (a stream dropped by its client): a backend that answers at once (memory)
/// is done here, a slower one (Redis) is told from a task.
fn now_or_later(work: impl Future<Output = ()> + Send + 'static) {
    let mut work = Box::pin(work);
    if (&mut work).now_or_never().is_some() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(work)),
        // Shutting down without a runtime: a Redis hold expires by itself.
        Err(_) => tracing::debug!("no runtime to update a credit hold; it will expire"),
    }
}

/// The flusher's sink, telling the reservations when Directus has stored a deduction, so it stops counting
/// on top of the ledger from then on.
pub struct LedgerSink<S> {
    pub inner: S,
    pub reservations: Arc<Reservations>,
}

impl<S: UsageSink> UsageSink for LedgerSink<S> {
    async fn deliver(&self, records: &[UsageRecord]) -> Result<(), DeliveryError> {
        let result = self.inner.deliver(records).await;
        // A lone record found already stored is in the ledger too (delivered before a timeout or a crash).
        let stored = result.is_ok() || (records.len() == 1 && matches!(result, Err(DeliveryError::AlreadyStored)));
        if stored {
            let now = OffsetDateTime::now_utc();
            for record in records.iter().filter(|r| r.source == Source::Internal) {
                self.reservations.stored(record, now).await;
            }
        }
        result
    }
}

/// A reservation for one call. Settle it with the call's real cost; dropped unsettled (the call failed, the
/// task was cancelled) it is released and nothing is charged.
pub struct Hold {
    reservations: Arc<Reservations>,
    user: UserId,
    hold: HoldRef,
    amount: Cents,
    done: bool,
}

impl Hold {
    pub fn amount(&self) -> Cents {
        self.amount
    }

    /// The call `request_id` ended and cost `cost`: it counts against the balance until Directus has it.
    pub fn settle(mut self, request_id: Uuid, cost: Cents) {
        self.done = true;
        self.reservations.settle(&self, request_id, cost);
    }

    /// The call is still running (a long stream): keep the hold from expiring.
    pub fn keep_alive(&self) {
        self.reservations.extend(self);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            self.reservations.release(self);
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("user", &self.user).field("amount", &self.amount).finish_non_exhaustive()
    }
}

pub(super) fn ttl_millis() -> i64 {
    HOLD_TTL.as_millis() as i64
}

pub fn now_millis() -> UnixMillis {
    unix_millis(OffsetDateTime::now_utc())
}

fn unix_millis(at: OffsetDateTime) -> UnixMillis {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
    }

    fn reading(balance: i64) -> LedgerReading {
        LedgerReading { balance: Cents::whole(balance), read_at: now_millis() }
    }

    fn record(user: UserId, cost: i64) -> UsageRecord {
        let mut record = crate::accounting::outbox::tests::record();
        record.user = user;
        record.cost_cents = Cents::whole(cost);
        record
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reservations_never_exceed_the_balance() {
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60));
        let u = user();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let reservations = Arc::clone(&reservations);
                tokio::spawn(async move { reservations.reserve(u, reading(100), Cents::whole(95)).await })
            })
            .collect();
        let mut holds = Vec::new();
        for task in tasks {
            if let Ok(hold) = task.await.unwrap() {
                holds.push(hold);
            }
        }
        assert_eq!(holds.len(), 1);
        assert_eq!(reservations.open_holds(), 1);
        holds.pop().unwrap().settle(Uuid::new_v4(), Cents::whole(90));
        assert_eq!(reservations.available(u, reading(100)).await, Cents::whole(10));
        assert_eq!(reservations.open_holds(), 0);
    }

    #[tokio::test]
    async fn a_dropped_hold_is_released_and_the_user_forgotten() {
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60));
        let u = user();
        let hold = reservations.reserve(u, reading(100), Cents::whole(60)).await.unwrap();
        assert_eq!(
            reservations.reserve(u, reading(100), Cents::whole(60)).await.unwrap_err().available,
            Cents::whole(40)
        );
        drop(hold);
        assert_eq!(reservations.available(u, reading(100)).await, Cents::whole(100));
    }

    #[tokio::test]
    async fn a_cost_restored_at_startup_stops_counting_for_readings_made_after_it_was_stored() {
        let dir = crate::store::tests::TempDir::new();
        let outbox = crate::accounting::outbox::tests::open(&dir);
        let u = user();
        outbox.import(&[record(u, 30)], None).unwrap();
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(reservations.restore_from(&outbox).await.unwrap(), 1);
        let before = reading(100);
        assert_eq!(reservations.available(u, before).await, Cents::whole(70));
        let stored_at = OffsetDateTime::now_utc();
        reservations.stored(&record(u, 30), stored_at).await;
        let after = LedgerReading { balance: Cents::whole(70), read_at: unix_millis(stored_at) + 1_000 };
        assert_eq!(reservations.available(u, after).await, Cents::whole(70));
    }
}
