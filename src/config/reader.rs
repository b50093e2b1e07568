//! Reading variables: every problem is collected with the variable's name and its fix, never its value.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;

use crate::domain::money::Cents;

/// One misconfigured variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub var: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}. {}", self.var, self.problem, self.fix)
    }
}

/// Every problem found, so an operator fixes them all in one go instead of one restart per variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<ConfigProblem>);

/// An absolute http(s) URL with a host.
pub(super) fn http_url(raw: &str) -> Result<Url, &'static str> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err("is not an http(s) URL"),
    }
}

/// Collects problems while reading variables, so parsing continues past the first bad one.
pub(super) struct Reader<F> {
    pub(super) lookup: F,
    pub(super) problems: Vec<ConfigProblem>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// A set, non-blank value; blank counts as unset.
    pub(super) fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var).filter(|v| !v.trim().is_empty())
    }

    pub(super) fn problem(&mut self, var: &'static str, problem: impl Into<String>, fix: &'static str) {
        self.problems.push(ConfigProblem { var, problem: problem.into(), fix });
    }

    pub(super) fn required(&mut self, var: &'static str, fix: &'static str) -> Option<String> {
        let value = self.get(var);
        if value.is_none() {
            self.problem(var, "is not set", fix);
        }
        value
    }

    pub(super) fn parsed<T, E: fmt::Display>(
        &mut self,
        var: &'static str,
        default: T,
        fix: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> T {
        match self.get(var) {
            None => default,
            Some(raw) => parse(raw.trim()).unwrap_or_else(|e| {
                self.problem(var, e.to_string(), fix);
                default
            }),
        }
    }

    /// An http(s) URL with a default; only the operator sets these, never a request (no SSRF).
    pub(super) fn url(&mut self, var: &'static str, default: &str) -> Url {
        let fallback = Url::parse(default).expect("defaults are valid URLs");
        self.parsed(var, fallback, "Use an http(s) URL, e.g. the provider's API base", http_url)
    }

    /// An optional http(s) URL, set only by the operator.
    pub(super) fn optional_url(&mut self, var: &'static str, fix: &'static str) -> Option<Url> {
        self.parsed(var, None, fix, |raw| http_url(raw).map(Some))
    }

    /// A whole number within `range` (of `unit`, when it has one: "seconds", "bytes"); the problem names the
    /// range, `fix` a good value.
    pub(super) fn whole<T>(
        &mut self,
        var: &'static str,
        default: T,
        range: RangeInclusive<T>,
        unit: &str,
        fix: &'static str,
    ) -> T
    where
        T: FromStr + PartialOrd + fmt::Display,
    {
        let what = if unit.is_empty() { "a whole number".to_owned() } else { format!("a whole number of {unit}") };
        self.parsed(var, default, fix, |raw| match raw.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(format!("must be {what} from {} to {}", range.start(), range.end())),
        })
    }

    /// `true`/`1` or `false`/`0`.
    pub(super) fn boolean(&mut self, var: &'static str, default: bool, fix: &'static str) -> bool {
        self.parsed(var, default, fix, |raw| match raw {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("must be true or false"),
        })
    }

    /// An optional amount of whole cents, at least one.
    pub(super) fn cents(&mut self, var: &'static str, fix: &'static str) -> Option<Cents> {
        self.parsed(var, None, fix, |raw| match raw.parse::<i64>() {
            Ok(cents) if (1..=1_000_000_000_000).contains(&cents) => Ok(Some(Cents::whole(cents))),
            _ => Err("must be a whole number of cents from 1 to 1000000000000"),
        })
    }

    pub(super) fn seconds(&mut self, var: &'static str, default: u64, range: RangeInclusive<u64>) -> Duration {
        Duration::from_secs(self.whole(var, default, range, "seconds", "Use a whole number of seconds, e.g. 300"))
    }

    pub(super) fn bytes(
        &mut self,
        var: &'static str,
        default: u64,
        range: RangeInclusive<u64>,
        fix: &'static str,
    ) -> u64 {
        self.whole(var, default, range, "bytes", fix)
    }
}
