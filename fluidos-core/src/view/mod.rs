//! The replicated view: nodes and workloads in Automerge documents, synced
//! between the two parties of each contract relationship, I/O-free.
//!
//! # Documents
//!
//! The view is one **local** document (this node's physical entry and the master
//! record of every workload it owns, with the replicas that are unplaced or run
//! here) and one **shared** document per peer it holds contracts with (what the
//! two of them need to know of each other: their node entries, and the workloads
//! of one placed on the other). Why one document per relationship rather than one
//! document with sections: `docs/ARCHITECTURE.md`. The schema is in [`schema`].
//!
//! # Ownership
//!
//! The owner of a workload writes its spec and placement, the host writes the
//! replica's status, each node writes only its own node entry. Changes from a peer
//! are checked before they reach the view ([`ownership`]); a message that breaks
//! the rules is refused whole with [`SyncError::Rejected`] and logged.
//!
//! # Call order
//!
//! The driver owns one `View` and, for each event:
//! 1. tells it about links: [`View::open`] when the first contract with a peer
//!    exists, [`View::connected`] / [`View::disconnected`] as the connection to it
//!    comes and goes;
//! 2. feeds it: [`View::handle_message`] for each frame from a peer, and local
//!    changes ([`View::add_workload`], [`View::place`], [`View::set_status`] …);
//! 3. drains [`View::poll_transmit`] (sends each frame to its peer) and
//!    [`View::poll_event`];
//! 4. calls [`View::age_out`] now and then (e.g. every minute).

mod compact;
mod json;
pub mod ownership;
mod persist;
pub mod schema;
pub mod sync;
mod types;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use automerge::sync::SyncDoc;
use automerge::{Automerge, ReadDoc};
use fluidos_contracts::{NodeId, Resources, Timestamp};

use crate::workload::WorkloadSpec;
pub use ownership::Violation;
pub use persist::LoadError;
pub use schema::{
    NodeEntry, NodeKind, ReplicaRecord, ReplicaState, ReplicaStatus, SCHEMA, WorkloadRecord,
};
use schema::{Part, put_node, put_status, put_workload};
use sync::Link;
pub use sync::{Frame, FrameKind, Transmit};
use types::doc_err;
pub use types::{NodeInfo, SyncError, ViewConfig, ViewError, ViewEvent, WorkloadView};

/// The replicated view. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct View {
    me: NodeId,
    config: ViewConfig,
    local: Automerge,
    links: BTreeMap<NodeId, Link>,
    events: VecDeque<ViewEvent>,
    next_id: u64,
}

