//! Ranking offers, and the local ratings that break ties between providers.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use fluidos_contracts::{Flavor, NodeId, PricePeriod, Resources, Timestamp, Verified};
use serde::{Deserialize, Serialize};

use super::AcquisitionRequest;
use crate::store::Record;

/// How a contract went, from the buyer's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider delivered until the contract's end.
    Delivered,
    /// The provider failed to deliver (unreachable, workload lost).
    Failed,
    /// The provider terminated the contract before its end.
    TerminatedEarly,
    /// The contract never became active (the provider did not confirm the
    /// countersignature). Not counted in ratings.
    NotConcluded,
}

/// One provider's track record with this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingCounts {
    /// Contracts delivered.
    pub delivered: u64,
    /// Contracts the provider failed.
    pub failed: u64,
    /// Contracts the provider ended early.
    pub terminated_early: u64,
}

impl RatingCounts {
    /// The share of good outcomes in parts per million, smoothed so that an
    /// unknown provider scores 500 000 (Laplace: one imaginary success and failure).
    pub fn score_ppm(&self) -> u64 {
        let good = self.delivered.saturating_add(1) as u128;
        let total = self
            .delivered
            .saturating_add(self.failed)
            .saturating_add(self.terminated_early)
            .saturating_add(2) as u128;
        (good * 1_000_000 / total) as u64
    }
}

/// Local ratings of providers, from the outcomes of this node's own contracts.
/// They are not shared: a rating is what this node saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ratings {
    by_node: BTreeMap<NodeId, RatingCounts>,
}

impl Ratings {
    /// No ratings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds ratings from the buyer's [`Record::BuyerEnded`] records.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut ratings = Self::new();
        for record in records {
            if let Record::BuyerEnded {
                provider, outcome, ..
            } = record
            {
                ratings.record(*provider, *outcome);
            }
        }
        ratings
    }

    /// Counts one outcome for `node`.
    pub fn record(&mut self, node: NodeId, outcome: Outcome) {
        if outcome == Outcome::NotConcluded {
            return;
        }
        let c = self.by_node.entry(node).or_default();
        match outcome {
            Outcome::Delivered => c.delivered = c.delivered.saturating_add(1),
            Outcome::Failed => c.failed = c.failed.saturating_add(1),
            Outcome::TerminatedEarly => c.terminated_early = c.terminated_early.saturating_add(1),
            Outcome::NotConcluded => {}
        }
    }

    /// `node`'s counts (zero for a provider never dealt with).
    pub fn get(&self, node: &NodeId) -> RatingCounts {
        self.by_node.get(node).copied().unwrap_or_default()
    }

    /// `node`'s score, see [`RatingCounts::score_ppm`].
    pub fn score_ppm(&self, node: &NodeId) -> u64 {
        self.get(node).score_ppm()
    }

    /// Every rated provider.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &RatingCounts)> {
        self.by_node.iter()
    }
}

/// An offer that can satisfy the request, with what ranking looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankedOffer {
    /// The provider.
    pub provider: NodeId,
    /// The flavor as listed.
    pub flavor: Verified<Flavor>,
    /// The partition to reserve: the request rounded up to the flavor's min/step.
    pub partition: Resources,
    /// Whether `partition` is exactly what was asked for.
    pub exact: bool,
    /// The partition's price per the flavor's period, in micro-units.
    pub price_micros: u64,
    /// The same price per hour, rounded up, to compare across periods.
    pub price_per_hour_micros: u64,
    /// 0 = preferred city, 1 = preferred country, 2 = elsewhere (0 without preference).
    pub location_score: u8,
    /// The provider's rating ([`Ratings::score_ppm`]).
    pub rating_ppm: u64,
}

/// Why an offer cannot serve the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsuitable {
    /// The flavor is signed by another node than the one that sent it.
    #[error("flavor {flavor} is owned by another node")]
    WrongOwner {
        /// The flavor.
        flavor: fluidos_contracts::FlavorId,
    },
    /// The flavor does not match the constraints (or has lapsed).
    #[error("flavor {flavor} does not match the constraints")]
    NoMatch {
        /// The flavor.
        flavor: fluidos_contracts::FlavorId,
    },
    /// No partition of the flavor covers the request.
    #[error("flavor {flavor} cannot hold the requested resources")]
    NoFit {
        /// The flavor.
        flavor: fluidos_contracts::FlavorId,
    },
    /// The fitted partition costs more than the buyer accepts.
    #[error("flavor {flavor} costs {price_per_hour_micros} micro-units per hour, above {max}")]
    TooExpensive {
        /// The flavor.
        flavor: fluidos_contracts::FlavorId,
        /// Its price for the partition, per hour.
        price_per_hour_micros: u64,
        /// The buyer's maximum per hour.
        max: u64,
    },
}

