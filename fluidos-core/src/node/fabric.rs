//! The fabric task: keeps this node's WireGuard tunnels matching its active
//! contracts.
//!
//! It follows the engine's book of active contracts (the same `watch` the workload
//! task follows) and hands the complete desired set to the fabric service
//! ([`fluidos_fabric::service`]) every time the book changes: a tunnel comes up when
//! a contract becomes active and goes down when it is terminated or expires; the
//! interface is removed when no contract is left. At start the book is derived from
//! the store's active contracts, so a restart restores their tunnels.
//!
//! What to ask of the fabric is decided by [`desired`], a plain function of the book
//! and the [`Topology`] (no I/O); the task only carries it to the service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use fluidos_contracts::NodeId;
use fluidos_fabric::service::{self, BackendChoice, FabricHandle, ServiceConfig, ServiceError};
use fluidos_fabric::userspace::PortForward;
use fluidos_fabric::{
    ContractPeer, Desired, Fabric, FabricConfig, Forwarding, Relayed, Status, Tunnels,
    TunnelsConfig, WireGuardSecret, overlay,
};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{info, warn};

use super::engine::ContractBook;
use super::types::ActiveContract;

/// The UDP port WireGuard listens on by default.
pub const DEFAULT_FABRIC_PORT: u16 = 51820;

/// How this node's tunnels are laid out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// A direct tunnel with the other party of each contract. The default.
    #[default]
    Mesh,
    /// Hub-and-spoke through `hub`. On the hub itself (`hub` is this node) every
    /// contract gets a direct tunnel and the hub forwards between its peers (only
    /// between parties of its own active contracts). On a spoke, the contracts with
    /// the hub get a direct tunnel and every other contract's party is reached
    /// through the hub's tunnel (refused with a reason while there is no contract
    /// with the hub).
    Hub(NodeId),
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Mesh => f.write_str("mesh"),
            Topology::Hub(h) => write!(f, "hub {h}"),
        }
    }
}

/// How the node runs its fabric ([`NodeBuilder::fabric`](super::NodeBuilder::fabric)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FabricOptions {
    /// Which backend: [`BackendChoice::Auto`] (the default) creates a TUN
    /// interface when this process may (CAP_NET_ADMIN and `/dev/net/tun`) and
    /// falls back to the userspace backend otherwise; `status` says which and why.
    pub backend: BackendChoice,
    /// The TUN interface's name (at most 15 bytes, unique on the host). Default
    /// `fluidos0`.
    pub interface: String,
    /// Where to listen for WireGuard (UDP). Default `0.0.0.0:51820`. When the port
    /// is taken, an ephemeral one is used instead (and written into new contracts).
    pub listen: SocketAddr,
    /// The endpoints written into contracts. Empty (the default): the listen
    /// address when it names one IP, else every address of the host's interfaces
    /// that are up (loopback only when there is nothing else), at the bound port.
    pub endpoints: Vec<SocketAddr>,
    /// Mesh or hub-and-spoke.
    pub topology: Topology,
    /// The overlay MTU (at least 1280). Default 1420.
    pub mtu: u16,
    /// Local ports the userspace backend forwards to remote workloads.
    pub forwards: Vec<PortForward>,
    /// IPv4 overlay addresses (100.64.0.0/10) besides the IPv6 ones. Default on.
    pub ipv4: bool,
    /// Persistent keepalive in seconds (NAT'd nodes want 25). Default off.
    pub persistent_keepalive: Option<u16>,
}

impl Default for FabricOptions {
    fn default() -> Self {
        Self {
            backend: BackendChoice::Auto,
            interface: "fluidos0".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_FABRIC_PORT)),
            endpoints: Vec::new(),
            topology: Topology::Mesh,
            mtu: fluidos_fabric::DEFAULT_MTU,
            forwards: Vec::new(),
            ipv4: true,
            persistent_keepalive: None,
        }
    }
}