impl View {
    /// An empty view for node `me`.
    pub fn new(me: NodeId, config: ViewConfig) -> Self {
        Self {
            local: schema::genesis(&me),
            me,
            config,
            links: BTreeMap::new(),
            events: VecDeque::new(),
            next_id: 0,
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Opens the shared document with `peer` (idempotent).
    pub fn open(&mut self, peer: NodeId) {
        let me = self.me;
        self.links
            .entry(peer)
            .or_insert_with(|| Link::new(schema::genesis(&me)));
    }

    /// Drops the shared document with `peer` (the last contract with it ended).
    pub fn close(&mut self, peer: &NodeId) {
        self.links.remove(peer);
    }

    /// The peers with a shared document.
    pub fn peers(&self) -> impl Iterator<Item = &NodeId> {
        self.links.keys()
    }

    /// The connection to `peer` is up: sync starts afresh.
    pub fn connected(&mut self, peer: &NodeId, now: Instant) {
        if let Some(l) = self.links.get_mut(peer) {
            l.connected = true;
            l.sync = automerge::sync::State::new();
            l.sent_at_heads = None;
            l.snapshot_sent = None;
            l.last_heard = Some(now);
        }
    }

    /// The connection to `peer` is gone; nothing is sent to it until [`View::connected`].
    pub fn disconnected(&mut self, peer: &NodeId) {
        if let Some(l) = self.links.get_mut(peer) {
            l.connected = false;
            l.sync = automerge::sync::State::new();
            l.sent_at_heads = None;
        }
    }

    /// The party that compacts a shared document: the smaller node id.
    fn is_leader(&self, peer: &NodeId) -> bool {
        self.me.as_bytes() < peer.as_bytes()
    }

    fn push_event(&mut self, e: ViewEvent) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ViewEvent> {
        self.events.pop_front()
    }

    // ---- local writes -------------------------------------------------------

    pub(crate) fn write<F>(doc: &mut Automerge, f: F) -> Result<(), ViewError>
    where
        F: FnOnce(
            &mut automerge::transaction::Transaction<'_>,
        ) -> Result<(), automerge::AutomergeError>,
    {
        let mut tx = doc.transaction();
        f(&mut tx).map_err(doc_err)?;
        // An empty transaction makes no change (commit returns None).
        let _ = tx.commit();
        Ok(())
    }

    /// Writes this node's physical entry.
    pub fn set_physical(&mut self, entry: NodeEntry) -> Result<(), ViewError> {
        let me = self.me;
        Self::write(&mut self.local, |tx| put_node(tx, &me, Some(&entry)))
    }

    /// Writes the entry this node shows `peer`: the capacity it sells it (its
    /// virtual node on the peer's side), or removes it with `None`.
    pub fn set_entry_for(
        &mut self,
        peer: &NodeId,
        entry: Option<NodeEntry>,
    ) -> Result<(), ViewError> {
        let me = self.me;
        let link = self
            .links
            .get_mut(peer)
            .ok_or(ViewError::UnknownPeer(*peer))?;
        Self::write(&mut link.doc, |tx| put_node(tx, &me, entry.as_ref()))
    }

    /// The entry this node last wrote for `peer` (see [`set_entry_for`](Self::set_entry_for)).
    pub fn entry_for(&self, peer: &NodeId) -> Option<NodeEntry> {
        schema::nodes(&self.links.get(peer)?.doc).remove(&self.me)
    }

    /// Adds a workload owned by this node, every replica pending; returns its id.
    pub fn add_workload(
        &mut self,
        spec: WorkloadSpec,
        now: Timestamp,
    ) -> Result<String, ViewError> {
        self.next_id += 1;
        let id = format!("{}-{:x}-{}", spec.name, now.0, self.next_id);
        let status = ReplicaStatus {
            state: ReplicaState::Pending,
            since: now,
            restarts: 0,
            output_tail: String::new(),
        };
        let replicas = (0..spec.replicas)
            .map(|i| {
                (
                    i.to_string(),
                    ReplicaRecord {
                        node: None,
                        placed_at: None,
                        status: Some(status.clone()),
                    },
                )
            })
            .collect();
        let record = WorkloadRecord {
            name: spec.name.clone(),
            spec: Some(spec),
            created_at: now,
            ended_at: None,
            replicas,
        };
        let me = self.me;
        Self::write(&mut self.local, |tx| {
            put_workload(tx, &me, &id, Some(&record), Part::All)
        })?;
        Ok(id)
    }

    fn local_record(&self, id: &str) -> Result<WorkloadRecord, ViewError> {
        schema::owner_map(&self.local, &self.me)
            .and_then(|om| json::read(&self.local, &om, id))
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| ViewError::UnknownWorkload(id.to_string()))
    }

    /// Places replica `replica` of this node's workload `id` on `node` (this node
    /// or a peer), moving it out of the document that held it.
    pub fn place(
        &mut self,
        id: &str,
        replica: u32,
        node: NodeId,
        now: Timestamp,
    ) -> Result<(), ViewError> {
        let me = self.me;
        let mut local = self.local_record(id)?;
        let key = replica.to_string();
        let Some(spec) = local.spec.clone() else {
            return Err(ViewError::UnknownWorkload(id.to_string()));
        };
        if replica >= spec.replicas {
            return Err(ViewError::UnknownReplica {
                workload: id.into(),
                replica,
            });
        }
        if node != me && !self.links.contains_key(&node) {
            return Err(ViewError::UnknownPeer(node));
        }
        // Out of whichever shared document held it.
        for (peer, link) in self.links.iter_mut() {
            if *peer == node {
                continue;
            }
            let held = schema::workload(&link.doc, &me, id);
            if let Some(mut rec) = held
                && rec.replicas.remove(&key).is_some()
            {
                let rec = (!rec.replicas.is_empty()).then_some(rec);
                Self::write(&mut link.doc, |tx| {
                    put_workload(tx, &me, id, rec.as_ref(), Part::OwnerPart)
                })?;
            }
        }
        let placed = ReplicaRecord {
            node: Some(node),
            placed_at: Some(now),
            status: (node == me).then(|| ReplicaStatus {
                state: ReplicaState::Pending,
                since: now,
                restarts: 0,
                output_tail: String::new(),
            }),
        };
        if node == me {
            local.replicas.insert(key, placed);
        } else {
            local.replicas.remove(&key);
            let link = self
                .links
                .get_mut(&node)
                .ok_or(ViewError::UnknownPeer(node))?;
            let mut shared = schema::workload(&link.doc, &me, id).unwrap_or(WorkloadRecord {
                spec: Some(spec),
                name: local.name.clone(),
                created_at: local.created_at,
                ended_at: None,
                replicas: BTreeMap::new(),
            });
            shared.replicas.insert(key, placed);
            Self::write(&mut link.doc, |tx| {
                put_workload(tx, &me, id, Some(&shared), Part::OwnerPart)
            })?;
        }
        Self::write(&mut self.local, |tx| {
            put_workload(tx, &me, id, Some(&local), Part::All)
        })
    }

    /// Sets the status of a replica: as its host (a peer's workload placed here,
    /// or this node's own running here), or as the owner of a replica not placed yet.
    pub fn set_status(
        &mut self,
        owner: &NodeId,
        id: &str,
        replica: u32,
        mut status: ReplicaStatus,
    ) -> Result<(), ViewError> {
        let max = self.config.max_output_tail;
        if status.output_tail.len() > max {
            let mut cut = status.output_tail.len() - max;
            while !status.output_tail.is_char_boundary(cut) {
                cut += 1;
            }
            status.output_tail = status.output_tail[cut..].to_string();
        }
        let key = replica.to_string();
        let me = self.me;
        let not_hosted = || ViewError::NotHosted {
            workload: id.to_string(),
            replica,
        };
        let doc = if *owner == me {
            let rec = self.local_record(id)?;
            let r = rec.replicas.get(&key).ok_or_else(not_hosted)?;
            if r.node.is_some_and(|n| n != me) {
                return Err(not_hosted());
            }
            &mut self.local
        } else {
            let link = self
                .links
                .get_mut(owner)
                .ok_or(ViewError::UnknownPeer(*owner))?;
            let rec = schema::workload(&link.doc, owner, id)
                .ok_or_else(|| ViewError::UnknownWorkload(id.to_string()))?;
            if rec.replicas.get(&key).and_then(|r| r.node) != Some(me) {
                return Err(not_hosted());
            }
            &mut link.doc
        };
        let mut done = false;
        Self::write(doc, |tx| {
            done = put_status(tx, owner, id, &key, &status)?;
            Ok(())
        })?;
        if done { Ok(()) } else { Err(not_hosted()) }
    }

    /// Takes replica `replica` of this node's workload `id` back from the node it
    /// was placed on (which refused it, or is gone): it is unplaced again, with
    /// `status` (written by this node, its owner).
    pub fn unplace(
        &mut self,
        id: &str,
        replica: u32,
        status: ReplicaStatus,
    ) -> Result<(), ViewError> {
        let me = self.me;
        let mut local = self.local_record(id)?;
        let key = replica.to_string();
        for link in self.links.values_mut() {
            let held = schema::workload(&link.doc, &me, id);
            if let Some(mut rec) = held
                && rec.replicas.remove(&key).is_some()
            {
                let rec = (!rec.replicas.is_empty()).then_some(rec);
                Self::write(&mut link.doc, |tx| {
                    put_workload(tx, &me, id, rec.as_ref(), Part::OwnerPart)
                })?;
            }
        }
        local.replicas.insert(
            key,
            ReplicaRecord {
                node: None,
                placed_at: None,
                status: Some(status),
            },
        );
        Self::write(&mut self.local, |tx| {
            put_workload(tx, &me, id, Some(&local), Part::All)
        })
    }

    /// Removes this node's workload `id` from every document (undeploy).
    pub fn remove_workload(&mut self, id: &str) -> Result<(), ViewError> {
        self.local_record(id)?;
        let me = self.me;
        Self::write(&mut self.local, |tx| {
            put_workload(tx, &me, id, None, Part::All)
        })?;
        for link in self.links.values_mut() {
            Self::write(&mut link.doc, |tx| {
                put_workload(tx, &me, id, None, Part::OwnerPart)
            })?;
        }
        Ok(())
    }

    // ---- reads ----------------------------------------------------------------

    /// Every workload: this node's own (replicas merged from all documents) and
    /// the peers' workloads placed here.
    pub fn workloads(&self) -> Vec<WorkloadView> {
        let mut merged: BTreeMap<(NodeId, String), WorkloadRecord> = schema::workloads(&self.local);
        for link in self.links.values() {
            for ((owner, id), rec) in schema::workloads(&link.doc) {
                match merged.get_mut(&(owner, id.clone())) {
                    Some(base) => merge_replicas(base, rec),
                    None => {
                        merged.insert((owner, id), rec);
                    }
                }
            }
        }
        merged
            .into_iter()
            .map(|((owner, id), record)| WorkloadView { owner, id, record })
            .collect()
    }

    /// One workload by owner and id (read from each document, not the whole view).
    pub fn workload(&self, owner: &NodeId, id: &str) -> Option<WorkloadView> {
        let mut record: Option<WorkloadRecord> = schema::workload(&self.local, owner, id);
        for link in self.links.values() {
            if let Some(rec) = schema::workload(&link.doc, owner, id) {
                match record.as_mut() {
                    Some(base) => merge_replicas(base, rec),
                    None => record = Some(rec),
                }
            }
        }
        record.map(|record| WorkloadView {
            owner: *owner,
            id: id.to_string(),
            record,
        })
    }

    /// This node's physical entry and one virtual node per peer that sells to it,
    /// each with what is free after the replicas placed on it.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut out = Vec::new();
        let workloads = self.workloads();
        let used = |node: &NodeId| {
            let mut sum = Resources::ZERO;
            for w in &workloads {
                let Some(spec) = &w.record.spec else { continue };
                for r in w.record.replicas.values() {
                    let live = r.status.as_ref().is_none_or(|s| !s.state.is_final());
                    if r.node.as_ref() == Some(node) && live {
                        sum = sum.checked_add(&spec.requests()).unwrap_or(sum);
                    }
                }
            }
            sum
        };
        if let Some(e) = schema::nodes(&self.local).remove(&self.me) {
            let free = e.capacity.saturating_sub(&used(&self.me));
            out.push(NodeInfo {
                id: self.me,
                entry: e,
                free,
            });
        }
        for (peer, link) in &self.links {
            if let Some(e) = schema::nodes(&link.doc).remove(peer) {
                let free = e.capacity.saturating_sub(&used(peer));
                out.push(NodeInfo {
                    id: *peer,
                    entry: e,
                    free,
                });
            }
        }
        out
    }

