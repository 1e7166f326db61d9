//! Retry schedule for catalog bootstrap and manual-peer dials. Pure: time and the
//! randomness come in from the caller (a `u64` drawn from its seeded [`Jitter`]).
//!
//! Two phases per address ([`Retry`]):
//! - **hot**: for `hot_window` after the address was configured (node start, or a
//!   manual peer added), a failed dial is retried after `hot_interval` (jittered into
//!   its upper half, 5–10 ms by default). This covers a node and its catalog started
//!   at the same moment: the buyer's first dial is refused because the catalog does
//!   not listen yet, and the next one comes a few milliseconds after it does.
//! - **cold**: afterwards, exponential backoff from `initial` doubling up to `max`,
//!   each delay drawn from the upper half of `min(initial × 2^n, max)`, so peers
//!   that failed together do not retry together.
//!
//! A retry is scheduled only when the previous dial has failed, so there is never
//! more than one dial per address in flight: a remote host that does not answer is
//! rate-limited by its own dial timeout, and only a refusal (fast failure) makes
//! the hot phase dial often.

use std::time::{Duration, Instant};

/// The retry timing for one kind of address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// How long after the address was configured failures are retried fast.
    pub(crate) hot_window: Duration,
    /// Retry delay inside the hot window (before jitter).
    pub(crate) hot_interval: Duration,
    /// First delay after the hot window.
    pub(crate) initial: Duration,
    /// Longest delay.
    pub(crate) max: Duration,
}

/// Retry state of one address: failures since the last success and the hot window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Dial failures since the last answer (shown in the status).
    pub(crate) failures: u32,
    /// Failures after the hot window (the backoff exponent).
    cold_failures: u32,
    /// End of the hot window, if one was opened.
    hot_until: Option<Instant>,
}

impl Retry {
    /// Opens the hot window: the address was just configured at `now`.
    pub(crate) fn configured(&mut self, now: Instant, schedule: &Schedule) {
        self.hot_until = now.checked_add(schedule.hot_window);
    }

    /// A dial failed at `now`: returns how long to wait before the next one.
    pub(crate) fn failed(&mut self, now: Instant, schedule: &Schedule, rand: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.hot_until.is_some_and(|t| now < t) {
            return delay(schedule.hot_interval, schedule.hot_interval, 0, rand);
        }
        let wait = delay(schedule.initial, schedule.max, self.cold_failures, rand);
        self.cold_failures = self.cold_failures.saturating_add(1);
        wait
    }

    /// The peer answered: the next failure starts the backoff from the beginning
    /// (without a hot window: the address is known to work).
    pub(crate) fn succeeded(&mut self) {
        *self = Self::default();
    }
}

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

    fn schedule() -> Schedule {
        Schedule {
            hot_window: Duration::from_secs(2),
            hot_interval: Duration::from_millis(10),
            initial: MS50,
            max: S1,
        }
    }

    #[test]
    fn failures_inside_the_hot_window_retry_within_the_hot_interval() {
        let s = schedule();
        let t0 = Instant::now();
        let mut r = Retry::default();
        r.configured(t0, &s);
        let mut j = Jitter::new(3);
        let mut now = t0;
        // 150 failures at ≤ 10 ms each stay inside the 2 s window.
        for _ in 0..150 {
            let d = r.failed(now, &s, j.next());
            assert!(
                d >= Duration::from_millis(5) && d <= Duration::from_millis(10),
                "{d:?}"
            );
            now += d;
        }
        assert_eq!(r.failures, 150);
        // After the window: the normal backoff, from its first step.
        let after = t0 + Duration::from_secs(2);
        let first = r.failed(after, &s, j.next());
        assert!(
            first >= Duration::from_millis(25) && first <= MS50,
            "{first:?}"
        );
        let second = r.failed(after + first, &s, j.next());
        assert!(
            second >= MS50 && second <= Duration::from_millis(100),
            "{second:?}"
        );
        assert_eq!(r.failures, 152);
    }

    #[test]
    fn without_a_hot_window_the_backoff_starts_at_once_and_success_resets_it() {
        let s = schedule();
        let now = Instant::now();
        let mut r = Retry::default();
        let mut j = Jitter::new(9);
        let d = r.failed(now, &s, j.next());
        assert!(d >= Duration::from_millis(25) && d <= MS50, "{d:?}");
        for _ in 0..10 {
            r.failed(now, &s, j.next());
        }
        assert!(r.failed(now, &s, j.next()) >= S1 / 2);
        r.succeeded();
        assert_eq!(r.failures, 0);
        assert!(r.failed(now, &s, j.next()) <= MS50);
        // A success also closes the hot window.
        let mut hot = Retry::default();
        hot.configured(now, &s);
        hot.succeeded();
        assert!(hot.failed(now, &s, j.next()) >= Duration::from_millis(25));
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
