//! The I/O-free data plane: one [`Fabric`] per node holds one boringtun `Tunn` per
//! contract peer and turns UDP datagrams and IP packets into each other.
//!
//! It owns no socket and no device. The driver hands it what arrived
//! ([`Fabric::handle_datagram`] for UDP from the underlay, [`Fabric::handle_packet`]
//! for IP packets from the TUN device or the userspace stack) and takes out what to
//! send ([`Fabric::poll_transmit`]) and what to deliver ([`Fabric::poll_packet`]).
//! Timers run when the driver calls [`Fabric::handle_timeout`] at
//! [`Fabric::poll_timeout`].
//!
//! What WireGuard does, it does the same way, because boringtun does it:
//! handshake retry every 5 s for 90 s, rekey after 120 s or 2^60 messages, keepalive
//! after 10 s of one-way traffic and the optional persistent keepalive, cookies under
//! load. Roaming: every datagram that authenticates as a peer's moves that peer's
//! endpoint to the datagram's source, as in WireGuard §2.1.
//!
//! Time: the fabric's own decisions (when to tick, rate-limiter windows) use the
//! `now` passed in. boringtun 0.7.1 reads its protocol timers (retry, rekey,
//! keepalive) from its own monotonic clock; it has no way to inject one short of its
//! `mock-instant` feature, which would switch the clock of every binary in a build.
//! So a simulator driving many fabrics gets correct packets but WireGuard's timers
//! elapse in real time.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use fluidos_contracts::WireGuardKey;
use ipnet::IpNet;

use crate::{PeerFabric, WireGuardSecret, x25519_public};

/// The default MTU of the overlay: 1500 minus the IPv6 (40), UDP (8) and WireGuard
/// (32) overheads, as `wg-quick` chooses.
pub const DEFAULT_MTU: u16 = 1420;
/// How often the fabric ticks boringtun's timers (boringtun's own device uses 250 ms).
pub const TICK: Duration = Duration::from_millis(250);
/// Largest datagram or packet the fabric handles (a UDP payload cannot be larger).
const MAX_DATAGRAM: usize = 65_535;
/// Handshake initiations per second accepted before cookies are demanded. Each
/// initiation is counted twice (once by the fabric to find its peer, once by the
/// peer's `Tunn`), so this is twice the effective limit.
const HANDSHAKES_PER_SECOND: u64 = 200;

/// How a [`Fabric`] behaves; [`FabricConfig::default`] is what WireGuard tools use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FabricConfig {
    /// MTU of the overlay interface; packets from the device larger than this are
    /// dropped. Default [`DEFAULT_MTU`].
    pub mtu: u16,
    /// Persistent keepalive in seconds for every peer (`None`: off, as WireGuard's
    /// default; NAT'd nodes want 25).
    pub persistent_keepalive: Option<u16>,
    /// Most datagrams waiting in [`Fabric::poll_transmit`]'s queue and most packets
    /// waiting in [`Fabric::poll_packet`]'s; beyond that new ones are dropped and
    /// counted. Default 1024 each.
    pub max_queued: usize,
    /// Most peers at once. Default 1024.
    pub max_peers: usize,
}

impl Default for FabricConfig {
    fn default() -> Self {
        Self {
            mtu: DEFAULT_MTU,
            persistent_keepalive: None,
            max_queued: 1024,
            max_peers: 1024,
        }
    }
}

impl FabricConfig {
    /// Sets the MTU (at least 1280, IPv6's minimum).
    pub fn with_mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu.max(1280);
        self
    }

    /// Sets the persistent keepalive interval in seconds.
    pub fn with_persistent_keepalive(mut self, seconds: Option<u16>) -> Self {
        self.persistent_keepalive = seconds;
        self
    }

    /// Sets the queue bound (at least 1).
    pub fn with_max_queued(mut self, max: usize) -> Self {
        self.max_queued = max.max(1);
        self
    }
}

