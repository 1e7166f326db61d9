//! The typed schema of a view document and its reading and writing.
//!
//! Root of every document (documented for other languages in `docs/ARCHITECTURE.md`):
//!
//! ```text
//! { "schema": "fluidos-view/1",
//!   "nodes":     { <did:key>: NodeEntry },
//!   "workloads": { <owner did:key>: { <workload id>: WorkloadRecord } } }
//! ```

use std::collections::BTreeMap;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjId, ObjType, ROOT, ReadDoc, Value};
use fluidos_contracts::{Architecture, Location, NodeId, Resources, Timestamp};
use serde::{Deserialize, Serialize};

use crate::workload::{EndCause, WorkloadSpec};

/// The value of the root key `schema`.
pub const SCHEMA: &str = "fluidos-view/1";
/// The actor of the genesis change that every view document starts from.
pub(crate) const GENESIS_ACTOR: [u8; 16] = [0; 16];

/// Whether a node entry is a machine or capacity bought from a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A machine: this node's own capacity.
    Physical,
    /// The capacity a provider sells to the other party of the document.
    Virtual,
}

/// One node entry: written only by the node it describes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Physical or virtual.
    pub kind: NodeKind,
    /// Total capacity: the machine's sellable capacity, or the sum of the active
    /// contracts with the other party.
    pub capacity: Resources,
    /// Capacity minus what runs, as the node itself measures it.
    pub allocatable: Resources,
    /// Labels (`zone=edge`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Location, if disclosed.
    #[serde(default)]
    pub location: Option<Location>,
    /// CPU architecture.
    pub architecture: Architecture,
    /// Price of the capacity, micro-units per hour (None: own capacity, free).
    #[serde(default)]
    pub price_micros_per_hour: Option<u64>,
    /// Currency of the price.
    #[serde(default)]
    pub currency: Option<String>,
    /// Grid carbon intensity, gCO2eq/kWh.
    #[serde(default)]
    pub carbon_g_per_kwh: Option<u32>,
    /// GPU model, if the node has GPUs.
    #[serde(default)]
    pub gpu_model: Option<String>,
    /// The provider's partition step, when more can be bought from it.
    #[serde(default)]
    pub step: Option<Resources>,
    /// Contracts (hex ids) backing a virtual node.
    #[serde(default)]
    pub contracts: Vec<String>,
    /// The measured usage of each of those contracts (hex id → counters), as the
    /// provider samples its replicas (`crate::usage`); empty for a physical node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, crate::usage::ContractUsage>,
    /// When the entry was last written (wall clock, ms).
    pub updated_at: Timestamp,
}

/// Where a replica is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReplicaState {
    /// Waiting to be placed.
    Pending,
    /// Placement is running.
    Placing,
    /// Capacity is being bought for it.
    Acquiring,
    /// The host is starting it.
    Starting,
    /// It runs.
    Running,
    /// It ended by itself.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// It could not be started or was lost.
    Failed {
        /// Why.
        reason: String,
        /// Why, typed, when it is one of [`EndCause`]'s (lost with its provider,
        /// killed at its memory limit …); absent for other failures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<EndCause>,
    },
    /// The host stopped it (contract ended, undeploy, out of capacity).
    Evicted {
        /// Why.
        reason: String,
        /// Why, typed: who ended it or its contract, or that the contract expired.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<EndCause>,
    },
}

impl ReplicaState {
    /// `failed` for a reason that is none of [`EndCause`]'s.
    pub fn failed(reason: impl Into<String>) -> Self {
        ReplicaState::Failed {
            reason: reason.into(),
            cause: None,
        }
    }

    /// `failed` with a typed cause.
    pub fn failed_by(cause: EndCause, reason: impl Into<String>) -> Self {
        ReplicaState::Failed {
            reason: reason.into(),
            cause: Some(cause),
        }
    }

    /// `evicted` with a typed cause.
    pub fn evicted(cause: EndCause, reason: impl Into<String>) -> Self {
        ReplicaState::Evicted {
            reason: reason.into(),
            cause: Some(cause),
        }
    }

    /// The typed cause of a failed or evicted replica, when it has one.
    pub fn cause(&self) -> Option<EndCause> {
        match self {
            ReplicaState::Failed { cause, .. } | ReplicaState::Evicted { cause, .. } => *cause,
            _ => None,
        }
    }

