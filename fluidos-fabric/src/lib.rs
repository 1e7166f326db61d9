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
//! The keys are the ones boringtun's `Tunn` takes: the crate's tests complete a real
//! WireGuard handshake between two in-memory tunnels and carry a packet.
//!
//! ## What the fabric issue will add
//!
//! The tunnels themselves: an I/O-free state machine that keeps one `Tunn` per active
//! contract peer (opened when a contract becomes active, closed when it ends), a
//! driver owning the UDP socket and the TUN device, routing of the overlay prefix
//! through the device, endpoint roaming and keepalives, and the namespace tests
//! against `wireguard-go`.
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
pub mod tun;

pub use fabric::{
    AddPeerError, DEFAULT_MTU, DropCounters, Fabric, FabricConfig, PeerConfig, PeerStatus, Transmit,
};
pub use fluidos_contracts::FabricParams;
pub use key::{WireGuardSecret, x25519_public};
pub use params::{MAX_ENDPOINTS, PeerFabric, PeerParamsError, fabric_params};