/// A UDP datagram to send on the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub to: SocketAddr,
    /// The WireGuard message.
    pub payload: Vec<u8>,
}

/// A peer the fabric tunnels to: its key, the addresses it may use inside the
/// tunnel, and where to reach it first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's WireGuard static public key.
    pub public_key: WireGuardKey,
    /// Source addresses accepted from the peer and destinations routed to it
    /// (WireGuard's `AllowedIPs`).
    pub allowed_ips: Vec<IpNet>,
    /// Its endpoint until it roams; `None` waits for it to initiate.
    pub endpoint: Option<SocketAddr>,
}

impl PeerConfig {
    /// A peer from a contract: its overlay address as a /128, its first endpoint.
    pub fn from_contract(peer: &PeerFabric) -> Self {
        Self {
            public_key: peer.public_key,
            allowed_ips: vec![IpNet::from(IpAddr::V6(peer.overlay))],
            endpoint: peer.endpoints.first().copied(),
        }
    }

    /// Adds an allowed network (for example the peer's IPv4 overlay address).
    pub fn allow(mut self, net: IpNet) -> Self {
        if !self.allowed_ips.contains(&net) {
            self.allowed_ips.push(net);
        }
        self
    }
}

/// Why a peer could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// The key belongs to a terminated contract and is refused from then on.
    #[error("WireGuard key was revoked (its contract ended) and is refused")]
    Revoked,
    /// The key is this node's own.
    #[error("a peer cannot have this node's own WireGuard key")]
    OwnKey,
    /// The fabric already has [`FabricConfig::max_peers`] peers.
    #[error("fabric already has the maximum of {max} peers")]
    TooManyPeers {
        /// The limit.
        max: usize,
    },
    /// Another peer already routes one of these networks.
    #[error("allowed network {net} overlaps a network of another peer")]
    Overlap {
        /// The network in conflict.
        net: IpNet,
    },
}

/// What the fabric knows about a peer, in the spirit of `wg show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's key.
    pub public_key: WireGuardKey,
    /// Its current endpoint (after roaming).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed networks.
    pub allowed_ips: Vec<IpNet>,
    /// Time since the last completed handshake, if any.
    pub since_last_handshake: Option<Duration>,
    /// Payload bytes sent to it.
    pub tx_bytes: u64,
    /// Payload bytes received from it.
    pub rx_bytes: u64,
}

/// Counters of what the fabric dropped, for diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropCounters {
    /// Datagrams that were not WireGuard or failed authentication.
    pub invalid: u64,
    /// Handshake initiations from keys that are not peers (unknown or revoked).
    pub unknown_key: u64,
    /// Packets from a peer with a source address outside its allowed networks.
    pub wrong_source: u64,
    /// Packets from the device with no peer for their destination, or no endpoint.
    pub no_route: u64,
    /// Packets larger than the MTU.
    pub too_big: u64,
    /// Datagrams or packets dropped because a queue was full.
    pub queue_full: u64,
    /// Packets from a peer for a destination that is neither this node's (see
    /// [`Fabric::set_local`]) nor another peer's that the forwarding policy allows.
    pub forbidden: u64,
}

struct Peer {
    tunn: Tunn,
    index: u32,
    config: PeerConfig,
    endpoint: Option<SocketAddr>,
}

/// The fabric of one node: its key, its peers, and the queues between them and the
/// driver. See the [module documentation](self).
pub struct Fabric {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    own_key: WireGuardKey,
    config: FabricConfig,
    peers: BTreeMap<WireGuardKey, Peer>,
    /// Local index (upper 24 bits of boringtun's receiver index) → peer.
    by_index: HashMap<u32, WireGuardKey>,
    revoked: BTreeSet<WireGuardKey>,
    next_index: u32,
    rate_limiter: Arc<RateLimiter>,
    transmits: VecDeque<Transmit>,
    packets: VecDeque<Vec<u8>>,
    scratch: Vec<u8>,
    next_tick: Option<Instant>,
    last_limiter_reset: Option<Instant>,
    drops: DropCounters,
    /// Destinations delivered to the device; empty: every destination.
    local: Vec<IpNet>,
    /// Unordered pairs of peers (smaller key first) whose packets this node forwards.
    forwarding: BTreeSet<(WireGuardKey, WireGuardKey)>,
    forwarded: u64,
}

