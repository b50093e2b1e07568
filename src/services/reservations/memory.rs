//! Credit books in this process's memory: right for one replica, and the Redis backend's own books while
//! Redis is down. Holds vanish with the process, as they should.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;

use super::{CreditBooks, HoldRef, Place, Shortfall, Unstored, now_millis, ttl_millis};
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
    pub fn new(fresh_reading: Duration, oldest_reading: Duration) -> Self {
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
    fn is_empty(&self) -> bool {
        sync::lock(&self.books).is_empty()
    }
}

#[async_trait::async_trait]
impl CreditBooks for MemoryReservations {
    async fn available(&self, user: UserId, ledger: LedgerReading) -> Cents {
        MemoryReservations::available(self, user, ledger, now_millis())
    }

    async fn reserve(&self, user: UserId, ledger: LedgerReading, amount: Cents) -> Result<HoldRef, Shortfall> {
        let id = MemoryReservations::reserve(self, user, ledger, amount, now_millis())?;
        Ok(HoldRef { id, place: Place::Local })
    }

    async fn extend(&self, user: UserId, hold: HoldRef, _: Cents) {
        let now = now_millis();
        self.with_book(user, now, |book| book.extend(hold.id, now, ttl_millis()));
    }

    async fn settle(&self, user: UserId, hold: Option<HoldRef>, _: Uuid, cost: Cents) {
        self.with_book(user, now_millis(), |book| match hold {
            Some(hold) => book.settle(hold.id, cost),
            None => book.add_unstored(cost),
        });
    }

    async fn release(&self, user: UserId, hold: HoldRef) {
        self.with_book(user, now_millis(), |book| book.release(hold.id));
    }

    async fn stored(&self, user: UserId, _: Uuid, cost: Cents, at: UnixMillis) {
        self.with_book(user, now_millis(), |book| book.stored(cost, at));
    }

    async fn restore(&self, unstored: Unstored) {
        let now = now_millis();
        for (user, (cost, _)) in unstored {
            self.with_book(user, now, |book| book.add_unstored(cost));
        }
    }
}

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_user_leaves_no_book_behind() {
        let books = MemoryReservations::new(Duration::from_secs(5), Duration::from_secs(60));
        let user = UserId::parse(&Uuid::new_v4().to_string()).unwrap();
        let ledger = LedgerReading { balance: Cents::whole(100), read_at: now_millis() };
        let hold = CreditBooks::reserve(&books, user, ledger, Cents::whole(60)).await.unwrap();
        assert!(!books.is_empty());
        CreditBooks::release(&books, user, hold).await;
        assert!(books.is_empty(), "no state kept for an idle user");
    }
}
