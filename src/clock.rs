//! Wall-clock time for the job queue, passed in rather than read from the system, so a test can move through
//! hours of retries in milliseconds while the sockets, timeouts and providers around it run in real time
//! (tokio's paused clock cannot be used there: it would fire every network timeout at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::credit_book::UnixMillis;
use crate::domain::jobs::millis;

#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

/// A clock that only moves when told to.
#[derive(Default)]
struct Manual {
    now: AtomicI64,
    moved: Notify,
}

impl Clock {
    pub fn system() -> Clock {
        Clock(None)
    }

    /// Starts at `start` and moves only by [`Clock::advance`].
    pub fn manual(start: UnixMillis) -> Clock {
        Clock(Some(Arc::new(Manual { now: AtomicI64::new(start), moved: Notify::new() })))
    }

    pub fn now(&self) -> UnixMillis {
        match &self.0 {
            None => millis(std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default()),
            Some(manual) => manual.now.load(Ordering::SeqCst),
        }
    }

    /// Resolves once the clock reads `at` or later.
    pub async fn sleep_until(&self, at: UnixMillis) {
        match &self.0 {
            None => {
                let wait = u64::try_from(at.saturating_sub(self.now())).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Some(manual) => loop {
                let moved = manual.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if manual.now.load(Ordering::SeqCst) >= at {
                    return;
                }
                moved.await;
            },
        }
    }

    /// Moves a manual clock forward. The system clock cannot be moved: this panics, as only tests call it.
    pub fn advance(&self, by: Duration) {
        let manual = self.0.as_ref().expect("only a manual clock can be advanced");
        manual.now.fetch_add(millis(by), Ordering::SeqCst);
        manual.moved.notify_waiters();
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::System"),
            Some(_) => write!(f, "Clock::Manual({})", self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_only_when_moved_far_enough() {
        let clock = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(61_000).await }
        });
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
        assert_eq!(clock.now(), 61_000);
    }

    #[tokio::test]
    async fn the_system_clock_reads_wall_time() {
        let clock = Clock::system();
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        assert!((clock.now() - now).abs() < 5_000);
        clock.sleep_until(clock.now() - 1).await;
    }
}
