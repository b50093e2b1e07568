//! Several replicas sharing state through a real Redis. `scripts/test.sh` starts Redis, PostgreSQL, Directus on
//! them and two sidecar replicas (`scripts/cluster-up.sh`), and sets `BYOK_E2E_REDIS_URL` (a database of that
//! Redis the replicas do not use) and `BYOK_E2E_CLUSTER`. Run with `--features e2e`.

mod cluster;
// Shared with the e2e target, which uses more of them.
#[allow(dead_code)]
#[path = "../e2e/fakes.rs"]
mod fakes;
#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;
mod shared_state;
#[path = "../backends/suites/mod.rs"]
mod suites;