    /// Whether the replica has ended (exited, failed or evicted).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ReplicaState::Exited { .. }
                | ReplicaState::Failed { .. }
                | ReplicaState::Evicted { .. }
        )
    }

    /// The exit code or reason, for people (empty for the other states).
    pub fn detail(&self) -> String {
        match self {
            ReplicaState::Exited { code } => format!("exit code {code}"),
            ReplicaState::Failed { reason, .. } | ReplicaState::Evicted { reason, .. } => {
                reason.clone()
            }
            _ => String::new(),
        }
    }

    /// [`ReplicaState::detail`] led by the typed cause, when there is one
    /// (`provider lost: no word from … for 31 s`).
    pub fn described(&self) -> String {
        match self.cause() {
            Some(c) => format!("{c}: {}", self.detail()),
            None => self.detail(),
        }
    }

    /// The state's name (`running`, `exited` …).
    pub fn name(&self) -> &'static str {
        match self {
            ReplicaState::Pending => "pending",
            ReplicaState::Placing => "placing",
            ReplicaState::Acquiring => "acquiring",
            ReplicaState::Starting => "starting",
            ReplicaState::Running => "running",
            ReplicaState::Exited { .. } => "exited",
            ReplicaState::Failed { .. } => "failed",
            ReplicaState::Evicted { .. } => "evicted",
        }
    }
}

/// A replica's status with its timestamp and a bounded tail of its output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The state.
    #[serde(flatten)]
    pub state: ReplicaState,
    /// When it entered the state (wall clock, ms).
    pub since: Timestamp,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u32,
    /// The last bytes of its output (at most [`super::ViewConfig::max_output_tail`]).
    #[serde(default)]
    pub output_tail: String,
}

/// One replica of a workload, as one document holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The node it is placed on (written by the owner); None while unplaced.
    #[serde(default)]
    pub node: Option<NodeId>,
    /// When it was placed (wall clock, ms).
    #[serde(default)]
    pub placed_at: Option<Timestamp>,
    /// Its status (written by the host; by the owner while unplaced).
    #[serde(default)]
    pub status: Option<ReplicaStatus>,
}

/// A workload as one document holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// The spec (with its intent); None once the ended workload aged out.
    #[serde(default)]
    pub spec: Option<WorkloadSpec>,
    /// The spec's name (kept after aging out).
    pub name: String,
    /// When it was created (wall clock, ms).
    pub created_at: Timestamp,
    /// When the owner saw every replica end; None while any runs.
    #[serde(default)]
    pub ended_at: Option<Timestamp>,
    /// The replicas this document holds, by index (`"0"`, `"1"` …).
    #[serde(default)]
    pub replicas: BTreeMap<String, ReplicaRecord>,
}

/// The actor id a node writes with: its 32-byte public key.
pub(crate) fn actor_of(node: &NodeId) -> ActorId {
    ActorId::from(&node.as_bytes()[..])
}

/// A new document holding only the genesis change. The change is the same bytes
/// on every node (fixed actor, time 0), so two parties that create their document
/// independently share it and sync merges into the same `nodes` and `workloads` maps.
pub(crate) fn genesis(me: &NodeId) -> Automerge {
    let mut doc = Automerge::new().with_actor(ActorId::from(&GENESIS_ACTOR[..]));
    let made = doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| CommitOptions::default().with_time(0),
        |tx| {
            tx.put(ROOT, "schema", SCHEMA)?;
            tx.put_object(ROOT, "nodes", ObjType::Map)?;
            tx.put_object(ROOT, "workloads", ObjType::Map)?;
            Ok(())
        },
    );
    debug_assert!(made.is_ok());
    doc.set_actor(actor_of(me));
    doc
}

