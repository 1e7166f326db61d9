//! # fluidos-core
//!
//! The engine of a fluidos node, and the crate other Rust applications embed.
//!
//! Layout:
//! - [`ledger`]: the provider's ledger of flavors, reservations and contracts — an
//!   I/O-free state machine that takes time as a parameter and never oversells;
//! - [`buyer`]: the buyer's acquisition logic (the FLUIDOS "solver"), I/O-free;
//! - [`store`]: crash-safe persistence of reservations and contracts;
//! - [`host`]: measuring the host and turning its sellable capacity into flavors;
//! - [`Node`]: the builder and driver that runs all of the above over
//!   `fluidos-discovery` (libp2p) and, later, `fluidos-fabric`.
//!

pub mod buyer;
pub mod host;
pub mod ledger;
mod node;
pub mod store;

pub use node::{
    BindError, BuyError, BuyProgress, ContractInfo, ContractRole, ContractState, LedgerTuning,
    Node, NodeBuilder, NodeError, NodeStatus, Roles,
};
