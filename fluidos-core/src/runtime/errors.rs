//! One error enum per runtime operation.

use std::io;
use std::path::PathBuf;

use super::spec::ReplicaId;

/// Building a [`ProcessRuntime`](super::ProcessRuntime) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The state dir could not be created or opened.
    #[error("cannot use the runtime state dir {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another runtime (another daemon over the same data dir?) holds the state dir's lock.
    #[error(
        "the runtime state dir {0} is in use by another runtime; stop it, or give this one another dir"
    )]
    Locked(PathBuf),
    /// The supervisor program does not exist or is not executable.
    #[error(
        "the replica supervisor {0} is not an executable file; install fluidos-supervise or configure its path"
    )]
    SupervisorNotFound(PathBuf),
}

/// Starting a replica failed. Nothing of it runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A replica with this id has a record already (running, or ended and not removed).
    #[error("replica {0} exists already; stop and remove it before starting it again")]
    AlreadyExists(ReplicaId),
    /// The program was not found (as a path, or in the replica's `PATH`).
    #[error("program {0:?} not found on this node")]
    ProgramNotFound(String),
    /// The program exists but is not an executable file.
    #[error("program {0} is not an executable file")]
    NotExecutable(PathBuf),
    /// The supervisor could not start the process (exec failed, cgroup creation failed,
    /// the memory limit is too small for the program to even load…).
    #[error("replica {id} could not be started: {reason}")]
    Spawn {
        /// The replica.
        id: ReplicaId,
        /// What the supervisor said.
        reason: String,
    },
    /// The supervisor itself failed (see its `supervisor.log` in the replica's directory).
    #[error("the supervisor of replica {id} failed: {reason}")]
    Supervisor {
        /// The replica.
        id: ReplicaId,
        /// What is known.
        reason: String,
    },
    /// Writing the replica's record failed.
    #[error("cannot write the record of replica {id}: {source}")]
    Io {
        /// The replica.
        id: ReplicaId,
        /// Why.
        source: io::Error,
    },
    /// This runtime cannot run this kind of spec (an image on the process runtime, a
    /// program on the Docker runtime).
    #[error("replica {id} cannot run on this runtime: {reason}")]
    Unsupported {
        /// The replica.
        id: ReplicaId,
        /// What is missing.
        reason: String,
    },
    /// The spec's image is not present on this node. fluidos never pulls: load it first
    /// (`DockerRuntime::load_image`, or `docker pull` / `docker load` on the provider).
    #[error(
        "image {image} of replica {id} is not present on this node; load it (docker load, or docker pull where a registry is reachable) first"
    )]
    ImageNotFound {
        /// The replica.
        id: ReplicaId,
        /// The image reference.
        image: String,
    },
    /// The container engine refused or failed the request.
    #[error("the container engine could not start replica {id}: {reason}")]
    Engine {
        /// The replica.
        id: ReplicaId,
        /// What the engine said.
        reason: String,
    },
}

/// Stopping a replica failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopError {
    /// No replica with this id.
    #[error("no replica {0}")]
    NotFound(ReplicaId),
    /// Its supervisor did not report the end in time (grace period + 5 s).
    #[error("replica {0} did not stop in time")]
    Timeout(ReplicaId),
    /// Signalling the supervisor failed.
    #[error("cannot signal the supervisor of replica {id}: {source}")]
    Signal {
        /// The replica.
        id: ReplicaId,
        /// Why.
        source: io::Error,
    },
    /// The container engine refused or failed the request.
    #[error("the container engine could not stop replica {id}: {reason}")]
    Engine {
        /// The replica.
        id: ReplicaId,
        /// What the engine said.
        reason: String,
    },
}

/// Reading a replica's status failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// No replica with this id.
    #[error("no replica {0}")]
    NotFound(ReplicaId),
}

/// Reading a replica's output failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogsError {
    /// No replica with this id.
    #[error("no replica {0}")]
    NotFound(ReplicaId),
    /// Reading the output files failed.
    #[error("cannot read the output of replica {id}: {source}")]
    Io {
        /// The replica.
        id: ReplicaId,
        /// Why.
        source: io::Error,
    },
    /// The container engine refused or failed the request.
    #[error("the container engine could not read the output of replica {id}: {reason}")]
    Engine {
        /// The replica.
        id: ReplicaId,
        /// What the engine said.
        reason: String,
    },
}

/// Removing a replica failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// No replica with this id.
    #[error("no replica {0}")]
    NotFound(ReplicaId),
    /// The replica has not ended; stop it first.
    #[error("replica {0} is still running; stop it first")]
    StillRunning(ReplicaId),
    /// Deleting its record failed.
    #[error("cannot delete the record of replica {id}: {source}")]
    Io {
        /// The replica.
        id: ReplicaId,
        /// Why.
        source: io::Error,
    },
    /// The container engine refused or failed the request.
    #[error("the container engine could not remove replica {id}: {reason}")]
    Engine {
        /// The replica.
        id: ReplicaId,
        /// What the engine said.
        reason: String,
    },
}

/// Recovering replicas failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The state dir could not be read.
    #[error("cannot read the runtime state dir {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The container engine could not list its containers.
    #[error("the container engine could not list the replicas' containers: {0}")]
    Engine(String),
}

/// Reconciling the replicas found after a restart with the ones still covered failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// Finding the replicas failed.
    #[error(transparent)]
    Recover(#[from] RecoverError),
}
