//! The contract terms the VC tests share.
#![allow(dead_code)]
use fluidos_contracts::*;
fn resources(cpu_millis: u64, memory_bytes: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
        storage_bytes: 10 << 30,
        pods: 4,
        gpus: 0,
    }
}

fn flavor(owner: NodeId) -> Flavor {
    Flavor {
        id: FlavorId([1; 16]),
        owner,
        characteristics: Characteristics {
            resources: resources(8000, 16 << 30),
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
            amount_micros: 800_000,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        price_basis: resources(8000, 16 << 30),
        valid_until: Timestamp(1_767_229_200_000),
        revision: 3,
    }
}

fn fabric(b: u8) -> FabricParams {
    FabricParams {
        wireguard_key: WireGuardKey([b; 32]),
        endpoints: vec![format!("198.18.0.{b}:51820")],
        overlay_address: None,
    }
}

pub(crate) fn terms(provider: &SecretKey, buyer: &SecretKey, via: Vec<NodeId>) -> ContractTerms {
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
        forwarded_via: via,
    }
}
