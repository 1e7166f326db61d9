//! Provider ledger throughput.
//!
//! Run with `cargo bench -p fluidos-core --bench ledger`.
//!
//! - `ledger/cycle_in_memory`: one reserve → purchase → countersign through
//!   `Ledger::handle`, provider side only (the buyer's countersignature is made
//!   outside the timed region), contracts lapsing as time moves on;
//! - `ledger/durable_batch_64`: 64 buyers negotiating at once; the driver group
//!   commits each phase (64 reserves, 64 purchases, 64 countersigns: three
//!   `fdatasync`s per 64 contracts) to a `Store` on the data disk. Provider time
//!   only, fsyncs included;
//! - `contract/*`: signing and verification cost per contract.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{
    Architecture, BuyerTerms, FabricParams, FlavorId, Nonce, Partitionability, Price, PriceModel,
    PricePeriod, Properties, Resources, SecretKey, SignedContract, Timestamp, WireGuardKey,
};
use fluidos_core::ledger::{FlavorTemplate, Ledger, LedgerConfig};
use fluidos_core::store::Store;

const FLAVOR: FlavorId = FlavorId([1; 16]);

fn fabric(b: u8) -> FabricParams {
    FabricParams {
        wireguard_key: WireGuardKey([b; 32]),
        endpoints: vec![format!("192.0.2.{b}:51820")],
        overlay_address: None,
    }
}

fn ledger() -> Ledger {
    let one = Resources {
        cpu_millis: 100,
        memory_bytes: 1 << 20,
        ..Resources::ZERO
    };
    let template = FlavorTemplate {
        id: FLAVOR,
        architecture: Architecture::X86_64,
        gpu: None,
        properties: Properties::default(),
        policy: Partitionability {
            partitionable: true,
            min: one,
            step: one,
        },
        price: Price {
            amount_micros: 1_000_000,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        max: None,
        not_after: None,
    };
    let capacity = Resources {
        cpu_millis: 1 << 40,
        memory_bytes: 1 << 60,
        ..Resources::ZERO
    };
    let mut config = LedgerConfig::new(capacity, vec![template], fabric(1));
    config.max_reservations_per_buyer = 1024;
    Ledger::new(SecretKey::from_seed(&[1; 32]), config, Timestamp(1_000))
}

fn terms() -> BuyerTerms {
    BuyerTerms {
        fabric: fabric(2),
        max_price_micros: u64::MAX,
        currency: "EUR".into(),
        // Short contracts, so they lapse as the clock moves and the ledger stays small.
        duration_ms: 50,
    }
}

fn partition() -> Resources {
    Resources {
        cpu_millis: 100,
        memory_bytes: 1 << 20,
        ..Resources::ZERO
    }
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_le_bytes());
    Nonce(b)
}

struct Cycle {
    ledger: Ledger,
    buyers: Vec<SecretKey>,
    now: Timestamp,
    n: u64,
}

impl Cycle {
    fn new(buyers: usize) -> Self {
        Self {
            ledger: ledger(),
            buyers: (0..buyers)
                .map(|i| SecretKey::from_seed(&[(i + 2) as u8; 32]))
                .collect(),
            now: Timestamp(1_000),
            n: 0,
        }
    }
}

/// One contract; returns the provider's time.
fn one_cycle(c: &mut Cycle) -> Duration {
    c.now = c.now.plus_ms(1);
    c.n += 1;
    let buyer = &c.buyers[0];
    let me = buyer.node_id();
    let start = Instant::now();
    let (r, _) = c.ledger.handle(
        me,
        Request::Reserve {
            flavor: FLAVOR,
            partition: partition(),
            nonce: nonce(c.n),
        },
        c.now,
    );
    let Response::Reserved { reservation } = r else {
        panic!("reserve failed: {r:?}")
    };
    let (o, _) = c.ledger.handle(
        me,
        Request::Purchase {
            reservation: reservation.id,
            terms: terms(),
        },
        c.now,
    );
    let Response::Offer { contract } = o else {
        panic!("purchase failed: {o:?}")
    };
    let mut provider_time = start.elapsed();
    // The buyer's work, not timed.
    let signed = contract
        .verify_offer()
        .and_then(|o| o.countersign(buyer))
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    let (a, _) = c.ledger.handle(
        me,
        Request::Countersign {
            contract: signed.id(),
            signature: signed.buyer_signature(),
        },
        c.now,
    );
    provider_time += start.elapsed();
    assert!(matches!(a, Response::Countersigned { .. }), "{a:?}");
    provider_time
}

