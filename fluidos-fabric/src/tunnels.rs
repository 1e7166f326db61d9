//! The node's tunnels, driven by its contracts: an I/O-free manager that turns the set
//! of active contracts into peers of a [`Fabric`], routes and the interface's life.
//!
//! The driver (or the node) calls [`Tunnels::apply`] with the [`Desired`] set every
//! time a contract starts or ends, and once at start-up with the contracts still
//! active: that is how tunnels come back after a restart. `apply` changes the fabric
//! at once and queues what the backend must do ([`Change`]: bring the interface up,
//! add or remove a route, remove the interface), which the driver takes out with
//! [`Tunnels::poll_change`] and carries out in order. Packets then flow through
//! [`Tunnels::fabric_mut`] as with a bare [`Fabric`].
//!
//! Rules, in the order `apply` follows them:
//!
//! 1. A contract that was in an earlier desired set and is missing from this one has
//!    ended. Its id is refused from then on ([`ApplyError::Ended`]), even if a caller
//!    passes it again by mistake (the memory is bounded, see
//!    [`TunnelsConfig::max_ended`], and lasts as long as this value: after a restart
//!    the caller's own record of ended contracts is the authority).
//! 2. A peer's key is admitted while at least one desired contract names it. When
//!    its last contract ends the peer is revoked: its sessions are dropped, and
//!    datagrams with its key (data on old sessions, new initiations) get no answer.
//!    A later, *new* contract naming the same key admits it again.
//! 3. Two contracts naming one node with two different WireGuard keys: the key
//!    already in use wins, else the key of the smaller contract id; the other
//!    contracts are refused ([`ApplyError::KeyConflict`]).
//! 4. Addresses: each node reached has its IPv6 overlay /128 (derived from its node id,
//!    collision-free) and, when [`TunnelsConfig::ipv4`] is on, its derived IPv4 /32 in
//!    `100.64.0.0/10` unless that collides with this node's own or another peer's. In
//!    a collision the node that already holds the address keeps it, else the smaller
//!    node id; the others are reached over IPv6 only and listed in
//!    [`ApplyReport::ipv4_conflicts`].
//! 5. Hub-and-spoke: a [`Relayed`] node is reached through a hub this node has a
//!    direct tunnel to: the hub's allowed networks grow by the relayed node's
//!    addresses. A direct tunnel to the same node wins over the relay. On the hub,
//!    [`Forwarding`] says which pairs of its peers it forwards between; every other
//!    packet between peers is dropped.
//! 6. The interface exists while at least one peer does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use fluidos_contracts::{ContractId, FabricParams, NodeId, VerifiedContract, WireGuardKey};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::fabric::{AddPeerError, Fabric, PeerConfig};
use crate::{PeerFabric, PeerParamsError, overlay};

/// One party this node keeps a direct tunnel with, because of one contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractPeer {
    /// The contract that admits the tunnel.
    pub contract: ContractId,
    /// The other party.
    pub node: NodeId,
    /// The other party's fabric parameters, as signed in the contract (checked by
    /// [`Tunnels::apply`]).
    pub params: FabricParams,
}

impl ContractPeer {
    /// The other party of `contract` as seen from `me`, or `None` when `me` is not
    /// a party of it.
    pub fn from_contract(contract: &VerifiedContract, me: &NodeId) -> Option<Self> {
        let terms = contract.terms();
        let (node, params) = if terms.provider == *me {
            (terms.buyer, &terms.buyer_fabric)
        } else if terms.buyer == *me {
            (terms.provider, &terms.provider_fabric)
        } else {
            return None;
        };
        Some(Self {
            contract: terms.id,
            node,
            params: params.clone(),
        })
    }
}

/// A node reached through a hub rather than directly (the spoke's side of
/// hub-and-spoke).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    /// The contract between this node and `node` (for example one forwarded through
    /// the hub).
    pub contract: ContractId,
    /// The node reached.
    pub node: NodeId,
    /// The hub it is reached through; this node needs a direct tunnel to it.
    pub hub: NodeId,
}

