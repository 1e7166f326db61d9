//! The fabric's data path after a completed handshake, with what an attacker on the
//! underlay (or a local process writing to the device) can send: real transport
//! packets with bytes flipped, raw datagrams on a live session, and arbitrary device
//! packets. Nothing may panic; a packet reaches the device only when it is exactly
//! what the peer encrypted.
#![no_main]

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use fluidos_fabric::{Fabric, FabricConfig, PeerConfig, WireGuardSecret};
use libfuzzer_sys::fuzz_target;

const A_IP: Ipv6Addr = Ipv6Addr::new(0xfdf0, 0x6a54, 0xbda7, 1, 0, 0, 0, 1);
const B_IP: Ipv6Addr = Ipv6Addr::new(0xfdf0, 0x6a54, 0xbda7, 2, 0, 0, 0, 1);

/// An IPv6 packet from A to B ("no next header") carrying `payload`.
fn packet(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(1200)];
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[59, 64]);
    p.extend_from_slice(&A_IP.octets());
    p.extend_from_slice(&B_IP.octets());
    p.extend_from_slice(payload);
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let a_key = WireGuardSecret::from_bytes(&[1; 32]);
    let b_key = WireGuardSecret::from_bytes(&[2; 32]);
    let a_addr: SocketAddr = "198.18.0.1:51820".parse().unwrap();
    let b_addr: SocketAddr = "198.18.0.2:51820".parse().unwrap();
    let mut a = Fabric::new(&a_key, FabricConfig::default());
    let mut b = Fabric::new(&b_key, FabricConfig::default());
    let peer = |key: &WireGuardSecret, at, net: &str| PeerConfig {
        public_key: key.public(),
        allowed_ips: vec![net.parse().unwrap()],
        endpoint: Some(at),
    };
    a.add_peer(peer(&b_key, b_addr, "fdf0:6a54:bda7:2::/64"))
        .unwrap();
    b.add_peer(peer(&a_key, a_addr, "fdf0:6a54:bda7:1::/64"))
        .unwrap();
    // The handshake: initiation, response, then whatever A sends on the new session.
    a.connect(&b_key.public(), now);
    let init = a.poll_transmit().unwrap().payload;
    b.handle_datagram(a_addr, &init, now);
    let response = b.poll_transmit().unwrap().payload;
    a.handle_datagram(b_addr, &response, now);
    while let Some(t) = a.poll_transmit() {
        b.handle_datagram(a_addr, &t.payload, now);
    }
    while b.poll_packet().is_some() {}
    while b.poll_transmit().is_some() {}

    match mode % 4 {
        // A real transport packet arrives intact: delivered unchanged, once.
        0 => {
            let original = packet(rest);
            a.handle_packet(&original, now);
            let wire = a.poll_transmit().unwrap().payload;
            b.handle_datagram(a_addr, &wire, now);
            assert_eq!(b.poll_packet().as_deref(), Some(&original[..]));
            assert!(b.poll_packet().is_none());
        }
        // A real transport packet with the input XORed over it: anything changed
        // fails authentication and reaches nothing.
        1 => {
            let (split, flips) = rest.split_at(rest.len().min(64));
            let original = packet(flips);
            a.handle_packet(&original, now);
            let mut wire = a.poll_transmit().unwrap().payload;
            let mut changed = false;
            for (byte, flip) in wire.iter_mut().zip(split) {
                changed |= *flip != 0;
                *byte ^= flip;
            }
            b.handle_datagram(a_addr, &wire, now);
            if changed {
                assert!(b.poll_packet().is_none(), "a forged packet was delivered");
            }
        }
        // A raw datagram on a live session, from the peer's address and another.
        2 => {
            b.handle_datagram(a_addr, rest, now);
            b.handle_datagram("198.18.9.9:1".parse().unwrap(), rest, now);
            assert!(b.poll_packet().is_none());
        }
        // Whatever a local process writes to A's device.
        _ => {
            a.handle_packet(rest, now);
            while let Some(t) = a.poll_transmit() {
                b.handle_datagram(a_addr, &t.payload, now);
            }
            while let Some(p) = b.poll_packet() {
                // Only what A's device carried (up to the length its IP header
                // gives: WireGuard pads, and the receiver trims to that length).
                assert!(
                    !p.is_empty() && rest.starts_with(&p),
                    "delivered {p:?} from {rest:?}"
                );
            }
        }
    }
    a.handle_timeout(now);
    b.handle_timeout(now);
});
