//! Cryptography kept apart from everything else: pure functions over bytes, no I/O.

pub mod encryption_key;
pub mod envelope;
pub mod stripe_signature;
pub mod webhook_signature;