/// One pair of peers a hub forwards between.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The contract that justifies it (for example the contract between `a` and `b`
    /// that was forwarded through this hub).
    pub contract: ContractId,
    /// One peer.
    pub a: NodeId,
    /// The other peer.
    pub b: NodeId,
}

/// Which of its peers a node forwards between (hub-and-spoke).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forwarding {
    /// Nothing: a mesh node or a spoke. The default.
    #[default]
    None,
    /// Any two parties of this node's own contracts (every direct peer with every
    /// other).
    AmongPeers,
    /// Only the listed pairs, each while its contract is active.
    Pairs(Vec<Forward>),
}

/// What the active contracts ask of the fabric: the argument of [`Tunnels::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Direct tunnels.
    #[serde(default)]
    pub peers: Vec<ContractPeer>,
    /// Nodes reached through a hub.
    #[serde(default)]
    pub relayed: Vec<Relayed>,
    /// The forwarding policy of a hub.
    #[serde(default)]
    pub forwarding: Forwarding,
}

impl Desired {
    /// The desired set of `me` from its active contracts, every party reached
    /// directly (the mesh topology).
    pub fn mesh<'a>(
        contracts: impl IntoIterator<Item = &'a VerifiedContract>,
        me: &NodeId,
    ) -> Self {
        Self {
            peers: contracts
                .into_iter()
                .filter_map(|c| ContractPeer::from_contract(c, me))
                .collect(),
            ..Self::default()
        }
    }

    /// Whether nothing is desired (then the interface goes away).
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.relayed.is_empty()
    }
}

/// How [`Tunnels`] behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelsConfig {
    /// Whether nodes get IPv4 overlay addresses besides the IPv6 ones. Default on.
    pub ipv4: bool,
    /// How many ended contract ids are remembered (and refused); the oldest are
    /// forgotten first. Default 4096.
    pub max_ended: usize,
    /// Most changes waiting in [`Tunnels::poll_change`]'s queue; one `apply` never
    /// queues more than the routes of [`crate::FabricConfig::max_peers`] peers, and
    /// this bound is a guard against a driver that stops draining. Default 16 384.
    pub max_changes: usize,
}

impl Default for TunnelsConfig {
    fn default() -> Self {
        Self {
            ipv4: true,
            max_ended: 4096,
            max_changes: 16_384,
        }
    }
}

impl TunnelsConfig {
    /// Turns IPv4 overlay addresses on or off.
    pub fn with_ipv4(mut self, ipv4: bool) -> Self {
        self.ipv4 = ipv4;
        self
    }
}

/// What the backend must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Create the interface with these addresses (IPv6 /128, optional IPv4 /32).
    InterfaceUp {
        /// This node's IPv6 overlay address.
        ipv6: Ipv6Addr,
        /// This node's IPv4 overlay address.
        ipv4: Option<Ipv4Addr>,
    },
    /// Route this network through the interface.
    AddRoute(IpNet),
    /// Remove the route to this network.
    RemoveRoute(IpNet),
    /// Remove the interface (and with it every route).
    InterfaceDown,
}

/// Why one entry of the desired set was refused (the others are applied anyway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The contract ended earlier; its tunnel is refused from then on.
    #[error("contract ended earlier and is refused from then on")]
    Ended,
    /// The other party is this node itself.
    #[error("a contract party is this node itself; no tunnel to oneself")]
    OwnNode,
    /// The party's fabric parameters are unusable.
    #[error("peer fabric parameters: {0}")]
    Params(#[from] PeerParamsError),
    /// Another contract names the same node with another WireGuard key, and that key
    /// was kept (see the module docs).
    #[error("node already has a tunnel with another WireGuard key, from another contract")]
    KeyConflict,
    /// The fabric refused the peer (too many peers, own key, overlapping networks).
    #[error(transparent)]
    Peer(#[from] AddPeerError),
    /// A relayed node's hub has no direct tunnel (no active contract with it).
    #[error("hub {hub} of a relayed node has no tunnel; a contract with the hub is needed")]
    NoTunnelToHub {
        /// The hub named.
        hub: NodeId,
    },
    /// A forwarding pair names a node that is not a direct peer.
    #[error("forwarding pair names {node}, which has no tunnel to this node")]
    NotAPeer {
        /// The node that is not a peer.
        node: NodeId,
    },
}

/// One refused entry of a desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The entry's contract.
    pub contract: ContractId,
    /// Why.
    pub error: ApplyError,
}

