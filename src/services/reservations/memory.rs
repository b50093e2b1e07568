//! Reservations in this process's memory: right for one replica, and the fallback of the shared backend
//! while Redis is down. Holds vanish with the process, as they should.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Shortfall, ttl_millis};
use crate::domain::credit_book::{CreditBook, HoldId, LedgerReading, UnixMillis};
use crate::domain::money::Cents;
use crate::domain::user::UserId;
use crate::sync;

pub struct MemoryReservations {
    books: Mutex<HashMap<UserId, CreditBook>>,
    next_id: AtomicU64,
    oldest_reading_millis: i64,
    fresh_reading_millis: i64,
}

impl MemoryReservations {
    pub(super) fn new(fresh_reading: Duration, oldest_reading: Duration) -> Self {
        MemoryReservations {
            books: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            oldest_reading_millis: millis(oldest_reading),
            fresh_reading_millis: millis(fresh_reading),
        }
    }

    pub(super) fn available(&self, user: UserId, ledger: LedgerReading, now: UnixMillis) -> Cents {
        match sync::lock(&self.books).get(&user) {
            Some(book) => book.available(ledger, now),
            None => ledger.balance,
        }
    }

    pub(super) fn reserve(
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
    pub(super) fn with_book(&self, user: UserId, now: UnixMillis, change: impl FnOnce(&mut CreditBook)) {
        let mut books = sync::lock(&self.books);
        let book = books.entry(user).or_default();
        change(book);
        book.prune(now, self.oldest_reading_millis, self.fresh_reading_millis);
        if book.is_empty() {
            books.remove(&user);
        }
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        sync::lock(&self.books).is_empty()
    }
}

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
