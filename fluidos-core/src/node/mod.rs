//! [`Node`]: the builder and the driver tasks that run a fluidos node.
//!
//! A bound node runs two tasks besides the discovery event loop:
//!
//! - the **engine** ([`engine`]) owns the provider [`Ledger`](crate::ledger::Ledger), the
//!   [`Store`](crate::store::Store) and the buyer's book of contracts. It answers
//!   inbound REAR requests in batches: every request of a batch is applied to the
//!   ledger, the records they produced are written with one fsync (group commit),
//!   and only then are the responses sent. It also re-measures the host, expires
//!   reservations and contracts on time, and keeps the catalog advert current;
//! - **acquisitions** ([`buy`]) run in the task that calls [`Node::buy`]: they drive
//!   the I/O-free [`Acquisition`](crate::buyer::Acquisition) over the discovery
//!   handle and ask the engine to persist the contract before countersigning;
//! - the **workload** task ([`workloads`]) and, when configured, the **fabric**
//!   task ([`fabric`]: WireGuard tunnels with the other party of every active
//!   contract) follow the engine's `watch` of active contracts.
//!
//! [`Node`] is a cheap, cloneable handle to all of them.

mod added_peers;
mod buy;
mod deploy;
mod engine;
mod fabric;
mod types;
mod workloads;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fluidos_contracts::{ContractId, Flavor, NodeId, SecretKey, VerifiedContract};
use fluidos_discovery::{
    CatalogConfig, CatalogName, DiscoveryConfig, DiscoveryHandle, IncomingPolicy, OutgoingPolicy,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::buyer::AcquisitionRequest;
use crate::host::{HostReserve, OfferConfig};

pub use buy::{BuyError, BuyProgress, NotReady};
pub use deploy::DEFAULT_DEPLOY_WAIT;
pub use fabric::{
    DEFAULT_FABRIC_PORT, FabricOptions, FabricReport, FabricState, RefusedTunnel, Topology,
    desired as desired_tunnels, endpoints_for,
};
pub use fluidos_fabric::service::BackendChoice;
pub use types::{
    ActiveContract, BindError, ContractInfo, ContractRole, ContractState, NodeStatus, Roles,
    ShutDown, TerminateError,
};
pub use workloads::{DeployPhase, HistoryEntry, Submitted, WorkloadDetail, WorkloadError};

use engine::Command;

/// Builds a [`Node`]. Defaults are the safe ones: listen on loopback only, no
/// mDNS, no catalog, sell what the host can spare after a 10 % (≥ 1 core, ≥ 512 MiB)
/// reserve.
#[derive(Debug)]
#[must_use]
pub struct NodeBuilder {
    data_dir: Option<PathBuf>,
    key: Option<SecretKey>,
    discovery: DiscoveryConfig,
    offer: OfferConfig,
    reserve: HostReserve,
    remeasure_every: Duration,
    roles: Roles,
    fabric_endpoints: Vec<std::net::SocketAddr>,
    fabric: Option<FabricOptions>,
    ledger: LedgerTuning,
    detect_gpus: bool,
    max_sellable: Option<fluidos_contracts::Resources>,
    offer_cache_ttl: Duration,
    runtime: RuntimeChoice,
    local_capacity: Option<fluidos_contracts::Resources>,
    provider_lost_after: Duration,
    usage_every: Duration,
}

/// How long an owner waits without a word from a provider before its replicas
/// there count as lost and are rescheduled, by default.
pub const DEFAULT_PROVIDER_LOST_AFTER: Duration = Duration::from_secs(30);

/// Which runtime a node runs workloads with.
#[derive(Clone, Default)]
enum RuntimeChoice {
    /// The process runtime over `<data-dir>/replicas`, if it can be built.
    #[default]
    Process,
    /// The embedder's.
    Given(Arc<dyn crate::runtime::Runtime>),
    /// None: the node hosts no workloads.
    Off,
}

impl std::fmt::Debug for RuntimeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RuntimeChoice::Process => "process",
            RuntimeChoice::Given(_) => "given",
            RuntimeChoice::Off => "off",
        })
    }
}

/// How often a provider samples the usage of the replicas it hosts into the view, by
/// default.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a provider's listing is reused by later purchases, by default.
pub const DEFAULT_OFFER_CACHE_TTL: Duration = Duration::from_secs(10);

/// Ledger limits an embedder may tune (the rest is derived from the host).
#[derive(Clone, Debug)]
pub struct LedgerTuning {
    /// How long a reservation holds capacity, in milliseconds.
    pub reservation_ttl_ms: u64,
    /// How long a provider-signed offer waits for the countersignature.
    pub offer_ttl_ms: u64,
    /// The longest contract sold, in milliseconds.
    pub max_contract_ms: u64,
    /// Live reservations and offers one buyer may hold.
    pub max_reservations_per_buyer: usize,
}

