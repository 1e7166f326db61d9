//! Signed, expiring adverts: what a node tells a catalog (or a LAN peer) about itself.
//!
//! An advert travels as the canonical CBOR of a [`Signed<Advert>`] envelope
//! (`{"payload": bytes, "signature": bytes}`), signed under the domain
//! [`ADVERT_DOMAIN`]. Consumers turn bytes into a [`Verified<Advert>`] only through
//! [`verify_advert`], which checks size, encoding, signature, expiry, and that the
//! advert is the one they asked for (right node, right catalog).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use fluidos_contracts::signed::{self, SignError, VerifyCache, VerifyError};
use fluidos_contracts::{
    Architecture, Flavor, FlavorId, Location, NodeId, Price, Resources, SecretKey, Signed,
    SignedPayload, Timestamp, Verified,
};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Signature domain of adverts.
pub const ADVERT_DOMAIN: &str = "fluidos/advert/1";
/// The largest advert envelope a node accepts or publishes, in bytes.
pub const MAX_ADVERT_BYTES: usize = 8 * 1024;
/// The longest validity (`expires_at - issued_at`) a consumer accepts.
pub const MAX_ADVERT_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// How far in the future `issued_at` may lie before an advert is refused (clock skew).
pub const MAX_CLOCK_SKEW_MS: u64 = 60 * 1000;
/// The most addresses a node puts in its advert.
pub const MAX_ADVERT_ADDRESSES: usize = 16;

/// What a node announces about itself. The node fills in identity, addresses,
/// validity and sequence; the embedder chooses this part ([`crate::DiscoveryHandle::set_advert`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertBody {
    /// Free-form labels (`zone=edge`).
    pub labels: BTreeMap<String, String>,
    /// What the node does in the market.
    pub roles: BTreeSet<Role>,
    /// Where the node is, if it says.
    pub location: Option<Location>,
    /// Its CPU architecture, if it says.
    pub architecture: Option<Architecture>,
    /// A summary of the flavors it sells, with a price hint.
    pub flavors: Vec<FlavorSummary>,
}

/// A role a node plays in the market. Travels as a lower-case string; strings this
/// version does not know decode as [`Role::Other`], so newer peers stay readable.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Role {
    /// Sells resources.
    Provider,
    /// Buys resources.
    Consumer,
    /// Brokers or forwards for others.
    Supernode,
    /// A role this version does not know.
    Other(String),
}

impl From<String> for Role {
    fn from(s: String) -> Self {
        match s.as_str() {
            "provider" => Role::Provider,
            "consumer" => Role::Consumer,
            "supernode" => Role::Supernode,
            _ => Role::Other(s),
        }
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.to_string()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Provider => "provider",
            Role::Consumer => "consumer",
            Role::Supernode => "supernode",
            Role::Other(s) => s,
        })
    }
}

/// One flavor as an advert summarises it: enough to decide whether to ask
/// `ListFlavors`, not enough to buy (the signed flavor comes from REAR).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlavorSummary {
    /// The flavor.
    pub id: FlavorId,
    /// What it offers now.
    pub resources: Resources,
    /// Its CPU architecture.
    pub architecture: Architecture,
    /// GPU model, if it has GPUs.
    pub gpu_model: Option<String>,
    /// Price of the whole flavor (a hint; the signed flavor is authoritative).
    pub price: Price,
    /// The flavor's own validity.
    pub valid_until: Timestamp,
}

impl From<&Flavor> for FlavorSummary {
    fn from(f: &Flavor) -> Self {
        Self {
            id: f.id,
            resources: f.characteristics.resources,
            architecture: f.characteristics.architecture.clone(),
            gpu_model: f.characteristics.gpu.as_ref().map(|g| g.model.clone()),
            price: f.price.clone(),
            valid_until: f.valid_until,
        }
    }
}

