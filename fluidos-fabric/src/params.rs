//! The fabric parameters a party puts into a contract, and checking a peer's.

use std::net::{Ipv6Addr, SocketAddr};

use boringtun::x25519;
use fluidos_contracts::{FabricParams, NodeId, WireGuardKey};

use crate::{WireGuardSecret, overlay};

/// Most endpoints a party may list; more is a misbehaving peer, not a multi-homed one.
pub const MAX_ENDPOINTS: usize = 16;

/// The fabric parameters this node offers in a contract: its WireGuard public key,
/// the UDP endpoints where it accepts WireGuard (order kept, duplicates dropped, at
/// most [`MAX_ENDPOINTS`]), and its overlay address.
pub fn fabric_params(
    secret: &WireGuardSecret,
    endpoints: impl IntoIterator<Item = SocketAddr>,
    node_id: &NodeId,
) -> FabricParams {
    let mut kept: Vec<SocketAddr> = Vec::new();
    for endpoint in endpoints {
        if kept.len() == MAX_ENDPOINTS {
            break;
        }
        if !kept.contains(&endpoint) {
            kept.push(endpoint);
        }
    }
    FabricParams {
        wireguard_key: secret.public(),
        endpoints: kept.iter().map(SocketAddr::to_string).collect(),
        overlay_address: Some(overlay::address(node_id).to_string()),
    }
}

/// A peer's fabric parameters, checked: what a tunnel to it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFabric {
    /// The peer's WireGuard static public key.
    pub public_key: WireGuardKey,
    /// The peer's overlay address, always [`overlay::address`] of its node id.
    pub overlay: Ipv6Addr,
    /// Where it accepts WireGuard, in its order of preference.
    pub endpoints: Vec<SocketAddr>,
}

/// Why a peer's fabric parameters are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerParamsError {
    /// The WireGuard key is a low-order point (for example all zeros): every shared
    /// secret with it is predictable, so no tunnel with it is private.
    #[error("peer WireGuard key is a low-order point and cannot secure a tunnel")]
    WeakKey,
    /// An endpoint is not an `ip:port` literal (fluidos advertises literal addresses).
    #[error("peer endpoint `{endpoint}` is not an ip:port address")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
    },
    /// More endpoints than [`MAX_ENDPOINTS`].
    #[error("peer lists {count} endpoints, more than the limit of {MAX_ENDPOINTS}")]
    TooManyEndpoints {
        /// How many it listed.
        count: usize,
    },
    /// The claimed overlay address is not the one derived from the peer's node id.
    #[error("peer claims overlay address {claimed}, but its node id gives {expected}")]
    OverlayMismatch {
        /// What the peer claimed.
        claimed: String,
        /// [`overlay::address`] of its node id.
        expected: Ipv6Addr,
    },
}

impl PeerFabric {
    /// Checks the parameters `node` put into a contract. The overlay address may be
    /// absent (it is derived anyway) but, when given, must be the derived one.
    pub fn check(params: &FabricParams, node: &NodeId) -> Result<Self, PeerParamsError> {
        if is_low_order(&params.wireguard_key) {
            return Err(PeerParamsError::WeakKey);
        }
        let expected = overlay::address(node);
        if let Some(claimed) = &params.overlay_address
            && claimed.parse::<Ipv6Addr>() != Ok(expected)
        {
            return Err(PeerParamsError::OverlayMismatch {
                claimed: claimed.clone(),
                expected,
            });
        }
        if params.endpoints.len() > MAX_ENDPOINTS {
            return Err(PeerParamsError::TooManyEndpoints {
                count: params.endpoints.len(),
            });
        }
        let endpoints = params
            .endpoints
            .iter()
            .map(|e| {
                e.parse::<SocketAddr>()
                    .map_err(|_| PeerParamsError::BadEndpoint {
                        endpoint: e.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            public_key: params.wireguard_key,
            overlay: expected,
            endpoints,
        })
    }
}

/// Whether `key` is a point of small order, found by a Diffie-Hellman with a fixed
/// secret: any clamped scalar multiple of a small-order point is the identity, which
/// x25519 encodes as all zeros.
fn is_low_order(key: &WireGuardKey) -> bool {
    let probe = x25519::StaticSecret::from([0x5a; 32]);
    !probe
        .diffie_hellman(&x25519::PublicKey::from(key.0))
        .was_contributory()
}

#[cfg(test)]
mod tests {
    use fluidos_contracts::SecretKey;

    use super::*;

    #[test]
    fn own_params_pass_the_peer_check() {
        let node = SecretKey::generate().node_id();
        let secret = WireGuardSecret::generate();
        let a: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        let params = fabric_params(&secret, [a, b, a], &node);
        assert_eq!(params.wireguard_key, secret.public());
        assert_eq!(
            params.endpoints,
            ["198.18.0.1:51820", "[2001:db8::1]:51820"]
        );
        assert_eq!(
            params.overlay_address.as_deref(),
            Some(overlay::address(&node).to_string().as_str())
        );
        let peer = PeerFabric::check(&params, &node).unwrap();
        assert_eq!(peer.endpoints, [a, b]);
        assert_eq!(peer.overlay, overlay::address(&node));
        assert_eq!(peer.public_key, secret.public());

        let many = (0..100u16).map(|p| SocketAddr::from(([198, 18, 0, 1], 1000 + p)));
        assert_eq!(
            fabric_params(&secret, many, &node).endpoints.len(),
            MAX_ENDPOINTS
        );
    }

    #[test]
    fn bad_peer_params_are_refused() {
        let node = SecretKey::generate().node_id();
        let good = fabric_params(
            &WireGuardSecret::generate(),
            ["198.18.0.1:51820".parse().unwrap()],
            &node,
        );

        let mut p = good.clone();
        p.wireguard_key = WireGuardKey([0; 32]);
        assert_eq!(PeerFabric::check(&p, &node), Err(PeerParamsError::WeakKey));
        // u = 1 has order 4 on curve25519.
        let mut one = [0u8; 32];
        one[0] = 1;
        p.wireguard_key = WireGuardKey(one);
        assert_eq!(PeerFabric::check(&p, &node), Err(PeerParamsError::WeakKey));

        let other = SecretKey::generate().node_id();
        assert!(matches!(
            PeerFabric::check(&good, &other),
            Err(PeerParamsError::OverlayMismatch { .. })
        ));
        let mut p = good.clone();
        p.overlay_address = Some("not an address".into());
        assert!(matches!(
            PeerFabric::check(&p, &node),
            Err(PeerParamsError::OverlayMismatch { .. })
        ));
        let mut p = good.clone();
        p.overlay_address = None;
        assert_eq!(
            PeerFabric::check(&p, &node).unwrap().overlay,
            overlay::address(&node)
        );

        let mut p = good.clone();
        p.endpoints.push("wg.example.org:51820".into());
        assert!(matches!(
            PeerFabric::check(&p, &node),
            Err(PeerParamsError::BadEndpoint { endpoint }) if endpoint == "wg.example.org:51820"
        ));
        let mut p = good;
        p.endpoints = vec!["198.18.0.1:1".into(); MAX_ENDPOINTS + 1];
        assert!(matches!(
            PeerFabric::check(&p, &node),
            Err(PeerParamsError::TooManyEndpoints { count: 17 })
        ));
    }
}
