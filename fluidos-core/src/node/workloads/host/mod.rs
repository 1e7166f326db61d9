//! The host's side: the replicas run here for peers and for this node, the runtime's
//! reports, and the statuses they put into the view. A peer's requests are in
//! [`requests`], the runtime spec made from a workload spec in [`spec`], usage telemetry
//! in [`usage`].

use std::collections::BTreeMap;
use std::sync::Arc;

use fluidos_contracts::{ContractId, NodeId, Resources};
use fluidos_discovery::{AppBody, AppRequest};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{Done, Workloads, ending_of, replica_id, view_status};
use crate::node::engine::{Command, QuotaCommand, ReplicaKey};
use crate::node::types::ContractRole;
use crate::offload::AdmitError;
use crate::offload::wire::{
    self, MAX_LOG_TAIL, WorkloadErrorCode as Code, WorkloadRequest, WorkloadResponse,
};
use crate::runtime::{Limits, ReplicaId, ReplicaInfo, ReplicaSpec, ReplicaUsage, Runs, Runtime};
use crate::usage::{ReplicaMeter, UsageMeter};
use crate::view::ReplicaStatus;
use crate::workload::{EndCause, RestartPolicy, Run, WorkloadSpec, restart_after};

mod requests;
mod spec;
mod usage;

pub(super) use spec::replica_spec;

/// The pids limit of a container replica (the process runtime's per-user `RLIMIT_NPROC`
/// would count every process of the user, so it gets none).
pub(super) const CONTAINER_PIDS: u64 = 4096;

/// One replica run here.
#[derive(Debug)]
pub(super) struct HostedReplica {
    rid: ReplicaId,
    contract: Option<ContractId>,
    demand: Resources,
    /// Why it is being stopped, once it is.
    evicting: Option<Eviction>,
    /// Its workload's restart policy, and how often it was restarted here.
    policy: RestartPolicy,
    restarts: u32,
    /// What it runs, to start it again (`None` when unknown: not restarted).
    spec: Option<ReplicaSpec>,
    /// The view has shown it placed here: once it no longer does, its owner
    /// took it back and it stops.
    seen_placed: bool,
    /// Its record (output, container) goes when it has ended: its owner stopped it
    /// for good (undeploy), or its contract is over.
    forget: bool,
    /// The last status this host gave it: written again whenever the view's differs
    /// (its owner placed it here afresh, or the host's write was lost in a merge).
    status: Option<ReplicaStatus>,
}

/// Why a hosted replica is being stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Eviction {
    /// Typed, when the stop has one of [`EndCause`]'s causes.
    pub(super) cause: Option<EndCause>,
    /// For people.
    pub(super) reason: String,
}

impl Eviction {
    pub(super) fn new(cause: Option<EndCause>, reason: impl Into<String>) -> Self {
        Self {
            cause,
            reason: reason.into(),
        }
    }

    /// Its owner took it back: its end is not written into the view, where it is no
    /// longer placed here.
    fn taken_back() -> Self {
        Self::new(Some(EndCause::ByOwner), TAKEN_BACK)
    }

    fn is_taken_back(&self) -> bool {
        self.reason == TAKEN_BACK
    }
}

/// The replicas run here.
#[derive(Debug, Default)]
pub(super) struct Hosted {
    replicas: BTreeMap<ReplicaKey, HostedReplica>,
    by_rid: BTreeMap<ReplicaId, ReplicaKey>,
    /// Statuses the view could not take yet (the owner's placement has not
    /// arrived): written when the owner's next changes do.
    pending: BTreeMap<ReplicaKey, ReplicaStatus>,
    /// Ended replicas whose runtime record (output) is kept for `logs`, oldest
    /// first, at most [`MAX_ENDED_KEPT`].
    ended: std::collections::VecDeque<(ReplicaKey, ReplicaId, Option<ContractId>)>,
    /// Usage counters per contract hosted here (written into the buyer's view).
    pub(super) meters: BTreeMap<ContractId, UsageMeter>,
    /// A usage sample is being taken.
    pub(super) sampling: bool,
}

/// The key of a replica in a contract's usage report: `<workload>/<index>`.
fn meter_key(key: &ReplicaKey) -> String {
    format!("{}/{}", key.1, key.2)
}

/// The eviction reason of a replica its owner took back ([`Eviction::taken_back`]).
const TAKEN_BACK: &str = "taken back by its owner";

