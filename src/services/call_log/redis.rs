//! Calls kept in Redis, one sorted set per user shared by every replica. Members are `<id>|<entry>` at one
//! score, so they sort by their time-ordered id: pages are ranges by id, the bound per user is a trim by
//! rank, and the age limit a trim below the first id of the oldest kept moment. A user's set expires when
//! they make no call for the whole retention. While Redis is down, entries are dropped and pages refused.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{CallHistory, CallLogError};
use crate::domain::call::{CallEntry, CallRetention, first_id_at};
use crate::domain::user::UserId;
use crate::shared::redis::{Redis, key};

pub struct RedisHistory {
    redis: Arc<Redis>,
    retention: CallRetention,
}

impl RedisHistory {
    pub fn new(redis: Arc<Redis>, retention: CallRetention) -> RedisHistory {
        RedisHistory { redis, retention }
    }
}

fn user_key(user: UserId) -> String {
    key(&["calls", &user.to_string()])
}

#[async_trait::async_trait]
impl CallHistory for RedisHistory {
    async fn keep(&self, calls: Vec<(UserId, CallEntry)>) -> Result<(), CallLogError> {
        let mut by_user: HashMap<UserId, Vec<String>> = HashMap::new();
        for (user, entry) in &calls {
            let json = serde_json::to_string(entry).expect("a call entry serializes");
            by_user.entry(*user).or_default().push(format!("{}|{json}", entry.id));
        }
        let oldest = format!("({}", first_id_at(self.retention.since(OffsetDateTime::now_utc())));
        let beyond = -(self.retention.kept_per_user as isize) - 1;
        let ttl = self.retention.max_age.as_millis() as i64;
        let mut pipe = ::redis::pipe();
        for (user, members) in by_user {
            let key = user_key(user);
            let scored: Vec<(i64, String)> = members.into_iter().map(|m| (0, m)).collect();
            pipe.zadd_multiple(&key, &scored).ignore();
            pipe.zremrangebyrank(&key, 0, beyond).ignore();
            pipe.cmd("ZREMRANGEBYLEX").arg(&key).arg("-").arg(&oldest).ignore();
            pipe.pexpire(&key, ttl).ignore();
        }
        self.redis.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await?;
        Ok(())
    }

    async fn page(
        &self,
        user: UserId,
        after: Option<Uuid>,
        limit: usize,
        since: OffsetDateTime,
    ) -> Result<Vec<CallEntry>, CallLogError> {
        let newest = after.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let oldest = format!("[{}", first_id_at(since));
        let members: Vec<String> = self
            .redis
            .run(|mut c| async move {
                ::redis::cmd("ZREVRANGEBYLEX")
                    .arg(user_key(user))
                    .arg(newest)
                    .arg(oldest)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(members
            .iter()
            .filter_map(|member| member.split_once('|'))
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect())
    }

    /// Each write trims its users, and idle users' sets expire: nothing is left to sweep.
    async fn forget_before(&self, _since: OffsetDateTime) -> Result<(), CallLogError> {
        Ok(())
    }
}