/// What [`Tunnels::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Peers added, by key.
    pub added: Vec<WireGuardKey>,
    /// Peers removed (and revoked), by key.
    pub removed: Vec<WireGuardKey>,
    /// Contracts that ended with this call (missing from the desired set).
    pub ended: Vec<ContractId>,
    /// Entries refused, with the reason.
    pub refused: Vec<Refused>,
    /// Nodes reached over IPv6 only because their IPv4 overlay address collides.
    pub ipv4_conflicts: Vec<NodeId>,
}

/// What the manager holds about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPeer {
    /// The peer node.
    pub node: NodeId,
    /// The contracts that admit it.
    pub contracts: BTreeSet<ContractId>,
    /// Its endpoints from the contract.
    pub endpoints: Vec<SocketAddr>,
    /// Nodes reached through it (it is their hub).
    pub relays: BTreeSet<NodeId>,
    /// Its allowed networks: its own addresses and those of the nodes it relays.
    pub allowed_ips: Vec<IpNet>,
}

/// The node's tunnels. See the [module documentation](self) for the rules.
///
/// Call order for a driver: [`Tunnels::apply`] whenever the contracts change, then
/// drain [`Tunnels::poll_change`] and carry each change out on the backend; between
/// applies, run the data plane through [`Tunnels::fabric_mut`] (its own
/// `handle_*`/`poll_*` order applies).
#[derive(Debug)]
pub struct Tunnels {
    me: NodeId,
    ipv6: Ipv6Addr,
    ipv4: Option<Ipv4Addr>,
    config: TunnelsConfig,
    fabric: Fabric,
    peers: BTreeMap<WireGuardKey, TunnelPeer>,
    active: BTreeSet<ContractId>,
    ended: BTreeSet<ContractId>,
    ended_order: VecDeque<ContractId>,
    ipv4_holders: BTreeMap<Ipv4Addr, NodeId>,
    routes: BTreeSet<IpNet>,
    interface_up: bool,
    changes: VecDeque<Change>,
    forwarding: Vec<(NodeId, NodeId)>,
}

impl Tunnels {
    /// The tunnels of node `me` over `fabric` (which should have no peers yet).
    pub fn new(me: NodeId, mut fabric: Fabric, config: TunnelsConfig) -> Self {
        let ipv6 = overlay::address(&me);
        let ipv4 = config.ipv4.then(|| overlay::ipv4_address(&me));
        let mut local = vec![IpNet::from(IpAddr::V6(ipv6))];
        local.extend(ipv4.map(|a| IpNet::from(IpAddr::V4(a))));
        fabric.set_local(local);
        Self {
            me,
            ipv6,
            ipv4,
            config,
            fabric,
            peers: BTreeMap::new(),
            active: BTreeSet::new(),
            ended: BTreeSet::new(),
            ended_order: VecDeque::new(),
            ipv4_holders: BTreeMap::new(),
            routes: BTreeSet::new(),
            interface_up: false,
            changes: VecDeque::new(),
            forwarding: Vec::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// This node's IPv6 overlay address.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// This node's IPv4 overlay address, when IPv4 is on.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4
    }

    /// The data plane.
    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }

    /// The data plane, to feed datagrams and packets and take out what it produces.
    pub fn fabric_mut(&mut self) -> &mut Fabric {
        &mut self.fabric
    }