/// `amount` per `period` expressed per hour, rounded up.
pub fn per_hour(amount: u64, period: PricePeriod) -> u64 {
    match period {
        PricePeriod::Hour => amount,
        PricePeriod::Day => amount.div_ceil(24),
        PricePeriod::Month => amount.div_ceil(24 * 30),
    }
}

/// A per-hour amount expressed per `period` (the most the buyer accepts per period).
pub fn from_per_hour(amount: u64, period: PricePeriod) -> u64 {
    match period {
        PricePeriod::Hour => amount,
        PricePeriod::Day => amount.saturating_mul(24),
        PricePeriod::Month => amount.saturating_mul(24 * 30),
    }
}

/// Checks one offer against the request.
pub fn evaluate(
    request: &AcquisitionRequest,
    provider: NodeId,
    flavor: &Verified<Flavor>,
    ratings: &Ratings,
    now: Timestamp,
) -> Result<RankedOffer, Unsuitable> {
    let id = flavor.id;
    if flavor.owner != provider {
        return Err(Unsuitable::WrongOwner { flavor: id });
    }
    if !request.selector().matches(flavor, now) {
        return Err(Unsuitable::NoMatch { flavor: id });
    }
    let partition = flavor
        .fit_partition(&request.resources)
        .filter(|p| {
            flavor
                .check_partition(p, &flavor.characteristics.resources)
                .is_ok()
        })
        .ok_or(Unsuitable::NoFit { flavor: id })?;
    let price_micros = flavor.quote(&partition);
    let price_per_hour_micros = per_hour(price_micros, flavor.price.period);
    if let Some(max) = request.constraints.max_price_micros_per_hour
        && price_per_hour_micros > max
    {
        return Err(Unsuitable::TooExpensive {
            flavor: id,
            price_per_hour_micros,
            max,
        });
    }
    let location = flavor.properties.location.as_ref();
    let c = &request.constraints;
    let same = |want: &Option<String>, have: Option<&str>| {
        want.as_deref()
            .zip(have)
            .is_some_and(|(w, h)| w.eq_ignore_ascii_case(h))
    };
    let no_preference = c.preferred_city.is_none() && c.preferred_country.is_none();
    let location_score =
        if no_preference || same(&c.preferred_city, location.and_then(|l| l.city.as_deref())) {
            0
        } else if same(&c.preferred_country, location.map(|l| l.country.as_str())) {
            1
        } else {
            2
        };
    Ok(RankedOffer {
        provider,
        exact: partition == request.resources,
        partition,
        price_micros,
        price_per_hour_micros,
        location_score,
        rating_ppm: ratings.score_ppm(&provider),
        flavor: flavor.clone(),
    })
}

/// Ranks offers: exact fit first, then lower price per hour, then location
/// preference, then higher rating; ties are broken by provider id, then flavor id,
/// so the order never depends on arrival order. Returns the suitable offers in
/// rank order and, per unsuitable offer, why.
pub fn rank(
    request: &AcquisitionRequest,
    offers: &[(NodeId, Verified<Flavor>)],
    ratings: &Ratings,
    now: Timestamp,
) -> (Vec<RankedOffer>, Vec<(NodeId, Unsuitable)>) {
    let mut ranked = Vec::new();
    let mut unsuitable = Vec::new();
    for (provider, flavor) in offers {
        match evaluate(request, *provider, flavor, ratings, now) {
            Ok(r) => ranked.push(r),
            Err(why) => unsuitable.push((*provider, why)),
        }
    }
    ranked.sort_by_key(|r| {
        (
            !r.exact,
            r.price_per_hour_micros,
            r.location_score,
            Reverse(r.rating_ppm),
            r.provider,
            r.flavor.id,
        )
    });
    (ranked, unsuitable)
}
