//! Catalog discovery over loopback TCP with mDNS off: nodes share one catalog address only.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use fluidos_contracts::signed::signing_input;
use fluidos_contracts::{SecretKey, Signed, Timestamp};
use fluidos_discovery::advert::{ADVERT_DOMAIN, MAX_ADVERT_BYTES};
use fluidos_discovery::libp2p::{Multiaddr, PeerId};
use fluidos_discovery::{Advert, AdvertBody, CatalogName, IncomingPolicy, OutgoingPolicy, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_find_each_other_late_joiners_too_and_stopped_nodes_disappear() {
    init_tracing();
    let root = spawn(fast_config().with_catalog(catalog("lab", vec![]))).await;
    let root_addr = root.addr().await;
    let b = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr.clone()]))).await;
    let c = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr.clone()]))).await;
    let all = [root.id(), b.id(), c.id()];
    for n in [&root, &b, &c] {
        let others: Vec<_> = all.iter().copied().filter(|i| *i != n.id()).collect();
        let seen = wait_sees(&n.handle, &others, "the first three to see each other").await;
        for cand in &seen {
            assert!(
                cand.sources
                    .contains(&Source::Catalog("lab".parse().unwrap()))
            );
            assert!(!cand.addresses.is_empty(), "adverts carry addresses");
        }
    }

    // A late joiner that knows only `b` is found by everyone, and finds everyone.
    let late = spawn(fast_config().with_catalog(catalog("lab", vec![b.addr().await]))).await;
    let all = [root.id(), b.id(), c.id(), late.id()];
    for n in [&root, &b, &c, &late] {
        let others: Vec<_> = all.iter().copied().filter(|i| *i != n.id()).collect();
        wait_sees(&n.handle, &others, "the late joiner to be found").await;
    }

    // `c` crashes (no withdrawal): it disappears once its 3 s advert expires.
    c.handle.danger_kill().await.unwrap();
    wait_sees(
        &root.handle,
        &[b.id(), late.id()],
        "the crashed node to expire",
    )
    .await;
    wait_sees(
        &b.handle,
        &[root.id(), late.id()],
        "the crashed node to expire",
    )
    .await;

    // `late` shuts down cleanly: its withdrawal removes it.
    late.handle.shutdown().await.unwrap();
    wait_sees(&root.handle, &[b.id()], "the withdrawn node to go").await;
    wait_sees(&b.handle, &[root.id()], "the withdrawn node to go").await;
    assert!(
        late.handle.candidates().await.is_err(),
        "a stopped node refuses commands"
    );
}