/// A node's signed announcement, in one catalog or directly to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// The announcing node; it signs the advert.
    pub node: NodeId,
    /// The catalog it is published in; `None` for an advert handed out directly
    /// (`/fluidos/advert/1`, to mDNS and manual peers). Binding the catalog stops an
    /// advert from being replayed into a catalog its node did not choose.
    pub catalog: Option<String>,
    /// Where to reach the node (binary multiaddrs).
    #[serde(with = "multiaddrs")]
    pub addresses: Vec<Multiaddr>,
    /// See [`AdvertBody::labels`].
    pub labels: BTreeMap<String, String>,
    /// See [`AdvertBody::roles`].
    pub roles: BTreeSet<Role>,
    /// See [`AdvertBody::location`].
    pub location: Option<Location>,
    /// See [`AdvertBody::architecture`].
    pub architecture: Option<Architecture>,
    /// See [`AdvertBody::flavors`].
    pub flavors: Vec<FlavorSummary>,
    /// When it was signed (wall clock).
    pub issued_at: Timestamp,
    /// When it stops being valid. Equal to `issued_at` for a withdrawal.
    pub expires_at: Timestamp,
    /// Grows with every advert the node issues; the higher one wins.
    pub seq: u64,
}

impl SignedPayload for Advert {
    const DOMAIN: &'static str = ADVERT_DOMAIN;
    fn signer(&self) -> &NodeId {
        &self.node
    }
}

impl Advert {
    /// Assembles an advert from its parts.
    pub fn new(
        node: NodeId,
        catalog: Option<String>,
        addresses: Vec<Multiaddr>,
        body: AdvertBody,
        issued_at: Timestamp,
        expires_at: Timestamp,
        seq: u64,
    ) -> Self {
        Self {
            node,
            catalog,
            addresses,
            labels: body.labels,
            roles: body.roles,
            location: body.location,
            architecture: body.architecture,
            flavors: body.flavors,
            issued_at,
            expires_at,
            seq,
        }
    }

    /// Whether this advert withdraws its node (zero validity).
    pub fn is_withdrawal(&self) -> bool {
        self.expires_at <= self.issued_at
    }

    /// Signs the advert with its node's key and encodes the envelope.
    pub fn sign(self, key: &SecretKey) -> Result<(Verified<Advert>, Vec<u8>), PublishError> {
        let verified = Signed::sign(self, key)?;
        let bytes = fluidos_contracts::canonical::to_vec(verified.signed())
            .map_err(|e| PublishError::Sign(SignError::Encode(e)))?;
        if bytes.len() > MAX_ADVERT_BYTES {
            return Err(PublishError::TooLarge {
                len: bytes.len(),
                max: MAX_ADVERT_BYTES,
            });
        }
        Ok((verified, bytes))
    }
}

/// Why an advert could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Signing or encoding failed.
    #[error("cannot sign advert: {0}")]
    Sign(#[from] SignError),
    /// The advert is larger than peers accept; announce fewer flavors or labels.
    #[error(
        "advert of {len} bytes exceeds the limit of {max} bytes; announce fewer flavors or labels"
    )]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// What a consumer expects an advert to be.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    /// The node it must come from (the one we asked about).
    pub node: Option<NodeId>,
    /// The catalog it must name; `None` for a direct advert.
    pub catalog: Option<&'a str>,
}

/// Why an advert from the network was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertError {
    /// The envelope is larger than [`MAX_ADVERT_BYTES`].
    #[error("advert of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a canonical advert envelope.
    #[error("malformed advert: {0}")]
    Malformed(String),
    /// The signature is not the named node's.
    #[error("advert signature of {node:?} does not verify")]
    BadSignature {
        /// The node the advert claims to be from.
        node: NodeId,
    },
    /// Its validity has ended.
    #[error("advert expired at {expires_at} (now {now})")]
    Expired {
        /// When it expired.
        expires_at: Timestamp,
        /// Now.
        now: Timestamp,
    },
    /// It was issued too far in the future, or claims too long a validity.
    #[error("advert validity {issued_at}..{expires_at} is not acceptable")]
    BadValidity {
        /// Its issue time.
        issued_at: Timestamp,
        /// Its expiry.
        expires_at: Timestamp,
    },
    /// It is not from the node we asked about.
    #[error("advert is from {found:?}, expected {expected:?}")]
    WrongNode {
        /// Who we asked about.
        expected: NodeId,
        /// Who signed it.
        found: NodeId,
    },
    /// It names another catalog (or none where one was expected).
    #[error("advert names catalog {found:?}, expected {expected:?}")]
    WrongCatalog {
        /// The catalog expected.
        expected: Option<String>,
        /// The catalog named.
        found: Option<String>,
    },
    /// A valid withdrawal: the node left.
    #[error("node {node:?} withdrew its advert (seq {seq})")]
    Withdrawn {
        /// The node.
        node: NodeId,
        /// The withdrawal's sequence number.
        seq: u64,
    },
}

