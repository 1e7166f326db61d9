//! The local resource manager: what this machine has, what it keeps for itself,
//! and what it sells.
//!
//! Measurement and computation are kept apart:
//! - [`HostProbe::measure`] is the only I/O: `sysinfo` for CPUs, memory and the
//!   data directory's filesystem, `nvidia-smi` for GPUs ([`gpu`]);
//! - [`sellable`] subtracts the host's [`HostReserve`] from a [`HostMeasurement`];
//! - [`build_flavors`] turns sellable capacity plus the operator's
//!   [`OfferConfig`] into [`Flavor`]s.
//!
//! The two pure steps take everything as parameters (time and identifiers too),
//! so they are tested without touching the machine.
//!
//! What is *already sold* is not this module's business: the provider ledger
//! holds the sellable total from here and offers only what is left of it.

pub mod gpu;
mod probe;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fluidos_contracts::{
    Architecture, Characteristics, Flavor, FlavorId, GpuInfo, Location, NodeId, Partitionability,
    Price, PriceModel, PricePeriod, Properties, Resources, Timestamp,
};
use serde::{Deserialize, Serialize};

pub use gpu::Gpu;
pub use probe::{HostError, HostProbe};

/// What the host has, as measured at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMeasurement {
    /// Logical CPUs (hardware threads) the operating system reports.
    pub logical_cpus: u32,
    /// Total physical memory in bytes.
    pub total_memory_bytes: u64,
    /// Memory the kernel considers available for new work, in bytes.
    pub available_memory_bytes: u64,
    /// Free space, in bytes, of the filesystem holding the data directory.
    pub disk_available_bytes: u64,
    /// Mount point of that filesystem, when found.
    pub disk_mount_point: Option<PathBuf>,
    /// CPU architecture.
    pub architecture: Architecture,
    /// GPUs the driver reports (empty without a usable driver).
    pub gpus: Vec<Gpu>,
}

/// What the host keeps for itself: `fraction_ppm` of each quantity, but never
/// less than the minimums. GPUs are never reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReserve {
    /// Share kept back, in parts per million (100_000 = 10 %).
    pub fraction_ppm: u32,
    /// At least this much CPU is kept back, in millicores.
    pub min_cpu_millis: u64,
    /// At least this much memory is kept back, in bytes.
    pub min_memory_bytes: u64,
}

impl Default for HostReserve {
    /// 10 %, and at least one core and 512 MiB.
    fn default() -> Self {
        Self {
            fraction_ppm: 100_000,
            min_cpu_millis: 1000,
            min_memory_bytes: 512 << 20,
        }
    }
}

impl HostReserve {
    /// A reserve of `percent` % (clamped to 100) with the default minimums.
    pub fn percent(percent: u32) -> Self {
        Self {
            fraction_ppm: percent.min(100) * 10_000,
            ..Self::default()
        }
    }
}

/// `value * ppm / 1e6`, rounded up so that the reserve errs on the host's side.
fn share(value: u64, ppm: u32) -> u64 {
    let ppm = u128::from(ppm.min(1_000_000));
    (u128::from(value) * ppm).div_ceil(1_000_000) as u64
}

/// The capacity this host may sell: what it has minus the reserve.
///
/// - CPU: logical CPUs minus `max(fraction, min_cpu)`.
/// - Memory: *total* memory minus `max(fraction, min_memory)`. Total rather than
///   available, like a kubelet's allocatable: available memory moves with the
///   page cache, and an offer that shrinks and grows with it would be re-issued
///   constantly.
/// - Storage: free space of the data directory's filesystem minus the fraction.
/// - Pods: `pods` as configured (slots are a policy, not a measurement).
/// - GPUs: every GPU the driver reports, except those in MIG mode (a MIG GPU is
///   split into instances that are not sold as whole GPUs).
pub fn sellable(measured: &HostMeasurement, reserve: &HostReserve, pods: u64) -> Resources {
    let cpu = u64::from(measured.logical_cpus).saturating_mul(1000);
    let cpu_keep = share(cpu, reserve.fraction_ppm).max(reserve.min_cpu_millis);
    let mem = measured.total_memory_bytes;
    let mem_keep = share(mem, reserve.fraction_ppm).max(reserve.min_memory_bytes);
    let disk = measured.disk_available_bytes;
    let gpus = measured
        .gpus
        .iter()
        .filter(|g| g.mig_enabled != Some(true))
        .count() as u64;
    Resources {
        cpu_millis: cpu.saturating_sub(cpu_keep),
        memory_bytes: mem.saturating_sub(mem_keep),
        storage_bytes: disk.saturating_sub(share(disk, reserve.fraction_ppm)),
        pods,
        gpus,
    }
}

