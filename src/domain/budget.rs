//! Spending caps: how much a user may spend in a UTC day or month, whatever their balance.
//!
//! A cap on credit spending is enforced through the user's credit book: what the book may spend is the
//! balance or what the tightest cap leaves of its period, whichever is less, so the holds that keep
//! concurrent calls from overdrawing the balance keep them from passing the cap too.

use std::borrow::Cow;
use std::str::FromStr;

use time::{Date, Month, OffsetDateTime, Time};

use super::credit_book::LedgerReading;
use super::error_code::{Code, Coded};
use super::money::Cents;
use super::tier::SubscriptionTier;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Month => "monthly",
        }
    }

    /// When the period that holds `now` began (UTC).
    pub fn start(self, now: OffsetDateTime) -> OffsetDateTime {
        let date = now.date();
        let first = match self {
            Period::Day => date,
            Period::Month => date.replace_day(1).unwrap_or(date),
        };
        first.with_time(Time::MIDNIGHT).assume_utc()
    }

    /// When the period that holds `now` ends and the cap starts over.
    pub fn resets_at(self, now: OffsetDateTime) -> OffsetDateTime {
        let date = now.date();
        let next = match self {
            Period::Day => date.next_day(),
            Period::Month => {
                let (year, month) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    month => (date.year(), month.next()),
                };
                Date::from_calendar_date(year, month, 1).ok()
            }
        };
        next.unwrap_or(date).with_time(Time::MIDNIGHT).assume_utc()
    }
}

/// One cap on credit spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub period: Period,
    pub limit: Cents,
}

/// Each tier's caps on credit spending per day and month: the defaults (`BUDGET_FREE`, `BUDGET_PREMIUM`,
/// `BUDGET_LIFETIME`) and the ceilings no cap may pass (`BUDGET_<TIER>_MAX`), whoever set it. A user's own
/// caps (`PUT /v1/budget`) replace the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetPolicy {
    tiers: Vec<(SubscriptionTier, TierBudget)>,
}

/// One tier's defaults and ceilings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierBudget {
    pub defaults: Vec<Cap>,
    pub ceilings: Vec<Cap>,
}

/// The caps a user set for themselves (`user_budgets`), in whole cents; `None`: the plan's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnCaps {
    pub daily: Option<Cents>,
    pub monthly: Option<Cents>,
}

impl OwnCaps {
    pub fn get(&self, period: Period) -> Option<Cents> {
        match period {
            Period::Day => self.daily,
            Period::Month => self.monthly,
        }
    }
}

/// A cap asked above what the plan allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Your plan allows a {} credit cap of at most {} cents.", .period.name(), .ceiling.ceil_whole())]
pub struct AboveCeiling {
    pub period: Period,
    pub ceiling: Cents,
}

impl Coded for AboveCeiling {
    fn code(&self) -> Code {
        Code::BudgetAboveCeiling
    }

    fn message(&self) -> Cow<'static, str> {
        self.to_string().into()
    }
}

const PERIODS: [Period; 2] = [Period::Day, Period::Month];

fn cap_of(caps: &[Cap], period: Period) -> Option<Cents> {
    caps.iter().find(|cap| cap.period == period).map(|cap| cap.limit)
}

impl BudgetPolicy {
    pub fn with(tiers: Vec<(SubscriptionTier, TierBudget)>) -> Self {
        let set = |budget: &TierBudget| !budget.defaults.is_empty() || !budget.ceilings.is_empty();
        BudgetPolicy { tiers: tiers.into_iter().filter(|(_, budget)| set(budget)).collect() }
    }

    fn tier(&self, tier: SubscriptionTier) -> Option<&TierBudget> {
        self.tiers.iter().find(|(t, _)| *t == tier).map(|(_, budget)| budget)
    }

