//! Who may write what in a shared view document, checked on arrival.
//!
//! A document is shared by exactly two parties. Every change that is new to us
//! came from the peer (our own changes we already have), so the peer — the node
//! the transport authenticated — is held responsible for all of them:
//!
//! - every new change's actor must be the peer's actor (its public key);
//! - `nodes/<X>/…`: only X writes; the peer may only write `nodes/<peer>`;
//! - `workloads/<peer>/<id>/…`: the peer's own workloads, all but
//!   `replicas/<i>/status/…`, which only the host (we) writes;
//! - `workloads/<us>/<id>/replicas/<i>/status/…`: the peer may write it only
//!   where the replica's `node` is the peer (it hosts that replica); nothing
//!   else under our workloads;
//! - nothing else (root keys are made by the genesis change only).
//!
//! The message is applied in place with a patch log, so the check costs what the
//! message changed, not the document's size; a refused message is undone by the
//! caller (see `View::handle_message`).

use automerge::{Automerge, ChangeHash, Patch, PatchAction, Prop};
use fluidos_contracts::NodeId;

use super::schema::{self, actor_of};

/// A change that broke the ownership rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A change is signed with an actor that is not the peer's.
    #[error("change by actor {actor} is not the peer's")]
    ForeignActor {
        /// The actor, hex.
        actor: String,
    },
    /// The peer wrote another node's entry.
    #[error("wrote the node entry of {node}")]
    OtherNodeEntry {
        /// The entry's key.
        node: String,
    },
    /// The peer wrote the status of a replica it does not host.
    #[error("wrote the status of replica {replica} of workload {workload}, which it does not host")]
    StatusNotHosted {
        /// The workload (`owner/id`).
        workload: String,
        /// The replica index.
        replica: String,
    },
    /// The peer wrote spec or placement of a workload it does not own.
    #[error("wrote `{path}` of a workload it does not own")]
    NotOwner {
        /// The path written.
        path: String,
    },
    /// The peer wrote the status of its own workload's replica (only the host does).
    #[error("wrote `{path}`: replica status is the host's to write")]
    OwnerWroteStatus {
        /// The path written.
        path: String,
    },
    /// The peer wrote outside the schema.
    #[error("wrote `{path}`, outside the schema")]
    OutsideSchema {
        /// The path written.
        path: String,
    },
}

/// Checks that every change in `fork` after `before` is the peer's and that
/// `patches` (what those changes did to the visible state) are within its rights.
pub(crate) fn check(
    fork: &Automerge,
    before: &[ChangeHash],
    patches: &[Patch],
    me: &NodeId,
    peer: &NodeId,
) -> Result<(), Violation> {
    let actor = actor_of(peer);
    for change in fork.get_changes(before) {
        if *change.actor_id() != actor {
            return Err(Violation::ForeignActor {
                actor: change.actor_id().to_hex_string(),
            });
        }
    }
    let me_key = me.to_did_key();
    let peer_key = peer.to_did_key();
    for patch in patches {
        let mut path: Vec<String> = patch.path.iter().map(|(_, p)| prop_str(p)).collect();
        match &patch.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                path.push(key.clone())
            }
            PatchAction::Increment { prop, .. } | PatchAction::Conflict { prop } => {
                path.push(prop_str(prop))
            }
            PatchAction::PutSeq { index, .. }
            | PatchAction::Insert { index, .. }
            | PatchAction::SpliceText { index, .. }
            | PatchAction::DeleteSeq { index, .. } => path.push(index.to_string()),
            PatchAction::Mark { .. } => {}
        }
        allowed(fork, &path, &me_key, &peer_key)?;
    }
    Ok(())
}

fn prop_str(p: &Prop) -> String {
    match p {
        Prop::Map(k) => k.clone(),
        Prop::Seq(i) => i.to_string(),
    }
}

fn allowed(fork: &Automerge, path: &[String], me: &str, peer: &str) -> Result<(), Violation> {
    let joined = || path.join("/");
    match path {
        [root, node, ..] if root == "nodes" => {
            if node == peer {
                Ok(())
            } else {
                Err(Violation::OtherNodeEntry { node: node.clone() })
            }
        }
        [root, owner, rest @ ..] if root == "workloads" => {
            let is_status = rest.len() >= 4 && rest[1] == "replicas" && rest[3] == "status";
            if owner == peer {
                if is_status {
                    Err(Violation::OwnerWroteStatus { path: joined() })
                } else {
                    Ok(())
                }
            } else if owner == me && is_status {
                if replica_node(fork, owner, &rest[0], &rest[2]).as_deref() == Some(peer) {
                    Ok(())
                } else {
                    Err(Violation::StatusNotHosted {
                        workload: format!("{owner}/{}", rest[0]),
                        replica: rest[2].clone(),
                    })
                }
            } else if owner == me {
                Err(Violation::NotOwner { path: joined() })
            } else {
                Err(Violation::OutsideSchema { path: joined() })
            }
        }
        _ => Err(Violation::OutsideSchema { path: joined() }),
    }
}

fn replica_node(fork: &Automerge, owner: &str, id: &str, replica: &str) -> Option<String> {
    let owner: NodeId = owner.parse().ok()?;
    let om = schema::owner_map(fork, &owner)?;
    let v = super::json::read(fork, &om, id)?;
    v.get("replicas")?
        .get(replica)?
        .get("node")?
        .as_str()
        .map(str::to_string)
}
