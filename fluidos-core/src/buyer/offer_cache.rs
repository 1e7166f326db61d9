//! Flavors that providers listed recently, so that a buyer who buys again soon
//! skips the `ListFlavors` round trip.
//!
//! A remembered flavor may be stale: the provider may have sold part of it since.
//! That costs at most one refused request, because the provider checks every
//! reservation against what it has left, and the [`Acquisition`](super::Acquisition)
//! lists a provider afresh when all its known offers fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fluidos_contracts::{Flavor, NodeId, Timestamp, Verified};

/// How many providers' listings are kept at most; the oldest goes first.
pub const MAX_PROVIDERS: usize = 1024;

#[derive(Clone, Debug)]
struct Entry {
    at: Instant,
    flavors: Vec<Verified<Flavor>>,
}

/// Recent listings by provider, each kept for a fixed time.
#[derive(Clone, Debug)]
pub struct OfferCache {
    ttl: Duration,
    entries: BTreeMap<NodeId, Entry>,
}

impl OfferCache {
    /// A cache whose listings count as fresh for `ttl`; a zero `ttl` disables it.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: BTreeMap::new(),
        }
    }

    /// How long a listing counts as fresh.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Remembers what `provider` listed at `now`, replacing what it listed before.
    pub fn record(&mut self, provider: NodeId, flavors: Vec<Verified<Flavor>>, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        if !self.entries.contains_key(&provider) && self.entries.len() >= MAX_PROVIDERS {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.at) < self.ttl);
            if self.entries.len() >= MAX_PROVIDERS
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(n, _)| *n)
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(provider, Entry { at: now, flavors });
    }

    /// Forgets what `provider` listed (it failed to answer, for example).
    pub fn forget(&mut self, provider: &NodeId) {
        self.entries.remove(provider);
    }

    /// The fresh listings of `candidates` at `now`, without flavors whose validity
    /// ended by `wall`. A candidate with no fresh listing is absent.
    pub fn fresh(
        &self,
        candidates: &[NodeId],
        now: Instant,
        wall: Timestamp,
    ) -> BTreeMap<NodeId, Vec<Verified<Flavor>>> {
        candidates
            .iter()
            .filter_map(|c| {
                let e = self.entries.get(c)?;
                if now.saturating_duration_since(e.at) >= self.ttl {
                    return None;
                }
                let flavors = e
                    .flavors
                    .iter()
                    .filter(|f| f.valid_until > wall)
                    .cloned()
                    .collect();
                Some((*c, flavors))
            })
            .collect()
    }

    /// How many providers' listings are held (fresh or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_contracts::{
        Architecture, Characteristics, FlavorId, Partitionability, Price, PriceModel, PricePeriod,
        Properties, Resources, SecretKey, Signed,
    };

    fn flavor(key: &SecretKey, valid_until: u64) -> Verified<Flavor> {
        let flavor = Flavor {
            id: FlavorId([7; 16]),
            owner: key.node_id(),
            characteristics: Characteristics {
                resources: Resources {
                    pods: 10,
                    ..Default::default()
                },
                architecture: Architecture::X86_64,
                gpu: None,
            },
            properties: Properties::default(),
            policy: Partitionability {
                partitionable: true,
                min: Resources::ZERO,
                step: Resources::ZERO,
            },
            price: Price {
                amount_micros: 1,
                currency: "EUR".into(),
                period: PricePeriod::Hour,
                model: PriceModel::Reserved,
            },
            price_basis: Resources {
                pods: 10,
                ..Default::default()
            },
            valid_until: Timestamp(valid_until),
            revision: 1,
        };
        Signed::sign(flavor, key).unwrap()
    }

    #[test]
    fn a_listing_is_fresh_for_its_ttl_only() {
        let key = SecretKey::generate();
        let p = key.node_id();
        let t0 = Instant::now();
        let mut cache = OfferCache::new(Duration::from_secs(5));
        cache.record(p, vec![flavor(&key, 10_000)], t0);
        let fresh = cache.fresh(&[p], t0 + Duration::from_secs(4), Timestamp(1));
        assert_eq!(fresh[&p].len(), 1);
        assert!(
            cache
                .fresh(&[p], t0 + Duration::from_secs(5), Timestamp(1))
                .is_empty()
        );
        // Only the candidates asked about.
        assert!(cache.fresh(&[], t0, Timestamp(1)).is_empty());
    }

    #[test]
    fn lapsed_flavors_are_left_out_and_forget_drops_a_provider() {
        let key = SecretKey::generate();
        let p = key.node_id();
        let t0 = Instant::now();
        let mut cache = OfferCache::new(Duration::from_secs(5));
        cache.record(p, vec![flavor(&key, 100), flavor(&key, 10_000)], t0);
        assert_eq!(cache.fresh(&[p], t0, Timestamp(100))[&p].len(), 1);
        cache.forget(&p);
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_ttl_keeps_nothing_and_the_size_is_bounded() {
        let key = SecretKey::generate();
        let t0 = Instant::now();
        let mut off = OfferCache::new(Duration::ZERO);
        off.record(key.node_id(), vec![flavor(&key, 10)], t0);
        assert!(off.is_empty());

        let mut cache = OfferCache::new(Duration::from_secs(60));
        let first = SecretKey::generate().node_id();
        cache.record(first, Vec::new(), t0);
        for i in 0..MAX_PROVIDERS as u64 {
            let n = SecretKey::generate().node_id();
            cache.record(n, Vec::new(), t0 + Duration::from_millis(i + 1));
        }
        assert_eq!(cache.len(), MAX_PROVIDERS);
        // The oldest went first.
        assert!(cache.fresh(&[first], t0, Timestamp(0)).is_empty());
    }
}