    /// The caps in force for a user: their own where they set one, else the tier's default; never above the
    /// tier's ceiling.
    pub fn effective(&self, tier: SubscriptionTier, own: OwnCaps) -> Vec<Cap> {
        let Some(budget) = self.tier(tier) else {
            return PERIODS.iter().filter_map(|p| own.get(*p).map(|limit| Cap { period: *p, limit })).collect();
        };
        PERIODS
            .iter()
            .filter_map(|period| {
                let wanted = own.get(*period).or_else(|| cap_of(&budget.defaults, *period));
                let limit = match (wanted, cap_of(&budget.ceilings, *period)) {
                    (Some(wanted), Some(ceiling)) => wanted.min(ceiling),
                    (wanted, ceiling) => wanted.or(ceiling)?,
                };
                Some(Cap { period: *period, limit })
            })
            .collect()
    }

    /// The tier's ceiling for `period`, if it has one.
    pub fn ceiling(&self, tier: SubscriptionTier, period: Period) -> Option<Cents> {
        self.tier(tier).and_then(|budget| cap_of(&budget.ceilings, period))
    }

    /// Caps a user may set: none above the tier's ceiling.
    pub fn allows(&self, tier: SubscriptionTier, own: OwnCaps) -> Result<(), AboveCeiling> {
        for period in PERIODS {
            if let (Some(wanted), Some(ceiling)) = (own.get(period), self.ceiling(tier, period))
                && wanted > ceiling
            {
                return Err(AboveCeiling { period, ceiling });
            }
        }
        Ok(())
    }

    /// No tier has caps or ceilings: spending is not read, and users set no caps.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}

/// `credits.daily=500,credits.monthly=5000`: whole cents per period.
impl FromStr for BudgetCaps {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let mut caps = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, cents) = entry.split_once('=').ok_or_else(|| format!("`{entry}` is not name=cents"))?;
            let period = match name.trim() {
                "credits.daily" => Period::Day,
                "credits.monthly" => Period::Month,
                _ => return Err(format!("`{}` is not credits.daily or credits.monthly", name.trim())),
            };
            let limit = match cents.trim().parse::<i64>() {
                Ok(cents) if (0..=1_000_000_000_000).contains(&cents) => Cents::whole(cents),
                _ => return Err(format!("{} must be whole cents", name.trim())),
            };
            if caps.iter().any(|cap: &Cap| cap.period == period) {
                return Err(format!("{} is given twice", name.trim()));
            }
            caps.push(Cap { period, limit });
        }
        Ok(BudgetCaps(caps))
    }
}

/// A tier's caps as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetCaps(pub Vec<Cap>);

/// A user's credit spending as the ledger showed it, for the periods that hold `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spending {
    pub at: OffsetDateTime,
    pub today: Cents,
    pub this_month: Cents,
}

impl Spending {
    /// What was spent in `period` as of `now`: nothing once that period has ended since the reading.
    pub fn spent(&self, period: Period, now: OffsetDateTime) -> Cents {
        if period.start(now) != period.start(self.at) {
            return Cents::ZERO;
        }
        match period {
            Period::Day => self.today,
            Period::Month => self.this_month,
        }
    }
}

/// The cap that leaves least to spend, and what it leaves; `None` without caps. Without a reading of the
/// spending (Directus unreachable for a new caller) nothing counts as spent: the holds still do.
pub fn tightest(caps: &[Cap], spending: Option<&Spending>, now: OffsetDateTime) -> Option<(Cap, Cents)> {
    caps.iter()
        .map(|cap| {
            let spent = spending.map_or(Cents::ZERO, |s| s.spent(cap.period, now));
            (*cap, cap.limit - spent)
        })
        .min_by_key(|(_, left)| *left)
}

/// What a user's credit book may spend from: the ledger reading, lowered to what the tightest cap leaves
/// when that is less than the balance; and then that cap, the reason a shortfall would be.
pub fn capped_reading(
    ledger: LedgerReading,
    caps: &[Cap],
    spending: Option<&Spending>,
    now: OffsetDateTime,
) -> (LedgerReading, Option<BudgetExceeded>) {
    match tightest(caps, spending, now) {
        Some((cap, left)) if left < ledger.balance => {
            (LedgerReading { balance: left, ..ledger }, Some(BudgetExceeded::new(cap, now)))
        }
        _ => (ledger, None),
    }
}

