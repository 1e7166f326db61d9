//! Running replicas on a provider: the [`Runtime`] trait and the process runtime.
//!
//! - [`spec`]: what to run ([`ReplicaSpec`], [`ReplicaId`], [`Limits`]), checked once;
//! - [`types`]: what a runtime reports ([`ReplicaStatus`], [`ExitInfo`], [`Capabilities`]);
//! - [`supervisor`]: the per-replica supervisor program ([`supervise_main`]);
//! - feature `node`: the [`Runtime`] trait and [`ProcessRuntime`], which runs each replica
//!   as a child process of its own supervisor, under cgroup v2, cgroup v1 or rlimits.
//!
//! Replicas outlive the runtime that started them: a supervisor runs in a session of its
//! own and records the replica's state in the runtime's state dir, so a runtime built over
//! the same directory after a crash finds every replica with [`Runtime::recover`] — still
//! running, or ended with its exit code — and never starts one twice.
//!
//! ```no_run
//! # #[cfg(feature = "node")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fluidos_core::runtime::{Limits, ProcessRuntime, ReplicaId, ReplicaSpec, Runtime};
//!
//! let runtime = ProcessRuntime::builder("/var/lib/fluidos/replicas").build()?;
//! println!("{}", runtime.capabilities().summary());
//! runtime.recover().await?;
//! let spec = ReplicaSpec::builder(ReplicaId::new("hello", 0, "c1")?, "/bin/echo")
//!     .arg("hi")
//!     .limits(Limits { memory_bytes: Some(64 << 20), ..Limits::default() })
//!     .build()?;
//! let info = runtime.start(spec).await?;
//! println!("{}: {}", info.id, info.status);
//! # Ok(()) }
//! ```

// Without `node` only the supervisor's half of these is used; the runtime's half (detection,
// reading output) serves `ProcessRuntime`.
#[cfg_attr(not(feature = "node"), allow(dead_code))]
mod cgroup;
pub mod spec;
#[cfg_attr(not(feature = "node"), allow(dead_code))]
mod state;
pub mod supervisor;
pub mod types;

#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "node")]
mod errors;
#[cfg(feature = "node")]
mod process;
#[cfg(feature = "node")]
mod recover;
#[cfg(feature = "node")]
mod set;
#[cfg(feature = "node")]
mod usage;

pub use cgroup::CgroupMode;
pub use spec::{Limits, ReplicaId, ReplicaIdError, ReplicaSpec, ReplicaSpecBuilder, SpecError};
pub use supervisor::supervise_main;
pub use types::{
    Capabilities, Enforcement, ExitInfo, Logs, RUNTIMES_LABEL, Reconciliation, ReplicaEvent,
    ReplicaInfo, ReplicaStatus, ReplicaUsage, Runs,
};

#[cfg(feature = "docker")]
pub use docker::{DockerRuntime, DockerRuntimeBuilder};
#[cfg(feature = "node")]
pub use errors::{
    BuildError, LogsError, ReconcileError, RecoverError, RemoveError, StartError, StatusError,
    StopError,
};
#[cfg(feature = "node")]
pub use process::{
    DEFAULT_PATH, ProcessRuntime, ProcessRuntimeBuilder, SUPERVISOR_BIN, SupervisorCommand,
};

#[cfg(feature = "node")]
pub use runtime_trait::{Runtime, RuntimeFuture};
#[cfg(feature = "node")]
pub use set::RuntimeSet;

#[cfg(feature = "node")]
mod runtime_trait {
    use std::collections::BTreeSet;
    use std::future::Future;
    use std::pin::Pin;

    use tokio::sync::mpsc;

    use super::errors::{
        LogsError, ReconcileError, RecoverError, RemoveError, StartError, StatusError, StopError,
    };
    use super::{
        Capabilities, Logs, Reconciliation, ReplicaEvent, ReplicaId, ReplicaInfo, ReplicaSpec,
        ReplicaUsage, Runs,
    };

    /// The future every [`Runtime`] method returns (boxed, so the trait is object-safe and a
    /// `Node` can hold a `Box<dyn Runtime>`).
    pub type RuntimeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

    /// Something that runs replicas on this node: processes, containers, VMs…
    ///
    /// Contract for implementations:
    /// - replica ids come from the caller and label what runs; [`start`](Self::start) refuses
    ///   an id whose record still exists ([`StartError::AlreadyExists`]) — a replica is never
    ///   started twice, including across restarts of the runtime;
    /// - records survive the runtime: after a restart, [`recover`](Self::recover) reports every
    ///   replica that was started and not removed, without starting any of them;
    /// - status changes the caller did not just get as a return value (a replica ended by
    ///   itself, or was stopped, lost or found running by recovery) are sent on the bounded
    ///   channel of [`take_events`](Self::take_events) once it has been taken; a full channel
    ///   makes the runtime's watchers wait, it never drops an event and never blocks
    ///   `start`/`stop`. [`status`](Self::status) always has the current state;
    /// - [`capabilities`](Self::capabilities) says truthfully which isolation applies.
    pub trait Runtime: Send + Sync {
        /// What this runtime enforces. Cheap; suitable for a `status` command.
        fn capabilities(&self) -> Capabilities;

