//! # fluidos-core
//!
//! The engine of a fluidos node, and the crate other Rust applications embed.
//!
//! Layout:
//! - [`ledger`]: the provider's ledger of flavors, reservations and contracts — an
//!   I/O-free state machine that takes time as a parameter and never oversells;
//! - [`buyer`]: the buyer's acquisition logic (the FLUIDOS "solver"), I/O-free;
//! - [`offload`]: the provider's admission of offloaded replicas under contracts
//!   and their quota, I/O-free;
//! - [`view`]: the replicated view (Automerge) of physical and virtual nodes and
//!   workloads, with ownership checked on arrival, sync and compaction, I/O-free;
//! - [`workload`]: workload specs and intents (TOML, JSON);
//! - [`placement`]: placing replicas by intent, or saying what to acquire, I/O-free;
//! - [`store`]: crash-safe persistence of reservations and contracts;
//! - [`host`]: measuring the host and turning its sellable capacity into flavors;
//! - [`runtime`]: running replicas on a provider — the `Runtime` trait and the process
//!   runtime (cgroups or rlimits, a supervisor per replica that survives restarts);
//! - [`Node`] (feature `node`, on by default): the builder and driver that runs all
//!   of the above over `fluidos-discovery` (libp2p) and tokio. Without the feature
//!   the crate has no networking and no async runtime: only the state machines,
//!   for simulators and other drivers.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fluidos_core::Node;
//!
//! let node = Node::builder()
//!     .data_dir("/var/lib/fluidos")
//!     .catalog("acme".parse()?, vec!["/ip4/198.18.0.1/tcp/7070/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".parse()?])
//!     .bind()
//!     .await?;
//! println!("{} sells {:?}", node.did_key(), node.flavors().await?);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub mod buyer;
pub mod host;
pub mod ledger;
#[cfg(feature = "node")]
mod node;
pub mod offload;
pub mod placement;
pub mod runtime;
pub mod store;
pub mod usage;
pub mod view;
pub mod workload;

pub use workload::EndCause;

#[cfg(feature = "node")]
pub use node::{
    ActiveContract, BindError, BuyError, BuyProgress, ContractInfo, ContractRole, ContractState,
    DEFAULT_DEPLOY_WAIT, DEFAULT_OFFER_CACHE_TTL, DEFAULT_PROVIDER_LOST_AFTER,
    DEFAULT_USAGE_INTERVAL, DeployPhase, HistoryEntry, LedgerTuning, Node, NodeBuilder, NodeStatus,
    NotReady, Roles, ShutDown, Submitted, TerminateError, WorkloadDetail, WorkloadError,
};

/// The node's fabric: WireGuard tunnels with the other party of every active
/// contract ([`NodeBuilder::fabric`]).
#[cfg(feature = "node")]
pub mod fabric {
    pub use crate::node::{
        BackendChoice, DEFAULT_FABRIC_PORT, FabricOptions, FabricReport, FabricState,
        RefusedTunnel, Topology, desired_tunnels as desired, endpoints_for,
    };
    pub use fluidos_fabric::Status;
    pub use fluidos_fabric::userspace::PortForward;
}