    /// The shared document with `peer`, for inspection.
    pub fn shared_doc(&self, peer: &NodeId) -> Option<&Automerge> {
        self.links.get(peer).map(|l| &l.doc)
    }

    /// The shared document's epoch (how many compactions it went through).
    pub fn epoch(&self, peer: &NodeId) -> Option<u64> {
        self.links.get(peer).map(|l| l.epoch)
    }

    /// Saved size of every document, bytes.
    pub fn saved_size(&self) -> usize {
        self.local.save().len()
            + self
                .links
                .values()
                .map(|l| l.doc.save().len())
                .sum::<usize>()
    }

    /// The whole view as one standard Automerge document (schema in
    /// `docs/ARCHITECTURE.md`): every node entry and every workload, merged.
    pub fn export(&self) -> Vec<u8> {
        let mut doc = schema::genesis(&self.me);
        let nodes = self.nodes();
        let workloads = self.workloads();
        let _ = Self::write(&mut doc, |tx| {
            for n in &nodes {
                put_node(tx, &n.id, Some(&n.entry))?;
            }
            for w in &workloads {
                put_workload(tx, &w.owner, &w.id, Some(&w.record), Part::All)?;
            }
            Ok(())
        });
        doc.save()
    }

    // ---- sync -------------------------------------------------------------------