fn signed_bytes(advert: &Advert, signer: &SecretKey) -> Vec<u8> {
    let payload = fluidos_contracts::canonical::to_vec(advert).unwrap();
    let sig = signer.sign(&signing_input(ADVERT_DOMAIN, &payload));
    fluidos_contracts::canonical::to_vec(&Signed::<Advert>::from_parts(payload, sig)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_adverts_are_rejected_and_discovery_carries_on() {
    init_tracing();
    let lab: CatalogName = "lab".parse().unwrap();
    let root = spawn(fast_config().with_catalog(catalog("lab", vec![]))).await;
    let root_addr = root.addr().await;
    let honest = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr.clone()]))).await;

    // Rogues join the catalog but announce nothing valid; each publishes one bad advert.
    let silent = OutgoingPolicy {
        announce_in: Some(BTreeSet::new()),
        direct_adverts: false,
    };
    let now = Timestamp::now();
    let mut rogues = Vec::new();
    for kind in ["forged", "expired", "oversized", "malformed"] {
        let key = SecretKey::generate();
        let mut advert = Advert::new(
            key.node_id(),
            Some("lab".into()),
            vec![],
            AdvertBody::default(),
            now,
            now.plus_ms(60_000),
            1,
        );
        let bytes = match kind {
            "forged" => signed_bytes(&advert, &SecretKey::generate()),
            "expired" => {
                advert.issued_at = Timestamp(now.0 - 600_000);
                advert.expires_at = Timestamp(now.0 - 300_000);
                signed_bytes(&advert, &key)
            }
            "oversized" => {
                advert
                    .labels
                    .insert("pad".into(), "x".repeat(MAX_ADVERT_BYTES));
                signed_bytes(&advert, &key)
            }
            _ => vec![0xa2, 0x67, 0xff, 0x00, 0x13, 0x37],
        };
        let cfg = fast_config()
            .with_catalog(catalog("lab", vec![root_addr.clone()]))
            .with_outgoing(silent.clone());
        let rogue = spawn_with_key(key, cfg).await;
        rogue
            .handle
            .danger_publish_raw_advert(lab.clone(), bytes)
            .await
            .unwrap();
        rogues.push(rogue);
    }
    let rogue_ids: Vec<_> = rogues.iter().map(|r| r.id()).collect();

    let never_rogues = |c: &[fluidos_discovery::Candidate]| {
        for cand in c {
            assert!(
                !rogue_ids.contains(&cand.node),
                "a bad advert became a candidate"
            );
        }
    };
    wait_for(&root.handle, "the honest node", never_rogues, |c| {
        ids(c) == vec![honest.id()]
    })
    .await;
    // Every kind of bad advert was seen and refused with its own reason.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = root.handle.stats().await.unwrap();
        let r = &stats.adverts_rejected;
        if ["bad_signature", "expired", "too_large", "malformed"]
            .iter()
            .all(|k| r.contains_key(*k))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rejections seen: {r:?}"
        );
        root.handle.refresh().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Discovery carries on: a node joining now is still found.
    let late = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr]))).await;
    wait_for(&root.handle, "a later honest node", never_rogues, |c| {
        ids(c).contains(&late.id()) && ids(c).contains(&honest.id())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_listed_and_out_of_country_nodes_never_appear() {
    init_tracing();
    let root = spawn(
        fast_config()
            .with_catalog(catalog("lab", vec![]))
            .with_advert(body_in("IT")),
    )
    .await;
    let root_addr = root.addr().await;
    let join = |country: &str| {
        fast_config()
            .with_catalog(catalog("lab", vec![root_addr.clone()]))
            .with_advert(body_in(country))
    };
    let italian = spawn(join("IT")).await;
    let german = spawn(join("DE")).await;
    let denied_key = SecretKey::generate();
    let policy = IncomingPolicy {
        countries: Some(["it".to_string()].into()),
        deny: [denied_key.node_id()].into(),
        ..Default::default()
    };
    let picky = spawn(join("IT").with_incoming(policy)).await;
    let denied = spawn_with_key(denied_key, join("IT")).await;

    // Everyone is discoverable: an unfiltered node sees all four.
    let mut all = vec![italian.id(), german.id(), picky.id(), denied.id()];
    all.sort();
    wait_sees(&root.handle, &all, "the unfiltered node to see everyone").await;

    let forbidden = [german.id(), denied.id()];
    let never = |c: &[fluidos_discovery::Candidate]| {
        for cand in c {
            assert!(
                !forbidden.contains(&cand.node),
                "policy let {:?} through",
                cand.node
            );
        }
    };
    let mut want = vec![root.id(), italian.id()];
    want.sort();
    wait_for(&picky.handle, "the allowed nodes", never, |c| {
        ids(c) == want
    })
    .await;
    // A few more refresh rounds: they still never appear.
    for _ in 0..5 {
        picky.handle.refresh().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        never(&picky.handle.candidates().await.unwrap());
    }
    assert!(picky.handle.stats().await.unwrap().refused_by_policy > 0);

    // Deny-listing a current candidate removes it at once.
    picky
        .handle
        .set_incoming_policy(IncomingPolicy {
            deny: [italian.id()].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let now = picky.handle.candidates().await.unwrap();
    assert!(!ids(&now).contains(&italian.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_catalog_address_does_not_break_discovery() {
    init_tracing();
    // A loopback port with nothing listening, under a made-up peer id.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/{dead_port}/p2p/{}", PeerId::random())
        .parse()
        .unwrap();
    let root = spawn(fast_config().with_catalog(catalog("lab", vec![]))).await;
    let boot = vec![dead.clone(), root.addr().await];
    let b = spawn(fast_config().with_catalog(catalog("lab", boot.clone()))).await;
    let c = spawn(fast_config().with_catalog(catalog("lab", boot))).await;
    let mut bc = vec![root.id(), c.id()];
    bc.sort();
    wait_sees(&b.handle, &bc, "discovery despite a dead catalog address").await;
    let mut cb = vec![root.id(), b.id()];
    cb.sort();
    wait_sees(&c.handle, &cb, "discovery despite a dead catalog address").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_catalogs_and_the_outgoing_policy() {
    init_tracing();
    let root_a = spawn(fast_config().with_catalog(catalog("a", vec![]))).await;
    let root_b = spawn(fast_config().with_catalog(catalog("b", vec![]))).await;
    let (a, b) = (root_a.addr().await, root_b.addr().await);
    // `both` is a member of a and b; `shy` searches both but announces only in a.
    let both = spawn(
        fast_config()
            .with_catalog(catalog("a", vec![a.clone()]))
            .with_catalog(catalog("b", vec![b.clone()])),
    )
    .await;
    let shy_out = OutgoingPolicy {
        announce_in: Some(["a".parse().unwrap()].into()),
        ..Default::default()
    };
    let shy = spawn(
        fast_config()
            .with_catalog(catalog("a", vec![a.clone()]))
            .with_catalog(catalog("b", vec![b.clone()]))
            .with_outgoing(shy_out),
    )
    .await;
    let seen = wait_for(
        &shy.handle,
        "both catalogs",
        |_| {},
        |c| ids(c).contains(&both.id()) && ids(c).contains(&root_b.id()),
    )
    .await;
    let both_cand = seen.iter().find(|c| c.node == both.id()).unwrap();
    let want: BTreeSet<Source> = [
        Source::Catalog("a".parse().unwrap()),
        Source::Catalog("b".parse().unwrap()),
    ]
    .into();
    // Found through the catalogs only (no mDNS, no manual peer), with its own advert.
    assert!(
        !both_cand.sources.is_empty() && both_cand.sources.is_subset(&want),
        "sources {:?}",
        both_cand.sources
    );
    assert_eq!(both_cand.advert.node, both.id());
    wait_for(
        &shy.handle,
        "both sources",
        |_| {},
        |c| c.iter().any(|x| x.node == both.id() && x.sources == want),
    )
    .await;
    // root_a sees shy (it announces in a); root_b, whose only catalog is b, never does.
    wait_for(
        &root_a.handle,
        "shy in a",
        |_| {},
        |c| ids(c).contains(&shy.id()),
    )
    .await;
    wait_for(
        &root_b.handle,
        "both in b",
        |c| assert!(!ids(c).contains(&shy.id())),
        |c| ids(c).contains(&both.id()),
    )
    .await;
    for _ in 0..5 {
        root_b.handle.refresh().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!ids(&root_b.handle.candidates().await.unwrap()).contains(&shy.id()));
    }
}
