//! Flavors: the resource offers a provider sells.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bytes::id_type;
use crate::{Architecture, GpuInfo, NodeId, Resources, Timestamp};

id_type!(
    /// Identifies a flavor within its owner's offers (16 random bytes).
    FlavorId,
    16
);

/// A resource offer: what a provider sells, where, under which policy and at which price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    /// The flavor's identifier.
    pub id: FlavorId,
    /// The provider that sells it; it signs the flavor.
    pub owner: NodeId,
    /// What it offers.
    pub characteristics: Characteristics,
    /// Where and how it runs.
    pub properties: Properties,
    /// How it may be split.
    pub policy: Partitionability,
    /// What it costs: `price.amount_micros` buys `price_basis`.
    pub price: Price,
    /// The quantities the price is for. A partition costs the price times its
    /// dominant share of these ([`Flavor::quote`]). Providers keep it fixed while
    /// a flavor sells out (it is the flavor's full size, not what is left), so the
    /// same partition costs the same in every revision.
    pub price_basis: Resources,
    /// The offer is valid until this time; after it, it must not be reserved.
    pub valid_until: Timestamp,
    /// Grows each time the provider re-issues the flavor (for example with the
    /// capacity left after a sale), so buyers can tell newer from older.
    pub revision: u64,
}

/// The quantities and hardware a flavor offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Characteristics {
    /// Fungible quantities currently for sale.
    pub resources: Resources,
    /// CPU architecture.
    pub architecture: Architecture,
    /// GPU model and memory, when `resources.gpus > 0`.
    pub gpu: Option<GpuInfo>,
}

/// Where a flavor runs and what it is like.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Properties {
    /// Physical location, if the provider discloses it.
    pub location: Option<Location>,
    /// Free-form labels (`zone=edge`, `tier=gold`).
    pub labels: BTreeMap<String, String>,
    /// Grid carbon intensity in gCO2eq/kWh, if known.
    pub carbon_g_per_kwh: Option<u32>,
}

/// A physical location. Coordinates are in micro-degrees, so that the signed
/// encoding never contains floating-point numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// ISO 3166-1 alpha-2 country code, upper case (`IT`, `DE`).
    pub country: String,
    /// City name.
    pub city: Option<String>,
    /// Latitude in micro-degrees (−90e6 … 90e6).
    pub lat_e6: Option<i32>,
    /// Longitude in micro-degrees (−180e6 … 180e6).
    pub lon_e6: Option<i32>,
}

/// Whether and how a flavor may be split into partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partitionability {
    /// If false, only the whole flavor can be bought.
    pub partitionable: bool,
    /// The smallest partition, per resource.
    pub min: Resources,
    /// Partition sizes grow from `min` in multiples of `step`, per resource (0 = any amount).
    pub step: Resources,
}

/// How a contract is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceModel {
    /// The capacity is held and billed for the whole validity, used or not.
    Reserved,
    /// Billed for what is used; capacity is best effort.
    PayPerUse,
}

/// The billing period a price refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricePeriod {
    /// Per hour.
    Hour,
    /// Per day.
    Day,
    /// Per 30-day month.
    Month,
}

/// The price of a flavor's [`Flavor::price_basis`]. A partition costs its
/// dominant share of it (see [`Flavor::quote`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Amount in millionths of the currency unit, per period, for the flavor's
    /// `price_basis`.
    pub amount_micros: u64,
    /// ISO 4217 currency code (`EUR`).
    pub currency: String,
    /// The period the amount is for.
    pub period: PricePeriod,
    /// The billing model.
    pub model: PriceModel,
}

/// A partition does not respect a flavor's policy or remaining capacity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The flavor is sold only whole, and the partition is not the whole flavor.
    #[error("flavor is not partitionable: buy all of it ({whole}) or nothing")]
    NotPartitionable {
        /// The whole flavor.
        whole: Resources,
    },
    /// The partition asks for nothing at all.
    #[error("partition is empty")]
    Empty,
    /// A quantity is below the flavor's minimum.
    #[error("{resource} of {requested} is below the minimum of {min}")]
    BelowMin {
        /// Which resource.
        resource: &'static str,
        /// What was asked.
        requested: u64,
        /// The minimum.
        min: u64,
    },
    /// A quantity is not `min + k * step`.
    #[error(
        "{resource} of {requested} is not the minimum {min} plus a multiple of the step {step}"
    )]
    OffStep {
        /// Which resource.
        resource: &'static str,
        /// What was asked.
        requested: u64,
        /// The minimum.
        min: u64,
        /// The step.
        step: u64,
    },
    /// A quantity exceeds what is left.
    #[error("{resource}: {requested} requested but only {available} available")]
    Insufficient {
        /// Which resource.
        resource: &'static str,
        /// What was asked.
        requested: u64,
        /// What is left.
        available: u64,
    },
}