impl Default for LedgerTuning {
    fn default() -> Self {
        Self {
            reservation_ttl_ms: 30_000,
            offer_ttl_ms: 30_000,
            max_contract_ms: 30 * 24 * 3_600_000,
            max_reservations_per_buyer: 16,
        }
    }
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            data_dir: None,
            key: None,
            discovery: DiscoveryConfig::default(),
            offer: OfferConfig::default(),
            reserve: HostReserve::default(),
            remeasure_every: Duration::from_secs(60),
            roles: Roles::default(),
            fabric_endpoints: Vec::new(),
            fabric: None,
            ledger: LedgerTuning::default(),
            detect_gpus: true,
            max_sellable: None,
            offer_cache_ttl: DEFAULT_OFFER_CACHE_TTL,
            runtime: RuntimeChoice::default(),
            local_capacity: None,
            provider_lost_after: DEFAULT_PROVIDER_LOST_AFTER,
            usage_every: DEFAULT_USAGE_INTERVAL,
        }
    }
}

impl NodeBuilder {
    /// The data directory: key, WireGuard key, contracts and reservations. Required.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Joins the catalog `name` through these addresses (each with `/p2p/<peer id>`).
    pub fn catalog(mut self, name: CatalogName, bootstrap: Vec<Multiaddr>) -> Self {
        self.discovery
            .catalogs
            .push(CatalogConfig::new(name, bootstrap));
        self
    }

    /// Addresses to listen on. Default: `/ip4/127.0.0.1/tcp/0`.
    pub fn listen(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.discovery.listen = addrs;
        self
    }

    /// Finds and announces on the LAN with mDNS. Default: off. mDNS multicasts on
    /// every interface of the network namespace.
    pub fn mdns(mut self, on: bool) -> Self {
        self.discovery.mdns = on;
        self
    }

    /// A peer to dial directly.
    pub fn manual_peer(mut self, addr: Multiaddr) -> Self {
        self.discovery.manual_peers.push(addr);
        self
    }

    /// Location, labels, price and partitioning of what this node sells.
    pub fn offer(mut self, offer: OfferConfig) -> Self {
        self.offer = offer;
        self
    }

    /// What the host keeps for itself.
    pub fn host_reserve(mut self, reserve: HostReserve) -> Self {
        self.reserve = reserve;
        self
    }

    /// Whether this node sells, buys, and aggregates others.
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = roles;
        self
    }

    /// Which discovered nodes may become candidates.
    pub fn incoming_policy(mut self, policy: IncomingPolicy) -> Self {
        self.discovery.incoming = policy;
        self
    }

    /// Where this node announces itself.
    pub fn outgoing_policy(mut self, policy: OutgoingPolicy) -> Self {
        self.discovery.outgoing = policy;
        self
    }

    /// How often the host is measured again. Default: 60 s.
    pub fn remeasure_every(mut self, every: Duration) -> Self {
        self.remeasure_every = every;
        self
    }

    /// Uses this identity instead of the key file in the data directory.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// UDP endpoints where this node accepts WireGuard; written into contracts.
    /// With [`fabric`](Self::fabric) these are used when its options name none.
    pub fn fabric_endpoints(mut self, endpoints: Vec<std::net::SocketAddr>) -> Self {
        self.fabric_endpoints = endpoints;
        self
    }

    /// Runs the fabric: WireGuard tunnels with the other party of every active
    /// contract, up when a contract becomes active, down when it ends, restored
    /// after a restart (see [`FabricOptions`] for the backend, interface, port and
    /// topology). Default: off, so that an embedder (or a test running many nodes
    /// in one process) never gets interfaces or UDP ports it did not ask for.
    pub fn fabric(mut self, options: FabricOptions) -> Self {
        self.fabric = Some(options);
        self
    }

    /// Ledger limits.
    pub fn ledger_tuning(mut self, tuning: LedgerTuning) -> Self {
        self.ledger = tuning;
        self
    }

    /// Whether to look for GPUs (`nvidia-smi`). Default: on.
    pub fn detect_gpus(mut self, on: bool) -> Self {
        self.detect_gpus = on;
        self
    }

    /// Sells at most this much, whatever the host could spare (per resource).
    pub fn max_sellable(mut self, limit: fluidos_contracts::Resources) -> Self {
        self.max_sellable = Some(limit);
        self
    }

    /// How long what a provider listed is reused by later purchases instead of
    /// listing it again. Default: 10 s; zero lists before every purchase. A
    /// stale listing costs at most one refused request: the provider checks
    /// what it has left, and the buyer lists afresh when every known offer fails.
    pub fn offer_cache_ttl(mut self, ttl: Duration) -> Self {
        self.offer_cache_ttl = ttl;
        self
    }

    /// Runs workloads (this node's own, and peers' it hosts) with `runtime`
    /// instead of the default process runtime over `<data-dir>/replicas`.
    pub fn runtime(mut self, runtime: Arc<dyn crate::runtime::Runtime>) -> Self {
        self.runtime = RuntimeChoice::Given(runtime);
        self
    }

    /// Hosts no workloads at all (offloads to this node are refused `unavailable`).
    pub fn no_runtime(mut self) -> Self {
        self.runtime = RuntimeChoice::Off;
        self
    }

    /// How long this node, as owner, waits without a word from a provider
    /// (its view link sends one at least every 3 s) before the replicas it runs
    /// there count as lost and are rescheduled by their restart policy
    /// (default [`DEFAULT_PROVIDER_LOST_AFTER`]; at least 6 s, two heartbeats,
    /// so that an idle healthy link never counts as lost).
    pub fn provider_lost_after(mut self, after: Duration) -> Self {
        self.provider_lost_after = after;
        self
    }

    /// The capacity this node's own workloads may use here (its physical node in
    /// the view). Default: none, so that what the host can spare stays on the
    /// market and this node's workloads run on capacity it bought (placement
    /// buys what is missing).
    pub fn local_capacity(mut self, capacity: fluidos_contracts::Resources) -> Self {
        self.local_capacity = Some(capacity);
        self
    }

    /// How often the usage of hosted replicas is sampled and written into the view, per
    /// contract (default [`DEFAULT_USAGE_INTERVAL`]; at least 100 ms).
    pub fn usage_interval(mut self, every: Duration) -> Self {
        self.usage_every = every;
        self
    }

    /// Full control over discovery (timers, limits, relays). Replaces what
    /// [`catalog`](Self::catalog), [`listen`](Self::listen), [`mdns`](Self::mdns) and
    /// the policies set so far.
    pub fn discovery_config(mut self, config: DiscoveryConfig) -> Self {
        self.discovery = config;
        self
    }

    /// Opens the data directory, measures the host, restores contracts, starts
    /// discovery and the engine.
    pub async fn bind(self) -> Result<Node, BindError> {
        engine::bind(self).await
    }
}

