//! [`NodeApi`] for the real engine: maps `fluidos_core::Node` to the control
//! API's types.

use std::time::Instant;

use fluidos_contracts::{Architecture, ContractId, Flavor, Resources, SecretKey};
use fluidos_core::buyer::Phase;
use fluidos_core::buyer::{AcquisitionRequest, Constraints};
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{BuyProgress, Node, WorkloadError};
use fluidos_discovery::{CatalogName, CatalogServer, Source};
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::control::types::{
    BuyEvent, BuyRequest, CatalogView, ContractDetail, ContractExport, ContractInfo, DeployEvent,
    DeployRequest, DiscoveryView, FabricReport, FabricState, FabricSummary, LogsView, NodeKind,
    NodeView, PeerView, ReplicaView, StatusView, WorkloadView, contract_detail,
};
use crate::control::{ApiError, NodeApi};

/// A running node as the control API sees it.
#[derive(Clone, Debug)]
pub struct DaemonNode {
    node: Node,
    key: SecretKey,
    started: Instant,
    settings: DiscoverySettings,
    docker: Option<crate::control::types::DockerView>,
}

/// What the daemon was configured to do for discovery, shown by `status` next to
/// what discovery reports.
#[derive(Clone, Debug, Default)]
pub struct DiscoverySettings {
    /// The `catalog_server` rule.
    pub catalog_server: CatalogServer,
    /// mDNS on or off.
    pub mdns: bool,
    /// Manual peers configured.
    pub manual_peers: usize,
    /// Catalogs configured, with their addresses.
    pub catalogs: Vec<(CatalogName, Vec<Multiaddr>)>,
}

impl From<&Config> for DiscoverySettings {
    fn from(cfg: &Config) -> Self {
        Self {
            catalog_server: cfg.catalog_server,
            mdns: cfg.mdns,
            manual_peers: cfg.peers.len(),
            catalogs: cfg
                .catalogs
                .iter()
                .map(|c| (c.name.clone(), c.addresses.clone()))
                .collect(),
        }
    }
}

impl DaemonNode {
    /// Wraps `node`, whose key is `key` (it signs VC exports); uptime counts from now.
    pub fn new(node: Node, key: SecretKey) -> Self {
        Self {
            node,
            key,
            started: Instant::now(),
            settings: DiscoverySettings::default(),
            docker: None,
        }
    }

    /// What the daemon found out about Docker at start, for `status`.
    pub fn with_docker(mut self, docker: crate::control::types::DockerView) -> Self {
        self.docker = Some(docker);
        self
    }

    /// What discovery was configured with, for `status`.
    pub fn with_settings(mut self, settings: DiscoverySettings) -> Self {
        self.settings = settings;
        self
    }

    /// Discovery's configuration and state, as `status` shows them.
    async fn discovery_view(&self) -> Result<DiscoveryView, ApiError> {
        let stats = self
            .node
            .discovery()
            .stats()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let catalogs = self
            .settings
            .catalogs
            .iter()
            .map(|(name, addrs)| {
                let st = stats.catalogs.get(name).copied().unwrap_or_default();
                CatalogView {
                    name: name.to_string(),
                    addresses: addrs.iter().map(|a| a.to_string()).collect(),
                    reached: st.reached,
                    members: st.members,
                    bootstrap_failures: st.bootstrap_failures,
                }
            })
            .collect();
        Ok(DiscoveryView {
            catalog_server: stats.catalog_server,
            catalog_server_mode: self.settings.catalog_server.to_string(),
            mdns: self.settings.mdns,
            manual_peers: self.settings.manual_peers,
            catalogs,
        })
    }

    /// The fabric's report; "off" says which key turns it on.
    async fn fabric_report(&self) -> FabricReport {
        let mut r = self.node.fabric().await;
        if r.state == FabricState::Off {
            r.reason = "disabled (fabric.enabled = false)".into();
        }
        r
    }

