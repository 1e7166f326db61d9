//! Signed envelopes. Bytes from a peer are a [`Signed<T>`]; only [`Signed::verify`]
//! turns them into a [`Verified<T>`], and the rest of fluidos takes only the latter.
//!
//! Signature input: `"fluidos-sig-v1" 0x00 DOMAIN 0x00 payload`, where `payload` is the
//! canonical CBOR of the value and `DOMAIN` names the kind of value
//! ([`SignedPayload::DOMAIN`]), so a signature over one kind can never be replayed as another.

use std::marker::PhantomData;
use std::ops::Deref;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::canonical::{self, DecodeError};
use crate::{NodeId, SecretKey, Signature};

/// Prefix of every signature input.
pub const SIGNATURE_CONTEXT: &[u8] = b"fluidos-sig-v1";

/// A value that travels signed by one node.
pub trait SignedPayload: Serialize + DeserializeOwned {
    /// Domain-separation string, e.g. `fluidos/flavor/1`.
    const DOMAIN: &'static str;
    /// The node whose signature the value must carry.
    fn signer(&self) -> &NodeId;
}

/// The bytes an ed25519 signature of `domain` and `payload` covers.
pub fn signing_input(domain: &str, payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNATURE_CONTEXT.len() + domain.len() + 2 + payload.len());
    input.extend_from_slice(SIGNATURE_CONTEXT);
    input.push(0);
    input.extend_from_slice(domain.as_bytes());
    input.push(0);
    input.extend_from_slice(payload);
    input
}

/// Why a signed value could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key is not the key of the node the value names as its signer.
    #[error("cannot sign as {claimed:?} with the key of {actual:?}")]
    WrongKey {
        /// The signer the value names.
        claimed: NodeId,
        /// The key's node.
        actual: NodeId,
    },
    /// The value cannot be encoded.
    #[error(transparent)]
    Encode(#[from] canonical::EncodeError),
}

/// Why a signed value did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The payload is not canonical CBOR of the expected type.
    #[error("signed payload: {0}")]
    Decode(#[from] DecodeError),
    /// The signature is not the named signer's signature over the payload.
    #[error("signature of {signer:?} does not verify")]
    BadSignature {
        /// The node the payload names as signer.
        signer: NodeId,
    },
}

/// A value as it travels: its canonical CBOR and the signer's signature.
/// Its content cannot be read before it is verified.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    #[serde(with = "crate::bytes::vec")]
    payload: Vec<u8>,
    signature: Signature,
    #[serde(skip)]
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            payload: self.payload.clone(),
            signature: self.signature,
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.payload == other.payload && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("payload_len", &self.payload.len())
            .field("signature", &self.signature)
            .finish()
    }
}

impl<T: SignedPayload> Signed<T> {
    /// Signs `value` with `key`, which must be the key of `value.signer()`.
    pub fn sign(value: T, key: &SecretKey) -> Result<Verified<T>, SignError> {
        if key.node_id() != *value.signer() {
            return Err(SignError::WrongKey {
                claimed: *value.signer(),
                actual: key.node_id(),
            });
        }
        let payload = canonical::to_vec(&value)?;
        let signature = key.sign(&signing_input(T::DOMAIN, &payload));
        Ok(Verified {
            value,
            signed: Signed {
                payload,
                signature,
                _type: PhantomData,
            },
        })
    }

    /// Decodes the payload and checks the signature of the signer it names.
    pub fn verify(&self) -> Result<Verified<T>, VerifyError> {
        let value: T = canonical::from_slice(&self.payload)?;
        let signer = *value.signer();
        signer
            .verify(&signing_input(T::DOMAIN, &self.payload), &self.signature)
            .map_err(|_| VerifyError::BadSignature { signer })?;
        Ok(Verified {
            value,
            signed: self.clone(),
        })
    }
}

impl<T: SignedPayload> Signed<T> {
    /// [`Signed::verify`], remembering in `cache` the envelopes whose signature
    /// checked out: an envelope seen before (the same domain, payload and signature,
    /// byte for byte) is decoded again but its signature is not checked twice.
    ///
    /// For protocols that hear the same signed value many times (membership gossip
    /// relays every advert to many nodes): an ed25519 check costs ~50 µs, the digest
    /// that recognises a repeat ~1 µs. Only successes are remembered, so a forgery
    /// is checked (and refused) every time.
    pub fn verify_cached(&self, cache: &mut VerifyCache) -> Result<Verified<T>, VerifyError> {
        let digest = VerifyCache::digest(T::DOMAIN, &self.payload, &self.signature);
        if cache.contains(&digest) {
            cache.hits += 1;
            let value: T = canonical::from_slice(&self.payload)?;
            return Ok(Verified {
                value,
                signed: self.clone(),
            });
        }
        let verified = self.verify()?;
        cache.insert(digest);
        Ok(verified)
    }
}

/// A bounded memo of envelopes whose signature verified, for
/// [`Signed::verify_cached`]. Each is kept as the SHA-256 of its signature input
/// and signature (32 bytes); when full, the oldest is forgotten.
#[derive(Debug, Clone)]
pub struct VerifyCache {
    seen: std::collections::HashSet<[u8; 32]>,
    order: std::collections::VecDeque<[u8; 32]>,
    capacity: usize,
    hits: u64,
}

