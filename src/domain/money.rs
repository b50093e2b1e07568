//! Money, exact: an amount in US cents held as a whole number of billionths of a cent. A 14-token call to
//! a cheap model costs a few thousandths of a cent; rounding it to a cent would charge thousands of times its
//! price, and summing floats would let a balance drift. Nine decimals hold every price-table rate times a
//! token count exactly (see [`crate::domain::pricing`]), so no call is ever rounded.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Billionths of a cent per cent.
const SCALE: i64 = 1_000_000_000;
/// Decimal places of [`Cents`]; Directus stores them as `decimal(20, 9)`.
pub const DECIMALS: usize = 9;

/// An amount in US cents, exact to a billionth of a cent. Arithmetic saturates instead of wrapping: at about
/// 9.2 billion cents (92 million dollars) per value that is unreachable for one user's ledger, and a
/// saturated value still compares the right way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a decimal amount of cents with at most 9 decimals")]
pub struct InvalidCents;

impl Cents {
    pub const ZERO: Cents = Cents(0);
    pub const MAX: Cents = Cents(i64::MAX);

    pub const fn from_nanos(nanos: i64) -> Cents {
        Cents(nanos)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    pub const fn whole(cents: i64) -> Cents {
        Cents(cents.saturating_mul(SCALE))
    }

    /// `count` units at `nanos_each` billionths of a cent: how token counts are priced, exactly.
    pub fn per_unit(count: u64, nanos_each: u64) -> Cents {
        let product = u128::from(count) * u128::from(nanos_each);
        Cents(i64::try_from(product).unwrap_or(i64::MAX))
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// For display and JSON numbers only; money is never computed in floating point.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// Parses `"12"`, `"-0.000345"`, `"1000.000000000"` exactly, without going through floating point.
    pub fn parse(text: &str) -> Result<Cents, InvalidCents> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || fraction.len() > DECIMALS
        {
            return Err(InvalidCents);
        }
        let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| InvalidCents)? };
        let scale = 10i64.pow((DECIMALS - fraction.len()) as u32);
        let fraction: i64 = if fraction.is_empty() { 0 } else { fraction.parse::<i64>().map_err(|_| InvalidCents)? };
        let nanos = whole.checked_mul(SCALE).and_then(|w| w.checked_add(fraction * scale)).ok_or(InvalidCents)?;
        Ok(Cents(if negative { -nanos } else { nanos }))
    }

    /// A decimal as Directus returns it: a number (SQLite stores decimals as floating point; rounded to the
    /// nearest billionth), a string (PostgreSQL's exact `numeric`), or null (an aggregate over no rows).
    pub fn from_json(value: &Value) -> Result<Cents, InvalidCents> {
        match value {
            Value::Null => Ok(Cents::ZERO),
            Value::String(text) => Cents::parse(text),
            Value::Number(number) => match number.as_i64() {
                Some(whole) => Ok(Cents::whole(whole)),
                None => {
                    let nanos = number.as_f64().ok_or(InvalidCents)? * SCALE as f64;
                    if nanos.is_finite() && nanos.abs() < i64::MAX as f64 {
                        Ok(Cents(nanos.round() as i64))
                    } else {
                        Err(InvalidCents)
                    }
                }
            },
            _ => Err(InvalidCents),
        }
    }

    /// The smallest whole number of cents that is at least this amount, for people-facing messages.
    pub fn ceil_whole(self) -> i64 {
        self.0.div_euclid(SCALE) + i64::from(self.0.rem_euclid(SCALE) != 0)
    }
}

impl fmt::Display for Cents {
    /// All nine decimals: the exact value, as Directus's `decimal(20, 9)` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = SCALE as u64;
        write!(f, "{sign}{}.{:0width$}", abs / scale, abs % scale, width = DECIMALS)
    }
}

impl fmt::Debug for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}¢")
    }
}

impl Add for Cents {
    type Output = Cents;
    fn add(self, other: Cents) -> Cents {
        Cents(self.0.saturating_add(other.0))
    }
}

impl Sub for Cents {
    type Output = Cents;
    fn sub(self, other: Cents) -> Cents {
        Cents(self.0.saturating_sub(other.0))
    }
}

impl Neg for Cents {
    type Output = Cents;
    fn neg(self) -> Cents {
        Cents(self.0.saturating_neg())
    }
}

impl AddAssign for Cents {
    fn add_assign(&mut self, other: Cents) {
        *self = *self + other;
    }
}

impl SubAssign for Cents {
    fn sub_assign(&mut self, other: Cents) {
        *self = *self - other;
    }
}

impl Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(iter: I) -> Cents {
        iter.fold(Cents::ZERO, Add::add)
    }
}

