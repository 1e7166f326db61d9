//! Shared fixtures of the ledger, store and buyer tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{
    Architecture, BuyerTerms, ContractId, FabricParams, FlavorId, Location, NodeId, Nonce,
    Partitionability, Price, PriceModel, PricePeriod, Properties, Resources, SecretKey, Signed,
    Termination, Timestamp, Verified, WireGuardKey,
};
use fluidos_core::ledger::{FlavorTemplate, Ledger, LedgerConfig};
use fluidos_core::store::Record;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);
pub const GIB: u64 = 1 << 30;
pub const FLAVOR: FlavorId = FlavorId([1; 16]);

pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

pub fn fabric(b: u8) -> FabricParams {
    FabricParams {
        wireguard_key: WireGuardKey([b; 32]),
        endpoints: vec![format!("127.0.0.1:{}", 51820 + u16::from(b))],
        overlay_address: None,
    }
}

pub fn cpu_mem(cpu_millis: u64, mem_gib: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes: mem_gib * GIB,
        ..Resources::ZERO
    }
}

/// 8 CPUs and 16 GiB; partitions from 1 CPU / 1 GiB in steps of 1 CPU / 1 GiB;
/// 1 EUR per hour for all of it.
pub fn template(id: FlavorId, country: &str) -> FlavorTemplate {
    FlavorTemplate {
        id,
        architecture: Architecture::X86_64,
        gpu: None,
        properties: Properties {
            location: Some(Location {
                country: country.into(),
                city: None,
                lat_e6: None,
                lon_e6: None,
            }),
            ..Properties::default()
        },
        policy: Partitionability {
            partitionable: true,
            min: cpu_mem(1000, 1),
            step: cpu_mem(1000, 1),
        },
        price: Price {
            amount_micros: 1_000_000,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        max: None,
        not_after: None,
    }
}

pub fn config(capacity: Resources) -> LedgerConfig {
    let mut c = LedgerConfig::new(capacity, vec![template(FLAVOR, "IT")], fabric(1));
    c.id_seed = Some(7);
    c
}

pub fn ledger(seed: u8, capacity: Resources) -> Ledger {
    Ledger::new(key(seed), config(capacity), T0)
}

pub fn buyer_terms(b: u8) -> BuyerTerms {
    BuyerTerms {
        fabric: fabric(b),
        max_price_micros: 10_000_000,
        currency: "EUR".into(),
        duration_ms: 3_600_000,
    }
}

/// Delivers one request to the ledger and "persists" its records into `journal`.
pub fn ask(
    ledger: &mut Ledger,
    journal: &mut Vec<Record>,
    from: NodeId,
    request: Request,
    now: Timestamp,
) -> Response {
    let (response, records) = ledger.handle(from, request, now);
    journal.extend(records);
    response
}

/// A termination of `contract` signed by `by` at `T0`, with nonce `[n; 16]`.
pub fn terminate_by(by: &SecretKey, contract: ContractId, n: u8) -> Verified<Termination> {
    Signed::sign(
        Termination {
            contract,
            by: by.node_id(),
            reason: "done".into(),
            at: T0,
            nonce: Nonce([n; 16]),
            cause: Default::default(),
        },
        by,
    )
    .unwrap()
}