    /// The peers, by key.
    pub fn peers(&self) -> &BTreeMap<WireGuardKey, TunnelPeer> {
        &self.peers
    }

    /// The routes the backend should have now.
    pub fn routes(&self) -> impl Iterator<Item = &IpNet> {
        self.routes.iter()
    }

    /// Whether the interface should exist now.
    pub fn interface_up(&self) -> bool {
        self.interface_up
    }

    /// The forwarding pairs in force (hub), by node.
    pub fn forwarding(&self) -> &[(NodeId, NodeId)] {
        &self.forwarding
    }

    /// Whether `contract` ended (and is refused) as far as this value remembers.
    pub fn has_ended(&self, contract: &ContractId) -> bool {
        self.ended.contains(contract)
    }

    /// The next change for the backend, oldest first.
    #[must_use]
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// Makes the tunnels match `desired`, the complete set of active contracts'
    /// fabric parties. See the [module documentation](self) for the rules. `now` is
    /// passed to the fabric (handshakes are started for new peers).
    pub fn apply(&mut self, desired: &Desired, now: Instant) -> ApplyReport {
        let mut report = ApplyReport::default();

        // 1. Contracts that left the set have ended.
        let mut wanted: BTreeSet<ContractId> = desired.peers.iter().map(|p| p.contract).collect();
        wanted.extend(desired.relayed.iter().map(|r| r.contract));
        if let Forwarding::Pairs(pairs) = &desired.forwarding {
            wanted.extend(pairs.iter().map(|f| f.contract));
        }
        for gone in self.active.difference(&wanted).copied().collect::<Vec<_>>() {
            self.remember_ended(gone);
            report.ended.push(gone);
        }

        // 2. Direct peers, grouped by node, checked.
        let mut by_node: BTreeMap<NodeId, BTreeMap<WireGuardKey, KeyClaim>> = BTreeMap::new();
        let mut ok_contracts = BTreeSet::new();
        for p in &desired.peers {
            if self.ended.contains(&p.contract) {
                report.refused.push(refused(p.contract, ApplyError::Ended));
                continue;
            }
            if p.node == self.me {
                report
                    .refused
                    .push(refused(p.contract, ApplyError::OwnNode));
                continue;
            }
            let checked = match PeerFabric::check(&p.params, &p.node) {
                Ok(c) => c,
                Err(e) => {
                    report.refused.push(refused(p.contract, e.into()));
                    continue;
                }
            };
            let entry = by_node
                .entry(p.node)
                .or_default()
                .entry(checked.public_key)
                .or_insert_with(|| (BTreeSet::new(), checked.endpoints.clone()));
            entry.0.insert(p.contract);
        }
        let mut target: BTreeMap<WireGuardKey, TunnelPeer> = BTreeMap::new();
        for (node, keys) in by_node {
            let current = self
                .peers
                .iter()
                .find(|(k, p)| p.node == node && keys.contains_key(*k))
                .map(|(k, _)| *k);
            let chosen = current.or_else(|| {
                keys.iter()
                    .min_by_key(|(_, (contracts, _))| contracts.iter().next().copied())
                    .map(|(k, _)| *k)
            });
            for (key, (contracts, endpoints)) in keys {
                if Some(key) == chosen {
                    ok_contracts.extend(contracts.iter().copied());
                    target.insert(
                        key,
                        TunnelPeer {
                            node,
                            contracts,
                            endpoints,
                            relays: BTreeSet::new(),
                            allowed_ips: Vec::new(),
                        },
                    );
                } else {
                    for c in contracts {
                        report.refused.push(refused(c, ApplyError::KeyConflict));
                    }
                }
            }
        }

        // 3. Relayed nodes join their hub's peer.
        let direct: BTreeMap<NodeId, WireGuardKey> =
            target.iter().map(|(k, p)| (p.node, *k)).collect();
        for r in &desired.relayed {
            if self.ended.contains(&r.contract) {
                report.refused.push(refused(r.contract, ApplyError::Ended));
                continue;
            }
            if r.node == self.me {
                report
                    .refused
                    .push(refused(r.contract, ApplyError::OwnNode));
                continue;
            }
            if direct.contains_key(&r.node) {
                // A direct tunnel wins; the contract is still active.
                ok_contracts.insert(r.contract);
                continue;
            }
            let Some(hub) = direct.get(&r.hub).and_then(|k| target.get_mut(k)) else {
                report.refused.push(refused(
                    r.contract,
                    ApplyError::NoTunnelToHub { hub: r.hub },
                ));
                continue;
            };
            hub.relays.insert(r.node);
            ok_contracts.insert(r.contract);
        }

        // 4. Addresses: IPv6 always, IPv4 without collisions.
        let reached: BTreeSet<NodeId> = target
            .values()
            .flat_map(|p| std::iter::once(p.node).chain(p.relays.iter().copied()))
            .collect();
        let v4 = self.assign_ipv4(&reached, &mut report);
        for peer in target.values_mut() {
            for node in std::iter::once(peer.node).chain(peer.relays.iter().copied()) {
                peer.allowed_ips
                    .push(IpNet::from(IpAddr::V6(overlay::address(&node))));
                if let Some(a) = v4.get(&node) {
                    peer.allowed_ips.push(IpNet::from(IpAddr::V4(*a)));
                }
            }
        }

        // 5. The fabric: removed peers first (their networks free up), then changed,
        // then new ones.
        for key in self.peers.keys().copied().collect::<Vec<_>>() {
            if !target.contains_key(&key) {
                self.fabric.revoke(&key);
                self.peers.remove(&key);
                report.removed.push(key);
            }
        }
        // Networks that move from one peer to another (a relayed node now reached
        // directly, say) must leave the first before the second takes them.
        for (key, peer) in &target {
            if let Some(old) = self.peers.get(key) {
                let kept: Vec<IpNet> = old
                    .allowed_ips
                    .iter()
                    .filter(|n| peer.allowed_ips.contains(n))
                    .copied()
                    .collect();
                // Shrinking cannot overlap anything.
                let _ = self.fabric.set_allowed_ips(key, kept);
            }
        }
        for (key, peer) in target {
            let result = if self.peers.contains_key(&key) {
                self.fabric.set_allowed_ips(&key, peer.allowed_ips.clone())
            } else {
                // Only a contract that is not ended reaches here, so a revoked key
                // is admitted again by a new contract.
                self.fabric.reinstate(&key);
                self.fabric
                    .add_peer(PeerConfig {
                        public_key: key,
                        allowed_ips: peer.allowed_ips.clone(),
                        endpoint: peer.endpoints.first().copied(),
                    })
                    .map(|()| {
                        report.added.push(key);
                        self.fabric.connect(&key, now);
                    })
            };
            match result {
                Ok(()) => {
                    self.peers.insert(key, peer);
                }
                Err(e) => {
                    for c in &peer.contracts {
                        ok_contracts.remove(c);
                        report.refused.push(refused(*c, e.clone().into()));
                    }
                    if self.peers.remove(&key).is_some() {
                        self.fabric.revoke(&key);
                        report.removed.push(key);
                    }
                }
            }
        }
        self.ipv4_holders.retain(|_, node| reached.contains(node));

        // 6. Forwarding (hub).
        let node_key: BTreeMap<NodeId, WireGuardKey> =
            self.peers.iter().map(|(k, p)| (p.node, *k)).collect();
        self.forwarding = match &desired.forwarding {
            Forwarding::None => Vec::new(),
            Forwarding::AmongPeers => {
                let nodes: Vec<NodeId> = node_key.keys().copied().collect();
                nodes
                    .iter()
                    .enumerate()
                    .flat_map(|(i, a)| nodes[i + 1..].iter().map(move |b| (*a, *b)))
                    .collect()
            }
            Forwarding::Pairs(pairs) => {
                let mut kept = BTreeSet::new();
                for f in pairs {
                    if self.ended.contains(&f.contract) {
                        report.refused.push(refused(f.contract, ApplyError::Ended));
                        continue;
                    }
                    match [f.a, f.b].into_iter().find(|n| !node_key.contains_key(n)) {
                        Some(node) => report
                            .refused
                            .push(refused(f.contract, ApplyError::NotAPeer { node })),
                        None => {
                            ok_contracts.insert(f.contract);
                            kept.insert(if f.a <= f.b { (f.a, f.b) } else { (f.b, f.a) });
                        }
                    }
                }
                kept.into_iter().collect()
            }
        };
        let key_pairs: Vec<(WireGuardKey, WireGuardKey)> = self
            .forwarding
            .iter()
            .filter_map(|(a, b)| Some((*node_key.get(a)?, *node_key.get(b)?)))
            .collect();
        self.fabric.set_forwarding(key_pairs);

        // 7. What the backend must change.
        let routes: BTreeSet<IpNet> = self
            .peers
            .values()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .collect();
        if !self.peers.is_empty() && !self.interface_up {
            self.interface_up = true;
            self.push_change(Change::InterfaceUp {
                ipv6: self.ipv6,
                ipv4: self.ipv4,
            });
        }
        if self.peers.is_empty() {
            if self.interface_up {
                self.interface_up = false;
                self.routes.clear();
                self.push_change(Change::InterfaceDown);
            }
        } else {
            for gone in self.routes.difference(&routes).copied().collect::<Vec<_>>() {
                self.push_change(Change::RemoveRoute(gone));
            }
            for new in routes.difference(&self.routes).copied().collect::<Vec<_>>() {
                self.push_change(Change::AddRoute(new));
            }
            self.routes = routes;
        }
        self.active = ok_contracts;
        report
    }

