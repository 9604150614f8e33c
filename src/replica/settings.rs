//! replica::settings: the replication limits of `config::Config`, checked together at start.

use crate::config::Config;

/// Shortest `replica_lag_ms_max`: below a few follower round trips (fetch, append, fsync on an
/// SD card) healthy followers would leave the ISR under ordinary load.
pub const REPLICA_LAG_MS_MIN: u64 = 500;

/// Longest wait a follower may ask for: its fetch must come back well inside the client's
/// request timeout (`client::REQUEST_TIMEOUT_MS`).
pub const REPLICA_FETCH_WAIT_MS_MAX: u64 = 10_000;

/// The replication settings that do not fit, as (key, reason).
pub fn check(c: &Config) -> Result<(), (&'static str, String)> {
    if c.replica_lag_ms_max < REPLICA_LAG_MS_MIN {
        return Err((
            "replica_lag_ms_max",
            format!("must be at least {REPLICA_LAG_MS_MIN}"),
        ));
    }
    if c.replica_fetch_wait_ms_max == 0 || c.replica_fetch_wait_ms_max > REPLICA_FETCH_WAIT_MS_MAX {
        return Err((
            "replica_fetch_wait_ms_max",
            format!("must be 1..={REPLICA_FETCH_WAIT_MS_MAX}"),
        ));
    }
    if c.replica_fetch_wait_ms_max >= c.replica_lag_ms_max {
        return Err((
            "replica_fetch_wait_ms_max",
            "must be below replica_lag_ms_max (an idle follower would leave the ISR)".into(),
        ));
    }
    if c.replica_fetch_bytes_max < (c.message_bytes_max as usize).min(1024 * 1024)
        || c.replica_fetch_bytes_max > i32::MAX as usize
    {
        return Err((
            "replica_fetch_bytes_max",
            "must be at least min(message_bytes_max, 1 MiB) and fit an i32".into(),
        ));
    }
    if c.replica_fetch_response_bytes_max < c.replica_fetch_bytes_max
        || c.replica_fetch_response_bytes_max > i32::MAX as usize
    {
        return Err((
            "replica_fetch_response_bytes_max",
            "must be at least replica_fetch_bytes_max and fit an i32".into(),
        ));
    }
    // One read round of a follower's fetch reserves twice its cap (as a consumer's does).
    let round = 2 * c.replica_fetch_response_bytes_max;
    if c.replica_fetch_inflight_bytes_max < round
        || c.replica_fetch_inflight_bytes_max > u32::MAX as usize
    {
        return Err((
            "replica_fetch_inflight_bytes_max",
            "must be at least 2 x replica_fetch_response_bytes_max".into(),
        ));
    }
    if c.min_insync_replicas < 1 {
        return Err(("min_insync_replicas", "must be at least 1".into()));
    }
    if c.hw_checkpoint_ms == 0 {
        return Err(("hw_checkpoint_ms", "must be at least 1".into()));
    }
    Ok(())
}
