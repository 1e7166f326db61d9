//! Catalogs: the Kademlia DHT of the fluidos nodes that share one catalog name.
//!
//! All fluidos nodes speak one Kademlia protocol ([`KAD_PROTOCOL`]); a catalog is a
//! name inside it. Two kinds of DHT entries make a catalog:
//!
//! - **membership**: every member is a *provider* of the key
//!   `/fluidos/catalog/1/<name>/<shard>` ([`catalog_key`]), where `shard` is its
//!   [`shard_of`] in decimal. Kademlia answers a provider lookup with at most K (20)
//!   providers per peer, so one key could list only 20 members; [`CATALOG_SHARDS`]
//!   keys raise that to about 20 × 16 (a few hundred members, evenly spread);
//! - **adverts**: every member stores its signed advert as a *record* under
//!   `/fluidos/advert/1/<name>/<did:key>` ([`advert_key`]), with the record's
//!   expiry set to the advert's.
//!
//! Keys are the UTF-8 bytes of those strings; Kademlia hashes them (SHA-256) for
//! distance, as it does for every key.

use std::fmt;
use std::str::FromStr;

use fluidos_contracts::NodeId;
use libp2p::kad::RecordKey;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// The Kademlia protocol of fluidos (never the IPFS DHT's).
pub const KAD_PROTOCOL: &str = "/fluidos/kad/1";
const CATALOG_PREFIX: &str = "/fluidos/catalog/1/";
const ADVERT_PREFIX: &str = "/fluidos/advert/1/";
/// How many provider keys a catalog's membership is spread over.
pub const CATALOG_SHARDS: u8 = 16;

/// The shard of a node: the first byte of its public key, modulo [`CATALOG_SHARDS`].
pub fn shard_of(node: &NodeId) -> u8 {
    node.as_bytes()[0] % CATALOG_SHARDS
}

/// The longest catalog name.
pub const MAX_CATALOG_NAME: usize = 64;

/// A catalog name: 1 to 64 characters out of `a-z A-Z 0-9 - _ .`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CatalogName(String);

/// A string is not a valid catalog name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid catalog name {0:?}: use 1 to 64 characters out of a-z, A-Z, 0-9, '-', '_', '.'")]
pub struct CatalogNameError(String);

impl CatalogName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CatalogName {
    type Err = CatalogNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CATALOG_NAME
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(CatalogNameError(s.chars().take(80).collect()))
        }
    }
}

impl TryFrom<String> for CatalogName {
    type Error = CatalogNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CatalogName> for String {
    fn from(c: CatalogName) -> String {
        c.0
    }
}

impl fmt::Display for CatalogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A catalog this node is a member of, and where to join it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogConfig {
    /// The catalog.
    pub name: CatalogName,
    /// Catalog addresses to dial, each ending in `/p2p/<peer id>`. Any one reachable
    /// address is enough; unreachable ones are skipped.
    pub bootstrap: Vec<Multiaddr>,
}

impl CatalogConfig {
    /// A catalog joined through `bootstrap`.
    pub fn new(name: CatalogName, bootstrap: Vec<Multiaddr>) -> Self {
        Self { name, bootstrap }
    }
}

/// The provider key whose providers are the members of `catalog` in `shard`.
pub fn catalog_key(catalog: &CatalogName, shard: u8) -> RecordKey {
    RecordKey::new(&format!("{CATALOG_PREFIX}{catalog}/{shard}"))
}

/// The record key of `node`'s advert in `catalog`.
pub fn advert_key(catalog: &CatalogName, node: &NodeId) -> RecordKey {
    RecordKey::new(&format!("{ADVERT_PREFIX}{catalog}/{node}"))
}

/// The catalog and shard named by a provider key, if it is one.
pub fn parse_catalog_key(key: &RecordKey) -> Option<(CatalogName, u8)> {
    let s = std::str::from_utf8(key.as_ref()).ok()?;
    let (name, text) = s.strip_prefix(CATALOG_PREFIX)?.rsplit_once('/')?;
    let shard: u8 = text.parse().ok()?;
    // Only the canonical decimal form, so one shard has exactly one key.
    if shard >= CATALOG_SHARDS || shard.to_string() != text {
        return None;
    }
    Some((name.parse().ok()?, shard))
}

/// The catalog and node named by an advert record key, if it is one.
pub fn parse_advert_key(key: &RecordKey) -> Option<(CatalogName, NodeId)> {
    let s = std::str::from_utf8(key.as_ref()).ok()?;
    let (catalog, node) = s.strip_prefix(ADVERT_PREFIX)?.split_once('/')?;
    let (catalog, id): (CatalogName, NodeId) = (catalog.parse().ok()?, node.parse().ok()?);
    // Only the canonical key names a node: `NodeId` parsing also takes a DID URL
    // (`did:key:z…#fragment`), which would let one advert live under many keys.
    // Found by the `catalog_record` fuzz target.
    (id.to_did_key() == node).then_some((catalog, id))
}

/// Splits `/…/p2p/<id>` into the peer id and the address without it.
pub fn split_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut base = addr.clone();
    match base.pop()? {
        Protocol::P2p(peer) => Some((peer, base)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_contracts::SecretKey;

    #[test]
    fn only_canonical_advert_keys_parse() {
        let node = SecretKey::from_seed(&[3; 32]).node_id();
        let eu: CatalogName = "eu".parse().unwrap();
        let key = advert_key(&eu, &node);
        assert_eq!(parse_advert_key(&key), Some((eu, node)));
        let mut fragment = key.as_ref().to_vec();
        fragment.extend_from_slice(b"#cb/1c/c");
        assert_eq!(parse_advert_key(&RecordKey::new(&fragment)), None);
    }

    #[test]
    fn names_are_checked() {
        assert!("eu-west.1_a".parse::<CatalogName>().is_ok());
        assert!("".parse::<CatalogName>().is_err());
        assert!("a/b".parse::<CatalogName>().is_err());
        assert!("x".repeat(65).parse::<CatalogName>().is_err());
    }

    #[test]
    fn keys_are_the_documented_bytes_and_parse_back() {
        let name: CatalogName = "eu".parse().unwrap();
        assert_eq!(catalog_key(&name, 7).as_ref(), b"/fluidos/catalog/1/eu/7");
        assert_eq!(
            parse_catalog_key(&catalog_key(&name, 7)),
            Some((name.clone(), 7))
        );
        assert_eq!(
            parse_catalog_key(&RecordKey::new(b"/fluidos/catalog/1/eu/07")),
            None
        );
        assert_eq!(
            parse_catalog_key(&RecordKey::new(b"/fluidos/catalog/1/eu/16")),
            None
        );
        assert_eq!(
            parse_catalog_key(&RecordKey::new(b"/fluidos/catalog/1/eu")),
            None
        );
        let node = SecretKey::generate().node_id();
        let key = advert_key(&name, &node);
        assert_eq!(
            key.as_ref(),
            format!("/fluidos/advert/1/eu/{}", node.to_did_key()).as_bytes()
        );
        assert_eq!(parse_advert_key(&key), Some((name, node)));
        assert_eq!(
            parse_advert_key(&RecordKey::new(b"/fluidos/advert/1/eu")),
            None
        );
    }

    #[test]
    fn split_peer_needs_a_p2p_suffix() {
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let (p, base) = split_peer(&addr).unwrap();
        assert_eq!(p, peer);
        assert_eq!(base.to_string(), "/ip4/127.0.0.1/tcp/1");
        assert!(split_peer(&base).is_none());
    }
}
