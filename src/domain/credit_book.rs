//! One user's credits as the sidecar must count them: the balance Directus last reported, minus what calls
//! in flight have reserved (holds), minus what finished calls cost that the ledger does not show yet.
//!
//! The ledger lags for many reasons: the deduction waits in the outbox (Directus down, a backlog), Directus
//! refused it, or it was stored after the balance was read. Each of these must still count, or concurrent
//! and rapid calls spend money the user does not have. So a finished call's cost is tracked here from the
//! moment it ends until a ledger reading is known to include it: it is *unstored* until Directus has it,
//! then *stored* at a time; a reading that began after that time contains it. Times are wall-clock
//! milliseconds so that replicas sharing this state compare them the same way.

use std::collections::VecDeque;
use std::fmt;

use super::money::Cents;
use super::provider::Provider;
use super::user::UserId;

/// Whose spending a book counts: a user's credits, everything spent on the platform's keys today (for
/// `PLATFORM_DAILY_BUDGET_CENTS`, with the cap less today's spending as its "balance"), or a user's own-key
/// spending under its caps. The same rules hold for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookId {
    Credits(UserId),
    Platform,
    /// What the platform may still spend today on one provider's platform key
    /// (`PLATFORM_DAILY_BUDGET_CENTS_<PROVIDER>`).
    PlatformProvider(Provider),
    /// What a user's own keys may still spend under their own-key caps (the tightest cap less what was spent
    /// as its "balance").
    OwnKeys(UserId),
}

/// The book's part of a shared key, a hash tag that keeps its keys together: `{<user id>}`, `{platform}`,
/// `{platform:<provider>}`, `{own:<user id>}`.
impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BookId::Credits(user) => write!(f, "{{{user}}}"),
            BookId::Platform => f.write_str("{platform}"),
            BookId::PlatformProvider(provider) => write!(f, "{{platform:{provider}}}"),
            BookId::OwnKeys(user) => write!(f, "{{own:{user}}}"),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

pub fn unix_millis(at: time::OffsetDateTime) -> UnixMillis {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A balance read from the ledger, and when the read began: deductions stored before then are in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerReading {
    pub balance: Cents,
    pub read_at: UnixMillis,
}

/// Identifies one hold within its user's book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoldId(pub u64);

#[derive(Debug, Clone, Copy)]
struct Hold {
    id: HoldId,
    amount: Cents,
    expires_at: UnixMillis,
}

/// Stored deductions are summed per second of storage: the resolution a fresh reading's `read_at` is
/// compared at. Once no fresh reading can predate them, they are merged into minutes: only readings served
/// while Directus is unreachable (up to 15 minutes old) still need them, and for those a minute's resolution
/// errs only on the safe side. So a busy user's book holds a few dozen spans, not one per second.
const FINE_MILLIS: i64 = 1_000;
const COARSE_MILLIS: i64 = 60_000;

/// Cost stored in `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: UnixMillis,
    end: UnixMillis,
    cost: Cents,
}

#[derive(Debug, Default)]
pub struct CreditBook {
    holds: Vec<Hold>,
    /// Cost of finished calls Directus has not stored: waiting for delivery, or refused by it.
    unstored: Cents,
    /// Cost of finished calls Directus stored, by when it stored them, oldest first.
    stored: VecDeque<Span>,
}

impl CreditBook {
    /// What the user may still spend: the reading, less open holds and every cost the reading cannot contain.
    pub fn available(&self, ledger: LedgerReading, now: UnixMillis) -> Cents {
        let held: Cents = self.holds.iter().filter(|h| h.expires_at > now).map(|h| h.amount).sum();
        // A span counts unless all of it was stored before the read began; its edge counts, to be safe.
        let stored_since: Cents = self.stored.iter().filter(|s| s.end > ledger.read_at).map(|s| s.cost).sum();
        ledger.balance - held - self.unstored - stored_since
    }

