//! Opening a node: the data directory, the host measurement, the restored
//! ledger and contracts, discovery, and the engine task.

use std::collections::BTreeMap;
use std::time::Duration;

use fluidos_contracts::{FabricParams, FlavorId, Selector, Timestamp, VerifiedContract};
use fluidos_discovery::{AdvertBody, Discovery, FlavorSummary, Role};
use tokio::sync::mpsc;
use tracing::{error, info};

use super::super::types::{BindError, ContractState};
use super::super::writer::Writer;
use super::super::{Inner, Node, NodeBuilder};
use super::{Bought, COMMAND_QUEUE, Engine};
use crate::buyer::Ratings;
use crate::host::{self, FlavorKind, HostMeasurement, HostProbe};
use crate::ledger::{FlavorTemplate, Ledger, LedgerConfig};
use crate::store::{BuyerContractState, Record, Store};

/// `sellable`, limited per resource by the operator's `limit`.
pub(super) fn cap(
    sellable: fluidos_contracts::Resources,
    limit: Option<fluidos_contracts::Resources>,
) -> fluidos_contracts::Resources {
    match limit {
        Some(l) => {
            let (s, l) = (sellable.as_array(), l.as_array());
            fluidos_contracts::Resources::from_array(std::array::from_fn(|i| s[i].min(l[i])))
        }
        None => sellable,
    }
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BindError + '_ {
    move |source| BindError::DataDir {
        path: path.to_owned(),
        source,
    }
}

