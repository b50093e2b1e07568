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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use time::OffsetDateTime;
use uuid::Uuid;

use self::memory::MemoryReservations;
use self::redis::RedisReservations;
use crate::accounting::{DeliveryError, Outbox, UsageSink, yield_to_calls};
use crate::domain::credit_book::{BookId, HoldId, LedgerReading, UnixMillis, unix_millis};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::Source;
use crate::domain::usage::UsageRecord;
use crate::domain::user::UserId;
use crate::services::platform_budget::PlatformBudget;
use crate::shared::redis::Redis;
use crate::store::StoreError;

/// How long a hold lives without news from its call. Streams extend theirs while they run, so this only
/// frees what a lost call left behind.
pub const HOLD_TTL: Duration = Duration::from_secs(300);

/// Not enough in a book for the reservation: what it has left right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub available: Cents,
}

/// Why a call could not reserve its most expensive outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveError {
    /// The user's credits: what they can spend right now.
    Credits(Shortfall),
    /// A platform's daily budget (of all providers' keys, or of this provider's: `Some`) is spent, or held by
    /// calls in flight.
    PlatformBudget(Option<Provider>),
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

/// Costs not stored by Directus yet, per book: their total and the calls they came from.
pub type Unstored = HashMap<BookId, (Cents, Vec<Uuid>)>;

/// The credit books ([`BookId`]): holds of calls in flight, costs Directus has not stored yet, and costs
/// stored since a ledger reading.
#[async_trait::async_trait]
pub trait CreditBooks: Send + Sync {
    /// What can be spent from `book` now, given the ledger as last read.
    async fn available(&self, book: BookId, ledger: LedgerReading) -> Cents;

    /// Reserves `amount` atomically: concurrent reservations never exceed what is available.
    async fn reserve(&self, book: BookId, ledger: LedgerReading, amount: Cents) -> Result<HoldRef, Shortfall>;

    /// The call still runs (a long stream): its hold of `amount` does not expire yet.
    async fn extend(&self, book: BookId, hold: HoldRef, amount: Cents);

    /// The call `request_id` ended and cost `cost`, which replaces its hold (no hold: a cost counted again).
    async fn settle(&self, book: BookId, hold: Option<HoldRef>, request_id: Uuid, cost: Cents);

    /// The call ended without a cost: its hold is gone.
    async fn release(&self, book: BookId, hold: HoldRef);

    /// Directus stored `request_id`'s cost at `at`: ledger readings made after that count it themselves.
    async fn stored(&self, book: BookId, request_id: Uuid, cost: Cents, at: UnixMillis);

    /// At startup: the costs this replica's outbox still holds count again (and only those).
    async fn restore(&self, unstored: Unstored);
}

pub struct Reservations {
    books: Arc<dyn CreditBooks>,
    /// Holds of calls in flight in this process.
    open: AtomicUsize,
    /// The platform's daily budgets (all providers', and each provider's own): every credit call reserves
    /// from each that covers its provider as well.
    platform: Vec<Arc<PlatformBudget>>,
    /// Spending caps are set up, so own-key calls may have a book ([`BookId::OwnKeys`]) whose costs count
    /// until Directus stores them, as credit calls' do.
    own_keys: AtomicBool,
}

impl Reservations {
    /// How old a ledger reading can be when it is used: `fresh_reading` normally (the caller cache's
    /// lifetime), `oldest_reading` at most (stale service during a Directus outage included). Stored costs are
    /// kept that long, to the second while fresh readings may predate them, to the minute after.
    pub fn in_memory(
        fresh_reading: Duration,
        oldest_reading: Duration,
        platform: Vec<Arc<PlatformBudget>>,
    ) -> Arc<Reservations> {
        Reservations::with(Arc::new(MemoryReservations::new(fresh_reading, oldest_reading)), platform)
    }

    /// In Redis, shared by every replica; `replica` names this one (stable across its restarts).
    pub fn in_redis(
        redis: Arc<Redis>,
        replica: String,
        fresh_reading: Duration,
        oldest_reading: Duration,
        platform: Vec<Arc<PlatformBudget>>,
    ) -> Arc<Self> {
        Reservations::with(Arc::new(RedisReservations::new(redis, replica, fresh_reading, oldest_reading)), platform)
    }

    fn with(books: Arc<dyn CreditBooks>, platform: Vec<Arc<PlatformBudget>>) -> Arc<Reservations> {
        Arc::new(Reservations { books, open: AtomicUsize::new(0), platform, own_keys: AtomicBool::new(false) })
    }

