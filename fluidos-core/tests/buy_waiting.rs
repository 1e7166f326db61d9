//! `Node::buy_waiting` over loopback TCP (mDNS off): a buyer started before its
//! catalog waits for it instead of failing, reports what it waits for, and buys
//! once the catalog (here also the provider) comes up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fluidos_contracts::{Resources, SecretKey};
use fluidos_core::buyer::AcquisitionRequest;
use fluidos_core::{BuyError, BuyProgress, Node, NotReady, Roles};
use fluidos_discovery::CatalogName;
use libp2p::Multiaddr;

const GIB: u64 = 1 << 30;

fn catalog() -> CatalogName {
    "sites".parse().unwrap()
}

fn want() -> AcquisitionRequest {
    AcquisitionRequest {
        resources: Resources {
            cpu_millis: 500,
            memory_bytes: GIB / 2,
            ..Resources::ZERO
        },
        duration_ms: 600_000,
        ..AcquisitionRequest::default()
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn buyer(dir: &std::path::Path, catalog_addr: Multiaddr) -> Node {
    Node::builder()
        .data_dir(dir)
        .roles(Roles {
            provider: false,
            consumer: true,
            supernode: false,
        })
        .detect_gpus(false)
        .catalog(catalog(), vec![catalog_addr])
        .bind()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_started_before_its_catalog_waits_and_buys_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate();
    let port = free_port();
    let base: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let addr = base
        .clone()
        .with_p2p(fluidos_discovery::peer_id(&key.node_id()))
        .unwrap();
    let b = buyer(&dir.path().join("b"), addr).await;

    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            b.buy_waiting(want(), Some(tx), Duration::from_secs(30))
                .await
        })
    };
    // The buyer reports what it waits for before the catalog exists.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a progress report")
        .expect("the channel is open");
    assert_eq!(
        first,
        BuyProgress::Waiting(NotReady::CatalogNotReached {
            catalogs: vec!["sites".into()]
        })
    );
    assert!(first.to_string().contains("not reached yet"), "{first}");

    // The provider is the catalog: it joins `sites` on the port the buyer dials.
    let p = Node::builder()
        .data_dir(dir.path().join("p"))
        .secret_key(key)
        .listen(vec![base])
        .max_sellable(Resources {
            cpu_millis: 2000,
            memory_bytes: 4 * GIB,
            storage_bytes: GIB,
            pods: 10,
            gpus: 0,
        })
        .detect_gpus(false)
        .catalog(catalog(), vec![])
        .bind()
        .await
        .unwrap();
    let contract = tokio::time::timeout(Duration::from_secs(40), waiting)
        .await
        .expect("buy_waiting returns within its wait")
        .unwrap()
        .expect("a contract");
    assert_eq!(contract.terms().provider, p.node_id());
    assert_eq!(contract.terms().buyer, b.node_id());
    let mut later = Vec::new();
    while let Ok(p) = rx.try_recv() {
        later.push(p);
    }
    assert!(
        later
            .iter()
            .any(|p| matches!(p, BuyProgress::Candidates(_))),
        "{later:?}"
    );
    b.shutdown().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_waiting_gives_up_after_its_wait_naming_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let ghost = SecretKey::generate();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", free_port())
        .parse::<Multiaddr>()
        .unwrap()
        .with_p2p(fluidos_discovery::peer_id(&ghost.node_id()))
        .unwrap();
    let b = buyer(&dir.path().join("b"), addr).await;
    let err = b
        .buy_waiting(want(), None, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            BuyError::NoCandidates(NotReady::CatalogNotReached { catalogs })
                if catalogs == &["sites".to_string()]
        ),
        "{err:?}"
    );
    b.shutdown().await;
}
