//! The control API's JSON types: the documented contract between the daemon and
//! its clients (`docs/CONTROL-API.md`). They are kept apart from fluidos-core's
//! internal types so the API stays stable while the engine changes.

use fluidos_contracts::{ContractTerms, Resources, Timestamp};
pub use fluidos_core::{ContractInfo, ContractRole, ContractState, NodeStatus};
use serde::{Deserialize, Serialize};

/// `GET /v1/status`: the engine's [`NodeStatus`] (identity, listen addresses,
/// roles, capacity, committed capacity, flavors, counts) plus daemon facts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// The node's own status.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// fluidos-node version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Where this node looks for peers and whether it serves catalogs.
    #[serde(default)]
    pub discovery: DiscoveryView,
    /// The workload runtime and the isolation it applies (cgroups v2/v1 or
    /// rlimits), or `None` when this node hosts no workloads.
    #[serde(default)]
    pub runtime: Option<String>,
    /// The fabric: which backend runs and why (`None` from a daemon without it).
    #[serde(default)]
    pub fabric: Option<FabricSummary>,
    /// Whether a Docker engine runs this node's image workloads, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerView>,
}

/// The `fabric` object of `GET /v1/status` (the whole picture is `GET /v1/fabric`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricSummary {
    /// `off`, `unavailable` or `running`.
    pub state: FabricState,
    /// `tun`, `userspace`, `idle` (no contract needs an interface yet) or
    /// `unavailable`, when running.
    pub backend: Option<String>,
    /// Why this backend (or why the fabric is off or unavailable).
    pub reason: String,
    /// The interface, when the TUN backend runs.
    pub interface: Option<String>,
    /// Tunnels (peers).
    pub peers: usize,
}

pub use fluidos_core::fabric::{FabricReport, FabricState};

impl FabricSummary {
    /// The summary of a full report.
    pub fn of(r: &FabricReport) -> Self {
        let st = r.status.as_ref();
        Self {
            state: r.state,
            backend: st.map(|s| backend_name(s.backend.kind).to_string()),
            reason: r.reason.clone(),
            interface: st.and_then(|s| s.backend.interface.clone()),
            peers: st.map_or(0, |s| s.peers.len()),
        }
    }
}

/// `tun`, `userspace`, `idle` or `unavailable`.
pub fn backend_name(kind: fluidos_fabric::BackendKind) -> &'static str {
    match kind {
        fluidos_fabric::BackendKind::Tun => "tun",
        fluidos_fabric::BackendKind::Userspace => "userspace",
        fluidos_fabric::BackendKind::Idle => "idle",
        _ => "unavailable",
    }
}

/// The `docker` object of `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerView {
    /// The configured choice: `auto`, `docker` or `process` (key `runtime`).
    pub mode: String,
    /// Whether image workloads run here, on a Docker engine.
    pub available: bool,
    /// Where the engine was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The engine's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// The API version negotiated with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Why Docker is not used (no engine answered, or `runtime = "process"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `discovery` object of `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryView {
    /// Whether this node serves catalogs now (answers Kademlia queries).
    pub catalog_server: bool,
    /// The configured rule: `auto`, `true` or `false` (key `catalog_server`).
    pub catalog_server_mode: String,
    /// mDNS on or off.
    pub mdns: bool,
    /// How many manual peers are configured.
    pub manual_peers: usize,
    /// Each configured catalog and how far this node got with it.
    pub catalogs: Vec<CatalogView>,
}

/// One entry of [`DiscoveryView::catalogs`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogView {
    /// The catalog's name.
    pub name: String,
    /// Its configured addresses.
    pub addresses: Vec<String>,
    /// Whether a catalog address (or a member) has answered.
    pub reached: bool,
    /// Members seen other than this node.
    pub members: usize,
    /// Failed dials of its addresses since the last success.
    pub bootstrap_failures: u32,
}