/// Each cap and what is spent of it now: the ledger's spending in its period plus `pending`, what calls the
/// ledger does not show yet hold or cost. Nothing without a reading of the spending.
pub fn cap_use(
    caps: &[Cap],
    spending: Option<Spending>,
    pending: Cents,
    now: OffsetDateTime,
) -> impl Iterator<Item = (Cap, Cents)> + '_ {
    caps.iter().filter_map(move |cap| Some((*cap, spending?.spent(cap.period, now) + pending)))
}

/// The shares of a cap (percent) at which its user hears how much of it is spent: `BUDGET_ALERT_PERCENTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertThresholds(Vec<u8>);

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds(vec![50, 80, 100])
    }
}

impl FromStr for AlertThresholds {
    type Err = &'static str;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let mut percents = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.parse::<u8>() {
                Ok(percent) if (1..=100).contains(&percent) => percents.push(percent),
                _ => return Err("must list percents from 1 to 100"),
            }
        }
        percents.sort_unstable();
        percents.dedup();
        Ok(AlertThresholds(percents))
    }
}

impl AlertThresholds {
    pub fn percents(&self) -> &[u8] {
        &self.0
    }

    /// The thresholds `spent` has reached of `limit`, lowest first.
    pub fn reached(&self, spent: Cents, limit: Cents) -> impl Iterator<Item = u8> + '_ {
        let (spent, limit) = (i128::from(spent.nanos()), i128::from(limit.nanos()));
        self.0.iter().copied().filter(move |percent| limit > 0 && spent * 100 >= limit * i128::from(*percent))
    }
}

/// A call that would pass a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.explain())]
pub struct BudgetExceeded {
    pub cap: Cap,
    pub resets_at: OffsetDateTime,
}

impl BudgetExceeded {
    pub fn new(cap: Cap, now: OffsetDateTime) -> Self {
        BudgetExceeded { cap, resets_at: cap.period.resets_at(now) }
    }

    /// `credits.daily`: which cap, as programs name it.
    pub fn cap_name(&self) -> String {
        format!("credits.{}", self.cap.period.name())
    }

    fn explain(&self) -> String {
        let resets = self.resets_at.date();
        format!(
            "This request could take your credit spending past your {} cap of {} cents, so it was not sent. The \
             cap starts over on {resets} at 00:00 UTC. To raise it, ask the platform's administrators, or use \
             your own API key where your plan allows.",
            self.cap.period.name(),
            self.cap.limit.ceil_whole()
        )
    }
}

impl Coded for BudgetExceeded {
    fn code(&self) -> Code {
        Code::BudgetExceeded
    }

    fn message(&self) -> Cow<'static, str> {
        self.to_string().into()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn caps(raw: &str) -> Vec<Cap> {
        raw.parse::<BudgetCaps>().unwrap().0
    }