impl Flavor {
    /// Checks `partition` against this flavor's policy and against `available`,
    /// the capacity the provider has left for it. The buyer runs the same check
    /// against the advertised characteristics before it asks.
    pub fn check_partition(
        &self,
        partition: &Resources,
        available: &Resources,
    ) -> Result<(), PartitionError> {
        if partition.is_zero() {
            return Err(PartitionError::Empty);
        }
        let whole = self.characteristics.resources;
        if !self.policy.partitionable && *partition != whole {
            return Err(PartitionError::NotPartitionable { whole });
        }
        let names = crate::resources::RESOURCE_NAMES;
        let (req, min, step, avail) = (
            partition.as_array(),
            self.policy.min.as_array(),
            self.policy.step.as_array(),
            available.as_array(),
        );
        for i in 0..names.len() {
            // A resource the partition does not ask for is not bound by the minimum.
            if req[i] == 0 {
                continue;
            }
            if req[i] < min[i] {
                return Err(PartitionError::BelowMin {
                    resource: names[i],
                    requested: req[i],
                    min: min[i],
                });
            }
            if step[i] != 0 && (req[i] - min[i]) % step[i] != 0 {
                return Err(PartitionError::OffStep {
                    resource: names[i],
                    requested: req[i],
                    min: min[i],
                    step: step[i],
                });
            }
        }
        for i in 0..names.len() {
            if req[i] > avail[i] {
                return Err(PartitionError::Insufficient {
                    resource: names[i],
                    requested: req[i],
                    available: avail[i],
                });
            }
        }
        Ok(())
    }

    /// The smallest partition that covers `want` and respects min and step, if the
    /// flavor can hold it. Buyers use it to round a request up to a valid size.
    ///
    /// A request for compute (cpu or memory) that names no workload slots gets
    /// one slot (rounded up to the flavor's minimum) when the flavor sells slots:
    /// capacity without a slot could host no workload.
    pub fn fit_partition(&self, want: &Resources) -> Option<Resources> {
        let whole = self.characteristics.resources;
        let mut want = *want;
        if want.pods == 0 && (want.cpu_millis > 0 || want.memory_bytes > 0) && whole.pods > 0 {
            want.pods = 1;
        }
        if !self.policy.partitionable {
            return want.fits_within(&whole).then_some(whole);
        }
        let (w, min, step) = (
            want.as_array(),
            self.policy.min.as_array(),
            self.policy.step.as_array(),
        );
        let mut out = [0u64; 5];
        for i in 0..5 {
            if w[i] == 0 {
                continue;
            }
            let mut q = w[i].max(min[i]);
            if step[i] != 0 {
                let over = q - min[i];
                q = min[i].checked_add(over.div_ceil(step[i]).checked_mul(step[i])?)?;
            }
            out[i] = q;
        }
        let part = Resources::from_array(out);
        (part.fits_within(&whole) && !part.is_zero()).then_some(part)
    }

    /// The price of `partition` per period, in micro-units: the price times the
    /// partition's dominant share of [`Flavor::price_basis`], rounded up.
    pub fn quote(&self, partition: &Resources) -> u64 {
        let share = partition.dominant_share_ppm(&self.price_basis) as u128;
        let amount = (self.price.amount_micros as u128 * share).div_ceil(1_000_000);
        amount.min(u64::MAX as u128) as u64
    }

    /// The price of everything the flavor offers now, per period.
    pub fn whole_price(&self) -> u64 {
        self.quote(&self.characteristics.resources)
    }

    /// Whether the offer is still valid at `now`.
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.valid_until
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SecretKey;