impl DiscoveryView {
    /// Why `GET /v1/peers` is empty, in one sentence, from what this view says.
    pub fn why_no_peers(&self) -> String {
        if self.catalogs.is_empty() {
            if self.manual_peers == 0 && !self.mdns {
                return "this node joins no catalog, has no manual peers and mDNS is off; \
                        add `--catalog NAME=ADDR` to `run` or `fluidos-node peer add ADDR`"
                    .into();
            }
            let mut sources = Vec::new();
            if self.manual_peers > 0 {
                sources.push(format!("{} manual peer(s)", self.manual_peers));
            }
            if self.mdns {
                sources.push("mDNS".into());
            }
            return format!(
                "this node joins no catalog, and no peer has answered yet ({})",
                sources.join(", ")
            );
        }
        let mut parts = Vec::new();
        for c in &self.catalogs {
            parts.push(if !c.reached {
                format!(
                    "catalog {} configured but not reached yet ({} failed dial(s) of its address; \
                     is a fluidos node running there?)",
                    c.name, c.bootstrap_failures
                )
            } else if c.members == 0 {
                format!("catalog {} answered with no other members", c.name)
            } else {
                format!(
                    "catalog {} lists {} member(s) whose adverts are not fetched or were refused yet",
                    c.name, c.members
                )
            });
        }
        parts.join("; ")
    }
}

/// One entry of `GET /v1/peers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// The peer's did:key.
    pub node_id: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Addresses known for it.
    pub addresses: Vec<String>,
    /// How it was found (`mdns`, `catalog:<name>`, `manual`).
    pub sources: Vec<String>,
    /// When it was last confirmed (unix ms).
    pub last_seen: Timestamp,
    /// Rating score in [0, 1] from past contracts, if any.
    pub rating: Option<f64>,
    /// Roles it announces.
    pub roles: Vec<String>,
}

/// `POST /v1/peers` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPeerRequest {
    /// A multiaddr, normally ending in `/p2p/<peer id>`.
    pub addr: String,
}

/// `GET /v1/contracts/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContractDetail {
    /// The summary.
    pub contract: ContractInfo,
    /// The full signed terms.
    pub terms: ContractTerms,
    /// The provider's signature (hex).
    pub provider_signature: String,
    /// The buyer's countersignature (hex).
    pub buyer_signature: Option<String>,
}

/// `POST /v1/contracts/{id}/terminate` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateRequest {
    /// Why; shown to the other party.
    #[serde(default)]
    pub reason: String,
    /// Why, typed and signed into the termination: `requested` (the default),
    /// `provider_lost` (a buyer whose provider is gone), `over_quota` (a provider whose
    /// buyer used more than the contract allows).
    #[serde(default)]
    pub cause: fluidos_contracts::TerminationCause,
}

/// `GET /v1/contracts/{id}/export`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContractExport {
    /// Contract id (hex).
    pub id: String,
    /// The canonical CBOR of the signed contract, hex — what
    /// `fluidos-node contract verify` reads (after hex-decoding) or writes raw.
    pub cbor_hex: String,
    /// The contract as a W3C Verifiable Credential, when asked with `?vc=true`
    /// and the daemon is built with the `vc` feature.
    pub vc: Option<serde_json::Value>,
}

/// `POST /v1/buy` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuyRequest {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Storage in bytes.
    pub storage_bytes: u64,
    /// Workload slots (0 with cpu or memory = one slot, or the seller's minimum).
    pub pods: u64,
    /// Whole GPUs.
    pub gpus: u64,
    /// Highest price accepted per period, micro-units.
    pub max_price_micros: Option<u64>,
    /// Currency of the price.
    pub currency: Option<String>,
    /// Country the capacity must be in.
    pub country: Option<String>,
    /// Architecture required.
    pub architecture: Option<String>,
    /// Contract length in milliseconds.
    pub duration_ms: u64,
    /// While no provider is known, wait up to this long for one (at most
    /// 600 000 ms); absent or 0 fails at once.
    pub wait_ms: Option<u64>,
}

