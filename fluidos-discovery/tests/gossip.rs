//! `/fluidos/members/1` and `/2` over loopback: from a raw libp2p client, a
//! catalog member answers with the signed catalog adverts it holds, nothing for
//! a catalog it is not in, a malformed query fails that one stream only, and
//! news pushed on `/2` is taken; between nodes, a new member reaches members
//! outside the 20 closest to its keys through pushed news alone.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

use fluidos_contracts::{SecretKey, Signed, Timestamp};
use fluidos_discovery::advert::{Expected, verify_advert};
use fluidos_discovery::catalog::{advert_key, catalog_key, shard_of};
use fluidos_discovery::gossip::{
    MEMBERS_PROTOCOL, MEMBERS_PUSH_PROTOCOL, MembersCodec, MembersQuery, MembersReply, known_entry,
};
use fluidos_discovery::libp2p::StreamProtocol;
use fluidos_discovery::libp2p::kad::{KBucketKey, RecordKey};
use fluidos_discovery::libp2p::request_response::{self, ProtocolSupport};
use fluidos_discovery::libp2p::swarm::SwarmEvent;
use fluidos_discovery::libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, tcp, yamux};
use fluidos_discovery::{Advert, AdvertBody, CatalogName, DiscoveryConfig};
use futures::StreamExt;

/// Sends `query` to `peer` on `/1` and returns its reply, or the failure as text.
async fn ask(peer: PeerId, addr: Multiaddr, query: MembersQuery) -> Result<MembersReply, String> {
    ask_on(MEMBERS_PROTOCOL, peer, addr, query).await
}

/// Sends `query` to `peer` on `protocol` and returns its reply, or the failure as text.
/// The members of `lab` that `peer` answers a `/2` pull naming `known` with, each
/// verified.
async fn lab_members_given(
    peer: PeerId,
    addr: Multiaddr,
    known: Vec<[u8; fluidos_discovery::gossip::KNOWN_PREFIX_BYTES]>,
) -> Vec<fluidos_contracts::NodeId> {
    let query = MembersQuery {
        catalog: "lab".into(),
        known,
        ..Default::default()
    };
    let reply = ask_on(MEMBERS_PUSH_PROTOCOL, peer, addr, query)
        .await
        .unwrap();
    let expected = Expected {
        node: None,
        catalog: Some("lab"),
    };
    reply
        .members
        .iter()
        .map(|m| verify_advert(m, &expected, Timestamp::now()).unwrap().node)
        .collect()
}

