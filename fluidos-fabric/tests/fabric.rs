//! The I/O-free fabric with in-memory networks of two and three nodes: handshake,
//! data both ways, roaming, refused keys, cryptokey routing, bounds and timers.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use fluidos_contracts::{NodeId, SecretKey};
use fluidos_fabric::{
    AddPeerError, Fabric, FabricConfig, PeerConfig, PeerFabric, Transmit, WireGuardSecret,
    fabric_params, overlay,
};

/// One node of the test network.
struct Node {
    fabric: Fabric,
    addr: SocketAddr,
    node_id: NodeId,
    params: fluidos_contracts::FabricParams,
    delivered: Vec<Vec<u8>>,
}

fn node(i: u8, config: FabricConfig) -> Node {
    let secret = WireGuardSecret::generate();
    let node_id = SecretKey::generate().node_id();
    let addr = SocketAddr::from(([198, 18, 0, i], 51820));
    let params = fabric_params(&secret, [addr], &node_id);
    Node {
        fabric: Fabric::new(&secret, config),
        addr,
        node_id,
        params,
        delivered: Vec::new(),
    }
}

/// Makes `b` a peer of `a`, as a contract between them would.
fn peer(a: &mut Node, b: &Node) {
    let checked = PeerFabric::check(&b.params, &b.node_id).unwrap();
    a.fabric
        .add_peer(PeerConfig::from_contract(&checked))
        .unwrap();
}

fn overlay_of(n: &Node) -> Ipv6Addr {
    overlay::address(&n.node_id)
}

/// A minimal IPv6/UDP packet (the fabric looks only at the addresses).
fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + 8 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[44..46].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

/// Delivers every queued datagram to the node at its address until the network is
/// quiet (bounded), rewriting the source of node `i` to `sources[i]` when given.
/// Returns the datagrams sent, as (from node, transmit).
fn pump(
    nodes: &mut [Node],
    now: Instant,
    sources: &[Option<SocketAddr>],
) -> Vec<(usize, Transmit)> {
    let mut log = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        for i in 0..nodes.len() {
            while let Some(p) = nodes[i].fabric.poll_packet() {
                nodes[i].delivered.push(p);
            }
            while let Some(t) = nodes[i].fabric.poll_transmit() {
                moved = true;
                let from = sources.get(i).copied().flatten().unwrap_or(nodes[i].addr);
                log.push((i, t.clone()));
                if let Some(j) = nodes.iter().position(|n| n.addr == t.to) {
                    nodes[j].fabric.handle_datagram(from, &t.payload, now);
                }
            }
        }
        if !moved {
            return log;
        }
    }
    panic!("the network did not become quiet");
}

fn pair() -> Vec<Node> {
    let mut a = node(1, FabricConfig::default());
    let mut b = node(2, FabricConfig::default());
    peer(&mut a, &b);
    peer(&mut b, &a);
    vec![a, b]
}

#[test]
fn handshake_then_data_both_ways() {
    let now = Instant::now();
    let mut nodes = pair();
    let (oa, ob) = (overlay_of(&nodes[0]), overlay_of(&nodes[1]));

    let first = ipv6_packet(oa, ob, b"hello b");
    nodes[0].fabric.handle_packet(&first, now);
    let log = pump(&mut nodes, now, &[]);
    // initiation (148), response (92), then the queued packet.
    assert_eq!(log[0].1.payload.len(), 148);
    assert_eq!(log[0].1.to, nodes[1].addr);
    assert_eq!(log[1].1.payload.len(), 92);
    assert_eq!(log[1].1.to, nodes[0].addr);
    assert_eq!(nodes[1].delivered, vec![first]);

    let back = ipv6_packet(ob, oa, b"hello a");
    nodes[1].fabric.handle_packet(&back, now);
    let log = pump(&mut nodes, now, &[]);
    assert_eq!(log.len(), 1, "session is up: one data message");
    assert_eq!(log[0].1.payload[0], 4);
    assert!(!log[0].1.payload.windows(7).any(|w| w == b"hello a"));
    assert_eq!(nodes[0].delivered, vec![back.clone()]);

    let status = nodes[1].fabric.peers();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].public_key, nodes[0].fabric.public_key());
    assert!(status[0].since_last_handshake.is_some());
    assert_eq!(status[0].tx_bytes, back.len() as u64);
    assert!(status[0].rx_bytes > 0);
}

#[test]
fn a_peer_that_roams_is_answered_at_its_new_endpoint() {
    let now = Instant::now();
    let mut nodes = pair();
    let (oa, ob) = (overlay_of(&nodes[0]), overlay_of(&nodes[1]));
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"1"), now);
    pump(&mut nodes, now, &[]);
    assert_eq!(nodes[1].fabric.peers()[0].endpoint, Some(nodes[0].addr));

    // A's NAT mapping changes: its datagrams now come from another address.
    let moved: SocketAddr = "198.18.7.7:40000".parse().unwrap();
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"2"), now);
    pump(&mut nodes, now, &[Some(moved)]);
    assert_eq!(nodes[1].fabric.peers()[0].endpoint, Some(moved));
    nodes[1]
        .fabric
        .handle_packet(&ipv6_packet(ob, oa, b"3"), now);
    let t = nodes[1].fabric.poll_transmit().unwrap();
    assert_eq!(t.to, moved);

    // A forged datagram from a third address does not move the endpoint.
    let forged: SocketAddr = "198.18.9.9:1".parse().unwrap();
    let mut junk = t.payload.clone();
    junk[20] ^= 1;
    nodes[1].fabric.handle_datagram(forged, &junk, now);
    assert_eq!(nodes[1].fabric.peers()[0].endpoint, Some(moved));
}

