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
