//! Connections that carry REAR traffic are held open between requests (no idle timer
//! per request) and still close once the traffic stops.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use fluidos_contracts::Selector;
use fluidos_contracts::rear::{Request, Response};
use fluidos_discovery::libp2p::multiaddr::Protocol;
use fluidos_discovery::{DiscoveryConfig, DiscoveryHandle, DiscoveryStats};

const IDLE: Duration = Duration::from_millis(1500);

fn config() -> DiscoveryConfig {
    DiscoveryConfig {
        idle_connection_timeout: IDLE,
        // No periodic advert requests to the manual peer: only REAR traffic may keep
        // the connection open in this test.
        ..fast_config().with_refresh_interval(Duration::from_secs(3600))
    }
}

fn list() -> Request {
    Request::ListFlavors {
        selector: Selector::default(),
    }
}

/// Polls both nodes' stats until `done` holds for both, for at most [`WAIT`].
async fn wait_stats(
    a: &DiscoveryHandle,
    b: &DiscoveryHandle,
    what: &str,
    done: impl Fn(&DiscoveryStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (sa, sb) = (a.stats().await.unwrap(), b.stats().await.unwrap());
        if done(&sa) && done(&sb) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {sa:?} / {sb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rear_connections_stay_open_while_used_and_close_after() {
    init_tracing();
    let Node {
        key: pkey,
        handle: provider,
        mut inbound,
    } = spawn(config()).await;
    tokio::spawn(async move {
        while let Some(req) = inbound.recv().await {
            let _ = req.reply.send(Response::Flavors { flavors: vec![] });
        }
    });
    let buyer = spawn(config()).await;
    let node = pkey.node_id();
    let provider_addr = provider.listen_addrs().await.unwrap()[0]
        .clone()
        .with(Protocol::P2p(provider.peer_id()));
    buyer.handle.add_peer(provider_addr).await.unwrap();
    wait_for(
        &buyer.handle,
        "the provider",
        |_| {},
        |c| ids(c) == vec![node],
    )
    .await;

    // A connection that only fetched an advert is not held: it closes on the plain
    // idle timeout.
    wait_stats(
        &buyer.handle,
        &provider,
        "the advert connection to close",
        |s| s.connections == 0,
    )
    .await;
    assert_eq!(buyer.handle.stats().await.unwrap().peers_kept_alive, 0);

    // REAR traffic at intervals below the timeout: one connection, held open on both
    // sides, never re-dialled.
    buyer
        .handle
        .request(node, list(), Duration::from_secs(10))
        .await
        .unwrap();
    let opened = buyer.handle.stats().await.unwrap().connections_established;
    for _ in 0..10 {
        tokio::time::sleep(IDLE / 5).await;
        let answer = buyer
            .handle
            .request(node, list(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(answer, Response::Flavors { flavors: vec![] });
        for (who, h) in [("buyer", &buyer.handle), ("provider", &provider)] {
            let s = h.stats().await.unwrap();
            assert!(s.connections >= 1, "{who}: {s:?}");
            assert_eq!(s.peers_kept_alive, 1, "{who} holds the peer: {s:?}");
        }
        let s = buyer.handle.stats().await.unwrap();
        assert_eq!(s.connections_established, opened, "no re-dial: {s:?}");
    }

    // Traffic stops: released by the sweep, then closed by libp2p's idle timeout.
    wait_stats(
        &buyer.handle,
        &provider,
        "the REAR connection to close",
        |s| s.connections == 0 && s.peers_kept_alive == 0,
    )
    .await;

    // And the next request simply dials again.
    buyer
        .handle
        .request(node, list(), Duration::from_secs(10))
        .await
        .unwrap();
    let s = buyer.handle.stats().await.unwrap();
    assert!(s.connections_established > opened, "{s:?}");
    assert_eq!(s.peers_kept_alive, 1);
}
