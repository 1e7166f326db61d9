//! Nodes end to end over loopback TCP (mDNS off): discovery through a shared
//! catalog address, REAR negotiation, both signatures, third-party verification,
//! restart, termination, and 64 buyers racing for the last capacity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

use fluidos_contracts::rear::ErrorCode;
use fluidos_contracts::{NodeId, Resources, SignedContract};
use fluidos_core::buyer::{AcquisitionRequest, CandidateFailure};
use fluidos_core::host::{self, HostProbe, HostReserve, OfferConfig};
use fluidos_core::{
    BuyError, ContractRole, ContractState, LedgerTuning, Node, Roles, ShutDown, TerminateError,
};
use fluidos_discovery::CatalogName;
use libp2p::Multiaddr;

fn catalog() -> CatalogName {
    "e2e".parse().unwrap()
}

async fn provider(dir: &std::path::Path, limit: Resources) -> Node {
    Node::builder()
        .data_dir(dir)
        .max_sellable(limit)
        .detect_gpus(false)
        .catalog(catalog(), vec![])
        .bind()
        .await
        .unwrap()
}

async fn consumer(dir: &std::path::Path, catalog_addr: Vec<Multiaddr>) -> Node {
    Node::builder()
        .data_dir(dir)
        .roles(Roles {
            provider: false,
            consumer: true,
            supernode: false,
        })
        .detect_gpus(false)
        .catalog(catalog(), catalog_addr)
        .bind()
        .await
        .unwrap()
}

async fn sees(node: &Node, other: NodeId) -> bool {
    node.peers().await.unwrap().iter().any(|c| c.node == other)
}

