//! Configuration of a discovery node, with safe defaults.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::advert::AdvertBody;
use crate::catalog::CatalogConfig;
use crate::policy::{IncomingPolicy, OutgoingPolicy};

/// How a discovery node runs. `DiscoveryConfig::default()` listens on loopback TCP
/// only, joins no catalog and keeps mDNS off; the daemon widens it from its own config.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// Addresses to listen on (TCP `/ip4/…/tcp/…`, QUIC `/ip4/…/udp/…/quic-v1`).
    /// Default: `/ip4/127.0.0.1/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Catalogs to join.
    pub catalogs: Vec<CatalogConfig>,
    /// mDNS on every interface of the network namespace (announces and listens).
    /// Default: off.
    pub mdns: bool,
    /// Peers to dial directly and ask for their advert.
    pub manual_peers: Vec<Multiaddr>,
    /// Relays (each with `/p2p/<id>`) to also listen through, for nodes behind NAT.
    pub relays: Vec<Multiaddr>,
    /// Addresses known to reach this node from outside (port forwards); put in adverts.
    pub external_addresses: Vec<Multiaddr>,
    /// What to announce until [`crate::DiscoveryHandle::set_advert`] says otherwise.
    pub advert: AdvertBody,
    /// Validity of each advert. Default 60 s.
    pub advert_ttl: Duration,
    /// How often adverts are re-signed and re-published; must be below `advert_ttl`.
    /// Default 30 s.
    pub republish_interval: Duration,
    /// How often catalogs are searched and direct peers asked again. Default 30 s.
    pub refresh_interval: Duration,
    /// A candidate source not confirmed for this long expires, even if its advert has
    /// not. Default 5 min.
    pub candidate_expiry: Duration,
    /// Timeout of each Kademlia query. Default 10 s.
    pub query_timeout: Duration,
    /// Catalog lookups (member lists and adverts) run at most this many at a time.
    /// Default 4.
    pub max_concurrent_fetches: usize,
    /// Which discovered nodes may become candidates.
    pub incoming: IncomingPolicy,
    /// Where this node announces itself.
    pub outgoing: OutgoingPolicy,
    /// Capacity of the queue of inbound REAR requests to the embedder. Default 64.
    pub inbound_queue: usize,
    /// Capacity of the command queue from handles. Default 64.
    pub command_queue: usize,
    /// Inbound REAR requests in flight per peer before `rate_limited`. Default 8.
    pub max_inbound_per_peer: usize,
    /// Upper bound on any REAR request's lifetime on the wire. Default 60 s.
    pub max_request_timeout: Duration,
    /// Connections without traffic close after this long. Default 60 s.
    pub idle_connection_timeout: Duration,
    /// How often mDNS queries the LAN. Default 20 s.
    pub mdns_query_interval: Duration,
    /// Whether this node answers Kademlia queries, i.e. serves catalogs to others.
    /// Default [`CatalogServer::Auto`].
    pub catalog_server: CatalogServer,
    /// First delay before a failed catalog bootstrap dial, an unreached catalog or
    /// an unreachable manual peer is tried again; it doubles (with jitter) on every
    /// failure up to `retry_max`. Default 50 ms.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 1 s.
    pub retry_max: Duration,
    /// For this long after a catalog address or manual peer was configured, a failed
    /// dial is retried every `retry_hot_interval` instead of with the backoff, so a
    /// node started together with its catalog reaches it a few milliseconds after
    /// it listens. Default 2 s; zero turns it off.
    pub retry_hot_window: Duration,
    /// Retry delay inside the hot window (jittered into its upper half). Default 10 ms.
    pub retry_hot_interval: Duration,
    /// Seed of the retry jitter; `None` draws one from the node id and the clock.
    /// Tests set it to make retries repeatable.
    pub jitter_seed: Option<u64>,
    /// Kademlia's replication factor: how many of the nodes closest to a key
    /// store each advert and membership record. Default 20 (Kademlia's `K`);
    /// tests lower it to give a few nodes the shape of a large catalog, where
    /// most members are not among those closest to a new member's keys.
    pub replication_factor: usize,
    /// Whether a node joins a catalog by pulling its members from the catalog
    /// address it reached (searching the shards only if that brings nobody), and
    /// pulls from members shortly after (at 0.25 s, then at doubling intervals to
    /// 8 s; `docs/PROTOCOL.md` 4.4.1) rather than only at each refresh. Off, it
    /// searches the shards at start and on reaching the catalog instead. Default
    /// on; tests turn it off to see what the push alone carries.
    pub catch_up: bool,
}

/// When a node serves catalogs (runs Kademlia in server mode).
///
/// A Kademlia client can look up and publish but answers nobody; a server stores
/// and answers membership and advert lookups for every fluidos catalog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogServer {
    /// A server when it joins a catalog, or from the moment a catalog member (a peer
    /// whose identify lists `/fluidos/kad/1`) dials it, which is what using it as a
    /// catalog address does. A node that only dials out (a buyer in no catalog)
    /// stays a client, so buyers are never introduced to each other.
    #[default]
    Auto,
    /// Always a server, from the start.
    #[serde(rename = "true")]
    Always,
    /// Never a server: catalogs that name this node as their address will not work.
    #[serde(rename = "false")]
    Never,
}