impl AdvertError {
    /// A short, stable name for logs and counters.
    pub fn reason(&self) -> &'static str {
        match self {
            AdvertError::TooLarge { .. } => "too_large",
            AdvertError::Malformed(_) => "malformed",
            AdvertError::BadSignature { .. } => "bad_signature",
            AdvertError::Expired { .. } => "expired",
            AdvertError::BadValidity { .. } => "bad_validity",
            AdvertError::WrongNode { .. } => "wrong_node",
            AdvertError::WrongCatalog { .. } => "wrong_catalog",
            AdvertError::Withdrawn { .. } => "withdrawn",
        }
    }
}

/// Checks advert bytes from the network: size, canonical encoding, signature, the
/// expected node and catalog, then validity at `now`.
///
/// A correctly signed withdrawal yields [`AdvertError::Withdrawn`], so callers can drop
/// the node at once rather than wait for its old advert to expire.
pub fn verify_advert(
    bytes: &[u8],
    expected: &Expected<'_>,
    now: Timestamp,
) -> Result<Verified<Advert>, AdvertError> {
    check_advert(verify_signature(bytes, None)?, expected, now)
}

/// [`verify_advert`] with a memo of the envelopes whose signature already
/// verified (see [`VerifyCache`]): every other check runs each time.
pub(crate) fn verify_advert_cached(
    bytes: &[u8],
    expected: &Expected<'_>,
    now: Timestamp,
    cache: &mut VerifyCache,
) -> Result<Verified<Advert>, AdvertError> {
    check_advert(verify_signature(bytes, Some(cache))?, expected, now)
}

fn check_advert(
    advert: Verified<Advert>,
    expected: &Expected<'_>,
    now: Timestamp,
) -> Result<Verified<Advert>, AdvertError> {
    if let Some(node) = expected.node
        && advert.node != node
    {
        return Err(AdvertError::WrongNode {
            expected: node,
            found: advert.node,
        });
    }
    if advert.catalog.as_deref() != expected.catalog {
        return Err(AdvertError::WrongCatalog {
            expected: expected.catalog.map(str::to_string),
            found: advert.catalog.clone(),
        });
    }
    if advert.is_withdrawal() {
        return Err(AdvertError::Withdrawn {
            node: advert.node,
            seq: advert.seq,
        });
    }
    check_validity(&advert, now)?;
    Ok(advert)
}

/// Size, encoding and signature only: what a DHT node checks before storing a record
/// (withdrawals included, since they must replace the advert they withdraw).
pub(crate) fn verify_signature(
    bytes: &[u8],
    cache: Option<&mut VerifyCache>,
) -> Result<Verified<Advert>, AdvertError> {
    if bytes.len() > MAX_ADVERT_BYTES {
        return Err(AdvertError::TooLarge {
            len: bytes.len(),
            max: MAX_ADVERT_BYTES,
        });
    }
    let envelope: Signed<Advert> = signed::decode_envelope(bytes)
        .map_err(|e| AdvertError::Malformed(format!("envelope: {e}")))?;
    let verified = match cache {
        Some(cache) => envelope.verify_cached(cache),
        None => envelope.verify(),
    };
    verified.map_err(|e| match e {
        VerifyError::BadSignature { signer } => AdvertError::BadSignature { node: signer },
        other => AdvertError::Malformed(other.to_string()),
    })
}