fn want(cpu_millis: u64, memory: u64) -> AcquisitionRequest {
    AcquisitionRequest {
        resources: Resources {
            cpu_millis,
            memory_bytes: memory,
            ..Resources::ZERO
        },
        duration_ms: 3_600_000,
        ..AcquisitionRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_buys_from_provider_and_both_hold_the_signed_contract() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Resources {
        cpu_millis: 2000,
        memory_bytes: 4 * GIB,
        storage_bytes: 10 * GIB,
        pods: 10,
        gpus: 0,
    };
    let p = provider(&dir.path().join("p"), limit).await;
    let c = consumer(&dir.path().join("c"), p.listen_addrs().await).await;
    wait_for(
        "the consumer to find the provider",
        Duration::from_secs(20),
        || sees(&c, p.node_id()),
    )
    .await;

    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let contract = c.buy(want(1000, GIB), Some(tx)).await.expect("purchase");
    let mut phases = Vec::new();
    while let Ok(p) = rx.try_recv() {
        phases.push(p.to_string());
    }
    for step in [
        "listing",
        "reserving and purchasing",
        "offer from",
        "sending the countersignature",
    ] {
        assert!(
            phases.iter().any(|p| p.starts_with(step)),
            "no {step:?} in {phases:?}"
        );
    }

    let t = contract.terms();
    assert_eq!(t.provider, p.node_id());
    assert_eq!(t.buyer, c.node_id());
    assert!(t.partition.cpu_millis >= 1000 && t.partition.memory_bytes >= GIB);

    // Both hold the same bytes, with both signatures.
    let at_provider = p.contract(t.id).await.unwrap().expect("provider has it");
    let at_buyer = c.contract(t.id).await.unwrap().expect("buyer has it");
    assert_eq!(at_provider.signed(), at_buyer.signed());
    assert!(at_provider.signed().buyer_signature.is_some());

    // A third party verifies from the bytes alone, and from the VC.
    let bytes = at_buyer.signed().to_bytes().unwrap();
    let third = SignedContract::from_bytes(&bytes)
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(third.terms(), t);
    #[cfg(feature = "vc")]
    {
        let key = fluidos_contracts::keyfile::load(&dir.path().join("c").join("node.key")).unwrap();
        let vc = fluidos_contracts::vc::export(&at_buyer, &key)
            .await
            .unwrap();
        let back = fluidos_contracts::vc::verify(&vc.to_string())
            .await
            .unwrap();
        assert_eq!(back.signed(), at_buyer.signed());
    }

    // The provider holds the partition, and re-offers only the remainder.
    let status = p.status().await.unwrap();
    assert_eq!(status.committed, t.partition);
    let offered: u64 = status
        .flavors
        .iter()
        .map(|f| f.characteristics.resources.cpu_millis)
        .sum();
    assert_eq!(offered, status.capacity.cpu_millis - t.partition.cpu_millis);

    // Contract lists on both sides.
    let sold = p.contracts().await.unwrap();
    assert!(sold.iter().any(|i| i.id == t.id
        && i.role == ContractRole::Provider
        && i.state == ContractState::Active));
    let bought = c.contracts().await.unwrap();
    assert!(bought.iter().any(|i| i.id == t.id
        && i.role == ContractRole::Buyer
        && i.state == ContractState::Active));

    // Restart the provider: the contract and the capacity it holds survive.
    p.shutdown().await;
    let p = provider(&dir.path().join("p"), limit).await;
    assert_eq!(
        p.contract(t.id).await.unwrap().unwrap().signed(),
        at_buyer.signed()
    );
    assert_eq!(p.status().await.unwrap().committed, t.partition);

    // Restart the consumer: its copy survives too.
    c.shutdown().await;
    let c = consumer(&dir.path().join("c"), p.listen_addrs().await).await;
    assert_eq!(
        c.contract(t.id).await.unwrap().unwrap().signed(),
        at_buyer.signed()
    );

    // The buyer terminates; the provider is told and releases the capacity.
    wait_for(
        "the consumer to find the restarted provider",
        Duration::from_secs(20),
        || sees(&c, p.node_id()),
    )
    .await;
    c.terminate(t.id, "done".into()).await.unwrap();
    wait_for(
        "the provider to release the capacity",
        Duration::from_secs(10),
        || async { p.status().await.unwrap().committed.is_zero() },
    )
    .await;
    assert!(matches!(
        c.terminate(t.id, "again".into()).await,
        Err(TerminateError::AlreadyEnded(id)) if id == t.id
    ));

    // Restart the consumer again: the ended contract is still listed, with why it
    // ended, and still verifies (its end is stored beside it, not over it).
    c.shutdown().await;
    let c = consumer(&dir.path().join("c"), p.listen_addrs().await).await;
    let listed = c.contracts().await.unwrap();
    let ended = listed
        .iter()
        .find(|i| i.id == t.id)
        .expect("the ended contract is listed after a restart");
    assert_eq!(ended.state, ContractState::Ended);
    assert_eq!(ended.end, Some(fluidos_core::EndCause::ByOwner));
    assert_eq!(
        c.contract(t.id).await.unwrap().unwrap().signed(),
        at_buyer.signed()
    );
    p.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buying_with_no_candidates_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let c = consumer(dir.path(), vec![]).await;
    let err = c.buy(want(500, GIB), None).await;
    // A catalog with no reachable address and no peer: the error names that state.
    assert!(
        matches!(
            &err,
            Err(BuyError::NoCandidates(fluidos_core::NotReady::CatalogNotReached { catalogs }))
                if catalogs == &["e2e".to_string()]
        ),
        "{err:?}"
    );
    c.shutdown().await;
}

/// Each operation fails with its own typed error: an unknown contract, then a node
/// whose engine and discovery have stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = consumer(dir.path(), vec![]).await;
    let unknown = fluidos_contracts::ContractId([7; 16]);
    let err = c.terminate(unknown, "no such".into()).await;
    assert!(
        matches!(&err, Err(TerminateError::UnknownContract(id)) if *id == unknown),
        "{err:?}"
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        format!("no contract {unknown} on this node")
    );

    c.shutdown().await;
    assert!(matches!(c.status().await, Err(ShutDown)));
    assert!(matches!(c.contracts().await, Err(ShutDown)));
    assert!(matches!(
        c.terminate(unknown, "late".into()).await,
        Err(TerminateError::ShutDown)
    ));
    // Discovery has stopped too: its own error, not a string.
    assert!(matches!(c.peers().await, Err(fluidos_discovery::Stopped)));
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(matches!(
        c.add_peer(addr).await,
        Err(fluidos_discovery::AddPeerError::Stopped)
    ));
    let err = c.buy(want(500, GIB), None).await;
    assert!(
        matches!(&err, Err(BuyError::Discovery(fluidos_discovery::Stopped))),
        "{err:?}"
    );
}

