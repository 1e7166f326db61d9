//! # fluidos-fabric
//!
//! The network fabric between the parties of a contract: WireGuard tunnels (the
//! userspace implementation of [boringtun]) over which a buyer reaches the capacity it
//! bought, each node on one overlay IPv6 address.
//!
//! ## What exists now
//!
//! The pieces a contract needs, so that both parties can put their fabric parameters
//! into the terms they sign:
//!
//! - [`WireGuardSecret`]: the node's x25519 static key (zeroized, never printed), and
//!   its public half as a [`fluidos_contracts::WireGuardKey`];
//! - [`keyfile`]: that key on disk in `wg genkey` format, mode 0600, refused when
//!   others can read it or when it is corrupt;
//! - [`overlay`]: each node's overlay address, a unique local IPv6 address
//!   (`fdf0:6a54:bda7::/48`) derived from its node id, so no one allocates addresses;
//! - [`fabric_params`]: this node's [`FabricParams`] for a contract, and
//!   [`PeerFabric::check`]: a peer's, checked (weak keys, endpoints, overlay address).
//!
//! - [`overlay::ipv4_address`]: the optional IPv4 overlay address in `100.64.0.0/10`,
//!   derived the same way (collisions among one node's peers are detected, see there).
//!
//! And the data plane:
//!
//! - [`Fabric`] ([`fabric`]): the I/O-free state machine, one boringtun `Tunn` per
//!   peer, with time passed in; datagrams in and out, IP packets in and out, timers;
//!   roaming, keepalive, retry and rekey as WireGuard; unknown keys dropped silently,
//!   revoked keys refused for good, bounded queues, MTU 1420 by default;
//! - `tun` and `driver` (Linux): the TUN interface (addresses, per-peer routes,
//!   teardown) and the tokio task that runs a [`Fabric`] over a UDP socket and the
//!   device, with TUN offloads and UDP GSO/GRO;
//! - the `fluidos-fabric-peer` binary: one endpoint from a JSON file (tests, interop
//!   with wireguard-go, benchmarks), or the contract-driven service steered on stdin.
//!
//! And, on top, what a node drives from its contracts:
//!
//! - [`Tunnels`] ([`tunnels`]): the I/O-free manager; `apply(&Desired, now)` with the
//!   complete set of active contracts' parties adds and revokes peers, resolves IPv4
//!   collisions, sets hub forwarding, and queues interface and route [`Change`]s;
//! - `service` (Linux): the tokio task and its [`service::FabricHandle`]
//!   (`apply`, `status`, `shutdown`), with the TUN or the userspace backend;
//! - [`userspace`]: the no-TUN backend (smoltcp, local TCP ports forwarded to remote
//!   workloads), and what it does not do;
//! - [`Status`] ([`status`]): `wg show` as a serializable value.
//!
//! Not yet: the wiring into the node (calling `apply` when contracts change) and the
//! `fluidos-node fabric` command.
//!
//! ```no_run
//! use fluidos_fabric::{keyfile, overlay, fabric_params};
//! # fn node_id() -> fluidos_contracts::NodeId { unimplemented!() }
//! let (wg, _created) = keyfile::load_or_create("/var/lib/fluidos/wireguard.key".as_ref()).unwrap();
//! let me = node_id();
//! let params = fabric_params(&wg, ["198.18.0.1:51820".parse().unwrap()], &me);
//! println!("{wg:?} at {}", overlay::address(&me));
//! # let _ = params;
//! ```
//!
//! [boringtun]: https://github.com/cloudflare/boringtun

#[cfg(target_os = "linux")]
pub mod driver;
pub mod fabric;
mod key;
pub mod keyfile;
pub mod overlay;
mod params;
#[cfg(target_os = "linux")]
pub mod service;
pub mod status;
#[cfg(target_os = "linux")]
pub mod tun;
pub mod tunnels;
pub mod userspace;

pub use fabric::{
    AddPeerError, DEFAULT_MTU, DropCounters, Fabric, FabricConfig, PeerConfig, PeerStatus, Transmit,
};
pub use fluidos_contracts::FabricParams;
pub use key::{WireGuardSecret, x25519_public};
pub use params::{MAX_ENDPOINTS, PeerFabric, PeerParamsError, fabric_params};
pub use status::{BackendKind, BackendStatus, PeerInfo, Status};
pub use tunnels::{
    ApplyError, ApplyReport, Change, ContractPeer, Desired, Forward, Forwarding, Refused, Relayed,
    TunnelPeer, Tunnels, TunnelsConfig,
};
