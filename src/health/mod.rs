//! Container supervision as pure logic: healthcheck configuration (Docker's HEALTHCHECK merged
//! with `run`'s or a Compose service's), the probe state machine, probe output capture,
//! restart policies and the crash-loop backoff. The shim (`runtime::shim`) drives them from its
//! poll loop with the real clock; the tests here use a fake one.

mod config;
mod monitor;
mod output;
mod restart;

pub use config::{
    HealthConfig, HealthConfigError, Probe, DEFAULT_INTERVAL, DEFAULT_RETRIES, DEFAULT_SHELL,
    DEFAULT_START_INTERVAL, DEFAULT_START_PERIOD, DEFAULT_TIMEOUT, MIN_DURATION,
};
pub use monitor::{HealthMonitor, HealthState, HealthStatus, ProbeResult, MAX_LOG_ENTRIES};
pub use output::{go_duration, ProbeOutput, MAX_OUTPUT_BYTES};
pub use restart::{
    Backoff, RestartPolicy, RestartPolicyError, BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_MULTIPLIER,
    BACKOFF_RESET_AFTER,
};