/// 64 buyers race for a provider that can sell only a few partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_buyers_race_and_exactly_the_capacity_is_sold() {
    const BUYERS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    // min 500m / step 500m by default: at most three partitions of 500m.
    let limit = Resources {
        cpu_millis: 1500,
        memory_bytes: 16 * GIB,
        storage_bytes: GIB,
        pods: 110,
        gpus: 0,
    };
    let p = Node::builder()
        .data_dir(dir.path().join("p"))
        .max_sellable(limit)
        .detect_gpus(false)
        .catalog(catalog(), vec![])
        .ledger_tuning(LedgerTuning {
            max_reservations_per_buyer: 4,
            ..LedgerTuning::default()
        })
        .bind()
        .await
        .unwrap();
    let addr = p.listen_addrs().await;
    let mut buyers = Vec::new();
    // The buyers know the provider as a manual peer: this test is about the race,
    // not about 65 nodes sharing one catalog (the discovery benchmarks cover that).
    for i in 0..BUYERS {
        let b = Node::builder()
            .data_dir(dir.path().join(format!("b{i}")))
            .roles(Roles {
                provider: false,
                consumer: true,
                supernode: false,
            })
            .detect_gpus(false)
            .manual_peer(addr[0].clone())
            .bind()
            .await
            .unwrap();
        buyers.push(b);
    }
    for b in &buyers {
        wait_for(
            "every buyer to find the provider",
            Duration::from_secs(60),
            || sees(b, p.node_id()),
        )
        .await;
    }
    // The expected number of partitions, from the configuration alone: what this host
    // may sell (measured here, minus the default host reserve, capped by the limit), cut
    // into the 500m / 1 GiB partitions every buyer asks for, as the default partition
    // policy (min and step) allows.
    let offer = OfferConfig::default();
    let mut probe = HostProbe::new(dir.path()).unwrap().detect_gpus(false);
    let measured = probe.measure().unwrap();
    let sellable = host::sellable(&measured, &HostReserve::default(), offer.pods);
    let (s, l) = (sellable.as_array(), limit.as_array());
    let capacity = Resources::from_array(std::array::from_fn(|i| s[i].min(l[i])));
    let (cpu, mem) = (500, GIB);
    assert!(cpu >= offer.min.cpu_millis && cpu % offer.step.cpu_millis == 0);
    assert!(mem >= offer.min.memory_bytes && mem % offer.step.memory_bytes == 0);
    let partitions = (capacity.cpu_millis / cpu).min(capacity.memory_bytes / mem) as usize;
    assert!(
        partitions >= 1,
        "the provider has something to sell: {capacity}"
    );
    // Each buyer in its own task on the multi-thread runtime: the provider's engine
    // gets the 64 negotiations truly concurrently. A buyer told "no suitable flavor"
    // checks at once that the provider has really run out: what contracts and open
    // reservations hold (each one partition) leaves less than one partition.
    let tasks: Vec<_> = buyers
        .iter()
        .cloned()
        .map(|b| {
            let p = p.clone();
            tokio::spawn(async move {
                let r = b.buy(want(cpu, mem), None).await;
                let mut exhausted_at_loss = None;
                if let Err(BuyError::Failed(f)) = &r
                    && f.reasons
                        .iter()
                        .any(|(_, w)| matches!(w, CandidateFailure::NoSuitableFlavor { .. }))
                {
                    let st = p.status().await.unwrap();
                    let held_cpu = st.committed.cpu_millis + st.reservations as u64 * cpu;
                    let held_mem = st.committed.memory_bytes + st.reservations as u64 * mem;
                    exhausted_at_loss = Some(
                        st.capacity.cpu_millis.saturating_sub(held_cpu) < cpu
                            || st.capacity.memory_bytes.saturating_sub(held_mem) < mem,
                    );
                }
                (r, exhausted_at_loss)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }

    let won: Vec<_> = results
        .iter()
        .filter_map(|(r, _)| r.as_ref().ok())
        .collect();
    let sold: u64 = won.iter().map(|c| c.terms().partition.cpu_millis).sum();
    let no_flavor = results.iter().filter(|(_, e)| e.is_some()).count();
    println!(
        "{BUYERS} buyers in {BUYERS} concurrent tasks: {} won ({partitions} partitions expected), \
         {} lost ({no_flavor} of them told no suitable flavor)",
        won.len(),
        BUYERS - won.len()
    );
    assert_eq!(
        won.len(),
        partitions,
        "exactly as many partitions are sold as exist"
    );
    assert!(won.iter().all(|c| c.terms().provider == p.node_id()));
    assert_eq!(sold, partitions as u64 * 500);
    let status = p.status().await.unwrap();
    // Storage is left out: free disk space moves while other processes write.
    let compute = |r: &fluidos_contracts::Resources| (r.cpu_millis, r.memory_bytes, r.pods, r.gpus);
    assert_eq!(
        compute(&status.capacity),
        compute(&capacity),
        "the provider's own capacity agrees"
    );
    assert_eq!(status.committed.cpu_millis, sold);
    assert!(status.committed.fits_within(&status.capacity));

    // Every loser was told why: no capacity left, or nothing left that fits, and the
    // latter only once the capacity really was gone.
    for (r, exhausted) in results
        .iter()
        .filter_map(|(r, e)| r.as_ref().err().map(|r| (r, e)))
    {
        let BuyError::Failed(f) = r else {
            panic!("unexpected error {r}")
        };
        assert!(!f.reasons.is_empty());
        for (_, why) in &f.reasons {
            let ok = match why {
                CandidateFailure::Refused { error, .. } => matches!(
                    error.code,
                    ErrorCode::InsufficientCapacity | ErrorCode::InvalidPartition
                ),
                CandidateFailure::NoSuitableFlavor { .. } => *exhausted == Some(true),
                _ => false,
            };
            assert!(ok, "unexpected loss reason: {why}");
        }
    }
    for b in buyers {
        b.shutdown().await;
    }
    p.shutdown().await;
}

/// A contract that runs to its end frees the provider's capacity, and the buyer
/// records it as delivered: the candidate list shows the provider's rating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_that_runs_out_is_delivered_and_rated() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Resources {
        cpu_millis: 2000,
        memory_bytes: 4 * GIB,
        storage_bytes: GIB,
        pods: 10,
        gpus: 0,
    };
    let p = provider(&dir.path().join("p"), limit).await;
    let c = consumer(&dir.path().join("c"), p.listen_addrs().await).await;
    wait_for(
        "the consumer to find the provider",
        Duration::from_secs(20),
        || sees(&c, p.node_id()),
    )
    .await;

    let short = AcquisitionRequest {
        duration_ms: 1_500,
        ..want(500, GIB)
    };
    let contract = c.buy(short, None).await.expect("purchase");
    let id = contract.id();
    assert!(!p.status().await.unwrap().committed.is_zero());

    wait_for(
        "the contract to end on both sides",
        Duration::from_secs(15),
        || async {
            let ended_here = c
                .contracts()
                .await
                .unwrap()
                .iter()
                .any(|i| i.id == id && i.state == ContractState::Ended);
            ended_here && p.status().await.unwrap().committed.is_zero()
        },
    )
    .await;
    wait_for(
        "the rating to show in the candidate list",
        Duration::from_secs(5),
        || async {
            c.peers().await.unwrap().iter().any(|cand| {
                cand.node == p.node_id()
                    && cand
                        .rating
                        .is_some_and(|r| r.delivered == 1 && r.failed == 0)
            })
        },
    )
    .await;
    p.shutdown().await;
    c.shutdown().await;
}
