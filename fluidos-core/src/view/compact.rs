//! History compaction of view documents, coordinated by epochs.
//!
//! Re-creating a document from its state gives it a new history that shares
//! nothing with the old one, so the two parties must not sync old against new.
//! The party with the smaller node id (the leader) compacts: it rebuilds the
//! document, bumps the epoch and sends the whole new document as a snapshot
//! frame; frames of older epochs are ignored. The other party adopts the
//! snapshot and then rewrites, from its old document, everything it owns (its
//! node entry, its workloads' spec and placement, the statuses of replicas it
//! hosts). Each section has exactly one writer, so that writer's copy is the
//! truth: whatever it changed after the leader's last sync survives the
//! compaction, and nothing the leader wrote in the other's sections sticks.

use automerge::sync::State;
use automerge::{Automerge, ReadDoc};
use fluidos_contracts::NodeId;

use super::schema::{self, Part, put_node, put_status, put_workload};
use super::sync::Link;
use super::{SCHEMA, SyncError, View};

/// A fresh document (genesis + one change by `me`) with the same state as `old`.
pub(crate) fn rebuild(old: &Automerge, me: &NodeId) -> Automerge {
    let mut doc = schema::genesis(me);
    let nodes = schema::nodes(old);
    let workloads = schema::workloads(old);
    let _ = View::write(&mut doc, |tx| {
        for (id, e) in &nodes {
            put_node(tx, id, Some(e))?;
        }
        for ((owner, id), rec) in &workloads {
            put_workload(tx, owner, id, Some(rec), Part::All)?;
        }
        Ok(())
    });
    doc
}

/// The leader compacts `link`'s document and queues the snapshot.
pub(crate) fn compact(link: &mut Link, me: &NodeId, _peer: &NodeId) -> bool {
    link.doc = rebuild(&link.doc, me);
    link.epoch += 1;
    link.sync = State::new();
    link.sent_at_heads = None;
    link.snapshot_due = true;
    link.snapshot_sent = None;
    true
}

/// The other party adopts the leader's snapshot of `epoch`.
pub(crate) fn adopt(
    link: &mut Link,
    me: &NodeId,
    peer: &NodeId,
    bytes: &[u8],
    epoch: u64,
) -> Result<(), SyncError> {
    let mut new = Automerge::load(bytes).map_err(|e| SyncError::Malformed(e.to_string()))?;
    let schema_ok = matches!(
        new.get(automerge::ROOT, "schema"),
        Ok(Some((automerge::Value::Scalar(s), _))) if s.as_str() == Some(SCHEMA)
    );
    if !schema_ok
        || schema::root_map(&new, "nodes").is_none()
        || schema::root_map(&new, "workloads").is_none()
    {
        return Err(SyncError::Malformed(
            "snapshot is not a fluidos-view/1 document".into(),
        ));
    }
    new.set_actor(schema::actor_of(me));
    let old = &link.doc;
    let my_node = schema::nodes(old).remove(me);
    let old_workloads = schema::workloads(old);
    let new_workloads = schema::workloads(&new);
    View::write(&mut new, |tx| {
        put_node(tx, me, my_node.as_ref())?;
        for (owner, id) in new_workloads.keys() {
            if owner == me && !old_workloads.contains_key(&(*me, id.clone())) {
                put_workload(tx, me, id, None, Part::OwnerPart)?;
            }
        }
        for ((owner, id), rec) in &old_workloads {
            if owner == me {
                put_workload(tx, me, id, Some(rec), Part::OwnerPart)?;
            } else if owner == peer {
                for (k, r) in &rec.replicas {
                    if r.node.as_ref() == Some(me)
                        && let Some(s) = &r.status
                    {
                        put_status(tx, owner, id, k, s)?;
                    }
                }
            }
        }
        Ok(())
    })
    .map_err(|e| SyncError::Malformed(e.to_string()))?;
    link.doc = new;
    link.epoch = epoch;
    link.sync = State::new();
    link.sent_at_heads = None;
    link.snapshot_sent = None;
    link.snapshot_due = false;
    Ok(())
}
