//! Circuit breakers, one per credential: the platform's key for each provider, and each user's own key. After
//! repeated outages, calls on that credential fail fast for a cool-down instead of each waiting out its own
//! timeouts and retries. After the cool-down one call (the probe) tries again; the others keep failing fast
//! until it succeeds, so a provider coming back is not hit by every waiting call at once.
//!
//! Kept apart so one user cannot stop everyone: a user's key failing opens that key's circuit only, and the
//! platform key's circuit opens only on failures of calls made for at least two different users, so no single
//! account can open it with requests that make the provider fail. A provider-wide outage, seen by several
//! users, opens it after as many failures as ever.
//!
//! Only the provider's own failures count (5xx, overload, refused or broken connections, no response headers
//! in time for a stream). A non-streaming call that is still generating when its timeout hits says nothing
//! about the provider, so it never opens a circuit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::domain::provider::Provider;
use crate::domain::user::UserId;
use crate::{metrics, sync};

/// Users' key circuits are forgotten after this long without a call (a closed circuit has nothing to keep).
const USER_CIRCUIT_IDLE: Duration = Duration::from_secs(3_600);
const USER_CIRCUITS: u64 = 1_000_000;

/// Whose key a call uses: each has its own circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Circuit {
    Platform(Provider),
    UserKey(UserId, Provider),
}

