use std::sync::{Arc, Mutex};
use std::time::Duration;

use byok_bridge::domain::user::UserId;
use byok_bridge::shared::bus::{Bus, Event};
use uuid::Uuid;

/// What each replica heard, in order, leaving out the reload notices a (re)subscription may add.
type Heard = Arc<Mutex<Vec<(char, Event)>>>;

fn heard_events(heard: &Heard) -> Vec<(char, Event)> {
    heard.lock().unwrap().iter().filter(|(_, e)| *e != Event::Resubscribed).cloned().collect()
}

/// Two replicas on one backend: what one publishes reaches the other, in order, and never comes back to it.
pub async fn suite(a: Arc<dyn Bus>, b: Arc<dyn Bus>) {
    let heard: Heard = Arc::default();
    for (name, bus) in [('a', &a), ('b', &b)] {
        let (bus, heard) = (Arc::clone(bus), Arc::clone(&heard));
        tokio::spawn(async move { bus.run(Box::new(move |event| heard.lock().unwrap().push((name, event)))).await });
    }
    // Subscribing takes a moment: publish until the other replica hears it.
    let mut reached = false;
    for _ in 0..200 {
        a.publish(Event::FlagsChanged).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if heard_events(&heard).iter().any(|(name, _)| *name == 'b') {
            reached = true;
            break;
        }
    }
    assert!(reached, "b never heard a");
    assert!(heard_events(&heard).iter().all(|(name, _)| *name == 'b'), "a never hears its own events");
    let user = || UserId::parse(&Uuid::new_v4().to_string()).unwrap();
    let (from_a, from_b) = (Event::CallerChanged(user()), Event::CallerChanged(user()));
    a.publish(from_a.clone()).await;
    b.publish(from_b.clone()).await;
    for _ in 0..200 {
        let events = heard_events(&heard);
        let has = |who: char, event: &Event| events.iter().any(|(name, e)| *name == who && e == event);
        if has('b', &from_a) && has('a', &from_b) {
            assert!(!has('a', &from_a) && !has('b', &from_b), "nobody hears itself: {events:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("heard {:?}", heard.lock().unwrap());
}
