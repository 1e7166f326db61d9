//! What a runtime reports: replica statuses, exits, events and the isolation it applies.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::spec::ReplicaId;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// A process of the replica was killed by the kernel for exceeding the replica's memory
    /// limit. Only detectable where a memory cgroup applies; under rlimits an allocation past
    /// the limit fails inside the program instead, which shows up as its own exit code.
    pub oom_killed: bool,
    /// The replica was stopped on request (`stop`), not by itself.
    pub stop_requested: bool,
}

impl ExitInfo {
    /// The process exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}")?,
            (None, Some(s)) => write!(f, "killed by signal {s}")?,
            (None, None) => write!(f, "unknown exit")?,
        }
        if self.oom_killed {
            write!(f, " (out of memory: exceeded its memory limit)")?;
        }
        if self.stop_requested {
            write!(f, " (stopped on request)")?;
        }
        Ok(())
    }
}

/// Where a replica is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplicaStatus {
    /// Its supervisor runs but has not started the process yet.
    Starting,
    /// The process runs.
    Running {
        /// The process id of the replica's main process (also its process group id).
        pid: u32,
        /// Wall-clock UNIX milliseconds when it was started.
        started_at_ms: u64,
    },
    /// The process ended.
    Exited {
        /// How it ended.
        exit: ExitInfo,
        /// Wall-clock UNIX milliseconds when it was started.
        started_at_ms: u64,
        /// Wall-clock UNIX milliseconds when its end was seen.
        finished_at_ms: u64,
    },
    /// It never ran.
    Failed {
        /// Why.
        reason: String,
    },
    /// Its supervisor died without recording how the replica ended; what was left of the
    /// replica has been killed.
    Lost {
        /// What is known.
        reason: String,
    },
}

impl ReplicaStatus {
    /// The replica will not change any more (exited, failed or lost).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Exited { .. } | Self::Failed { .. } | Self::Lost { .. }
        )
    }
}

impl fmt::Display for ReplicaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Starting => write!(f, "starting"),
            Self::Running { pid, .. } => write!(f, "running (pid {pid})"),
            Self::Exited { exit, .. } => write!(f, "exited: {exit}"),
            Self::Failed { reason } => write!(f, "failed: {reason}"),
            Self::Lost { reason } => write!(f, "lost: {reason}"),
        }
    }
}

/// A replica and its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// The replica.
    pub id: ReplicaId,
    /// Its status.
    pub status: ReplicaStatus,
}

/// A replica's status changed. Sent on the runtime's bounded event channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaEvent {
    /// The replica.
    pub id: ReplicaId,
    /// Its new status.
    pub status: ReplicaStatus,
}

/// The captured output (stdout and stderr, interleaved as written) of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Logs {
    /// The last bytes of the output, at most what was asked for.
    pub data: Vec<u8>,
    /// Earlier output was dropped: the ring buffer wrapped, or less than all of it was asked for.
    pub truncated: bool,
}

/// What one replica has used, measured at `sampled_at_ms`. Counters a consumer can check:
/// `cpu_time_ns` only grows while the replica runs (it starts at 0 with each start of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaUsage {
    /// The replica.
    pub id: ReplicaId,
    /// CPU time used by all its processes together since it started, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory in use now, in bytes (without the reclaimable page cache where the engine
    /// says how much that is).
    pub memory_bytes: u64,
    /// The most memory it used at once, when the kernel keeps that (cgroup v1, cgroup v2
    /// from Linux 5.19).
    pub memory_peak_bytes: Option<u64>,
    /// Wall-clock UNIX milliseconds of the measurement.
    pub sampled_at_ms: u64,
}

/// What [`Runtime::reconcile`](super::Runtime::reconcile) did with the replicas it found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Covered replicas, kept as they were found (running ones were not restarted).
    pub adopted: Vec<ReplicaInfo>,
    /// Replicas no contract covers any more: stopped and removed (their last status).
    pub removed: Vec<ReplicaInfo>,
    /// Uncovered replicas that could not be stopped or removed, and why. They are still
    /// known to the runtime; the caller may retry `stop` and `remove`.
    pub failed: Vec<(ReplicaId, String)>,
}

