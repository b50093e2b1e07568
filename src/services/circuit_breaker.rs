//! Per-provider circuit breaker: after repeated outages, calls fail fast for a cool-down instead of each
//! waiting out its own timeouts and retries against a provider that is down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::provider::Provider;

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
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

    /// `Err(remaining)` while the circuit is open. After the cool-down calls go through again (half-open):
    /// one more failure re-opens it at once, a success closes it.
    pub fn check(&self, provider: Provider, now: Instant) -> Result<(), Duration> {
        let states = self.states.lock().expect("lock poisoned");
        match states.get(&provider).and_then(|s| s.open_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn record_success(&self, provider: Provider) {
        self.states.lock().expect("lock poisoned").remove(&provider);
    }

    pub fn record_outage(&self, provider: Provider, now: Instant) {
        let mut states = self.states.lock().expect("lock poisoned");
        let state = states.entry(provider).or_default();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.consecutive_failures >= self.threshold {
            if state.open_until.is_none_or(|until| until <= now) {
                tracing::warn!(%provider, cool_down_secs = self.cool_down.as_secs(), "provider circuit opened");
            }
            state.open_until = Some(now + self.cool_down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_fails_fast_then_half_opens() {
        let breaker = CircuitBreaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            breaker.record_outage(Provider::OpenAi, t0);
        }
        assert!(breaker.check(Provider::OpenAi, t0).is_ok(), "below the threshold");
        breaker.record_outage(Provider::OpenAi, t0);
        assert_eq!(breaker.check(Provider::OpenAi, t0 + Duration::from_secs(10)), Err(Duration::from_secs(20)));
        assert!(breaker.check(Provider::Anthropic, t0).is_ok(), "per provider");

        let later = t0 + Duration::from_secs(31);
        assert!(breaker.check(Provider::OpenAi, later).is_ok(), "half-open after the cool-down");
        breaker.record_outage(Provider::OpenAi, later);
        assert!(breaker.check(Provider::OpenAi, later).is_err(), "one more failure re-opens it");
        breaker.record_success(Provider::OpenAi);
        assert!(breaker.check(Provider::OpenAi, later).is_ok(), "a success closes it");
    }
}
