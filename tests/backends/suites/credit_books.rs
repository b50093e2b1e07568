use std::collections::HashMap;
use std::sync::Arc;

use byok_bridge::domain::credit_book::{BookId, LedgerReading};
use byok_bridge::domain::money::Cents;
use byok_bridge::domain::user::UserId;
use byok_bridge::services::reservations::{CreditBooks, now_millis};
use uuid::Uuid;

/// A new user's credit book.
fn user() -> BookId {
    BookId::Credits(UserId::parse(&Uuid::new_v4().to_string()).unwrap())
}

fn reading(balance: i64) -> LedgerReading {
    LedgerReading { balance: Cents::whole(balance), read_at: now_millis() }
}

/// Holds count until settled or released, costs until Directus stores them, restored costs count again, and
/// concurrent reservations never exceed the balance.
pub async fn suite(books: Arc<dyn CreditBooks>) {
    let u = user();
    assert_eq!(books.available(u, reading(100)).await, Cents::whole(100), "nothing held: the balance");
    // The platform's book is a book of its own: what it holds is nobody's credits.
    let platform = books.reserve(BookId::Platform, reading(1_000), Cents::whole(90)).await.expect("within the cap");
    assert_eq!(books.available(u, reading(100)).await, Cents::whole(100), "the platform's hold is not the user's");
    books.release(BookId::Platform, platform).await;
    let hold = books.reserve(u, reading(100), Cents::whole(60)).await.expect("within the balance");
    let refused = books.reserve(u, reading(100), Cents::whole(60)).await.expect_err("beyond what is left");
    assert_eq!(refused.available, Cents::whole(40));
    books.extend(u, hold, Cents::whole(60)).await;
    assert_eq!(books.available(u, reading(100)).await, Cents::whole(40), "an extended hold still counts");
    let request = Uuid::new_v4();
    books.settle(u, Some(hold), request, Cents::whole(25)).await;
    assert_eq!(books.available(u, reading(100)).await, Cents::whole(75), "the cost replaces the hold");
    let before = reading(100);
    let stored_at = now_millis();
    books.stored(u, request, Cents::whole(25), stored_at).await;
    assert_eq!(books.available(u, before).await, Cents::whole(75), "a reading older than the storing lacks it");
    let after = LedgerReading { balance: Cents::whole(75), read_at: stored_at + 2_000 };
    assert_eq!(books.available(u, after).await, Cents::whole(75), "a newer reading has it: not counted twice");

    let v = user();
    let hold = books.reserve(v, reading(10), Cents::whole(10)).await.expect("the whole balance");
    books.release(v, hold).await;
    assert_eq!(books.available(v, reading(10)).await, Cents::whole(10), "released: nothing held");

    let w = user();
    books.restore(HashMap::from([(w, (Cents::whole(30), vec![Uuid::new_v4()]))])).await;
    assert_eq!(books.available(w, reading(100)).await, Cents::whole(70), "a restored cost counts again");

    let x = user();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let books = Arc::clone(&books);
            tokio::spawn(async move { books.reserve(x, reading(100), Cents::whole(30)).await.is_ok() })
        })
        .collect();
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 3, "30 cents at a time out of 100: three holds, whatever the interleaving");
}
