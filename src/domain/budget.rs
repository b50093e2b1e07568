//! Spending caps: how much a user may spend in a UTC day or month, on platform credits and, apart, with their
//! own API keys (what their providers bill them), whatever their balance.
//!
//! A cap on credit spending is enforced through the user's credit book: what the book may spend is the
//! balance or what the tightest cap leaves of its period, whichever is less, so the holds that keep
//! concurrent calls from overdrawing the balance keep them from passing the cap too. A cap on own-key
//! spending gets a book of its own, whose "balance" is what its tightest cap leaves.

use std::borrow::Cow;
use std::str::FromStr;

use time::{Date, Month, OffsetDateTime, Time};

use super::credit_book::{LedgerReading, UnixMillis};
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

/// What a cap limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spend {
    /// Platform credits.
    Credits,
    /// Calls with the user's own API keys, at the provider's prices.
    OwnKeys,
}

impl Spend {
    pub const ALL: [Spend; 2] = [Spend::Credits, Spend::OwnKeys];

    /// As programs name it: `credits`, `own_keys`.
    pub fn name(self) -> &'static str {
        match self {
            Spend::Credits => "credits",
            Spend::OwnKeys => "own_keys",
        }
    }

    /// As people read it: "credit spending".
    fn words(self) -> &'static str {
        match self {
            Spend::Credits => "credit spending",
            Spend::OwnKeys => "spending with your own API keys",
        }
    }
}

/// One cap on one kind of spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub spend: Spend,
    pub period: Period,
    pub limit: Cents,
}

impl Cap {
    /// `credits.daily`, `own_keys.monthly`: which cap, as programs name it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.spend.name(), self.period.name())
    }
}

/// Each tier's caps per kind of spending, day and month: the defaults (`BUDGET_FREE`, `BUDGET_PREMIUM`,
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

/// The caps a user set for themselves on one kind of spending, in whole cents; `None`: the plan's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodCaps {
    pub daily: Option<Cents>,
    pub monthly: Option<Cents>,
}

impl PeriodCaps {
    pub fn get(&self, period: Period) -> Option<Cents> {
        match period {
            Period::Day => self.daily,
            Period::Month => self.monthly,
        }
    }
}

/// The caps a user set for themselves (`user_budgets`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnCaps {
    pub credits: PeriodCaps,
    pub own_keys: PeriodCaps,
}

impl OwnCaps {
    pub fn of(&self, spend: Spend) -> PeriodCaps {
        match spend {
            Spend::Credits => self.credits,
            Spend::OwnKeys => self.own_keys,
        }
    }

    pub fn get(&self, spend: Spend, period: Period) -> Option<Cents> {
        self.of(spend).get(period)
    }
}

/// A cap asked above what the plan allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Your plan allows a {} cap on {} of at most {} cents.", .period.name(), .spend.words(), .ceiling.ceil_whole())]
pub struct AboveCeiling {
    pub spend: Spend,
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

fn cap_of(caps: &[Cap], spend: Spend, period: Period) -> Option<Cents> {
    caps.iter().find(|cap| cap.spend == spend && cap.period == period).map(|cap| cap.limit)
}

/// Every kind of spending in every period.
fn kinds() -> impl Iterator<Item = (Spend, Period)> {
    Spend::ALL.into_iter().flat_map(|spend| PERIODS.into_iter().map(move |period| (spend, period)))
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
        let budget = self.tier(tier);
        kinds()
            .filter_map(|(spend, period)| {
                let default = budget.and_then(|b| cap_of(&b.defaults, spend, period));
                let wanted = own.get(spend, period).or(default);
                let limit = match (wanted, self.ceiling(tier, spend, period)) {
                    (Some(wanted), Some(ceiling)) => wanted.min(ceiling),
                    (wanted, ceiling) => wanted.or(ceiling)?,
                };
                Some(Cap { spend, period, limit })
            })
            .collect()
    }

    /// The tier's ceiling on `spend` for `period`, if it has one.
    pub fn ceiling(&self, tier: SubscriptionTier, spend: Spend, period: Period) -> Option<Cents> {
        self.tier(tier).and_then(|budget| cap_of(&budget.ceilings, spend, period))
    }

