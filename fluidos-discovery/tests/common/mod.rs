//! Helpers shared by the integration tests: fast timers, loopback nodes, bounded waits.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use fluidos_contracts::{Location, NodeId, SecretKey};
use fluidos_discovery::libp2p::Multiaddr;
use fluidos_discovery::libp2p::multiaddr::Protocol;
use fluidos_discovery::{
    AdvertBody, Candidate, CatalogConfig, CatalogName, Discovery, DiscoveryConfig, DiscoveryHandle,
    InboundRequest,
};
use tokio::sync::mpsc;

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Node {
    pub key: SecretKey,
    pub handle: DiscoveryHandle,
    pub inbound: mpsc::Receiver<InboundRequest>,
}

impl Node {
    pub fn id(&self) -> NodeId {
        self.key.node_id()
    }

    /// The node's first listen address with `/p2p/<id>`: what others use as a catalog address.
    pub async fn addr(&self) -> Multiaddr {
        let a = self.handle.listen_addrs().await.unwrap()[0].clone();
        a.with(Protocol::P2p(self.handle.peer_id()))
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Loopback only, mDNS off, short timers.
pub fn fast_config() -> DiscoveryConfig {
    DiscoveryConfig::default()
        .with_advert_ttl(Duration::from_secs(3), Duration::from_millis(1000))
        .with_refresh_interval(Duration::from_millis(300))
}

pub fn catalog(name: &str, bootstrap: Vec<Multiaddr>) -> CatalogConfig {
    CatalogConfig::new(name.parse::<CatalogName>().unwrap(), bootstrap)
}

pub fn body_in(country: &str) -> AdvertBody {
    AdvertBody {
        location: Some(Location {
            country: country.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn spawn(cfg: DiscoveryConfig) -> Node {
    spawn_with_key(SecretKey::generate(), cfg).await
}

pub async fn spawn_with_key(key: SecretKey, cfg: DiscoveryConfig) -> Node {
    let (handle, inbound) = Discovery::spawn(&key, cfg).await.unwrap();
    Node {
        key,
        handle,
        inbound,
    }
}

pub fn ids(c: &[Candidate]) -> Vec<NodeId> {
    c.iter().map(|c| c.node).collect()
}

/// Polls `node`'s candidates until `done` holds, for at most [`WAIT`]; `check` runs on
/// every snapshot (for "never appears" assertions).
pub async fn wait_for(
    handle: &DiscoveryHandle,
    what: &str,
    mut check: impl FnMut(&[Candidate]),
    mut done: impl FnMut(&[Candidate]) -> bool,
) -> Vec<Candidate> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = handle.candidates().await.unwrap();
        check(&c);
        if done(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; candidates: {:?}",
            ids(&c)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `handle` sees exactly the nodes in `want` (and no others).
pub async fn wait_sees(handle: &DiscoveryHandle, want: &[NodeId], what: &str) -> Vec<Candidate> {
    let mut want = want.to_vec();
    want.sort();
    wait_for(handle, what, |_| {}, |c| ids(c) == want).await
}
