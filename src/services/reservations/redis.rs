//! Credit books in Redis, seen by every replica: the same rules as [`crate::domain::credit_book`], run
//! atomically in Redis scripts, per book (a user's credits: `{user}`; the platform's day: `{platform}`):
//!
//! - `credit:{user}:holds`: hold id → `amount|expires` (billionths of a cent, Unix milliseconds);
//! - `credit:{user}:unstored`: replica id → cost of its finished calls Directus has not stored yet (each
//!   replica delivers its own records, and resets its entry from its store at startup);
//! - `credit:{user}:stored`: `start|end` (milliseconds) → cost Directus stored in that span, by the second while
//!   fresh readings may predate it, by the minute after, forgotten once no reading in use predates it.
//!
//! While Redis is down this replica keeps serving on its own memory (the same book the one-replica backend
//! uses): what it reserves and settles meanwhile stays there until stored, and counts on top of what Redis
//! says once Redis is back. Times come from the replicas' clocks, which must agree (NTP).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use redis::Script;
use uuid::Uuid;

use super::memory::{MemoryReservations, millis};
use super::{CreditBooks, HoldRef, Place, Shortfall, Unstored, now_millis, ttl_millis};
use crate::domain::credit_book::{BookId, HoldId, LedgerReading, UnixMillis};
use crate::domain::money::Cents;
use crate::shared::redis::{Redis, RedisFailure, key};
use crate::sync;

const COMMITTED: &str = include_str!("lua/committed.lua");

/// KEYS: holds, unstored, stored. ARGV: read_at, now. Returns what is committed (holds, unstored, stored since
/// the reading), in billionths of a cent.
const COMMITTED_ONLY: &str = include_str!("lua/committed_only.lua");

/// KEYS: holds, unstored, stored. ARGV: read_at, now, hold id, amount, expires, headroom, ttl. Reserves
/// `amount` if what is committed does not exceed `headroom` (what the reading leaves after this replica's own
/// local commitments and the amount). Returns {reserved, committed}.
const RESERVE: &str = include_str!("lua/reserve.lua");

/// KEYS: holds. ARGV: hold id, amount, expires, ttl. Extends a hold that still exists.
const EXTEND: &str = include_str!("lua/extend.lua");

/// KEYS: holds, unstored. ARGV: hold id (may be empty), replica, cost. A hold gives way to its call's cost.
const SETTLE: &str = include_str!("lua/settle.lua");

/// KEYS: unstored, stored. ARGV: replica, cost, span start, span end, now, fresh ms, oldest ms. Directus stored
/// a cost: it leaves this replica's unstored entry and joins the stored spans, which are then pruned and
/// merged into minutes as in the in-memory book.
const STORED: &str = include_str!("lua/stored.lua");

pub struct RedisReservations {
    redis: Arc<Redis>,
    /// This replica's entry in the users' `unstored` hashes: stable across restarts (kept in the store).
    replica: String,
    local: MemoryReservations,
    /// Calls settled in local memory while Redis was down: their storage is recorded there too.
    settled_locally: Mutex<HashSet<Uuid>>,
    fresh_millis: i64,
    oldest_millis: i64,
    committed: Script,
    reserve: Script,
    extend: Script,
    settle: Script,
    stored: Script,
}

fn keys(book: BookId) -> [String; 3] {
    let tag = book.to_string();
    [key(&["credit", &tag, "holds"]), key(&["credit", &tag, "unstored"]), key(&["credit", &tag, "stored"])]
}

impl RedisReservations {
    pub fn new(redis: Arc<Redis>, replica: String, fresh: std::time::Duration, oldest: std::time::Duration) -> Self {
        let with_committed = |body: &str| Script::new(&format!("{COMMITTED}{body}"));
        RedisReservations {
            redis,
            replica,
            local: MemoryReservations::new(fresh, oldest),
            settled_locally: Mutex::new(HashSet::new()),
            fresh_millis: millis(fresh),
            oldest_millis: millis(oldest),
            committed: with_committed(COMMITTED_ONLY),
            reserve: with_committed(RESERVE),
            extend: Script::new(EXTEND),
            settle: Script::new(SETTLE),
            stored: Script::new(STORED),
        }
    }

    fn settle_locally(&self, book: BookId, hold: Option<HoldId>, request_id: Uuid, cost: Cents, now: UnixMillis) {
        sync::lock(&self.settled_locally).insert(request_id);
        self.local.with_book(book, now, |book| match hold {
            Some(id) => book.settle(id, cost),
            None => book.add_unstored(cost),
        });
    }

