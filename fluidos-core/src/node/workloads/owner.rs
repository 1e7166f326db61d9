//! The owner's side: adding workloads, placing them, sending them to their
//! providers, taking them back, and the per-workload record the view does not
//! hold (placement reasons, status history).

use std::collections::{BTreeMap, VecDeque};

use fluidos_contracts::{ContractId, NodeId, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{APP_TIMEOUT, Done, Workloads};
use crate::node::types::ContractRole;
use crate::offload::wire::{self, WorkloadRequest, WorkloadResponse};
use crate::placement::{self, Assignment, Decision, Hints};
use crate::view::{ReplicaState, ReplicaStatus, WorkloadView};
use crate::workload::WorkloadSpec;

/// Status changes remembered per replica.
const MAX_HISTORY: usize = 32;
/// How long the owner waits for a provider's answer to `start`: the provider
/// answers once the replica runs (a container's create and start take seconds
/// under load), and requests to one provider are paced
/// ([`fluidos_discovery::MAX_OUTBOUND_APP_PER_PEER`] in flight), so a large
/// deployment's last replicas also wait for the earlier ones.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// A stop request is tried this often, waiting [`STOP_RETRY`] (doubling) in between.
const STOP_ATTEMPTS: u32 = 4;
const STOP_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Why a workload operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// No workload with that id.
    #[error("no workload `{0}`")]
    UnknownWorkload(String),
    /// The workload has no such replica.
    #[error("workload `{0}` has no replica {1}")]
    UnknownReplica(String, u32),
    /// The spec is unusable.
    #[error("invalid workload: {0}")]
    Invalid(String),
    /// The node hosting the replica could not be asked.
    #[error("node {node} did not answer: {reason}")]
    Unreachable {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The node hosting the replica refused.
    #[error("{0}")]
    Refused(String),
    /// The node has stopped.
    #[error("the node has shut down")]
    ShutDown,
}

/// What a deploy went through, for progress reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeployPhase {
    /// Placement decided (with every reason).
    Placed {
        /// The workload id.
        workload: String,
        /// The decision, as text.
        decision: String,
    },
    /// Capacity is short: buying what is missing.
    Acquiring {
        /// What is bought.
        missing: String,
    },
    /// Bought: a new virtual node.
    Bought {
        /// The contract.
        contract: String,
        /// The provider.
        provider: String,
    },
    /// A replica was sent to its node.
    Offloading {
        /// The replica.
        replica: u32,
        /// The node.
        node: String,
    },
    /// A replica's state changed.
    Replica {
        /// The replica.
        replica: u32,
        /// Its state (`running`, `exited`, …).
        state: String,
        /// Details (exit code, reason).
        detail: String,
    },
    /// Nothing fits and buying failed or is not allowed.
    Unschedulable {
        /// Why, naming each rejected candidate.
        reason: String,
    },
}

/// The result of submitting a workload.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// Its id (`None` for a dry run, which changes nothing).
    pub id: Option<String>,
    /// The placement decision.
    pub decision: Decision,
}

/// One entry of a replica's status history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The replica.
    pub replica: u32,
    /// The state name.
    pub state: String,
    /// Details.
    pub detail: String,
    /// Where it was.
    pub node: Option<NodeId>,
    /// When.
    pub at: Timestamp,
}

/// A workload with what its owner knows beyond the view.
#[derive(Clone, Debug)]
pub struct WorkloadDetail {
    /// The workload as the view shows it.
    pub view: WorkloadView,
    /// The placement decision and why (owner only).
    pub placement: Option<String>,
    /// Status changes, oldest first (owner only).
    pub history: Vec<HistoryEntry>,
}

