//! One identity per node: an ed25519 key whose public half is the [`NodeId`].
//!
//! The same 32-byte secret yields the libp2p `PeerId` (in `fluidos-discovery`),
//! the node's `did:key`, and the key that signs flavors, adverts and contracts.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Multicodec prefix of an ed25519 public key (`0xed`, varint-encoded).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];
const DID_KEY_PREFIX: &str = "did:key:z";

/// The public identity of a node: its ed25519 public key.
///
/// Displays and parses as a `did:key` (`did:key:z6Mk…`). On the wire (CBOR) it is a
/// 32-byte byte string; in JSON it is the `did:key` string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Wraps raw public-key bytes, checking that they are a valid ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, ParseNodeIdError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| ParseNodeIdError::InvalidKey)?;
        Ok(Self(bytes))
    }

    /// The 32 bytes of the public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The `did:key` of this node, e.g. `did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH`.
    pub fn to_did_key(&self) -> String {
        let mut multicodec = Vec::with_capacity(34);
        multicodec.extend_from_slice(&ED25519_MULTICODEC);
        multicodec.extend_from_slice(&self.0);
        format!("{DID_KEY_PREFIX}{}", bs58::encode(multicodec).into_string())
    }

    /// A short form for logs and tables: the last 8 characters of the did:key.
    pub fn short(&self) -> String {
        let did = self.to_did_key();
        did[did.len() - 8..].to_string()
    }

    /// Verifies an ed25519 signature made by this node over `message`, strictly
    /// (`verify_strict`: no small-order keys, no malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig).map_err(|_| SignatureError)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_did_key())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// Why a string or bytes are not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseNodeIdError {
    /// The string does not start with `did:key:z`.
    #[error("not a did:key (expected it to start with `did:key:z`)")]
    NotDidKey,
    /// The multibase part is not valid base58btc.
    #[error("did:key is not valid base58btc")]
    Base58,
    /// The key is not an ed25519 key (multicodec 0xed01) of 32 bytes.
    #[error("did:key does not hold a 32-byte ed25519 public key")]
    NotEd25519,
    /// The 32 bytes are not a valid ed25519 public key.
    #[error("bytes are not a valid ed25519 public key")]
    InvalidKey,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept a did:key URL with a fragment (`did:key:z…#z…`) as well.
        let s = s.split('#').next().unwrap_or(s);
        let encoded = s
            .strip_prefix(DID_KEY_PREFIX)
            .ok_or(ParseNodeIdError::NotDidKey)?;
        let raw = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| ParseNodeIdError::Base58)?;
        let key = raw
            .strip_prefix(&ED25519_MULTICODEC[..])
            .ok_or(ParseNodeIdError::NotEd25519)?;
        let key: [u8; 32] = key.try_into().map_err(|_| ParseNodeIdError::NotEd25519)?;
        Self::from_bytes(key)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_did_key())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let bytes: [u8; 32] = crate::bytes::deserialize_array(d)?;
            NodeId::from_bytes(bytes).map_err(serde::de::Error::custom)
        }
    }
}

/// An ed25519 signature (64 bytes). A byte string in CBOR, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::bytes::deserialize_array(d).map(Signature)
    }
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ed25519 signature does not verify")]
pub struct SignatureError;

/// A node's secret key: the 32-byte ed25519 seed.
///
/// It is zeroized on drop and its `Debug` output shows only the public [`NodeId`].
#[derive(Clone)]
pub struct SecretKey {
    signing: SigningKey,
}

impl SecretKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        // getrandom only fails when the OS has no entropy source at all; nothing
        // sensible can run then.
        #[allow(clippy::expect_used)]
        getrandom::fill(seed.as_mut()).expect("the operating system's random source failed");
        Self::from_seed(&seed)
    }

    /// Builds the key from a 32-byte seed (for example one read from the key file).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The seed, to be stored or handed to libp2p. Keep the copy short-lived.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public identity of this key.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message` as it is. Callers add domain separation (see [`crate::signed`]).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_key_round_trip() {
        let key = SecretKey::generate();
        let id = key.node_id();
        let did = id.to_did_key();
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(did.parse::<NodeId>().unwrap(), id);
        assert_eq!(
            format!("{did}#{}", &did[8..]).parse::<NodeId>().unwrap(),
            id
        );
    }

    #[test]
    fn known_did_key_vector() {
        // Test vector from the did:key specification (ed25519, all-zero-free example).
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let id: NodeId = did.parse().unwrap();
        assert_eq!(id.to_did_key(), did);
    }

    #[test]
    fn bad_did_keys_are_refused() {
        assert_eq!(
            "did:web:example.org".parse::<NodeId>(),
            Err(ParseNodeIdError::NotDidKey)
        );
        assert_eq!(
            "did:key:z0OIl".parse::<NodeId>(),
            Err(ParseNodeIdError::Base58)
        );
        // A secp256k1 did:key (multicodec 0xe7).
        assert_eq!(
            "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme".parse::<NodeId>(),
            Err(ParseNodeIdError::NotEd25519)
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = SecretKey::from_seed(&[7u8; 32]);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&hex::encode([7u8; 32])));
        assert!(!debug.contains("[7, 7"));
        assert!(debug.contains("SecretKey"));
    }

    #[test]
    fn signatures_verify_strictly() {
        let key = SecretKey::generate();
        let sig = key.sign(b"hello");
        key.node_id().verify(b"hello", &sig).unwrap();
        assert_eq!(key.node_id().verify(b"hellO", &sig), Err(SignatureError));
        let other = SecretKey::generate();
        assert_eq!(other.node_id().verify(b"hello", &sig), Err(SignatureError));
    }

    #[test]
    fn node_id_encodes_as_bytes_in_cbor_and_did_in_json() {
        let id = SecretKey::generate().node_id();
        let cbor = crate::canonical::to_vec(&id).unwrap();
        assert_eq!(cbor.len(), 34); // 0x58 0x20 + 32 bytes
        assert_eq!(crate::canonical::from_slice::<NodeId>(&cbor).unwrap(), id);
        let json = serde_json_like(&id);
        assert!(json.contains("did:key:z6Mk"));
    }

    fn serde_json_like(id: &NodeId) -> String {
        // A human-readable serializer without pulling serde_json into the default build.
        id.to_string()
    }
}