    /// Reserves `amount` if it is available, all at once (the caller holds the book's lock). On refusal,
    /// returns what is available.
    pub fn reserve(
        &mut self,
        id: HoldId,
        amount: Cents,
        ledger: LedgerReading,
        now: UnixMillis,
        ttl_millis: i64,
    ) -> Result<(), Cents> {
        self.holds.retain(|h| h.expires_at > now);
        let available = self.available(ledger, now);
        if available < amount {
            return Err(available);
        }
        self.holds.push(Hold { id, amount, expires_at: now + ttl_millis });
        Ok(())
    }

    /// A long call still running: its hold lives on.
    pub fn extend(&mut self, id: HoldId, now: UnixMillis, ttl_millis: i64) {
        if let Some(hold) = self.holds.iter_mut().find(|h| h.id == id) {
            hold.expires_at = hold.expires_at.max(now + ttl_millis);
        }
    }

    /// The call ended: its hold gives way to what it really cost, which counts until Directus has it. A cost
    /// above the hold is still counted in full (every token is charged).
    pub fn settle(&mut self, id: HoldId, cost: Cents) {
        self.release(id);
        self.unstored += cost;
    }

    /// The call failed or was never made: nothing is charged.
    pub fn release(&mut self, id: HoldId) {
        self.holds.retain(|h| h.id != id);
    }

    /// A cost known before this book existed (a record found in the outbox at startup).
    pub fn add_unstored(&mut self, cost: Cents) {
        self.unstored += cost;
    }

    /// Directus stored a deduction at `at`: readings that begin after then contain it.
    pub fn stored(&mut self, cost: Cents, at: UnixMillis) {
        self.unstored -= cost;
        let start = at - at.rem_euclid(FINE_MILLIS);
        match self.stored.back_mut() {
            Some(span) if span.start <= start && start < span.end => span.cost += cost,
            _ => self.stored.push_back(Span { start, end: start + FINE_MILLIS, cost }),
        }
    }

    /// Forgets expired holds and stored deductions that every reading still in use contains, and merges into
    /// minutes the stored deductions no fresh reading can predate. Readings are at most
    /// `oldest_reading_millis` old, fresh ones at most `fresh_reading_millis`.
    pub fn prune(&mut self, now: UnixMillis, oldest_reading_millis: i64, fresh_reading_millis: i64) {
        self.holds.retain(|h| h.expires_at > now);
        while self.stored.front().is_some_and(|span| span.end < now - oldest_reading_millis) {
            self.stored.pop_front();
        }
        // Spans are in storage order, so the ones old enough to merge are at the front.
        let coarse_before = now - fresh_reading_millis - FINE_MILLIS;
        let mut i = 0;
        while i < self.stored.len() && self.stored[i].start < coarse_before {
            let span = &mut self.stored[i];
            if span.end - span.start == FINE_MILLIS && span.end <= coarse_before {
                span.start -= span.start.rem_euclid(COARSE_MILLIS);
                span.end = span.start + COARSE_MILLIS;
            }
            let span = *span;
            match i.checked_sub(1).map(|p| &mut self.stored[p]) {
                Some(previous) if previous.start == span.start && previous.end == span.end => {
                    previous.cost += span.cost;
                    self.stored.remove(i);
                }
                _ => i += 1,
            }
        }
    }

    /// Nothing held or owed: the book can be dropped.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty() && self.unstored == Cents::ZERO && self.stored.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 60_000;

    fn c(whole: i64) -> Cents {
        Cents::whole(whole)
    }

    fn reading(balance: i64, read_at: UnixMillis) -> LedgerReading {
        LedgerReading { balance: c(balance), read_at }
    }

    #[test]
    fn twenty_concurrent_holds_of_95_on_100_admit_exactly_one() {
        let mut book = CreditBook::default();
        let ledger = reading(100, 0);
        let admitted = (0..20).filter(|i| book.reserve(HoldId(*i), c(95), ledger, 10, TTL).is_ok()).count();
        assert_eq!(admitted, 1);
        assert_eq!(book.available(ledger, 10), c(5));
        assert_eq!(book.reserve(HoldId(99), c(6), ledger, 10, TTL), Err(c(5)), "says what is available");
    }