    /// Applies one frame from `peer`. On error nothing of it reached the view.
    pub fn handle_message(
        &mut self,
        peer: &NodeId,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), SyncError> {
        if bytes.len() > self.config.max_message_bytes {
            return Err(SyncError::TooLarge {
                size: bytes.len(),
                limit: self.config.max_message_bytes,
            });
        }
        let frame = Frame::decode(bytes).map_err(|e| SyncError::Malformed(e.to_string()))?;
        let leader = self.is_leader(peer);
        let me = self.me;
        let link = self
            .links
            .get_mut(peer)
            .ok_or(SyncError::UnknownPeer(*peer))?;
        link.last_heard = Some(now);
        link.sent_at_heads = None;
        match frame.kind {
            FrameKind::Snapshot => {
                if leader {
                    return Err(SyncError::NotLeader(*peer));
                }
                if frame.epoch <= link.epoch {
                    return Ok(()); // a repeat of one we adopted
                }
                let epoch = frame.epoch;
                compact::adopt(link, &me, peer, &frame.payload, epoch)?;
                self.push_event(ViewEvent::Compacted { peer: *peer, epoch });
                Ok(())
            }
            FrameKind::Sync if frame.epoch < link.epoch => {
                // The peer has not seen our compaction yet.
                if leader && link.snapshot_sent != Some(link.epoch) {
                    link.snapshot_due = true;
                }
                Ok(())
            }
            FrameKind::Sync if frame.epoch > link.epoch => {
                if !leader {
                    return Err(SyncError::EpochAhead {
                        theirs: frame.epoch,
                        ours: link.epoch,
                    });
                }
                Err(SyncError::Malformed(format!(
                    "epoch {} is ahead of ours ({}) and we compact",
                    frame.epoch, link.epoch
                )))
            }
            FrameKind::Sync => {
                let msg = automerge::sync::Message::decode(&frame.payload)
                    .map_err(|e| SyncError::Malformed(e.to_string()))?;
                sync::check_blooms(&msg).map_err(|e| SyncError::Malformed(e.to_string()))?;
                // Applied in place and checked; a refused message is undone by going
                // back to the old heads (a fork of the history up to them), which costs
                // O(history) only when a peer misbehaves.
                let before = link.doc.get_heads();
                let mut state = link.sync.clone();
                let restore = |doc: &mut Automerge| {
                    if doc.get_heads() != before
                        && let Ok(mut old) = doc.fork_at(&before)
                    {
                        old.set_actor(schema::actor_of(&me));
                        *doc = old;
                    }
                };
                let mut log = automerge::PatchLog::active();
                if let Err(e) = link
                    .doc
                    .receive_sync_message_log_patches(&mut state, msg, &mut log)
                {
                    restore(&mut link.doc);
                    return Err(SyncError::Malformed(e.to_string()));
                }
                let patches = link.doc.make_patches(&mut log);
                if let Err(violation) = ownership::check(&link.doc, &before, &patches, &me, peer) {
                    restore(&mut link.doc);
                    tracing::warn!(peer = %peer, %violation, "view change rejected");
                    self.push_event(ViewEvent::Rejected {
                        peer: *peer,
                        violation: violation.clone(),
                    });
                    return Err(SyncError::Rejected {
                        peer: *peer,
                        violation,
                    });
                }
                let changed = link.doc.get_heads() != before;
                link.sync = state;
                if changed {
                    self.push_event(ViewEvent::Changed { peer: *peer });
                }
                Ok(())
            }
        }
    }