pub(in crate::node) async fn bind(mut b: NodeBuilder) -> Result<Node, BindError> {
    let data_dir = b.data_dir.clone().ok_or(BindError::NoDataDir)?;
    std::fs::create_dir_all(&data_dir).map_err(io_err(&data_dir))?;
    // Flavors (and the view entries made from them) say which runtimes run here, so that
    // a consumer places image workloads only where a container engine runs them.
    let workload_runtime = runtime(&b, &data_dir);
    if let Some(rt) = &workload_runtime {
        b.offer
            .labels
            .entry(crate::runtime::RUNTIMES_LABEL.to_string())
            .or_insert_with(|| rt.runs().names().join(","));
    }
    let key = match b.key.clone() {
        Some(k) => k,
        None => fluidos_contracts::keyfile::load_or_create(&data_dir.join("node.key"))?.0,
    };
    let node_id = key.node_id();
    let (wg, _) = fluidos_fabric::keyfile::load_or_create(&data_dir.join("wireguard.key"))?;
    // The WireGuard socket is bound first: contracts carry its endpoints.
    let prepared = match &b.fabric {
        Some(options) => {
            let mut options = options.clone();
            if options.endpoints.is_empty() {
                options.endpoints = b.fabric_endpoints.clone();
            }
            let listen_ips = super::super::fabric::specific_ips(&b.discovery.listen);
            Some(super::super::fabric::prepare(&options, listen_ips).await)
        }
        None => None,
    };
    let endpoints = match &prepared {
        Some(p) => p.endpoints.clone(),
        None => b.fabric_endpoints.clone(),
    };
    let fabric: FabricParams = fluidos_fabric::fabric_params(&wg, endpoints, &node_id);

    // Measuring reads /proc and may run nvidia-smi: keep it off the runtime threads.
    let detect_gpus = b.detect_gpus;
    let dir = data_dir.clone();
    let (probe, measured) = tokio::task::spawn_blocking(move || {
        let mut probe = HostProbe::new(dir)?.detect_gpus(detect_gpus);
        let measured = probe.measure()?;
        Ok::<_, host::HostError>((probe, measured))
    })
    .await
    .map_err(BindError::HostTask)??;

    let now = Timestamp::now();
    let (store, records) = Store::open(data_dir.join("state"))?;
    let mut flavor_ids = BTreeMap::new();
    // Keep flavor ids stable across restarts: reuse those of restored deals.
    for r in &records {
        if let Record::Reserved(res)
        | Record::Offered {
            reservation: res, ..
        }
        | Record::Activated {
            reservation: res, ..
        } = r
        {
            let kind = if res.flavor.characteristics.resources.gpus > 0 {
                match &res.flavor.characteristics.gpu {
                    Some(g) => FlavorKind::Gpu {
                        model: g.model.clone(),
                    },
                    None => FlavorKind::General,
                }
            } else {
                FlavorKind::General
            };
            flavor_ids.entry(kind).or_insert(res.flavor.id);
        }
    }
    let sellable = cap(
        host::sellable(&measured, &b.reserve, b.offer.pods),
        b.max_sellable,
    );
    let flavors = host::build_flavors(
        node_id,
        &measured,
        &sellable,
        &b.offer,
        now,
        1,
        &mut flavor_ids,
        FlavorId::random,
    );
    let templates = flavors
        .iter()
        .map(|(_, f)| FlavorTemplate::from_flavor(f))
        .collect();
    let fabric_for_node = fabric.clone();
    let mut config = LedgerConfig::new(sellable, templates, fabric);
    config.reservation_ttl_ms = b.ledger.reservation_ttl_ms;
    config.offer_ttl_ms = b.ledger.offer_ttl_ms;
    config.max_contract_ms = b.ledger.max_contract_ms;
    config.max_reservations_per_buyer = b.ledger.max_reservations_per_buyer;
    config.flavor_ttl_ms = u64::try_from(b.offer.validity.as_millis()).unwrap_or(u64::MAX);

    let mut bought = BTreeMap::new();
    let mut ratings = Ratings::default();
    for record in &records {
        match record {
            Record::BuyerContract {
                id,
                contract,
                state,
            } => match contract.verify() {
                Ok(c) => {
                    let state = match state {
                        BuyerContractState::PendingAck => ContractState::PendingAck,
                        BuyerContractState::Active => ContractState::Active,
                    };
                    bought.insert(
                        *id,
                        Bought {
                            contract: c,
                            state,
                            end: None,
                        },
                    );
                }
                Err(e) => {
                    error!(contract = %id, error = %e, "dropping a stored contract that no longer verifies")
                }
            },
            Record::BuyerEnded {
                provider, outcome, ..
            } => ratings.record(*provider, *outcome),
            _ => {}
        }
    }
    // Ends after every contract, whatever order the store returned them in.
    for record in &records {
        if let Record::BuyerEnded {
            contract, cause, ..
        } = record
            && let Some(b) = bought.get_mut(contract)
        {
            b.state = ContractState::Ended;
            b.end = *cause;
        }
    }
    let ledger = Ledger::restore(key.clone(), config, records, now);
    let store = Writer::spawn(store).map_err(BindError::Writer)?;

    // Peers added while an earlier run was up are dialled again, as configured ones are.
    let added_peers = super::super::added_peers::AddedPeers::open(&data_dir.join("state"));
    let mut discovery_config = b.discovery.clone();
    for a in added_peers.addrs() {
        if !discovery_config.manual_peers.contains(a) {
            discovery_config.manual_peers.push(a.clone());
        }
    }
    let advert = advert_body(&b.roles, &b.offer, &measured, &ledger, now);
    discovery_config.advert = advert.clone();
    let (discovery, inbound) = Discovery::spawn(&key, discovery_config).await?;
    for (node, counts) in ratings.iter() {
        let _ = discovery
            .set_rating(*node, super::super::buy::to_rating(*counts))
            .await;
    }

    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let engine = Engine {
        key: key.clone(),
        node_id,
        ledger,
        store,
        bought,
        ratings_tx: tokio::sync::watch::Sender::new(ratings.clone()),
        ratings,
        discovery: discovery.clone(),
        probe: Some(probe),
        offer: b.offer.clone(),
        reserve: b.reserve,
        flavor_ids,
        revision: 1,
        roles: b.roles,
        advert_dirty: false,
        advert,
        max_sellable: b.max_sellable,
        deferred: Vec::new(),
        deferred_until: None,
        quotas: super::quota::Quotas::new(),
    };
    let mut engine = engine;
    engine.publish_contracts();
    let contracts = engine.quotas.contracts_tx.subscribe();
    let pending_acks: Vec<VerifiedContract> = engine
        .bought
        .values()
        .filter(|b| b.state == ContractState::PendingAck)
        .map(|b| b.contract.clone())
        .collect();
    let ratings = engine.ratings_tx.subscribe();
    let (reschedule_tx, reschedule_rx) = tokio::sync::mpsc::channel(64);
    let workloads = super::super::workloads::spawn(super::super::workloads::Setup {
        me: node_id,
        discovery: discovery.clone(),
        engine: tx.clone(),
        contracts: contracts.clone(),
        runtime: workload_runtime,
        view_file: data_dir.join("state").join("view.bin"),
        physical: physical_entry(&b, &measured, &sellable, now),
        lost_after: b.provider_lost_after,
        reschedule: reschedule_tx,
        usage_every: b.usage_every,
    });
    let fabric_task = match (&b.fabric, prepared) {
        (Some(options), Some(prepared)) => {
            super::super::fabric::spawn(node_id, &wg, options, prepared, contracts.clone())
        }
        _ => super::super::fabric::FabricTask::off(),
    };
    let task = tokio::spawn(engine.run(rx, inbound, b.remeasure_every));
    let workloads = workloads.await;
    let node = Node {
        inner: std::sync::Arc::new(Inner {
            node_id,
            peer_id: fluidos_discovery::peer_id(&node_id),
            key,
            discovery,
            engine: tx,
            engine_task: tokio::sync::Mutex::new(Some(task)),
            fabric: fabric_for_node,
            request_timeout: Duration::from_secs(10),
            offers: std::sync::Mutex::new(crate::buyer::OfferCache::new(b.offer_cache_ttl)),
            ratings,
            providers: std::sync::Mutex::new(None),
            workloads,
            contracts,
            fabric_task,
            added_peers: std::sync::Mutex::new(added_peers),
        }),
    };
    super::super::deploy::spawn_rescheduler(&node, reschedule_rx);
    // A countersignature stored before a crash but never acknowledged: send it again.
    for contract in pending_acks {
        let node = node.clone();
        tokio::spawn(async move { super::super::buy::resend_countersign(&node, contract).await });
    }
    info!(node_id = %node_id, "node bound");
    Ok(node)
}

