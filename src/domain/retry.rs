//! When to try an upstream call again: exponential backoff with full jitter, overridden by what the
//! provider says (`Retry-After`, or its rate-limit reset headers).

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

/// Full jitter (a uniformly random wait up to the exponential bound) spreads retries from many callers.
/// `unit` is a random number in [0, 1).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let bound = base.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(cap);
    bound.mul_f64(unit.clamp(0.0, 1.0))
}

/// The wait a provider asked for. `header` looks a response header up by (lowercase) name.
pub fn requested_wait<'a>(header: impl Fn(&str) -> Option<&'a str>, now: OffsetDateTime) -> Option<Duration> {
    if let Some(value) = header("retry-after") {
        let value = value.trim();
        if let Ok(secs) = value.parse::<f64>() {
            return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)));
        }
        // HTTP-date form, e.g. "Wed, 21 Oct 2026 07:28:00 GMT".
        if let Ok(at) = OffsetDateTime::parse(&value.replace("GMT", "+0000"), &Rfc2822) {
            return Some(until(at, now));
        }
    }
    // Anthropic: RFC 3339 instants; OpenAI: durations such as "1s", "6m0s", "250ms".
    for name in ["anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset"] {
        if let Some(at) = header(name).and_then(|v| OffsetDateTime::parse(v.trim(), &Rfc3339).ok()) {
            return Some(until(at, now));
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"].iter().filter_map(|n| header(n)).find_map(go_duration)
}

fn until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
}

/// Parses Go-style durations as OpenAI sends them: "1s", "6m0s", "1h2m3.5s", "250ms".
fn go_duration(raw: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = raw.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(split);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += number
            * match unit {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return None,
            };
        rest = next;
    }
    Some(Duration::from_secs_f64(total.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use time::macros::datetime;

    use super::*;

    fn wait(headers: &[(&str, &str)]) -> Option<Duration> {
        let map: HashMap<&str, &str> = headers.iter().copied().collect();
        requested_wait(|name| map.get(name).copied(), datetime!(2026-11-23 12:00:00 UTC))
    }

    #[test]
    fn full_jitter_stays_within_the_exponential_bound_and_the_cap() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(backoff(0, base, cap, 0.999_999), Duration::from_millis(100).mul_f64(0.999_999));
        assert_eq!(backoff(3, base, cap, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(10, base, cap, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(40, base, cap, 0.0), Duration::ZERO);
    }

    #[test]
    fn honours_retry_after_in_both_forms() {
        assert_eq!(wait(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(wait(&[("retry-after", "0.5")]), Some(Duration::from_millis(500)));
        assert_eq!(wait(&[("retry-after", "Mon, 23 Nov 2026 12:00:07 GMT")]), Some(Duration::from_secs(7)));
        assert_eq!(wait(&[("retry-after", "-1")]), None);
    }

    #[test]
    fn falls_back_to_the_providers_reset_headers() {
        assert_eq!(
            wait(&[("anthropic-ratelimit-requests-reset", "2026-11-23T12:00:04Z")]),
            Some(Duration::from_secs(4))
        );
        assert_eq!(wait(&[("x-ratelimit-reset-requests", "6m0s")]), Some(Duration::from_secs(360)));
        assert_eq!(wait(&[("x-ratelimit-reset-tokens", "250ms")]), Some(Duration::from_millis(250)));
        assert_eq!(wait(&[("x-ratelimit-reset-requests", "soon")]), None);
        assert_eq!(wait(&[]), None);
    }
}
