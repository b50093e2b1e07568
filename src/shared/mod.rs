//! State that several replicas must share, each piece behind one interface with two backends chosen by
//! configuration, in the manner of a cache with `memory` and `redis` implementations: without `REDIS_URL`
//! everything stays in this process (no new moving part for one replica); with it, Redis carries what replicas
//! must agree on. Callers never know which, and when Redis is unreachable the Redis backends carry on with this
//! replica's own state (see [`redis`]).
//!
//! Here: one-time claims (webhook ids, notification incidents; [`claims`]) and the event bus that fans flag
//! and caller changes out to every replica ([`bus`]). Rate limits, credit holds and the job queue keep their
//! backends beside their logic ([`crate::services::rate_limit`], [`crate::services::reservations`],
//! [`crate::services::jobs`]).

pub mod bus;
pub mod claims;
pub mod redis;
