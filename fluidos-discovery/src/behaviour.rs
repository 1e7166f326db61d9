//! The libp2p behaviours of a fluidos node and the swarm that carries them.

use std::num::NonZeroUsize;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, autonat, dcutr, identify, identity::Keypair, kad, mdns,
    noise, ping, relay, request_response, tcp, yamux,
};

use crate::DiscoveryConfig;
use crate::codec::{ADVERT_PROTOCOL, AdvertCodec, REAR_PROTOCOL, RearCodec};
use crate::keep_alive::KeepAlive;

/// The identify agent string.
pub const AGENT: &str = concat!("fluidos/", env!("CARGO_PKG_VERSION"));
/// The identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/fluidos/id/1";
/// Providers kept per key: the largest catalog one node can see in full.
pub const MAX_PROVIDERS_PER_KEY: usize = 512;
/// Records kept in the local DHT store.
const MAX_RECORDS: usize = 8192;
/// Largest Kademlia message (provider lists of a large catalog with their addresses).
const MAX_KAD_PACKET: usize = 512 * 1024;

/// Every behaviour of a fluidos node.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) autonat: Toggle<autonat::Behaviour>,
    pub(crate) relay: Toggle<relay::client::Behaviour>,
    pub(crate) dcutr: Toggle<dcutr::Behaviour>,
    pub(crate) rear: request_response::Behaviour<RearCodec>,
    pub(crate) advert: request_response::Behaviour<AdvertCodec>,
    /// `/fluidos/view/1` (see `app`).
    pub(crate) view: request_response::Behaviour<crate::app::AppCodec>,
    /// `/fluidos/workload/1` (see `app`).
    pub(crate) workload: request_response::Behaviour<crate::app::AppCodec>,
    /// `/fluidos/members/2` and `/1` (see `gossip`).
    pub(crate) members: request_response::Behaviour<crate::gossip::MembersCodec>,
    /// Peers cut off on purpose (tests of partitions).
    pub(crate) block: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
    /// Holds connections open while they carry REAR traffic (see `keep_alive`).
    pub(crate) keep_alive: KeepAlive,
}

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A transport could not be set up.
    #[error("cannot set up the libp2p transport: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// mDNS could not bind its socket.
    #[error("cannot start mDNS: {0}")]
    Mdns(#[source] std::io::Error),
}

/// Builds the swarm: TCP (Noise, yamux), QUIC, and the relay-client transport.
pub(crate) fn build_swarm(
    kp: Keypair,
    cfg: &DiscoveryConfig,
) -> Result<Swarm<Behaviour>, BuildError> {
    fn transport<E: std::error::Error + Send + Sync + 'static>(e: E) -> BuildError {
        BuildError::Transport(Box::new(e))
    }
    let mut mdns_err = None;
    let swarm = SwarmBuilder::with_existing_identity(kp)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(transport)?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(transport)?
        .with_behaviour(|key, relay| {
            let peer = key.public().to_peer_id();
            let mdns = if cfg.mdns {
                let mc = mdns::Config {
                    query_interval: cfg.mdns_query_interval,
                    ..Default::default()
                };
                match mdns::tokio::Behaviour::new(mc, peer) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        mdns_err = Some(e);
                        None
                    }
                }
            } else {
                None
            };
            // NAT traversal costs every connection a handler of its own, polled
            // with every request: run it only where it can help. AutoNAT needs a
            // listen address that is not loopback; the relay client and DCUtR need
            // a relay to reach.
            let relays = !cfg.relays.is_empty();
            let exposed = relays || cfg.listen.iter().any(|a| !is_loopback(a));
            let rr_cfg = request_response::Config::default()
                .with_request_timeout(cfg.max_request_timeout)
                .with_max_concurrent_streams(128);
            Behaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(AGENT.into()),
                ),
                ping: ping::Behaviour::default(),
                kad: kademlia(peer, cfg),
                mdns: Toggle::from(mdns),
                autonat: Toggle::from(
                    exposed.then(|| autonat::Behaviour::new(peer, autonat::Config::default())),
                ),
                relay: Toggle::from(relays.then_some(relay)),
                dcutr: Toggle::from(relays.then(|| dcutr::Behaviour::new(peer))),
                rear: request_response::Behaviour::new(
                    [(REAR_PROTOCOL, request_response::ProtocolSupport::Full)],
                    rr_cfg.clone(),
                ),
                advert: request_response::Behaviour::new(
                    [(ADVERT_PROTOCOL, request_response::ProtocolSupport::Full)],
                    rr_cfg.clone(),
                ),
                view: crate::app::behaviour(crate::AppProtocol::View, rr_cfg.clone()),
                members: request_response::Behaviour::new(
                    [
                        (
                            crate::gossip::MEMBERS_PUSH_PROTOCOL,
                            request_response::ProtocolSupport::Full,
                        ),
                        (
                            crate::gossip::MEMBERS_PROTOCOL,
                            request_response::ProtocolSupport::Full,
                        ),
                    ],
                    rr_cfg.clone(),
                ),
                workload: crate::app::behaviour(crate::AppProtocol::Workload, rr_cfg),
                block: Default::default(),
                keep_alive: KeepAlive::new(cfg.idle_connection_timeout),
            }
        })
        .map_err(transport)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(cfg.idle_connection_timeout))
        .build();
    if let Some(e) = mdns_err {
        return Err(BuildError::Mdns(e));
    }
    Ok(swarm)
}