    /// Own-key spending may be capped: its calls' costs are counted per user until Directus stores them.
    pub fn count_own_keys(&self) {
        self.own_keys.store(true, Ordering::Relaxed);
    }

    /// What `user`'s own keys may still spend, given what their tightest own-key cap left at `reading`.
    pub async fn own_keys_available(&self, user: UserId, reading: LedgerReading) -> Cents {
        self.books.available(BookId::OwnKeys(user), reading).await
    }

    /// Reserves `amount` of what `user`'s own-key caps leave, for one call with their own key.
    pub async fn reserve_own_keys(
        self: &Arc<Self>,
        user: UserId,
        reading: LedgerReading,
        amount: Cents,
    ) -> Result<Hold, Shortfall> {
        let book = BookId::OwnKeys(user);
        let held = self.books.reserve(book, reading, amount).await?;
        Ok(self.opened(book, held, [None, None], amount))
    }

    /// A hold of `amount` taken in `book` (and `platform`'s), counted open until it is settled or released.
    fn opened(self: &Arc<Self>, book: BookId, held: HoldRef, platform: PlatformHolds, amount: Cents) -> Hold {
        self.open.fetch_add(1, Ordering::Relaxed);
        Hold { reservations: Arc::clone(self), book, held, platform, amount, done: false }
    }

    /// What `user` can spend now, given the ledger as last read.
    pub async fn available(&self, user: UserId, ledger: LedgerReading) -> Cents {
        self.books.available(BookId::Credits(user), ledger).await
    }

    /// Reserves `amount` for one call to `provider`, atomically: concurrent calls can never reserve more than
    /// the user's credits allow, nor, with platform budgets, more than is left of the platform's day (of all
    /// providers, and of `provider` when it has a budget of its own).
    pub async fn reserve(
        self: &Arc<Self>,
        user: UserId,
        ledger: LedgerReading,
        amount: Cents,
        provider: Provider,
    ) -> Result<Hold, ReserveError> {
        let credits = self.books.reserve(BookId::Credits(user), ledger, amount).await.map_err(ReserveError::Credits)?;
        let mut platform: PlatformHolds = [None, None];
        for (slot, budget) in self.platform.iter().filter(|budget| budget.covers(provider)).take(2).enumerate() {
            match self.books.reserve(budget.book(), budget.reading(), amount).await {
                Ok(hold) => platform[slot] = Some((budget.book(), hold)),
                Err(_) => {
                    self.books.release(BookId::Credits(user), credits).await;
                    for (book, hold) in platform.into_iter().flatten() {
                        self.books.release(book, hold).await;
                    }
                    budget.exhausted();
                    return Err(ReserveError::PlatformBudget(budget.scope()));
                }
            }
        }
        Ok(self.opened(BookId::Credits(user), credits, platform, amount))
    }

    /// Each platform budget's day as its book sees it: whose keys (`None`: all), the cap, and what is spent of
    /// it (the ledger's today, and calls held or finished since).
    pub async fn platform_today(&self) -> Vec<(Option<Provider>, Cents, Cents)> {
        let mut days = Vec::with_capacity(self.platform.len());
        for budget in &self.platform {
            let available = self.books.available(budget.book(), budget.reading()).await;
            days.push((budget.scope(), budget.cap(), budget.cap() - available));
        }
        days
    }

    /// At startup, before calls come: the platform's spending today, so its budget holds from the first call;
    /// then read again in the background as it ages, calls or not.
    pub async fn prime(&self) {
        for budget in &self.platform {
            budget.read().await;
            tokio::spawn(Arc::clone(budget).keep_reading());
        }
    }

    /// The books `record` counts in.
    fn books_of(&self, record: &UsageRecord) -> impl Iterator<Item = BookId> {
        let internal = record.source == Source::Internal;
        let own_keys = !internal && self.own_keys.load(Ordering::Relaxed);
        let mut platform = self.platform.iter().filter(|budget| budget.covers(record.provider)).map(|b| b.book());
        [
            internal.then_some(BookId::Credits(record.user)),
            platform.next().filter(|_| internal),
            platform.next().filter(|_| internal),
            own_keys.then_some(BookId::OwnKeys(record.user)),
        ]
        .into_iter()
        .flatten()
    }

