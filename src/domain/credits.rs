use std::str::FromStr;

/// Kinds of rows in the `credit_transactions` ledger. There is no stored balance: it is always derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionType {
    Grant,
    Deduction,
    Refund,
}

impl FromStr for TransactionType {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grant" => Ok(TransactionType::Grant),
            "deduction" => Ok(TransactionType::Deduction),
            "refund" => Ok(TransactionType::Refund),
            _ => Err(()),
        }
    }
}

/// A balance in whole cents, derived from the ledger as grants + refunds - deductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct CreditBalance {
    cents: i64,
}

impl CreditBalance {
    pub fn from_ledger_sums(sums: impl IntoIterator<Item = (TransactionType, i64)>) -> Self {
        let cents = sums.into_iter().fold(0i64, |acc, (kind, amount)| match kind {
            TransactionType::Grant | TransactionType::Refund => acc.saturating_add(amount),
            TransactionType::Deduction => acc.saturating_sub(amount),
        });
        CreditBalance { cents }
    }

    pub fn cents(self) -> i64 {
        self.cents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionType::*;

    #[test]
    fn balance_is_grants_plus_refunds_minus_deductions() {
        let b = CreditBalance::from_ledger_sums([(Grant, 1000), (Deduction, 250), (Refund, 50)]);
        assert_eq!(b.cents(), 800);
    }

    #[test]
    fn an_overdrawn_or_empty_ledger_has_no_credits() {
        assert_eq!(CreditBalance::from_ledger_sums([]).cents(), 0);
        assert_eq!(CreditBalance::from_ledger_sums([(Grant, 100), (Deduction, 100)]).cents(), 0);
        assert_eq!(CreditBalance::from_ledger_sums([(Grant, 1), (Deduction, 5)]).cents(), -4);
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let b = CreditBalance::from_ledger_sums([(Grant, i64::MAX), (Refund, 10)]);
        assert_eq!(b.cents(), i64::MAX);
    }
}
