//! Credit books in this process's memory: right for one replica, and the Redis backend's own books while
//! Redis is down. Holds vanish with the process, as they should.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;

use super::{CreditBooks, HoldRef, Place, Shortfall, Unstored, now_millis, ttl_millis};
use crate::domain::credit_book::{BookId, CreditBook, HoldId, LedgerReading, UnixMillis};
use crate::domain::money::Cents;
use crate::sync;

pub struct MemoryReservations {
    books: Mutex<HashMap<BookId, CreditBook>>,
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

    pub(super) fn available(&self, book: BookId, ledger: LedgerReading, now: UnixMillis) -> Cents {
        match sync::lock(&self.books).get(&book) {
            Some(book) => book.available(ledger, now),
            None => ledger.balance,
        }
    }

    pub(super) fn reserve(
        &self,
        book: BookId,
        ledger: LedgerReading,
        amount: Cents,
        now: UnixMillis,
    ) -> Result<HoldId, Shortfall> {
        let id = HoldId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut books = sync::lock(&self.books);
        let entry = books.entry(book).or_default();
        entry.prune(now, self.oldest_reading_millis, self.fresh_reading_millis);
        match entry.reserve(id, amount, ledger, now, ttl_millis()) {
            Ok(()) => Ok(id),
            Err(available) => {
                if entry.is_empty() {
                    books.remove(&book);
                }
                Err(Shortfall { available })
            }
        }
    }

    /// Changes one book, and drops it once it holds nothing, so idle users cost no memory.
    pub(super) fn with_book(&self, book: BookId, now: UnixMillis, change: impl FnOnce(&mut CreditBook)) {
        let mut books = sync::lock(&self.books);
        let entry = books.entry(book).or_default();
        change(entry);
        entry.prune(now, self.oldest_reading_millis, self.fresh_reading_millis);
        if entry.is_empty() {
            books.remove(&book);
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        sync::lock(&self.books).is_empty()
    }
}

#[async_trait::async_trait]
impl CreditBooks for MemoryReservations {
    async fn available(&self, book: BookId, ledger: LedgerReading) -> Cents {
        MemoryReservations::available(self, book, ledger, now_millis())
    }

    async fn reserve(&self, book: BookId, ledger: LedgerReading, amount: Cents) -> Result<HoldRef, Shortfall> {
        let id = MemoryReservations::reserve(self, book, ledger, amount, now_millis())?;
        Ok(HoldRef { id, place: Place::Local })
    }

    async fn extend(&self, book: BookId, hold: HoldRef, _: Cents) {
        let now = now_millis();
        self.with_book(book, now, |book| book.extend(hold.id, now, ttl_millis()));
    }

    async fn settle(&self, book: BookId, hold: Option<HoldRef>, _: Uuid, cost: Cents) {
        self.with_book(book, now_millis(), |book| match hold {
            Some(hold) => book.settle(hold.id, cost),
            None => book.add_unstored(cost),
        });
    }

    async fn release(&self, book: BookId, hold: HoldRef) {
        self.with_book(book, now_millis(), |book| book.release(hold.id));
    }

    async fn stored(&self, book: BookId, _: Uuid, cost: Cents, at: UnixMillis) {
        self.with_book(book, now_millis(), |book| book.stored(cost, at));
    }

    async fn restore(&self, unstored: Unstored) {
        let now = now_millis();
        for (book, (cost, _)) in unstored {
            self.with_book(book, now, |book| book.add_unstored(cost));
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
        let user = BookId::Credits(crate::domain::user::UserId::parse(&Uuid::new_v4().to_string()).unwrap());
        let ledger = LedgerReading { balance: Cents::whole(100), read_at: now_millis() };
        let hold = CreditBooks::reserve(&books, user, ledger, Cents::whole(60)).await.unwrap();
        assert!(!books.is_empty());
        CreditBooks::release(&books, user, hold).await;
        assert!(books.is_empty(), "no state kept for an idle user");
    }
}
