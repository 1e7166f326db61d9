//! The view's configuration, events, errors and read-side types.

use fluidos_contracts::{NodeId, Resources};

use super::{NodeEntry, Violation, WorkloadRecord};

/// Limits of a [`View`]. The defaults keep a relationship's document well under 1 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewConfig {
    /// Largest frame accepted or sent (default 4 MiB).
    pub max_message_bytes: usize,
    /// The leader compacts a shared document when its history holds more changes (default 2000).
    pub compact_after_changes: u64,
    /// How long an ended workload keeps its spec before aging out, ms (default 1 h).
    pub retain_ended_ms: u64,
    /// How many aged-out workloads keep their final status (default 1000).
    pub max_ended: usize,
    /// Longest output tail kept per replica, bytes (default 4 KiB).
    pub max_output_tail: usize,
    /// Events kept for [`View::poll_event`] (default 1024; older ones are dropped).
    pub max_events: usize,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 << 20,
            compact_after_changes: 2000,
            retain_ended_ms: 3_600_000,
            max_ended: 1000,
            max_output_tail: 4096,
            max_events: 1024,
        }
    }
}

/// Something the driver may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewEvent {
    /// A peer's changes reached the view.
    Changed {
        /// The peer.
        peer: NodeId,
    },
    /// A peer's message was refused (see the violation); nothing of it was applied.
    Rejected {
        /// The peer.
        peer: NodeId,
        /// What it did.
        violation: Violation,
    },
    /// A shared document started a new epoch (compacted here, or adopted from the peer).
    Compacted {
        /// The peer.
        peer: NodeId,
        /// The new epoch.
        epoch: u64,
    },
    /// An outgoing frame would exceed the size limit and was not sent.
    Oversize {
        /// The peer.
        peer: NodeId,
        /// Its size.
        bytes: usize,
    },
}

/// A frame from a peer was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The frame is larger than [`ViewConfig::max_message_bytes`].
    #[error("view frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The frame or its payload does not decode.
    #[error("malformed view frame: {0}")]
    Malformed(String),
    /// There is no shared document with this peer ([`View::open`] was not called).
    #[error("no view relationship with {0}")]
    UnknownPeer(NodeId),
    /// The peer's changes break the ownership rules; nothing was applied.
    #[error("view change from {peer} rejected: {violation}")]
    Rejected {
        /// The peer.
        peer: NodeId,
        /// What it did.
        violation: Violation,
    },
    /// A snapshot came from the party that does not compact.
    #[error("snapshot from {0}, which is not the compacting party of this document")]
    NotLeader(NodeId),
    /// The leader sent a sync frame of an epoch it never announced.
    #[error("frame of epoch {theirs} from the compacting party, ahead of ours ({ours})")]
    EpochAhead {
        /// The frame's epoch.
        theirs: u64,
        /// Ours.
        ours: u64,
    },
}

/// A local change to the view could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// No such workload.
    #[error("no workload `{0}`")]
    UnknownWorkload(String),
    /// The workload has no such replica.
    #[error("workload `{workload}` has no replica {replica}")]
    UnknownReplica {
        /// The workload.
        workload: String,
        /// The index.
        replica: u32,
    },
    /// No relationship with this node, so nothing can be placed on it or hosted for it.
    #[error("no view relationship with {0}")]
    UnknownPeer(NodeId),
    /// This node does not host that replica, so it cannot write its status.
    #[error("replica {replica} of `{workload}` is not hosted here")]
    NotHosted {
        /// The workload.
        workload: String,
        /// The index.
        replica: u32,
    },
    /// Automerge refused the write (a bug, not a user error).
    #[error("view document: {0}")]
    Document(String),
}

pub(crate) fn doc_err(e: automerge::AutomergeError) -> ViewError {
    ViewError::Document(e.to_string())
}

/// A workload as the view shows it: the owner's record with every replica, from
/// whichever document holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadView {
    /// Who owns it.
    pub owner: NodeId,
    /// Its id (unique per owner).
    pub id: String,
    /// The record (its replicas merged from every document).
    pub record: WorkloadRecord,
}

/// A node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node (this node, or a provider for a virtual node).
    pub id: NodeId,
    /// Its entry.
    pub entry: NodeEntry,
    /// Capacity minus the requests of every replica placed on it that has not ended.
    pub free: Resources,
}