/// What the owner keeps per workload.
#[derive(Debug, Default)]
struct OwnedWorkload {
    spec: Option<WorkloadSpec>,
    placement: String,
    history: VecDeque<HistoryEntry>,
    /// Under which contract each offloaded replica runs.
    contracts: BTreeMap<u32, ContractId>,
    /// How often each replica was placed again after it was lost.
    rescheduled: BTreeMap<u32, u32>,
    /// The contract a replica ran under when its provider was counted lost:
    /// placed on that provider again, it goes under the same one, since the
    /// provider may still run it under that contract (it answers a repeat).
    lost_under: BTreeMap<u32, ContractId>,
}

/// The owner's records.
#[derive(Debug, Default)]
pub(super) struct Owned {
    workloads: BTreeMap<String, OwnedWorkload>,
}

/// Owner operations.
pub(crate) enum OwnerCommand {
    Submit {
        spec: Box<WorkloadSpec>,
        dry_run: bool,
        reply: oneshot::Sender<Result<Submitted, WorkloadError>>,
    },
    Assign {
        id: String,
        assignments: Vec<Assignment>,
        reply: oneshot::Sender<Result<(), WorkloadError>>,
    },
    Unschedulable {
        id: String,
        reason: String,
    },
    Get {
        id: String,
        reply: oneshot::Sender<Option<WorkloadDetail>>,
    },
    List {
        reply: oneshot::Sender<Vec<WorkloadDetail>>,
    },
    Undeploy {
        id: String,
        reply: oneshot::Sender<Result<(), WorkloadError>>,
    },
    /// A placement for the replicas of `id` that wait to be placed again
    /// (`None` if there are none).
    PlanPending {
        id: String,
        reply: oneshot::Sender<Option<Decision>>,
    },
    /// Where a replica runs: this node (`None`) or a peer.
    Locate {
        id: String,
        replica: u32,
        reply: oneshot::Sender<Result<Option<NodeId>, WorkloadError>>,
    },
}

/// What spawned owner work reports.
pub(super) enum OwnerDone {
    Offloaded {
        id: String,
        replica: u32,
        node: NodeId,
        result: Result<WorkloadResponse, String>,
    },
}

fn status(state: ReplicaState) -> ReplicaStatus {
    ReplicaStatus {
        state,
        since: Timestamp::now(),
        restarts: 0,
        output_tail: String::new(),
    }
}

impl Workloads {
    pub(super) fn owner_command(&mut self, cmd: OwnerCommand) {
        match cmd {
            OwnerCommand::Submit {
                spec,
                dry_run,
                reply,
            } => {
                let _ = reply.send(self.submit(*spec, dry_run));
            }
            OwnerCommand::Assign {
                id,
                assignments,
                reply,
            } => {
                let _ = reply.send(self.assign(&id, &assignments));
            }
            OwnerCommand::Unschedulable { id, reason } => {
                let Some(w) = self.view.workload(&self.me, &id) else {
                    return;
                };
                for (k, r) in &w.record.replicas {
                    if r.node.is_none()
                        && let Ok(i) = k.parse::<u32>()
                    {
                        let s = status(ReplicaState::failed(format!("unschedulable: {reason}")));
                        if self.view.unplace(&id, i, s.clone()).is_ok() {
                            self.owned_status(&id, i, &s);
                            // A lost replica being placed again that finds no room is
                            // one more failure for its restart policy: it tries again
                            // later (`always` until a provider has room again).
                            let again = self
                                .owned
                                .workloads
                                .get(&id)
                                .is_some_and(|w| w.rescheduled.contains_key(&i));
                            if again {
                                self.reschedule(&id, i);
                            }
                        }
                    }
                }
                self.touch();
            }
            OwnerCommand::Get { id, reply } => {
                let d = self
                    .view
                    .workloads()
                    .into_iter()
                    .find(|w| w.id == id)
                    .map(|w| self.detail(w));
                let _ = reply.send(d);
            }
            OwnerCommand::List { reply } => {
                let all = self
                    .view
                    .workloads()
                    .into_iter()
                    .map(|w| self.detail(w))
                    .collect();
                let _ = reply.send(all);
            }
            OwnerCommand::Undeploy { id, reply } => {
                let _ = reply.send(self.undeploy(&id));
            }
            OwnerCommand::PlanPending { id, reply } => {
                let _ = reply.send(self.plan_pending(&id));
            }
            OwnerCommand::Locate { id, replica, reply } => {
                let r = match self.view.workload(&self.me, &id) {
                    None => Err(WorkloadError::UnknownWorkload(id)),
                    Some(w) => match w.record.replicas.get(&replica.to_string()) {
                        None => Err(WorkloadError::UnknownReplica(id, replica)),
                        Some(r) => Ok(r.node.filter(|n| *n != self.me)),
                    },
                };
                let _ = reply.send(r);
            }
        }
    }