        /// Which kinds of replica it runs. The default reads [`Capabilities::kind`]: a
        /// `docker` runtime runs images, any other runs commands.
        fn runs(&self) -> Runs {
            let images = self.capabilities().kind == "docker";
            Runs {
                commands: !images,
                images,
            }
        }

        /// Loads the images of a `docker save` tarball file into the engine; returns the
        /// images (tags) it held. Runtimes without images refuse (the default).
        fn load_image<'a>(
            &'a self,
            path: &'a std::path::Path,
        ) -> RuntimeFuture<'a, Result<Vec<String>, String>> {
            let _ = path;
            Box::pin(async { Err("this runtime does not run container images".to_string()) })
        }

        /// One line for `status`: what runs and which isolation applies.
        fn summary(&self) -> String {
            self.capabilities().summary()
        }

        /// Starts a replica; returns once its process runs (or could not be started).
        fn start(&self, spec: ReplicaSpec) -> RuntimeFuture<'_, Result<ReplicaInfo, StartError>>;

        /// Stops a replica (SIGTERM to all its processes, SIGKILL after the grace period) and
        /// returns its final status. Stopping an ended replica returns its status unchanged.
        fn stop<'a>(
            &'a self,
            id: &'a ReplicaId,
        ) -> RuntimeFuture<'a, Result<ReplicaInfo, StopError>>;

        /// The current status of one replica.
        fn status<'a>(
            &'a self,
            id: &'a ReplicaId,
        ) -> RuntimeFuture<'a, Result<ReplicaInfo, StatusError>>;

        /// Every replica the runtime has a record of, in id order.
        fn list(&self) -> RuntimeFuture<'_, Vec<ReplicaInfo>>;

        /// The last `tail` bytes (at most) of a replica's captured output.
        fn logs<'a>(
            &'a self,
            id: &'a ReplicaId,
            tail: usize,
        ) -> RuntimeFuture<'a, Result<Logs, LogsError>>;

        /// Forgets an ended replica: deletes its record and output. Afterwards the id may be
        /// started again.
        fn remove<'a>(&'a self, id: &'a ReplicaId) -> RuntimeFuture<'a, Result<(), RemoveError>>;

        /// Finds the replicas that earlier instances of the runtime started (call once after
        /// building it), re-attaches to those still running and reports all of them.
        fn recover(&self) -> RuntimeFuture<'_, Result<Vec<ReplicaInfo>, RecoverError>>;

        /// The receiving end of the status-change channel. `Some` once, `None` afterwards.
        fn take_events(&self) -> Option<mpsc::Receiver<ReplicaEvent>>;

        /// What each live replica has used so far (cumulative cpu time, current memory),
        /// measured now, in id order. Replicas that cannot be measured are left out; a
        /// runtime that measures nothing returns an empty list (the default).
        fn usage(&self) -> RuntimeFuture<'_, Vec<ReplicaUsage>> {
            Box::pin(async { Vec::new() })
        }

        /// After a restart: [`recover`](Self::recover)s every replica, keeps (adopts) those in
        /// `covered` — the ones an active contract still covers — as they are, running ones
        /// not restarted, and stops and removes the others. Call it instead of `recover`.
        fn reconcile<'a>(
            &'a self,
            covered: &'a BTreeSet<ReplicaId>,
        ) -> RuntimeFuture<'a, Result<Reconciliation, ReconcileError>> {
            Box::pin(async move { self.reconcile_with(&|id| covered.contains(id)).await })
        }

        /// [`reconcile`](Self::reconcile), with `covered` a test of each replica found
        /// (for callers that learn which replicas exist only by recovering them).
        fn reconcile_with<'a>(
            &'a self,
            covered: &'a (dyn Fn(&ReplicaId) -> bool + Send + Sync),
        ) -> RuntimeFuture<'a, Result<Reconciliation, ReconcileError>> {
            Box::pin(async move {
                let found = self.recover().await?;
                let mut done = Reconciliation::default();
                for info in found {
                    if covered(&info.id) {
                        done.adopted.push(info);
                        continue;
                    }
                    let last = match self.stop(&info.id).await {
                        Ok(last) => last,
                        Err(e) => {
                            done.failed.push((info.id, e.to_string()));
                            continue;
                        }
                    };
                    match self.remove(&info.id).await {
                        Ok(()) => done.removed.push(last),
                        Err(e) => done.failed.push((info.id, e.to_string())),
                    }
                }
                Ok(done)
            })
        }
    }
}
