//! The buyer's side of REAR (the FLUIDOS "solver"), I/O-free.
//!
//! - [`AcquisitionRequest`]: what to buy — quantities, constraints, duration —
//!   and the [`Selector`] it sends to providers;
//! - [`rank`]: which offer to try first — exact fit, then price, then location
//!   preference, then the local [`Ratings`], with a deterministic tie-break;
//! - [`Acquisition`]: one purchase as a state machine, from `ListFlavors` to the
//!   acknowledged countersignature, falling back to the next offer when a
//!   provider refuses or does not answer.
//!
//! Durability on the buyer side: the countersigned contract is handed out in
//! [`AcquisitionEvent::Persist`] *before* the `Countersign` request is sent, so
//! that once the provider considers the deal done, the buyer has it on disk too.
//! The driver stores it as [`Record::BuyerContract`](crate::store::Record) in state
//! `PendingAck`, then `Active` after [`AcquisitionEvent::Done`], and records the
//! outcome as `BuyerEnded` when the contract ends (which feeds [`Ratings`]).

mod acquisition;
mod events;
mod offer_cache;
mod rank;

use std::collections::BTreeMap;

use fluidos_contracts::{Architecture, PriceModel, Range, Resources, Selector};
use serde::{Deserialize, Serialize};

pub use acquisition::Acquisition;
pub use events::{
    AcquisitionEvent, AcquisitionFailure, AcquisitionOptions, CandidateFailure, InvalidAnswer,
    Mismatch, Phase,
};
pub use offer_cache::{MAX_PROVIDERS as OFFER_CACHE_MAX_PROVIDERS, OfferCache};
pub use rank::{
    Outcome, RankedOffer, RatingCounts, Ratings, Unsuitable, evaluate, from_per_hour, per_hour,
    rank,
};

/// What the buyer wants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquisitionRequest {
    /// The quantities; each non-zero one must be covered (rounded up to a flavor's
    /// min and step).
    pub resources: Resources,
    /// Hard constraints and soft preferences.
    pub constraints: Constraints,
    /// How long the contract should last, in milliseconds (a provider may shorten it).
    pub duration_ms: u64,
}

/// Constraints on the offers. `None` / empty means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    /// Required CPU architecture.
    pub architecture: Option<Architecture>,
    /// Required country (ISO 3166-1 alpha-2).
    pub country: Option<String>,
    /// Labels the flavor must carry.
    pub labels: BTreeMap<String, String>,
    /// The most the partition may cost per hour, in micro-units of `currency`.
    pub max_price_micros_per_hour: Option<u64>,
    /// Required currency of the price.
    pub currency: Option<String>,
    /// Required billing model.
    pub price_model: Option<PriceModel>,
    /// Highest acceptable carbon intensity, gCO2eq/kWh.
    pub max_carbon_g_per_kwh: Option<u32>,
    /// GPU model text the flavor's GPU must contain.
    pub gpu_model: Option<String>,
    /// Preferred country (soft: ranks matching offers first among equals).
    pub preferred_country: Option<String>,
    /// Preferred city (soft, before `preferred_country`).
    pub preferred_city: Option<String>,
}

impl AcquisitionRequest {
    /// The selector sent with `ListFlavors`: every hard constraint, and "at least
    /// this much" for each requested quantity. The buyer still checks min/step
    /// and the partition's price itself.
    pub fn selector(&self) -> Selector {
        let at_least = |v: u64| (v > 0).then(|| Range::at_least(v));
        let r = &self.resources;
        let c = &self.constraints;
        Selector {
            architecture: c.architecture.clone(),
            cpu_millis: at_least(r.cpu_millis),
            memory_bytes: at_least(r.memory_bytes),
            storage_bytes: at_least(r.storage_bytes),
            pods: at_least(r.pods),
            gpus: at_least(r.gpus),
            gpu_model: c.gpu_model.clone(),
            country: c.country.clone(),
            labels: c.labels.clone(),
            currency: c.currency.clone(),
            price_model: c.price_model,
            max_carbon_g_per_kwh: c.max_carbon_g_per_kwh,
            ..Selector::default()
        }
    }
}
