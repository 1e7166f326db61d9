//! The peering candidates: every node found through any source, merged, filtered by
//! the incoming policy, and expired. Plain data with time passed in, so it is tested
//! without a network.

use std::collections::{BTreeMap, BTreeSet};

use fluidos_contracts::{NodeId, Timestamp, Verified};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::advert::Advert;
use crate::policy::{IncomingPolicy, Refusal, Source};

/// The most candidates kept; beyond it new nodes are ignored until others expire.
pub const MAX_CANDIDATES: usize = 4096;
/// The most ratings kept.
const MAX_RATINGS: usize = 4096;
/// The most addresses a candidate keeps besides those of its advert.
const MAX_OBSERVED_ADDRESSES: usize = 8;

/// How past contracts with a node went, as the buyer recorded them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// Contracts that ran to their end as agreed.
    pub delivered: u32,
    /// Contracts the provider failed to deliver.
    pub failed: u32,
    /// Contracts the provider terminated early.
    pub terminated_early: u32,
}

impl Rating {
    /// A score in [0, 1]: the share of delivered contracts, with a neutral prior
    /// (one delivered, one failed) so that a single outcome does not decide.
    pub fn score(&self) -> f64 {
        let good = f64::from(self.delivered) + 1.0;
        let all = good + f64::from(self.failed) + f64::from(self.terminated_early) + 1.0;
        good / all
    }
}

/// A node this node could buy from or sell to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its identity.
    pub node: NodeId,
    /// Its libp2p peer id (the same key).
    pub peer_id: PeerId,
    /// Where to reach it: its advert's addresses, then addresses seen directly.
    pub addresses: Vec<Multiaddr>,
    /// How it was found.
    pub sources: BTreeSet<Source>,
    /// Its newest verified advert.
    pub advert: Verified<Advert>,
    /// When any source last confirmed it.
    pub last_seen: Timestamp,
    /// How past contracts with it went, if any.
    pub rating: Option<Rating>,
    /// The last round trip measured to it (libp2p ping over a live
    /// connection), if any.
    pub rtt: Option<std::time::Duration>,
}

#[derive(Clone, Debug)]
struct SourceEntry {
    advert: Verified<Advert>,
    seen: Timestamp,
}

#[derive(Clone, Debug, Default)]
struct Entry {
    sources: BTreeMap<Source, SourceEntry>,
    observed: Vec<Multiaddr>,
}

/// What [`CandidateTable::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A node that was not a candidate is one now.
    New,
    /// A candidate's advert or source set changed.
    Updated,
    /// Nothing changed except its last-seen time.
    Refreshed,
    /// The advert is older than the one held for that source.
    Stale,
}

/// Why an advert was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The incoming policy refused it.
    #[error("refused by policy: {0}")]
    Refused(#[from] Refusal),
    /// The table is full.
    #[error("candidate table is full")]
    Full,
}

/// The merged candidate list.
#[derive(Debug)]
pub struct CandidateTable {
    policy: IncomingPolicy,
    max_age_ms: u64,
    entries: BTreeMap<NodeId, Entry>,
    ratings: BTreeMap<NodeId, Rating>,
    generation: u64,
}

impl CandidateTable {
    /// An empty table. A source that is not re-confirmed within `max_age_ms` expires,
    /// as does any source whose advert expires.
    pub fn new(policy: IncomingPolicy, max_age_ms: u64) -> Self {
        Self {
            policy,
            max_age_ms,
            entries: BTreeMap::new(),
            ratings: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Grows with every change of the visible list.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The incoming policy.
    pub fn policy(&self) -> &IncomingPolicy {
        &self.policy
    }

    /// Replaces the incoming policy and drops every source it now refuses.
    pub fn set_policy(&mut self, policy: IncomingPolicy) {
        self.policy = policy;
        let policy = &self.policy;
        let mut changed = false;
        self.entries.retain(|_, e| {
            let before = e.sources.len();
            e.sources
                .retain(|s, se| policy.admits(&se.advert, s).is_ok());
            changed |= e.sources.len() != before;
            !e.sources.is_empty()
        });
        if changed {
            self.generation += 1;
        }
    }

    /// Takes a verified advert found through `source` at `now`.
    pub fn offer(
        &mut self,
        source: Source,
        advert: Verified<Advert>,
        now: Timestamp,
    ) -> Result<Offer, OfferError> {
        self.policy.admits(&advert, &source)?;
        if !self.entries.contains_key(&advert.node) && self.entries.len() >= MAX_CANDIDATES {
            return Err(OfferError::Full);
        }
        let entry = self.entries.entry(advert.node).or_default();
        let was_empty = entry.sources.is_empty();
        let result = match entry.sources.get_mut(&source) {
            Some(held) if held.advert.seq > advert.seq => Offer::Stale,
            Some(held) if held.advert.seq == advert.seq => {
                held.seen = held.seen.max(now);
                Offer::Refreshed
            }
            _ => {
                entry
                    .sources
                    .insert(source, SourceEntry { advert, seen: now });
                if was_empty {
                    Offer::New
                } else {
                    Offer::Updated
                }
            }
        };
        if matches!(result, Offer::New | Offer::Updated) {
            self.generation += 1;
        }
        Ok(result)
    }

    /// The nodes with an advert from `source`.
    pub fn nodes_from(&self, source: &Source) -> Vec<NodeId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.sources.contains_key(source))
            .map(|(n, _)| *n)
            .collect()
    }

