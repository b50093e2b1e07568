//! Tells users as their spending caps fill: at each threshold of `BUDGET_ALERT_PERCENTS` (50, 80 and 100% by
//! default), once per cap and period, across replicas, as a Directus notification (and an e-mail where the
//! user has them on). Checked whenever the user's standing is read, that is as each of their calls starts;
//! the first call refused at a cap counts as reaching it. And, with `LOW_BALANCE_ALERT_CENTS`, when a call on
//! credits leaves less than that, once a day.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::notifier::Notifier;
use crate::domain::budget::{AlertThresholds, Cap, LowBalance};
use crate::domain::money::Cents;
use crate::domain::user::UserId;
use crate::shared::claims::Claims;

pub struct SpendingAlerts {
    thresholds: AlertThresholds,
    /// `LOW_BALANCE_ALERT_CENTS`, `LOW_BALANCE_ALERT_PERCENT`: when a user spending credits hears their balance
    /// is running low.
    low_balance: LowBalance,
    notifier: Arc<Notifier>,
    claims: Arc<dyn Claims>,
}

/// A user hears their credits run low at most once a day.
const LOW_BALANCE_EVERY: Duration = Duration::from_secs(86_400);

impl SpendingAlerts {
    pub fn new(
        thresholds: AlertThresholds,
        low_balance: LowBalance,
        notifier: Arc<Notifier>,
        claims: Arc<dyn Claims>,
    ) -> Self {
        SpendingAlerts { thresholds, low_balance, notifier, claims }
    }

    /// A call on credits leaves `left` of them: below the threshold (given the user's `last_grant`), the user
    /// hears it, once a day at most.
    pub async fn credits_left(&self, user: UserId, left: Cents, last_grant: Option<Cents>) {
        let Some(threshold) = self.low_balance.threshold(last_grant).filter(|threshold| left < *threshold) else {
            return;
        };
        let claim = format!("alert:{user}:low_balance");
        if self.first(&claim, LOW_BALANCE_EVERY).await {
            crate::metrics::low_balance_alert();
            self.notifier.low_balance(user, left, threshold);
        }
    }

    pub fn thresholds(&self) -> Vec<u8> {
        self.thresholds.percents().to_vec()
    }

    /// For each cap and what is spent of it now: sends, in the background, the notice for the highest
    /// threshold newly reached; the lower ones reached with it are spent too, so a user who jumps from 40% to
    /// 90% hears once, of 80%.
    pub async fn check(&self, user: UserId, caps: impl Iterator<Item = (Cap, Cents)>, now: OffsetDateTime) {
        for (cap, spent) in caps {
            let period = cap.period.start(now).unix_timestamp();
            // A claim outlives its period by an hour, so a replica's late clock cannot send it again.
            let ttl = (cap.period.resets_at(now) - now).unsigned_abs() + Duration::from_secs(3_600);
            let mut newest = None;
            for percent in self.thresholds.reached(spent, cap.limit) {
                let claim = format!("alert:{user}:{}:{period}:{percent}", cap.name());
                if self.first(&claim, ttl).await {
                    newest = Some(percent);
                }
            }
            if let Some(percent) = newest {
                crate::metrics::spending_alert(cap.spend, cap.period, percent);
                self.notifier.spending_alert(user, cap, percent, spent, now);
            }
        }
    }

    /// True for the one check, on any replica, that claims `claim` first; this replica's own claim answers its
    /// repeats without asking Redis.
    async fn first(&self, claim: &str, ttl: Duration) -> bool {
        self.claims.claim_here(claim, ttl).await && self.claims.claim_everywhere(claim, ttl).await
    }

    /// A call was refused at `cap`: for the user the cap is reached, whatever share of it is spent.
    pub async fn refused_at(&self, user: UserId, cap: Cap, now: OffsetDateTime) {
        self.check(user, std::iter::once((cap, cap.limit)), now).await;
    }
}
