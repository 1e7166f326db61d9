//! Cost of the contract cryptography and encoding.
//!
//! Run: `cargo bench -p fluidos-contracts --bench contracts` (add `-- --quick` for a
//! short run). The `vc_*` benchmarks need the default `vc` feature.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fluidos_contracts::*;

fn resources(cpu_millis: u64, memory_bytes: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
        storage_bytes: 100 << 30,
        pods: 110,
        gpus: 0,
    }
}

/// A realistic flavor: location, labels, partition policy.
fn flavor(owner: NodeId) -> Flavor {
    Flavor {
        id: FlavorId([1; 16]),
        owner,
        characteristics: Characteristics {
            resources: resources(8000, 16 << 30),
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
            labels: [
                ("zone".to_string(), "edge".to_string()),
                ("tier".to_string(), "gold".to_string()),
            ]
            .into(),
            carbon_g_per_kwh: Some(250),
        },
        policy: Partitionability {
            partitionable: true,
            min: resources(1000, 1 << 30),
            step: resources(500, 512 << 20),
        },
        price: Price {
            amount_micros: 800_000,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        price_basis: resources(8000, 16 << 30),
        valid_until: Timestamp(1_767_229_200_000),
        revision: 1,
    }
}

fn fabric(b: u8) -> FabricParams {
    FabricParams {
        wireguard_key: WireGuardKey([b; 32]),
        endpoints: vec![format!("198.18.0.{b}:51820")],
        overlay_address: Some(format!("fdf0:6a54:bda7::{b}")),
    }
}

fn terms(provider: &SecretKey, buyer: &SecretKey) -> ContractTerms {
    ContractTerms {
        id: ContractId([9; 16]),
        reservation: ReservationId([8; 16]),
        provider: provider.node_id(),
        buyer: buyer.node_id(),
        flavor: flavor(provider.node_id()),
        partition: resources(2000, 4 << 30),
        price: Quote {
            amount_micros: 200_000,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        valid_from: Timestamp(1_767_225_600_000),
        valid_until: Timestamp(1_767_229_200_000),
        nonce: Nonce([7; 16]),
        provider_fabric: fabric(1),
        buyer_fabric: fabric(2),
        forwarded_via: vec![],
    }
}

fn contracts(c: &mut Criterion) {
    let (provider, buyer) = (
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    );
    let t = terms(&provider, &buyer);
    let offer = SignedContract::offer(t.clone(), &provider).unwrap();
    let contract = offer.clone().countersign(&buyer).unwrap();
    let bytes = contract.signed().to_bytes().unwrap();
    println!("signed contract: {} bytes of canonical CBOR", bytes.len());

    c.bench_function("contract_offer_sign", |b| {
        b.iter(|| SignedContract::offer(black_box(t.clone()), &provider).unwrap())
    });
    c.bench_function("contract_countersign", |b| {
        b.iter(|| black_box(offer.clone()).countersign(&buyer).unwrap())
    });
    c.bench_function("contract_verify_from_bytes", |b| {
        b.iter(|| {
            SignedContract::from_bytes(black_box(&bytes))
                .unwrap()
                .verify()
                .unwrap()
        })
    });
}

/// The canonical encoder and the strict decoder alone, on the largest signed value.
fn terms_codec(c: &mut Criterion) {
    let (provider, buyer) = (
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    );
    let t = terms(&provider, &buyer);
    let encoded = canonical::to_vec(&t).unwrap();
    println!("contract terms: {} bytes of canonical CBOR", encoded.len());
    c.bench_function("terms_canonical_encode", |b| {
        b.iter(|| canonical::to_vec(black_box(&t)).unwrap())
    });
    c.bench_function("terms_canonical_decode_strict", |b| {
        b.iter(|| canonical::from_slice::<ContractTerms>(black_box(&encoded)).unwrap())
    });
}

fn flavors(c: &mut Criterion) {
    let f = flavor(SecretKey::from_seed(&[1; 32]).node_id());
    let encoded = canonical::to_vec(&f).unwrap();
    println!("flavor: {} bytes of canonical CBOR", encoded.len());
    c.bench_function("flavor_canonical_encode", |b| {
        b.iter(|| canonical::to_vec(black_box(&f)).unwrap())
    });
    c.bench_function("flavor_canonical_decode", |b| {
        b.iter(|| canonical::from_slice::<Flavor>(black_box(&encoded)).unwrap())
    });
}

#[cfg(feature = "vc")]
fn credentials(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (provider, buyer) = (
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    );
    let contract = SignedContract::offer(terms(&provider, &buyer), &provider)
        .unwrap()
        .countersign(&buyer)
        .unwrap();
    let document = runtime
        .block_on(vc::export(&contract, &provider))
        .unwrap()
        .to_string();
    println!("credential: {} bytes of JSON", document.len());
    let mut group = c.benchmark_group("vc");
    group.sample_size(10);
    group.bench_function("vc_export", |b| {
        b.iter(|| {
            runtime
                .block_on(vc::export(black_box(&contract), &provider))
                .unwrap()
        })
    });
    group.bench_function("vc_verify", |b| {
        b.iter(|| runtime.block_on(vc::verify(black_box(&document))).unwrap())
    });
    group.finish();
}

#[cfg(not(feature = "vc"))]
fn credentials(_: &mut Criterion) {}

criterion_group!(benches, contracts, terms_codec, flavors, credentials);
criterion_main!(benches);