impl FabricOptions {
    /// Sets the backend.
    pub fn with_backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }

    /// Sets the interface name.
    pub fn with_interface(mut self, name: impl Into<String>) -> Self {
        self.interface = name.into();
        self
    }

    /// Sets the UDP listen address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the endpoints written into contracts.
    pub fn with_endpoints(mut self, endpoints: Vec<SocketAddr>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Sets the topology.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Sets the MTU.
    pub fn with_mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }

    /// Sets the userspace backend's port forwards.
    pub fn with_forwards(mut self, forwards: Vec<PortForward>) -> Self {
        self.forwards = forwards;
        self
    }

    /// Turns IPv4 overlay addresses on or off.
    pub fn with_ipv4(mut self, ipv4: bool) -> Self {
        self.ipv4 = ipv4;
        self
    }

    /// Sets the persistent keepalive interval in seconds (`None`: off).
    pub fn with_persistent_keepalive(mut self, seconds: Option<u16>) -> Self {
        self.persistent_keepalive = seconds;
        self
    }
}

/// The desired set of tunnels for `me` from its active contracts (no I/O): what the
/// fabric task hands the service. Every contract of `book` appears, as a direct peer
/// or a relayed node, so that a contract missing from a later set has ended.
pub fn desired(book: &[ActiveContract], me: &NodeId, topology: &Topology) -> Desired {
    let direct = |c: &ActiveContract| ContractPeer {
        contract: c.id,
        node: c.peer,
        params: c.peer_fabric.clone(),
    };
    match topology {
        Topology::Mesh => Desired {
            peers: book.iter().map(direct).collect(),
            ..Desired::default()
        },
        Topology::Hub(hub) if hub == me => Desired {
            peers: book.iter().map(direct).collect(),
            forwarding: Forwarding::AmongPeers,
            ..Desired::default()
        },
        Topology::Hub(hub) => Desired {
            peers: book.iter().filter(|c| c.peer == *hub).map(direct).collect(),
            relayed: book
                .iter()
                .filter(|c| c.peer != *hub)
                .map(|c| Relayed {
                    contract: c.id,
                    node: c.peer,
                    hub: *hub,
                })
                .collect(),
            ..Desired::default()
        },
    }
}

/// Where the fabric stands, as `fluidos-node fabric` and `status` show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FabricReport {
    /// `off` (not configured), `unavailable` (configured but cannot run; see
    /// `reason`) or `running`.
    pub state: FabricState,
    /// Why it is off or unavailable, or which backend runs and why.
    pub reason: String,
    /// `mesh`, or `hub <node id>`.
    pub topology: String,
    /// The endpoints this node writes into contracts.
    pub endpoints: Vec<SocketAddr>,
    /// Contracts whose tunnel was refused at the latest change, with the reason.
    pub refused: Vec<RefusedTunnel>,
    /// The error of the latest change, if it failed (for example the interface
    /// could not be created).
    pub last_error: Option<String>,
    /// The tunnels, as `wg show` prints them (when running).
    pub status: Option<Status>,
}

/// Whether the fabric runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FabricState {
    /// Not configured.
    Off,
    /// Configured, but it cannot run.
    Unavailable,
    /// Running.
    Running,
}

/// A contract whose tunnel was refused.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefusedTunnel {
    /// The contract (hex id).
    pub contract: String,
    /// Why.
    pub reason: String,
}

/// What the follow task last saw.
#[derive(Debug, Default)]
struct Latest {
    refused: Vec<RefusedTunnel>,
    error: Option<String>,
}

/// The node's side of the fabric task.
#[derive(Debug)]
pub(crate) struct FabricTask {
    handle: Option<FabricHandle>,
    state: FabricState,
    reason: String,
    topology: String,
    endpoints: Vec<SocketAddr>,
    latest: Arc<Mutex<Latest>>,
}

/// The bound socket (if any) and the endpoints to write into contracts, decided
/// before the engine starts, since contracts carry them.
pub(crate) struct Prepared {
    socket: Option<UdpSocket>,
    note: String,
    /// The endpoints for this node's `FabricParams`.
    pub(crate) endpoints: Vec<SocketAddr>,
}

