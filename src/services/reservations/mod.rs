//! Credit reservations: where every internal-credit call reserves its most expensive outcome before it
//! starts, and where finished calls' costs count until the ledger shows them (see
//! [`crate::domain::credit_book`] for the rules).
//!
//! One interface, backends chosen by configuration: [`Reservations::Memory`] serves one replica with no moving
//! part; [`Reservations::Shared`] keeps the books in Redis for several replicas (`REDIS_URL`). Callers never
//! know which.

mod memory;
mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use self::memory::MemoryReservations;
use self::shared::{Place, SharedReservations};
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

pub struct Reservations {
    backend: Backend,
    /// Holds of calls in flight in this process.
    open: AtomicUsize,
}

enum Backend {
    Memory(MemoryReservations),
    /// Boxed: it carries its scripts and fallback book, far larger than the memory backend.
    Shared(Box<SharedReservations>),
}

impl Reservations {
    /// How old a ledger reading can be when it is used: `fresh_reading` normally (the caller cache's
    /// lifetime), `oldest_reading` at most (stale service during a Directus outage included). Stored costs are
    /// kept that long, to the second while fresh readings may predate them, to the minute after.
    pub fn in_memory(fresh_reading: Duration, oldest_reading: Duration) -> Arc<Reservations> {
        Reservations::with(Backend::Memory(MemoryReservations::new(fresh_reading, oldest_reading)))
    }

    /// In Redis, shared by every replica; `replica` names this one (stable across its restarts).
    pub fn shared(redis: Arc<Redis>, replica: String, fresh_reading: Duration, oldest_reading: Duration) -> Arc<Self> {
        Reservations::with(Backend::Shared(Box::new(SharedReservations::new(
            redis,
            replica,
            fresh_reading,
            oldest_reading,
        ))))
    }

    fn with(backend: Backend) -> Arc<Reservations> {
        Arc::new(Reservations { backend, open: AtomicUsize::new(0) })
    }

    /// What `user` can spend now, given the ledger as last read.
    pub async fn available(&self, user: UserId, ledger: LedgerReading) -> Cents {
        match &self.backend {
            Backend::Memory(memory) => memory.available(user, ledger, now_millis()),
            Backend::Shared(shared) => shared.available(user, ledger).await,
        }
    }

    /// Reserves `amount` for one call, atomically: concurrent calls can never reserve more than is available.
    pub async fn reserve(
        self: &Arc<Self>,
        user: UserId,
        ledger: LedgerReading,
        amount: Cents,
    ) -> Result<Hold, Shortfall> {
        let (id, place) = match &self.backend {
            Backend::Memory(memory) => (memory.reserve(user, ledger, amount, now_millis())?, Place::Local),
            Backend::Shared(shared) => shared.reserve(user, ledger, amount).await?,
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Hold { reservations: Arc::clone(self), user, id, place, amount, done: false })
    }

    /// Directus stored `record`'s deduction at `at`: from then on the ledger counts it.
    pub async fn stored(&self, record: &UsageRecord, at: OffsetDateTime) {
        let at = unix_millis(at);
        match &self.backend {
            Backend::Memory(memory) => {
                memory.with_book(record.user, now_millis(), |book| book.stored(record.cost_cents, at))
            }
            Backend::Shared(shared) => shared.stored(record.user, record.request_id, record.cost_cents, at).await,
        }
    }

    /// After a restart: every internal-credit record still in the outbox, waiting or refused by Directus,
    /// counts against its user again until Directus stores it. Call before the flusher starts.
    pub async fn restore_from(&self, outbox: &Outbox) -> Result<usize, StoreError> {
        let mut unstored: HashMap<UserId, (Cents, Vec<Uuid>)> = HashMap::new();
        let records = outbox.all_records()?;
        let restored = records.iter().filter(|r| r.source == Source::Internal).count();
        for record in records.into_iter().filter(|r| r.source == Source::Internal) {
            let entry = unstored.entry(record.user).or_default();
            entry.0 += record.cost_cents;
            entry.1.push(record.request_id);
        }
        match &self.backend {
            Backend::Memory(memory) => {
                for (user, (cost, _)) in unstored {
                    memory.with_book(user, now_millis(), |book| book.add_unstored(cost));
                }
            }
            Backend::Shared(shared) => {
                if let Err(error) = shared.restore(unstored.clone()).await {
                    tracing::warn!(%error, "cannot restore this replica's unstored costs in Redis; counting them locally");
                    shared.restore_locally(unstored);
                }
            }
        }
        Ok(restored)
    }

    /// Holds of calls in flight in this process, for operators (summed over replicas by the metrics server).
    pub fn open_holds(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The call ended; its cost replaces its hold. For a shared hold Redis is told in the background: until
    /// then the hold itself (at least the cost) still counts.
    fn settle(self: &Arc<Self>, hold: &Hold, request_id: Uuid, cost: Cents) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let (user, id, place) = (hold.user, hold.id, hold.place);
        match &self.backend {
            Backend::Memory(memory) => memory.with_book(user, now_millis(), |book| book.settle(id, cost)),
            Backend::Shared(_) => self.in_background(move |reservations| async move {
                if let Backend::Shared(shared) = &reservations.backend {
                    shared.settle(user, Some((id, place)), request_id, cost).await;
                }
            }),
        }
    }

    fn release(self: &Arc<Self>, hold: &Hold) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let (user, id, place) = (hold.user, hold.id, hold.place);
        match &self.backend {
            Backend::Memory(memory) => memory.with_book(user, now_millis(), |book| book.release(id)),
            Backend::Shared(_) => self.in_background(move |reservations| async move {
                if let Backend::Shared(shared) = &reservations.backend {
                    shared.release(user, id, place).await;
                }
            }),
        }
    }

    fn extend(self: &Arc<Self>, hold: &Hold) {
        let (user, id, place, amount) = (hold.user, hold.id, hold.place, hold.amount);
        match &self.backend {
            Backend::Memory(memory) => {
                let now = now_millis();
                memory.with_book(user, now, |book| book.extend(id, now, ttl_millis()));
            }
            Backend::Shared(_) => self.in_background(move |reservations| async move {
                if let Backend::Shared(shared) = &reservations.backend {
                    shared.extend(user, id, place, amount).await;
                }
            }),
        }
    }

    /// Holds end in synchronous places (a stream dropped by its client); Redis is told from a task.
    fn in_background<F, Fut>(self: &Arc<Self>, work: F)
    where
        F: FnOnce(Arc<Reservations>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let future = work(Arc::clone(self));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(future)),
            // Shutting down without a runtime: the shared hold expires by itself.
            Err(_) => tracing::debug!("no runtime to update a shared credit hold; it will expire"),
        }
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
    id: HoldId,
    place: Place,
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
        self.reservations.clone().settle(&self, request_id, cost);
    }

    /// The call is still running (a long stream): keep the hold from expiring.
    pub fn keep_alive(&self) {
        self.reservations.clone().extend(self);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            self.reservations.clone().release(self);
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("user", &self.user).field("amount", &self.amount).finish_non_exhaustive()
    }
}

fn ttl_millis() -> i64 {
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
        let Backend::Memory(memory) = &reservations.backend else { unreachable!() };
        assert!(memory.is_empty(), "no state kept for an idle user");
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