/// Ended replicas whose output is kept for `logs`.
const MAX_ENDED_KEPT: usize = 256;

impl Hosted {
    /// What the replicas of `owner` use here.
    pub(super) fn used_by(&self, owner: &NodeId) -> Resources {
        self.replicas
            .iter()
            .filter(|((o, _, _), _)| o == owner)
            .fold(Resources::ZERO, |acc, (_, r)| {
                acc.checked_add(&r.demand).unwrap_or(acc)
            })
    }

    fn insert(&mut self, key: ReplicaKey, r: HostedReplica) {
        self.by_rid.insert(r.rid.clone(), key.clone());
        self.replicas.insert(key, r);
    }

    fn remove(&mut self, key: &ReplicaKey) -> Option<HostedReplica> {
        let r = self.replicas.remove(key)?;
        self.by_rid.remove(&r.rid);
        Some(r)
    }

    /// The runtime id of a replica hosted here, running or ended.
    pub(super) fn rid_of(&self, key: &ReplicaKey) -> Option<ReplicaId> {
        self.replicas.get(key).map(|r| r.rid.clone()).or_else(|| {
            self.ended
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, rid, _)| rid.clone())
        })
    }

    /// Forgets the ended replicas matching `f`; returns their runtime ids.
    fn forget_ended(
        &mut self,
        f: impl Fn(&ReplicaKey, Option<&ContractId>) -> bool,
    ) -> Vec<ReplicaId> {
        let mut gone = Vec::new();
        self.ended.retain(|(k, rid, c)| {
            let drop = f(k, c.as_ref());
            if drop {
                gone.push(rid.clone());
            }
            !drop
        });
        gone
    }

    /// The replica running `rid`, if it is hosted here.
    pub(super) fn key_of(&self, rid: &ReplicaId) -> Option<&ReplicaKey> {
        self.by_rid.get(rid)
    }

    /// Whether any replica runs here under a contract (usage is sampled only then).
    pub(super) fn any_contracted(&self) -> bool {
        self.replicas.values().any(|r| r.contract.is_some())
    }
}

/// What spawned host work reports.
pub(super) enum HostDone {
    /// A replica's start finished (after admission, for a peer's).
    Started {
        key: ReplicaKey,
        result: Result<ReplicaInfo, (Code, String)>,
        reply: Option<oneshot::Sender<Vec<u8>>>,
    },
    /// A replica's restart back-off is over: start it again if it is still due.
    Restart { key: ReplicaKey, attempt: u32 },
    /// A replica ended (by itself or stopped): its final status with its output.
    Final {
        key: ReplicaKey,
        info: ReplicaInfo,
        tail: String,
        reply: Option<oneshot::Sender<Vec<u8>>>,
    },
    /// A usage sample of every live replica, taken at wall-clock `at_ms`.
    Usage {
        at_ms: u64,
        sample: Vec<ReplicaUsage>,
    },
    /// The engine loaded (or refused) an image tarball an owner sent.
    ImageLoaded {
        from: NodeId,
        digest: String,
        result: Result<Vec<String>, String>,
        reply: oneshot::Sender<Vec<u8>>,
    },
}

fn answer(reply: oneshot::Sender<Vec<u8>>, r: &WorkloadResponse) {
    let _ = reply.send(wire::encode(r));
}

/// Output kept in the view's final status.
const TAIL: usize = 4096;

/// Starts a replica on `runtime`, after `admit` (if any) lets it.
async fn start(
    runtime: Arc<dyn Runtime>,
    admit: Option<oneshot::Receiver<Result<(), AdmitError>>>,
    spec: ReplicaSpec,
) -> Result<ReplicaInfo, (Code, String)> {
    if let Some(rx) = admit {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err((Code::from(&e), e.to_string())),
            Err(_) => return Err((Code::Unavailable, "the node is shutting down".into())),
        }
    }
    runtime
        .start(spec)
        .await
        .map_err(|e| (Code::RuntimeFailed, e.to_string()))
}

/// Fetches the tail of a replica's output (lossy UTF-8).
async fn tail_of(runtime: &Arc<dyn Runtime>, rid: &ReplicaId) -> String {
    runtime
        .logs(rid, TAIL)
        .await
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .unwrap_or_default()
}

