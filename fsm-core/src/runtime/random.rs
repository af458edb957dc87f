//! Randomness for the runtime: execution ids (the operating system's secure source) and
//! retry jitter (a seeded generator, reproducible in tests).

/// A seed that differs between executors and between processes: std's hasher keys, which are
/// drawn from the operating system's randomness once per thread and then counted up.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// 128 bits from the operating system's secure random source (`getrandom`), for execution
/// ids: ids of different processes and restarts must not meet. If the source fails (it does
/// not on a running system), two [`random_seed`]s, which differ between processes too.
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
pub(crate) struct JitterSource(u64);

impl JitterSource {
    pub(crate) fn new(seed: u64) -> Self {
        JitterSource(seed)
    }

    /// The source of execution `id` on an executor seeded with `seed` (see [`random_seed`]):
    /// executions of one executor, and executors numbering their executions alike, draw
    /// different delays.
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
    use core::time::Duration;

    use super::*;
    use crate::typestate::policy::tests::policy;
    use crate::{Jitter, RetryPolicy};

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