    /// The wrapped node.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

/// The node has shut down: 503.
fn shut_down(e: fluidos_core::ShutDown) -> ApiError {
    ApiError::unavailable(e.to_string())
}

/// Discovery has stopped (the node is shutting down): 503.
fn stopped(e: fluidos_discovery::Stopped) -> ApiError {
    ApiError::unavailable(e.to_string())
}

fn add_peer_err(e: fluidos_discovery::AddPeerError) -> ApiError {
    use fluidos_discovery::AddPeerError as E;
    match e {
        E::Stopped => ApiError::unavailable(e.to_string()),
        other => ApiError::unprocessable("discovery", format!("discovery: {other}")),
    }
}

fn terminate_err(e: fluidos_core::TerminateError) -> ApiError {
    use fluidos_core::TerminateError as E;
    match e {
        E::ShutDown => ApiError::unavailable(e.to_string()),
        E::UnknownContract(_) => ApiError::not_found(e.to_string()),
        E::AlreadyEnded(_) => ApiError::conflict(e.to_string()),
        E::Ledger(_) => ApiError::unprocessable("refused", e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

fn source_name(s: &Source) -> String {
    match s {
        Source::Mdns => "mdns".into(),
        Source::Catalog(name) => format!("catalog:{name}"),
        Source::Manual => "manual".into(),
    }
}

/// Turns the API's purchase request into the engine's.
pub fn acquisition(req: &BuyRequest) -> Result<AcquisitionRequest, ApiError> {
    let architecture = req
        .architecture
        .as_deref()
        .map(|a| a.parse::<Architecture>().unwrap_or_else(|e| match e {}));
    Ok(AcquisitionRequest {
        resources: Resources {
            cpu_millis: req.cpu_millis,
            memory_bytes: req.memory_bytes,
            storage_bytes: req.storage_bytes,
            pods: req.pods,
            gpus: req.gpus,
        },
        constraints: Constraints {
            architecture,
            country: req.country.as_ref().map(|c| c.to_ascii_uppercase()),
            max_price_micros_per_hour: req.max_price_micros,
            currency: req.currency.as_ref().map(|c| c.to_ascii_uppercase()),
            ..Constraints::default()
        },
        duration_ms: req.duration_ms,
    })
}

/// A progress report of the engine as a (phase, detail) pair.
pub fn describe(p: &BuyProgress) -> (String, String) {
    let phase = match p {
        BuyProgress::Candidates(_) => "discover",
        BuyProgress::Phase(Phase::Listing { .. }) => "list",
        BuyProgress::Phase(Phase::Ranked { .. }) => "rank",
        BuyProgress::Phase(Phase::Buying { .. }) => "reserve_and_purchase",
        BuyProgress::Phase(Phase::Reserving { .. }) => "reserve",
        BuyProgress::Phase(Phase::Purchasing { .. }) => "purchase",
        BuyProgress::Phase(Phase::Persisting { .. }) => "persist",
        BuyProgress::Phase(Phase::Countersigning { .. }) => "countersign",
        BuyProgress::Persisted(_) => "stored",
        BuyProgress::Waiting(_) => "wait",
        _ => "progress",
    };
    (phase.to_string(), p.to_string())
}

impl NodeApi for DaemonNode {
    async fn status(&self) -> Result<StatusView, ApiError> {
        Ok(StatusView {
            node: self.node.status().await.map_err(shut_down)?,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            discovery: self.discovery_view().await?,
            runtime: self.node.runtime_summary().await.map_err(shut_down)?,
            fabric: Some(FabricSummary::of(&self.fabric_report().await)),
            docker: self.docker.clone(),
        })
    }

    async fn fabric(&self) -> Result<FabricReport, ApiError> {
        Ok(self.fabric_report().await)
    }

    async fn flavors(&self) -> Result<Vec<Flavor>, ApiError> {
        self.node.flavors().await.map_err(shut_down)
    }

    async fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        let list = self.node.peers().await.map_err(stopped)?;
        Ok(list
            .into_iter()
            .map(|c| PeerView {
                node_id: c.node.to_did_key(),
                peer_id: c.peer_id.to_string(),
                addresses: c.addresses.iter().map(|a| a.to_string()).collect(),
                sources: c.sources.iter().map(source_name).collect(),
                last_seen: c.last_seen,
                rating: c.rating.map(|r| r.score()),
                roles: c.advert.roles.iter().map(|r| r.to_string()).collect(),
            })
            .collect())
    }

    async fn add_peer(&self, addr: Multiaddr) -> Result<(), ApiError> {
        self.node.add_peer(addr).await.map_err(add_peer_err)
    }

    async fn contracts(&self) -> Result<Vec<ContractInfo>, ApiError> {
        self.node.contracts().await.map_err(shut_down)
    }

    async fn contract(&self, id: ContractId) -> Result<Option<ContractDetail>, ApiError> {
        let Some(c) = self.node.contract(id).await.map_err(shut_down)? else {
            return Ok(None);
        };
        let info = self
            .node
            .contracts()
            .await
            .map_err(shut_down)?
            .into_iter()
            .find(|i| i.id == id);
        Ok(info.map(|info| contract_detail(&c, info)))
    }

    async fn terminate(
        &self,
        id: ContractId,
        reason: String,
        cause: fluidos_contracts::TerminationCause,
    ) -> Result<(), ApiError> {
        self.node
            .terminate_for(id, reason, cause)
            .await
            .map_err(terminate_err)
    }

    async fn export(&self, id: ContractId, vc: bool) -> Result<ContractExport, ApiError> {
        let c = self
            .node
            .contract(id)
            .await
            .map_err(shut_down)?
            .ok_or_else(|| ApiError::not_found(format!("no contract {id}")))?;
        let bytes = c
            .signed()
            .to_bytes()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let vc = if vc {
            Some(crate::vc::export(&c, &self.key).await?)
        } else {
            None
        };
        Ok(ContractExport {
            id: id.to_string(),
            cbor_hex: hex::encode(bytes),
            vc,
        })
    }

    async fn buy(
        &self,
        req: BuyRequest,
        progress: mpsc::Sender<BuyEvent>,
    ) -> Result<ContractInfo, ApiError> {
        let request = acquisition(&req)?;
        let (tx, mut rx) = mpsc::channel(16);
        // Forward the engine's progress as API events while the purchase runs.
        let forward = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let (phase, detail) = describe(&p);
                if progress
                    .send(BuyEvent::Progress { phase, detail })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let result = match req.wait_ms.filter(|w| *w > 0) {
            Some(w) => {
                let wait = std::time::Duration::from_millis(w);
                self.node.buy_waiting(request, Some(tx), wait).await
            }
            None => self.node.buy(request, Some(tx)).await,
        };
        let _ = forward.await;
        let contract = result.map_err(|e| ApiError::unprocessable("buy_failed", e.to_string()))?;
        let id = contract.id();
        let info = self
            .node
            .contracts()
            .await
            .map_err(shut_down)?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| {
                ApiError::internal(format!("contract {id} was bought but is not listed"))
            })?;
        Ok(info)
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, ApiError> {
        let nodes = self.node.nodes().await.map_err(shut_down)?;
        Ok(nodes
            .into_iter()
            .map(|n| NodeView {
                kind: match n.entry.kind {
                    fluidos_core::view::NodeKind::Physical => NodeKind::Physical,
                    fluidos_core::view::NodeKind::Virtual => NodeKind::Virtual,
                },
                node_id: n.id.to_did_key(),
                capacity: n.entry.capacity,
                free: n.free,
                contracts: n.entry.contracts.len() as u64,
            })
            .collect())
    }

    async fn workloads(&self) -> Result<Vec<WorkloadView>, ApiError> {
        let me = self.node.node_id();
        let all = self.node.workloads().await.map_err(workload_err)?;
        Ok(all.into_iter().map(|w| workload_view(&me, w)).collect())
    }

    async fn workload(&self, id: String) -> Result<Option<WorkloadView>, ApiError> {
        let me = self.node.node_id();
        let w = self.node.workload(&id).await.map_err(workload_err)?;
        Ok(w.map(|w| workload_view(&me, w)))
    }

    async fn deploy(
        &self,
        req: DeployRequest,
        progress: mpsc::Sender<DeployEvent>,
    ) -> Result<DeployEvent, ApiError> {
        let text = req.spec.trim_start();
        let spec = if text.starts_with('{') {
            WorkloadSpec::from_json(text)
        } else {
            WorkloadSpec::from_toml(text)
        }
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if req.dry_run {
            let decision = self.node.deploy_dry_run(spec).await.map_err(workload_err)?;
            return Ok(DeployEvent::DryRun {
                decision: decision.to_string(),
            });
        }
        let wait = req
            .wait_ms
            .map(std::time::Duration::from_millis)
            .unwrap_or(fluidos_core::DEFAULT_DEPLOY_WAIT)
            .min(crate::control::MAX_BUY_WAIT);
        let (tx, mut rx) = mpsc::channel(32);
        let forward = tokio::spawn(async move {
            while let Some(phase) = rx.recv().await {
                let _ = progress.send(DeployEvent::Progress { phase }).await;
            }
        });
        let result = self.node.deploy(spec, Some(tx), wait).await;
        let _ = forward.await;
        let me = self.node.node_id();
        Ok(DeployEvent::Done {
            workload: workload_view(&me, result.map_err(workload_err)?),
        })
    }

    async fn undeploy(&self, id: String) -> Result<(), ApiError> {
        self.node.undeploy(&id).await.map_err(workload_err)
    }

    async fn logs(&self, id: String, replica: u32, tail: u32) -> Result<LogsView, ApiError> {
        let data = self
            .node
            .logs(&id, replica, tail)
            .await
            .map_err(workload_err)?;
        Ok(LogsView { data })
    }

    async fn view_export(&self) -> Result<Vec<u8>, ApiError> {
        self.node.export_view().await.map_err(shut_down)
    }
}

fn workload_err(e: WorkloadError) -> ApiError {
    match e {
        WorkloadError::UnknownWorkload(_) | WorkloadError::UnknownReplica(..) => {
            ApiError::not_found(e.to_string())
        }
        WorkloadError::Invalid(_) => ApiError::bad_request(e.to_string()),
        WorkloadError::Unreachable { .. } => ApiError::unprocessable("unreachable", e.to_string()),
        WorkloadError::ShutDown => ApiError::unavailable(e.to_string()),
        _ => ApiError::unprocessable("refused", e.to_string()),
    }
}

/// A workload for the API.
pub fn workload_view(
    me: &fluidos_contracts::NodeId,
    w: fluidos_core::WorkloadDetail,
) -> WorkloadView {
    let replicas = w
        .view
        .record
        .replicas
        .iter()
        .filter_map(|(k, r)| {
            let index: u32 = k.parse().ok()?;
            let cause = r.status.as_ref().and_then(|s| s.state.cause());
            let (state, detail, since, output_tail) = match &r.status {
                Some(s) => (
                    s.state.name().to_string(),
                    s.state.detail(),
                    Some(s.since),
                    s.output_tail.clone(),
                ),
                // Placed on a provider whose first status has not arrived yet: what
                // the provider answered the offload is the latest word.
                None => match w.history.iter().rev().find(|h| h.replica == index) {
                    Some(h) => (h.state.clone(), h.detail.clone(), Some(h.at), String::new()),
                    None => (
                        "placed".to_string(),
                        String::new(),
                        r.placed_at,
                        String::new(),
                    ),
                },
            };
            Some(ReplicaView {
                index,
                node: r.node.map(|n| n.to_did_key()),
                state,
                detail,
                cause,
                since,
                output_tail,
            })
        })
        .collect();
    WorkloadView {
        id: w.view.id,
        name: w.view.record.name,
        owner: w.view.owner.to_did_key(),
        own: w.view.owner == *me,
        replicas,
        placement: w.placement,
        history: w.history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_core::TerminateError;

    #[test]
    fn termination_errors_keep_their_status_and_code() {
        let id = ContractId([3; 16]);
        let e = terminate_err(TerminateError::UnknownContract(id));
        assert_eq!((e.status, e.code), (404, "not_found"));
        assert_eq!(e.message, format!("no contract {id} on this node"));
        let e = terminate_err(TerminateError::AlreadyEnded(id));
        assert_eq!((e.status, e.code), (409, "conflict"));
        assert_eq!(e.message, format!("contract {id} has already ended"));
        let e = terminate_err(TerminateError::ShutDown);
        assert_eq!((e.status, e.code), (503, "unavailable"));
    }

    #[test]
    fn discovery_errors_keep_their_code() {
        let e = add_peer_err(fluidos_discovery::AddPeerError::TooMany);
        assert_eq!((e.status, e.code), (422, "discovery"));
        assert_eq!(e.message, "discovery: too many manual peers");
        let e = add_peer_err(fluidos_discovery::AddPeerError::Stopped);
        assert_eq!((e.status, e.code), (503, "unavailable"));
        let e = stopped(fluidos_discovery::Stopped);
        assert_eq!((e.status, e.code), (503, "unavailable"));
    }
}
