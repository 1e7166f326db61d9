//! Exponential backoff with jitter for catalog and manual-peer retries. Pure: the
//! randomness comes in as a `u64` drawn by the caller from its seeded [`Jitter`];
//! each delay is drawn from the upper half of `min(initial × 2^n, max)`, so peers
//! that failed together do not retry together.

use std::time::Duration;

/// The delay after `failures` earlier failures (0 for the first retry):
/// `min(initial × 2^failures, max)`, jittered into its upper half by `rand`.
pub(crate) fn delay(initial: Duration, max: Duration, failures: u32, rand: u64) -> Duration {
    let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
    let full = initial.saturating_mul(factor).min(max.max(initial));
    let half_ms = u64::try_from(full.as_millis() / 2).unwrap_or(u64::MAX);
    let extra = if half_ms == 0 {
        0
    } else {
        rand % half_ms.saturating_add(1)
    };
    full.saturating_sub(Duration::from_millis(half_ms)) + Duration::from_millis(extra)
}

/// A small seeded generator (SplitMix64) for retry jitter.
#[derive(Clone, Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS50: Duration = Duration::from_millis(50);
    const S1: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_band() {
        let mut j = Jitter::new(7);
        let mut full = 50u64;
        for failures in 0..10 {
            let d = delay(MS50, S1, failures, j.next()).as_millis() as u64;
            assert!(
                d >= full / 2 && d <= full,
                "{d} not in [{}, {full}]",
                full / 2
            );
            full = (full * 2).min(1000);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_seeds_differ() {
        let run = |seed| {
            let mut j = Jitter::new(seed);
            (0..6)
                .map(|f| delay(Duration::from_millis(64), S1, f, j.next()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut j = Jitter::new(0);
        for f in [0, 1, 31, 32, 1000, u32::MAX] {
            assert!(delay(Duration::from_millis(1), Duration::MAX, f, j.next()) > Duration::ZERO);
        }
        assert_eq!(
            delay(Duration::ZERO, Duration::ZERO, 3, u64::MAX),
            Duration::ZERO
        );
    }
}