    /// Directus stored `record` at `at`: from then on its readings count it.
    pub async fn stored(&self, record: &UsageRecord, at: OffsetDateTime) {
        for book in self.books_of(record) {
            self.books.stored(book, record.request_id, record.cost_cents, unix_millis(at)).await;
        }
    }

    /// After a restart: every record still in the outbox, waiting or refused by Directus, counts in its books
    /// again until Directus stores it (with [`Reservations::count_own_keys`], own-key ones too). Call before
    /// the flusher starts. Returns how many records count again.
    pub async fn restore_from(&self, outbox: &Outbox) -> Result<usize, StoreError> {
        let mut unstored = Unstored::new();
        let mut restored = 0;
        for record in outbox.all_records()? {
            let mut counted = false;
            for book in self.books_of(&record) {
                let entry = unstored.entry(book).or_default();
                entry.0 += record.cost_cents;
                entry.1.push(record.request_id);
                counted = true;
            }
            restored += usize::from(counted);
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
        let books = Arc::clone(&self.books);
        let held = hold.books();
        now_or_later(async move {
            for (book, held) in held.into_iter().flatten() {
                books.settle(book, Some(held), request_id, cost).await;
            }
        });
    }

    fn release(&self, hold: &Hold) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        let books = Arc::clone(&self.books);
        let held = hold.books();
        now_or_later(async move {
            for (book, held) in held.into_iter().flatten() {
                books.release(book, held).await;
            }
        });
    }

    fn extend(&self, hold: &Hold) {
        let (books, amount) = (Arc::clone(&self.books), hold.amount);
        let held = hold.books();
        now_or_later(async move {
            for (book, held) in held.into_iter().flatten() {
                books.extend(book, held, amount).await;
            }
        });
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

/// The flusher's sink, telling the reservations when Directus has stored a record, so its books stop counting
/// it on top of their readings from then on.
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
            for (n, record) in records.iter().enumerate() {
                self.reservations.stored(record, now).await;
                yield_to_calls(n).await;
            }
        }
        result
    }
}

/// What one call holds of the platform's budgets: at most two cover a provider (all providers', and its own).
type PlatformHolds = [Option<(BookId, HoldRef)>; 2];

/// A reservation for one call. Settle it with the call's real cost; dropped unsettled (the call failed, the
/// task was cancelled) it is released and nothing is charged.
pub struct Hold {
    reservations: Arc<Reservations>,
    /// The user's credits, or their own keys' caps.
    book: BookId,
    held: HoldRef,
    /// The same amount held from the platform's day, under platform budgets (all providers', the provider's).
    platform: PlatformHolds,
    amount: Cents,
    done: bool,
}

impl Hold {
    fn books(&self) -> [Option<(BookId, HoldRef)>; 3] {
        [Some((self.book, self.held)), self.platform[0], self.platform[1]]
    }

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
        f.debug_struct("Hold").field("book", &self.book).field("amount", &self.amount).finish_non_exhaustive()
    }
}

pub(super) fn ttl_millis() -> i64 {
    HOLD_TTL.as_millis() as i64
}