/// Binds the WireGuard socket and decides the endpoints. `listen_ips` are the IPs
/// the node's libp2p listen addresses name, when every one names a specific IP: a
/// node that listens only on loopback (or on one LAN address) offers WireGuard
/// there too, not on every address of the host.
pub(crate) async fn prepare(options: &FabricOptions, listen_ips: Option<Vec<IpAddr>>) -> Prepared {
    let (socket, note) = match UdpSocket::bind(options.listen).await {
        Ok(s) => (Some(s), String::new()),
        Err(e) if options.listen.port() != 0 => {
            let mut any = options.listen;
            any.set_port(0);
            match UdpSocket::bind(any).await {
                Ok(s) => {
                    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
                    warn!(listen = %options.listen, error = %e, port, "fabric: port taken, listening on an ephemeral port");
                    (
                        Some(s),
                        format!("; {} was taken ({e}), so port {port}", options.listen),
                    )
                }
                Err(e2) => (None, format!("cannot listen on {}: {e2}", options.listen)),
            }
        }
        Err(e) => (None, format!("cannot listen on {}: {e}", options.listen)),
    };
    let bound = socket.as_ref().and_then(|s| s.local_addr().ok());
    let endpoints = match bound {
        None => Vec::new(),
        Some(_) if !options.endpoints.is_empty() => options.endpoints.clone(),
        Some(bound) => endpoints_for(bound, &listen_ips.unwrap_or_else(host_addresses)),
    };
    Prepared {
        socket,
        note,
        endpoints,
    }
}

/// The endpoints for a socket bound at `bound`: that address when it names one IP,
/// else each of `host` (of the same family, or both for `[::]`) at its port, non
/// loopback first, loopback only when nothing else is there. Overlay addresses
/// (this or another node's fabric interface) are never endpoints.
pub fn endpoints_for(bound: SocketAddr, host: &[IpAddr]) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let usable = |ip: &IpAddr| match (bound.ip(), ip) {
        (IpAddr::V4(_), IpAddr::V4(a)) => !overlay::ipv4_prefix().contains(a),
        (IpAddr::V6(_), IpAddr::V4(a)) => !overlay::ipv4_prefix().contains(a),
        (IpAddr::V6(_), IpAddr::V6(a)) => !overlay::is_overlay(a) && !is_link_local(a),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    };
    let mut out: Vec<SocketAddr> = host
        .iter()
        .filter(|ip| usable(ip) && !ip.is_loopback())
        .map(|ip| SocketAddr::new(*ip, bound.port()))
        .collect();
    if out.is_empty() {
        let lo = match bound.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        out.push(SocketAddr::new(lo, bound.port()));
    }
    out.dedup();
    out.truncate(fluidos_fabric::MAX_ENDPOINTS);
    out
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// The IPs of `listen` (libp2p multiaddrs) when each names a specific IP, else
/// `None` (one of them listens on every address, or none names an IP).
pub(crate) fn specific_ips(listen: &[libp2p::Multiaddr]) -> Option<Vec<IpAddr>> {
    use libp2p::multiaddr::Protocol;
    let mut ips = Vec::new();
    for addr in listen {
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(a) => Some(IpAddr::V4(a)),
            Protocol::Ip6(a) => Some(IpAddr::V6(a)),
            _ => None,
        })?;
        if ip.is_unspecified() {
            return None;
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    (!ips.is_empty()).then_some(ips)
}

/// The addresses of the host's interfaces that are up.
fn host_addresses() -> Vec<IpAddr> {
    use nix::net::if_::InterfaceFlags;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Starts the fabric: the service over `prepared`'s socket, and the task that
/// follows `contracts`.
pub(crate) fn spawn(
    me: NodeId,
    secret: &WireGuardSecret,
    options: &FabricOptions,
    prepared: Prepared,
    contracts: watch::Receiver<ContractBook>,
) -> FabricTask {
    let topology = options.topology.clone();
    let mut task = FabricTask {
        handle: None,
        state: FabricState::Unavailable,
        reason: String::new(),
        topology: topology.to_string(),
        endpoints: prepared.endpoints.clone(),
        latest: Arc::default(),
    };
    let Some(socket) = prepared.socket else {
        task.reason = prepared.note;
        warn!(reason = %task.reason, "fabric unavailable: no tunnels will be made");
        return task;
    };
    let fabric = Fabric::new(
        secret,
        FabricConfig::default()
            .with_mtu(options.mtu)
            .with_persistent_keepalive(options.persistent_keepalive),
    );
    let tunnels = Tunnels::new(me, fabric, TunnelsConfig::default().with_ipv4(options.ipv4));
    let config = ServiceConfig::new(options.interface.clone())
        .with_backend(options.backend)
        .with_forwards(options.forwards.clone());
    let listen = socket.local_addr().ok();
    let (handle, service_task) = match service::spawn(tunnels, socket, config) {
        Ok(s) => s,
        Err(e) => {
            task.reason = format!("the fabric service could not start: {e}");
            warn!(reason = %task.reason, "fabric unavailable");
            return task;
        }
    };
    tokio::spawn(async move {
        match service_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "fabric service stopped"),
            Err(e) => warn!(error = %e, "fabric service task failed"),
        }
    });
    info!(listen = ?listen, endpoints = ?task.endpoints, topology = %task.topology, "fabric running");
    task.state = FabricState::Running;
    task.reason = prepared.note;
    task.handle = Some(handle.clone());
    tokio::spawn(follow(handle, contracts, me, topology, task.latest.clone()));
    task
}

