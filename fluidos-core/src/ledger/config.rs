//! What a provider configures: its flavor templates and the ledger's limits.

use fluidos_contracts::{
    Architecture, FabricParams, Flavor, FlavorId, GpuInfo, Partitionability, Price, Properties,
    Resources, Timestamp,
};
use serde::{Deserialize, Serialize};

/// A flavor as the provider configures it: everything but the quantities, which
/// the ledger fills in with what is left of the sellable capacity each time it
/// issues the flavor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlavorTemplate {
    /// The flavor's stable identifier; every issued revision carries it.
    pub id: FlavorId,
    /// CPU architecture.
    pub architecture: Architecture,
    /// GPU model and memory, for flavors that sell GPUs.
    pub gpu: Option<GpuInfo>,
    /// Location, labels, carbon intensity.
    pub properties: Properties,
    /// Partitionability, minimum and step.
    pub policy: Partitionability,
    /// Price of the flavor at its full size (`max`, or the whole sellable capacity
    /// when `max` is `None`). Every issued revision carries it unchanged, with that
    /// full size as `price_basis`, so a partition's price does not rise as the
    /// provider sells out.
    pub price: Price,
    /// The most this flavor offers of each resource; a zero excludes the resource
    /// (a CPU flavor sets `gpus: 0`). `None` offers the whole remaining capacity.
    /// All templates draw on the same pool, so this caps a flavor's size, not a
    /// budget of its own.
    pub max: Option<Resources>,
    /// The flavor is not sold at or after this time (`FlavorExpired`).
    pub not_after: Option<Timestamp>,
}

impl FlavorTemplate {
    /// A template from a flavor built elsewhere (for example by
    /// [`crate::host::build_flavors`]): its resources become `max` and its price
    /// the price at that size. Its `valid_until` is not carried over: the ledger
    /// re-issues flavors before they lapse.
    pub fn from_flavor(flavor: &Flavor) -> Self {
        Self {
            id: flavor.id,
            architecture: flavor.characteristics.architecture.clone(),
            gpu: flavor.characteristics.gpu.clone(),
            properties: flavor.properties.clone(),
            policy: flavor.policy.clone(),
            price: flavor.price.clone(),
            max: Some(flavor.characteristics.resources),
            not_after: None,
        }
    }
}

/// The ledger's configuration. [`LedgerConfig::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerConfig {
    /// The sellable capacity at start; change it with
    /// [`Ledger::set_capacity`](super::Ledger::set_capacity).
    pub capacity: Resources,
    /// The flavors for sale.
    pub templates: Vec<FlavorTemplate>,
    /// The provider's WireGuard key and endpoints, written into every contract.
    pub fabric: FabricParams,
    /// How long a reservation holds capacity (default 30 s).
    pub reservation_ttl_ms: u64,
    /// How long a provider-signed offer waits for the countersignature (default 30 s).
    pub offer_ttl_ms: u64,
    /// How long an issued flavor's signature is valid (default 10 min); the ledger
    /// re-issues it when half of that has passed.
    pub flavor_ttl_ms: u64,
    /// The longest contract sold; longer requests are shortened (default 30 days).
    pub max_contract_ms: u64,
    /// Live reservations plus pending offers one buyer may hold (default 16);
    /// beyond it `Reserve` answers `RateLimited`.
    pub max_reservations_per_buyer: usize,
    /// Reservations plus pending offers all buyers together may hold (default
    /// 10 000): identities are free, so the per-buyer limit alone bounds nothing.
    pub max_holds: usize,
    /// How many ended deals are remembered to answer `ReservationExpired` or
    /// `Replay` instead of `Unknown…` (default 65 536). They are persisted as
    /// the ending records of the store and restored by [`Ledger::restore`](super::Ledger::restore).
    pub max_tombstones: usize,
    /// Seed of the identifier generator. `None` (the default) draws one from the
    /// operating system; tests set it to be repeatable.
    pub id_seed: Option<u64>,
}

impl LedgerConfig {
    /// The defaults for a provider with `capacity` to sell and these fabric parameters.
    pub fn new(capacity: Resources, templates: Vec<FlavorTemplate>, fabric: FabricParams) -> Self {
        Self {
            capacity,
            templates,
            fabric,
            reservation_ttl_ms: 30_000,
            offer_ttl_ms: 30_000,
            flavor_ttl_ms: 10 * 60_000,
            max_contract_ms: 30 * 24 * 3_600_000,
            max_reservations_per_buyer: 16,
            max_holds: 10_000,
            max_tombstones: 65_536,
            id_seed: None,
        }
    }
}