    /// Caps a user may set: none above the tier's ceiling.
    pub fn allows(&self, tier: SubscriptionTier, own: OwnCaps) -> Result<(), AboveCeiling> {
        for (spend, period) in kinds() {
            if let (Some(wanted), Some(ceiling)) = (own.get(spend, period), self.ceiling(tier, spend, period))
                && wanted > ceiling
            {
                return Err(AboveCeiling { spend, period, ceiling });
            }
        }
        Ok(())
    }

    /// No tier has caps or ceilings: spending is not read, and users set no caps.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}

/// `credits.daily=500,credits.monthly=5000,own_keys.daily=1000`: whole cents per kind of spending and period.
impl FromStr for BudgetCaps {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let mut caps = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, cents) = entry.split_once('=').ok_or_else(|| format!("`{entry}` is not name=cents"))?;
            let (spend, period) = match name.trim() {
                "credits.daily" => (Spend::Credits, Period::Day),
                "credits.monthly" => (Spend::Credits, Period::Month),
                "own_keys.daily" => (Spend::OwnKeys, Period::Day),
                "own_keys.monthly" => (Spend::OwnKeys, Period::Month),
                _ => {
                    return Err(format!(
                        "`{}` is not credits.daily, credits.monthly, own_keys.daily or own_keys.monthly",
                        name.trim()
                    ));
                }
            };
            let limit = match cents.trim().parse::<i64>() {
                Ok(cents) if (0..=1_000_000_000_000).contains(&cents) => Cents::whole(cents),
                _ => return Err(format!("{} must be whole cents", name.trim())),
            };
            if caps.iter().any(|cap: &Cap| cap.spend == spend && cap.period == period) {
                return Err(format!("{} is given twice", name.trim()));
            }
            caps.push(Cap { spend, period, limit });
        }
        Ok(BudgetCaps(caps))
    }
}

/// A tier's caps as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetCaps(pub Vec<Cap>);

/// A user's spending of one kind as Directus showed it (credits: the ledger's deductions for calls; own keys:
/// `api_key_usage`), for the periods that hold `at`.
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

/// The cap on `spend` that leaves least to spend, and what it leaves; `None` without such caps. Without a
/// reading of the spending (Directus unreachable for a new caller) nothing counts as spent: the holds still do.
pub fn tightest(caps: &[Cap], spend: Spend, spending: Option<&Spending>, now: OffsetDateTime) -> Option<(Cap, Cents)> {
    caps.iter()
        .filter(|cap| cap.spend == spend)
        .map(|cap| {
            let spent = spending.map_or(Cents::ZERO, |s| s.spent(cap.period, now));
            (*cap, cap.limit - spent)
        })
        .min_by_key(|(_, left)| *left)
}

/// What a user's credit book may spend from: the ledger reading, lowered to what the tightest credit cap
/// leaves when that is less than the balance; and then that cap, the reason a shortfall would be.
pub fn capped_reading(
    ledger: LedgerReading,
    caps: &[Cap],
    spending: Option<&Spending>,
    now: OffsetDateTime,
) -> (LedgerReading, Option<BudgetExceeded>) {
    match tightest(caps, Spend::Credits, spending, now) {
        Some((cap, left)) if left < ledger.balance => {
            (LedgerReading { balance: left, ..ledger }, Some(BudgetExceeded::new(cap, now)))
        }
        _ => (ledger, None),
    }
}

/// What a user's own-key book may spend from, read when `spending` was (`read_at`): what the tightest cap on
/// own-key spending leaves; and that cap, the reason a shortfall is. `None` without such caps.
pub fn own_key_reading(
    caps: &[Cap],
    spending: Option<&Spending>,
    read_at: UnixMillis,
    now: OffsetDateTime,
) -> Option<(LedgerReading, BudgetExceeded)> {
    let (cap, left) = tightest(caps, Spend::OwnKeys, spending, now)?;
    Some((LedgerReading { balance: left, read_at }, BudgetExceeded::new(cap, now)))
}

/// Each cap on `spend` and what is spent of it now: the spending in its period plus `pending`, what calls
/// Directus does not show yet hold or cost. Nothing without a reading of the spending.
pub fn cap_use(
    caps: &[Cap],
    spend: Spend,
    spending: Option<Spending>,
    pending: Cents,
    now: OffsetDateTime,
) -> impl Iterator<Item = (Cap, Cents)> + '_ {
    caps.iter()
        .filter(move |cap| cap.spend == spend)
        .filter_map(move |cap| Some((*cap, spending?.spent(cap.period, now) + pending)))
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

