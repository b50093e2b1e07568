//! Several replicas sharing state through a real Redis. `scripts/test.sh` starts Redis (and, for the cluster
//! tests, PostgreSQL, Directus on it and two sidecar replicas) and sets `BYOK_E2E_REDIS_URL`. Run with
//! `--features e2e`.

mod shared_state;
