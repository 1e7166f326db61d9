//! One error enum per operation of the Docker runtime that the [`Runtime`](super::super::Runtime)
//! trait does not have.

use std::io;
use std::path::PathBuf;

use crate::runtime::spec::ReplicaId;

/// Connecting to the Docker engine failed: the node has no Docker runtime and offers the
/// process runtime only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No engine answers at the endpoint (no socket, permission denied, not running).
    #[error(
        "no Docker engine reachable at {endpoint}: {reason}; start dockerd (or set DOCKER_HOST), or run replicas with the process runtime"
    )]
    Unavailable {
        /// Where the engine was looked for.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// The engine speaks an API older than the runtime needs.
    #[error(
        "the Docker engine speaks API {found}, older than the {needed} this runtime needs; upgrade docker"
    )]
    TooOld {
        /// The engine's API version.
        found: String,
        /// The oldest one accepted.
        needed: String,
    },
    /// The node label is empty, too long, or holds characters a label value may not.
    #[error(
        "the node label {0:?} is empty, longer than 512 bytes or contains whitespace; give the node's id"
    )]
    BadNodeLabel(String),
}

/// Loading an image (a `docker save` tarball) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadImageError {
    /// The tarball file could not be read.
    #[error("cannot read the image tarball {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The engine refused the tarball (not a `docker save` archive, disk full…).
    #[error("the Docker engine refused the image tarball: {0}")]
    Engine(String),
    /// The engine accepted the tarball but reported no image in it.
    #[error("the tarball holds no image (is it a `docker save` archive?)")]
    Empty,
}

/// Following a replica's output failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowLogsError {
    /// No replica with this id.
    #[error("no replica {0}")]
    NotFound(ReplicaId),
}

/// Reading a replica's published ports failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortsError {
    /// No replica with this id.
    #[error("no replica {0}")]
    NotFound(ReplicaId),
    /// The engine could not say.
    #[error("the Docker engine could not inspect replica {id}: {reason}")]
    Engine {
        /// The replica.
        id: ReplicaId,
        /// What the engine said.
        reason: String,
    },
}