#[test]
fn a_revoked_key_gets_no_response_and_cannot_come_back() {
    let now = Instant::now();
    let mut nodes = pair();
    let (oa, ob) = (overlay_of(&nodes[0]), overlay_of(&nodes[1]));
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"before"), now);
    pump(&mut nodes, now, &[]);
    assert_eq!(nodes[1].delivered.len(), 1);

    let a_key = nodes[0].fabric.public_key();
    nodes[1].fabric.revoke(&a_key);
    assert!(nodes[1].fabric.is_revoked(&a_key));
    assert!(nodes[1].fabric.peers().is_empty());

    // Data on the old session and a fresh handshake: B sends nothing back.
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"after"), now);
    let log = pump(&mut nodes, now, &[]);
    assert!(log.iter().all(|(from, _)| *from == 0), "{log:?}");
    let b_key = nodes[1].fabric.public_key();
    nodes[0].fabric.remove_peer(&b_key);
    peer_from(&mut nodes, 0, 1);
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"again"), now);
    let log = pump(&mut nodes, now, &[]);
    assert_eq!(log.len(), 1, "only A's initiation: {log:?}");
    assert_eq!(log[0].1.payload.len(), 148);
    assert_eq!(nodes[1].delivered.len(), 1);
    assert_eq!(nodes[1].fabric.drops().unknown_key, 1);

    let checked = PeerFabric::check(&nodes[0].params, &nodes[0].node_id).unwrap();
    assert_eq!(
        nodes[1]
            .fabric
            .add_peer(PeerConfig::from_contract(&checked)),
        Err(AddPeerError::Revoked)
    );
}

fn peer_from(nodes: &mut [Node], a: usize, b: usize) {
    let checked = PeerFabric::check(&nodes[b].params, &nodes[b].node_id).unwrap();
    nodes[a]
        .fabric
        .add_peer(PeerConfig::from_contract(&checked))
        .unwrap();
}

#[test]
fn an_unknown_key_is_dropped_silently_and_peers_are_kept_apart() {
    let now = Instant::now();
    let mut nodes = pair();
    // C knows B, but B does not know C.
    let mut c = node(3, FabricConfig::default());
    peer(&mut c, &nodes[1]);
    nodes.push(c);
    let (ob, oc) = (overlay_of(&nodes[1]), overlay_of(&nodes[2]));
    nodes[2]
        .fabric
        .handle_packet(&ipv6_packet(oc, ob, b"let me in"), now);
    let log = pump(&mut nodes, now, &[]);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].0, 2);
    assert!(nodes[1].delivered.is_empty());
    assert_eq!(nodes[1].fabric.drops().unknown_key, 1);

    // Garbage and truncated messages are dropped too.
    for junk in [&b""[..], b"\x01\x00\x00\x00", &[4u8; 100], &[1u8; 148]] {
        let from = nodes[2].addr;
        nodes[1].fabric.handle_datagram(from, junk, now);
    }
    assert!(nodes[1].fabric.poll_transmit().is_none());
    assert!(nodes[1].fabric.drops().invalid >= 3);
}

#[test]
fn three_nodes_route_by_destination_and_check_sources() {
    let now = Instant::now();
    let mut a = node(1, FabricConfig::default());
    let mut b = node(2, FabricConfig::default());
    let mut c = node(3, FabricConfig::default());
    peer(&mut a, &b);
    peer(&mut a, &c);
    peer(&mut b, &a);
    peer(&mut c, &a);
    let mut nodes = vec![a, b, c];
    let (oa, ob, oc) = (
        overlay_of(&nodes[0]),
        overlay_of(&nodes[1]),
        overlay_of(&nodes[2]),
    );
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"to b"), now);
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, oc, b"to c"), now);
    pump(&mut nodes, now, &[]);
    assert_eq!(nodes[1].delivered, vec![ipv6_packet(oa, ob, b"to b")]);
    assert_eq!(nodes[2].delivered, vec![ipv6_packet(oa, oc, b"to c")]);

    // B pretends to be C inside the tunnel: A drops it (cryptokey routing).
    nodes[1]
        .fabric
        .handle_packet(&ipv6_packet(oc, oa, b"spoof"), now);
    pump(&mut nodes, now, &[]);
    assert!(nodes[0].delivered.is_empty());
    assert_eq!(nodes[0].fabric.drops().wrong_source, 1);

    // No peer for a destination: dropped and counted.
    let nowhere: Ipv6Addr = "fdf0:6a54:bda7::99".parse().unwrap();
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, nowhere, b"?"), now);
    assert_eq!(nodes[0].fabric.drops().no_route, 1);
    assert!(nodes[0].fabric.poll_transmit().is_none());
}

