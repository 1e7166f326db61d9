//! # fluidos-discovery
//!
//! The libp2p side of a fluidos node. This crate owns:
//!
//! - **identity bridge** ([`keypair`], [`peer_id`], [`node_id`]): the node key is the
//!   libp2p key, and a `NodeId` and a `PeerId` convert into each other;
//! - **the swarm** and the one task that owns it (TCP with Noise and yamux, QUIC,
//!   relay client and DCUtR; identify, ping, autonat, Kademlia `/fluidos/kad/1`,
//!   mDNS behind a switch, and the request-response protocols);
//! - **catalogs** ([`catalog`]): Kademlia membership and signed, expiring
//!   [`Advert`]s, re-published before expiry and withdrawn on shutdown;
//! - **direct peers**: manual addresses and mDNS, asked for their advert over
//!   `/fluidos/advert/1`;
//! - **policies** ([`IncomingPolicy`], [`OutgoingPolicy`]) and the merged, expiring
//!   list of peering [`Candidate`]s;
//! - **the REAR wire** (`/fluidos/rear/1`, [`codec`]): one request per substream,
//!   canonical CBOR, size limits, typed errors for bad input and per-peer limits.
//!   What the requests *mean* (ledger, buyer) lives in `fluidos-core`.
//!
//! Layout: `handle` (public API) → `event_loop` (owns the swarm; REAR and connection
//! events) + `catalog_ops` (adverts and Kademlia) → pure modules `advert`, `catalog`,
//! `policy`, `candidates`, which hold no I/O and are unit-tested alone; and `codec`,
//! whose framing functions (`decode_request`, `encode_response`) are pure and whose
//! libp2p `Codec` impls read and write the substream (bounded reads, one message
//! each way).
//!
//! ```no_run
//! use std::time::Duration;
//! use fluidos_contracts::{SecretKey, rear::{Request, Response}, Selector};
//! use fluidos_discovery::{CatalogConfig, Discovery, DiscoveryConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SecretKey::generate();
//! let catalog = CatalogConfig::new(
//!     "eu-edge".parse()?,
//!     vec!["/ip4/192.0.2.10/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".parse()?],
//! );
//! let (handle, mut inbound) = Discovery::spawn(&key, DiscoveryConfig::default().with_catalog(catalog)).await?;
//! // Answer REAR requests (fluidos-core does this for real).
//! tokio::spawn(async move {
//!     while let Some(req) = inbound.recv().await {
//!         let _ = req.reply.send(Response::Flavors { flavors: vec![] });
//!     }
//! });
//! for c in handle.candidates().await? {
//!     let answer = handle
//!         .request(c.node, Request::ListFlavors { selector: Selector::default() }, Duration::from_secs(5))
//!         .await?;
//!     println!("{} answered {answer:?}", c.node);
//! }
//! handle.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod advert;
mod app;
mod backoff;
mod behaviour;
mod candidates;
pub mod catalog;
mod catalog_ops;
pub mod codec;
mod config;
mod event_loop;
pub mod gossip;
mod gossip_ops;
mod handle;
mod identity;
mod keep_alive;
mod policy;
mod rumor;

pub use advert::{Advert, AdvertBody, AdvertError, FlavorSummary, Role};
pub use app::{
    AppBody, AppProtocol, AppRequest, AppResult, MAX_APP_MESSAGE_BYTES, MAX_OUTBOUND_APP_PER_PEER,
};
pub use behaviour::{AGENT, BuildError, IDENTIFY_PROTOCOL, MAX_PROVIDERS_PER_KEY};
pub use candidates::{Candidate, CandidateTable, MAX_CANDIDATES, Offer, OfferError, Rating};
pub use catalog::{CATALOG_SHARDS, CatalogConfig, CatalogName};
pub use config::{CatalogServer, CatalogServerError, ConfigError, DiscoveryConfig};
pub use handle::{
    AddPeerError, CatalogStatus, Discovery, DiscoveryHandle, DiscoveryStats, InboundRequest,
    RequestError, SetAdvertError, StartError, Stopped, Unreachable,
};
pub use identity::{keypair, node_id, peer_id};
pub use policy::{IncomingPolicy, OutgoingPolicy, Refusal, Source, SourceKind};

/// The libp2p version this crate is built on, for embedders and tests that need
/// its types (`Multiaddr`, `PeerId`).
pub use libp2p;