    /// IPv4 overlay addresses for the nodes `reached`: derived, minus collisions
    /// (with this node's own, or between two of them: the holder keeps it, else the
    /// smaller node id).
    fn assign_ipv4(
        &mut self,
        reached: &BTreeSet<NodeId>,
        report: &mut ApplyReport,
    ) -> BTreeMap<NodeId, Ipv4Addr> {
        let mut out = BTreeMap::new();
        let Some(own) = self.ipv4 else {
            return out;
        };
        let mut claims: BTreeMap<Ipv4Addr, Vec<NodeId>> = BTreeMap::new();
        for node in reached {
            claims
                .entry(overlay::ipv4_address(node))
                .or_default()
                .push(*node);
        }
        for (addr, nodes) in claims {
            if addr == own {
                report.ipv4_conflicts.extend(nodes);
                continue;
            }
            // `nodes` is sorted (it came from a BTreeSet), so the first is the smallest.
            let holder = self
                .ipv4_holders
                .get(&addr)
                .copied()
                .filter(|h| nodes.contains(h))
                .or_else(|| nodes.first().copied());
            let Some(holder) = holder else { continue };
            self.ipv4_holders.insert(addr, holder);
            out.insert(holder, addr);
            report
                .ipv4_conflicts
                .extend(nodes.into_iter().filter(|n| *n != holder));
        }
        out
    }

    fn remember_ended(&mut self, contract: ContractId) {
        if self.ended.insert(contract) {
            self.ended_order.push_back(contract);
        }
        while self.ended_order.len() > self.config.max_ended {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    fn push_change(&mut self, change: Change) {
        // Bounded; beyond the bound the backend is out of step and the driver sees
        // it in `routes()` (a full resync is always possible from there).
        if self.changes.len() < self.config.max_changes {
            self.changes.push_back(change);
        }
    }
}

/// The contracts that name one key of a node, and the endpoints they give.
type KeyClaim = (BTreeSet<ContractId>, Vec<SocketAddr>);

fn refused(contract: ContractId, error: ApplyError) -> Refused {
    Refused { contract, error }
}
