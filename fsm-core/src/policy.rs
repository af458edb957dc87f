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

/// A seed that differs between executors and between processes: std's hasher keys, which are
/// drawn from the operating system's randomness once per thread and then counted up.
#[cfg(feature = "runtime")]
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// 128 bits from the operating system's secure random source (`getrandom`), for execution
/// ids: ids of different processes and restarts must not meet. If the source fails (it does
/// not on a running system), two [`random_seed`]s, which differ between processes too.
#[cfg(feature = "runtime")]
pub(crate) fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u128::from_le_bytes(bytes),
        Err(_) => u128::from(random_seed()) << 64 | u128::from(random_seed()),
    }
}

/// A small, fast generator of numbers in `[0, 1)` for jitter (SplitMix64). Jitter needs
/// spread, not secrecy, and a seeded generator keeps executions reproducible in tests.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
pub(crate) struct JitterSource(u64);

#[cfg_attr(not(feature = "runtime"), allow(dead_code))]
impl JitterSource {
    pub(crate) fn new(seed: u64) -> Self {
        JitterSource(seed)
    }

    /// The source of execution `id` on an executor seeded with `seed` (see [`random_seed`]):
    /// executions of one executor, and executors numbering their executions alike, draw
    /// different delays.
    #[cfg(feature = "runtime")]
    pub(crate) fn for_execution(seed: u64, id: crate::ExecutionId) -> Self {
        let id = id.as_u128();
        let id = (id as u64) ^ (id >> 64) as u64;
        JitterSource::new(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
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

    #[test]
    fn full_jitter_stays_between_zero_and_the_backoff() {
        let p = RetryPolicy {
            jitter: Jitter::Full,
            ..policy()
        };
        let mut source = JitterSource::new(7);
        let mut seen_low = false;
        for _ in 0..1000 {
            let d = p.delay(2, source.next_unit());
            assert!(d <= Duration::from_millis(200));
            seen_low |= d < Duration::from_millis(50);
        }
        assert!(seen_low, "jitter spreads delays down to zero");
    }

    #[test]
    fn units_are_in_range() {
        let mut source = JitterSource::new(0);
        assert!((0..10_000)
            .map(|_| source.next_unit())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
