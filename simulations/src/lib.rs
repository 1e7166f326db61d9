//! # fluidos-simulations
//!
//! Deterministic experiments over fluidos-core's I/O-free state machines: a simulated
//! clock, a simulated network (per-message latency, loss, silent nodes), and nothing
//! else — no tokio, no sockets, no disk. The same seed always gives the same run.
//!
//! - [`market`]: providers (each a [`fluidos_core::ledger::Ledger`]) and buyers (each a
//!   [`fluidos_core::buyer::Acquisition`]) negotiating over REAR with latency and
//!   loss. Run the table with `cargo run -p fluidos-simulations --bin market`.
//!
//! The view, fabric and supernode issues add their state machines to this mesh.

pub mod market;
