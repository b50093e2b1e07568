//! Sign-in attempts through the sidecar, throttled per client address and per account (the rules are in
//! [`crate::domain::sign_in`]), so nobody can get another user's account suspended by Directus through the
//! sidecar. An account's attempts in a row must outlive a restart, as Directus's count does: with
//! `REDIS_URL` they are kept in Redis (every replica counts into one), otherwise in the store, which also
//! counts while Redis is unreachable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use rusqlite::params;

use super::rate_limit::RateLimiter;
use super::reservations::now_millis;
use crate::domain::credit_book::UnixMillis;
use crate::domain::sign_in::{
    Account, FIRST_WAIT, FREE_FAILURES, Failures, LONGEST_WAIT, SignInPolicy, SignInRefusal, address_key,
};
use crate::shared::redis::{Redis, key};
use crate::store::{BatchWriter, Store, StoreError};
use crate::sync;

/// An account without an attempt for this long is forgotten (Directus keeps counting, so this is long).
const FORGET_AFTER: Duration = Duration::from_secs(365 * 86_400);

/// [`Failures::admit`], atomically in Redis on its clock. KEYS: the account's counts. ARGV: failures let
/// through in a row at most, free failures, first wait and longest wait (ms), time to live (ms). Returns 0 when
/// the attempt is let through (and counted), -1 when the account is locked, else the milliseconds to wait.
const ADMIT: &str = include_str!("lua/sign_in.lua");

pub struct SignInGuard {
    policy: SignInPolicy,
    addresses: RateLimiter<String>,
    /// The store's counts, kept in memory too (only this process writes them).
    local: Mutex<HashMap<Account, Failures>>,
    writer: BatchWriter,
    redis: Option<Arc<Redis>>,
    admit: Script,
}

impl SignInGuard {
    pub fn open(store: Arc<Store>, redis: Option<Arc<Redis>>, policy: SignInPolicy) -> Result<Self, StoreError> {
        let connection = store.connect()?;
        let since = now_millis() - FORGET_AFTER.as_millis() as i64;
        let local = {
            let mut statement = connection
                .prepare("SELECT account, count, last_at FROM sign_in_failures WHERE last_at > ?1")
                .map_err(|e| store.error(e))?;
            let rows = statement
                .query_map([since], |row| {
                    let (account, count, last_at): (String, u32, UnixMillis) = (row.get(0)?, row.get(1)?, row.get(2)?);
                    Ok((Account::from_stored(account), Failures { count, last_at }))
                })
                .map_err(|e| store.error(e))?;
            rows.collect::<Result<HashMap<_, _>, _>>().map_err(|e| store.error(e))?
        };
        Ok(SignInGuard {
            policy,
            addresses: RateLimiter::new("sign_in_address", redis.clone()),
            local: Mutex::new(local),
            writer: BatchWriter::start(store, "sign-in-writer")?,
            redis,
            admit: Script::new(ADMIT),
        })
    }

    /// Lets one attempt at `account` from `address` through, counted, or says why not.
    pub async fn admit(&self, account: &Account, address: IpAddr) -> Result<(), SignInRefusal> {
        self.addresses
            .acquire(address_key(address), self.policy.attempts_per_address_per_minute)
            .await
            .map_err(|retry_after| SignInRefusal::Address { retry_after })?;
        if let Some(redis) = &self.redis {
            let key = key(&["sign_in", account.as_str()]);
            let answer = redis
                .run(|mut c| async move {
                    self.admit
                        .key(key)
                        .arg(self.policy.failures_per_account)
                        .arg(FREE_FAILURES)
                        .arg(FIRST_WAIT.as_millis() as u64)
                        .arg(LONGEST_WAIT.as_millis() as u64)
                        .arg(FORGET_AFTER.as_millis() as u64)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            match answer {
                Ok(0) => return Ok(()),
                Ok(wait) if wait > 0 => {
                    return Err(SignInRefusal::Spacing { retry_after: Duration::from_millis(wait as u64) });
                }
                Ok(_) => return Err(SignInRefusal::Locked),
                Err(error) => tracing::warn!(%error, "cannot count a sign-in attempt in Redis; counting it here"),
            }
        }
        let counted = {
            let mut local = sync::lock(&self.local);
            let failures = local.entry(account.clone()).or_default();
            failures.admit(now_millis(), &self.policy)?;
            *failures
        };
        // On disk before the attempt goes out: a restart right after must still count it.
        self.write(account, Some(counted)).await;
        Ok(())
    }

    /// The account signed in (through the sidecar, or to Directus directly as the hook reports): Directus
    /// forgot its count, and so does the sidecar.
    pub async fn succeeded(&self, account: &Account) {
        if let Some(redis) = &self.redis {
            let key = key(&["sign_in", account.as_str()]);
            let forgotten =
                redis.run(|mut c| async move { redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await }).await;
            if let Err(error) = forgotten {
                tracing::warn!(%error, "cannot clear an account's sign-in attempts in Redis");
            }
        }
        if sync::lock(&self.local).remove(account).is_some() {
            self.write(account, None).await;
        }
    }

    async fn write(&self, account: &Account, failures: Option<Failures>) {
        let stored = account.as_str().to_owned();
        let written = self
            .writer
            .write(move |t| match failures {
                Some(Failures { count, last_at }) => t
                    .prepare_cached(
                        "INSERT INTO sign_in_failures (account, count, last_at) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (account) DO UPDATE SET count = excluded.count, last_at = excluded.last_at",
                    )?
                    .execute(params![stored, count, last_at]),
                None => t.prepare_cached("DELETE FROM sign_in_failures WHERE account = ?1")?.execute([stored]),
            })
            .await;
        if let Err(error) = written {
            tracing::error!(%error, "cannot store an account's sign-in attempts; counted in memory only");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::TempDir;

    const POLICY: SignInPolicy = SignInPolicy { failures_per_account: 4, attempts_per_address_per_minute: 1_000 };

    #[tokio::test]
    async fn an_accounts_attempts_outlive_a_restart_and_a_success_forgets_them() {
        let dir = TempDir::new();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let account = Account::of_email("pat@example.com");
        let store = Arc::new(Store::open(&dir.store_path()).unwrap());
        let guard = SignInGuard::open(Arc::clone(&store), None, POLICY).unwrap();
        for _ in 0..3 {
            guard.admit(&account, address).await.unwrap();
        }
        // A new guard knows only what is on disk.
        drop(guard);
        let guard = SignInGuard::open(Arc::clone(&store), None, POLICY).unwrap();
        assert!(matches!(guard.admit(&account, address).await, Err(SignInRefusal::Spacing { .. })));
        guard.succeeded(&account).await;
        drop(guard);
        let guard = SignInGuard::open(store, None, POLICY).unwrap();
        assert_eq!(guard.admit(&account, address).await, Ok(()), "forgotten on disk too");
    }
}
