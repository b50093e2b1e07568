//! The platform's daily budgets: what every user together may spend on the platform's provider keys in a UTC
//! day (`PLATFORM_DAILY_BUDGET_CENTS`), and on one provider's (`PLATFORM_DAILY_BUDGET_CENTS_<PROVIDER>`). Its book is a credit book like a user's: the "balance" is the cap
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

use super::notifier::Notifier;
use crate::directus::DirectusClient;
use crate::domain::credit_book::{BookId, LedgerReading, unix_millis};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::sync;

/// At this share of the cap operators are warned (logged once a day per replica; admins told once a day).
const WARN_AT_PERCENT: u8 = 80;

/// Who hears when the budget is nearly spent and spent: the Directus users of `PLATFORM_BUDGET_ALERT_EMAILS`,
/// once a day each, across replicas.
pub struct PlatformAlerts {
    pub notifier: Arc<Notifier>,
    pub recipients: Vec<String>,
}

pub struct PlatformBudget {
    /// One provider's keys, or (`None`) all of them.
    scope: Option<Provider>,
    cap: Cents,
    directus: DirectusClient,
    refresh: Duration,
    alerts: Option<PlatformAlerts>,
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
    pub fn new(
        scope: Option<Provider>,
        cap: Cents,
        directus: DirectusClient,
        refresh: Duration,
        alerts: Option<PlatformAlerts>,
    ) -> Arc<Self> {
        Arc::new(PlatformBudget {
            scope,
            cap,
            directus,
            refresh,
            alerts,
            last: Mutex::new(None),
            reading_now: AtomicBool::new(false),
            warned_near: Mutex::new(None),
            warned_spent: Mutex::new(None),
        })
    }

    pub fn cap(&self) -> Cents {
        self.cap
    }

    /// The provider whose keys it limits; `None`: all of them.
    pub fn scope(&self) -> Option<Provider> {
        self.scope
    }

    /// Whether a call to `provider` spends from it.
    pub fn covers(&self, provider: Provider) -> bool {
        self.scope.is_none_or(|scope| scope == provider)
    }

    /// The credit book it is enforced through.
    pub fn book(&self) -> BookId {
        self.scope.map_or(BookId::Platform, BookId::PlatformProvider)
    }

    /// `all`, or the provider, for logs and metrics.
    fn label(&self) -> &'static str {
        self.scope.map_or("all", Provider::as_str)
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
        // Before the first reading of the day, every stored cost still in the book counts on top.
        let read_at = today.map_or(0, |spent| unix_millis(spent.read_at));
        LedgerReading { balance: self.cap - spent, read_at }
    }

    /// Today's spending as last read, for operators (`/v1/status` and metrics).
    pub fn spent_today(&self) -> Option<Cents> {
        let today = OffsetDateTime::now_utc().date();
        sync::lock(&self.last).filter(|spent| spent.day == today).map(|spent| spent.amount)
    }

    /// A call was refused for the budget: logged, and the admins told, once a day.
    pub fn exhausted(&self) {
        crate::metrics::platform_budget_refusal();
        let today = OffsetDateTime::now_utc().date();
        if first_today(&self.warned_spent, today) {
            tracing::error!(cap = %self.cap, provider = self.label(),
                "the platform's daily budget is spent: credit calls are refused until 00:00 UTC \
                 (own-key calls go on); raise PLATFORM_DAILY_BUDGET_CENTS(_<PROVIDER>) to allow more");
            self.tell_admins(today, 100, self.cap);
        }
    }

    fn warn_if_near(&self, today: Date, spent: Cents) {
        let near = i128::from(spent.nanos()) * 100 >= i128::from(self.cap.nanos()) * i128::from(WARN_AT_PERCENT);
        if near && first_today(&self.warned_near, today) {
            tracing::warn!(cap = %self.cap, %spent, provider = self.label(),
                "the platform has spent {WARN_AT_PERCENT}% of its daily budget");
            self.tell_admins(today, WARN_AT_PERCENT, spent);
        }
    }

    /// In the background: the call that noticed goes on.
    fn tell_admins(&self, today: Date, percent: u8, spent: Cents) {
        let Some(alerts) = &self.alerts else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (notifier, recipients) = (Arc::clone(&alerts.notifier), alerts.recipients.clone());
        let (scope, cap) = (self.scope, self.cap);
        runtime.spawn(async move { notifier.platform_budget(&recipients, today, scope, percent, spent, cap).await });
    }

    /// Reads today's spending now (at startup, so the first calls are checked against it), and warns when it
    /// has reached the warning share: every reading passes through here, so none is missed.
    pub async fn read(&self) {
        let read_at = OffsetDateTime::now_utc();
        let day = read_at.date();
        match self.directus.platform_spend_since(day.with_time(Time::MIDNIGHT).assume_utc(), self.scope).await {
            Ok(amount) => {
                *sync::lock(&self.last) = Some(Spent { day, amount, read_at });
                crate::metrics::platform_spend(self.label(), amount, self.cap);
                self.warn_if_near(day, amount);
            }
            Err(error) => tracing::warn!(%error, "could not read the platform's spending today"),
        }
    }

    /// Reads today's spending every `refresh` for as long as the process runs, so the metrics, the operations
    /// panel and the admins' notice follow it in quiet times too (calls read it as well when it is older).
    pub async fn keep_reading(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.refresh);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            self.read_in_background();
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
