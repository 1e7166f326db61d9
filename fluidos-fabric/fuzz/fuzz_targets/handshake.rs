//! The fabric's handshake path with what an attacker on the underlay can send: raw
//! datagrams, and real handshake initiations and responses with bytes flipped. Nothing
//! may panic, and nothing unauthenticated may reach the device.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use fluidos_fabric::{Fabric, FabricConfig, PeerConfig, WireGuardSecret};
use libfuzzer_sys::fuzz_target;

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
    let peer = |key: &WireGuardSecret, at| PeerConfig {
        public_key: key.public(),
        allowed_ips: vec!["fdf0:6a54:bda7::/48".parse().unwrap()],
        endpoint: Some(at),
    };
    a.add_peer(peer(&b_key, b_addr)).unwrap();
    b.add_peer(peer(&a_key, a_addr)).unwrap();
    match mode % 3 {
        // A raw datagram.
        0 => b.handle_datagram(a_addr, rest, now),
        // A real initiation with the input XORed over it.
        1 => {
            a.connect(&b_key.public(), now);
            let mut init = a.poll_transmit().unwrap().payload;
            for (byte, flip) in init.iter_mut().zip(rest) {
                *byte ^= flip;
            }
            b.handle_datagram(a_addr, &init, now);
        }
        // A real response, flipped, back to the initiator.
        _ => {
            a.connect(&b_key.public(), now);
            let init = a.poll_transmit().unwrap().payload;
            b.handle_datagram(a_addr, &init, now);
            let Some(response) = b.poll_transmit() else {
                return;
            };
            let mut response = response.payload;
            for (byte, flip) in response.iter_mut().zip(rest) {
                *byte ^= flip;
            }
            a.handle_datagram(b_addr, &response, now);
        }
    }
    // A handshake alone never delivers a packet to the device.
    assert!(a.poll_packet().is_none());
    assert!(b.poll_packet().is_none());
});