    #[test]
    fn caps_parse_from_the_operators_list_and_bad_entries_are_named() {
        assert_eq!(
            caps("credits.daily=500, credits.monthly=5000"),
            [
                Cap { period: Period::Day, limit: Cents::whole(500) },
                Cap { period: Period::Month, limit: Cents::whole(5000) }
            ]
        );
        for bad in [
            "credits.weekly=5",
            "credits.daily",
            "credits.daily=-1",
            "credits.daily=1.5",
            "credits.daily=1,credits.daily=2",
        ] {
            assert!(bad.parse::<BudgetCaps>().is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_start_and_reset_at_utc_midnight_and_the_first_of_the_month() {
        let now = datetime!(2026-12-31 23:59:59 UTC);
        assert_eq!(Period::Day.start(now), datetime!(2026-12-31 00:00 UTC));
        assert_eq!(Period::Month.start(now), datetime!(2026-12-01 00:00 UTC));
        assert_eq!(Period::Day.resets_at(now), datetime!(2027-01-01 00:00 UTC));
        assert_eq!(Period::Month.resets_at(now), datetime!(2027-01-01 00:00 UTC));
        assert_eq!(Period::Month.resets_at(datetime!(2026-02-10 08:00 UTC)), datetime!(2026-03-01 00:00 UTC));
    }

    #[test]
    fn the_tightest_cap_is_the_one_with_least_left_and_a_new_period_starts_empty() {
        let caps = caps("credits.daily=500,credits.monthly=5000");
        let spending =
            Spending { at: datetime!(2026-12-05 10:00 UTC), today: Cents::whole(100), this_month: Cents::whole(4800) };
        let (cap, left) = tightest(&caps, Some(&spending), datetime!(2026-12-05 11:00 UTC)).unwrap();
        assert_eq!((cap.period, left), (Period::Month, Cents::whole(200)));
        // The next day: today's spending is gone, the month's is not.
        let (cap, left) = tightest(&caps, Some(&spending), datetime!(2026-12-06 00:00:01 UTC)).unwrap();
        assert_eq!((cap.period, left), (Period::Month, Cents::whole(200)));
        // The next month: both start over.
        let (cap, left) = tightest(&caps, Some(&spending), datetime!(2027-01-01 00:00:01 UTC)).unwrap();
        assert_eq!((cap.period, left), (Period::Day, Cents::whole(500)));
        assert_eq!(tightest(&[], Some(&spending), datetime!(2026-12-05 11:00 UTC)), None);
    }

    #[test]
    fn a_users_own_caps_replace_the_defaults_and_no_cap_passes_the_ceiling() {
        let policy = BudgetPolicy::with(vec![(
            SubscriptionTier::Free,
            TierBudget {
                defaults: caps("credits.daily=100"),
                ceilings: caps("credits.daily=1000,credits.monthly=5000"),
            },
        )]);
        let limits = |own: OwnCaps| {
            policy
                .effective(SubscriptionTier::Free, own)
                .iter()
                .map(|c| (c.period, c.limit.ceil_whole()))
                .collect::<Vec<_>>()
        };
        // The default, and the ceiling standing in for a missing default.
        assert_eq!(limits(OwnCaps::default()), [(Period::Day, 100), (Period::Month, 5000)]);
        let own = OwnCaps { daily: Some(Cents::whole(20)), monthly: Some(Cents::whole(9000)) };
        assert_eq!(limits(own), [(Period::Day, 20), (Period::Month, 5000)], "lower kept, higher held at the ceiling");
        assert_eq!(
            policy.allows(SubscriptionTier::Free, own),
            Err(AboveCeiling { period: Period::Month, ceiling: Cents::whole(5000) })
        );
        assert!(
            policy.allows(SubscriptionTier::Free, OwnCaps { daily: Some(Cents::whole(1000)), monthly: None }).is_ok()
        );
        // A tier the operator left alone: only what the user set.
        assert_eq!(policy.effective(SubscriptionTier::Premium, OwnCaps::default()), []);
        assert_eq!(policy.effective(SubscriptionTier::Premium, own).len(), 2);
        assert!(policy.allows(SubscriptionTier::Premium, own).is_ok());
    }

    #[test]
    fn alert_thresholds_parse_and_say_which_shares_a_spending_reached() {
        let thresholds: AlertThresholds = "80, 50,100,80".parse().unwrap();
        assert_eq!(thresholds, AlertThresholds::default());
        let reached = |spent: i64| thresholds.reached(Cents::whole(spent), Cents::whole(200)).collect::<Vec<_>>();
        assert_eq!(reached(99), Vec::<u8>::new());
        assert_eq!(reached(100), [50]);
        assert_eq!(reached(170), [50, 80]);
        assert_eq!(reached(250), [50, 80, 100]);
        for bad in ["0", "101", "half", "50;80"] {
            assert!(bad.parse::<AlertThresholds>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refusal_names_its_cap_and_when_it_resets() {
        let cap = Cap { period: Period::Day, limit: Cents::whole(500) };
        let exceeded = BudgetExceeded::new(cap, datetime!(2026-12-05 11:00 UTC));
        assert_eq!(exceeded.cap_name(), "credits.daily");
        assert_eq!(exceeded.resets_at, datetime!(2026-12-06 00:00 UTC));
        assert!(exceeded.to_string().contains("daily cap of 500 cents"), "{exceeded}");
        assert!(exceeded.to_string().contains("2026-12-06 at 00:00 UTC"), "{exceeded}");
    }
}
