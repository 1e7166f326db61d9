//! When an ended replica starts again: the [`RestartPolicy`] as a pure function.
//!
//! Two places apply it, with the same rule:
//! - the **host**, when a replica it runs ends by itself (exit, failure, out of
//!   memory): it starts it again on the same node after a back-off;
//! - the **owner**, when a replica is lost with its provider (the contract
//!   ended, or the provider went silent for longer than its timeout): it places
//!   the replica again elsewhere, buying capacity if it has to.
//!
//! A replica that was stopped on purpose (undeploy, eviction, termination) is
//! never restarted. A loss counts as a failure. The back-off doubles from
//! [`RESTART_BACKOFF_MIN`] per restart so far, up to [`RESTART_BACKOFF_MAX`].

use std::time::Duration;

use super::RestartPolicy;

/// The first restart's delay.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest delay between restarts.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a replica ended, for the restart rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited with code 0.
    Succeeded,
    /// It exited non-zero, was killed (for example out of memory), failed to
    /// start, or was lost with its provider.
    Failed,
    /// It was stopped on purpose (undeploy, eviction, contract end): never restarted.
    Stopped,
}

/// After how long a replica that ended as `ending`, restarted `restarts` times
/// so far, starts again under `policy`; `None` when its end is final.
pub fn restart_after(policy: RestartPolicy, ending: Ending, restarts: u32) -> Option<Duration> {
    let again = match (policy, ending) {
        (_, Ending::Stopped) | (RestartPolicy::Never, _) => false,
        (RestartPolicy::Always, _) => true,
        (RestartPolicy::OnFailure { max_restarts }, Ending::Failed) => restarts < max_restarts,
        (RestartPolicy::OnFailure { .. }, Ending::Succeeded) => false,
    };
    again.then(|| backoff(restarts))
}

/// The delay before restart number `restarts + 1`.
pub fn backoff(restarts: u32) -> Duration {
    RESTART_BACKOFF_MIN
        .saturating_mul(1u32 << restarts.min(16))
        .min(RESTART_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_restarts_nothing() {
        for e in [Ending::Succeeded, Ending::Failed, Ending::Stopped] {
            assert_eq!(restart_after(RestartPolicy::Never, e, 0), None);
        }
    }

    #[test]
    fn on_failure_restarts_failures_up_to_its_limit() {
        let p = RestartPolicy::OnFailure { max_restarts: 2 };
        assert_eq!(
            restart_after(p, Ending::Failed, 0),
            Some(RESTART_BACKOFF_MIN)
        );
        assert_eq!(
            restart_after(p, Ending::Failed, 1),
            Some(RESTART_BACKOFF_MIN * 2)
        );
        assert_eq!(restart_after(p, Ending::Failed, 2), None);
        assert_eq!(restart_after(p, Ending::Succeeded, 0), None);
        assert_eq!(restart_after(p, Ending::Stopped, 0), None);
    }

    #[test]
    fn always_restarts_any_end_but_a_stop() {
        let p = RestartPolicy::Always;
        assert!(restart_after(p, Ending::Succeeded, 1000).is_some());
        assert!(restart_after(p, Ending::Failed, 3).is_some());
        assert_eq!(restart_after(p, Ending::Stopped, 0), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(1600));
        assert_eq!(backoff(20), RESTART_BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), RESTART_BACKOFF_MAX);
    }
}