/// 64 contracts with three group commits; returns the provider's time.
fn durable_batch(c: &mut Cycle, store: &mut Store) -> Duration {
    c.now = c.now.plus_ms(1);
    let mut provider_time = Duration::ZERO;
    let buyers: Vec<SecretKey> = c.buyers.clone();

    let start = Instant::now();
    let mut reservations = Vec::with_capacity(buyers.len());
    for b in &buyers {
        c.n += 1;
        let (r, records) = c.ledger.handle(
            b.node_id(),
            Request::Reserve {
                flavor: FLAVOR,
                partition: partition(),
                nonce: nonce(c.n),
            },
            c.now,
        );
        store.append(&records);
        reservations.push(r);
    }
    store.sync().unwrap_or_else(|e| panic!("{e}"));
    let mut offers = Vec::with_capacity(buyers.len());
    for (b, r) in buyers.iter().zip(reservations) {
        let Response::Reserved { reservation } = r else {
            panic!("reserve failed: {r:?}")
        };
        let (o, records) = c.ledger.handle(
            b.node_id(),
            Request::Purchase {
                reservation: reservation.id,
                terms: terms(),
            },
            c.now,
        );
        store.append(&records);
        offers.push(o);
    }
    store.sync().unwrap_or_else(|e| panic!("{e}"));
    provider_time += start.elapsed();

    let signed: Vec<_> = buyers
        .iter()
        .zip(offers)
        .map(|(b, o)| {
            let Response::Offer { contract } = o else {
                panic!("purchase failed: {o:?}")
            };
            contract
                .verify_offer()
                .and_then(|o| o.countersign(b))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();

    let start = Instant::now();
    for (b, s) in buyers.iter().zip(&signed) {
        let (a, records) = c.ledger.handle(
            b.node_id(),
            Request::Countersign {
                contract: s.id(),
                signature: s.buyer_signature(),
            },
            c.now,
        );
        store.append(&records);
        assert!(matches!(a, Response::Countersigned { .. }), "{a:?}");
    }
    store.sync().unwrap_or_else(|e| panic!("{e}"));
    provider_time += start.elapsed();
    provider_time
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));

    group.throughput(Throughput::Elements(1));
    let mut cycle = Cycle::new(1);
    group.bench_function("cycle_in_memory", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| one_cycle(&mut cycle)).sum())
    });

    group.throughput(Throughput::Elements(64));
    // On the data disk, not a tmpfs: fsync must cost what it costs.
    let dir = tempfile::Builder::new()
        .prefix("fluidos-ledger-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut store, _) = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let mut batch = Cycle::new(64);
    group.bench_function("durable_batch_64", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| durable_batch(&mut batch, &mut store))
                .sum()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("contract");
    let provider = SecretKey::from_seed(&[1; 32]);
    let buyer = SecretKey::from_seed(&[2; 32]);
    let mut l = ledger();
    let r = l
        .reserve(
            buyer.node_id(),
            FLAVOR,
            partition(),
            nonce(0),
            Timestamp(1_000),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let offer = l
        .purchase(buyer.node_id(), r.id, terms(), Timestamp(1_000))
        .unwrap_or_else(|e| panic!("{e}"));
    let terms = offer.terms().clone();
    let contract = offer
        .clone()
        .countersign(&buyer)
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = contract
        .signed()
        .to_bytes()
        .unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("provider_sign", |b| {
        b.iter(|| SignedContract::offer(black_box(terms.clone()), &provider))
    });
    group.bench_function("buyer_verify_offer_and_countersign", |b| {
        b.iter(|| {
            offer
                .signed()
                .verify_offer()
                .and_then(|o| o.countersign(&buyer))
        })
    });
    group.bench_function("third_party_verify_bytes", |b| {
        b.iter(|| SignedContract::from_bytes(black_box(&bytes)).map(|c| c.verify().is_ok()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
