//! GPU parsers on real captures from an NVIDIA H100 (see `tests/fixtures/`), and
//! the flavors a GPU host publishes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use fluidos_contracts::{Architecture, FlavorId, Resources, SecretKey, Timestamp};
use fluidos_core::host::gpu::{parse_nvidia_smi_csv, parse_proc_gpu_information};
use fluidos_core::host::{
    FlavorKind, HostMeasurement, HostReserve, OfferConfig, build_flavors, sellable,
};

const QUERY_CSV: &str = include_str!("fixtures/nvidia-smi-query-gpu.csv");
const PROC_INFO: &str = include_str!("fixtures/proc-driver-nvidia-gpus-information.txt");

#[test]
fn nvidia_smi_query_of_an_h100() {
    let gpus = parse_nvidia_smi_csv(QUERY_CSV).unwrap();
    assert_eq!(gpus.len(), 1);
    let g = &gpus[0];
    assert_eq!(g.index, 0);
    assert_eq!(g.uuid, "GPU-00000000-1111-2222-3333-444444444444");
    assert_eq!(g.model, "NVIDIA H100 80GB HBM3");
    assert_eq!(g.memory_total_bytes, 81_559 << 20);
    assert_eq!(g.memory_used_bytes, Some(0));
    assert_eq!(g.driver_version.as_deref(), Some("580.159.04"));
    assert_eq!(g.pci_bus_id.as_deref(), Some("00000000:00:06.0"));
    assert_eq!(g.compute_capability.as_deref(), Some("9.0"));
    assert_eq!(g.mig_enabled, Some(false));
}

#[test]
fn proc_information_of_an_h100() {
    let info = parse_proc_gpu_information(PROC_INFO);
    assert_eq!(info.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(
        info.uuid.as_deref(),
        Some("GPU-00000000-1111-2222-3333-444444444444")
    );
    assert_eq!(info.bus_location.as_deref(), Some("0000:00:06.0"));
    assert_eq!(info.device_minor, Some(0));
    assert!(!info.excluded);
}

#[test]
fn truncated_capture_is_an_error_not_a_gpu() {
    let cut = &QUERY_CSV[..QUERY_CSV.len() - 30];
    assert!(parse_nvidia_smi_csv(cut).is_err());
}

fn gpu_host() -> HostMeasurement {
    HostMeasurement {
        logical_cpus: 26,
        total_memory_bytes: 221 << 30,
        available_memory_bytes: 200 << 30,
        disk_available_bytes: 500 << 30,
        disk_mount_point: Some("/".into()),
        architecture: Architecture::X86_64,
        gpus: parse_nvidia_smi_csv(QUERY_CSV).unwrap(),
    }
}

#[test]
fn a_gpu_host_publishes_a_general_and_a_gpu_flavor_that_split_capacity() {
    let owner = SecretKey::generate().node_id();
    let host = gpu_host();
    let cfg = OfferConfig::default();
    let total = sellable(&host, &HostReserve::default(), cfg.pods);
    assert_eq!(total.gpus, 1);
    let mut ids = BTreeMap::new();
    let flavors = build_flavors(
        owner,
        &host,
        &total,
        &cfg,
        Timestamp(1_000),
        1,
        &mut ids,
        FlavorId::random,
    );
    assert_eq!(flavors.len(), 2);
    let (kind, general) = &flavors[0];
    assert_eq!(*kind, FlavorKind::General);
    assert_eq!(general.characteristics.resources.gpus, 0);
    assert_eq!(general.characteristics.gpu, None);
    assert_eq!(general.valid_until, Timestamp(1_000 + 3_600_000));
    let (kind, gpu) = &flavors[1];
    assert_eq!(
        *kind,
        FlavorKind::Gpu {
            model: "NVIDIA H100 80GB HBM3".into()
        }
    );
    let info = gpu.characteristics.gpu.as_ref().unwrap();
    assert_eq!(info.memory_bytes, 81_559 << 20);
    assert_eq!(
        gpu.characteristics.resources,
        Resources {
            gpus: 1,
            ..Resources::ZERO
        }
    );
    assert_eq!(gpu.price.amount_micros, cfg.gpu_price_micros);
    // The flavors never add up to more than the host may sell.
    let sum = flavors
        .iter()
        .try_fold(Resources::ZERO, |acc, (_, f)| {
            acc.checked_add(&f.characteristics.resources)
        })
        .unwrap();
    assert!(sum.fits_within(&total));
    // Every flavor's own minimum is a valid partition of it.
    for (_, f) in &flavors {
        let mut min = f.policy.min;
        // The minimum of resources a buyer does not ask for is irrelevant.
        let whole = f.characteristics.resources;
        if whole.cpu_millis == 0 {
            min.cpu_millis = 0;
        }
        if !min.is_zero() {
            f.check_partition(&min, &whole).unwrap();
        }
        // And the whole flavor is one valid partition.
        f.check_partition(&whole, &whole).unwrap();
    }
}

#[test]
fn ids_stay_stable_across_remeasurement_and_revisions_grow() {
    let owner = SecretKey::generate().node_id();
    let host = gpu_host();
    let cfg = OfferConfig::default();
    let total = sellable(&host, &HostReserve::default(), cfg.pods);
    let mut ids = BTreeMap::new();
    let first = build_flavors(
        owner,
        &host,
        &total,
        &cfg,
        Timestamp(0),
        1,
        &mut ids,
        FlavorId::random,
    );
    let mut fresh = 0;
    let second = build_flavors(
        owner,
        &host,
        &total,
        &cfg,
        Timestamp(5),
        2,
        &mut ids,
        || {
            fresh += 1;
            FlavorId::random()
        },
    );
    assert_eq!(fresh, 0, "known kinds must keep their ids");
    for ((_, a), (_, b)) in first.iter().zip(&second) {
        assert_eq!(a.id, b.id);
        assert_eq!(b.revision, 2);
    }
}

#[test]
fn a_small_host_clamps_the_minimum_to_its_size() {
    let owner = SecretKey::generate().node_id();
    let mut host = gpu_host();
    host.logical_cpus = 2;
    host.gpus.clear();
    let cfg = OfferConfig {
        min: Resources {
            cpu_millis: 4000,
            ..OfferConfig::default().min
        },
        ..OfferConfig::default()
    };
    let total = sellable(&host, &HostReserve::default(), cfg.pods);
    let flavors = build_flavors(
        owner,
        &host,
        &total,
        &cfg,
        Timestamp(0),
        1,
        &mut BTreeMap::new(),
        FlavorId::random,
    );
    assert_eq!(flavors.len(), 1);
    let f = &flavors[0].1;
    assert_eq!(f.policy.min.cpu_millis, 1000);
    assert_eq!(
        f.policy.step.gpus, 0,
        "no step for a resource the flavor lacks"
    );
    let whole = f.characteristics.resources;
    f.check_partition(&whole, &whole).unwrap();
}