    /// The advert held for `node` from `source`, if any.
    pub fn advert_from(&self, node: &NodeId, source: &Source) -> Option<&Verified<Advert>> {
        self.entries
            .get(node)
            .and_then(|e| e.sources.get(source))
            .map(|s| &s.advert)
    }

    /// Notes an address at which `node` was reached directly (mDNS, manual dial).
    pub fn observe_address(&mut self, node: &NodeId, addr: Multiaddr) {
        if let Some(e) = self.entries.get_mut(node)
            && !e.observed.contains(&addr)
            && e.observed.len() < MAX_OBSERVED_ADDRESSES
        {
            e.observed.push(addr);
        }
    }

    /// Drops what `source` said about `node` (a withdrawal, an mDNS expiry).
    pub fn remove_source(&mut self, node: &NodeId, source: &Source) -> bool {
        let Some(e) = self.entries.get_mut(node) else {
            return false;
        };
        let removed = e.sources.remove(source).is_some();
        if e.sources.is_empty() {
            self.entries.remove(node);
        }
        if removed {
            self.generation += 1;
        }
        removed
    }

    /// Drops every source whose advert expired or that was not confirmed within the
    /// maximum age, and every node left without a source. Returns whether anything went.
    pub fn sweep(&mut self, now: Timestamp) -> bool {
        let max_age = self.max_age_ms;
        let mut changed = false;
        self.entries.retain(|_, e| {
            let before = e.sources.len();
            e.sources
                .retain(|_, se| se.advert.expires_at > now && se.seen.plus_ms(max_age) > now);
            changed |= e.sources.len() != before;
            !e.sources.is_empty()
        });
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Records how contracts with `node` went.
    pub fn set_rating(&mut self, node: NodeId, rating: Rating) {
        if self.ratings.len() >= MAX_RATINGS && !self.ratings.contains_key(&node) {
            // Forget the rating of a node that is not a candidate now, if there is one.
            let forget = self
                .ratings
                .keys()
                .find(|n| !self.entries.contains_key(n))
                .copied();
            match forget {
                Some(n) => {
                    self.ratings.remove(&n);
                }
                None => return,
            }
        }
        self.ratings.insert(node, rating);
        self.generation += 1;
    }

    /// Whether `node` is a candidate.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.entries.contains_key(node)
    }

    /// Whether `node` is a candidate through `source`.
    pub fn has_source(&self, node: &NodeId, source: &Source) -> bool {
        self.entries
            .get(node)
            .is_some_and(|e| e.sources.contains_key(source))
    }

    /// The number of candidates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Known addresses of `node`.
    pub fn addresses(&self, node: &NodeId) -> Vec<Multiaddr> {
        self.entries
            .get(node)
            .map(Self::merged_addresses)
            .unwrap_or_default()
    }

    fn newest(e: &Entry) -> Option<&SourceEntry> {
        e.sources
            .values()
            .max_by_key(|se| (se.advert.issued_at, se.advert.seq))
    }