/// When a user hears their credits run low: below an amount (`LOW_BALANCE_ALERT_CENTS`), or below a share of
/// their last grant (`LOW_BALANCE_ALERT_PERCENT`, so a $500 buyer hears it at $50 and a $5 one at 50 cents);
/// with both, whichever is higher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowBalance {
    pub below: Option<Cents>,
    pub percent_of_last_grant: Option<u8>,
}

impl LowBalance {
    pub fn is_set(&self) -> bool {
        self.below.is_some() || self.percent_of_last_grant.is_some()
    }

    /// The balance below which the user hears it, given their last grant (if any).
    pub fn threshold(&self, last_grant: Option<Cents>) -> Option<Cents> {
        let share = self
            .percent_of_last_grant
            .zip(last_grant)
            .map(|(percent, grant)| Cents::from_nanos(grant.nanos() / 100 * i64::from(percent)));
        match (self.below, share) {
            (Some(below), Some(share)) => Some(below.max(share)),
            (below, share) => below.or(share),
        }
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
        self.cap.name()
    }

    fn explain(&self) -> String {
        let resets = self.resets_at.date();
        let raise = match self.cap.spend {
            Spend::Credits => {
                "To raise it, ask the platform's administrators, or use your own API key where your plan allows."
            }
            Spend::OwnKeys => "To raise it, change your own caps on your account page (up to what your plan allows).",
        };
        format!(
            "This request could take your {} past your {} cap of {} cents, so it was not sent. The cap starts \
             over on {resets} at 00:00 UTC. {raise}",
            self.cap.spend.words(),
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
                Cap { spend: Spend::Credits, period: Period::Day, limit: Cents::whole(500) },
                Cap { spend: Spend::Credits, period: Period::Month, limit: Cents::whole(5000) }
            ]
        );
        let both = caps("own_keys.monthly=20000,credits.daily=500,own_keys.daily=1000");
        let names: Vec<String> = both.iter().map(Cap::name).collect();
        assert_eq!(names, ["own_keys.monthly", "credits.daily", "own_keys.daily"]);
        for bad in [
            "credits.weekly=5",
            "own_keys=5",
            "own_keys.daily=1,own_keys.daily=2",
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
        let credits = |now| tightest(&caps, Spend::Credits, Some(&spending), now).unwrap();
        let (cap, left) = credits(datetime!(2026-12-05 11:00 UTC));
        assert_eq!((cap.period, left), (Period::Month, Cents::whole(200)));
        // The next day: today's spending is gone, the month's is not.
        let (cap, left) = credits(datetime!(2026-12-06 00:00:01 UTC));
        assert_eq!((cap.period, left), (Period::Month, Cents::whole(200)));
        // The next month: both start over.
        let (cap, left) = credits(datetime!(2027-01-01 00:00:01 UTC));
        assert_eq!((cap.period, left), (Period::Day, Cents::whole(500)));
        assert_eq!(tightest(&[], Spend::Credits, Some(&spending), datetime!(2026-12-05 11:00 UTC)), None);
        assert_eq!(tightest(&caps, Spend::OwnKeys, Some(&spending), datetime!(2026-12-05 11:00 UTC)), None);
    }

    #[test]
    fn an_own_key_cap_is_a_book_of_its_own_whose_balance_is_what_the_cap_leaves() {
        let caps = caps("credits.daily=500,own_keys.daily=1000,own_keys.monthly=3000");
        let now = datetime!(2026-12-05 11:00 UTC);
        let spending = Spending { at: now, today: Cents::whole(900), this_month: Cents::whole(1500) };
        let (reading, exceeded) = own_key_reading(&caps, Some(&spending), 42, now).unwrap();
        assert_eq!((reading.balance, reading.read_at), (Cents::whole(100), 42), "the day leaves 100 of 1000");
        assert_eq!(exceeded.cap_name(), "own_keys.daily");
        assert!(exceeded.to_string().contains("spending with your own API keys past your daily cap of 1000 cents"));
        assert!(exceeded.to_string().contains("your account page"), "{exceeded}");
        let credits_only = self::caps("credits.daily=500");
        assert_eq!(own_key_reading(&credits_only, Some(&spending), 42, now), None, "no own-key cap");
        let used: Vec<(String, Cents)> =
            cap_use(&caps, Spend::OwnKeys, Some(spending), Cents::whole(5), now).map(|(c, s)| (c.name(), s)).collect();
        assert_eq!(
            used,
            [("own_keys.daily".into(), Cents::whole(905)), ("own_keys.monthly".into(), Cents::whole(1505))]
        );
    }