#[test]
fn overlapping_allowed_networks_and_own_key_are_refused() {
    let mut nodes = pair();
    let c = node(3, FabricConfig::default());
    let b_checked = PeerFabric::check(&nodes[1].params, &nodes[1].node_id).unwrap();
    let c_checked = PeerFabric::check(&c.params, &c.node_id).unwrap();
    let net = "100.64.0.7/32".parse().unwrap();
    nodes[0]
        .fabric
        .add_peer(PeerConfig::from_contract(&b_checked).allow(net))
        .unwrap();
    assert_eq!(
        nodes[0]
            .fabric
            .add_peer(PeerConfig::from_contract(&c_checked).allow(net)),
        Err(AddPeerError::Overlap { net })
    );
    let a_checked = PeerFabric::check(&nodes[0].params, &nodes[0].node_id).unwrap();
    assert_eq!(
        nodes[0]
            .fabric
            .add_peer(PeerConfig::from_contract(&a_checked)),
        Err(AddPeerError::OwnKey)
    );
}

#[test]
fn oversized_packets_and_full_queues_are_dropped_and_counted() {
    let now = Instant::now();
    let mut a = node(1, FabricConfig::default().with_mtu(1280).with_max_queued(2));
    let b = node(2, FabricConfig::default());
    peer(&mut a, &b);
    let (oa, ob) = (overlay_of(&a), overlay_of(&b));
    assert_eq!(a.fabric.config().mtu, 1280);
    a.fabric
        .handle_packet(&ipv6_packet(oa, ob, &[0; 1300]), now);
    assert_eq!(a.fabric.drops().too_big, 1);
    assert!(a.fabric.poll_transmit().is_none());
    // Three handshake initiations to three peers: the third does not fit the queue.
    let (c, d) = (
        node(3, FabricConfig::default()),
        node(4, FabricConfig::default()),
    );
    peer(&mut a, &c);
    peer(&mut a, &d);
    for other in [&b, &c, &d] {
        a.fabric.connect(&other.fabric.public_key(), now);
    }
    assert_eq!(a.fabric.drops().queue_full, 1);
    assert!(a.fabric.poll_transmit().is_some());
    assert!(a.fabric.poll_transmit().is_some());
    assert!(a.fabric.poll_transmit().is_none());
}

#[test]
fn timers_send_persistent_keepalives_and_retry_handshakes() {
    let start = Instant::now();
    let mut a = node(
        1,
        FabricConfig::default().with_persistent_keepalive(Some(1)),
    );
    let mut b = node(2, FabricConfig::default());
    peer(&mut a, &b);
    peer(&mut b, &a);
    assert!(
        node(9, FabricConfig::default())
            .fabric
            .poll_timeout()
            .is_none()
    );
    let mut nodes = vec![a, b];
    let (oa, ob) = (overlay_of(&nodes[0]), overlay_of(&nodes[1]));
    nodes[0]
        .fabric
        .handle_packet(&ipv6_packet(oa, ob, b"x"), start);
    pump(&mut nodes, start, &[]);
    let due = nodes[0].fabric.poll_timeout().unwrap();
    assert_eq!(due, start + fluidos_fabric::fabric::TICK);
    // Before the due time nothing runs.
    nodes[0].fabric.handle_timeout(start);
    assert!(nodes[0].fabric.poll_transmit().is_none());

    // boringtun's timers run on its own clock (see the module docs), so wait for real.
    let mut keepalive = None;
    let deadline = Instant::now() + Duration::from_secs(4);
    while keepalive.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        nodes[0].fabric.handle_timeout(now);
        keepalive = nodes[0].fabric.poll_transmit();
    }
    let keepalive = keepalive.expect("a persistent keepalive within 4 s");
    assert_eq!(keepalive.payload.len(), 32, "an empty data message");
    assert_eq!(keepalive.to, nodes[1].addr);

    // A peer that never answers gets the initiation again after REKEY_TIMEOUT (5 s).
    let mut lonely = node(4, FabricConfig::default());
    let silent = node(5, FabricConfig::default());
    peer(&mut lonely, &silent);
    let t0 = Instant::now();
    lonely.fabric.handle_packet(
        &ipv6_packet(overlay_of(&lonely), overlay_of(&silent), b"?"),
        t0,
    );
    let first = lonely.fabric.poll_transmit().unwrap();
    assert_eq!(first.payload.len(), 148);
    let mut retry = None;
    let deadline = t0 + Duration::from_secs(8);
    while retry.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        lonely.fabric.handle_timeout(Instant::now());
        retry = lonely.fabric.poll_transmit();
    }
    let retry = retry.expect("a retried initiation within 8 s");
    assert_eq!(retry.payload.len(), 148);
    assert_ne!(retry.payload, first.payload, "a new ephemeral key");
    assert!(t0.elapsed() >= Duration::from_secs(5));
}
