//! Workloads on a [`Node`]: deploy (place, buy when short, offload, wait until
//! running), list, inspect, logs, undeploy; the nodes of the view; its export.
//!
//! Like [`Node::buy`], a deploy runs in the caller's task: it asks the workload
//! task for a placement, runs the buyer when capacity is short, and hands the
//! assignments back to the workload task, which sends each replica to its node.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::workloads::OwnerCommand;
use super::workloads::{DeployPhase, Submitted, WCommand, WorkloadDetail, WorkloadError};
use super::{Node, ShutDown};
use crate::offload::wire::{self, WorkloadRequest, WorkloadResponse};
use crate::placement::{self, Assignment, Decision};
use crate::view::NodeInfo;
use crate::workload::WorkloadSpec;

/// Places again, in the background, the replicas that the workload task
/// reports lost (their provider's contract ended, or it went silent), as
/// their restart policy allows: the same placement, buying and offload as a
/// deploy. Holds the node weakly, so it never keeps a dropped node alive.
pub(super) fn spawn_rescheduler(node: &Node, mut rx: mpsc::Receiver<String>) {
    let weak = std::sync::Arc::downgrade(&node.inner);
    tokio::spawn(async move {
        while let Some(id) = rx.recv().await {
            let Some(inner) = weak.upgrade() else { break };
            let node = Node { inner };
            let plan = node
                .workloads_ask(|reply| {
                    WCommand::Owner(OwnerCommand::PlanPending {
                        id: id.clone(),
                        reply,
                    })
                })
                .await;
            let Ok(Some(decision)) = plan else { continue };
            tracing::info!(workload = %id, %decision, "placing lost replicas again");
            if let Err(e) = node.realize(&id, &decision, &None).await {
                tracing::warn!(workload = %id, error = %e, "rescheduling failed");
            }
        }
    });
}

/// How long [`Node::deploy`] waits for every replica to run (or end) by default.
pub const DEFAULT_DEPLOY_WAIT: Duration = Duration::from_secs(60);

async fn report(progress: &Option<mpsc::Sender<DeployPhase>>, phase: DeployPhase) {
    if let Some(p) = progress {
        let _ = p.send(phase).await;
    }
}