    /// At startup: this replica's unstored costs in Redis become exactly what its store still holds (entries a
    /// crash left behind are cleared). Without Redis they count in local memory instead.
    async fn restore_in_redis(&self, unstored: Unstored) -> Result<(), RedisFailure> {
        let pattern = key(&["credit", "*", "unstored"]);
        let pattern = pattern.as_str();
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = self
                .redis
                .run(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            for hash in found {
                self.redis
                    .run(|mut c| async move {
                        redis::cmd("HDEL").arg(hash).arg(&self.replica).query_async::<i64>(&mut c).await
                    })
                    .await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for (book, (cost, _)) in unstored {
            let [_, hash, _] = keys(book);
            self.redis
                .run(|mut c| async move {
                    redis::cmd("HSET").arg(hash).arg(&self.replica).arg(cost.nanos()).query_async::<i64>(&mut c).await
                })
                .await?;
        }
        Ok(())
    }

    fn restore_locally(&self, unstored: Unstored) {
        let now = now_millis();
        for (book, (cost, request_ids)) in unstored {
            sync::lock(&self.settled_locally).extend(request_ids);
            self.local.with_book(book, now, |book| book.add_unstored(cost));
        }
    }
}

#[async_trait::async_trait]
impl CreditBooks for RedisReservations {
    async fn available(&self, book: BookId, ledger: LedgerReading) -> Cents {
        let now = now_millis();
        let local = self.local.available(book, ledger, now);
        let [holds, unstored, stored] = keys(book);
        let shared = self
            .redis
            .run(|mut c| async move {
                self.committed
                    .key(holds)
                    .key(unstored)
                    .key(stored)
                    .arg(ledger.read_at)
                    .arg(now)
                    .invoke_async::<String>(&mut c)
                    .await
            })
            .await;
        match shared.map(|text| parse_nanos(&text)) {
            Ok(committed) => local - committed,
            Err(_) => local,
        }
    }

    async fn reserve(&self, book: BookId, ledger: LedgerReading, amount: Cents) -> Result<HoldRef, Shortfall> {
        let now = now_millis();
        let local = self.local.available(book, ledger, now);
        let id = HoldId(fastrand::u64(..));
        let [holds, unstored, stored] = keys(book);
        let headroom = local - amount;
        let answer = self
            .redis
            .run(|mut c| async move {
                self.reserve
                    .key(holds)
                    .key(unstored)
                    .key(stored)
                    .arg(ledger.read_at)
                    .arg(now)
                    .arg(id.0)
                    .arg(amount.nanos())
                    .arg(now + ttl_millis())
                    .arg(headroom.nanos())
                    .arg(ttl_millis())
                    .invoke_async::<(i64, String)>(&mut c)
                    .await
            })
            .await;
        match answer {
            Ok((1, _)) => Ok(HoldRef { id, place: Place::Redis }),
            Ok((_, committed)) => Err(Shortfall { available: local - parse_nanos(&committed) }),
            Err(_) => self.local.reserve(book, ledger, amount, now).map(|id| HoldRef { id, place: Place::Local }),
        }
    }

    async fn extend(&self, book: BookId, hold: HoldRef, amount: Cents) {
        let HoldRef { id, place } = hold;
        let now = now_millis();
        match place {
            Place::Local => self.local.with_book(book, now, |book| book.extend(id, now, ttl_millis())),
            Place::Redis => {
                let [holds, ..] = keys(book);
                let _ = self
                    .redis
                    .run(|mut c| async move {
                        self.extend
                            .key(holds)
                            .arg(id.0)
                            .arg(amount.nanos())
                            .arg(now + ttl_millis())
                            .arg(ttl_millis())
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
            }
        }
    }

    /// A call's hold gives way to its cost (no hold: a cost counted again at startup).
    async fn settle(&self, book: BookId, hold: Option<HoldRef>, request_id: Uuid, cost: Cents) {
        let now = now_millis();
        if let Some(HoldRef { id, place: Place::Local }) = hold {
            self.settle_locally(book, Some(id), request_id, cost, now);
            return;
        }
        let [holds, unstored, _] = keys(book);
        let hold_id = hold.map(|hold| hold.id.0.to_string()).unwrap_or_default();
        let shared = self
            .redis
            .run(|mut c| async move {
                self.settle
                    .key(holds)
                    .key(unstored)
                    .arg(hold_id)
                    .arg(&self.replica)
                    .arg(cost.nanos())
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if shared.is_err() {
            // The shared hold expires by itself; the cost counts here until Directus has it.
            self.settle_locally(book, None, request_id, cost, now);
        }
    }

    async fn release(&self, book: BookId, hold: HoldRef) {
        let HoldRef { id, place } = hold;
        match place {
            Place::Local => self.local.with_book(book, now_millis(), |book| book.release(id)),
            Place::Redis => {
                let [holds, ..] = keys(book);
                let _ = self
                    .redis
                    .run(
                        |mut c| async move { redis::cmd("HDEL").arg(holds).arg(id.0).query_async::<i64>(&mut c).await },
                    )
                    .await;
            }
        }
    }

    /// Directus stored a call's cost at `at`: recorded where the call was settled.
    async fn stored(&self, book: BookId, request_id: Uuid, cost: Cents, at: UnixMillis) {
        let now = now_millis();
        if sync::lock(&self.settled_locally).remove(&request_id) {
            self.local.with_book(book, now, |book| book.stored(cost, at));
            return;
        }
        let [_, unstored, stored] = keys(book);
        let start = at - at.rem_euclid(1_000);
        let result = self
            .redis
            .run(|mut c| async move {
                self.stored
                    .key(unstored)
                    .key(stored)
                    .arg(&self.replica)
                    .arg(cost.nanos())
                    .arg(start)
                    .arg(start + 1_000)
                    .arg(now)
                    .arg(self.fresh_millis)
                    .arg(self.oldest_millis)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(error) = result {
            // Its cost stays counted in Redis (never too little), until this replica's next start resets it.
            tracing::warn!(%error, %request_id, "cannot record a stored deduction in Redis");
        }
    }

    async fn restore(&self, unstored: Unstored) {
        if let Err(error) = self.restore_in_redis(unstored.clone()).await {
            tracing::warn!(%error, "cannot restore this replica's unstored costs in Redis; counting them locally");
            self.restore_locally(unstored);
        }
    }
}

/// A committed total from a script; unreadable counts as everything committed (never too little).
fn parse_nanos(text: &str) -> Cents {
    Cents::from_nanos(text.parse::<i64>().unwrap_or(i64::MAX))
}