/// A running fluidos node. Cheap to clone; every clone talks to the same tasks.
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: NodeId,
    peer_id: PeerId,
    key: SecretKey,
    discovery: DiscoveryHandle,
    engine: mpsc::Sender<Command>,
    engine_task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    request_timeout: Duration,
    fabric: fluidos_contracts::FabricParams,
    /// Recent listings, shared by this node's purchases. Held only for short,
    /// non-blocking reads and writes.
    offers: std::sync::Mutex<crate::buyer::OfferCache>,
    /// The ratings of providers, published by the engine when they change.
    ratings: tokio::sync::watch::Receiver<crate::buyer::Ratings>,
    /// The providers among the candidates, as of a discovery generation.
    providers: std::sync::Mutex<Option<buy::Providers>>,
    /// The workload task.
    workloads: workloads::WorkloadsHandle,
    /// The active contracts, as the engine publishes them.
    contracts: tokio::sync::watch::Receiver<engine::ContractBook>,
    /// The fabric task.
    fabric_task: fabric::FabricTask,
    /// Peers added while running, remembered for the next start.
    added_peers: std::sync::Mutex<added_peers::AddedPeers>,
}

impl Node {
    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's identity.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// This node's libp2p peer id (the same key).
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The listings shared by this node's purchases (never poisoned: a panic
    /// while it is held leaves a consistent cache, at worst a missing entry).
    fn offer_cache(&self) -> std::sync::MutexGuard<'_, crate::buyer::OfferCache> {
        self.inner
            .offers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The provider list shared by this node's purchases (see [`buy::Providers`]).
    fn cached_providers(&self) -> std::sync::MutexGuard<'_, Option<buy::Providers>> {
        self.inner
            .providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's `did:key`.
    pub fn did_key(&self) -> String {
        self.inner.node_id.to_did_key()
    }

    /// The discovery handle, for embedders that need the libp2p layer directly.
    pub fn discovery(&self) -> &DiscoveryHandle {
        &self.inner.discovery
    }

