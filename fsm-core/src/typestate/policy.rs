//! Retry policies: the fields of Amazon States Language's `Retry`, and the delays they give.

use core::time::Duration;

/// How a step's delays between retries are randomised (ASL `JitterStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Each delay is exactly the computed backoff (`NONE`).
    None,
    /// Each delay is drawn uniformly between zero and the computed backoff (`FULL`), so that
    /// many executions failing together do not retry together.
    Full,
}

/// How a failed step is retried. The fields are those of Amazon States Language's `Retry`
/// (`MaxAttempts`, `IntervalSeconds`, `BackoffRate`, `MaxDelaySeconds`, `JitterStrategy`), so
/// they export one to one.
///
/// Retry `n` (from 1) waits `interval * backoff_rate^(n-1)`, capped at `max_delay`, then
/// jittered. Only retryable errors are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How many retries after the first attempt (ASL `MaxAttempts`); 0 never retries.
    pub max_attempts: u32,
    /// The delay before the first retry (ASL `IntervalSeconds`).
    pub interval: Duration,
    /// The factor each further delay grows by (ASL `BackoffRate`), at least 1.
    pub backoff_rate: f64,
    /// The longest delay (ASL `MaxDelaySeconds`), if any.
    pub max_delay: Option<Duration>,
    /// How delays are randomised (ASL `JitterStrategy`).
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// No retries: the first failure is final.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 0,
        interval: Duration::from_secs(1),
        backoff_rate: 2.0,
        max_delay: None,
        jitter: Jitter::None,
    };

    /// ASL's defaults: 3 retries, 1 s, doubling, no cap, no jitter.
    pub const ASL_DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::NONE
    };

    /// The delay before retry `retry` (1 for the first retry), before jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .backoff_rate
            .max(1.0)
            .powi(retry.saturating_sub(1).min(1000) as i32);
        let secs = self.interval.as_secs_f64() * factor;
        let cap = self.max_delay.map_or(f64::MAX, |d| d.as_secs_f64());
        // `from_secs_f64` rejects values past `Duration::MAX`; the cap keeps us in range.
        Duration::try_from_secs_f64(secs.min(cap)).unwrap_or(Duration::MAX)
    }

    /// The delay before retry `retry`, with jitter drawn from `unit`, a number in `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let backoff = self.backoff(retry);
        match self.jitter {
            Jitter::None => backoff,
            Jitter::Full => backoff.mul_f64(unit.clamp(0.0, 1.0)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A policy with every field set: 5 attempts from 100 ms, doubling, capped at 500 ms.
    pub(crate) fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            interval: Duration::from_millis(100),
            backoff_rate: 2.0,
            max_delay: Some(Duration::from_millis(500)),
            jitter: Jitter::None,
        }
    }

    #[test]
    fn backoff_grows_by_the_rate_and_stops_at_the_cap() {
        let delays: Vec<_> = (1..=5).map(|n| policy().backoff(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn a_rate_below_one_does_not_shrink_delays() {
        let p = RetryPolicy {
            backoff_rate: 0.5,
            ..policy()
        };
        assert_eq!(p.backoff(3), Duration::from_millis(100));
    }

    #[test]
    fn huge_backoffs_saturate_instead_of_panicking() {
        let p = RetryPolicy {
            max_delay: None,
            backoff_rate: 10.0,
            ..policy()
        };
        assert_eq!(p.backoff(u32::MAX), Duration::MAX);
    }
}