impl std::str::FromStr for CatalogServer {
    type Err = CatalogServerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "true" => Ok(Self::Always),
            "false" => Ok(Self::Never),
            other => Err(CatalogServerError(other.chars().take(40).collect())),
        }
    }
}

impl std::fmt::Display for CatalogServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Always => "true",
            Self::Never => "false",
        })
    }
}

/// A string is not `auto`, `true` or `false`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid catalog_server {0:?}: use auto, true or false")]
pub struct CatalogServerError(String);

/// Why a [`DiscoveryConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No listen address.
    #[error("no listen address: give at least one")]
    NoListenAddress,
    /// The advert validity is zero or above 24 h.
    #[error("advert_ttl must be between 1 ms and 24 h")]
    AdvertTtl,
    /// The re-publish interval is zero or not below the advert validity.
    #[error("republish_interval must be non-zero and below advert_ttl")]
    RepublishInterval,
    /// A duration that must be positive is zero.
    #[error("{0} must be non-zero")]
    ZeroDuration(&'static str),
    /// A count that must be positive is zero.
    #[error("{0} must be at least 1")]
    ZeroCount(&'static str),
    /// A catalog bootstrap address lacks its peer id.
    #[error("catalog {catalog} bootstrap address {addr} must end in /p2p/<peer id>")]
    BootstrapWithoutPeer {
        /// The catalog.
        catalog: crate::CatalogName,
        /// The address.
        addr: Multiaddr,
    },
    /// A relay address lacks its peer id.
    #[error("relay address {0} must end in /p2p/<peer id>")]
    RelayWithoutPeer(Multiaddr),
    /// `retry_max` is below `retry_initial`.
    #[error("retry_max must be at least retry_initial")]
    RetryRange,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            listen: vec![loopback_tcp()],
            catalogs: Vec::new(),
            mdns: false,
            manual_peers: Vec::new(),
            relays: Vec::new(),
            external_addresses: Vec::new(),
            advert: AdvertBody::default(),
            advert_ttl: Duration::from_secs(60),
            republish_interval: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(30),
            candidate_expiry: Duration::from_secs(300),
            query_timeout: Duration::from_secs(10),
            max_concurrent_fetches: 4,
            incoming: IncomingPolicy::default(),
            outgoing: OutgoingPolicy::default(),
            inbound_queue: 64,
            command_queue: 64,
            max_inbound_per_peer: 8,
            max_request_timeout: Duration::from_secs(60),
            idle_connection_timeout: Duration::from_secs(60),
            mdns_query_interval: Duration::from_secs(20),
            catalog_server: CatalogServer::Auto,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(1),
            retry_hot_window: Duration::from_secs(2),
            retry_hot_interval: Duration::from_millis(10),
            jitter_seed: None,
            replication_factor: 20,
            catch_up: true,
        }
    }
}

fn loopback_tcp() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}

impl DiscoveryConfig {
    /// Replaces the listen addresses.
    pub fn with_listen(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self
    }

    /// Joins a catalog.
    pub fn with_catalog(mut self, catalog: CatalogConfig) -> Self {
        self.catalogs.push(catalog);
        self
    }

    /// Switches mDNS on or off.
    pub fn with_mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Adds a manual peer.
    pub fn with_manual_peer(mut self, addr: Multiaddr) -> Self {
        self.manual_peers.push(addr);
        self
    }

    /// Sets the initial advert body.
    pub fn with_advert(mut self, body: AdvertBody) -> Self {
        self.advert = body;
        self
    }

    /// Sets the advert validity and re-publish interval.
    pub fn with_advert_ttl(mut self, ttl: Duration, republish: Duration) -> Self {
        self.advert_ttl = ttl;
        self.republish_interval = republish;
        self
    }

    /// Sets how often catalogs and direct peers are asked again.
    pub fn with_refresh_interval(mut self, every: Duration) -> Self {
        self.refresh_interval = every;
        self
    }

    /// Sets the incoming policy.
    pub fn with_incoming(mut self, policy: IncomingPolicy) -> Self {
        self.incoming = policy;
        self
    }

    /// Sets the outgoing policy.
    pub fn with_outgoing(mut self, policy: OutgoingPolicy) -> Self {
        self.outgoing = policy;
        self
    }

    /// Sets when this node serves catalogs.
    pub fn with_catalog_server(mut self, mode: CatalogServer) -> Self {
        self.catalog_server = mode;
        self
    }

