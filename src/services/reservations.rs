//! Credit reservations: where every internal-credit call reserves its most expensive outcome before it
//! starts, and where finished calls' costs count until the ledger shows them (see
//! [`crate::domain::credit_book`] for the rules).
//!
//! One interface, backends chosen by configuration: [`Reservations::Memory`] serves one replica with no moving
//! part; a shared backend (Redis) drops in beside it for several replicas. Callers never know which.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use crate::accounting::{DeliveryError, Outbox, UsageSink};
use crate::domain::credit_book::{CreditBook, HoldId, LedgerReading, UnixMillis};
use crate::domain::money::Cents;
use crate::domain::routing::Source;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::store::StoreError;
use crate::sync;

/// How long a hold lives without news from its call. Streams extend theirs while they run, so this only
/// frees what a lost call left behind.
pub const HOLD_TTL: Duration = Duration::from_secs(300);

/// Not enough credits for the reservation: what the user can spend right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub available: Cents,
}

pub enum Reservations {
    /// This process's memory: right for one replica. Holds vanish with the process, as they should.
    Memory(MemoryReservations),
}

impl Reservations {
    /// How old a ledger reading can be when it is used: `fresh_reading` normally (the caller cache's
    /// lifetime), `oldest_reading` at most (stale service during a Directus outage included). Stored costs are
    /// kept that long, to the second while fresh readings may predate them, to the minute after.
    pub fn in_memory(fresh_reading: Duration, oldest_reading: Duration) -> Arc<Reservations> {
        Arc::new(Reservations::Memory(MemoryReservations::new(fresh_reading, oldest_reading)))
    }

    /// What `user` can spend now, given the ledger as last read.
    pub async fn available(&self, user: UserId, ledger: LedgerReading) -> Cents {
        match self {
            Reservations::Memory(memory) => memory.available(user, ledger, now_millis()),
        }
    }

    /// Reserves `amount` for one call, atomically: concurrent calls can never reserve more than is available.
    pub async fn reserve(
        self: &Arc<Self>,
        user: UserId,
        ledger: LedgerReading,
        amount: Cents,
    ) -> Result<Hold, Shortfall> {
        let id = match &**self {
            Reservations::Memory(memory) => memory.reserve(user, ledger, amount, now_millis())?,
        };
        Ok(Hold { reservations: Arc::clone(self), user, id, amount, done: false })
    }

    /// A finished call's cost, for a call that had no hold (restored from the spool at startup).
    pub fn add_unstored(&self, user: UserId, cost: Cents) {
        match self {
            Reservations::Memory(memory) => memory.with_book(user, |book| book.add_unstored(cost)),
        }
    }

    /// Directus stored a deduction of `cost` for `user` at `at`.
    pub fn stored(&self, user: UserId, cost: Cents, at: OffsetDateTime) {
        let at = unix_millis(at);
        match self {
            Reservations::Memory(memory) => memory.with_book(user, |book| book.stored(cost, at)),
        }
    }

    /// After a restart: every internal-credit record still in the outbox, waiting or refused by Directus,
    /// counts against its user again until Directus stores it. Call before the flusher starts.
    pub fn restore_from(&self, outbox: &Outbox) -> Result<usize, StoreError> {
        let mut restored = 0;
        for record in outbox.all_records()?.into_iter().filter(|r| r.source == Source::Internal) {
            self.add_unstored(record.user, record.cost_cents);
            restored += 1;
        }
        Ok(restored)
    }

    /// Open holds across all users, for operators.
    pub fn open_holds(&self) -> usize {
        match self {
            Reservations::Memory(memory) => memory.open_holds(now_millis()),
        }
    }

    fn settle(&self, user: UserId, id: HoldId, cost: Cents) {
        match self {
            Reservations::Memory(memory) => memory.with_book(user, |book| book.settle(id, cost)),
        }
    }

    fn release(&self, user: UserId, id: HoldId) {
        match self {
            Reservations::Memory(memory) => memory.with_book(user, |book| book.release(id)),
        }
    }

    fn extend(&self, user: UserId, id: HoldId) {
        let now = now_millis();
        match self {
            Reservations::Memory(memory) => memory.with_book(user, |book| book.extend(id, now, ttl_millis())),
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
                self.reservations.stored(record.user, record.cost_cents, now);
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
    amount: Cents,
    done: bool,
}

impl Hold {
    pub fn amount(&self) -> Cents {
        self.amount
    }

    /// The call ended and cost `cost`: it counts against the balance until Directus has stored it.
    pub fn settle(mut self, cost: Cents) {
        self.done = true;
        self.reservations.settle(self.user, self.id, cost);
    }

    /// The call is still running (a long stream): keep the hold from expiring.
    pub fn keep_alive(&self) {
        self.reservations.extend(self.user, self.id);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.done {
            self.reservations.release(self.user, self.id);
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("user", &self.user).field("amount", &self.amount).finish_non_exhaustive()
    }
}

pub struct MemoryReservations {
    books: Mutex<HashMap<UserId, CreditBook>>,
    next_id: AtomicU64,
    oldest_reading_millis: i64,
    fresh_reading_millis: i64,
}

impl MemoryReservations {
    fn new(fresh_reading: Duration, oldest_reading: Duration) -> Self {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        MemoryReservations {
            books: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            oldest_reading_millis: millis(oldest_reading),
            fresh_reading_millis: millis(fresh_reading),
        }
    }

    fn available(&self, user: UserId, ledger: LedgerReading, now: UnixMillis) -> Cents {
        match sync::lock(&self.books).get(&user) {
            Some(book) => book.available(ledger, now),
            None => ledger.balance,
        }
    }

    fn reserve(
        &self,
        user: UserId,
        ledger: LedgerReading,
        amount: Cents,
        now: UnixMillis,
    ) -> Result<HoldId, Shortfall> {
        let id = HoldId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut books = sync::lock(&self.books);
        let book = books.entry(user).or_default();
        book.prune(now, self.oldest_reading_millis, self.fresh_reading_millis);
        match book.reserve(id, amount, ledger, now, ttl_millis()) {
            Ok(()) => Ok(id),
            Err(available) => {
                if book.is_empty() {
                    books.remove(&user);
                }
                Err(Shortfall { available })
            }
        }
    }

    /// Changes one user's book, and drops it once it holds nothing, so idle users cost no memory.
    fn with_book(&self, user: UserId, change: impl FnOnce(&mut CreditBook)) {
        let mut books = sync::lock(&self.books);
        let book = books.entry(user).or_default();
        change(book);
        book.prune(now_millis(), self.oldest_reading_millis, self.fresh_reading_millis);
        if book.is_empty() {
            books.remove(&user);
        }
    }

    fn open_holds(&self, now: UnixMillis) -> usize {
        sync::lock(&self.books).values().map(|book| book.open_holds(now)).sum()
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
        holds.pop().unwrap().settle(Cents::whole(90));
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
        let Reservations::Memory(memory) = &*reservations;
        assert!(sync::lock(&memory.books).is_empty(), "no state kept for an idle user");
    }

    #[tokio::test]
    async fn a_stored_cost_stops_counting_for_readings_made_after_it() {
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60));
        let u = user();
        reservations.add_unstored(u, Cents::whole(30));
        let before = reading(100);
        assert_eq!(reservations.available(u, before).await, Cents::whole(70));
        let stored_at = OffsetDateTime::now_utc();
        reservations.stored(u, Cents::whole(30), stored_at);
        let after = LedgerReading { balance: Cents::whole(70), read_at: unix_millis(stored_at) + 1_000 };
        assert_eq!(reservations.available(u, after).await, Cents::whole(70));
    }
}