    fn detail(&self, view: WorkloadView) -> WorkloadDetail {
        let owned = (view.owner == self.me)
            .then(|| self.owned.workloads.get(&view.id))
            .flatten();
        WorkloadDetail {
            placement: owned.map(|o| o.placement.clone()),
            history: owned
                .map(|o| o.history.iter().cloned().collect())
                .unwrap_or_default(),
            view,
        }
    }

    fn submit(&mut self, spec: WorkloadSpec, dry_run: bool) -> Result<Submitted, WorkloadError> {
        let spec = spec
            .checked()
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let replicas: Vec<u32> = (0..spec.replicas).collect();
        let decision = placement::place(&spec, &replicas, &self.placeable(), &self.hints());
        if dry_run {
            return Ok(Submitted { id: None, decision });
        }
        let id = self
            .view
            .add_workload(spec.clone(), Timestamp::now())
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        info!(workload = %id, decision = %decision, "workload added");
        self.owned.workloads.insert(
            id.clone(),
            OwnedWorkload {
                spec: Some(spec),
                placement: decision.to_string(),
                ..Default::default()
            },
        );
        self.touch();
        Ok(Submitted {
            id: Some(id),
            decision,
        })
    }

    /// The contract with `provider` that the replica runs under: the one with
    /// the most left after the replicas already offloaded under it.
    fn contract_for(&self, id: &str, replica: u32, provider: &NodeId) -> Option<ContractId> {
        let owned = self.owned.workloads.get(id)?;
        let spec = owned.spec.as_ref()?;
        let need = spec.requests();
        let used = |c: &ContractId| {
            let mut sum = fluidos_contracts::Resources::ZERO;
            for (wid, w) in &self.owned.workloads {
                let Some(s) = &w.spec else { continue };
                let live = self.view.workload(&self.me, wid);
                for (r, wc) in &w.contracts {
                    let ended = live
                        .as_ref()
                        .and_then(|l| l.record.replicas.get(&r.to_string()))
                        .and_then(|r| r.status.as_ref())
                        .is_some_and(|s| s.state.is_final());
                    if wc == c && !ended {
                        sum = sum.checked_add(&s.requests()).unwrap_or(sum);
                    }
                }
            }
            sum
        };
        let fitting = || {
            self.book
                .iter()
                .filter(|c| c.peer == *provider && c.role == ContractRole::Buyer)
                .filter(|c| need.fits_within(&c.partition.saturating_sub(&used(&c.id))))
        };
        let before = owned.lost_under.get(&replica);
        fitting()
            .find(|c| Some(&c.id) == before)
            .or_else(|| {
                fitting().max_by_key(|c| c.partition.saturating_sub(&used(&c.id)).cpu_millis)
            })
            .map(|c| c.id)
    }