impl Fabric {
    /// A fabric with this node's WireGuard key and no peers.
    pub fn new(secret: &WireGuardSecret, config: FabricConfig) -> Self {
        let public = secret.x25519_public();
        // Start the local indices at a value derived from the key so that two fabrics
        // of one test do not share indices; any value works.
        let seed = public.as_bytes();
        let next_index = u32::from_le_bytes([seed[0], seed[1], seed[2], 0]) & 0x00ff_ffff;
        Self {
            secret: secret.to_static_secret(),
            public,
            own_key: secret.public(),
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_SECOND)),
            config,
            peers: BTreeMap::new(),
            by_index: HashMap::new(),
            revoked: BTreeSet::new(),
            next_index,
            transmits: VecDeque::new(),
            packets: VecDeque::new(),
            scratch: vec![0u8; MAX_DATAGRAM + 32],
            next_tick: None,
            last_limiter_reset: None,
            drops: DropCounters::default(),
            local: Vec::new(),
            forwarding: BTreeSet::new(),
            forwarded: 0,
        }
    }

    /// This node's public key.
    pub fn public_key(&self) -> WireGuardKey {
        self.own_key
    }

    /// The configuration in force.
    pub fn config(&self) -> &FabricConfig {
        &self.config
    }

    /// Adds a peer (or replaces the one with the same key, keeping no session).
    pub fn add_peer(&mut self, peer: PeerConfig) -> Result<(), AddPeerError> {
        if self.revoked.contains(&peer.public_key) {
            return Err(AddPeerError::Revoked);
        }
        if peer.public_key == self.own_key {
            return Err(AddPeerError::OwnKey);
        }
        if let Some(net) = self.overlap(&peer.public_key, &peer.allowed_ips) {
            return Err(AddPeerError::Overlap { net });
        }
        if !self.peers.contains_key(&peer.public_key) && self.peers.len() >= self.config.max_peers {
            return Err(AddPeerError::TooManyPeers {
                max: self.config.max_peers,
            });
        }
        self.remove_peer(&peer.public_key);
        let index = self.allocate_index();
        let tunn = Tunn::new(
            self.secret.clone(),
            x25519_public(&peer.public_key),
            None,
            self.config.persistent_keepalive,
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        self.by_index.insert(index, peer.public_key);
        self.peers.insert(
            peer.public_key,
            Peer {
                tunn,
                index,
                endpoint: peer.endpoint,
                config: peer,
            },
        );
        Ok(())
    }

    /// Removes a peer and its sessions; returns whether it was there. Its key may be
    /// added again later.
    pub fn remove_peer(&mut self, key: &WireGuardKey) -> bool {
        match self.peers.remove(key) {
            Some(peer) => {
                self.by_index.remove(&peer.index);
                true
            }
            None => false,
        }
    }

    /// Removes a peer and refuses its key from now on, for the lifetime of this
    /// fabric: the contract that admitted it is over.
    pub fn revoke(&mut self, key: &WireGuardKey) {
        self.remove_peer(key);
        self.revoked.insert(*key);
    }

    /// Whether `key` was revoked.
    pub fn is_revoked(&self, key: &WireGuardKey) -> bool {
        self.revoked.contains(key)
    }

    /// Lifts the refusal of `key` because a *new* contract admits it again (the same
    /// two nodes buy from each other once more); returns whether it was revoked.
    /// Deciding that the contract is new is the caller's job ([`crate::Tunnels`]
    /// never reinstates a key for a contract that ended).
    pub fn reinstate(&mut self, key: &WireGuardKey) -> bool {
        self.revoked.remove(key)
    }

    /// Replaces the allowed networks of peer `key`, keeping its sessions (a hub that
    /// starts relaying one more node for it must not break its tunnel).
    pub fn set_allowed_ips(
        &mut self,
        key: &WireGuardKey,
        allowed_ips: Vec<IpNet>,
    ) -> Result<(), AddPeerError> {
        if let Some(net) = self.overlap(key, &allowed_ips) {
            return Err(AddPeerError::Overlap { net });
        }
        if let Some(peer) = self.peers.get_mut(key) {
            peer.config.allowed_ips = allowed_ips;
        }
        Ok(())
    }

    /// The destinations that are this node's own: packets from peers for them go to
    /// the device, packets for anything else are forwarded (when the forwarding
    /// policy allows) or dropped. Empty, the default, delivers everything to the
    /// device as a plain WireGuard endpoint does.
    pub fn set_local(&mut self, nets: Vec<IpNet>) {
        self.local = nets;
    }

    /// The pairs of peers this node forwards between (hub-and-spoke): a packet from
    /// one peer whose destination routes to the other crosses this node without
    /// touching the device. Any other packet between peers is dropped and counted
    /// as [`DropCounters::forbidden`]. Empty by default: a mesh node forwards nothing.
    pub fn set_forwarding(
        &mut self,
        pairs: impl IntoIterator<Item = (WireGuardKey, WireGuardKey)>,
    ) {
        self.forwarding = pairs
            .into_iter()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| if a <= b { (a, b) } else { (b, a) })
            .collect();
    }

    /// Packets forwarded between peers so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// The peers, ordered by key.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(key, peer)| {
                let (since, tx, rx, _, _) = peer.tunn.stats();
                PeerStatus {
                    public_key: *key,
                    endpoint: peer.endpoint,
                    allowed_ips: peer.config.allowed_ips.clone(),
                    since_last_handshake: since,
                    tx_bytes: tx as u64,
                    rx_bytes: rx as u64,
                }
            })
            .collect()
    }

    /// What was dropped so far.
    pub fn drops(&self) -> DropCounters {
        self.drops
    }

    /// Starts a handshake with `key` now (otherwise the first packet starts it).
    pub fn connect(&mut self, key: &WireGuardKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let Some(to) = peer.endpoint else { return };
        if let TunnResult::WriteToNetwork(d) = peer
            .tunn
            .format_handshake_initiation(&mut self.scratch, false)
        {
            let payload = d.to_vec();
            push_bounded(
                &mut self.transmits,
                Transmit { to, payload },
                self.config.max_queued,
                &mut self.drops,
            );
        }
        self.schedule(now);
    }

    /// A UDP datagram arrived from `from`. Anything not from a peer's key is dropped
    /// without an answer.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        self.schedule(now);
        let Some(key) = self.peer_of(from, datagram) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let max = self.config.max_queued;
        let mut input = datagram;
        let mut authenticated = false;
        let mut inner = None;
        loop {
            match peer
                .tunn
                .decapsulate(Some(from.ip()), input, &mut self.scratch)
            {
                TunnResult::Done => {
                    authenticated |= !input.is_empty();
                    break;
                }
                TunnResult::Err(WireGuardError::UnderLoad) => break,
                TunnResult::Err(_) => {
                    self.drops.invalid += 1;
                    break;
                }
                TunnResult::WriteToNetwork(d) => {
                    // A handshake response, a cookie or a queued packet: all go to
                    // where the peer just spoke from.
                    authenticated |= !input.is_empty() && d.len() != COOKIE_REPLY_LEN;
                    let payload = d.to_vec();
                    push_bounded(
                        &mut self.transmits,
                        Transmit { to: from, payload },
                        max,
                        &mut self.drops,
                    );
                    input = &[];
                }
                TunnResult::WriteToTunnelV4(packet, src) => {
                    authenticated = true;
                    inner = accept(peer, IpAddr::V4(src), packet, &mut self.drops);
                    break;
                }
                TunnResult::WriteToTunnelV6(packet, src) => {
                    authenticated = true;
                    inner = accept(peer, IpAddr::V6(src), packet, &mut self.drops);
                    break;
                }
            }
        }
        if authenticated {
            // Roaming: the peer is where its last authenticated datagram came from.
            peer.endpoint = Some(from);
        }
        if let Some(packet) = inner {
            self.dispatch(key, packet);
        }
    }

    /// An IP packet from the device, to be sent to the peer whose allowed networks
    /// hold its destination.
    pub fn handle_packet(&mut self, packet: &[u8], now: Instant) {
        self.schedule(now);
        if packet.len() > usize::from(self.config.mtu) {
            self.drops.too_big += 1;
            return;
        }
        let Some(dst) = Tunn::dst_address(packet) else {
            self.drops.invalid += 1;
            return;
        };
        let Some((_, peer)) = route(&mut self.peers, dst) else {
            self.drops.no_route += 1;
            return;
        };
        let Some(to) = peer.endpoint else {
            self.drops.no_route += 1;
            return;
        };
        // Without a session boringtun queues the packet (at most 256) and returns a
        // handshake initiation.
        if let TunnResult::WriteToNetwork(d) = peer.tunn.encapsulate(packet, &mut self.scratch) {
            let payload = d.to_vec();
            push_bounded(
                &mut self.transmits,
                Transmit { to, payload },
                self.config.max_queued,
                &mut self.drops,
            );
        }
    }

    /// The next datagram to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next IP packet to deliver to the device, oldest first.
    pub fn poll_packet(&mut self) -> Option<Vec<u8>> {
        self.packets.pop_front()
    }

    /// When [`Fabric::handle_timeout`] wants to run next (`None` with no peers).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.peers.is_empty() {
            None
        } else {
            self.next_tick
        }
    }

    /// Runs the timers due at `now`: handshake retries, keepalives, rekeys, session
    /// expiry, and the handshake rate limiter's window.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_tick.is_some_and(|t| t > now) {
            return;
        }
        self.next_tick = Some(now + TICK);
        if self
            .last_limiter_reset
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.rate_limiter.reset_count();
            self.last_limiter_reset = Some(now);
        }
        let max = self.config.max_queued;
        for peer in self.peers.values_mut() {
            // Other results (ConnectionExpired and the like) mean boringtun cleared the
            // sessions; the next packet starts a new handshake.
            if let TunnResult::WriteToNetwork(d) = peer.tunn.update_timers(&mut self.scratch)
                && let Some(to) = peer.endpoint
            {
                let payload = d.to_vec();
                push_bounded(
                    &mut self.transmits,
                    Transmit { to, payload },
                    max,
                    &mut self.drops,
                );
            }
        }
    }

    /// A network of `nets` that overlaps one of another peer than `key`.
    fn overlap(&self, key: &WireGuardKey, nets: &[IpNet]) -> Option<IpNet> {
        self.peers
            .iter()
            .filter(|(k, _)| *k != key)
            .find_map(|(_, other)| {
                nets.iter().copied().find(|n| {
                    other
                        .config
                        .allowed_ips
                        .iter()
                        .any(|o| o.contains(&n.network()) || n.contains(&o.network()))
                })
            })
    }

    /// Where a packet that peer `from` sent (source already checked) goes: to the
    /// device when it is for this node, to another peer when the forwarding policy
    /// allows, nowhere otherwise.
    fn dispatch(&mut self, from: WireGuardKey, packet: Vec<u8>) {
        let max = self.config.max_queued;
        let Some(dst) = Tunn::dst_address(&packet) else {
            self.drops.invalid += 1;
            return;
        };
        if self.local.is_empty() || self.local.iter().any(|n| n.contains(&dst)) {
            push_bounded(&mut self.packets, packet, max, &mut self.drops);
            return;
        }
        let Some((to_key, out)) = route(&mut self.peers, dst) else {
            self.drops.forbidden += 1;
            return;
        };
        let pair = if from <= to_key {
            (from, to_key)
        } else {
            (to_key, from)
        };
        if to_key == from || !self.forwarding.contains(&pair) {
            self.drops.forbidden += 1;
            return;
        }
        let Some(to) = out.endpoint else {
            self.drops.no_route += 1;
            return;
        };
        self.forwarded += 1;
        if let TunnResult::WriteToNetwork(d) = out.tunn.encapsulate(&packet, &mut self.scratch) {
            let payload = d.to_vec();
            push_bounded(
                &mut self.transmits,
                Transmit { to, payload },
                max,
                &mut self.drops,
            );
        }
    }

    fn schedule(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + TICK);
        }
    }

    fn allocate_index(&mut self) -> u32 {
        loop {
            let index = self.next_index & 0x00ff_ffff;
            self.next_index = self.next_index.wrapping_add(1);
            if !self.by_index.contains_key(&index) {
                return index;
            }
        }
    }

    /// Which peer a datagram is for, or `None` to drop it silently.
    fn peer_of(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<WireGuardKey> {
        let packet =
            match self
                .rate_limiter
                .verify_packet(Some(from.ip()), datagram, &mut self.scratch)
            {
                Ok(packet) => packet,
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    // Under load: a cookie reply, as WireGuard sends to any initiator
                    // with a valid mac1 (it needs our public key to compute).
                    let payload = cookie.to_vec();
                    push_bounded(
                        &mut self.transmits,
                        Transmit { to: from, payload },
                        self.config.max_queued,
                        &mut self.drops,
                    );
                    return None;
                }
                Err(_) => {
                    self.drops.invalid += 1;
                    return None;
                }
            };
        let index = match packet {
            Packet::HandshakeInit(init) => {
                let Ok(half) = parse_handshake_anon(&self.secret, &self.public, &init) else {
                    self.drops.invalid += 1;
                    return None;
                };
                let key = WireGuardKey(half.peer_static_public);
                if self.peers.contains_key(&key) {
                    return Some(key);
                }
                self.drops.unknown_key += 1;
                return None;
            }
            Packet::HandshakeResponse(p) => p.receiver_idx,
            Packet::PacketCookieReply(p) => p.receiver_idx,
            Packet::PacketData(p) => p.receiver_idx,
        };
        let key = self.by_index.get(&(index >> 8)).copied();
        if key.is_none() {
            self.drops.invalid += 1;
        }
        key
    }
}

