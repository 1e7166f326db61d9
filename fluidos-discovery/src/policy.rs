//! Discovery policies (FLUIDOS D2.1 §6.4.1): where this node announces itself
//! (outgoing) and which discovered nodes may become candidates (incoming).

use std::collections::{BTreeMap, BTreeSet};

use fluidos_contracts::{Architecture, NodeId};
use serde::{Deserialize, Serialize};

use crate::advert::{Advert, Role};
use crate::catalog::CatalogName;

/// How a candidate was found.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// mDNS on the local network.
    Mdns,
    /// A Kademlia catalog.
    Catalog(CatalogName),
    /// An address given by configuration or `add_peer`.
    Manual,
}

/// The kinds of [`Source`], for filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// mDNS.
    Mdns,
    /// Any catalog.
    Catalog,
    /// Manual peers.
    Manual,
}

impl Source {
    /// The kind of this source.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Mdns => SourceKind::Mdns,
            Source::Catalog(_) => SourceKind::Catalog,
            Source::Manual => SourceKind::Manual,
        }
    }
}

/// Where this node announces itself.
///
/// mDNS itself is switched by [`crate::DiscoveryConfig::mdns`]: libp2p's mDNS answers
/// queries whenever it listens, so announcing and listening on the LAN cannot be split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingPolicy {
    /// The catalogs to publish the advert in; `None` means every catalog joined.
    /// A catalog not listed is still searched, but this node is not a member of it.
    pub announce_in: Option<BTreeSet<CatalogName>>,
    /// Whether to hand the advert to peers that ask directly (`/fluidos/advert/1`),
    /// which is how mDNS and manual peers learn about this node.
    pub direct_adverts: bool,
}

impl Default for OutgoingPolicy {
    fn default() -> Self {
        Self {
            announce_in: None,
            direct_adverts: true,
        }
    }
}

impl OutgoingPolicy {
    /// Whether to publish in `catalog`.
    pub fn announces_in(&self, catalog: &CatalogName) -> bool {
        self.announce_in
            .as_ref()
            .is_none_or(|s| s.contains(catalog))
    }
}

/// Which discovered nodes may become candidates. Every set filter is a restriction;
/// the default admits everyone with a valid advert.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingPolicy {
    /// Accept only nodes found through these kinds of source (`None`: any).
    pub sources: Option<BTreeSet<SourceKind>>,
    /// Labels the advert must carry with exactly these values.
    pub labels: BTreeMap<String, String>,
    /// Accept only these countries (ISO 3166-1 alpha-2, compared case-insensitively);
    /// a node that states no country is refused when this is set.
    pub countries: Option<BTreeSet<String>>,
    /// Accept only these architectures; a node that states none is refused when set.
    pub architectures: Option<BTreeSet<Architecture>>,
    /// Accept only nodes with at least one of these roles.
    pub roles: Option<BTreeSet<Role>>,
    /// If set, only these nodes.
    pub allow: Option<BTreeSet<NodeId>>,
    /// Never these nodes (takes precedence over `allow`).
    pub deny: BTreeSet<NodeId>,
}

/// Why the incoming policy refused a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The node is deny-listed.
    #[error("node is deny-listed")]
    Denied,
    /// An allow list is set and the node is not on it.
    #[error("node is not on the allow list")]
    NotAllowed,
    /// It was found only through sources the policy does not accept.
    #[error("source not accepted")]
    Source,
    /// A required label is missing or differs.
    #[error("required label missing")]
    Label,
    /// Its country is not accepted.
    #[error("country not accepted")]
    Country,
    /// Its architecture is not accepted.
    #[error("architecture not accepted")]
    Architecture,
    /// None of its roles is accepted.
    #[error("role not accepted")]
    Role,
}

impl IncomingPolicy {
    /// Whether the node itself may be considered at all (before any advert is read).
    pub fn admits_node(&self, node: &NodeId) -> Result<(), Refusal> {
        if self.deny.contains(node) {
            return Err(Refusal::Denied);
        }
        if let Some(allow) = &self.allow
            && !allow.contains(node)
        {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }

    /// Whether a node with this advert, found through `source`, may be a candidate.
    pub fn admits(&self, advert: &Advert, source: &Source) -> Result<(), Refusal> {
        self.admits_node(&advert.node)?;
        if let Some(kinds) = &self.sources
            && !kinds.contains(&source.kind())
        {
            return Err(Refusal::Source);
        }
        if self
            .labels
            .iter()
            .any(|(k, v)| advert.labels.get(k) != Some(v))
        {
            return Err(Refusal::Label);
        }
        if let Some(countries) = &self.countries {
            let country = advert
                .location
                .as_ref()
                .map(|l| l.country.to_ascii_uppercase());
            if !country.is_some_and(|c| countries.iter().any(|a| a.eq_ignore_ascii_case(&c))) {
                return Err(Refusal::Country);
            }
        }
        if let Some(archs) = &self.architectures
            && !advert
                .architecture
                .as_ref()
                .is_some_and(|a| archs.contains(a))
        {
            return Err(Refusal::Architecture);
        }
        if let Some(roles) = &self.roles
            && advert.roles.is_disjoint(roles)
        {
            return Err(Refusal::Role);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::AdvertBody;
    use fluidos_contracts::{Location, SecretKey, Timestamp};

    fn advert(country: &str) -> Advert {
        let body = AdvertBody {
            labels: [("tier".to_string(), "gold".to_string())].into(),
            roles: [Role::Provider].into(),
            location: Some(Location {
                country: country.into(),
                ..Default::default()
            }),
            architecture: Some(Architecture::Aarch64),
            flavors: vec![],
        };
        let node = SecretKey::generate().node_id();
        Advert::new(node, None, vec![], body, Timestamp(0), Timestamp(1), 0)
    }

    #[test]
    fn default_admits_everyone() {
        IncomingPolicy::default()
            .admits(&advert("IT"), &Source::Mdns)
            .unwrap();
    }

    #[test]
    fn each_filter_refuses() {
        let a = advert("it");
        let cat = Source::Catalog("eu".parse().unwrap());
        let p = IncomingPolicy {
            deny: [a.node].into(),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::Denied));
        let p = IncomingPolicy {
            allow: Some(BTreeSet::new()),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::NotAllowed));
        let p = IncomingPolicy {
            sources: Some([SourceKind::Mdns].into()),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::Source));
        let p = IncomingPolicy {
            labels: [("tier".to_string(), "silver".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::Label));
        let p = IncomingPolicy {
            countries: Some(["DE".to_string()].into()),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::Country));
        let p = IncomingPolicy {
            countries: Some(["IT".to_string()].into()),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Ok(()), "country compare ignores case");
        let p = IncomingPolicy {
            architectures: Some([Architecture::X86_64].into()),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::Architecture));
        let p = IncomingPolicy {
            roles: Some([Role::Consumer].into()),
            ..Default::default()
        };
        assert_eq!(p.admits(&a, &cat), Err(Refusal::Role));
    }

    #[test]
    fn outgoing_announces_everywhere_by_default() {
        let eu: CatalogName = "eu".parse().unwrap();
        assert!(OutgoingPolicy::default().announces_in(&eu));
        let only_us = OutgoingPolicy {
            announce_in: Some(["us".parse().unwrap()].into()),
            ..Default::default()
        };
        assert!(!only_us.announces_in(&eu));
    }
}