/// A JSON number in API answers: `1000` for whole cents, `12.000345` otherwise; what clients display.
/// Directus writes use [`Cents`]'s `Display` (an exact decimal string) instead.
impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 % SCALE == 0 {
            serializer.serialize_i64(self.0 / SCALE)
        } else {
            serializer.serialize_f64(self.as_f64())
        }
    }
}

/// Spooled records store the exact decimal string.
pub mod exact {
    use super::*;

    pub fn serialize<S: Serializer>(cents: &Cents, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(cents)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Cents, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Cents::from_json(&value).map_err(serde::de::Error::custom)
    }
}

/// [`exact`], for an amount that may be absent.
pub mod exact_option {
    use super::*;

    pub fn serialize<S: Serializer>(cents: &Option<Cents>, serializer: S) -> Result<S::Ok, S::Error> {
        match cents {
            Some(cents) => serializer.collect_str(cents),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cents>, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(None),
            value => Cents::from_json(&value).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_decimal_strings_exactly() {
        assert_eq!(Cents::parse("12"), Ok(Cents::whole(12)));
        assert_eq!(Cents::parse("0.000345"), Ok(Cents::from_nanos(345_000)));
        assert_eq!(Cents::parse("-1.5"), Ok(Cents::from_nanos(-1_500_000_000)));
        assert_eq!(Cents::parse("1000.000000001"), Ok(Cents::from_nanos(1_000_000_000_001)));
        assert_eq!(Cents::parse(".5"), Ok(Cents::from_nanos(500_000_000)));
        for bad in ["", "-", ".", "1.0000000001", "1e3", "0x10", "1.2.3", "abc", "99999999999999999999"] {
            assert_eq!(Cents::parse(bad), Err(InvalidCents), "{bad:?}");
        }
    }

    #[test]
    fn prints_every_decimal_and_round_trips() {
        for nanos in [0, 1, 345_000, -345_000, 1_000_000_000, -1, 123_456_789_012_345] {
            let cents = Cents::from_nanos(nanos);
            assert_eq!(Cents::parse(&cents.to_string()), Ok(cents), "{cents}");
        }
        assert_eq!(Cents::from_nanos(345_000).to_string(), "0.000345000");
        assert_eq!(Cents::from_nanos(-1).to_string(), "-0.000000001");
    }

    #[test]
    fn reads_what_directus_returns_from_sqlite_and_postgresql() {
        assert_eq!(Cents::from_json(&json!(null)), Ok(Cents::ZERO));
        assert_eq!(Cents::from_json(&json!(500)), Ok(Cents::whole(500)));
        assert_eq!(Cents::from_json(&json!(0.000345)), Ok(Cents::from_nanos(345_000)));
        assert_eq!(Cents::from_json(&json!("999.999655000")), Ok(Cents::from_nanos(999_999_655_000)));
        // A sum of floats a hair off the true value still lands on the right billionth.
        assert_eq!(Cents::from_json(&json!(0.1 + 0.2)), Ok(Cents::from_nanos(300_000_000)));
        assert!(Cents::from_json(&json!(true)).is_err());
        assert!(Cents::from_json(&json!(1e300)).is_err());
    }

    #[test]
    fn prices_token_counts_exactly_and_saturates() {
        // gpt-4o-mini input, $0.15 per million tokens, is 15,000 billionths of a cent per token.
        assert_eq!(Cents::per_unit(14, 15_000), Cents::from_nanos(210_000));
        assert_eq!(Cents::per_unit(u64::MAX, u64::MAX), Cents::MAX);
        assert_eq!(Cents::MAX + Cents::whole(1), Cents::MAX);
        assert_eq!(Cents::from_nanos(i64::MIN) - Cents::whole(1), Cents::from_nanos(i64::MIN));
    }

    #[test]
    fn answers_show_whole_cents_as_integers_and_fractions_as_decimals() {
        assert_eq!(serde_json::to_value(Cents::whole(1000)).unwrap(), json!(1000));
        assert_eq!(serde_json::to_value(Cents::from_nanos(345_000)).unwrap(), json!(0.000345));
        assert_eq!(serde_json::to_value(Cents::from_nanos(-2_500_000_000)).unwrap(), json!(-2.5));
    }

    #[test]
    fn whole_cents_round_up_for_messages() {
        assert_eq!(Cents::from_nanos(1).ceil_whole(), 1);
        assert_eq!(Cents::whole(95).ceil_whole(), 95);
        assert_eq!(Cents::from_nanos(-1).ceil_whole(), 0);
        assert_eq!(Cents::from_nanos(-1_500_000_000).ceil_whole(), -1);
    }
}