impl Node {
    async fn workloads_ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> WCommand,
    ) -> Result<T, WorkloadError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .workloads
            .commands
            .send(make(tx))
            .await
            .map_err(|_| WorkloadError::ShutDown)?;
        rx.await.map_err(|_| WorkloadError::ShutDown)
    }

    /// Where `spec` would go, and why, without changing anything.
    pub async fn deploy_dry_run(&self, spec: WorkloadSpec) -> Result<Decision, WorkloadError> {
        let s: Submitted = self
            .workloads_ask(|reply| {
                WCommand::Owner(OwnerCommand::Submit {
                    spec: Box::new(spec),
                    dry_run: true,
                    reply,
                })
            })
            .await??;
        Ok(s.decision)
    }

    /// Deploys a workload: places its replicas on this node or the virtual
    /// nodes of its providers, buys what is missing when nothing fits, sends
    /// each replica to its node, and waits up to `wait` until every replica runs
    /// or has ended. Progress goes to `progress` if given.
    pub async fn deploy(
        &self,
        spec: WorkloadSpec,
        progress: Option<mpsc::Sender<DeployPhase>>,
        wait: Duration,
    ) -> Result<WorkloadDetail, WorkloadError> {
        let mut changes = self.inner.workloads.changed.clone();
        let submitted: Submitted = self
            .workloads_ask(|reply| {
                WCommand::Owner(OwnerCommand::Submit {
                    spec: Box::new(spec),
                    dry_run: false,
                    reply,
                })
            })
            .await??;
        let id = submitted
            .id
            .clone()
            .ok_or_else(|| WorkloadError::Invalid("no id".into()))?;
        report(
            &progress,
            DeployPhase::Placed {
                workload: id.clone(),
                decision: submitted.decision.to_string(),
            },
        )
        .await;
        self.realize(&id, &submitted.decision, &progress).await?;
        self.wait_settled(&id, &mut changes, &progress, wait).await
    }

    /// Carries out a placement decision for workload `id`: buys what is
    /// missing, marks what cannot be placed, and hands the assignments to the
    /// workload task, which sends each replica to its node.
    async fn realize(
        &self,
        id: &str,
        decision: &Decision,
        progress: &Option<mpsc::Sender<DeployPhase>>,
    ) -> Result<(), WorkloadError> {
        let mut assignments: Vec<Assignment> = Vec::new();
        match decision {
            Decision::Place { assignments: a, .. } => assignments.extend(a.iter().cloned()),
            Decision::Acquire { plan, .. } => {
                assignments.extend(plan.placed.iter().cloned());
                report(
                    progress,
                    DeployPhase::Acquiring {
                        missing: plan.missing.to_string(),
                    },
                )
                .await;
                match self.buy(plan.request.clone(), None).await {
                    Ok(contract) => {
                        let provider = contract.terms().provider;
                        report(
                            progress,
                            DeployPhase::Bought {
                                contract: contract.id().to_string(),
                                provider: provider.to_string(),
                            },
                        )
                        .await;
                        assignments.extend(plan.unplaced.iter().map(|r| Assignment {
                            replica: *r,
                            node: provider,
                        }));
                        // The engine publishes the new contract to the workload
                        // task; wait (briefly) until it has it.
                        self.wait_for_contract(contract.id()).await;
                    }
                    Err(e) => {
                        let after =
                            placement::unschedulable_after(decision.clone(), &e.to_string());
                        if let Decision::Unschedulable { reason, .. } = after {
                            report(
                                progress,
                                DeployPhase::Unschedulable {
                                    reason: reason.clone(),
                                },
                            )
                            .await;
                            self.mark_unschedulable(id, reason).await?;
                        }
                    }
                }
            }
            Decision::Unschedulable { reason, .. } => {
                report(
                    progress,
                    DeployPhase::Unschedulable {
                        reason: reason.clone(),
                    },
                )
                .await;
                self.mark_unschedulable(id, reason.clone()).await?;
            }
        }
        for a in &assignments {
            report(
                progress,
                DeployPhase::Offloading {
                    replica: a.replica,
                    node: a.node.to_string(),
                },
            )
            .await;
        }
        if !assignments.is_empty() {
            let (a, i) = (assignments, id.to_string());
            self.workloads_ask(|reply| {
                WCommand::Owner(OwnerCommand::Assign {
                    id: i,
                    assignments: a,
                    reply,
                })
            })
            .await??;
        }
        Ok(())
    }

    async fn mark_unschedulable(&self, id: &str, reason: String) -> Result<(), WorkloadError> {
        self.inner
            .workloads
            .commands
            .send(WCommand::Owner(OwnerCommand::Unschedulable {
                id: id.to_string(),
                reason,
            }))
            .await
            .map_err(|_| WorkloadError::ShutDown)
    }

    /// Waits until the workload task follows contract `id` (at most 2 s).
    async fn wait_for_contract(&self, id: fluidos_contracts::ContractId) {
        let mut rx = self.inner.contracts.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            rx.wait_for(|book| book.iter().any(|c| c.id == id)),
        )
        .await;
        // The task applies the book in its own loop: one round trip through its
        // queue orders this after it.
        let _ = self.workloads_ask(WCommand::Runtime).await;
    }

    /// Waits until every replica of `id` runs, has ended, or is unplaced with a
    /// reason; reports each state change.
    async fn wait_settled(
        &self,
        id: &str,
        changes: &mut tokio::sync::watch::Receiver<u64>,
        progress: &Option<mpsc::Sender<DeployPhase>>,
        wait: Duration,
    ) -> Result<WorkloadDetail, WorkloadError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = 0usize;
        loop {
            let detail = self
                .workload(id)
                .await?
                .ok_or_else(|| WorkloadError::UnknownWorkload(id.to_string()))?;
            for h in detail.history.iter().skip(seen) {
                report(
                    progress,
                    DeployPhase::Replica {
                        replica: h.replica,
                        state: h.state.clone(),
                        detail: h.detail.clone(),
                    },
                )
                .await;
            }
            seen = detail.history.len();
            if settled(&detail) {
                return Ok(detail);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WorkloadError::ShutDown),
                Err(_) => return Ok(detail),
            }
        }
    }

    /// Every workload: this node's own and the peers' hosted here.
    pub async fn workloads(&self) -> Result<Vec<WorkloadDetail>, WorkloadError> {
        self.workloads_ask(|reply| WCommand::Owner(OwnerCommand::List { reply }))
            .await
    }

    /// One workload, with its placement reasons and status history.
    pub async fn workload(&self, id: &str) -> Result<Option<WorkloadDetail>, WorkloadError> {
        let id = id.to_string();
        self.workloads_ask(|reply| WCommand::Owner(OwnerCommand::Get { id, reply }))
            .await
    }

    /// Stops every replica of this node's workload `id` and removes it.
    pub async fn undeploy(&self, id: &str) -> Result<(), WorkloadError> {
        let id = id.to_string();
        self.workloads_ask(|reply| WCommand::Owner(OwnerCommand::Undeploy { id, reply }))
            .await?
    }

    /// The last `tail` bytes of a replica's output, from wherever it runs.
    pub async fn logs(&self, id: &str, replica: u32, tail: u32) -> Result<String, WorkloadError> {
        let i = id.to_string();
        let at = self
            .workloads_ask(|reply| {
                WCommand::Owner(OwnerCommand::Locate {
                    id: i,
                    replica,
                    reply,
                })
            })
            .await??;
        match at {
            None => {
                let runtime =
                    self.inner.workloads.runtime.clone().ok_or_else(|| {
                        WorkloadError::Refused("this node runs no workloads".into())
                    })?;
                let rid = super::workloads::replica_id(id, replica, None)
                    .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
                let logs = runtime
                    .logs(&rid, tail as usize)
                    .await
                    .map_err(|e| WorkloadError::Refused(e.to_string()))?;
                Ok(String::from_utf8_lossy(&logs.data).into_owned())
            }
            Some(node) => {
                let request = WorkloadRequest::Logs {
                    workload: id.to_string(),
                    replica,
                    tail,
                };
                let bytes = self
                    .inner
                    .discovery
                    .app_request(
                        node,
                        fluidos_discovery::AppProtocol::Workload,
                        wire::encode(&request),
                        super::workloads::APP_TIMEOUT,
                    )
                    .await
                    .map_err(|e| WorkloadError::Unreachable {
                        node: node.to_string(),
                        reason: e.to_string(),
                    })?;
                match wire::decode_response(&bytes) {
                    Ok(WorkloadResponse::Logs { data, .. }) => Ok(data),
                    Ok(WorkloadResponse::Error { message, .. }) => {
                        Err(WorkloadError::Refused(message))
                    }
                    Ok(other) => Err(WorkloadError::Refused(format!(
                        "unexpected answer {other:?}"
                    ))),
                    Err(e) => Err(WorkloadError::Refused(e.to_string())),
                }
            }
        }
    }

    /// This node's physical entry and one virtual node per provider, with what
    /// is free on each.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ShutDown> {
        self.workloads_ask(WCommand::Nodes)
            .await
            .map_err(|_| ShutDown)
    }

    /// The whole view as a standard Automerge document (`docs/ARCHITECTURE.md`).
    pub async fn export_view(&self) -> Result<Vec<u8>, ShutDown> {
        self.workloads_ask(WCommand::Export)
            .await
            .map_err(|_| ShutDown)
    }

    /// What the runtime enforces, or `None` when this node runs no workloads.
    pub async fn runtime_summary(&self) -> Result<Option<String>, ShutDown> {
        self.workloads_ask(WCommand::Runtime)
            .await
            .map_err(|_| ShutDown)
    }

    /// The last usage report per contract: measured here for contracts this node
    /// sold, as the provider reported it in the view for contracts it bought.
    pub async fn usage(
        &self,
    ) -> Result<
        std::collections::BTreeMap<fluidos_contracts::ContractId, crate::usage::ContractUsage>,
        ShutDown,
    > {
        self.workloads_ask(WCommand::Usage)
            .await
            .map_err(|_| ShutDown)
    }
}

/// Every replica runs, has ended, or was sent back unplaced with a reason.
fn settled(d: &WorkloadDetail) -> bool {
    d.view.record.replicas.iter().all(|(k, r)| {
        let state = r.status.as_ref().map(|s| &s.state);
        let confirmed = d
            .history
            .iter()
            .rev()
            .find(|h| h.replica.to_string() == *k)
            .is_some_and(|h| h.state == "running");
        confirmed
            || matches!(state, Some(crate::view::ReplicaState::Running))
            || state.is_some_and(|s| s.is_final())
    })
}