/// One line of the `POST /v1/buy` response stream (NDJSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuyEvent {
    /// A phase started or finished.
    Progress {
        /// `discover`, `list`, `reserve`, `purchase`, `countersign`, …
        phase: String,
        /// Human-readable detail.
        detail: String,
    },
    /// The purchase succeeded; the last line.
    Done {
        /// The new contract.
        contract: ContractInfo,
    },
    /// The purchase failed; the last line.
    Failed {
        /// Why.
        error: ErrorBody,
    },
}

/// Whether a row of `GET /v1/nodes` is this machine or capacity bought elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// This machine.
    Physical,
    /// Capacity bought from one provider.
    Virtual,
}

/// One entry of `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Physical or virtual.
    pub kind: NodeKind,
    /// This node's did:key (physical) or the provider's (virtual).
    pub node_id: String,
    /// Capacity: what this node's own workloads may use here (physical) or the
    /// sum of the active contracts with the provider (virtual).
    pub capacity: Resources,
    /// Capacity minus what the replicas placed on it request.
    #[serde(default)]
    pub free: Resources,
    /// Active contracts backing a virtual node (0 for the physical one).
    pub contracts: u64,
}

/// One workload: `GET /v1/workloads` lists them, `GET /v1/workloads/{id}` shows one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadView {
    /// Its id (unique per owner).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The owner's did:key (this node, or a peer whose replicas run here).
    pub owner: String,
    /// Whether this node owns it.
    pub own: bool,
    /// Every replica.
    pub replicas: Vec<ReplicaView>,
    /// The placement decision with every candidate's verdict (owner only).
    #[serde(default)]
    pub placement: Option<String>,
    /// Status changes, oldest first (owner only).
    #[serde(default)]
    pub history: Vec<fluidos_core::HistoryEntry>,
}

/// One replica of a [`WorkloadView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// Its index.
    pub index: u32,
    /// The node it is placed on (did:key), if placed.
    pub node: Option<String>,
    /// `pending`, `starting`, `running`, `exited`, `failed`, `evicted`, …
    pub state: String,
    /// Exit code or reason.
    pub detail: String,
    /// Why it ended, typed, for a failed or evicted replica whose end has one of
    /// these causes (`by_owner`, `by_provider`, `expired`, `provider_lost`, `over_quota`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<fluidos_core::EndCause>,
    /// Since when (UNIX ms).
    pub since: Option<Timestamp>,
    /// The last output, as the view carries it.
    pub output_tail: String,
}

/// `POST /v1/deploy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The workload spec, TOML or JSON text (`docs/WORKLOADS.md`).
    pub spec: String,
    /// Only show where it would go and why.
    #[serde(default)]
    pub dry_run: bool,
    /// How long to wait for every replica to run or end, ms (default 60 000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// One line of the `POST /v1/deploy` response stream (NDJSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeployEvent {
    /// Placement, acquisition, offload and replica states as they happen.
    Progress {
        /// What happened.
        #[serde(flatten)]
        phase: fluidos_core::DeployPhase,
    },
    /// A dry run's decision; the last line.
    DryRun {
        /// The decision with every reason.
        decision: String,
    },
    /// The workload as it stands once every replica runs or ended; the last line.
    Done {
        /// The workload.
        workload: WorkloadView,
    },
    /// The deploy failed; the last line.
    Failed {
        /// Why.
        error: ErrorBody,
    },
}

/// `GET /v1/workloads/{id}/logs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsView {
    /// The output (lossy UTF-8).
    pub data: String,
}

/// The JSON body of every error response: `{"error": {"code": …, "message": …}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code (`unauthorized`, `not_found`, …).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// The envelope around [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// The detail view of a verified contract, with its summary from the node's list.
pub fn contract_detail(
    c: &fluidos_contracts::VerifiedContract,
    info: ContractInfo,
) -> ContractDetail {
    ContractDetail {
        contract: info,
        terms: c.terms().clone(),
        provider_signature: hex::encode(c.signed().provider_signature.0),
        buyer_signature: c.signed().buyer_signature.map(|s| hex::encode(s.0)),
    }
}
