//! Per-provider circuit breaker: after repeated outages, calls fail fast for a cool-down instead of each
//! waiting out its own timeouts and retries against a provider that is down. After the cool-down one call
//! (the probe) tries the provider; the others keep failing fast until it succeeds, so a provider coming back
//! is not hit by every waiting call at once.
//!
//! Only the provider's own failures count (5xx, overload, refused or broken connections, no response headers
//! in time for a stream). A non-streaming call that is still generating when its timeout hits says nothing
//! about the provider, so it never opens the circuit for everyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::provider::Provider;
use crate::{metrics, sync};

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// Half-open: the probe allowed through, and when. A probe that never reports back (its caller went
    /// away) frees the place after a cool-down.
    probe_since: Option<Instant>,
}

/// A provider's health as the breaker sees it, for the status endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderHealth {
    Operational,
    /// Recent outages, or the circuit is letting a probe through to see whether the provider is back.
    Degraded,
    /// Calls fail fast until the cool-down ends.
    Down,
}

/// May this call go to the provider?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed.
    Go,
    /// The circuit was open and this call is the one that finds out whether the provider is back.
    Probe,
}

pub struct CircuitBreaker {
    threshold: u32,
    cool_down: Duration,
    states: Mutex<HashMap<Provider, State>>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        CircuitBreaker { threshold, cool_down, states: Mutex::new(HashMap::new()) }
    }

    /// `Err(remaining)` while the circuit is open, or half-open with a probe already under way.
    pub fn admit(&self, provider: Provider, now: Instant) -> Result<Admission, Duration> {
        let mut states = sync::lock(&self.states);
        let Some(state) = states.get_mut(&provider) else { return Ok(Admission::Go) };
        match state.open_until {
            None => Ok(Admission::Go),
            Some(until) if until > now => Err(until - now),
            Some(_) => match state.probe_since {
                Some(since) if now.saturating_duration_since(since) < self.cool_down => {
                    Err(self.cool_down - now.saturating_duration_since(since))
                }
                _ => {
                    state.probe_since = Some(now);
                    Ok(Admission::Probe)
                }
            },
        }
    }

    /// The provider answered (even with an error about the request): the circuit closes.
    pub fn record_success(&self, provider: Provider) {
        if sync::lock(&self.states).remove(&provider).is_some_and(|s| s.open_until.is_some()) {
            tracing::info!(%provider, "provider circuit closed");
        }
    }

    pub fn record_outage(&self, provider: Provider, now: Instant) {
        let mut states = sync::lock(&self.states);
        let state = states.entry(provider).or_default();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let probe_failed = state.probe_since.take().is_some();
        if state.consecutive_failures >= self.threshold || probe_failed {
            if state.open_until.is_none_or(|until| until <= now) {
                tracing::warn!(%provider, cool_down_secs = self.cool_down.as_secs(), "provider circuit opened");
                metrics::circuit_opened(provider);
            }
            state.open_until = Some(now + self.cool_down);
        }
    }

    /// Whether calls to `provider` fail fast right now (open, or half-open with a probe under way).
    pub fn is_open(&self, provider: Provider, now: Instant) -> bool {
        let states = sync::lock(&self.states);
        states.get(&provider).is_some_and(|s| s.open_until.is_some_and(|until| until > now || s.probe_since.is_some()))
    }

    /// Health now, and while `Down`, how long until calls are tried again.
    pub fn health(&self, provider: Provider, now: Instant) -> (ProviderHealth, Option<Duration>) {
        let states = sync::lock(&self.states);
        match states.get(&provider) {
            None => (ProviderHealth::Operational, None),
            Some(State { open_until: Some(until), .. }) if *until > now => (ProviderHealth::Down, Some(*until - now)),
            Some(state) if state.consecutive_failures > 0 || state.open_until.is_some() => {
                (ProviderHealth::Degraded, None)
            }
            Some(_) => (ProviderHealth::Operational, None),
        }
    }

    /// A call that neither succeeded nor showed an outage (a non-streaming call timing out mid-generation):
    /// a probe's place is freed for the next call.
    pub fn record_inconclusive(&self, provider: Provider) {
        if let Some(state) = sync::lock(&self.states).get_mut(&provider) {
            state.probe_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(30);

    #[test]
    fn opens_after_the_threshold_and_fails_fast() {
        let breaker = CircuitBreaker::new(3, COOL_DOWN);
        let t0 = Instant::now();
        for _ in 0..2 {
            breaker.record_outage(Provider::OpenAi, t0);
        }
        assert_eq!(breaker.admit(Provider::OpenAi, t0), Ok(Admission::Go), "below the threshold");
        breaker.record_outage(Provider::OpenAi, t0);
        assert_eq!(breaker.admit(Provider::OpenAi, t0 + Duration::from_secs(10)), Err(Duration::from_secs(20)));
        assert_eq!(breaker.admit(Provider::Anthropic, t0), Ok(Admission::Go), "per provider");
        assert!(breaker.is_open(Provider::OpenAi, t0) && !breaker.is_open(Provider::Anthropic, t0));
    }

    #[test]
    fn health_follows_the_circuit() {
        let breaker = CircuitBreaker::new(2, COOL_DOWN);
        let t0 = Instant::now();
        assert_eq!(breaker.health(Provider::OpenAi, t0), (ProviderHealth::Operational, None));
        breaker.record_outage(Provider::OpenAi, t0);
        assert_eq!(breaker.health(Provider::OpenAi, t0), (ProviderHealth::Degraded, None), "one failure");
        breaker.record_outage(Provider::OpenAi, t0);
        assert_eq!(
            breaker.health(Provider::OpenAi, t0 + Duration::from_secs(10)),
            (ProviderHealth::Down, Some(Duration::from_secs(20)))
        );
        assert_eq!(
            breaker.health(Provider::OpenAi, t0 + COOL_DOWN).0,
            ProviderHealth::Degraded,
            "cool-down over: probing"
        );
        breaker.record_success(Provider::OpenAi);
        assert_eq!(breaker.health(Provider::OpenAi, t0 + COOL_DOWN), (ProviderHealth::Operational, None));
        assert_eq!(breaker.health(Provider::Anthropic, t0).0, ProviderHealth::Operational);
    }

    #[test]
    fn after_the_cool_down_exactly_one_probe_goes_through() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let t0 = Instant::now();
        breaker.record_outage(Provider::OpenAi, t0);
        let later = t0 + COOL_DOWN + Duration::from_secs(1);
        let admitted: Vec<_> = (0..50).map(|_| breaker.admit(Provider::OpenAi, later)).collect();
        assert_eq!(admitted.iter().filter(|a| **a == Ok(Admission::Probe)).count(), 1);
        assert!(admitted[1..].iter().all(Result::is_err), "the rest keep failing fast");

        breaker.record_success(Provider::OpenAi);
        assert_eq!(breaker.admit(Provider::OpenAi, later), Ok(Admission::Go), "the probe closed it");
    }

    #[test]
    fn a_failed_probe_reopens_the_circuit_for_a_whole_cool_down() {
        let breaker = CircuitBreaker::new(5, COOL_DOWN);
        let t0 = Instant::now();
        for _ in 0..5 {
            breaker.record_outage(Provider::Anthropic, t0);
        }
        let later = t0 + COOL_DOWN;
        assert_eq!(breaker.admit(Provider::Anthropic, later), Ok(Admission::Probe));
        breaker.record_outage(Provider::Anthropic, later);
        assert_eq!(
            breaker.admit(Provider::Anthropic, later + Duration::from_secs(1)),
            Err(COOL_DOWN - Duration::from_secs(1))
        );
    }

    #[test]
    fn a_probe_that_never_reports_back_frees_its_place_after_a_cool_down() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let t0 = Instant::now();
        breaker.record_outage(Provider::OpenAi, t0);
        assert_eq!(breaker.admit(Provider::OpenAi, t0 + COOL_DOWN), Ok(Admission::Probe));
        assert!(breaker.admit(Provider::OpenAi, t0 + COOL_DOWN + Duration::from_secs(29)).is_err());
        assert_eq!(breaker.admit(Provider::OpenAi, t0 + 2 * COOL_DOWN), Ok(Admission::Probe));
        breaker.record_inconclusive(Provider::OpenAi);
        assert_eq!(
            breaker.admit(Provider::OpenAi, t0 + 2 * COOL_DOWN),
            Ok(Admission::Probe),
            "an inconclusive probe frees it at once"
        );
    }
}
