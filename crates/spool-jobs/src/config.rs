//! Defaults and limits of the job layer, each with a name.

const SECOND_MS: u64 = 1_000;
const HOUR_MS: u64 = 3_600 * SECOND_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// Total tries of a job, the first included, unless it says otherwise
    /// (Sidekiq and River use 25).
    pub attempts_max_default: u32,
    pub attempts_max_limit: u32,
    /// Longest one attempt may run, unless the job says otherwise; 0 means
    /// no limit beyond the lease.
    pub timeout_ms_default: u64,
    pub timeout_ms_max: u64,
    /// Lease of a claim that asks for none.
    pub lease_ms_default: u64,
    pub lease_ms_max: u64,
    /// Longest a claim may wait for a job.
    pub claim_wait_ms_max: u64,
    pub claim_jobs_max: u32,
    pub delay_ms_max: u64,
    pub payload_bytes_max: u64,
    pub headers_max: usize,
    /// Jobs held in memory (every state); enqueues beyond are refused.
    pub jobs_in_memory_max: usize,
    /// How long an idempotency key dedups enqueues.
    pub dedup_window_ms: u64,
    /// Succeeded and cancelled jobs leave memory after this long; their
    /// history stays in the log.
    pub finished_retention_ms: u64,
    /// Dead jobs are purged after this long unless re-driven.
    pub dead_retention_ms: u64,
    /// Succeeded and cancelled jobs kept in memory at most; the oldest leave
    /// first, before their retention time if need be, so a busy queue does
    /// not fill memory with finished jobs.
    pub finished_in_memory_max: usize,
    /// Retry backoff: `attempt^4` seconds plus `base`, capped, plus up to
    /// `jitter_per_attempt * (attempt + 1)` random milliseconds (Sidekiq's
    /// curve: 25 attempts span about three weeks).
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    pub backoff_jitter_per_attempt_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            attempts_max_default: 25,
            attempts_max_limit: 1_000,
            timeout_ms_default: 0,
            timeout_ms_max: 7 * DAY_MS,
            lease_ms_default: 30 * SECOND_MS,
            lease_ms_max: 12 * HOUR_MS,
            claim_wait_ms_max: 60 * SECOND_MS,
            claim_jobs_max: 1_000,
            delay_ms_max: 365 * DAY_MS,
            payload_bytes_max: 512 * 1024,
            headers_max: 64,
            jobs_in_memory_max: 5_000_000,
            dedup_window_ms: DAY_MS,
            finished_retention_ms: HOUR_MS,
            dead_retention_ms: 30 * DAY_MS,
            finished_in_memory_max: 100_000,
            backoff_base_ms: 15 * SECOND_MS,
            backoff_cap_ms: 7 * DAY_MS,
            backoff_jitter_per_attempt_ms: 10 * SECOND_MS,
        }
    }
}

impl JobsConfig {
    /// Delay before retry number `attempt + 1`, after attempt `attempt`
    /// failed; `random` is any uniformly random `u64`.
    pub fn backoff_ms(&self, attempt: u32, random: u64) -> u64 {
        let a = u64::from(attempt);
        let curve = a
            .saturating_pow(4)
            .saturating_mul(SECOND_MS)
            .saturating_add(self.backoff_base_ms);
        let jitter_span = self.backoff_jitter_per_attempt_ms.saturating_mul(a + 1).max(1);
        curve.min(self.backoff_cap_ms) + random % jitter_span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_curve_spans_about_three_weeks() {
        let config = JobsConfig::default();
        let total: u64 = (1..25).map(|a| config.backoff_ms(a, 0)).sum();
        let days = total as f64 / DAY_MS as f64;
        assert!((18.0..24.0).contains(&days), "{days} days");
        assert_eq!(config.backoff_ms(1, 0), 16_000);
        assert!(config.backoff_ms(1, u64::MAX) < 16_000 + 20_000);
    }
}