impl Workloads {
    /// Starts one of this node's own replicas here.
    pub(super) fn start_local(&mut self, workload: &str, replica: u32, spec: &WorkloadSpec) {
        let key = (self.me, workload.to_string(), replica);
        let result = self
            .runtime
            .clone()
            .ok_or((Code::Unavailable, "this node runs no workloads".to_string()))
            .and_then(|rt| {
                let rid = replica_id(workload, replica, None)
                    .map_err(|e| (Code::BadSpec, e.to_string()))?;
                let rs = replica_spec(rid.clone(), spec, None, rt.runs(), None)?;
                Ok((rt, rid, rs))
            });
        let (runtime, rid, rspec) = match result {
            Ok(x) => x,
            Err((_, reason)) => {
                let status = ReplicaStatus {
                    state: crate::view::ReplicaState::failed(reason),
                    since: fluidos_contracts::Timestamp::now(),
                    restarts: 0,
                    output_tail: String::new(),
                };
                self.write_status(key, status);
                return;
            }
        };
        self.hosted.insert(
            key.clone(),
            HostedReplica {
                rid,
                contract: None,
                demand: spec.requests(),
                evicting: None,
                policy: spec.restart,
                restarts: 0,
                spec: Some(rspec.clone()),
                seen_placed: true,
                forget: false,
                status: None,
            },
        );
        self.refresh_physical();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = start(runtime, None, rspec).await;
            let _ = done
                .send(Done::Host(HostDone::Started {
                    key,
                    result,
                    reply: None,
                }))
                .await;
        });
    }

    /// Stops a hosted replica; its final status follows.
    pub(super) fn stop_hosted(
        &mut self,
        key: &ReplicaKey,
        why: Eviction,
        reply: Option<oneshot::Sender<Vec<u8>>>,
    ) {
        let (Some(r), Some(runtime)) = (self.hosted.replicas.get_mut(key), self.runtime.clone())
        else {
            if let Some(reply) = reply {
                answer(reply, &WorkloadResponse::Stopped);
            }
            return;
        };
        r.evicting = Some(why);
        let (rid, key, done) = (r.rid.clone(), key.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let info = match runtime.stop(&rid).await {
                Ok(info) => info,
                Err(e) => ReplicaInfo {
                    id: rid.clone(),
                    status: crate::runtime::ReplicaStatus::Lost {
                        reason: e.to_string(),
                    },
                },
            };
            let tail = tail_of(&runtime, &rid).await;
            let _ = done
                .send(Done::Host(HostDone::Final {
                    key,
                    info,
                    tail,
                    reply,
                }))
                .await;
        });
    }

    /// Deletes the runtime records (and output) of ended replicas.
    pub(super) fn remove_records(&self, rids: Vec<ReplicaId>) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        if rids.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for rid in rids {
                if let Err(e) = runtime.remove(&rid).await {
                    warn!(replica = %rid, error = %e, "could not remove an ended replica");
                }
            }
        });
    }

    /// Forgets this node's own ended replica records of workload `id`.
    pub(super) fn forget_local(&mut self, id: &str) {
        let me = self.me;
        let gone = self.hosted.forget_ended(|k, _| k.0 == me && k.1 == id);
        self.remove_records(gone);
    }

    /// Every replica hosted under contract `id` stops.
    pub(super) fn evict_contract(&mut self, id: &ContractId, why: Eviction) {
        self.hosted.meters.remove(id);
        let gone = self.hosted.forget_ended(|_, c| c == Some(id));
        self.remove_records(gone);
        let keys: Vec<ReplicaKey> = self
            .hosted
            .replicas
            .iter()
            .filter(|(_, r)| r.contract == Some(*id) && r.evicting.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            info!(workload = %key.1, replica = key.2, contract = %id, "stopping a replica: {}", why.reason);
            if let Some(r) = self.hosted.replicas.get_mut(&key) {
                r.forget = true;
            }
            self.stop_hosted(&key, why.clone(), None);
        }
    }

    pub(super) fn host_done(&mut self, d: HostDone) {
        match d {
            HostDone::Started { key, result, reply } => match result {
                Ok(info) => {
                    let state = if info.status.is_terminal() {
                        "exited"
                    } else {
                        "running"
                    };
                    if let Some(reply) = reply {
                        answer(
                            reply,
                            &WorkloadResponse::Started {
                                state: state.into(),
                            },
                        );
                    }
                    self.on_status(&key, &info);
                }
                Err((code, msg)) => {
                    let restarts = self.hosted.replicas.get(&key).map_or(0, |r| r.restarts);
                    if let Some(r) = self.hosted.remove(&key)
                        && r.contract.is_some()
                    {
                        self.release_quota(key.clone());
                    }
                    // The owner hears of a refused first start in the answer; of
                    // its own replicas and of failed restarts, in the view.
                    if key.0 == self.me || reply.is_none() {
                        let status = ReplicaStatus {
                            state: crate::view::ReplicaState::Failed {
                                reason: msg.clone(),
                                cause: (code == Code::OverQuota).then_some(EndCause::OverQuota),
                            },
                            since: fluidos_contracts::Timestamp::now(),
                            restarts,
                            output_tail: String::new(),
                        };
                        let own = key.0 == self.me;
                        self.write_status(key, status);
                        if own {
                            self.refresh_physical();
                        }
                    }
                    if let Some(reply) = reply {
                        answer(reply, &WorkloadResponse::error(code, msg));
                    }
                }
            },
            HostDone::Restart { key, attempt } => self.restart(key, attempt),
            HostDone::Usage { at_ms, sample } => self.usage_sampled(at_ms, sample),
            HostDone::ImageLoaded {
                from,
                digest,
                result,
                reply,
            } => {
                self.uploads.finished(from, &digest, &result);
                let r = match result {
                    Ok(loaded) => {
                        info!(peer = %from.short(), %digest, images = ?loaded, "loaded an image sent by its owner");
                        WorkloadResponse::Image {
                            received: u64::MAX,
                            loaded,
                        }
                    }
                    Err(e) => WorkloadResponse::error(
                        Code::ImageRefused,
                        format!("the engine could not load the tarball: {e}"),
                    ),
                };
                answer(reply, &r);
            }
            HostDone::Final {
                key,
                info,
                tail,
                reply,
            } => {
                if let Some(reply) = reply {
                    answer(reply, &WorkloadResponse::Stopped);
                }
                if self.restart_due(&key, &info, &tail) {
                    return;
                }
                let Some(r) = self.hosted.remove(&key) else {
                    return;
                };
                if let Some(m) = r.contract.and_then(|c| self.hosted.meters.get_mut(&c)) {
                    m.ended(&meter_key(&key));
                }
                let status = view_status(&info.status, r.evicting.as_ref(), tail, r.restarts);
                if !r.evicting.as_ref().is_some_and(Eviction::is_taken_back) {
                    self.write_status(key.clone(), status);
                }
                if r.contract.is_some() {
                    self.release_quota(key.clone());
                    self.refresh_entry(&key.0);
                } else {
                    self.refresh_physical();
                }
                // Stopped for good, or its contract is over: its container (or record)
                // goes now.
                let over = r.contract.is_some_and(|c| self.active(&c).is_none());
                if r.forget || over {
                    self.remove_records(vec![r.rid]);
                    return;
                }
                // Its end is in the view; its output stays for `logs` a while.
                self.hosted.ended.push_back((key, r.rid, r.contract));
                if self.hosted.ended.len() > MAX_ENDED_KEPT
                    && let Some((_, rid, _)) = self.hosted.ended.pop_front()
                {
                    self.remove_records(vec![rid]);
                }
            }
        }
    }

    /// The runtime reports a replica's state.
    pub(super) fn runtime_event(&mut self, ev: crate::runtime::ReplicaEvent) {
        let Some(key) = self.hosted.key_of(&ev.id).cloned() else {
            return;
        };
        self.on_status(
            &key,
            &ReplicaInfo {
                id: ev.id,
                status: ev.status,
            },
        );
    }

    /// A hosted replica is in `info`'s state: into the view, or (ended) fetch
    /// its output and finish it.
    fn on_status(&mut self, key: &ReplicaKey, info: &ReplicaInfo) {
        if !info.status.is_terminal() {
            let restarts = self.hosted.replicas.get(key).map_or(0, |r| r.restarts);
            let status = view_status(&info.status, None, String::new(), restarts);
            self.write_status(key.clone(), status);
            return;
        }
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let (key, info, done) = (key.clone(), info.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let tail = tail_of(&runtime, &info.id).await;
            let _ = done
                .send(Done::Host(HostDone::Final {
                    key,
                    info,
                    tail,
                    reply: None,
                }))
                .await;
        });
    }

    /// A hosted replica ended by itself: if its restart policy starts it again,
    /// its status says `starting` (with the last run's output) during the
    /// back-off, its quota stays held, and `true` is returned.
    fn restart_due(&mut self, key: &ReplicaKey, info: &ReplicaInfo, tail: &str) -> bool {
        let Some(r) = self.hosted.replicas.get_mut(key) else {
            return false;
        };
        let ending = ending_of(&info.status, r.evicting.is_some());
        let Some(delay) = r
            .spec
            .as_ref()
            .and(restart_after(r.policy, ending, r.restarts))
        else {
            return false;
        };
        r.restarts += 1;
        let attempt = r.restarts;
        info!(workload = %key.1, replica = key.2, attempt, ?delay, status = %info.status, "restarting a replica (restart policy)");
        let status = view_status(
            &crate::runtime::ReplicaStatus::Starting,
            None,
            tail.to_string(),
            attempt,
        );
        self.write_status(key.clone(), status);
        let (key, done) = (key.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = done
                .send(Done::Host(HostDone::Restart { key, attempt }))
                .await;
        });
        true
    }

    /// The back-off of restart `attempt` is over: the replica starts again,
    /// unless it was stopped meanwhile.
    fn restart(&mut self, key: ReplicaKey, attempt: u32) {
        let Some(r) = self.hosted.replicas.get(&key) else {
            return;
        };
        let (Some(spec), Some(runtime)) = (r.spec.clone(), self.runtime.clone()) else {
            return;
        };
        if r.evicting.is_some() || r.restarts != attempt {
            return;
        }
        let (rid, done) = (r.rid.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            // The ended run's record goes; the replica keeps its id.
            let _ = runtime.remove(&rid).await;
            let result = start(runtime, None, spec).await;
            let _ = done
                .send(Done::Host(HostDone::Started {
                    key,
                    result,
                    reply: None,
                }))
                .await;
        });
    }

    /// The owner's changes arrived: a peer's replica running here that the view
    /// showed placed here and no longer does was taken back (its owner
    /// rescheduled it while this node was out of reach): it stops, so that no
    /// replica runs twice.
    ///
    /// A replica still placed here whose status in the view is not the one this
    /// host gave it gets it again: its owner placed it here afresh (a new record,
    /// without a status) while it ran on, for instance after this node was counted
    /// lost and came back before it learned so.
    pub(super) fn taken_back(&mut self, owner: NodeId) {
        let me = self.me;
        let (mut gone, mut restate) = (Vec::new(), Vec::new());
        for (key, r) in self.hosted.replicas.iter_mut() {
            if key.0 != owner || r.evicting.is_some() {
                continue;
            }
            let record = self
                .view
                .workload(&owner, &key.1)
                .and_then(|w| w.record.replicas.get(&key.2.to_string()).cloned());
            let here = record.as_ref().and_then(|x| x.node) == Some(me);
            if here {
                r.seen_placed = true;
                let shown = record.and_then(|x| x.status);
                let same = |a: &ReplicaStatus, b: &ReplicaStatus| {
                    a.state == b.state && a.restarts == b.restarts
                };
                if let Some(last) = &r.status
                    && !shown.as_ref().is_some_and(|s| same(s, last))
                {
                    restate.push((key.clone(), last.clone()));
                }
            } else if r.seen_placed {
                gone.push(key.clone());
            }
        }
        for (key, status) in restate {
            debug!(workload = %key.1, replica = key.2, state = %status.state.name(), "the view lacks a hosted replica's status; writing it again");
            self.write_status(key, status);
        }
        for key in gone {
            info!(workload = %key.1, replica = key.2, "its owner took the replica back; stopping it");
            if let Some(r) = self.hosted.replicas.get_mut(&key) {
                // It lives elsewhere now: nothing of it is kept here.
                r.forget = true;
            }
            self.stop_hosted(&key, Eviction::taken_back(), None);
        }
    }

    /// Writes a hosted replica's status, or keeps it until the owner's
    /// placement arrives.
    pub(super) fn write_status(&mut self, key: ReplicaKey, status: ReplicaStatus) {
        if let Some(r) = self.hosted.replicas.get_mut(&key) {
            r.status = Some(status.clone());
        }
        let (owner, id, replica) = &key;
        match self.view.set_status(owner, id, *replica, status.clone()) {
            Ok(()) => {
                // The view has it placed here (set_status checks): from now on, its
                // placement going away means its owner took it back.
                if let Some(r) = self.hosted.replicas.get_mut(&key) {
                    r.seen_placed = true;
                }
                self.hosted.pending.remove(&key);
                self.touch();
                if *owner == self.me {
                    self.owned_status(id, *replica, &status);
                }
            }
            // This node's own workload is gone (undeployed): nothing to write.
            Err(_) if *owner == self.me => {}
            Err(_) => {
                self.hosted.pending.insert(key, status);
            }
        }
    }

    /// Changes from `peer` arrived: statuses waiting for its placements may fit now.
    pub(super) fn peer_changed(&mut self, peer: NodeId) {
        let waiting: Vec<(ReplicaKey, ReplicaStatus)> = self
            .hosted
            .pending
            .iter()
            .filter(|((o, _, _), _)| *o == peer)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for (key, status) in waiting {
            self.write_status(key, status);
        }
        self.taken_back(peer);
        self.owner_peer_changed(peer);
    }

    /// The entry for `peer` after what runs for it changed.
    fn refresh_entry(&mut self, peer: &NodeId) {
        let entry = self.entry_for(peer);
        if self.view.peers().any(|p| p == peer) {
            let _ = self.view.set_entry_for(peer, entry);
        }
    }

    /// After a restart: the replicas an earlier run of this node started. Those an
    /// active contract (or this node itself) still covers are adopted as they are —
    /// running ones are not restarted — and re-admitted; the others are stopped and
    /// removed (`Runtime::reconcile_with`: for Docker, every container with this node's
    /// labels that no contract covers).
    pub(super) async fn recover(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let sold: std::collections::BTreeMap<ContractId, NodeId> = self
            .book
            .iter()
            .filter(|c| c.role == ContractRole::Provider)
            .map(|c| (c.id, c.peer))
            .collect();
        let me = self.me;
        let owner_of = |rid: &ReplicaId| -> Option<(NodeId, Option<ContractId>)> {
            if rid.contract() == "local" {
                return Some((me, None));
            }
            let c = rid.contract().parse::<ContractId>().ok()?;
            sold.get(&c).map(|o| (*o, Some(c)))
        };
        let covered = |rid: &ReplicaId| owner_of(rid).is_some();
        let done = match runtime.reconcile_with(&covered).await {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not recover replicas");
                return;
            }
        };
        for info in &done.removed {
            info!(replica = %info.id, status = %info.status, "recovered replica has no active contract; stopped and removed it");
        }
        for (rid, why) in &done.failed {
            warn!(replica = %rid, error = %why, "recovered replica has no active contract, and could not be removed");
        }
        // Usage counters go on from the reports written before the restart.
        for (c, peer) in &sold {
            let last = self
                .view
                .entry_for(peer)
                .and_then(|e| e.usage.get(&c.to_string()).cloned());
            if let Some(last) = last {
                self.hosted.meters.insert(*c, UsageMeter::resume(last));
            }
        }
        for info in done.adopted {
            let rid = info.id.clone();
            let Some((owner, contract)) = owner_of(&rid) else {
                continue;
            };
            let key = (owner, rid.workload().to_string(), rid.index());
            let spec = self
                .view
                .workload(&owner, rid.workload())
                .and_then(|w| w.record.spec);
            let demand = spec.as_ref().map_or(Resources::ZERO, |s| s.requests());
            if let Some(c) = contract {
                let (tx, rx) = oneshot::channel();
                let admit = Command::Quota(QuotaCommand::Admit {
                    from: owner,
                    contract: c,
                    key: key.clone(),
                    demand,
                    reply: tx,
                });
                if self.engine.send(admit).await.is_ok()
                    && let Ok(Err(e)) = rx.await
                {
                    warn!(replica = %rid, error = %e, "recovered replica not admitted again");
                }
            }
            info!(replica = %rid, status = %info.status, "adopted a replica");
            let cap = contract.and_then(|c| self.active(&c)).map(|c| c.partition);
            let peer = (owner != self.me).then_some(owner);
            let rspec = spec.as_ref().and_then(|s| {
                replica_spec(rid.clone(), s, cap.as_ref(), runtime.runs(), peer.as_ref()).ok()
            });
            self.hosted.insert(
                key.clone(),
                HostedReplica {
                    rid,
                    contract,
                    demand,
                    evicting: None,
                    policy: spec.map_or(RestartPolicy::Never, |s| s.restart),
                    restarts: 0,
                    spec: rspec,
                    seen_placed: true,
                    forget: false,
                    status: None,
                },
            );
            self.on_status(&key, &info);
        }
    }
}