    /// The next frame to send, if any. Call until `None` after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let peers: Vec<NodeId> = self.links.keys().copied().collect();
        for peer in peers {
            let leader = self.is_leader(&peer);
            let limit = self.config.max_message_bytes;
            let threshold = self.config.compact_after_changes;
            let me = self.me;
            let Some(link) = self.links.get_mut(&peer) else {
                continue;
            };
            if leader
                && link.doc.stats().num_changes > threshold
                && compact::compact(link, &me, &peer)
            {
                let epoch = link.epoch;
                self.push_event(ViewEvent::Compacted { peer, epoch });
            }
            let Some(link) = self.links.get_mut(&peer) else {
                continue;
            };
            if !link.connected {
                continue;
            }
            let frame = if link.snapshot_due {
                link.snapshot_due = false;
                link.snapshot_sent = Some(link.epoch);
                Frame {
                    kind: FrameKind::Snapshot,
                    epoch: link.epoch,
                    payload: link.doc.save(),
                }
            } else if link.sent_at_heads.as_deref() == Some(&link.doc.get_heads()[..]) {
                // One sync message per (peer input, document state); see `Link::sent_at_heads`.
                continue;
            } else if let Some(msg) = link.doc.generate_sync_message(&mut link.sync) {
                link.sent_at_heads = Some(link.doc.get_heads());
                Frame {
                    kind: FrameKind::Sync,
                    epoch: link.epoch,
                    payload: msg.encode(),
                }
            } else {
                continue;
            };
            let bytes = frame.encode();
            if bytes.len() > limit {
                self.push_event(ViewEvent::Oversize {
                    peer,
                    bytes: bytes.len(),
                });
                continue;
            }
            return Some(Transmit { peer, bytes });
        }
        None
    }

    /// Compacts the shared document with `peer` now, if this node is its leader
    /// (the smaller node id). Returns whether it did.
    pub fn compact(&mut self, peer: &NodeId) -> bool {
        if !self.is_leader(peer) {
            return false;
        }
        let me = self.me;
        let done = self
            .links
            .get_mut(peer)
            .is_some_and(|l| compact::compact(l, &me, peer));
        if done && let Some(epoch) = self.epoch(peer) {
            self.push_event(ViewEvent::Compacted { peer: *peer, epoch });
        }
        done
    }

    /// Ages out this node's ended workloads: once every replica has ended and
    /// [`ViewConfig::retain_ended_ms`] has passed, the record keeps only its name,
    /// times and final replica statuses (exit code, output tail) in the local
    /// document and leaves the shared ones; beyond [`ViewConfig::max_ended`] such
    /// records, the oldest go. The local document is then re-created from its
    /// state, which drops its history.
    pub fn age_out(&mut self, now: Timestamp) -> Result<(), ViewError> {
        let me = self.me;
        let mut aged: Vec<(Timestamp, String)> = Vec::new();
        for w in self.workloads() {
            if w.owner != me {
                continue;
            }
            let mut rec = w.record;
            let ended = rec
                .replicas
                .values()
                .filter_map(|r| r.status.as_ref())
                .filter(|s| s.state.is_final())
                .map(|s| s.since)
                .max();
            let all_final = !rec.replicas.is_empty()
                && rec
                    .replicas
                    .values()
                    .all(|r| r.status.as_ref().is_some_and(|s| s.state.is_final()));
            if !all_final {
                continue;
            }
            let ended_at = rec.ended_at.or(ended).unwrap_or(now);
            if rec.spec.is_some() && now.0.saturating_sub(ended_at.0) >= self.config.retain_ended_ms
            {
                rec.spec = None;
                rec.ended_at = Some(ended_at);
                Self::write(&mut self.local, |tx| {
                    put_workload(tx, &me, &w.id, Some(&rec), Part::All)
                })?;
                for link in self.links.values_mut() {
                    Self::write(&mut link.doc, |tx| {
                        put_workload(tx, &me, &w.id, None, Part::OwnerPart)
                    })?;
                }
            }
            if rec.spec.is_none() {
                aged.push((ended_at, w.id));
            }
        }
        aged.sort();
        let excess = aged.len().saturating_sub(self.config.max_ended);
        for (_, id) in aged.into_iter().take(excess) {
            Self::write(&mut self.local, |tx| {
                put_workload(tx, &me, &id, None, Part::All)
            })?;
        }
        self.local = compact::rebuild(&self.local, &me);
        Ok(())
    }

    /// Whether the shared document with `peer` has the same heads as `other`'s
    /// with us (for tests and diagnostics).
    pub fn heads(&self, peer: &NodeId) -> Option<Vec<automerge::ChangeHash>> {
        self.links.get(peer).map(|l| l.doc.get_heads())
    }

    /// Writes through a raw transaction on the shared document with `peer`,
    /// bypassing the typed API — for tests that play a forging peer.
    pub fn danger_raw_write<F>(&mut self, peer: &NodeId, f: F) -> Result<(), ViewError>
    where
        F: FnOnce(
            &mut automerge::transaction::Transaction<'_>,
        ) -> Result<(), automerge::AutomergeError>,
    {
        let link = self
            .links
            .get_mut(peer)
            .ok_or(ViewError::UnknownPeer(*peer))?;
        Self::write(&mut link.doc, f)
    }
}

/// Merges the replicas of `rec` (one document's copy) into `base`: the later placement wins.
fn merge_replicas(base: &mut WorkloadRecord, rec: WorkloadRecord) {
    for (k, r) in rec.replicas {
        let newer = base
            .replicas
            .get(&k)
            .is_none_or(|b| b.placed_at <= r.placed_at);
        if newer {
            base.replicas.insert(k, r);
        }
    }
}

/// The trait forging tests write through in [`View::danger_raw_write`].
pub use automerge::transaction::Transactable as RawTransactable;