fn kademlia(
    peer: libp2p::PeerId,
    cfg: &DiscoveryConfig,
) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut kc = kad::Config::new(StreamProtocol::new(crate::catalog::KAD_PROTOCOL));
    kc.set_query_timeout(cfg.query_timeout)
        .set_max_packet_size(MAX_KAD_PACKET)
        // Every stored record and provider is checked by the event loop first, so a
        // peer cannot overwrite a node's advert with garbage or an older version.
        .set_record_filtering(kad::StoreInserts::FilterBoth)
        // Nodes re-publish their own adverts (signed, with a fresh expiry); Kademlia's
        // own re-publication would only spread stale copies.
        .set_publication_interval(None)
        .set_record_ttl(Some(cfg.advert_ttl))
        .set_provider_record_ttl(Some(cfg.advert_ttl))
        .set_provider_publication_interval(Some(cfg.republish_interval));
    if let Some(n) = NonZeroUsize::new(3) {
        kc.set_parallelism(n);
    }
    if let Some(k) = NonZeroUsize::new(cfg.replication_factor) {
        kc.set_replication_factor(k);
    }
    let store_cfg = kad::store::MemoryStoreConfig {
        max_records: MAX_RECORDS,
        // Above the advert limit: the event loop refuses oversized adverts with a
        // logged reason instead of the store dropping them silently.
        max_value_bytes: 8 * crate::advert::MAX_ADVERT_BYTES,
        max_providers_per_key: MAX_PROVIDERS_PER_KEY,
        max_provided_keys: 1024,
    };
    let store = kad::store::MemoryStore::with_config(peer, store_cfg);
    let mut kad = kad::Behaviour::with_config(peer, store, kc);
    // Catalog members answer queries even before an external address is confirmed:
    // on a LAN or loopback there is never one, and the catalog would stay empty.
    // A node in no catalog starts as a client (see `CatalogServer::Auto`): as a
    // server it would enter the routing table of every provider it buys from, and
    // Kademlia's automatic bootstrap would then introduce all such buyers to each
    // other (64 buyers of one provider built a mesh of ~2,400 connections). The
    // event loop switches it to server once a catalog member dials it.
    let mode = if cfg.serves_catalogs_from_start() {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    };
    kad.set_mode(Some(mode));
    kad
}

/// Whether `addr` is on a loopback interface only (`127.0.0.0/8`, `::1`).
pub(crate) fn is_loopback(addr: &libp2p::Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}
