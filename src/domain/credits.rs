use std::str::FromStr;

use super::money::Cents;

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

/// A balance derived from the ledger as grants + refunds - deductions, exact (see [`Cents`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct CreditBalance {
    cents: Cents,
}

impl CreditBalance {
    pub fn from_ledger_sums(sums: impl IntoIterator<Item = (TransactionType, Cents)>) -> Self {
        let cents = sums.into_iter().fold(Cents::ZERO, |acc, (kind, amount)| match kind {
            TransactionType::Grant | TransactionType::Refund => acc + amount,
            TransactionType::Deduction => acc - amount,
        });
        CreditBalance { cents }
    }

    pub fn cents(self) -> Cents {
        self.cents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransactionType::*;

    fn c(text: &str) -> Cents {
        Cents::parse(text).unwrap()
    }

    #[test]
    fn balance_is_grants_plus_refunds_minus_deductions_exactly() {
        let b = CreditBalance::from_ledger_sums([(Grant, c("1000")), (Deduction, c("250.000345")), (Refund, c("50"))]);
        assert_eq!(b.cents(), c("799.999655"));
    }

    #[test]
    fn an_overdrawn_or_empty_ledger_has_no_credits() {
        assert_eq!(CreditBalance::from_ledger_sums([]).cents(), Cents::ZERO);
        assert_eq!(CreditBalance::from_ledger_sums([(Grant, c("100")), (Deduction, c("100"))]).cents(), Cents::ZERO);
        assert_eq!(CreditBalance::from_ledger_sums([(Grant, c("1")), (Deduction, c("5"))]).cents(), c("-4"));
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let b = CreditBalance::from_ledger_sums([(Grant, Cents::MAX), (Refund, c("10"))]);
        assert_eq!(b.cents(), Cents::MAX);
    }
}
