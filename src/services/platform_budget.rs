//! The platform's daily budget (`PLATFORM_DAILY_BUDGET_CENTS`): what every user together may spend on the
//! platform's provider keys in a UTC day. Its book is a credit book like a user's: the "balance" is the cap
//! less what the ledger shows spent today, and calls in flight hold their most expensive outcome from it, so
//! concurrent calls on any replica cannot pass it together.
//!
//! Today's spending is one Directus aggregate, read again in the background once a reading is older than
//! `refresh`: no call waits for it. Until the first reading arrives the day counts as unspent, on top of which
//! the book still counts every call this process (or, with Redis, any replica) has held or settled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::{Date, OffsetDateTime, Time};

use crate::directus::DirectusClient;
use crate::domain::credit_book::{LedgerReading, unix_millis};
use crate::domain::money::Cents;
use crate::sync;

/// At this share of the cap an operator is warned (once a day per replica).
const WARN_AT_PERCENT: i64 = 80;

pub struct PlatformBudget {
    cap: Cents,
    directus: DirectusClient,
    refresh: Duration,
    last: Mutex<Option<Spent>>,
    reading_now: AtomicBool,
    /// The days the operator was last warned of the budget nearly spent, and spent: once a day each.
    warned_near: Mutex<Option<Date>>,
    warned_spent: Mutex<Option<Date>>,
}

/// Today's spending as Directus last reported it.
#[derive(Debug, Clone, Copy)]
struct Spent {
    day: Date,
    amount: Cents,
    read_at: OffsetDateTime,
}

impl PlatformBudget {
    pub fn new(cap: Cents, directus: DirectusClient, refresh: Duration) -> Arc<Self> {
        Arc::new(PlatformBudget {
            cap,
            directus,
            refresh,
            last: Mutex::new(None),
            reading_now: AtomicBool::new(false),
            warned_near: Mutex::new(None),
            warned_spent: Mutex::new(None),
        })
    }

    pub fn cap(&self) -> Cents {
        self.cap
    }

    /// What the platform's book may spend: the cap less today's spending as last read. A stale reading starts
    /// a new one beside the call.
    pub fn reading(self: &Arc<Self>) -> LedgerReading {
        let now = OffsetDateTime::now_utc();
        let last = *sync::lock(&self.last);
        if last.is_none_or(|spent| now - spent.read_at >= self.refresh) {
            self.read_in_background();
        }
        let today = last.filter(|spent| spent.day == now.date());
        let spent = today.map_or(Cents::ZERO, |spent| spent.amount);
        self.warn_if_near(now.date(), spent);
        // Before the first reading of the day, every stored cost still in the book counts on top.
        let read_at = today.map_or(0, |spent| unix_millis(spent.read_at));
        LedgerReading { balance: self.cap - spent, read_at }
    }

    /// Today's spending as last read, for operators (`/v1/status` and metrics).
    pub fn spent_today(&self) -> Option<Cents> {
        let today = OffsetDateTime::now_utc().date();
        sync::lock(&self.last).filter(|spent| spent.day == today).map(|spent| spent.amount)
    }

    /// A call was refused for the budget: logged once a day.
    pub fn exhausted(&self) {
        crate::metrics::platform_budget_refusal();
        if first_today(&self.warned_spent, OffsetDateTime::now_utc().date()) {
            tracing::error!(cap = %self.cap,
                "the platform's daily budget is spent: credit calls are refused until 00:00 UTC \
                 (own-key calls go on); raise PLATFORM_DAILY_BUDGET_CENTS to allow more");
        }
    }

    fn warn_if_near(&self, today: Date, spent: Cents) {
        if spent.nanos() >= self.cap.nanos() / 100 * WARN_AT_PERCENT && first_today(&self.warned_near, today) {
            tracing::warn!(cap = %self.cap, %spent, "the platform has spent {WARN_AT_PERCENT}% of its daily budget");
        }
    }

    /// Reads today's spending now: at startup, so the first calls are checked against it.
    pub async fn read(&self) {
        let read_at = OffsetDateTime::now_utc();
        let day = read_at.date();
        match self.directus.platform_spend_since(day.with_time(Time::MIDNIGHT).assume_utc()).await {
            Ok(amount) => {
                *sync::lock(&self.last) = Some(Spent { day, amount, read_at });
                crate::metrics::platform_spend(amount, self.cap);
            }
            Err(error) => tracing::warn!(%error, "could not read the platform's spending today"),
        }
    }

    fn read_in_background(self: &Arc<Self>) {
        if self.reading_now.swap(true, Ordering::AcqRel) {
            return;
        }
        let budget = Arc::clone(self);
        tokio::spawn(async move {
            budget.read().await;
            budget.reading_now.store(false, Ordering::Release);
        });
    }
}

/// True the first time it is asked on `today`.
fn first_today(last: &Mutex<Option<Date>>, today: Date) -> bool {
    let mut last = sync::lock(last);
    let first = *last != Some(today);
    *last = Some(today);
    first
}