/// What the operator configures about the offers, beyond the measured capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferConfig {
    /// Where the node is, if disclosed.
    pub location: Option<Location>,
    /// Labels copied onto every flavor.
    pub labels: BTreeMap<String, String>,
    /// Grid carbon intensity, if known.
    pub carbon_g_per_kwh: Option<u32>,
    /// Price of the whole CPU/memory/storage flavor.
    pub price: Price,
    /// Price of one GPU, per the same period and currency as `price`; the GPU
    /// flavor costs this times its GPU count.
    pub gpu_price_micros: u64,
    /// Smallest partition per resource.
    pub min: Resources,
    /// Partition step per resource (0 = any amount).
    pub step: Resources,
    /// Workload slots offered.
    pub pods: u64,
    /// How long an issued flavor stays valid; the node re-issues before then.
    pub validity: Duration,
}

impl Default for OfferConfig {
    fn default() -> Self {
        Self {
            location: None,
            labels: BTreeMap::new(),
            carbon_g_per_kwh: None,
            price: Price {
                amount_micros: 1_000_000,
                currency: "EUR".into(),
                period: PricePeriod::Hour,
                model: PriceModel::Reserved,
            },
            gpu_price_micros: 2_000_000,
            min: Resources {
                cpu_millis: 500,
                memory_bytes: 512 << 20,
                storage_bytes: 0,
                pods: 1,
                gpus: 1,
            },
            step: Resources {
                cpu_millis: 500,
                memory_bytes: 256 << 20,
                storage_bytes: 1 << 30,
                pods: 1,
                gpus: 1,
            },
            pods: 110,
            validity: Duration::from_secs(3600),
        }
    }
}

/// Which of a host's flavors a [`Flavor`] is; the key under which its id is kept
/// stable across re-measurements.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlavorKind {
    /// CPU, memory, storage and workload slots.
    General,
    /// Whole GPUs of one model.
    Gpu {
        /// The model, as the driver names it.
        model: String,
    },
}

/// Builds this host's flavors from its sellable capacity.
///
/// - one [`FlavorKind::General`] flavor with the CPU, memory, storage and pods,
///   when there is CPU and memory to sell;
/// - one [`FlavorKind::Gpu`] flavor per GPU model, holding only GPUs, when GPUs
///   are sellable.
///
/// The flavors split the capacity: their resources sum to at most `sellable`, so
/// the ledger can never sell the same core twice through two flavors. A flavor's
/// minimum is clamped to what it holds, so a small host still sells its whole
/// flavor, and each quantity is rounded down to `min + k * step` so the whole
/// flavor can be bought in one partition. `ids` keeps each kind's id stable; kinds without an id get one from
/// `new_id` (randomness is passed in, as everywhere in fluidos-core).
#[allow(clippy::too_many_arguments)]
pub fn build_flavors(
    owner: NodeId,
    measured: &HostMeasurement,
    sellable: &Resources,
    cfg: &OfferConfig,
    now: Timestamp,
    revision: u64,
    ids: &mut BTreeMap<FlavorKind, FlavorId>,
    mut new_id: impl FnMut() -> FlavorId,
) -> Vec<(FlavorKind, Flavor)> {
    let properties = Properties {
        location: cfg.location.clone(),
        labels: cfg.labels.clone(),
        carbon_g_per_kwh: cfg.carbon_g_per_kwh,
    };
    let valid_until = now.plus_ms(u64::try_from(cfg.validity.as_millis()).unwrap_or(u64::MAX));
    let mut make = |kind: FlavorKind, resources: Resources, gpu: Option<GpuInfo>, price: Price| {
        let id = *ids.entry(kind.clone()).or_insert_with(&mut new_id);
        let min = clamp_min(&cfg.min, &resources);
        let resources = align(&resources, &min, &cfg.step);
        let flavor = Flavor {
            id,
            owner,
            characteristics: Characteristics {
                resources,
                architecture: measured.architecture.clone(),
                gpu,
            },
            properties: properties.clone(),
            policy: Partitionability {
                partitionable: true,
                min,
                step: mask(&cfg.step, &resources),
            },
            price,
            price_basis: resources,
            valid_until,
            revision,
        };
        (kind, flavor)
    };

    let mut out = Vec::new();
    let general = Resources {
        gpus: 0,
        ..*sellable
    };
    if general.cpu_millis > 0 && general.memory_bytes > 0 {
        out.push(make(FlavorKind::General, general, None, cfg.price.clone()));
    }

    // GPUs grouped by model, in a stable order; never more than `sellable.gpus`.
    let mut by_model: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for g in measured.gpus.iter().filter(|g| g.mig_enabled != Some(true)) {
        let entry = by_model.entry(g.model.as_str()).or_insert((0, u64::MAX));
        entry.0 += 1;
        // A flavor promises the memory of every GPU in it: take the smallest.
        entry.1 = entry.1.min(g.memory_total_bytes);
    }
    let mut gpus_left = sellable.gpus;
    for (model, (count, memory)) in by_model {
        let count = count.min(gpus_left);
        if count == 0 {
            break;
        }
        gpus_left -= count;
        let resources = Resources {
            gpus: count,
            ..Resources::ZERO
        };
        let price = Price {
            amount_micros: cfg.gpu_price_micros.saturating_mul(count),
            ..cfg.price.clone()
        };
        let info = GpuInfo {
            model: model.to_string(),
            memory_bytes: memory,
        };
        out.push(make(
            FlavorKind::Gpu {
                model: model.to_string(),
            },
            resources,
            Some(info),
            price,
        ));
    }
    out
}

