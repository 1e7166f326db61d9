//! The fabric's keys drive real boringtun tunnels: two in-memory `Tunn`s complete the
//! WireGuard handshake and carry an IPv4 packet; a wrong peer key gets nowhere.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use boringtun::noise::{Tunn, TunnResult};
use fluidos_contracts::SecretKey;
use fluidos_fabric::{PeerFabric, WireGuardSecret, fabric_params, keyfile, x25519_public};

/// An IPv4/UDP packet from 198.18.0.1:5678 to 198.18.0.2:23 with a valid header checksum.
fn ipv4_udp_packet(payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45; // version 4, 5-word header
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64; // TTL
    p[9] = 17; // UDP
    p[12..16].copy_from_slice(&[198, 18, 0, 1]);
    p[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let sum: u32 = p[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p[20..22].copy_from_slice(&5678u16.to_be_bytes());
    p[22..24].copy_from_slice(&23u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// What came out of the tunnels while datagrams were passed between them.
#[derive(Default)]
struct Delivered {
    /// IPv4 packets each side handed to its TUN device: (side, source, packet).
    to_tunnel: Vec<(usize, Ipv4Addr, Vec<u8>)>,
    /// Errors each side reported.
    errors: Vec<(usize, String)>,
}

/// Passes datagrams between the two tunnels until none is left (at most 64 steps).
fn pump(tunnels: &mut [Tunn; 2], mut in_flight: VecDeque<(usize, Vec<u8>)>) -> Delivered {
    let mut out = Delivered::default();
    let mut buf = vec![0u8; 2048];
    for _ in 0..64 {
        let Some((to, datagram)) = in_flight.pop_front() else {
            return out;
        };
        let mut input = datagram;
        // boringtun asks to be called again with an empty datagram while it has
        // queued packets to send.
        loop {
            match tunnels[to].decapsulate(None, &input, &mut buf) {
                TunnResult::WriteToNetwork(d) => {
                    in_flight.push_back((1 - to, d.to_vec()));
                    input = Vec::new();
                }
                TunnResult::WriteToTunnelV4(p, src) => {
                    out.to_tunnel.push((to, src, p.to_vec()));
                    break;
                }
                TunnResult::WriteToTunnelV6(..) => panic!("unexpected IPv6 packet"),
                TunnResult::Err(e) => {
                    out.errors.push((to, format!("{e:?}")));
                    break;
                }
                TunnResult::Done => break,
            }
        }
    }
    panic!("the tunnels kept exchanging datagrams");
}

fn tunnel(own: &WireGuardSecret, peer: &fluidos_contracts::WireGuardKey, index: u32) -> Tunn {
    Tunn::new(
        own.to_static_secret(),
        x25519_public(peer),
        None,
        None,
        index,
        None,
    )
}

/// Hands `packet` to side 0 for sending and returns the first datagram it emits.
fn send(tunnels: &mut [Tunn; 2], packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    match tunnels[0].encapsulate(packet, &mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("expected a datagram, got {other:?}"),
    }
}

#[test]
fn handshake_and_one_ipv4_packet_between_fabric_keys() {
    // One key from the key file, as a node would have it, one generated.
    let dir = tempfile::tempdir().unwrap();
    let (alice, created) = keyfile::load_or_create(&dir.path().join("wireguard.key")).unwrap();
    assert!(created);
    let bob = WireGuardSecret::generate();

    // Each side learns the other's key the way fluidos does: from the fabric
    // parameters in the contract, checked.
    let (alice_node, bob_node) = (
        SecretKey::generate().node_id(),
        SecretKey::generate().node_id(),
    );
    let alice_params = fabric_params(&alice, ["198.18.0.1:51820".parse().unwrap()], &alice_node);
    let bob_params = fabric_params(&bob, ["198.18.0.2:51820".parse().unwrap()], &bob_node);
    let alice_seen_by_bob = PeerFabric::check(&alice_params, &alice_node).unwrap();
    let bob_seen_by_alice = PeerFabric::check(&bob_params, &bob_node).unwrap();

    let mut tunnels = [
        tunnel(&alice, &bob_seen_by_alice.public_key, 1),
        tunnel(&bob, &alice_seen_by_bob.public_key, 2),
    ];
    let packet = ipv4_udp_packet(b"hello over fluidos");
    // No session yet: the packet is queued and a handshake initiation goes out.
    let init = send(&mut tunnels, &packet);
    assert_eq!(
        init.len(),
        148,
        "a WireGuard handshake initiation is 148 bytes"
    );

    let delivered = pump(&mut tunnels, VecDeque::from([(1, init)]));
    assert!(delivered.errors.is_empty(), "{:?}", delivered.errors);
    assert_eq!(delivered.to_tunnel.len(), 1);
    let (side, src, received) = &delivered.to_tunnel[0];
    assert_eq!(*side, 1);
    assert_eq!(*src, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(received, &packet);

    // With the session up, the next packet is encrypted data right away.
    let second = ipv4_udp_packet(b"second");
    let datagram = send(&mut tunnels, &second);
    assert_eq!(datagram[0], 4, "a WireGuard transport data message");
    // 16 bytes of header, the packet encrypted, 16 bytes of authentication tag.
    assert_eq!(datagram.len(), 16 + second.len() + 16);
    assert!(
        !datagram.windows(6).any(|w| w == b"second"),
        "the payload is encrypted"
    );
    let delivered = pump(&mut tunnels, VecDeque::from([(1, datagram)]));
    assert_eq!(delivered.to_tunnel.len(), 1);
    assert_eq!(delivered.to_tunnel[0].2, second);
}

#[test]
fn a_tunnel_expecting_another_key_refuses_the_handshake() {
    let (alice, bob, mallory) = (
        WireGuardSecret::generate(),
        WireGuardSecret::generate(),
        WireGuardSecret::generate(),
    );
    // Bob expects Mallory, so Alice's initiation must not get through.
    let mut tunnels = [
        tunnel(&alice, &bob.public(), 1),
        tunnel(&bob, &mallory.public(), 2),
    ];
    let init = send(&mut tunnels, &ipv4_udp_packet(b"secret"));
    let delivered = pump(&mut tunnels, VecDeque::from([(1, init)]));
    assert!(delivered.to_tunnel.is_empty());
    assert_eq!(delivered.errors.len(), 1, "{:?}", delivered.errors);
    assert_eq!(delivered.errors[0].0, 1);
}
