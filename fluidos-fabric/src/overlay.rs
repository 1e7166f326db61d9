//! Overlay addresses: every node gets one IPv6 unique local address (RFC 4193),
//! computed from its [`NodeId`], so no one allocates addresses and any node can check
//! the address a peer claims.
//!
//! Layout of an address (128 bits):
//!
//! | bits | value |
//! |---|---|
//! | 8 | `0xfd`: ULA with the L bit set (locally assigned) |
//! | 40 | global id, fixed for the whole fluidos mesh: the first 5 bytes of SHA-256(`"fluidos overlay global id v1"`), `f0 6a 54 bd a7` |
//! | 80 | the first 10 bytes of SHA-256(`"fluidos overlay address v1"` ‖ `0x00` ‖ the 32 bytes of the node's ed25519 public key) |
//!
//! So the mesh is [`prefix()`] = `fdf0:6a54:bda7::/48` and a node's address is a /128
//! inside it. RFC 4193 asks for a pseudo-random global id per site; fluidos treats the
//! mesh as one site, and a fixed id lets every node derive every other node's address
//! without exchanging anything. 80 hashed bits make an accidental collision unlikely
//! until about 2^40 nodes (birthday bound); a deliberate one costs about 2^80 key
//! generations, and a colliding peer gains nothing beyond a routing conflict because
//! tunnels are keyed by the WireGuard key each contract binds to the node.

use std::net::{Ipv4Addr, Ipv6Addr};

use fluidos_contracts::NodeId;
use ipnet::{Ipv4Net, Ipv6Net};
use sha2::{Digest, Sha256};

/// The 40-bit global id of the fluidos mesh (see the module docs for its origin).
pub const GLOBAL_ID: [u8; 5] = [0xf0, 0x6a, 0x54, 0xbd, 0xa7];

/// What the global id is the hash of.
pub const GLOBAL_ID_SEED: &[u8] = b"fluidos overlay global id v1";

/// Domain separation of the per-node hash.
pub const ADDRESS_DOMAIN: &[u8] = b"fluidos overlay address v1";

/// Length of the mesh prefix: `fd` and the global id.
pub const PREFIX_LEN: u8 = 48;

/// The mesh prefix, `fdf0:6a54:bda7::/48`: every overlay address is inside it.
pub fn prefix() -> Ipv6Net {
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&GLOBAL_ID);
    // The length is a constant below 128, so this never fails.
    Ipv6Net::new(Ipv6Addr::from(octets), PREFIX_LEN).unwrap_or_default()
}

/// The overlay address of `node`.
pub fn address(node: &NodeId) -> Ipv6Addr {
    let digest = Sha256::new()
        .chain_update(ADDRESS_DOMAIN)
        .chain_update([0u8])
        .chain_update(node.as_bytes())
        .finalize();
    let mut octets = [0u8; 16];
    octets[0] = 0xfd;
    octets[1..6].copy_from_slice(&GLOBAL_ID);
    octets[6..].copy_from_slice(&digest[..10]);
    Ipv6Addr::from(octets)
}

/// Domain separation of the optional IPv4 overlay address.
pub const IPV4_DOMAIN: &[u8] = b"fluidos overlay ipv4 v1";

/// The shared address space (RFC 6598) the optional IPv4 overlay uses, `100.64.0.0/10`.
pub fn ipv4_prefix() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).unwrap_or_default()
}

/// The optional IPv4 overlay address of `node`: inside [`ipv4_prefix`], its 22 host
/// bits from SHA-256(`"fluidos overlay ipv4 v1"` ‖ `0x00` ‖ node key), skipping the
/// all-zeros and all-ones host parts.
///
/// Like the IPv6 address it is derived, so both parties of a contract agree on it
/// without exchanging anything. 22 bits are few: among `n` peers of one node a
/// collision has probability about n²/2^23 (0.1 % for 100 peers). The fabric detects
/// one when it adds the second peer (`AddPeerError::Overlap`); that peer is then
/// reached over IPv6 only, which is always collision-free.
pub fn ipv4_address(node: &NodeId) -> Ipv4Addr {
    let digest = Sha256::new()
        .chain_update(IPV4_DOMAIN)
        .chain_update([0u8])
        .chain_update(node.as_bytes())
        .finalize();
    let net = ipv4_prefix();
    let host_bits = 32 - u32::from(net.prefix_len());
    let span = (1u32 << host_bits) - 2;
    let hashed = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Ipv4Addr::from(u32::from(net.network()) + 1 + hashed % span)
}

/// Whether `addr` is inside the fluidos mesh prefix.
pub fn is_overlay(addr: &Ipv6Addr) -> bool {
    prefix().contains(addr)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use fluidos_contracts::SecretKey;

    use super::*;

    #[test]
    fn global_id_is_the_documented_hash() {
        let digest = Sha256::digest(GLOBAL_ID_SEED);
        assert_eq!(digest[..5], GLOBAL_ID);
        assert_eq!(prefix().to_string(), "fdf0:6a54:bda7::/48");
    }

    #[test]
    fn ten_thousand_nodes_get_distinct_addresses_in_the_prefix() {
        let ula: Ipv6Net = "fd00::/8".parse().unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..10_000u32 {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            getrandom::fill(&mut seed[4..]).unwrap();
            let addr = address(&SecretKey::from_seed(&seed).node_id());
            assert!(ula.contains(&addr), "{addr}");
            assert!(is_overlay(&addr), "{addr}");
            assert!(seen.insert(addr), "collision at {i}: {addr}");
        }
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn ipv4_addresses_are_hosts_of_the_shared_space() {
        let mut seen = BTreeSet::new();
        for _ in 0..2000 {
            let addr = ipv4_address(&SecretKey::generate().node_id());
            assert!(ipv4_prefix().contains(&addr), "{addr}");
            assert_ne!(addr, ipv4_prefix().network());
            assert_ne!(addr, ipv4_prefix().broadcast());
            seen.insert(addr);
        }
        // 2000 draws from 2^22 collide rarely: at most a handful.
        assert!(seen.len() > 1990, "{}", seen.len());
        let node = SecretKey::from_seed(&[7u8; 32]).node_id();
        assert_eq!(ipv4_address(&node), ipv4_address(&node));
    }

    #[test]
    fn address_is_pinned() {
        // Pinned (computed independently with Python's hashlib and `cryptography`), so
        // that a change of the derivation, which would move every node of a running
        // mesh, cannot go unnoticed.
        let node = SecretKey::from_seed(&[7u8; 32]).node_id();
        assert_eq!(
            address(&node),
            "fdf0:6a54:bda7:47e:b1de:838f:f6ff:4739"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
        assert!(!is_overlay(&"fd00::1".parse().unwrap()));
        assert!(!is_overlay(&"fdf0:6a54:bda8::1".parse().unwrap()));
    }
}