/// The object id of a root map (`nodes`, `workloads`).
pub(crate) fn root_map<R: ReadDoc>(doc: &R, key: &str) -> Option<ObjId> {
    match doc.get(ROOT, key).ok()?? {
        (Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

/// The object id of `workloads/<owner>`, if present.
pub(crate) fn owner_map<R: ReadDoc>(doc: &R, owner: &NodeId) -> Option<ObjId> {
    let w = root_map(doc, "workloads")?;
    match doc.get(&w, owner.to_did_key()).ok()?? {
        (Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

/// Every node entry that parses.
pub(crate) fn nodes<R: ReadDoc>(doc: &R) -> BTreeMap<NodeId, NodeEntry> {
    let Some(obj) = root_map(doc, "nodes") else {
        return BTreeMap::new();
    };
    doc.keys(&obj)
        .filter_map(|k| {
            let id: NodeId = k.parse().ok()?;
            let v = super::json::read(doc, &obj, &k)?;
            Some((id, serde_json::from_value(v).ok()?))
        })
        .collect()
}

/// One workload record, if present and it parses.
pub(crate) fn workload<R: ReadDoc>(doc: &R, owner: &NodeId, id: &str) -> Option<WorkloadRecord> {
    let om = owner_map(doc, owner)?;
    serde_json::from_value(super::json::read(doc, &om, id)?).ok()
}

/// Every workload record that parses, by (owner, id).
pub(crate) fn workloads<R: ReadDoc>(doc: &R) -> BTreeMap<(NodeId, String), WorkloadRecord> {
    let mut out = BTreeMap::new();
    let Some(w) = root_map(doc, "workloads") else {
        return out;
    };
    for owner_key in doc.keys(&w) {
        let Ok(owner) = owner_key.parse::<NodeId>() else {
            continue;
        };
        let Some(om) = owner_map(doc, &owner) else {
            continue;
        };
        for id in doc.keys(&om) {
            if let Some(rec) = super::json::read(doc, &om, &id)
                .and_then(|v| serde_json::from_value::<WorkloadRecord>(v).ok())
            {
                out.insert((owner, id), rec);
            }
        }
    }
    out
}

/// Writes (reconciles) `nodes/<node>`, or deletes it for `None`.
pub(crate) fn put_node<T: Transactable + ReadDoc>(
    tx: &mut T,
    node: &NodeId,
    entry: Option<&NodeEntry>,
) -> Result<(), automerge::AutomergeError> {
    let Some(obj) = root_map(tx, "nodes") else {
        return Ok(());
    };
    let key = node.to_did_key();
    match entry {
        Some(e) => super::json::reconcile(tx, &obj, &key, &to_json(e), &|_| false),
        None => {
            if tx.get(&obj, key.as_str())?.is_some() {
                tx.delete(&obj, key.as_str())?;
            }
            Ok(())
        }
    }
}

/// Which part of a workload record a writer leaves alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Everything (the writer is the only writer: the local document).
    All,
    /// All but replica statuses (the owner, in a shared document).
    OwnerPart,
}

/// Writes (reconciles) `workloads/<owner>/<id>`, or deletes it for `None`.
pub(crate) fn put_workload<T: Transactable + ReadDoc>(
    tx: &mut T,
    owner: &NodeId,
    id: &str,
    record: Option<&WorkloadRecord>,
    part: Part,
) -> Result<(), automerge::AutomergeError> {
    let Some(w) = root_map(tx, "workloads") else {
        return Ok(());
    };
    let om = match owner_map(tx, owner) {
        Some(om) => om,
        None if record.is_none() => return Ok(()),
        None => tx.put_object(&w, owner.to_did_key(), ObjType::Map)?,
    };
    match record {
        Some(r) => {
            let keep = move |path: &[String]| {
                part == Part::OwnerPart
                    && path.len() == 3
                    && path[0] == "replicas"
                    && path[2] == "status"
            };
            super::json::reconcile(tx, &om, id, &to_json(r), &keep)
        }
        None => {
            if tx.get(&om, id)?.is_some() {
                tx.delete(&om, id)?;
            }
            Ok(())
        }
    }
}

/// Writes (reconciles) the status of one replica, as its host.
pub(crate) fn put_status<T: Transactable + ReadDoc>(
    tx: &mut T,
    owner: &NodeId,
    id: &str,
    replica: &str,
    status: &ReplicaStatus,
) -> Result<bool, automerge::AutomergeError> {
    let Some(om) = owner_map(tx, owner) else {
        return Ok(false);
    };
    let Some((Value::Object(ObjType::Map), wl)) = tx.get(&om, id)? else {
        return Ok(false);
    };
    let Some((Value::Object(ObjType::Map), reps)) = tx.get(&wl, "replicas")? else {
        return Ok(false);
    };
    let Some((Value::Object(ObjType::Map), rep)) = tx.get(&reps, replica)? else {
        return Ok(false);
    };
    super::json::reconcile(tx, &rep, "status", &to_json(status), &|_| false)?;
    Ok(true)
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    // The schema's types are plain data: they always serialize.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