    #[test]
    fn a_users_own_caps_replace_the_defaults_and_no_cap_passes_the_ceiling() {
        let policy = BudgetPolicy::with(vec![(
            SubscriptionTier::Free,
            TierBudget {
                defaults: caps("credits.daily=100"),
                ceilings: caps("credits.daily=1000,credits.monthly=5000,own_keys.monthly=8000"),
            },
        )]);
        let limits = |own: OwnCaps| {
            policy
                .effective(SubscriptionTier::Free, own)
                .iter()
                .map(|c| (c.name(), c.limit.ceil_whole()))
                .collect::<Vec<_>>()
        };
        let named = |pairs: &[(&str, i64)]| pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect::<Vec<_>>();
        // The default, and the ceiling standing in for a missing default.
        assert_eq!(
            limits(OwnCaps::default()),
            named(&[("credits.daily", 100), ("credits.monthly", 5000), ("own_keys.monthly", 8000)])
        );
        let credits = PeriodCaps { daily: Some(Cents::whole(20)), monthly: Some(Cents::whole(9000)) };
        let own_keys = PeriodCaps { daily: Some(Cents::whole(300)), monthly: None };
        let own = OwnCaps { credits, own_keys };
        assert_eq!(
            limits(own),
            named(&[
                ("credits.daily", 20),
                ("credits.monthly", 5000),
                ("own_keys.daily", 300),
                ("own_keys.monthly", 8000)
            ]),
            "lower kept, higher held at the ceiling, each kind apart"
        );
        assert_eq!(
            policy.allows(SubscriptionTier::Free, own),
            Err(AboveCeiling { spend: Spend::Credits, period: Period::Month, ceiling: Cents::whole(5000) })
        );
        let too_much = PeriodCaps { daily: None, monthly: Some(Cents::whole(8001)) };
        let refused = policy.allows(SubscriptionTier::Free, OwnCaps { own_keys: too_much, ..OwnCaps::default() });
        assert_eq!(
            refused.unwrap_err().to_string(),
            "Your plan allows a monthly cap on spending with your own API keys of at most 8000 cents."
        );
        let within = PeriodCaps { daily: Some(Cents::whole(1000)), monthly: None };
        assert!(policy.allows(SubscriptionTier::Free, OwnCaps { credits: within, ..OwnCaps::default() }).is_ok());
        // A tier the operator left alone: only what the user set.
        assert_eq!(policy.effective(SubscriptionTier::Premium, OwnCaps::default()), []);
        assert_eq!(policy.effective(SubscriptionTier::Premium, own).len(), 3, "two on credits, one on own keys");
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
    fn credits_run_low_below_an_amount_or_a_share_of_the_last_grant_whichever_is_higher() {
        let both = LowBalance { below: Some(Cents::whole(100)), percent_of_last_grant: Some(10) };
        assert_eq!(both.threshold(Some(Cents::whole(50_000))), Some(Cents::whole(5_000)), "10% of a $500 grant");
        assert_eq!(both.threshold(Some(Cents::whole(500))), Some(Cents::whole(100)), "the amount is higher");
        assert_eq!(both.threshold(None), Some(Cents::whole(100)), "no grant yet: the amount");
        let share = LowBalance { below: None, percent_of_last_grant: Some(25) };
        assert_eq!(share.threshold(Some(Cents::whole(150))), Some(Cents::parse("37.5").unwrap()));
        assert_eq!(share.threshold(None), None);
        assert!(!LowBalance::default().is_set() && share.is_set());
    }

    #[test]
    fn a_refusal_names_its_cap_and_when_it_resets() {
        let cap = Cap { spend: Spend::Credits, period: Period::Day, limit: Cents::whole(500) };
        let exceeded = BudgetExceeded::new(cap, datetime!(2026-12-05 11:00 UTC));
        assert_eq!(exceeded.cap_name(), "credits.daily");
        assert_eq!(exceeded.resets_at, datetime!(2026-12-06 00:00 UTC));
        assert!(exceeded.to_string().contains("daily cap of 500 cents"), "{exceeded}");
        assert!(exceeded.to_string().contains("2026-12-06 at 00:00 UTC"), "{exceeded}");
    }
}