    fn assign(&mut self, id: &str, assignments: &[Assignment]) -> Result<(), WorkloadError> {
        let spec = self
            .owned
            .workloads
            .get(id)
            .and_then(|w| w.spec.clone())
            .ok_or_else(|| WorkloadError::UnknownWorkload(id.to_string()))?;
        let now = Timestamp::now();
        for a in assignments {
            if a.node != self.me && !self.view.peers().any(|p| *p == a.node) {
                if self.book.iter().any(|c| c.peer == a.node) {
                    self.open_link(a.node);
                } else {
                    let s = status(ReplicaState::failed(format!(
                        "no contract with {}",
                        a.node.short()
                    )));
                    let _ = self.view.unplace(id, a.replica, s.clone());
                    self.owned_status(id, a.replica, &s);
                    continue;
                }
            }
            if let Err(e) = self.view.place(id, a.replica, a.node, now) {
                warn!(workload = %id, replica = a.replica, error = %e, "placement not recorded");
                continue;
            }
            if a.node == self.me {
                self.start_local(id, a.replica, &spec);
                continue;
            }
            let Some(contract) = self.contract_for(id, a.replica, &a.node) else {
                let s = status(ReplicaState::failed(format!(
                    "no contract with {} has room for the replica",
                    a.node.short()
                )));
                let _ = self.view.unplace(id, a.replica, s.clone());
                self.owned_status(id, a.replica, &s);
                continue;
            };
            if let Some(w) = self.owned.workloads.get_mut(id) {
                w.contracts.insert(a.replica, contract);
            }
            self.record(id, a.replica, "offloading", String::new(), Some(a.node));
            let request = WorkloadRequest::Start {
                contract,
                workload: id.to_string(),
                replica: a.replica,
                spec: spec.to_json(),
            };
            let (discovery, done) = (self.discovery.clone(), self.done_tx.clone());
            let (id, replica, node) = (id.to_string(), a.replica, a.node);
            // An image the owner holds as a tarball goes to the provider first.
            let image_file = match &spec.run {
                crate::workload::Run::Image { file, .. } => file.clone(),
                crate::workload::Run::Command { .. } => None,
            };
            tokio::spawn(async move {
                if let Some(file) = image_file
                    && let Err(e) =
                        super::image::push(&discovery, node, contract, std::path::Path::new(&file))
                            .await
                {
                    let result = Err(format!("sending the image {file}: {e}"));
                    let _ = done
                        .send(Done::Owner(OwnerDone::Offloaded {
                            id,
                            replica,
                            node,
                            result,
                        }))
                        .await;
                    return;
                }
                let result = discovery
                    .app_request(
                        node,
                        fluidos_discovery::AppProtocol::Workload,
                        wire::encode(&request),
                        START_TIMEOUT,
                    )
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|b| wire::decode_response(&b).map_err(|e| e.to_string()));
                let _ = done
                    .send(Done::Owner(OwnerDone::Offloaded {
                        id,
                        replica,
                        node,
                        result,
                    }))
                    .await;
            });
        }
        self.touch();
        Ok(())
    }

    pub(super) fn owner_done(&mut self, d: OwnerDone) {
        let OwnerDone::Offloaded {
            id,
            replica,
            node,
            result,
        } = d;
        let mut cause = None;
        let refusal = match result {
            Ok(WorkloadResponse::Started { state }) => {
                self.record(
                    &id,
                    replica,
                    &state,
                    "confirmed by the provider".into(),
                    Some(node),
                );
                self.touch();
                return;
            }
            Ok(WorkloadResponse::Error { code, message }) => {
                if code == crate::offload::wire::WorkloadErrorCode::OverQuota {
                    cause = Some(crate::workload::EndCause::OverQuota);
                }
                format!("{} refused it ({code:?}): {message}", node.short())
            }
            Ok(other) => format!("{} answered {other:?}", node.short()),
            Err(e) => {
                // No answer (timeout, connection lost): the provider may still start
                // it. It must not run there unknown to this node while it is placed
                // elsewhere: stop it there too.
                self.send_stop(node, &id, replica);
                format!("{} could not be asked: {e}", node.short())
            }
        };
        warn!(workload = %id, replica, "offload failed: {refusal}");
        if let Some(w) = self.owned.workloads.get_mut(&id) {
            w.contracts.remove(&replica);
        }
        let s = status(ReplicaState::Failed {
            reason: refusal,
            cause,
        });
        if self.view.unplace(&id, replica, s.clone()).is_ok() {
            self.owned_status(&id, replica, &s);
            // A lost replica being placed again: one more failure for its policy.
            let again = self
                .owned
                .workloads
                .get(&id)
                .is_some_and(|w| w.rescheduled.contains_key(&replica));
            if again {
                self.reschedule(&id, replica);
            }
        }
        self.touch();
    }

    /// Asks `node` to stop a replica of `id` it may run, in the background.
    fn send_stop(&self, node: NodeId, id: &str, replica: u32) {
        let request = WorkloadRequest::Stop {
            workload: id.to_string(),
            replica,
        };
        let discovery = self.discovery.clone();
        tokio::spawn(async move {
            // A few tries: the view's removal of the workload is what the provider
            // follows in the end (it stops replicas the view no longer places there),
            // the request only makes it prompt.
            let bytes = wire::encode(&request);
            let mut wait = STOP_RETRY;
            for attempt in 1..=STOP_ATTEMPTS {
                let answer = discovery
                    .app_request(
                        node,
                        fluidos_discovery::AppProtocol::Workload,
                        bytes.clone(),
                        APP_TIMEOUT,
                    )
                    .await;
                match answer.as_deref().map(wire::decode_response) {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => {
                        debug!(node = %node.short(), attempt, error = %e, "stop request unanswered");
                    }
                    Err(e) => {
                        debug!(node = %node.short(), attempt, error = %e, "stop request failed")
                    }
                }
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        });
    }

    fn undeploy(&mut self, id: &str) -> Result<(), WorkloadError> {
        let w = self
            .view
            .workload(&self.me, id)
            .ok_or_else(|| WorkloadError::UnknownWorkload(id.to_string()))?;
        for (k, r) in &w.record.replicas {
            let Ok(i) = k.parse::<u32>() else { continue };
            match r.node {
                Some(n) if n == self.me => self.stop_hosted(
                    &(self.me, id.to_string(), i),
                    super::host::Eviction::new(
                        Some(crate::workload::EndCause::ByOwner),
                        "undeployed",
                    ),
                    None,
                ),
                Some(n) => self.send_stop(n, id, i),
                None => {}
            }
        }
        self.view
            .remove_workload(id)
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        self.owned.workloads.remove(id);
        self.forget_local(id);
        info!(workload = %id, "workload undeployed");
        self.touch();
        Ok(())
    }

    /// A contract this node bought ended: its replicas there are taken back.
    pub(super) fn provider_contract_ended(&mut self, c: &crate::node::types::ActiveContract) {
        let mut back = Vec::new();
        for (id, w) in &self.owned.workloads {
            for (r, wc) in &w.contracts {
                if *wc == c.id {
                    back.push((id.clone(), *r));
                }
            }
        }
        for (id, r) in back {
            let live = self
                .view
                .workload(&self.me, &id)
                .and_then(|w| w.record.replicas.get(&r.to_string()).cloned());
            let ended = live
                .and_then(|l| l.status)
                .is_some_and(|s| s.state.is_final());
            if let Some(w) = self.owned.workloads.get_mut(&id) {
                w.contracts.remove(&r);
            }
            if ended {
                continue;
            }
            let s = status(ReplicaState::Evicted {
                reason: format!("contract {} ended", c.id),
                cause: self.book.end_of(&c.id),
            });
            if self.view.unplace(&id, r, s.clone()).is_ok() {
                self.owned_status(&id, r, &s);
                self.reschedule(&id, r);
            }
        }
    }

    /// After a restart: the owner's records of its workloads, rebuilt from the
    /// view (the spec, and for each offloaded replica the contract with its
    /// provider); placement reasons and history start afresh. Replicas that
    /// were waiting to be placed again are sent to the rescheduler.
    pub(super) fn restore_owned(&mut self) {
        let mut waiting = Vec::new();
        for w in self.view.workloads() {
            if w.owner != self.me || self.owned.workloads.contains_key(&w.id) {
                continue;
            }
            let Some(spec) = w.record.spec.clone() else {
                continue;
            };
            let mut contracts = BTreeMap::new();
            for (k, r) in &w.record.replicas {
                let Ok(i) = k.parse::<u32>() else { continue };
                match r.node {
                    Some(n) if n != self.me => {
                        let c = self
                            .book
                            .iter()
                            .find(|c| c.peer == n && c.role == ContractRole::Buyer);
                        if let Some(c) = c {
                            contracts.insert(i, c.id);
                        }
                    }
                    None if r
                        .status
                        .as_ref()
                        .is_some_and(|s| s.state == ReplicaState::Pending) =>
                    {
                        waiting.push(w.id.clone());
                    }
                    _ => {}
                }
            }
            self.owned.workloads.insert(
                w.id.clone(),
                OwnedWorkload {
                    spec: Some(spec),
                    placement: "restored after a restart".into(),
                    contracts,
                    ..Default::default()
                },
            );
        }
        waiting.dedup();
        for id in waiting {
            let _ = self.reschedule.try_send(id);
        }
    }

    /// What placement knows beyond the view: measured round trips.
    fn hints(&self) -> Hints {
        Hints {
            rtt_ms: self.rtt_ms.clone(),
            ..Hints::default()
        }
    }

    /// The nodes placement may use: the view's, without providers counted as lost.
    fn placeable(&self) -> Vec<crate::view::NodeInfo> {
        let mut nodes = self.view.nodes();
        nodes.retain(|n| !self.lost.contains(&n.id));
        nodes
    }

    /// Replicas of this node's placed on a provider that has not been heard
    /// from for [`Setup::lost_after`](super::Setup) are lost: taken back, and
    /// placed again by their restart policy. When the provider is back, its
    /// view shows them gone and it stops them.
    pub(super) fn check_lost(&mut self, now: std::time::Instant) {
        let silent: Vec<(NodeId, std::time::Duration)> = self
            .heard
            .iter()
            .map(|(p, t)| (*p, now.saturating_duration_since(*t)))
            .filter(|(p, d)| *d >= self.lost_after && !self.lost.contains(p))
            .collect();
        for (peer, silence) in silent {
            let mut lost = Vec::new();
            for id in self.owned.workloads.keys() {
                let Some(w) = self.view.workload(&self.me, id) else {
                    continue;
                };
                for (k, r) in &w.record.replicas {
                    let live = r.status.as_ref().is_none_or(|s| !s.state.is_final());
                    if r.node == Some(peer)
                        && live
                        && let Ok(i) = k.parse::<u32>()
                    {
                        lost.push((id.clone(), i));
                    }
                }
            }
            if lost.is_empty() {
                continue;
            }
            self.lost.insert(peer);
            warn!(provider = %peer.short(), silence = ?silence, replicas = lost.len(), "provider lost");
            for (id, r) in lost {
                if let Some(w) = self.owned.workloads.get_mut(&id)
                    && let Some(c) = w.contracts.remove(&r)
                {
                    w.lost_under.insert(r, c);
                }
                let s = status(ReplicaState::failed_by(
                    crate::workload::EndCause::ProviderLost,
                    format!("no word from {} for {} s", peer.short(), silence.as_secs()),
                ));
                if self.view.unplace(&id, r, s.clone()).is_ok() {
                    self.owned_status(&id, r, &s);
                    self.reschedule(&id, r);
                }
            }
            self.touch();
        }
    }

    /// Replica `r` of `id` was lost with its provider: by its restart policy it
    /// waits (pending) to be placed again, or its end is final.
    fn reschedule(&mut self, id: &str, r: u32) {
        let Some(w) = self.owned.workloads.get_mut(id) else {
            return;
        };
        let Some(policy) = w.spec.as_ref().map(|s| s.restart) else {
            return;
        };
        let moves = w.rescheduled.get(&r).copied().unwrap_or(0);
        let Some(delay) =
            crate::workload::restart_after(policy, crate::workload::Ending::Failed, moves)
        else {
            return;
        };
        w.rescheduled.insert(r, moves + 1);
        let s = ReplicaStatus {
            restarts: moves + 1,
            ..status(ReplicaState::Pending)
        };
        if self.view.unplace(id, r, s.clone()).is_ok() {
            self.record(
                id,
                r,
                "pending",
                format!("placing it again (restart {} by its policy)", moves + 1),
                None,
            );
        }
        let (tx, id) = (self.reschedule.clone(), id.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(id).await;
        });
    }

    /// A placement of the replicas of `id` that wait to be placed again.
    fn plan_pending(&self, id: &str) -> Option<Decision> {
        let w = self.view.workload(&self.me, id)?;
        let spec = self.owned.workloads.get(id)?.spec.clone()?;
        let waiting: Vec<u32> = w
            .record
            .replicas
            .iter()
            .filter(|(_, r)| {
                r.node.is_none()
                    && r.status
                        .as_ref()
                        .is_some_and(|s| s.state == ReplicaState::Pending)
            })
            .filter_map(|(k, _)| k.parse().ok())
            .collect();
        if waiting.is_empty() {
            return None;
        }
        Some(placement::place(
            &spec,
            &waiting,
            &self.placeable(),
            &self.hints(),
        ))
    }

    /// Changes from `peer`: note status changes of this node's replicas there.
    pub(super) fn owner_peer_changed(&mut self, peer: NodeId) {
        let ids: Vec<String> = self.owned.workloads.keys().cloned().collect();
        for id in ids {
            let Some(w) = self.view.workload(&self.me, &id) else {
                continue;
            };
            for (k, r) in &w.record.replicas {
                if r.node != Some(peer) {
                    continue;
                }
                if let (Ok(i), Some(s)) = (k.parse::<u32>(), &r.status) {
                    self.note(&id, i, s, Some(peer));
                }
            }
        }
    }

    /// A status of this node's replica `replica` of `id` was written.
    pub(super) fn owned_status(&mut self, id: &str, replica: u32, s: &ReplicaStatus) {
        let node = self.view.workload(&self.me, id).and_then(|w| {
            w.record
                .replicas
                .get(&replica.to_string())
                .and_then(|r| r.node)
        });
        self.note(id, replica, s, node);
    }

    fn note(&mut self, id: &str, replica: u32, s: &ReplicaStatus, node: Option<NodeId>) {
        let name = s.state.name();
        let same = self
            .owned
            .workloads
            .get(id)
            .and_then(|w| w.history.iter().rev().find(|h| h.replica == replica))
            .is_some_and(|h| h.state == name && h.node == node);
        if !same {
            let mut detail = s.state.described();
            if s.restarts > 0 && !s.state.is_final() {
                let sep = if detail.is_empty() { "" } else { "; " };
                detail = format!("{detail}{sep}restart {}", s.restarts);
            }
            self.record(id, replica, name, detail, node);
        }
    }

    fn record(
        &mut self,
        id: &str,
        replica: u32,
        state: &str,
        detail: String,
        node: Option<NodeId>,
    ) {
        if let Some(w) = self.owned.workloads.get_mut(id) {
            if w.history.len() >= MAX_HISTORY * w.spec.as_ref().map_or(1, |s| s.replicas as usize) {
                w.history.pop_front();
            }
            w.history.push_back(HistoryEntry {
                replica,
                state: state.to_string(),
                detail,
                node,
                at: Timestamp::now(),
            });
        }
    }
}