    /// Sets the retry backoff range and, for repeatable tests, the jitter seed.
    pub fn with_retry(mut self, initial: Duration, max: Duration, seed: Option<u64>) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self.jitter_seed = seed;
        self
    }

    /// Sets the hot retry window after an address is configured and the retry
    /// delay inside it (a zero window turns it off).
    pub fn with_hot_retry(mut self, window: Duration, interval: Duration) -> Self {
        self.retry_hot_window = window;
        self.retry_hot_interval = interval;
        self
    }

    /// The retry timing built from this configuration.
    pub(crate) fn retry_schedule(&self) -> crate::backoff::Schedule {
        crate::backoff::Schedule {
            hot_window: self.retry_hot_window,
            hot_interval: self.retry_hot_interval,
            initial: self.retry_initial,
            max: self.retry_max,
        }
    }

    /// Whether Kademlia starts in server mode.
    pub(crate) fn serves_catalogs_from_start(&self) -> bool {
        match self.catalog_server {
            CatalogServer::Always => true,
            CatalogServer::Never => false,
            CatalogServer::Auto => !self.catalogs.is_empty(),
        }
    }

    /// Checks the values that would make the node misbehave.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| d.as_millis();
        if self.listen.is_empty() {
            return Err(ConfigError::NoListenAddress);
        }
        if ms(self.advert_ttl) == 0
            || self.advert_ttl.as_millis() > u128::from(crate::advert::MAX_ADVERT_TTL_MS)
        {
            return Err(ConfigError::AdvertTtl);
        }
        if self.republish_interval >= self.advert_ttl || ms(self.republish_interval) == 0 {
            return Err(ConfigError::RepublishInterval);
        }
        if self.retry_max < self.retry_initial {
            return Err(ConfigError::RetryRange);
        }
        if !self.retry_hot_window.is_zero() && ms(self.retry_hot_interval) == 0 {
            return Err(ConfigError::ZeroDuration("retry_hot_interval"));
        }
        for (name, d) in [
            ("refresh_interval", self.refresh_interval),
            ("candidate_expiry", self.candidate_expiry),
            ("query_timeout", self.query_timeout),
            ("max_request_timeout", self.max_request_timeout),
            ("mdns_query_interval", self.mdns_query_interval),
            ("retry_initial", self.retry_initial),
        ] {
            if ms(d) == 0 {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        for (name, n) in [
            ("max_concurrent_fetches", self.max_concurrent_fetches),
            ("inbound_queue", self.inbound_queue),
            ("command_queue", self.command_queue),
            ("max_inbound_per_peer", self.max_inbound_per_peer),
            ("replication_factor", self.replication_factor),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroCount(name));
            }
        }
        for c in &self.catalogs {
            for b in &c.bootstrap {
                if crate::catalog::split_peer(b).is_none() {
                    return Err(ConfigError::BootstrapWithoutPeer {
                        catalog: c.name.clone(),
                        addr: b.clone(),
                    });
                }
            }
        }
        for r in &self.relays {
            if crate::catalog::split_peer(r).is_none() {
                return Err(ConfigError::RelayWithoutPeer(r.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_safe() {
        let c = DiscoveryConfig::default();
        c.validate().unwrap();
        assert!(!c.mdns);
        assert_eq!(c.listen[0].to_string(), "/ip4/127.0.0.1/tcp/0");
    }

    #[test]
    fn bad_values_are_refused() {
        let c = DiscoveryConfig::default()
            .with_advert_ttl(Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(c.validate(), Err(ConfigError::RepublishInterval));
        let c = DiscoveryConfig::default().with_catalog(CatalogConfig::new(
            "eu".parse().unwrap(),
            vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        ));
        let err = c.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::BootstrapWithoutPeer { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/p2p/"));
        let c = DiscoveryConfig::default().with_listen([]);
        assert_eq!(c.validate(), Err(ConfigError::NoListenAddress));
        let c = DiscoveryConfig::default().with_retry(
            Duration::from_secs(2),
            Duration::from_secs(1),
            None,
        );
        assert_eq!(c.validate(), Err(ConfigError::RetryRange));
        let c = DiscoveryConfig::default().with_retry(Duration::ZERO, Duration::ZERO, None);
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("retry_initial"))
        );
        let c = DiscoveryConfig::default()
            .with_hot_retry(Duration::from_secs(1), Duration::from_micros(10));
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("retry_hot_interval"))
        );
        let c = DiscoveryConfig::default().with_hot_retry(Duration::ZERO, Duration::ZERO);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn catalog_server_parses_the_three_documented_words_only() {
        assert_eq!("auto".parse(), Ok(CatalogServer::Auto));
        assert_eq!("true".parse(), Ok(CatalogServer::Always));
        assert_eq!("false".parse(), Ok(CatalogServer::Never));
        assert!("yes".parse::<CatalogServer>().is_err());
        for m in [
            CatalogServer::Auto,
            CatalogServer::Always,
            CatalogServer::Never,
        ] {
            assert_eq!(m.to_string().parse(), Ok(m));
        }
    }
}