fn check_validity(advert: &Advert, now: Timestamp) -> Result<(), AdvertError> {
    let bad = AdvertError::BadValidity {
        issued_at: advert.issued_at,
        expires_at: advert.expires_at,
    };
    if advert.issued_at > now.plus_ms(MAX_CLOCK_SKEW_MS) {
        return Err(bad);
    }
    if advert.issued_at.until(advert.expires_at) > MAX_ADVERT_TTL_MS {
        return Err(bad);
    }
    if advert.expires_at <= now {
        return Err(AdvertError::Expired {
            expires_at: advert.expires_at,
            now,
        });
    }
    Ok(())
}

/// `Vec<Multiaddr>` as an array of binary multiaddrs (CBOR byte strings), or of
/// strings in human-readable formats.
mod multiaddrs {
    use libp2p::Multiaddr;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(addrs: &[Multiaddr], s: S) -> Result<S::Ok, S::Error> {
        let readable = s.is_human_readable();
        let mut seq = s.serialize_seq(Some(addrs.len()))?;
        for a in addrs {
            if readable {
                seq.serialize_element(&a.to_string())?;
            } else {
                seq.serialize_element(&Bytes(a.as_ref()))?;
            }
        }
        seq.end()
    }

    struct Bytes<'a>(&'a [u8]);
    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct One;
    impl<'de> Visitor<'de> for One {
        type Value = Multiaddr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a binary or textual multiaddr")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Multiaddr, E> {
            Multiaddr::try_from(v.to_vec()).map_err(E::custom)
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Multiaddr, E> {
            Multiaddr::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Multiaddr, E> {
            v.parse().map_err(E::custom)
        }
    }

    struct Addr(Multiaddr);
    impl<'de> serde::Deserialize<'de> for Addr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                d.deserialize_str(One).map(Addr)
            } else {
                d.deserialize_bytes(One).map(Addr)
            }
        }
    }

    struct Many;
    impl<'de> Visitor<'de> for Many {
        type Value = Vec<Multiaddr>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of multiaddrs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Addr(a)) = seq.next_element()? {
                if out.len() >= super::MAX_ADVERT_ADDRESSES {
                    return Err(A::Error::custom("too many addresses"));
                }
                out.push(a);
            }
            Ok(out)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Multiaddr>, D::Error> {
        d.deserialize_seq(Many)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn advert(key: &SecretKey, catalog: Option<&str>, now: Timestamp) -> Advert {
        let body = AdvertBody {
            labels: [("zone".to_string(), "edge".to_string())].into(),
            roles: [Role::Provider].into(),
            location: Some(Location {
                country: "IT".into(),
                ..Default::default()
            }),
            architecture: Some(Architecture::X86_64),
            flavors: vec![],
        };
        Advert::new(
            key.node_id(),
            catalog.map(str::to_string),
            vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            body,
            now,
            now.plus_ms(60_000),
            1,
        )
    }

    #[test]
    fn sign_encode_verify_round_trip() {
        let key = SecretKey::generate();
        let now = Timestamp(1_000_000);
        let (_, bytes) = advert(&key, Some("eu"), now).sign(&key).unwrap();
        let expected = Expected {
            node: Some(key.node_id()),
            catalog: Some("eu"),
        };
        let v = verify_advert(&bytes, &expected, now).unwrap();
        assert_eq!(v.addresses[0].to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(v.roles, [Role::Provider].into());
    }

    #[test]
    fn bad_adverts_are_refused_with_a_reason() {
        let key = SecretKey::generate();
        let other = SecretKey::generate();
        let now = Timestamp(1_000_000);
        let exp = Expected {
            node: Some(key.node_id()),
            catalog: Some("eu"),
        };
        // Expired.
        let (_, bytes) = advert(&key, Some("eu"), now).sign(&key).unwrap();
        let later = now.plus_ms(60_000);
        assert!(matches!(
            verify_advert(&bytes, &exp, later),
            Err(AdvertError::Expired { .. })
        ));
        // Another catalog.
        let (_, bytes) = advert(&key, Some("us"), now).sign(&key).unwrap();
        assert!(matches!(
            verify_advert(&bytes, &exp, now),
            Err(AdvertError::WrongCatalog { .. })
        ));
        // Another node.
        let (_, bytes) = advert(&other, Some("eu"), now).sign(&other).unwrap();
        assert!(matches!(
            verify_advert(&bytes, &exp, now),
            Err(AdvertError::WrongNode { .. })
        ));
        // Forged signature: the payload names `key`, the signature is `other`'s.
        let payload = fluidos_contracts::canonical::to_vec(&advert(&key, Some("eu"), now)).unwrap();
        let sig = other.sign(&signed::signing_input(ADVERT_DOMAIN, &payload));
        let forged = Signed::<Advert>::from_parts(payload, sig);
        let bytes = fluidos_contracts::canonical::to_vec(&forged).unwrap();
        assert!(matches!(
            verify_advert(&bytes, &exp, now),
            Err(AdvertError::BadSignature { .. })
        ));
        // Garbage and oversized.
        assert!(matches!(
            verify_advert(&[0xff, 0x13], &exp, now),
            Err(AdvertError::Malformed(_))
        ));
        let big = vec![0u8; MAX_ADVERT_BYTES + 1];
        assert!(matches!(
            verify_advert(&big, &exp, now),
            Err(AdvertError::TooLarge { .. })
        ));
        // Too long a validity, or issued in the future.
        let mut a = advert(&key, Some("eu"), now);
        a.expires_at = now.plus_ms(MAX_ADVERT_TTL_MS + 1);
        let (_, bytes) = a.sign(&key).unwrap();
        assert!(matches!(
            verify_advert(&bytes, &exp, now),
            Err(AdvertError::BadValidity { .. })
        ));
        let a = advert(&key, Some("eu"), now.plus_ms(MAX_CLOCK_SKEW_MS + 1));
        let (_, bytes) = a.sign(&key).unwrap();
        assert!(matches!(
            verify_advert(&bytes, &exp, now),
            Err(AdvertError::BadValidity { .. })
        ));
        // A withdrawal is recognised as such.
        let mut a = advert(&key, Some("eu"), now);
        a.expires_at = a.issued_at;
        let (_, bytes) = a.sign(&key).unwrap();
        assert!(matches!(
            verify_advert(&bytes, &exp, now),
            Err(AdvertError::Withdrawn { .. })
        ));
    }

    #[test]
    fn oversized_adverts_are_not_published() {
        let key = SecretKey::generate();
        let mut a = advert(&key, None, Timestamp(1));
        a.labels.insert("big".into(), "x".repeat(MAX_ADVERT_BYTES));
        assert!(matches!(a.sign(&key), Err(PublishError::TooLarge { .. })));
    }

    #[test]
    fn unknown_roles_survive_decoding() {
        let roles: BTreeSet<Role> = [Role::Consumer, Role::Other("oracle".into())].into();
        let bytes = fluidos_contracts::canonical::to_vec(&roles).unwrap();
        let back: BTreeSet<Role> = fluidos_contracts::canonical::from_slice(&bytes).unwrap();
        assert_eq!(back, roles);
    }

    proptest::proptest! {
        #[test]
        fn adverts_round_trip(labels in proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..6),
                              seq in 0u64..u64::MAX, port in 1u16..u16::MAX) {
            let key = SecretKey::from_seed(&[3u8; 32]);
            let mut a = advert(&key, Some("c"), Timestamp(5));
            a.labels = labels;
            a.seq = seq;
            a.addresses = vec![format!("/ip4/10.0.0.1/udp/{port}/quic-v1").parse().unwrap()];
            let bytes = fluidos_contracts::canonical::to_vec(&a).unwrap();
            let back: Advert = fluidos_contracts::canonical::from_slice(&bytes).unwrap();
            proptest::prop_assert_eq!(back, a);
        }
    }
}
