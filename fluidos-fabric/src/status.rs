//! What the fabric shows, in the spirit of `wg show`: a serializable [`Status`] the
//! daemon prints ([`std::fmt::Display`]) or returns as JSON.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::fabric::DropCounters;
use crate::tunnels::Tunnels;

/// Which backend carries the overlay's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendKind {
    /// A TUN interface (Linux, CAP_NET_ADMIN).
    Tun,
    /// The userspace stack with port forwards (no interface, no privileges).
    Userspace,
    /// No interface yet: no contract needs one.
    Idle,
    /// No backend can run (for example no CAP_NET_ADMIN and no userspace backend
    /// chosen); tunnels are kept but carry nothing.
    Unavailable,
}

/// The backend in use, and why that one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Which.
    pub kind: BackendKind,
    /// Why (for example "configured: tun" or "no CAP_NET_ADMIN: cannot create
    /// fluidos0").
    pub reason: String,
    /// The interface name, when there is one.
    pub interface: Option<String>,
}

/// One peer, as `wg show` lists it, plus what fluidos knows about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node: String,
    /// Its WireGuard public key, base64 as `wg` prints it.
    pub public_key: String,
    /// The contracts that admit the tunnel (hex ids).
    pub contracts: Vec<String>,
    /// Its current endpoint (after roaming).
    pub endpoint: Option<SocketAddr>,
    /// Its allowed networks: its overlay addresses and those of the nodes it relays.
    pub allowed_ips: Vec<IpNet>,
    /// Nodes reached through this peer (it is their hub).
    pub relays: Vec<String>,
    /// Seconds since the latest handshake, if one completed.
    pub latest_handshake_secs: Option<u64>,
    /// Payload bytes received from it.
    pub rx_bytes: u64,
    /// Payload bytes sent to it.
    pub tx_bytes: u64,
}

/// The fabric of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This node's WireGuard public key (base64).
    pub public_key: String,
    /// Where it listens for WireGuard.
    pub listen: Option<SocketAddr>,
    /// Its IPv6 overlay address.
    pub ipv6: Ipv6Addr,
    /// Its IPv4 overlay address, when IPv4 is on.
    pub ipv4: Option<Ipv4Addr>,
    /// The backend.
    pub backend: BackendStatus,
    /// The peers, ordered by key.
    pub peers: Vec<PeerInfo>,
    /// Pairs of nodes this node forwards between (hub).
    pub forwarding: Vec<(String, String)>,
    /// Packets forwarded between peers.
    pub forwarded: u64,
    /// What was dropped.
    pub drops: DropCounters,
}

impl Status {
    /// The status of `tunnels` with this backend and listening address.
    pub fn of(tunnels: &Tunnels, backend: BackendStatus, listen: Option<SocketAddr>) -> Self {
        let fabric = tunnels.fabric();
        let live = fabric.peers();
        let peers = tunnels
            .peers()
            .iter()
            .map(|(key, p)| {
                let stats = live.iter().find(|s| s.public_key == *key);
                PeerInfo {
                    node: p.node.to_string(),
                    public_key: STANDARD.encode(key.0),
                    contracts: p.contracts.iter().map(ToString::to_string).collect(),
                    endpoint: stats.and_then(|s| s.endpoint),
                    allowed_ips: p.allowed_ips.clone(),
                    relays: p.relays.iter().map(ToString::to_string).collect(),
                    latest_handshake_secs: stats
                        .and_then(|s| s.since_last_handshake)
                        .map(|d| d.as_secs()),
                    rx_bytes: stats.map_or(0, |s| s.rx_bytes),
                    tx_bytes: stats.map_or(0, |s| s.tx_bytes),
                }
            })
            .collect();
        Self {
            public_key: STANDARD.encode(fabric.public_key().0),
            listen,
            ipv6: tunnels.ipv6(),
            ipv4: tunnels.ipv4(),
            backend,
            peers,
            forwarding: tunnels
                .forwarding()
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            forwarded: fabric.forwarded(),
            drops: fabric.drops(),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let interface = self.backend.interface.as_deref().unwrap_or("(none)");
        writeln!(f, "interface: {interface}")?;
        writeln!(f, "  public key: {}", self.public_key)?;
        if let Some(listen) = self.listen {
            writeln!(f, "  listening on: {listen}")?;
        }
        write!(f, "  overlay: {}", self.ipv6)?;
        match self.ipv4 {
            Some(v4) => writeln!(f, ", {v4}")?,
            None => writeln!(f)?,
        }
        writeln!(
            f,
            "  backend: {} ({})",
            match self.backend.kind {
                BackendKind::Tun => "tun",
                BackendKind::Userspace => "userspace",
                BackendKind::Idle => "idle",
                BackendKind::Unavailable => "unavailable",
            },
            self.backend.reason
        )?;
        if self.forwarded > 0 || !self.forwarding.is_empty() {
            writeln!(
                f,
                "  forwarding: {} pairs, {} packets",
                self.forwarding.len(),
                self.forwarded
            )?;
        }
        for p in &self.peers {
            writeln!(f)?;
            writeln!(f, "peer: {}", p.public_key)?;
            writeln!(f, "  node: {}", p.node)?;
            writeln!(f, "  contracts: {}", p.contracts.join(", "))?;
            if let Some(e) = p.endpoint {
                writeln!(f, "  endpoint: {e}")?;
            }
            let allowed: Vec<String> = p.allowed_ips.iter().map(ToString::to_string).collect();
            writeln!(f, "  allowed ips: {}", allowed.join(", "))?;
            if !p.relays.is_empty() {
                writeln!(f, "  relays: {}", p.relays.join(", "))?;
            }
            match p.latest_handshake_secs {
                Some(s) => writeln!(f, "  latest handshake: {s} seconds ago")?,
                None => writeln!(f, "  latest handshake: none")?,
            }
            writeln!(
                f,
                "  transfer: {} B received, {} B sent",
                p.rx_bytes, p.tx_bytes
            )?;
        }
        Ok(())
    }
}