impl VerifyCache {
    /// A cache of at most `capacity` envelopes (0 remembers nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: std::collections::HashSet::with_capacity(capacity.min(1024)),
            order: std::collections::VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            hits: 0,
        }
    }

    /// Signature checks saved so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Envelopes remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn digest(domain: &str, payload: &[u8], signature: &Signature) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(signing_input(domain, payload));
        h.update(signature.0);
        h.finalize().into()
    }

    fn contains(&self, digest: &[u8; 32]) -> bool {
        self.seen.contains(digest)
    }

    fn insert(&mut self, digest: [u8; 32]) {
        if self.capacity == 0 || !self.seen.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

impl<T> Signed<T> {
    /// The canonical CBOR the signature covers.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Rebuilds an envelope from its parts (for tests and foreign encodings).
    pub fn from_parts(payload: Vec<u8>, signature: Signature) -> Self {
        Self {
            payload,
            signature,
            _type: PhantomData,
        }
    }
}

/// A value whose signature has been checked. It can only be made by signing or by
/// verifying, and it keeps the exact bytes that were signed so they can be passed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T> {
    value: T,
    signed: Signed<T>,
}

impl<T> Verified<T> {
    /// The signed form, to send or store.
    pub fn signed(&self) -> &Signed<T> {
        &self.signed
    }

    /// The value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl SignedPayload for crate::Flavor {
    const DOMAIN: &'static str = "fluidos/flavor/1";
    fn signer(&self) -> &NodeId {
        &self.owner
    }
}

/// Decodes a `Signed<T>` envelope sent by a peer (size-limited, canonical).
pub fn decode_envelope<T: DeserializeOwned>(bytes: &[u8]) -> Result<Signed<T>, DecodeError> {
    canonical::from_slice_limited::<Signed<T>>(bytes, canonical::MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flavor::tests::sample;

    #[test]
    fn the_cache_skips_only_repeats_of_verified_envelopes() {
        let key = SecretKey::generate();
        let verified = Signed::sign(sample(key.node_id()), &key).unwrap();
        let mut cache = VerifyCache::new(2);
        let once = verified.signed().verify_cached(&mut cache).unwrap();
        assert_eq!((cache.hits(), cache.len()), (0, 1));
        let twice = verified.signed().verify_cached(&mut cache).unwrap();
        assert_eq!(once, twice);
        assert_eq!(cache.hits(), 1);

        // A forgery (another payload under the same signature) is checked, refused,
        // and not remembered, however often it comes.
        let other = canonical::to_vec(&sample(SecretKey::generate().node_id())).unwrap();
        let forged = Signed::<crate::Flavor>::from_parts(other, *verified.signed().signature());
        for _ in 0..2 {
            assert!(matches!(
                forged.verify_cached(&mut cache),
                Err(VerifyError::BadSignature { .. })
            ));
        }
        assert_eq!((cache.hits(), cache.len()), (1, 1));

        // Bounded: the oldest is forgotten and then checked again.
        for _ in 0..2 {
            let k = SecretKey::generate();
            Signed::sign(sample(k.node_id()), &k)
                .unwrap()
                .signed()
                .verify_cached(&mut cache)
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        verified.signed().verify_cached(&mut cache).unwrap();
        assert_eq!(cache.hits(), 1, "the first envelope was forgotten");
    }

    #[test]
    fn sign_verify_and_forgery() {
        let key = SecretKey::generate();
        let flavor = sample(key.node_id());
        let verified = Signed::sign(flavor.clone(), &key).unwrap();
        assert_eq!(*verified, flavor);
        let again = verified.signed().verify().unwrap();
        assert_eq!(*again, flavor);

        // A flavor claiming another owner cannot be signed with this key.
        let other = SecretKey::generate();
        assert!(matches!(
            Signed::sign(sample(other.node_id()), &key),
            Err(SignError::WrongKey { .. })
        ));

        // Changing one payload byte breaks the signature (or the decoding).
        let mut payload = verified.signed().payload().to_vec();
        let last = payload.len() - 1;
        payload[last] ^= 1;
        let forged = Signed::<crate::Flavor>::from_parts(payload, *verified.signed().signature());
        assert!(forged.verify().is_err());

        // Someone else's signature over the right bytes does not verify.
        let forged = Signed::<crate::Flavor>::from_parts(
            verified.signed().payload().to_vec(),
            other.sign(&signing_input(
                "fluidos/flavor/1",
                verified.signed().payload(),
            )),
        );
        assert!(matches!(
            forged.verify(),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn envelope_round_trips_through_cbor() {
        let key = SecretKey::generate();
        let verified = Signed::sign(sample(key.node_id()), &key).unwrap();
        let bytes = canonical::to_vec(verified.signed()).unwrap();
        let back: Signed<crate::Flavor> = decode_envelope(&bytes).unwrap();
        assert_eq!(&back, verified.signed());
        back.verify().unwrap();
    }
}