/// The configured minimum, limited to what the flavor holds (and zero for
/// resources it does not hold, which a partition never asks for anyway).
fn clamp_min(min: &Resources, whole: &Resources) -> Resources {
    let (m, w) = (min.as_array(), whole.as_array());
    Resources::from_array(std::array::from_fn(|i| m[i].min(w[i])))
}

/// Rounds each quantity down to `min + k * step`, so that the whole flavor is
/// itself a valid partition; what is cut off is less than one step.
fn align(whole: &Resources, min: &Resources, step: &Resources) -> Resources {
    let (w, m, s) = (whole.as_array(), min.as_array(), step.as_array());
    Resources::from_array(std::array::from_fn(|i| {
        if w[i] == 0 || s[i] == 0 {
            w[i]
        } else {
            m[i] + (w[i] - m[i]) / s[i] * s[i]
        }
    }))
}

/// The configured step for resources the flavor holds; zero elsewhere.
fn mask(step: &Resources, whole: &Resources) -> Resources {
    let (s, w) = (step.as_array(), whole.as_array());
    Resources::from_array(std::array::from_fn(|i| if w[i] == 0 { 0 } else { s[i] }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_contracts::SecretKey;

    fn host(cpus: u32, mem_gib: u64) -> HostMeasurement {
        HostMeasurement {
            logical_cpus: cpus,
            total_memory_bytes: mem_gib << 30,
            available_memory_bytes: mem_gib << 29,
            disk_available_bytes: 100 << 30,
            disk_mount_point: Some("/".into()),
            architecture: Architecture::X86_64,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn reserve_takes_the_larger_of_fraction_and_minimum() {
        // 2 CPUs: 10 % is 200m, the minimum of one core wins.
        let s = sellable(&host(2, 4), &HostReserve::default(), 110);
        assert_eq!(s.cpu_millis, 1000);
        // 4 GiB: 10 % is ~410 MiB, the 512 MiB minimum wins.
        assert_eq!(s.memory_bytes, (4 << 30) - (512 << 20));
        assert_eq!(s.storage_bytes, 90 << 30);
        assert_eq!(s.pods, 110);
        // 64 CPUs, 256 GiB: the fraction wins.
        let s = sellable(&host(64, 256), &HostReserve::default(), 110);
        assert_eq!(s.cpu_millis, 64_000 - 6_400);
        assert_eq!(s.memory_bytes, (256 << 30) - share(256 << 30, 100_000));
    }

    #[test]
    fn a_tiny_host_sells_nothing_rather_than_underflowing() {
        let s = sellable(&host(1, 0), &HostReserve::default(), 0);
        assert_eq!(
            s,
            Resources {
                storage_bytes: 90 << 30,
                ..Resources::ZERO
            }
        );
        let flavors = build_flavors(
            SecretKey::generate().node_id(),
            &host(1, 0),
            &s,
            &OfferConfig::default(),
            Timestamp(0),
            1,
            &mut BTreeMap::new(),
            FlavorId::random,
        );
        assert!(flavors.is_empty());
    }

    #[test]
    fn full_reserve_keeps_everything() {
        let s = sellable(&host(8, 16), &HostReserve::percent(100), 10);
        assert_eq!((s.cpu_millis, s.memory_bytes, s.storage_bytes), (0, 0, 0));
        assert_eq!(HostReserve::percent(250).fraction_ppm, 1_000_000);
    }

    #[test]
    fn mig_gpus_are_not_sold_whole() {
        let mut h = host(8, 16);
        let gpu = |index, mig| Gpu {
            index,
            uuid: format!("GPU-{index}"),
            model: "NVIDIA A100".into(),
            memory_total_bytes: 40 << 30,
            memory_used_bytes: None,
            driver_version: None,
            pci_bus_id: None,
            compute_capability: None,
            mig_enabled: mig,
        };
        h.gpus = vec![gpu(0, Some(true)), gpu(1, Some(false)), gpu(2, None)];
        assert_eq!(sellable(&h, &HostReserve::default(), 1).gpus, 2);
    }
}