/// Applies the book at start and at every change, until the engine or the service
/// stops.
async fn follow(
    handle: FabricHandle,
    mut contracts: watch::Receiver<ContractBook>,
    me: NodeId,
    topology: Topology,
    latest: Arc<Mutex<Latest>>,
) {
    loop {
        let book = contracts.borrow_and_update().clone();
        let want = desired(&book.active, &me, &topology);
        let result = handle.apply(want).await;
        let (refused, error) = match result {
            Ok(report) => {
                if !report.added.is_empty() || !report.removed.is_empty() {
                    info!(
                        added = report.added.len(),
                        removed = report.removed.len(),
                        ended = report.ended.len(),
                        active = book.active.len(),
                        "fabric tunnels changed"
                    );
                }
                for r in &report.refused {
                    warn!(contract = %r.contract, reason = %r.error, "fabric: tunnel refused");
                }
                let refused = report
                    .refused
                    .iter()
                    .map(|r| RefusedTunnel {
                        contract: r.contract.to_string(),
                        reason: r.error.to_string(),
                    })
                    .collect();
                (refused, None)
            }
            Err(ServiceError::Stopped) => return,
            Err(e) => {
                warn!(error = %e, "fabric: applying the contracts failed");
                (Vec::new(), Some(e.to_string()))
            }
        };
        *latest.lock().unwrap_or_else(PoisonError::into_inner) = Latest { refused, error };
        if contracts.changed().await.is_err() {
            return;
        }
    }
}

impl FabricTask {
    /// The fabric is not configured.
    pub(crate) fn off() -> Self {
        Self {
            handle: None,
            state: FabricState::Off,
            reason: "not configured (NodeBuilder::fabric)".into(),
            topology: Topology::Mesh.to_string(),
            endpoints: Vec::new(),
            latest: Arc::default(),
        }
    }

    /// Where the fabric stands.
    pub(crate) async fn report(&self) -> FabricReport {
        let status = match &self.handle {
            Some(h) => h.status().await.ok(),
            None => None,
        };
        let (refused, last_error) = {
            let l = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            (l.refused.clone(), l.error.clone())
        };
        let state = match (&self.handle, &status) {
            (Some(_), None) => FabricState::Unavailable,
            _ => self.state,
        };
        let reason = match &status {
            Some(s) => format!("{}{}", s.backend.reason, self.reason),
            None if self.handle.is_some() => "the fabric service has stopped".into(),
            None => self.reason.clone(),
        };
        FabricReport {
            state,
            reason,
            topology: self.topology.clone(),
            endpoints: self.endpoints.clone(),
            refused,
            last_error,
            status,
        }
    }

