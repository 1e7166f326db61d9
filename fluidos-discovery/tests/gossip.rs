//! `/fluidos/members/1` over loopback from a raw libp2p client: a catalog
//! member answers with the signed catalog adverts it holds, nothing for a
//! catalog it is not in, and a malformed query fails that one stream only.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fluidos_contracts::Timestamp;
use fluidos_discovery::advert::{Expected, verify_advert};
use fluidos_discovery::gossip::{MEMBERS_PROTOCOL, MembersCodec, MembersQuery, MembersReply};
use fluidos_discovery::libp2p::request_response::{self, ProtocolSupport};
use fluidos_discovery::libp2p::swarm::SwarmEvent;
use fluidos_discovery::libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, tcp, yamux};
use futures::StreamExt;

/// Sends `query` to `peer` and returns its reply, or the failure as text.
async fn ask(peer: PeerId, addr: Multiaddr, query: MembersQuery) -> Result<MembersReply, String> {
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
                [(MEMBERS_PROTOCOL, ProtocolSupport::Outbound)],
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
        },
    )
    .await
    .unwrap();
    let expected = Expected {
        node: None,
        catalog: Some("lab"),
    };
    let mut nodes: Vec<_> = reply
        .members
        .iter()
        .map(|b| verify_advert(b, &expected, Timestamp::now()).unwrap().node)
        .collect();
    nodes.sort();
    let mut want = vec![b.id(), c.id()];
    want.sort();
    assert_eq!(nodes, want, "every member's own signed catalog advert");

    // Not a member of that catalog: nothing.
    let reply = ask(
        peer,
        root_addr.clone(),
        MembersQuery {
            catalog: "elsewhere".into(),
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
        },
    )
    .await
    .unwrap();
    assert_eq!(reply.members.len(), 2);
}