    /// Addresses this node listens on, each ending in `/p2p/<peer id>`, ready to be
    /// given to another node as a catalog or manual-peer address.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let peer = self.inner.peer_id;
        self.inner
            .discovery
            .listen_addrs()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.with_p2p(peer).unwrap_or_else(|a| a))
            .collect()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ShutDown> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .engine
            .send(make(tx))
            .await
            .map_err(|_| ShutDown)?;
        rx.await.map_err(|_| ShutDown)
    }

    /// Identity, addresses, capacity and counts.
    pub async fn status(&self) -> Result<NodeStatus, ShutDown> {
        let mut status = self.ask(Command::Status).await?;
        status.listen_addrs = self
            .listen_addrs()
            .await
            .iter()
            .map(|a| a.to_string())
            .collect();
        status.candidates = self.peers().await.map(|p| p.len()).unwrap_or(0);
        Ok(status)
    }

    /// The flavors this node currently sells, with what is left of each.
    pub async fn flavors(&self) -> Result<Vec<Flavor>, ShutDown> {
        self.ask(Command::Flavors).await
    }

    /// The current peering candidates. Fails only when discovery has stopped (the
    /// node has shut down).
    pub async fn peers(
        &self,
    ) -> Result<Vec<fluidos_discovery::Candidate>, fluidos_discovery::Stopped> {
        self.inner.discovery.candidates().await
    }

    /// Dials a peer and adds it as a manual candidate, and remembers it in
    /// `<data-dir>/state/peers` so that the node dials it again after a restart
    /// (remove its line there, with the node stopped, to forget it).
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<(), fluidos_discovery::AddPeerError> {
        self.inner.discovery.add_peer(addr.clone()).await?;
        // Remembered in `<data-dir>/state/peers`: a restart dials it again.
        let mut added = self
            .inner
            .added_peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = added.remember(addr) {
            tracing::warn!(error = %e, "an added peer is not remembered for the next start");
        }
        Ok(())
    }

    /// Every contract this node holds, as provider or buyer.
    pub async fn contracts(&self) -> Result<Vec<ContractInfo>, ShutDown> {
        let mut list: Vec<ContractInfo> = self.ask(Command::Contracts).await?;
        let usage = self.usage().await.unwrap_or_default();
        for c in &mut list {
            c.attach_usage(usage.get(&c.id).cloned());
        }
        Ok(list)
    }

    /// One contract, with both signatures.
    pub async fn contract(&self, id: ContractId) -> Result<Option<VerifiedContract>, ShutDown> {
        self.ask(|tx| Command::Contract(id, tx)).await
    }

    /// Buys capacity: asks every candidate for matching flavors, ranks the offers,
    /// reserves from the best (falling back to the next), purchases and countersigns.
    /// Progress is reported on `progress` if given.
    pub async fn buy(
        &self,
        request: AcquisitionRequest,
        progress: Option<mpsc::Sender<BuyProgress>>,
    ) -> Result<VerifiedContract, BuyError> {
        buy::run(self, request, progress).await
    }

    /// [`Node::buy`], but while there is no provider to ask it waits up to `wait`
    /// for one, reporting [`BuyProgress::Waiting`] with what it waits for.
    pub async fn buy_waiting(
        &self,
        request: AcquisitionRequest,
        progress: Option<mpsc::Sender<BuyProgress>>,
        wait: Duration,
    ) -> Result<VerifiedContract, BuyError> {
        buy::run_waiting(self, request, progress, wait).await
    }

    /// Ends a contract early, as either party. The other party is told with a
    /// signed termination (best effort: the contract has ended here, durably, when
    /// this returns `Ok`, whether or not the other party could be reached).
    pub async fn terminate(&self, id: ContractId, reason: String) -> Result<(), TerminateError> {
        self.terminate_for(id, reason, fluidos_contracts::TerminationCause::Requested)
            .await
    }

    /// [`Node::terminate`] with a typed cause, signed into the termination: the
    /// contract's end then shows it (`provider_lost` from a buyer, `over_quota` from a
    /// provider; see [`crate::EndCause`]).
    pub async fn terminate_for(
        &self,
        id: ContractId,
        reason: String,
        cause: fluidos_contracts::TerminationCause,
    ) -> Result<(), TerminateError> {
        let notify = self
            .ask(|tx| Command::Terminate {
                id,
                reason,
                cause,
                reply: tx,
            })
            .await??;
        if let Some((peer, request)) = notify {
            // Best effort: the local side has ended the contract durably already.
            let _ = self
                .inner
                .discovery
                .request(peer, request, self.inner.request_timeout)
                .await;
        }
        Ok(())
    }

    /// The fabric: backend and why, peers, endpoints, overlay addresses, latest
    /// handshakes and bytes (see [`FabricReport`]).
    pub async fn fabric(&self) -> FabricReport {
        self.inner.fabric_task.report().await
    }

    /// Stops the node: removes the fabric interface, withdraws its adverts, lets
    /// in-flight requests finish, flushes the store. Other clones of this handle
    /// stop working.
    pub async fn shutdown(&self) {
        self.inner.fabric_task.shutdown().await;
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .workloads
            .commands
            .send(workloads::WCommand::Shutdown(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let _ = self.inner.engine.send(Command::Shutdown).await;
        if let Some(task) = self.inner.engine_task.lock().await.take() {
            let _ = task.await;
        }
        let _ = self.inner.discovery.shutdown().await;
    }
}