    /// Stops the service, removing the interface.
    pub(crate) async fn shutdown(&self) {
        if let Some(h) = &self.handle {
            let _ = h.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn active(id: u8, peer: NodeId) -> ActiveContract {
        use fluidos_contracts::{
            Architecture, Characteristics, ContractId, FabricParams, Flavor, FlavorId,
            Partitionability, Price, PriceModel, PricePeriod, Properties, Quote, Resources,
            Timestamp,
        };
        let price = Price {
            amount_micros: 1,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        };
        ActiveContract {
            id: ContractId([id; 16]),
            role: super::super::types::ContractRole::Buyer,
            peer,
            partition: Resources::ZERO,
            valid_until: Timestamp(u64::MAX),
            flavor: Flavor {
                id: FlavorId([id; 16]),
                owner: peer,
                characteristics: Characteristics {
                    resources: Resources::ZERO,
                    architecture: Architecture::X86_64,
                    gpu: None,
                },
                properties: Properties::default(),
                policy: Partitionability {
                    partitionable: true,
                    min: Resources::ZERO,
                    step: Resources::ZERO,
                },
                price,
                price_basis: Resources::ZERO,
                valid_until: Timestamp(u64::MAX),
                revision: 1,
            },
            price: Quote {
                amount_micros: 1,
                currency: "EUR".into(),
                period: PricePeriod::Hour,
                model: PriceModel::Reserved,
            },
            peer_fabric: FabricParams {
                wireguard_key: fluidos_contracts::WireGuardKey([id; 32]),
                endpoints: vec![format!("198.18.0.{id}:51820")],
                overlay_address: None,
            },
        }
    }

    #[test]
    fn desired_sets_follow_the_topology() {
        let node = || fluidos_contracts::SecretKey::generate().node_id();
        let (me, hub, other) = (node(), node(), node());
        let book = vec![active(1, hub), active(2, other)];

        // Mesh: a direct tunnel per contract, no forwarding.
        let mesh = desired(&book, &me, &Topology::Mesh);
        assert_eq!(mesh.peers.len(), 2);
        assert_eq!(mesh.peers[1].node, other);
        assert_eq!(mesh.peers[1].params, book[1].peer_fabric);
        assert!(mesh.relayed.is_empty());
        assert_eq!(mesh.forwarding, Forwarding::None);

        // A spoke: the hub directly, the other party through it.
        let spoke = desired(&book, &me, &Topology::Hub(hub));
        assert_eq!(spoke.peers.len(), 1);
        assert_eq!(spoke.peers[0].node, hub);
        assert_eq!(
            spoke.relayed,
            vec![Relayed {
                contract: book[1].id,
                node: other,
                hub
            }]
        );
        assert_eq!(spoke.forwarding, Forwarding::None);

        // The hub itself: every party directly, forwarding among them.
        let at_hub = desired(&book, &me, &Topology::Hub(me));
        assert_eq!(at_hub.peers.len(), 2);
        assert_eq!(at_hub.forwarding, Forwarding::AmongPeers);

        // No contract: nothing (the interface goes away).
        assert!(desired(&[], &me, &Topology::Mesh).is_empty());
    }

    #[test]
    fn specific_listen_ips_are_kept_and_a_wildcard_means_every_address() {
        let parse = |v: &[&str]| -> Vec<libp2p::Multiaddr> {
            v.iter().map(|s| s.parse().unwrap()).collect()
        };
        assert_eq!(
            specific_ips(&parse(&[
                "/ip4/127.0.0.1/tcp/0",
                "/ip4/127.0.0.1/udp/0/quic-v1"
            ])),
            Some(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(
            specific_ips(&parse(&[
                "/ip4/198.18.0.1/tcp/7070",
                "/ip4/0.0.0.0/udp/7070/quic-v1"
            ])),
            None
        );
        assert_eq!(specific_ips(&parse(&["/dns4/example.org/tcp/1"])), None);
        assert_eq!(specific_ips(&[]), None);
        // Loopback only: the endpoint is loopback.
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert_eq!(
            endpoints_for(any, &["127.0.0.1".parse().unwrap()]),
            vec!["127.0.0.1:4000".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn endpoints_name_the_bound_ip_or_the_hosts_addresses() {
        let host: Vec<IpAddr> = [
            "127.0.0.1",
            "198.18.0.1",
            "100.64.3.4",
            "::1",
            "fe80::1",
            "2001:db8::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let one: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        assert_eq!(endpoints_for(one, &host), vec![one]);
        let any: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        assert_eq!(
            endpoints_for(any, &host),
            vec!["198.18.0.1:4000".parse::<SocketAddr>().unwrap()]
        );
        let any6: SocketAddr = "[::]:4000".parse().unwrap();
        assert_eq!(
            endpoints_for(any6, &host),
            vec![
                "198.18.0.1:4000".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:4000".parse().unwrap()
            ]
        );
        // Only loopback: loopback.
        let lo: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        assert_eq!(
            endpoints_for(any, &lo),
            vec!["127.0.0.1:4000".parse::<SocketAddr>().unwrap()]
        );
    }
}
