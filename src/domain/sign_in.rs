//! When a sign-in attempt may go to Directus. Directus counts every attempt at an account's password
//! (wrong or right: it counts first and forgets the count on success) and suspends the account when the count
//! reaches `auth_login_attempts` (25 by default); the count never expires by itself. So the sidecar counts the
//! same way, per account: every attempt it lets through counts, a success forgets them, and no more than
//! [`SignInPolicy::failures_per_account`] are let through in a row. Kept below Directus's limit, the sidecar can
//! never be the way an account gets suspended. After a few failures the attempts are also spaced out, so a
//! user who mistypes is slowed down long before the account is locked here.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::credit_book::UnixMillis;
use super::error_code::{Code, Coded};

/// Failures in a row that are let through at once; each later one waits twice as long as the one before.
pub const FREE_FAILURES: u32 = 3;
pub const FIRST_WAIT: Duration = Duration::from_secs(10);
pub const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInPolicy {
    /// Attempts in a row without a success that are let through to Directus, at most.
    pub failures_per_account: u32,
    /// Attempts from one client address per minute, whatever the account.
    pub attempts_per_address_per_minute: u32,
}

/// An account as the sidecar names it: a digest of the normalized e-mail address (Directus compares them
/// case-insensitively), so neither logs nor Redis keys carry addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account(String);

impl Account {
    pub fn of_email(email: &str) -> Account {
        let normalized = email.trim().to_lowercase();
        Account(hex::encode(&Sha256::digest(format!("byok-bridge sign-in\0{normalized}").as_bytes())[..16]))
    }

    /// An account as stored by [`Account::as_str`].
    pub fn from_stored(digest: String) -> Account {
        Account(digest)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an attempt is not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    /// Too many attempts from this client address; try again after the wait.
    Address { retry_after: Duration },
    /// Failures in a row on this account: the next attempt waits this long.
    Spacing { retry_after: Duration },
    /// As many failures in a row as the sidecar lets through: only a successful sign-in (to Directus directly,
    /// which the hook reports) opens the account here again.
    Locked,
}

/// When a client may look again at an account locked here: it opens once the user signs in elsewhere.
const LOCKED_RETRY: Duration = Duration::from_secs(3_600);

impl Coded for SignInRefusal {
    fn code(&self) -> Code {
        match self {
            SignInRefusal::Address { .. } | SignInRefusal::Spacing { .. } => Code::TooManySignInAttempts,
            SignInRefusal::Locked => Code::SignInLocked,
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            SignInRefusal::Address { .. } => {
                "Too many sign-in attempts from your network. Wait for the time in Retry-After, then try again.".into()
            }
            SignInRefusal::Spacing { .. } => {
                "Too many failed sign-ins for this account. Wait for the time in Retry-After, then try again.".into()
            }
            SignInRefusal::Locked => self.code().message().into(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SignInRefusal::Address { retry_after } | SignInRefusal::Spacing { retry_after } => Some(*retry_after),
            SignInRefusal::Locked => Some(LOCKED_RETRY),
        }
    }
}

/// An account's attempts in a row without a success, and when the last was let through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last_at: UnixMillis,
}

impl Failures {
    /// Whether one more attempt may go through at `now`; if so, it is counted.
    pub fn admit(&mut self, now: UnixMillis, policy: &SignInPolicy) -> Result<(), SignInRefusal> {
        if self.count >= policy.failures_per_account {
            return Err(SignInRefusal::Locked);
        }
        if let Some(wait) = spacing(self.count) {
            let ready = self.last_at.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            if now < ready {
                return Err(SignInRefusal::Spacing { retry_after: Duration::from_millis((ready - now) as u64) });
            }
        }
        self.count += 1;
        self.last_at = now;
        Ok(())
    }
}

/// The wait after `count` failures in a row before the next attempt, if any.
pub fn spacing(count: u32) -> Option<Duration> {
    let over = count.checked_sub(FREE_FAILURES)?;
    Some(FIRST_WAIT.saturating_mul(2u32.saturating_pow(over)).min(LONGEST_WAIT))
}

/// Where an address's attempts are counted: the address itself for IPv4, its /64 for IPv6 (one client
/// commonly holds a whole /64, and would otherwise get a fresh allowance per address).
pub fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let segments = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", segments[0], segments[1], segments[2], segments[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: SignInPolicy = SignInPolicy { failures_per_account: 10, attempts_per_address_per_minute: 10 };

    #[test]
    fn attempts_in_a_row_are_spaced_out_then_stop_below_directus_limit() {
        let mut failures = Failures::default();
        let mut now = 0;
        for _ in 0..FREE_FAILURES {
            assert_eq!(failures.admit(now, &POLICY), Ok(()));
        }
        assert_eq!(failures.admit(now, &POLICY), Err(SignInRefusal::Spacing { retry_after: FIRST_WAIT }));
        now += 10_000;
        assert_eq!(failures.admit(now, &POLICY), Ok(()));
        assert_eq!(
            failures.admit(now + 5_000, &POLICY),
            Err(SignInRefusal::Spacing { retry_after: Duration::from_secs(15) }),
            "twice as long after the fifth"
        );
        let mut let_through = failures.count;
        for _ in 0..1_000 {
            now += LONGEST_WAIT.as_millis() as i64;
            if failures.admit(now, &POLICY).is_ok() {
                let_through += 1;
            }
        }
        assert_eq!(let_through, 10, "never more than the policy's failures in a row, however long one waits");
        assert_eq!(failures.admit(now + 86_400_000, &POLICY), Err(SignInRefusal::Locked));
    }

    #[test]
    fn waits_double_up_to_a_ceiling() {
        assert_eq!(spacing(0), None);
        assert_eq!(spacing(2), None);
        assert_eq!(spacing(3), Some(Duration::from_secs(10)));
        assert_eq!(spacing(6), Some(Duration::from_secs(80)));
        assert_eq!(spacing(30), Some(LONGEST_WAIT));
    }

    #[test]
    fn accounts_are_named_by_their_normalized_address_and_never_carry_it() {
        let account = Account::of_email("  Pat@Example.com ");
        assert_eq!(account, Account::of_email("pat@example.com"));
        assert_ne!(account, Account::of_email("pat@example.org"));
        assert!(!account.as_str().contains("pat") && account.as_str().len() == 32);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        assert_eq!(address_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