impl Circuit {
    fn label(self) -> &'static str {
        match self {
            Circuit::Platform(_) => "platform",
            Circuit::UserKey(..) => "user",
        }
    }

    fn provider(self) -> Provider {
        match self {
            Circuit::Platform(provider) | Circuit::UserKey(_, provider) => provider,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// The first users whose calls make up the current run of failures (two are enough to tell).
    failing_for: Vec<UserId>,
    open_until: Option<Instant>,
    /// Half-open: the probe allowed through, and when. A probe that never reports back (its caller went
    /// away) frees the place after a cool-down.
    probe_since: Option<Instant>,
}

/// A provider's health as the platform key's circuit sees it, for the status endpoint.
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
    platform: Mutex<HashMap<Provider, State>>,
    /// Bounded, and idle ones forgotten: any number of users may have keys that fail.
    users: Cache<(UserId, Provider), Arc<Mutex<State>>>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        let users = Cache::builder().max_capacity(USER_CIRCUITS).time_to_idle(USER_CIRCUIT_IDLE).build();
        CircuitBreaker { threshold, cool_down, platform: Mutex::new(HashMap::new()), users }
    }

    /// Runs `f` on the circuit's state, if it has one (`create`: making one if not).
    fn with<R>(&self, circuit: Circuit, create: bool, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        match circuit {
            Circuit::Platform(provider) => {
                let mut states = sync::lock(&self.platform);
                let state = if create { Some(states.entry(provider).or_default()) } else { states.get_mut(&provider) };
                state.map(f)
            }
            Circuit::UserKey(user, provider) => {
                let state = if create {
                    Some(self.users.get_with((user, provider), Arc::default))
                } else {
                    self.users.get(&(user, provider))
                };
                state.map(|state| f(&mut sync::lock(&state)))
            }
        }
    }

    /// `Err(remaining)` while the circuit is open, or half-open with a probe already under way.
    pub fn admit(&self, circuit: Circuit, now: Instant) -> Result<Admission, Duration> {
        let cool_down = self.cool_down;
        self.with(circuit, false, |state| match state.open_until {
            None => Ok(Admission::Go),
            Some(until) if until > now => Err(until - now),
            Some(_) => match state.probe_since {
                Some(since) if now.saturating_duration_since(since) < cool_down => {
                    Err(cool_down - now.saturating_duration_since(since))
                }
                _ => {
                    state.probe_since = Some(now);
                    Ok(Admission::Probe)
                }
            },
        })
        .unwrap_or(Ok(Admission::Go))
    }

    /// The provider answered (even with an error about the request): the circuit closes.
    pub fn record_success(&self, circuit: Circuit) {
        let was_open = match circuit {
            Circuit::Platform(provider) => {
                sync::lock(&self.platform).remove(&provider).is_some_and(|s| s.open_until.is_some())
            }
            Circuit::UserKey(user, provider) => {
                self.users.remove(&(user, provider)).is_some_and(|s| sync::lock(&s).open_until.is_some())
            }
        };
        if was_open {
            tracing::info!(provider = %circuit.provider(), key = circuit.label(), "circuit closed");
        }
    }

    /// A call made for `user` on `circuit` met an outage.
    pub fn record_outage(&self, circuit: Circuit, user: UserId, now: Instant) {
        let (threshold, cool_down) = (self.threshold, self.cool_down);
        // One user alone cannot open the platform key's circuit for everyone (unless one failure is the bar).
        let users_needed = match circuit {
            Circuit::Platform(_) if threshold > 1 => 2,
            _ => 1,
        };
        self.with(circuit, true, |state| {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            if state.failing_for.len() < users_needed && !state.failing_for.contains(&user) {
                state.failing_for.push(user);
            }
            let probe_failed = state.probe_since.take().is_some();
            let enough = state.consecutive_failures >= threshold && state.failing_for.len() >= users_needed;
            if enough || probe_failed {
                if state.open_until.is_none_or(|until| until <= now) {
                    tracing::warn!(provider = %circuit.provider(), key = circuit.label(),
                        cool_down_secs = cool_down.as_secs(), "circuit opened");
                    metrics::circuit_opened(circuit.provider(), circuit.label());
                }
                state.open_until = Some(now + cool_down);
            }
        });
    }

    /// Whether platform calls to `provider` fail fast right now (open, or half-open with a probe under way).
    pub fn is_open(&self, provider: Provider, now: Instant) -> bool {
        self.with(Circuit::Platform(provider), false, |s| {
            s.open_until.is_some_and(|until| until > now || s.probe_since.is_some())
        })
        .unwrap_or(false)
    }

    /// The platform key's health now, and while `Down`, how long until calls are tried again.
    pub fn health(&self, provider: Provider, now: Instant) -> (ProviderHealth, Option<Duration>) {
        self.with(Circuit::Platform(provider), false, |state| match state.open_until {
            Some(until) if until > now => (ProviderHealth::Down, Some(until - now)),
            _ if state.consecutive_failures > 0 || state.open_until.is_some() => (ProviderHealth::Degraded, None),
            _ => (ProviderHealth::Operational, None),
        })
        .unwrap_or((ProviderHealth::Operational, None))
    }

    /// A call that neither succeeded nor showed an outage (a non-streaming call timing out mid-generation):
    /// a probe's place is freed for the next call.
    pub fn record_inconclusive(&self, circuit: Circuit) {
        self.with(circuit, false, |state| state.probe_since = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(30);
    fn openai() -> Circuit {
        Circuit::Platform(Provider::openai())
    }

    fn anthropic() -> Circuit {
        Circuit::Platform(Provider::anthropic())
    }

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap()
    }

    /// Failures seen by calls of different users, as in an outage.
    fn outage(breaker: &CircuitBreaker, circuit: Circuit, n: u32, at: Instant) {
        for _ in 0..n {
            breaker.record_outage(circuit, UserId::parse(&uuid::Uuid::new_v4().to_string()).unwrap(), at);
        }
    }

    #[test]
    fn opens_after_the_threshold_and_fails_fast() {
        let breaker = CircuitBreaker::new(3, COOL_DOWN);
        let t0 = Instant::now();
        outage(&breaker, openai(), 2, t0);
        assert_eq!(breaker.admit(openai(), t0), Ok(Admission::Go), "below the threshold");
        outage(&breaker, openai(), 1, t0);
        assert_eq!(breaker.admit(openai(), t0 + Duration::from_secs(10)), Err(Duration::from_secs(20)));
        assert_eq!(breaker.admit(anthropic(), t0), Ok(Admission::Go), "per provider");
        assert!(breaker.is_open(Provider::openai(), t0) && !breaker.is_open(Provider::anthropic(), t0));
    }

    #[test]
    fn health_follows_the_circuit() {
        let breaker = CircuitBreaker::new(2, COOL_DOWN);
        let t0 = Instant::now();
        assert_eq!(breaker.health(Provider::openai(), t0), (ProviderHealth::Operational, None));
        outage(&breaker, openai(), 1, t0);
        assert_eq!(breaker.health(Provider::openai(), t0), (ProviderHealth::Degraded, None), "one failure");
        outage(&breaker, openai(), 1, t0);
        assert_eq!(
            breaker.health(Provider::openai(), t0 + Duration::from_secs(10)),
            (ProviderHealth::Down, Some(Duration::from_secs(20)))
        );
        assert_eq!(
            breaker.health(Provider::openai(), t0 + COOL_DOWN).0,
            ProviderHealth::Degraded,
            "cool-down over: probing"
        );
        breaker.record_success(openai());
        assert_eq!(breaker.health(Provider::openai(), t0 + COOL_DOWN), (ProviderHealth::Operational, None));
        assert_eq!(breaker.health(Provider::anthropic(), t0).0, ProviderHealth::Operational);
    }

    #[test]
    fn after_the_cool_down_exactly_one_probe_goes_through() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let t0 = Instant::now();
        outage(&breaker, openai(), 1, t0);
        let later = t0 + COOL_DOWN + Duration::from_secs(1);
        let admitted: Vec<_> = (0..50).map(|_| breaker.admit(openai(), later)).collect();
        assert_eq!(admitted.iter().filter(|a| **a == Ok(Admission::Probe)).count(), 1);
        assert!(admitted[1..].iter().all(Result::is_err), "the rest keep failing fast");

        breaker.record_success(openai());
        assert_eq!(breaker.admit(openai(), later), Ok(Admission::Go), "the probe closed it");
    }

    #[test]
    fn a_failed_probe_reopens_the_circuit_for_a_whole_cool_down() {
        let breaker = CircuitBreaker::new(5, COOL_DOWN);
        let t0 = Instant::now();
        outage(&breaker, anthropic(), 5, t0);
        let later = t0 + COOL_DOWN;
        assert_eq!(breaker.admit(anthropic(), later), Ok(Admission::Probe));
        outage(&breaker, anthropic(), 1, later);
        assert_eq!(breaker.admit(anthropic(), later + Duration::from_secs(1)), Err(COOL_DOWN - Duration::from_secs(1)));
    }

    #[test]
    fn a_probe_that_never_reports_back_frees_its_place_after_a_cool_down() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let t0 = Instant::now();
        outage(&breaker, openai(), 1, t0);
        assert_eq!(breaker.admit(openai(), t0 + COOL_DOWN), Ok(Admission::Probe));
        assert!(breaker.admit(openai(), t0 + COOL_DOWN + Duration::from_secs(29)).is_err());
        assert_eq!(breaker.admit(openai(), t0 + 2 * COOL_DOWN), Ok(Admission::Probe));
        breaker.record_inconclusive(openai());
        assert_eq!(
            breaker.admit(openai(), t0 + 2 * COOL_DOWN),
            Ok(Admission::Probe),
            "an inconclusive probe frees it at once"
        );
    }

    #[test]
    fn one_users_failures_never_open_the_platform_circuit_nor_another_users() {
        let breaker = CircuitBreaker::new(5, COOL_DOWN);
        let t0 = Instant::now();
        for _ in 0..50 {
            breaker.record_outage(openai(), user(1), t0);
        }
        assert_eq!(breaker.admit(openai(), t0), Ok(Admission::Go), "one user alone cannot open the platform's circuit");
        let (mine, theirs) =
            (Circuit::UserKey(user(1), Provider::openai()), Circuit::UserKey(user(2), Provider::openai()));
        for _ in 0..5 {
            breaker.record_outage(mine, user(1), t0);
        }
        assert_eq!(breaker.admit(mine, t0), Err(COOL_DOWN), "the failing key's own circuit opened");
        assert_eq!(breaker.admit(theirs, t0), Ok(Admission::Go), "another user's key is not affected");
        assert_eq!(breaker.admit(openai(), t0), Ok(Admission::Go));
        assert_eq!(breaker.health(Provider::openai(), t0).0, ProviderHealth::Degraded, "failures seen, not down");

        // A second user's failure makes it an outage: the platform's circuit opens at once.
        breaker.record_outage(openai(), user(2), t0);
        assert_eq!(breaker.admit(openai(), t0), Err(COOL_DOWN));
    }

    #[test]
    fn an_outage_seen_by_several_users_opens_the_platform_circuit_after_the_usual_failures() {
        let breaker = CircuitBreaker::new(5, COOL_DOWN);
        let t0 = Instant::now();
        for n in 0..4 {
            breaker.record_outage(openai(), user(n % 2), t0);
        }
        assert_eq!(breaker.admit(openai(), t0), Ok(Admission::Go));
        breaker.record_outage(openai(), user(0), t0);
        assert_eq!(breaker.admit(openai(), t0), Err(COOL_DOWN), "the fifth failure opens it, as ever");
    }
}