async fn ask_on(
    protocol: StreamProtocol,
    peer: PeerId,
    addr: Multiaddr,
    query: MembersQuery,
) -> Result<MembersReply, String> {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                MembersCodec,
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    swarm
        .behaviour_mut()
        .send_request_with_addresses(&peer, query, vec![addr]);
    tokio::time::timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => return Err(error.to_string()),
                _ => {}
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_hands_out_the_signed_adverts_of_the_members_it_knows() {
    init_tracing();
    let root = spawn(fast_config().with_catalog(catalog("lab", vec![]))).await;
    let root_addr = root.addr().await;
    let b = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr.clone()]))).await;
    let c = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr.clone()]))).await;
    wait_sees(
        &root.handle,
        &[b.id(), c.id()],
        "the root to list both members",
    )
    .await;
    let peer = fluidos_discovery::peer_id(&root.id());

    let reply = ask(
        peer,
        root_addr.clone(),
        MembersQuery {
            catalog: "lab".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let expected = Expected {
        node: None,
        catalog: Some("lab"),
    };
    let held: Vec<_> = reply
        .members
        .iter()
        .map(|b| verify_advert(b, &expected, Timestamp::now()).unwrap())
        .collect();
    let mut nodes: Vec<_> = held.iter().map(|a| a.node).collect();
    nodes.sort();
    let mut want = vec![root.id(), b.id(), c.id()];
    want.sort();
    assert_eq!(
        nodes, want,
        "every member's own signed catalog advert, the responder's too"
    );
    assert_eq!(
        verify_advert(&reply.members[0], &expected, Timestamp::now())
            .unwrap()
            .node,
        root.id(),
        "the responder's first"
    );

    // With a digest of what the asker knows (`/2`), only what it lacks comes back.
    let known = held
        .iter()
        .filter(|a| a.node != c.id())
        .map(|a| known_entry(&a.node, a.seq))
        .collect();
    let lacking = lab_members_given(peer, root_addr.clone(), known).await;
    assert_eq!(lacking, vec![c.id()], "only the member the asker lacks");
    // An older version of b named in the digest: b's current advert comes back.
    let b_seq = held.iter().find(|a| a.node == b.id()).unwrap().seq;
    let known = vec![
        known_entry(&root.id(), held[0].seq),
        known_entry(&b.id(), b_seq - 1),
    ];
    let back = lab_members_given(peer, root_addr.clone(), known).await;
    assert!(back.contains(&b.id()), "{back:?}");

    // Not a member of that catalog: nothing.
    let reply = ask(
        peer,
        root_addr.clone(),
        MembersQuery {
            catalog: "elsewhere".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(reply.members.is_empty());

    // An oversized query fails its own stream; the node answers the next one.
    let err = ask(
        peer,
        root_addr.clone(),
        MembersQuery {
            catalog: "x".repeat(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());
    let reply = ask(
        peer,
        root_addr,
        MembersQuery {
            catalog: "lab".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(reply.members.len(), 3);
}

/// A signed catalog advert of `key` in `catalog`, valid for a minute.
fn catalog_advert(key: &SecretKey, catalog: &str) -> Vec<u8> {
    let now = Timestamp::now();
    Advert::new(
        key.node_id(),
        Some(catalog.into()),
        vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
        AdvertBody::default(),
        now,
        now.plus_ms(60_000),
        now.0,
    )
    .sign(key)
    .unwrap()
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_takes_news_pushed_on_members_2_and_still_answers() {
    init_tracing();
    let root = spawn(fast_config().with_catalog(catalog("lab", vec![]))).await;
    let root_addr = root.addr().await;
    let b = spawn(fast_config().with_catalog(catalog("lab", vec![root_addr.clone()]))).await;
    wait_sees(&root.handle, &[b.id()], "the root to list b").await;
    let peer = fluidos_discovery::peer_id(&root.id());
    // b's first pull carried b's own advert as news already.
    let taken_before = root.handle.stats().await.unwrap().news_taken;

    // News of a node nobody else knows: only the push can explain it.
    let stranger = SecretKey::generate();
    let other = SecretKey::generate();
    let reply = ask_on(
        MEMBERS_PUSH_PROTOCOL,
        peer,
        root_addr.clone(),
        MembersQuery {
            catalog: "lab".into(),
            // An advert bound to another catalog is refused, the rest taken.
            news: vec![
                catalog_advert(&stranger, "lab"),
                catalog_advert(&other, "elsewhere"),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!reply.members.is_empty(), "the pull half still answers");
    let c = wait_for(
        &root.handle,
        "the root to list the pushed member",
        |_| {},
        |c| ids(c).contains(&stranger.node_id()),
    )
    .await;
    assert!(
        !ids(&c).contains(&other.node_id()),
        "wrong catalog: refused"
    );
    let stats = root.handle.stats().await.unwrap();
    assert_eq!(stats.news_taken, taken_before + 1);
    assert_eq!(
        stats.adverts_rejected.get("wrong_catalog"),
        Some(&1),
        "{stats:?}"
    );

    // News for a catalog the node is not in is ignored.
    let outsider = SecretKey::generate();
    ask_on(
        MEMBERS_PUSH_PROTOCOL,
        peer,
        root_addr,
        MembersQuery {
            catalog: "elsewhere".into(),
            news: vec![catalog_advert(&outsider, "elsewhere")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = root.handle.candidates().await.unwrap();
    assert!(!ids(&c).contains(&outsider.node_id()));
    assert_eq!(
        root.handle.stats().await.unwrap().news_taken,
        taken_before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_advert_is_not_verified_twice_and_a_forged_one_is_refused_each_time() {
    init_tracing();
    let root = spawn(fast_config().with_catalog(catalog("lab", vec![]))).await;
    let root_addr = root.addr().await;
    let peer = fluidos_discovery::peer_id(&root.id());
    let push = |news: Vec<u8>| {
        let addr = root_addr.clone();
        async move {
            ask_on(
                MEMBERS_PUSH_PROTOCOL,
                peer,
                addr,
                MembersQuery {
                    catalog: "lab".into(),
                    news: vec![news],
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let stranger = SecretKey::generate();
    let genuine = catalog_advert(&stranger, "lab");
    push(genuine.clone()).await;
    wait_for(
        &root.handle,
        "the root to list the pushed member",
        |_| {},
        |c| ids(c).contains(&stranger.node_id()),
    )
    .await;
    let before = root.handle.stats().await.unwrap();
    push(genuine.clone()).await;
    let after = root.handle.stats().await.unwrap();
    assert!(
        after.signatures_remembered > before.signatures_remembered,
        "the same envelope again: its signature is remembered ({before:?} -> {after:?})"
    );

    // The same payload under a damaged signature is checked, and refused, every time.
    let envelope: Signed<Advert> = fluidos_contracts::signed::decode_envelope(&genuine).unwrap();
    let mut sig = *envelope.signature();
    sig.0[0] ^= 1;
    let forged = fluidos_contracts::canonical::to_vec(&Signed::<Advert>::from_parts(
        envelope.payload().to_vec(),
        sig,
    ))
    .unwrap();
    push(forged.clone()).await;
    push(forged).await;
    let stats = root.handle.stats().await.unwrap();
    assert_eq!(
        stats.adverts_rejected.get("bad_signature"),
        Some(&2),
        "{stats:?}"
    );
}

/// The `k` peers closest to `key` in Kademlia's metric.
fn closest(key: &RecordKey, peers: &[PeerId], k: usize) -> BTreeSet<PeerId> {
    let target = KBucketKey::new(key.clone());
    let mut sorted = peers.to_vec();
    sorted.sort_by_key(|p| target.distance(&KBucketKey::from(*p)));
    sorted.into_iter().take(k).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_reaches_members_outside_the_closest_k_through_news() {
    init_tracing();
    // Nothing periodic fires during the test: no refresh, no re-publication, no
    // catch-up pulls, so only the push can carry membership after each node's start. Records go
    // to the K = 3 closest (20 in production), so 10 nodes have the shape of a
    // large catalog: most members are not among a newcomer's closest (30 nodes
    // with K = 20 are more than a debug build on two cores can run in time).
    const K: usize = 3;
    let quiet = || DiscoveryConfig {
        replication_factor: K,
        catch_up: false,
        ..DiscoveryConfig::default()
            .with_advert_ttl(Duration::from_secs(1200), Duration::from_secs(600))
            .with_refresh_interval(Duration::from_secs(600))
    };
    let root = spawn(quiet().with_catalog(catalog("lab", vec![]))).await;
    let addr = root.addr().await;
    let mut nodes = vec![root];
    for _ in 1..10 {
        nodes.push(spawn(quiet().with_catalog(catalog("lab", vec![addr.clone()]))).await);
    }
    let all: Vec<_> = nodes.iter().map(|n| n.id()).collect();
    for n in &nodes {
        let others: Vec<_> = all.iter().copied().filter(|i| *i != n.id()).collect();
        wait_sees(&n.handle, &others, "the 10 to converge without a refresh").await;
    }

    // A newcomer whose records reach K of the 10 for each of its two keys (its
    // advert and its shard's membership): some members are outside both sets.
    let lab: CatalogName = "lab".parse().unwrap();
    let peers: Vec<PeerId> = nodes.iter().map(|n| n.handle.peer_id()).collect();
    let (key, outsiders) = (0..1000)
        .find_map(|_| {
            let key = SecretKey::generate();
            let id = key.node_id();
            let a = closest(&advert_key(&lab, &id), &peers, K);
            let m = closest(&catalog_key(&lab, shard_of(&id)), &peers, K);
            let out: Vec<usize> = (0..nodes.len())
                .filter(|i| !a.contains(&peers[*i]) && !m.contains(&peers[*i]))
                .collect();
            (out.len() >= 2).then_some((key, out))
        })
        .unwrap();
    let mut before = Vec::new();
    for i in &outsiders {
        before.push(nodes[*i].handle.stats().await.unwrap());
    }

    let late = spawn_with_key(key, quiet().with_catalog(catalog("lab", vec![addr]))).await;
    for n in &nodes {
        wait_for(
            &n.handle,
            "every member to list the newcomer",
            |_| {},
            |c| ids(c).contains(&late.id()),
        )
        .await;
    }
    for (i, was) in outsiders.iter().zip(before) {
        let now = nodes[*i].handle.stats().await.unwrap();
        assert!(
            now.news_taken > was.news_taken,
            "outsider {i} took pushed news (the newcomer's): {was:?} -> {now:?}"
        );
    }
}
