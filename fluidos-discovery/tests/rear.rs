//! The REAR wire between two nodes over loopback: round trip, typed errors for bad
//! bytes, per-peer limits, and answers for requests the embedder drops.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::time::Duration;

use common::*;
use fluidos_contracts::rear::{ErrorCode, MAX_REQUEST_BYTES, RearError, Request, Response};
use fluidos_contracts::{Selector, canonical};
use fluidos_discovery::libp2p::request_response::{self, ProtocolSupport};
use fluidos_discovery::libp2p::swarm::SwarmEvent;
use fluidos_discovery::libp2p::{
    Multiaddr, PeerId, StreamProtocol, SwarmBuilder, noise, tcp, yamux,
};
use fluidos_discovery::{DiscoveryConfig, RequestError, Source};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};

fn list() -> Request {
    Request::ListFlavors {
        selector: Selector::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rear_round_trip_through_a_manual_peer() {
    init_tracing();
    let Node {
        key: pkey,
        handle: provider,
        mut inbound,
    } = spawn(fast_config()).await;
    let buyer = spawn(fast_config()).await;
    let buyer_id = buyer.id();
    let responder = tokio::spawn(async move {
        let req = inbound.recv().await.unwrap();
        assert_eq!(req.from, buyer_id, "the sender is authenticated");
        assert_eq!(req.request, list());
        req.reply
            .send(Response::Flavors { flavors: vec![] })
            .unwrap();
        inbound
    });
    let addr = provider.listen_addrs().await.unwrap()[0].clone();
    buyer.handle.add_peer(addr).await.unwrap(); // without /p2p/: learnt on connect
    // The manual peer becomes a candidate through its direct advert.
    let seen = wait_for(
        &buyer.handle,
        "the manual peer",
        |_| {},
        |c| ids(c) == vec![pkey.node_id()],
    )
    .await;
    assert!(seen[0].sources.contains(&Source::Manual));
    let answer = buyer
        .handle
        .request(pkey.node_id(), list(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answer, Response::Flavors { flavors: vec![] });
    let mut inbound = responder.await.unwrap();

    // A dropped reply is answered `unavailable`, not left to time out.
    let dropper = tokio::spawn(async move {
        let req = inbound.recv().await.unwrap();
        drop(req.reply);
        inbound
    });
    let answer = buyer
        .handle
        .request(pkey.node_id(), list(), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(
            answer,
            Response::Error(RearError {
                code: ErrorCode::Unavailable,
                ..
            })
        ),
        "{answer:?}"
    );
    let inbound = dropper.await.unwrap();

    // Nobody consuming: once the provider's queue is closed, requests get `unavailable`.
    drop(inbound);
    let answer = buyer
        .handle
        .request(pkey.node_id(), list(), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(
            answer,
            Response::Error(RearError {
                code: ErrorCode::Unavailable,
                ..
            })
        ),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_per_peer_limit_are_rate_limited() {
    init_tracing();
    let cfg = DiscoveryConfig {
        max_inbound_per_peer: 1,
        ..fast_config()
    };
    let Node {
        key: pkey,
        handle: provider,
        mut inbound,
    } = spawn(cfg).await;
    let buyer = spawn(fast_config()).await;
    let p = provider.listen_addrs().await.unwrap()[0].clone().with(
        fluidos_discovery::libp2p::multiaddr::Protocol::P2p(provider.peer_id()),
    );
    buyer.handle.add_peer(p).await.unwrap();
    wait_for(&buyer.handle, "the provider", |_| {}, |c| !c.is_empty()).await;
    // The first request is held unanswered; the second finds the limit reached.
    let h = buyer.handle.clone();
    let node = pkey.node_id();
    let first = tokio::spawn(async move { h.request(node, list(), Duration::from_secs(15)).await });
    let held = tokio::time::timeout(WAIT, inbound.recv())
        .await
        .unwrap()
        .unwrap();
    let second = buyer
        .handle
        .request(node, list(), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(
            second,
            Response::Error(RearError {
                code: ErrorCode::RateLimited,
                ..
            })
        ),
        "{second:?}"
    );
    held.reply
        .send(Response::Flavors { flavors: vec![] })
        .unwrap();
    assert_eq!(
        first.await.unwrap().unwrap(),
        Response::Flavors { flavors: vec![] }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_errors_are_typed() {
    init_tracing();
    let a = spawn(fast_config()).await;
    // A node nobody knows an address for.
    let stranger = fluidos_contracts::SecretKey::generate().node_id();
    let err = a
        .handle
        .request(stranger, list(), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Unreachable(_)), "{err:?}");
    // A request larger than peers accept never leaves.
    let big = Request::ListFlavors {
        selector: Selector {
            gpu_model: Some("x".repeat(MAX_REQUEST_BYTES)),
            ..Default::default()
        },
    };
    let err = a
        .handle
        .request(stranger, big, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::TooLarge { .. }), "{err:?}");
}

/// Sends raw bytes on `/fluidos/rear/1` and returns the raw answer.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::Error::other("the raw client serves nothing"))
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(2 * 1024 * 1024).read_to_end(&mut buf).await?;
        Ok(buf)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Err(io::Error::other("the raw client serves nothing"))
    }
}

async fn raw_request(peer: PeerId, addr: Multiaddr, bytes: Vec<u8>) -> Response {
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
                RawCodec,
                [(
                    StreamProtocol::new("/fluidos/rear/1"),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .build();
    swarm
        .behaviour_mut()
        .send_request_with_addresses(&peer, bytes, vec![addr]);
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return response,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    panic!("the stream failed instead of carrying a typed error: {error}")
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    canonical::from_slice_lenient_limited(&answer, 1024 * 1024).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_typed_errors() {
    init_tracing();
    let provider = spawn(fast_config()).await;
    let addr = provider.handle.listen_addrs().await.unwrap()[0].clone();
    let peer = provider.handle.peer_id();

    let garbage = raw_request(peer, addr.clone(), vec![0xff, 0x00, 0x13, 0x37]).await;
    assert!(
        matches!(
            garbage,
            Response::Error(RearError {
                code: ErrorCode::Malformed,
                ..
            })
        ),
        "{garbage:?}"
    );
    // Well-formed CBOR of the wrong shape.
    let wrong = raw_request(
        peer,
        addr.clone(),
        canonical::to_vec(&"list_flavors").unwrap(),
    )
    .await;
    assert!(
        matches!(
            wrong,
            Response::Error(RearError {
                code: ErrorCode::Malformed,
                ..
            })
        ),
        "{wrong:?}"
    );
    let big = raw_request(peer, addr.clone(), vec![0x40; MAX_REQUEST_BYTES + 100]).await;
    assert!(
        matches!(
            big,
            Response::Error(RearError {
                code: ErrorCode::TooLarge,
                ..
            })
        ),
        "{big:?}"
    );
    let stats = provider.handle.stats().await.unwrap();
    assert_eq!(stats.rear_bad, 3);
    assert_eq!(
        stats.rear_inbound, 0,
        "bad requests never reach the embedder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_listed_node_cannot_negotiate() {
    init_tracing();
    let buyer_key = fluidos_contracts::SecretKey::generate();
    let policy = fluidos_discovery::IncomingPolicy {
        deny: [buyer_key.node_id()].into(),
        ..Default::default()
    };
    let Node {
        key: pkey,
        handle: provider,
        inbound: _inbound,
    } = spawn(fast_config().with_incoming(policy)).await;
    let buyer = spawn_with_key(buyer_key, fast_config()).await;
    let addr = provider.listen_addrs().await.unwrap()[0].clone();
    buyer.handle.add_peer(addr).await.unwrap();
    wait_for(
        &buyer.handle,
        "the provider",
        |_| {},
        |c| ids(c) == vec![pkey.node_id()],
    )
    .await;
    let answer = buyer
        .handle
        .request(pkey.node_id(), list(), Duration::from_secs(10))
        .await
        .unwrap();
    let Response::Error(e) = answer else {
        panic!("expected a refusal, got {answer:?}")
    };
    assert_eq!(e.code, ErrorCode::NotAuthorised);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_candidate_carries_its_measured_round_trip() {
    init_tracing();
    let provider = spawn(fast_config()).await;
    let buyer = spawn(fast_config()).await;
    assert!(
        buyer.handle.candidates().await.unwrap().is_empty(),
        "no candidate yet"
    );
    buyer.handle.add_peer(provider.addr().await).await.unwrap();
    // The first ping goes out when the connection is up; loopback answers in
    // well under a second.
    let seen = wait_for(
        &buyer.handle,
        "a candidate with a round trip",
        |_| {},
        |c| c.iter().any(|c| c.node == provider.id() && c.rtt.is_some()),
    )
    .await;
    let rtt = seen
        .iter()
        .find(|c| c.node == provider.id())
        .and_then(|c| c.rtt)
        .unwrap();
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
}