/// The peer whose allowed networks hold `dst`, longest prefix first.
fn route(
    peers: &mut BTreeMap<WireGuardKey, Peer>,
    dst: IpAddr,
) -> Option<(WireGuardKey, &mut Peer)> {
    peers
        .iter_mut()
        .filter_map(|(key, p)| {
            let len = p
                .config
                .allowed_ips
                .iter()
                .filter(|n| n.contains(&dst))
                .map(IpNet::prefix_len)
                .max()?;
            Some((len, *key, p))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, key, p)| (key, p))
}

/// Length of a WireGuard cookie reply message.
const COOKIE_REPLY_LEN: usize = 64;

/// The decrypted packet, if its source is one the peer may use (cryptokey routing).
fn accept(peer: &Peer, src: IpAddr, packet: &[u8], drops: &mut DropCounters) -> Option<Vec<u8>> {
    if packet.is_empty() {
        return None;
    }
    if !peer.config.allowed_ips.iter().any(|n| n.contains(&src)) {
        drops.wrong_source += 1;
        return None;
    }
    Some(packet.to_vec())
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, max: usize, drops: &mut DropCounters) {
    if queue.len() >= max {
        drops.queue_full += 1;
    } else {
        queue.push_back(item);
    }
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("public_key", &self.own_key)
            .field("peers", &self.peers.len())
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// The IPv6 overlay address as an allowed network (/128).
pub fn host_net(addr: Ipv6Addr) -> IpNet {
    IpNet::from(IpAddr::V6(addr))
}
