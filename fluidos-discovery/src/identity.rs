//! The bridge between the fluidos identity ([`SecretKey`], [`NodeId`]) and libp2p's
//! ([`Keypair`], [`PeerId`]). Both are the same ed25519 key: the 32-byte seed of the
//! node's key file is the libp2p key, and the libp2p `PeerId` of an ed25519 key embeds
//! the public key itself (an identity multihash), so either id converts to the other.

use fluidos_contracts::{NodeId, SecretKey};
use libp2p::PeerId;
use libp2p::identity::{self, Keypair, PublicKey};

/// Multihash code of the identity hash, which libp2p uses for keys of 42 bytes or less.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The libp2p keypair of a fluidos node key.
pub fn keypair(key: &SecretKey) -> Keypair {
    // `ed25519_from_bytes` zeroizes the buffer it is given, so it gets a copy that is
    // itself zeroized on drop.
    let mut seed = key.to_seed();
    // Only the length is checked, and a seed is always 32 bytes.
    #[allow(clippy::expect_used)]
    Keypair::ed25519_from_bytes(&mut seed[..]).expect("a 32-byte seed is a valid ed25519 key")
}

/// The libp2p `PeerId` of a node.
pub fn peer_id(node: &NodeId) -> PeerId {
    // A `NodeId` is checked to be a valid ed25519 point when it is built, with the same
    // ed25519-dalek that libp2p uses, so this conversion cannot fail.
    #[allow(clippy::expect_used)]
    let pk = identity::ed25519::PublicKey::try_from_bytes(node.as_bytes())
        .expect("a NodeId is a valid ed25519 public key");
    PublicKey::from(pk).to_peer_id()
}

/// The fluidos `NodeId` of a libp2p `PeerId`, if the peer's key is ed25519
/// (other key types hash their key and cannot be fluidos nodes).
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    // An ed25519 key is always the same 36 protobuf bytes (field 1 = key type 1,
    // field 2 = 32 bytes): read the key straight out of them, which checks the
    // point once (in `NodeId::from_bytes`) rather than twice.
    if let [0x08, 0x01, 0x12, 0x20, key @ ..] = multihash.digest()
        && let Ok(key) = <[u8; 32]>::try_from(key)
    {
        return NodeId::from_bytes(key).ok();
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    NodeId::from_bytes(ed.to_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_of_keypair_equals_peer_id_of_node_id() {
        let key = SecretKey::generate();
        let from_keypair = keypair(&key).public().to_peer_id();
        assert_eq!(from_keypair, peer_id(&key.node_id()));
        assert!(from_keypair.to_string().starts_with("12D3KooW"));
        assert_eq!(node_id(&from_keypair), Some(key.node_id()));
    }

    #[test]
    fn did_key_and_peer_id_round_trip() {
        let key = SecretKey::generate();
        let did = key.node_id().to_did_key();
        let node: NodeId = did.parse().unwrap();
        let peer = peer_id(&node);
        let back = node_id(&peer).unwrap();
        assert_eq!(back, key.node_id());
        assert_eq!(back.to_did_key(), did);
        // Through the textual PeerId as well.
        let parsed: PeerId = peer.to_string().parse().unwrap();
        assert_eq!(node_id(&parsed), Some(node));
    }

    #[test]
    fn the_seed_is_the_same_key_on_both_sides() {
        let key = SecretKey::from_seed(&[9u8; 32]);
        let kp = keypair(&key);
        let sig = kp.sign(b"hello").unwrap();
        let mut raw = [0u8; 64];
        raw.copy_from_slice(&sig);
        key.node_id()
            .verify(b"hello", &fluidos_contracts::Signature(raw))
            .unwrap();
    }

    #[test]
    fn non_ed25519_peer_ids_have_no_node_id() {
        // A random PeerId is a sha256-style multihash, not an embedded ed25519 key.
        let random = PeerId::random();
        let mh: &libp2p::multihash::Multihash<64> = random.as_ref();
        if mh.code() != IDENTITY_MULTIHASH {
            assert_eq!(node_id(&random), None);
        }
        let hashed = PeerId::from_multihash(
            libp2p::multihash::Multihash::<64>::wrap(0x12, &[1u8; 32]).unwrap(),
        )
        .unwrap();
        assert_eq!(node_id(&hashed), None);
    }
}