pub fn now_millis() -> UnixMillis {
    unix_millis(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
    }

    /// Platform budgets read their day from it: never, here (the day counts as unspent).
    fn unreachable_directus() -> crate::directus::DirectusClient {
        crate::directus::DirectusClient::new(
            "http://127.0.0.1:9".parse().unwrap(),
            secrecy::SecretString::from("token"),
            Duration::from_millis(50),
        )
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
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60), Vec::new());
        let u = user();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let reservations = Arc::clone(&reservations);
                tokio::spawn(async move {
                    reservations.reserve(u, reading(100), Cents::whole(95), Provider::openai()).await
                })
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
    async fn every_users_credit_calls_hold_from_the_platforms_day_and_one_that_would_pass_it_holds_nothing() {
        let unreachable = unreachable_directus();
        let budget = PlatformBudget::new(None, Cents::whole(100), unreachable, Duration::from_secs(5), None);
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60), vec![budget]);
        let (a, b) = (user(), user());
        let held = reservations.reserve(a, reading(1_000), Cents::whole(60), Provider::openai()).await.unwrap();
        let refused = reservations.reserve(b, reading(1_000), Cents::whole(60), Provider::openai()).await.unwrap_err();
        assert_eq!(refused, ReserveError::PlatformBudget(None));
        assert_eq!(reservations.available(b, reading(1_000)).await, Cents::whole(1_000), "b's credits hold nothing");
        assert_eq!(reservations.open_holds(), 1);
        // a's call cost less than it held: what is left of the day is there for b.
        held.settle(Uuid::new_v4(), Cents::whole(30));
        let b_held = reservations.reserve(b, reading(1_000), Cents::whole(60), Provider::openai()).await.unwrap();
        assert_eq!(
            reservations.reserve(a, reading(1_000), Cents::whole(20), Provider::openai()).await.unwrap_err(),
            ReserveError::PlatformBudget(None)
        );
        drop(b_held);
        assert!(
            reservations.reserve(a, reading(1_000), Cents::whole(60), Provider::openai()).await.is_ok(),
            "b's hold went back"
        );
    }

    #[tokio::test]
    async fn own_key_calls_hold_from_their_own_book_and_count_there_until_directus_stores_them() {
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60), Vec::new());
        reservations.count_own_keys();
        let u = user();
        // The tightest own-key cap leaves 100.
        let hold = reservations.reserve_own_keys(u, reading(100), Cents::whole(95)).await.unwrap();
        let refused = reservations.reserve_own_keys(u, reading(100), Cents::whole(95)).await.unwrap_err();
        assert_eq!(refused, Shortfall { available: Cents::whole(5) });
        assert_eq!(reservations.available(u, reading(100)).await, Cents::whole(100), "credits are another book");
        let mut call = record(u, 90);
        call.source = Source::Byok;
        hold.settle(call.request_id, call.cost_cents);
        assert_eq!(reservations.own_keys_available(u, reading(100)).await, Cents::whole(10));
        let stored_at = OffsetDateTime::now_utc();
        reservations.stored(&call, stored_at).await;
        let after = LedgerReading { balance: Cents::whole(10), read_at: unix_millis(stored_at) + 1_000 };
        assert_eq!(reservations.own_keys_available(u, after).await, Cents::whole(10), "counted once");
    }

    #[tokio::test]
    async fn a_providers_own_budget_holds_only_its_calls_and_every_call_holds_from_the_budget_for_all() {
        let unreachable = unreachable_directus();
        let budget = |scope, cap| {
            PlatformBudget::new(scope, Cents::whole(cap), unreachable.clone(), Duration::from_secs(5), None)
        };
        let budgets = vec![budget(None, 100), budget(Some(Provider::anthropic()), 50)];
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60), budgets);
        let u = user();
        let refused = reservations.reserve(u, reading(1_000), Cents::whole(60), Provider::anthropic()).await;
        assert_eq!(refused.unwrap_err(), ReserveError::PlatformBudget(Some(Provider::anthropic())));
        assert_eq!(reservations.available(u, reading(1_000)).await, Cents::whole(1_000), "nothing held");
        let openai = reservations.reserve(u, reading(1_000), Cents::whole(60), Provider::openai()).await.unwrap();
        let anthropic = reservations.reserve(u, reading(1_000), Cents::whole(41), Provider::anthropic()).await;
        assert_eq!(anthropic.unwrap_err(), ReserveError::PlatformBudget(None), "the budget for all has only 40 left");
        drop(openai);
        let days = reservations.platform_today().await;
        assert_eq!(
            days,
            [(None, Cents::whole(100), Cents::ZERO), (Some(Provider::anthropic()), Cents::whole(50), Cents::ZERO)]
        );
        assert!(reservations.reserve(u, reading(1_000), Cents::whole(41), Provider::anthropic()).await.is_ok());
    }

    #[tokio::test]
    async fn a_dropped_hold_is_released_and_the_user_forgotten() {
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60), Vec::new());
        let u = user();
        let hold = reservations.reserve(u, reading(100), Cents::whole(60), Provider::openai()).await.unwrap();
        assert_eq!(
            reservations.reserve(u, reading(100), Cents::whole(60), Provider::openai()).await.unwrap_err(),
            ReserveError::Credits(Shortfall { available: Cents::whole(40) })
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
        let reservations = Reservations::in_memory(Duration::from_secs(5), Duration::from_secs(60), Vec::new());
        assert_eq!(reservations.restore_from(&outbox).await.unwrap(), 1);
        let before = reading(100);
        assert_eq!(reservations.available(u, before).await, Cents::whole(70));
        let stored_at = OffsetDateTime::now_utc();
        reservations.stored(&record(u, 30), stored_at).await;
        let after = LedgerReading { balance: Cents::whole(70), read_at: unix_millis(stored_at) + 1_000 };
        assert_eq!(reservations.available(u, after).await, Cents::whole(70));
    }
}