/// The runtime the node runs workloads with.
fn runtime(
    b: &NodeBuilder,
    data_dir: &std::path::Path,
) -> Option<std::sync::Arc<dyn crate::runtime::Runtime>> {
    use super::super::RuntimeChoice;
    match &b.runtime {
        RuntimeChoice::Off => None,
        RuntimeChoice::Given(r) => Some(r.clone()),
        RuntimeChoice::Process => {
            match crate::runtime::ProcessRuntime::builder(data_dir.join("replicas")).build() {
                Ok(r) => {
                    info!(runtime = %crate::runtime::Runtime::capabilities(&r).summary(), "process runtime ready");
                    Some(std::sync::Arc::new(r))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no runtime: this node hosts no workloads");
                    None
                }
            }
        }
    }
}

/// This node's own entry in the view: what its own workloads may use here.
fn physical_entry(
    b: &NodeBuilder,
    measured: &HostMeasurement,
    sellable: &fluidos_contracts::Resources,
    now: Timestamp,
) -> crate::view::NodeEntry {
    let _ = sellable;
    let capacity = b
        .local_capacity
        .unwrap_or(fluidos_contracts::Resources::ZERO);
    crate::view::NodeEntry {
        kind: crate::view::NodeKind::Physical,
        capacity,
        allocatable: capacity,
        labels: b.offer.labels.clone(),
        location: b.offer.location.clone(),
        architecture: measured.architecture.clone(),
        price_micros_per_hour: None,
        currency: None,
        carbon_g_per_kwh: b.offer.carbon_g_per_kwh,
        gpu_model: None,
        step: None,
        contracts: Vec::new(),
        usage: Default::default(),
        updated_at: now,
    }
}

fn advert_body(
    roles: &super::super::Roles,
    offer: &host::OfferConfig,
    measured: &HostMeasurement,
    ledger: &Ledger,
    now: Timestamp,
) -> AdvertBody {
    let mut r = std::collections::BTreeSet::new();
    if roles.provider {
        r.insert(Role::Provider);
    }
    if roles.consumer {
        r.insert(Role::Consumer);
    }
    if roles.supernode {
        r.insert(Role::Supernode);
    }
    let flavors = advert_flavors(roles, ledger, now);
    AdvertBody {
        labels: offer.labels.clone(),
        roles: r,
        location: offer.location.clone(),
        architecture: Some(measured.architecture.clone()),
        flavors,
    }
}

/// What the advert says this node sells now: a summary of every listed flavor,
/// or nothing for a node that does not sell.
pub(super) fn advert_flavors(
    roles: &super::super::Roles,
    ledger: &Ledger,
    now: Timestamp,
) -> Vec<FlavorSummary> {
    if !roles.provider {
        return Vec::new();
    }
    ledger
        .list(&Selector::default(), now)
        .iter()
        .map(|f| FlavorSummary::from(&**f))
        .collect()
}
