use std::time::Duration;

use byok_bridge::shared::claims::Claims;

use super::fresh;

/// A claim goes to one caller until it is released or expires; names are claimed apart; a claim here is
/// refused when repeated here, and the first claim everywhere after it is granted.
pub async fn suite(claims: &dyn Claims) {
    let minute = Duration::from_secs(60);
    let (incident, other) = (fresh("incident"), fresh("incident"));
    assert!(claims.claim(&incident, minute).await);
    assert!(!claims.claim(&incident, minute).await, "claimed once");
    assert!(claims.claim(&other, minute).await, "claims are per name");
    claims.release(&incident).await;
    assert!(claims.claim(&incident, minute).await, "released: claimed again");

    let short = fresh("short");
    assert!(claims.claim(&short, Duration::from_millis(50)).await);
    let mut expired = false;
    for _ in 0..100 {
        if claims.claim(&short, Duration::from_millis(50)).await {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(expired, "a claim lapses after its time to live");

    let webhook = fresh("webhook");
    assert!(claims.claim_here(&webhook, minute).await);
    assert!(claims.claim_everywhere(&webhook, minute).await, "nobody else has it");
    assert!(!claims.claim_here(&webhook, minute).await, "a repeat here is refused");
}