    #[test]
    fn a_settled_call_counts_its_real_cost_until_a_reading_includes_it() {
        let mut book = CreditBook::default();
        let before = reading(100, 1_000);
        book.reserve(HoldId(1), c(95), before, 1_000, TTL).unwrap();
        book.settle(HoldId(1), c(90));
        assert_eq!(book.available(before, 2_000), c(10), "the hold gave way to the real cost");

        // Directus stores it at t = 5.5 s. A reading that began earlier does not contain it...
        book.stored(c(90), 5_500);
        assert_eq!(book.available(reading(100, 5_400), 6_000), c(10));
        // ...one that began in the same second might not either (counted, to be safe)...
        assert_eq!(book.available(reading(10, 5_900), 6_000), c(-80));
        // ...and one that began after that second does.
        assert_eq!(book.available(reading(10, 6_000), 6_100), c(10));
    }

    #[test]
    fn a_released_hold_frees_its_amount_and_costs_nothing() {
        let mut book = CreditBook::default();
        let ledger = reading(100, 0);
        book.reserve(HoldId(1), c(95), ledger, 0, TTL).unwrap();
        book.release(HoldId(1));
        assert_eq!(book.available(ledger, 1), c(100));
        assert!(book.is_empty());
    }

    #[test]
    fn holds_expire_on_their_own_unless_extended() {
        let mut book = CreditBook::default();
        let ledger = reading(100, 0);
        book.reserve(HoldId(1), c(60), ledger, 0, TTL).unwrap();
        book.reserve(HoldId(2), c(30), ledger, 0, TTL).unwrap();
        book.extend(HoldId(2), TTL - 1, TTL);
        assert_eq!(book.available(ledger, TTL), c(70), "hold 1 expired, hold 2 lives on");
        book.prune(2 * TTL, 0, 0);
        assert_eq!(book.available(ledger, 2 * TTL), c(100));
    }

    #[test]
    fn unstored_costs_survive_until_stored_and_stored_ones_are_pruned_when_no_reading_needs_them() {
        let mut book = CreditBook::default();
        book.add_unstored(c(7));
        assert_eq!(book.available(reading(10, 0), 0), c(3));
        book.stored(c(7), 1_000);
        book.prune(100_000, 30_000, 5_000);
        assert!(book.is_empty(), "no reading in use predates the storage");
        assert_eq!(book.available(reading(3, 100_000), 100_000), c(3));
    }

    #[test]
    fn old_stored_costs_are_merged_into_minutes_that_still_count_for_readings_before_them() {
        let mut book = CreditBook::default();
        // A busy hour: a cost stored every 200 ms for 20 minutes.
        let mut at = 0;
        while at < 1_200_000 {
            book.add_unstored(c(1));
            book.stored(c(1), at);
            at += 200;
            book.prune(at, 900_000, 6_000);
        }
        assert!(book.stored.len() <= 15 + 8, "{} spans", book.stored.len());
        // A reading from just before the last minute was stored still sees that minute's costs...
        let before_last_minute = reading(1_000_000, 1_140_000 - 1);
        assert!(book.available(before_last_minute, at) <= c(1_000_000 - 300));
        // ...and a fresh one only what it cannot contain yet (up to the last second, and its edge).
        let fresh = reading(1_000_000, at);
        assert!(book.available(fresh, at) >= c(1_000_000 - 10), "{:?}", book.available(fresh, at));
    }

    #[test]
    fn a_cost_above_its_hold_is_counted_in_full() {
        let mut book = CreditBook::default();
        let ledger = reading(100, 0);
        book.reserve(HoldId(1), c(10), ledger, 0, TTL).unwrap();
        book.settle(HoldId(1), c(30));
        assert_eq!(book.available(ledger, 1), c(70));
    }
}