/// The flavor (and view entry) label naming the runtimes a provider offers, e.g.
/// `fluidos.runtimes = "docker,process"` (`docs/PROTOCOL.md` §8).
pub const RUNTIMES_LABEL: &str = "fluidos.runtimes";

/// Which kinds of replica a runtime runs: programs (`command` specs) and/or container
/// images (`image` specs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runs {
    /// Programs, as processes (the process runtime).
    pub commands: bool,
    /// Container images (the Docker runtime).
    pub images: bool,
}

impl Runs {
    /// The runtime names, as flavors advertise them in the `fluidos.runtimes` label
    /// (`docker,process`, `process`, …; sorted).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.images {
            v.push("docker");
        }
        if self.commands {
            v.push("process");
        }
        v
    }
}

/// How one kind of limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Enforcement {
    /// By a cgroup v2 controller, over all processes of the replica together.
    CgroupV2,
    /// By a cgroup v1 controller, over all processes of the replica together.
    CgroupV1,
    /// By a resource limit (`setrlimit`) on each process of the replica separately.
    Rlimit,
    /// By the container engine (through its cgroups), over all processes of the container.
    Engine,
    /// Not enforced.
    None,
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CgroupV2 => "cgroup v2",
            Self::CgroupV1 => "cgroup v1",
            Self::Rlimit => "rlimit",
            Self::Engine => "the container engine",
            Self::None => "not enforced",
        })
    }
}

/// What a runtime runs and which isolation applies to its replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The runtime's kind (`"process"`, `"docker"`, …).
    pub kind: String,
    /// How memory limits are enforced.
    pub memory: Enforcement,
    /// How cpu limits are enforced.
    pub cpu: Enforcement,
    /// How pids limits are enforced.
    pub pids: Enforcement,
    /// Replicas get their own filesystem view.
    pub filesystem_isolation: bool,
    /// Replicas get their own network namespace.
    pub network_isolation: bool,
    /// Replicas run as a user of their own.
    pub user_isolation: bool,
}

impl Capabilities {
    /// One line for `status` output, e.g.
    /// `process runtime: memory by cgroup v1, cpu by cgroup v1, pids by cgroup v1; no filesystem, network or user isolation`.
    pub fn summary(&self) -> String {
        let mut missing = Vec::new();
        if !self.filesystem_isolation {
            missing.push("filesystem");
        }
        if !self.network_isolation {
            missing.push("network");
        }
        if !self.user_isolation {
            missing.push("user");
        }
        let tail = match missing.as_slice() {
            [] => String::new(),
            [a] => format!("; no {a} isolation"),
            [a, b] => format!("; no {a} or {b} isolation"),
            [a, b, c] => format!("; no {a}, {b} or {c} isolation"),
            _ => String::new(),
        };
        let by = |e: Enforcement| match e {
            Enforcement::None => "not enforced".to_owned(),
            e => format!("by {e}"),
        };
        format!(
            "{} runtime: memory {}, cpu {}, pids {}{tail}",
            self.kind,
            by(self.memory),
            by(self.cpu),
            by(self.pids)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_what_applies() {
        let c = Capabilities {
            kind: "process".into(),
            memory: Enforcement::Rlimit,
            cpu: Enforcement::None,
            pids: Enforcement::None,
            filesystem_isolation: false,
            network_isolation: false,
            user_isolation: false,
        };
        assert_eq!(
            c.summary(),
            "process runtime: memory by rlimit, cpu not enforced, pids not enforced; no filesystem, network or user isolation"
        );
    }

    #[test]
    fn exit_display() {
        let e = ExitInfo {
            code: None,
            signal: Some(9),
            oom_killed: true,
            stop_requested: false,
        };
        assert_eq!(
            e.to_string(),
            "killed by signal 9 (out of memory: exceeded its memory limit)"
        );
        assert!(
            ReplicaStatus::Exited {
                exit: e,
                started_at_ms: 0,
                finished_at_ms: 0
            }
            .is_terminal()
        );
        assert!(!ReplicaStatus::Starting.is_terminal());
    }
}
