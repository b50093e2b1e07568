use std::time::Duration;

use byok_bridge::services::rate_limit::RateLimit;

use super::fresh;

/// `per_minute` at once, then a refusal that says when the next request fits; every key on its own.
pub async fn suite(limiter: &dyn RateLimit<String>) {
    let (first, second) = (fresh("user"), fresh("user"));
    for i in 0..6 {
        assert_eq!(limiter.acquire(&first, 6).await, Ok(()), "request {i} of the first 6");
    }
    let wait = limiter.acquire(&first, 6).await.expect_err("the 7th of 6 a minute");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(10), "{wait:?}: one every 10 s refills");
    assert_eq!(limiter.acquire(&second, 6).await, Ok(()), "another key has an allowance of its own");
    let generous = fresh("user");
    for i in 0..100 {
        assert_eq!(limiter.acquire(&generous, 100).await, Ok(()), "request {i} of 100 a minute");
    }
    assert!(limiter.acquire(&generous, 100).await.is_err());
}