    pub(crate) fn sample(owner: NodeId) -> Flavor {
        Flavor {
            id: FlavorId([1; 16]),
            owner,
            characteristics: Characteristics {
                resources: Resources {
                    cpu_millis: 8000,
                    memory_bytes: 16 << 30,
                    storage_bytes: 100 << 30,
                    pods: 110,
                    gpus: 0,
                },
                architecture: Architecture::X86_64,
                gpu: None,
            },
            properties: Properties {
                location: Some(Location {
                    country: "IT".into(),
                    city: Some("Turin".into()),
                    lat_e6: Some(45_070_312),
                    lon_e6: Some(7_686_856),
                }),
                labels: [("zone".to_string(), "edge".to_string())].into(),
                carbon_g_per_kwh: Some(250),
            },
            policy: Partitionability {
                partitionable: true,
                min: Resources {
                    cpu_millis: 1000,
                    memory_bytes: 1 << 30,
                    storage_bytes: 0,
                    pods: 1,
                    gpus: 0,
                },
                step: Resources {
                    cpu_millis: 500,
                    memory_bytes: 512 << 20,
                    storage_bytes: 1 << 30,
                    pods: 1,
                    gpus: 1,
                },
            },
            price: Price {
                amount_micros: 800_000,
                currency: "EUR".into(),
                period: PricePeriod::Hour,
                model: PriceModel::Reserved,
            },
            price_basis: Resources {
                cpu_millis: 8000,
                memory_bytes: 16 << 30,
                storage_bytes: 100 << 30,
                pods: 110,
                gpus: 0,
            },
            valid_until: Timestamp(10_000),
            revision: 1,
        }
    }

    #[test]
    fn partition_rules() {
        let f = sample(SecretKey::generate().node_id());
        let all = f.characteristics.resources;
        let ok = Resources {
            cpu_millis: 1500,
            memory_bytes: 3 << 29,
            pods: 1,
            ..Default::default()
        };
        f.check_partition(&ok, &all).unwrap();
        let below = Resources {
            cpu_millis: 500,
            ..ok
        };
        assert!(matches!(
            f.check_partition(&below, &all),
            Err(PartitionError::BelowMin {
                resource: "cpu",
                ..
            })
        ));
        let off = Resources {
            cpu_millis: 1200,
            ..ok
        };
        assert!(matches!(
            f.check_partition(&off, &all),
            Err(PartitionError::OffStep {
                resource: "cpu",
                ..
            })
        ));
        let little_left = Resources {
            cpu_millis: 1000,
            ..all
        };
        assert!(matches!(
            f.check_partition(&ok, &little_left),
            Err(PartitionError::Insufficient {
                resource: "cpu",
                ..
            })
        ));
        assert_eq!(
            f.check_partition(&Resources::ZERO, &all),
            Err(PartitionError::Empty)
        );
        let mut whole_only = f.clone();
        whole_only.policy.partitionable = false;
        assert!(matches!(
            whole_only.check_partition(&ok, &all),
            Err(PartitionError::NotPartitionable { .. })
        ));
        whole_only.check_partition(&all, &all).unwrap();
    }

    #[test]
    fn fit_rounds_up_to_step() {
        let f = sample(SecretKey::generate().node_id());
        let want = Resources {
            cpu_millis: 1200,
            memory_bytes: 1 << 30,
            ..Default::default()
        };
        let got = f.fit_partition(&want).unwrap();
        assert_eq!(got.cpu_millis, 1500);
        assert_eq!(got.memory_bytes, 1 << 30);
        assert_eq!(got.pods, 1, "compute without slots gets one slot");
        f.check_partition(&got, &f.characteristics.resources)
            .unwrap();
        let too_big = Resources {
            cpu_millis: 9000,
            ..Default::default()
        };
        assert_eq!(f.fit_partition(&too_big), None);
    }

    #[test]
    fn quote_is_the_dominant_share() {
        let f = sample(SecretKey::generate().node_id());
        // 2 of 8 CPUs (25 %) and 8 of 16 GiB (50 %): memory dominates.
        let part = Resources {
            cpu_millis: 2000,
            memory_bytes: 8 << 30,
            ..Default::default()
        };
        assert_eq!(f.quote(&part), 400_000);
    }
}
