//! A node that joins no catalog but is used as one's address serves it (issue 14),
//! and a node started before its catalog finds it soon after it comes up (issue 19).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use fluidos_contracts::SecretKey;
use fluidos_discovery::libp2p::Multiaddr;
use fluidos_discovery::{
    AdvertBody, CatalogConfig, Discovery, DiscoveryConfig, DiscoveryHandle, Role,
};

fn provider_body() -> AdvertBody {
    AdvertBody {
        roles: [Role::Provider].into(),
        ..AdvertBody::default()
    }
}

async fn addr_of(h: &DiscoveryHandle) -> Multiaddr {
    let a = h.listen_addrs().await.unwrap()[0].clone();
    a.with_p2p(h.peer_id()).unwrap()
}

async fn member(catalog_addr: Multiaddr) -> DiscoveryHandle {
    let cfg = DiscoveryConfig::default()
        .with_catalog(CatalogConfig::new(
            "sites".parse().unwrap(),
            vec![catalog_addr],
        ))
        .with_advert(provider_body())
        .with_retry(
            Duration::from_millis(50),
            Duration::from_millis(500),
            Some(1),
        );
    let (h, _rx) = Discovery::spawn(&SecretKey::generate(), cfg).await.unwrap();
    h
}

async fn wait_sees(h: &DiscoveryHandle, other: &DiscoveryHandle, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let c = h.candidates().await.unwrap();
        if c.iter().any(|c| c.node == other.node_id()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} did not list {} within {within:?}; stats {:?}",
            h.node_id().short(),
            other.node_id().short(),
            h.stats().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_node_in_no_catalog_serves_the_catalog_it_is_the_address_of() {
    let (a, _a_rx) = Discovery::spawn(&SecretKey::generate(), DiscoveryConfig::default())
        .await
        .unwrap();
    assert!(
        !a.stats().await.unwrap().catalog_server,
        "A starts as a client"
    );
    let a_addr = addr_of(&a).await;
    let b = member(a_addr.clone()).await;
    let c = member(a_addr).await;
    wait_sees(&b, &c, Duration::from_secs(5)).await;
    wait_sees(&c, &b, Duration::from_secs(5)).await;
    assert!(
        a.stats().await.unwrap().catalog_server,
        "A serves once dialled"
    );
    let s = b.stats().await.unwrap();
    let sites = s.catalogs.values().next().unwrap();
    assert!(sites.reached && sites.members >= 1, "{s:?}");
}

#[tokio::test]
async fn a_member_started_before_its_catalog_finds_it_quickly() {
    // Reserve a port for the catalog, then start the member first.
    let key = SecretKey::generate();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let catalog_addr = listen
        .clone()
        .with_p2p(fluidos_discovery::peer_id(&key.node_id()))
        .unwrap();
    let b = member(catalog_addr.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures = b
        .stats()
        .await
        .unwrap()
        .catalogs
        .values()
        .next()
        .unwrap()
        .bootstrap_failures;
    assert!(failures >= 2, "the member kept retrying: {failures}");
    let cfg = DiscoveryConfig::default()
        .with_listen([listen])
        .with_catalog(CatalogConfig::new(
            "sites".parse().unwrap(),
            vec![catalog_addr],
        ))
        .with_advert(provider_body());
    let (a, _a_rx) = Discovery::spawn(&key, cfg).await.unwrap();
    // Within the 500 ms backoff cap plus a few round trips, far below the 30 s refresh.
    let took = wait_sees(&b, &a, Duration::from_secs(2)).await;
    println!("member found its late catalog {took:?} after it came up");
    wait_sees(&a, &b, Duration::from_secs(2)).await;
}