    fn merged_addresses(e: &Entry) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Self::newest(e)
            .map(|se| se.advert.addresses.clone())
            .unwrap_or_default();
        for a in &e.observed {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// The adverts that came from `source` and were confirmed by it at or after
    /// `since`, at most `max`, starting at the `skip`-th such candidate
    /// (wrapping), so that repeated calls with a growing `skip` go round all of them.
    pub fn adverts_from(
        &self,
        source: &Source,
        since: Timestamp,
        skip: usize,
        max: usize,
    ) -> Vec<Verified<Advert>> {
        self.adverts_from_except(source, since, skip, max, |_| false)
    }

    /// [`Self::adverts_from`] without the adverts `except` names.
    pub fn adverts_from_except(
        &self,
        source: &Source,
        since: Timestamp,
        skip: usize,
        max: usize,
        except: impl Fn(&Advert) -> bool,
    ) -> Vec<Verified<Advert>> {
        let all: Vec<&Verified<Advert>> = self
            .entries
            .values()
            .filter_map(|e| e.sources.get(source).filter(|s| s.seen >= since))
            .map(|s| &s.advert)
            .filter(|a| !except(a))
            .collect();
        if all.is_empty() {
            return Vec::new();
        }
        let start = skip % all.len();
        all.iter()
            .cycle()
            .skip(start)
            .take(max.min(all.len()))
            .map(|a| (*a).clone())
            .collect()
    }

    /// The candidates, ordered by node id.
    pub fn list(&self) -> Vec<Candidate> {
        self.entries
            .iter()
            .filter_map(|(node, e)| {
                let newest = Self::newest(e)?;
                Some(Candidate {
                    node: *node,
                    peer_id: crate::identity::peer_id(node),
                    addresses: Self::merged_addresses(e),
                    sources: e.sources.keys().cloned().collect(),
                    advert: newest.advert.clone(),
                    last_seen: e.sources.values().map(|s| s.seen).max().unwrap_or_default(),
                    rating: self.ratings.get(node).copied(),
                    rtt: None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::AdvertBody;
    use fluidos_contracts::{Location, SecretKey};

    fn signed(key: &SecretKey, country: &str, seq: u64, issued: u64, ttl: u64) -> Verified<Advert> {
        let body = AdvertBody {
            location: Some(Location {
                country: country.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = Advert::new(
            key.node_id(),
            None,
            vec![],
            body,
            Timestamp(issued),
            Timestamp(issued + ttl),
            seq,
        );
        a.sign(key).unwrap().0
    }

    #[test]
    fn merge_refresh_stale_and_expiry() {
        let mut t = CandidateTable::new(IncomingPolicy::default(), 10_000);
        let k = SecretKey::generate();
        let now = Timestamp(1000);
        assert_eq!(
            t.offer(Source::Mdns, signed(&k, "IT", 2, 1000, 5000), now),
            Ok(Offer::New)
        );
        assert_eq!(
            t.offer(Source::Mdns, signed(&k, "IT", 2, 1000, 5000), now),
            Ok(Offer::Refreshed)
        );
        assert_eq!(
            t.offer(Source::Mdns, signed(&k, "IT", 1, 900, 5000), now),
            Ok(Offer::Stale)
        );
        assert_eq!(
            t.offer(Source::Manual, signed(&k, "IT", 2, 1000, 5000), now),
            Ok(Offer::Updated)
        );
        let list = t.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].sources.len(), 2);
        assert!(!t.sweep(Timestamp(5999)));
        assert!(t.sweep(Timestamp(6000)), "the advert expired");
        assert!(t.is_empty());
    }

    #[test]
    fn unconfirmed_sources_age_out() {
        let mut t = CandidateTable::new(IncomingPolicy::default(), 100);
        let k = SecretKey::generate();
        t.offer(
            Source::Manual,
            signed(&k, "IT", 1, 0, 1_000_000),
            Timestamp(0),
        )
        .unwrap();
        assert!(t.sweep(Timestamp(100)));
        assert!(t.is_empty());
    }

    #[test]
    fn policy_filters_and_later_policy_changes_apply() {
        let policy = IncomingPolicy {
            countries: Some(["IT".to_string()].into()),
            ..Default::default()
        };
        let mut t = CandidateTable::new(policy, 10_000);
        let it = SecretKey::generate();
        let de = SecretKey::generate();
        assert!(
            t.offer(Source::Mdns, signed(&de, "DE", 1, 0, 5000), Timestamp(0))
                .is_err()
        );
        t.offer(Source::Mdns, signed(&it, "IT", 1, 0, 5000), Timestamp(0))
            .unwrap();
        assert_eq!(t.len(), 1);
        t.set_policy(IncomingPolicy {
            deny: [it.node_id()].into(),
            ..Default::default()
        });
        assert!(t.is_empty(), "a deny-listed node disappears at once");
    }

    #[test]
    fn ratings_show_in_the_list() {
        let mut t = CandidateTable::new(IncomingPolicy::default(), 10_000);
        let k = SecretKey::generate();
        t.offer(Source::Mdns, signed(&k, "IT", 1, 0, 5000), Timestamp(0))
            .unwrap();
        let r = Rating {
            delivered: 3,
            failed: 1,
            terminated_early: 0,
        };
        t.set_rating(k.node_id(), r);
        assert_eq!(t.list()[0].rating, Some(r));
        assert!(r.score() > Rating::default().score());
    }
}
