//! Where every decision about a user's request starts: the flags in force, the caller's profile, and the
//! credits they can spend now. The routing endpoint, the account endpoints and the gateway all read them here,
//! so they cannot disagree about a user.

use std::sync::Arc;

use time::OffsetDateTime;

use super::callers::{CallerDirectory, CallerError, CallerRead};
use super::flag_cache::{FlagCache, FlagState, FlagsUnavailable};
use super::reservations::Reservations;
use super::spending_alerts::SpendingAlerts;
use crate::domain::budget::{self, BudgetExceeded, BudgetPolicy, Cap, Spend};
use crate::domain::credit_book::LedgerReading;
use crate::domain::error_code::{Code, Coded};
use crate::domain::money::Cents;
use crate::domain::provider::Provider;
use crate::domain::routing::{self, Caller, Decision, Refusal};
use crate::domain::user::UserId;

/// The flags in force and an active caller: where every decision about a user's request starts.
pub struct CallContext {
    pub flags: FlagState,
    pub caller: CallerRead,
}

impl CallContext {
    /// What of this decision rests on data that may be out of date (Directus unreachable), for the
    /// `x-byok-stale` header; `None` when everything is fresh.
    pub fn staleness(&self) -> Option<&'static str> {
        match (self.flags.stale, self.caller.stale) {
            (false, false) => None,
            (true, false) => Some("flags"),
            (false, true) => Some("caller"),
            (true, true) => Some("flags, caller"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Flags(#[from] FlagsUnavailable),
    #[error(transparent)]
    Caller(#[from] CallerError),
    #[error("account is not active")]
    AccountInactive,
}

impl Coded for ContextError {
    fn code(&self) -> Code {
        match self {
            ContextError::Flags(error) => error.code(),
            ContextError::Caller(error) => error.code(),
            ContextError::AccountInactive => Code::AccountInactive,
        }
    }
}

/// A user's context and the credits they can spend now: the balance (or what their tightest spending cap
/// leaves, if less) less open holds and the costs the ledger does not show yet.
pub struct Standing {
    pub context: CallContext,
    pub available: Cents,
    /// What the user's credit book may spend from: the ledger reading, lowered to what the tightest cap leaves.
    pub credits: LedgerReading,
    /// The cap that leaves less than the balance: a shortfall of credits is this cap being reached.
    pub capped_by: Option<BudgetExceeded>,
    /// With caps on own-key spending: what the user's own-key book may spend from (what the tightest of them
    /// leaves), and that cap, the reason a shortfall is.
    pub own_keys: Option<(LedgerReading, BudgetExceeded)>,
    /// What the own-key book can spend now (its reading less holds and unstored costs).
    own_keys_available: Cents,
    /// The caps of the user's tier.
    caps: Vec<Cap>,
    vault_configured: bool,
}

impl Standing {
    /// The policy's view of the user for one call to `provider` that may cost up to `estimate`.
    pub fn view(&self, provider: Provider, estimate: Cents) -> Caller {
        self.context.caller.profile.for_provider(provider, self.available, estimate)
    }

    /// The routing matrix's answer for `view` (from [`Standing::view`], perhaps with less available since).
    pub fn decide(&self, view: &Caller, provider: Provider) -> Result<Decision, Refusal> {
        routing::decide(&self.context.flags.snapshot.flags, view, provider, self.vault_configured)
    }

    /// Each cap and what is spent of it now: the spending Directus shows in its period, plus the calls it does
    /// not show yet (held or settled since the reading). Nothing without a reading of the spending.
    pub fn cap_use(&self, now: OffsetDateTime) -> impl Iterator<Item = (Cap, Cents)> + '_ {
        let profile = &self.context.caller.profile;
        let pending = (self.credits.balance - self.available).max(Cents::ZERO);
        let own_pending = self
            .own_keys
            .map_or(Cents::ZERO, |(reading, _)| (reading.balance - self.own_keys_available).max(Cents::ZERO));
        budget::cap_use(&self.caps, Spend::Credits, profile.spending, pending, now).chain(budget::cap_use(
            &self.caps,
            Spend::OwnKeys,
            profile.own_key_spending,
            own_pending,
            now,
        ))
    }

    /// The cap behind a refusal for credit, when a cap (not the balance) left too little.
    pub fn cap_reached(&self, refusal: &Refusal) -> Option<BudgetExceeded> {
        match refusal {
            Refusal::InsufficientCredits { .. } | Refusal::NoCreditsOrKey { .. } => self.capped_by,
            _ => None,
        }
    }

    /// Who would pay a call to `provider` now, with no particular call in mind: credits count when there are any.
    pub fn decide_any_call(&self, provider: Provider) -> Result<Decision, Refusal> {
        self.decide(&self.view(provider, Cents::from_nanos(1)), provider)
    }
}

pub struct Standings {
    flags: Arc<FlagCache>,
    callers: Arc<CallerDirectory>,
    reservations: Arc<Reservations>,
    budgets: Arc<BudgetPolicy>,
    /// Tells users as their caps fill; `None` when no tier has caps.
    alerts: Option<SpendingAlerts>,
    vault_configured: bool,
}

impl Standings {
    pub fn new(
        flags: Arc<FlagCache>,
        callers: Arc<CallerDirectory>,
        reservations: Arc<Reservations>,
        budgets: Arc<BudgetPolicy>,
        alerts: Option<SpendingAlerts>,
        vault_configured: bool,
    ) -> Self {
        Standings { flags, callers, reservations, budgets, alerts, vault_configured }
    }

    /// The operator's budget policy: defaults and ceilings per tier.
    pub fn budgets(&self) -> &BudgetPolicy {
        &self.budgets
    }

    /// The shares of a cap at which users are notified; none without caps.
    pub fn alert_thresholds(&self) -> Vec<u8> {
        match &self.alerts {
            Some(alerts) if !self.budgets.is_empty() => alerts.thresholds(),
            _ => Vec::new(),
        }
    }

    /// A call of `user` on credits leaves `left` of them at most; `last_grant` is the credits they were last
    /// given (or bought).
    pub async fn credits_left(&self, user: UserId, left: Cents, last_grant: Option<Cents>) {
        if let Some(alerts) = &self.alerts {
            alerts.credits_left(user, left, last_grant).await;
        }
    }

    /// A call of `user` was refused at a cap: they hear the cap is reached, once per period.
    pub async fn refused_at_cap(&self, user: UserId, exceeded: BudgetExceeded) {
        if let Some(alerts) = &self.alerts {
            alerts.refused_at(user, exceeded.cap, OffsetDateTime::now_utc()).await;
        }
    }

    /// Reads the flags and the caller concurrently and refuses inactive accounts.
    pub async fn context(&self, user: UserId) -> Result<CallContext, ContextError> {
        let (flags, caller) = tokio::join!(self.flags.current(), self.callers.profile(user));
        let (flags, caller) = (flags?, caller?);
        if !caller.profile.active {
            return Err(ContextError::AccountInactive);
        }
        Ok(CallContext { flags, caller })
    }

    /// The context, and the credits the user can spend now.
    pub async fn of(&self, user: UserId) -> Result<Standing, ContextError> {
        let context = self.context(user).await?;
        let profile = &context.caller.profile;
        let now = OffsetDateTime::now_utc();
        let caps = self.budgets.effective(profile.tier, profile.own_caps);
        let (credits, capped_by) = budget::capped_reading(profile.ledger, &caps, profile.spending.as_ref(), now);
        let own_keys = budget::own_key_reading(&caps, profile.own_key_spending.as_ref(), profile.ledger.read_at, now);
        let (available, own_keys_available) = match own_keys {
            None => (self.reservations.available(user, credits).await, Cents::ZERO),
            Some((reading, _)) => tokio::join!(
                self.reservations.available(user, credits),
                self.reservations.own_keys_available(user, reading)
            ),
        };
        let standing = Standing {
            context,
            available,
            credits,
            capped_by,
            own_keys,
            own_keys_available,
            caps,
            vault_configured: self.vault_configured,
        };
        if let Some(alerts) = &self.alerts {
            alerts.check(user, standing.cap_use(now), now).await;
        }
        Ok(standing)
    }
}
