//! Workloads end to end over loopback (mDNS off): a consumer without capacity
//! deploys, buys from a provider found through the catalog, the replica runs on
//! the provider under the process runtime, and its output and exit code come
//! back through the view. Refused offloads over the wire, each typed; a
//! partition that heals; a provider restart that never starts a replica twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

use fluidos_contracts::{ContractId, Resources};
use fluidos_core::buyer::AcquisitionRequest;
use fluidos_core::offload::wire::{self, WorkloadErrorCode, WorkloadRequest, WorkloadResponse};
use fluidos_core::view::{NodeKind, ReplicaState};
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{Node, Roles, WorkloadDetail};
use fluidos_discovery::{AppProtocol, CatalogName};
use libp2p::Multiaddr;

fn catalog() -> CatalogName {
    "offload".parse().unwrap()
}

fn limit() -> Resources {
    Resources {
        cpu_millis: 2000,
        memory_bytes: 4 * GIB,
        storage_bytes: 10 * GIB,
        pods: 10,
        gpus: 0,
    }
}

async fn provider(dir: &Path, listen: Option<Multiaddr>) -> Node {
    let mut b = Node::builder()
        .data_dir(dir)
        .max_sellable(limit())
        .detect_gpus(false)
        .runtime(runtime(dir))
        .catalog(catalog(), vec![]);
    if let Some(l) = listen {
        b = b.listen(vec![l]);
    }
    b.bind().await.unwrap()
}

async fn consumer(dir: &Path, catalog_addr: Vec<Multiaddr>) -> Node {
    Node::builder()
        .data_dir(dir)
        .roles(Roles {
            provider: false,
            consumer: true,
            supernode: false,
        })
        .detect_gpus(false)
        .local_capacity(Resources::ZERO)
        .runtime(runtime(dir))
        .catalog(catalog(), catalog_addr)
        .bind()
        .await
        .unwrap()
}

async fn pair(dir: &Path) -> (Node, Node) {
    let p = provider(&dir.join("p"), None).await;
    let c = consumer(&dir.join("c"), p.listen_addrs().await).await;
    let pid = p.node_id();
    wait_for(
        "the consumer to find the provider",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move { c.peers().await.unwrap().iter().any(|x| x.node == pid) }
        },
    )
    .await;
    (p, c)
}

fn spec(name: &str, script: &str) -> WorkloadSpec {
    WorkloadSpec::from_toml(&format!(
        r#"
name = "{name}"
[run]
command = "/bin/sh"
args = ["-c", {script:?}]
[requests]
cpu = "100m"
memory = "64MiB"
"#
    ))
    .unwrap()
}

fn state(d: &WorkloadDetail) -> Option<ReplicaState> {
    d.view
        .record
        .replicas
        .get("0")
        .and_then(|r| r.status.as_ref())
        .map(|s| s.state.clone())
}

async fn final_state(node: &Node, id: &str) -> (ReplicaState, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = node.workload(id).await.unwrap().unwrap();
        if let Some(s) = d
            .view
            .record
            .replicas
            .get("0")
            .and_then(|r| r.status.clone())
            && s.state.is_final()
        {
            return (s.state, s.output_tail);
        }
        assert!(Instant::now() < deadline, "no final status: {d:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_without_capacity_buys_runs_on_the_provider_and_its_output_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = pair(dir.path()).await;

    // Nothing fits locally: the dry run says it would buy, and changes nothing.
    let s = spec("hello", "echo hello from the provider; exit 3");
    let dry = c.deploy_dry_run(s.clone()).await.unwrap();
    assert!(dry.to_string().contains("acquire"), "{dry}");
    assert!(c.workloads().await.unwrap().is_empty());

    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let d = c
        .deploy(s, Some(tx), Duration::from_secs(20))
        .await
        .unwrap();
    let mut phases = Vec::new();
    while let Ok(ph) = rx.try_recv() {
        phases.push(format!("{ph:?}"));
    }
    assert!(phases.iter().any(|p| p.contains("Acquiring")), "{phases:?}");
    assert!(phases.iter().any(|p| p.contains("Bought")), "{phases:?}");
    let placed = d.view.record.replicas["0"].node;
    assert_eq!(
        placed,
        Some(p.node_id()),
        "placed on the provider's virtual node"
    );

    // The virtual node appeared, backed by the new contract. The deploy returns once
    // the provider answered the start; the provider's node entry reaches this view by
    // sync, which may be a moment later.
    wait_for(
        "the provider's virtual node",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            let pid = p.node_id();
            async move { c.nodes().await.unwrap().iter().any(|n| n.id == pid) }
        },
    )
    .await;
    let nodes = c.nodes().await.unwrap();
    let v = nodes
        .iter()
        .find(|n| n.id == p.node_id())
        .expect("a virtual node for the provider");
    assert_eq!(v.entry.kind, NodeKind::Virtual);
    assert_eq!(v.entry.contracts.len(), 1);
    assert!(v.entry.capacity.cpu_millis >= 100);

    let (st, tail) = final_state(&c, &d.view.id).await;
    assert_eq!(st, ReplicaState::Exited { code: 3 });
    assert!(tail.contains("hello from the provider"), "{tail:?}");
    // The provider's copy agrees.
    let on_p = p.workload(&d.view.id).await.unwrap().unwrap();
    assert_eq!(state(&on_p), Some(ReplicaState::Exited { code: 3 }));

    // Terminating the contract takes the virtual node away.
    let contract: ContractId = v.entry.contracts[0].parse().unwrap();
    c.terminate(contract, "done".into()).await.unwrap();
    wait_for("the virtual node to go", Duration::from_secs(10), || {
        let c = c.clone();
        let pid = p.node_id();
        async move { !c.nodes().await.unwrap().iter().any(|n| n.id == pid) }
    })
    .await;
    c.shutdown().await;
    p.shutdown().await;
}

async fn start_raw(
    from: &Node,
    to: &Node,
    contract: ContractId,
    s: &WorkloadSpec,
) -> WorkloadResponse {
    let req = WorkloadRequest::Start {
        contract,
        workload: "raw-1".into(),
        replica: 0,
        spec: s.to_json(),
    };
    let bytes = from
        .discovery()
        .app_request(
            to.node_id(),
            AppProtocol::Workload,
            wire::encode(&req),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    wire::decode_response(&bytes).unwrap()
}

fn code(r: &WorkloadResponse) -> Option<WorkloadErrorCode> {
    match r {
        WorkloadResponse::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn want(duration_ms: u64) -> AcquisitionRequest {
    AcquisitionRequest {
        resources: Resources {
            cpu_millis: 500,
            memory_bytes: 256 << 20,
            pods: 1,
            ..Resources::ZERO
        },
        duration_ms,
        ..AcquisitionRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_offloads_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = pair(dir.path()).await;
    let other = consumer(&dir.path().join("o"), p.listen_addrs().await).await;
    let s = spec("raw", "sleep 30");

    // No contract at all.
    let r = start_raw(&c, &p, ContractId::random(), &s).await;
    assert_eq!(code(&r), Some(WorkloadErrorCode::NoContract), "{r:?}");

    // Another party's contract.
    let bought = c.buy(want(3_600_000), None).await.unwrap();
    let r = start_raw(&other, &p, bought.id(), &s).await;
    assert_eq!(code(&r), Some(WorkloadErrorCode::NotYourContract), "{r:?}");

    // Over quota: more memory than the contract holds.
    let mut big = s.clone();
    big.requests.0.memory_bytes = 2 * GIB;
    big.limits = None;
    let r = start_raw(&c, &p, bought.id(), &big).await;
    assert_eq!(code(&r), Some(WorkloadErrorCode::OverQuota), "{r:?}");

    // A malformed request.
    let bytes = c
        .discovery()
        .app_request(
            p.node_id(),
            AppProtocol::Workload,
            b"nonsense".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let r = wire::decode_response(&bytes).unwrap();
    assert_eq!(code(&r), Some(WorkloadErrorCode::Malformed), "{r:?}");

    // The same request within quota runs, and a repeat does not start it twice.
    let r = start_raw(&c, &p, bought.id(), &s).await;
    assert!(matches!(r, WorkloadResponse::Started { .. }), "{r:?}");
    let r = start_raw(&c, &p, bought.id(), &s).await;
    assert!(matches!(r, WorkloadResponse::Started { .. }), "{r:?}");

    // Terminated contract: the running replica stops, new ones are refused.
    c.terminate(bought.id(), "test".into()).await.unwrap();
    let mut r = start_raw(&c, &p, bought.id(), &s).await;
    for _ in 0..40 {
        if code(&r) == Some(WorkloadErrorCode::Terminated) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = start_raw(&c, &p, bought.id(), &s).await;
    }
    assert_eq!(code(&r), Some(WorkloadErrorCode::Terminated), "{r:?}");

    // Expired contract.
    let short = c.buy(want(1_500), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let r = start_raw(&c, &p, short.id(), &s).await;
    assert_eq!(code(&r), Some(WorkloadErrorCode::Expired), "{r:?}");

    other.shutdown().await;
    c.shutdown().await;
    p.shutdown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_the_views_converge_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = pair(dir.path()).await;
    let s = spec("part", "echo started; sleep 1; echo finished; exit 0");
    let d = c.deploy(s, None, Duration::from_secs(20)).await.unwrap();
    let id = d.view.id.clone();
    assert_eq!(d.view.record.replicas["0"].node, Some(p.node_id()));

    // Cut the link both ways: connections drop, redials are refused.
    c.discovery().danger_block(p.node_id(), true).await.unwrap();
    p.discovery().danger_block(c.node_id(), true).await.unwrap();

    // Both sides change state: the replica ends on the provider; the consumer
    // deploys another workload there, which cannot reach it and is taken back.
    wait_for(
        "the replica to end on the provider",
        Duration::from_secs(10),
        || {
            let (p, id) = (p.clone(), id.clone());
            async move {
                p.workload(&id)
                    .await
                    .unwrap()
                    .and_then(|d| state(&d))
                    .is_some_and(|s| s.is_final())
            }
        },
    )
    .await;
    let during = c.workload(&id).await.unwrap().unwrap();
    assert!(
        !state(&during).is_some_and(|s| s.is_final()),
        "the consumer cannot know yet: {during:?}"
    );
    let second = c
        .deploy(spec("cut", "exit 0"), None, Duration::from_secs(15))
        .await
        .unwrap();
    assert!(
        matches!(state(&second), Some(ReplicaState::Failed { .. })),
        "{second:?}"
    );

    // Heal: the views converge.
    c.discovery()
        .danger_block(p.node_id(), false)
        .await
        .unwrap();
    p.discovery()
        .danger_block(c.node_id(), false)
        .await
        .unwrap();
    let (st, tail) = final_state(&c, &id).await;
    assert_eq!(st, ReplicaState::Exited { code: 0 });
    assert_eq!(
        tail.matches("started").count(),
        1,
        "ran exactly once: {tail:?}"
    );
    assert!(tail.contains("finished"), "{tail:?}");
    // The provider hosts that one replica and nothing of the refused workload.
    let hosted: Vec<String> = p
        .workloads()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.view.id)
        .collect();
    assert_eq!(hosted, vec![id.clone()]);
    c.shutdown().await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_provider_reports_its_replica_and_never_starts_it_twice() {
    let dir = tempfile::tempdir().unwrap();
    let listen: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", free_port())
        .parse()
        .unwrap();
    let pdir = dir.path().join("p");
    let p = provider(&pdir, Some(listen.clone())).await;
    let c = consumer(&dir.path().join("c"), p.listen_addrs().await).await;
    let pid = p.node_id();
    wait_for(
        "the consumer to find the provider",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move { c.peers().await.unwrap().iter().any(|x| x.node == pid) }
        },
    )
    .await;
    let s = spec("restart", "echo once; sleep 3; echo bye; exit 7");
    let d = c.deploy(s, None, Duration::from_secs(20)).await.unwrap();
    let id = d.view.id.clone();

    // The provider goes down while the replica runs, and comes back.
    p.shutdown().await;
    drop(p);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = provider(&pdir, Some(listen)).await;
    let on_p = p.workload(&id).await.unwrap();
    assert!(
        on_p.is_some(),
        "the restarted provider knows the replica it hosts"
    );

    let (st, tail) = final_state(&c, &id).await;
    assert_eq!(st, ReplicaState::Exited { code: 7 });
    assert_eq!(
        tail.matches("once").count(),
        1,
        "started exactly once: {tail:?}"
    );
    assert!(tail.contains("bye"), "{tail:?}");
    c.shutdown().await;
    p.shutdown().await;
}

/// Why a contract ended, as the consumer lists it.
async fn end_of(c: &Node, id: ContractId) -> Option<fluidos_core::EndCause> {
    c.contracts()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == id)
        .and_then(|k| k.end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_and_their_replicas_say_why_they_ended() {
    use fluidos_contracts::TerminationCause;
    use fluidos_core::EndCause;
    let dir = tempfile::tempdir().unwrap();
    let (p, c) = pair(dir.path()).await;

    // The provider terminates the contract a replica runs under: the contract ended
    // "by provider", and so did the replica (evicted, restart policy never).
    let d = c
        .deploy(spec("sleeper", "sleep 30"), None, Duration::from_secs(20))
        .await
        .unwrap();
    let id = d.view.id.clone();
    wait_for("the replica to run", Duration::from_secs(20), || {
        let c = c.clone();
        let id = id.clone();
        async move {
            let d = c.workload(&id).await.unwrap().unwrap();
            state(&d) == Some(ReplicaState::Running)
        }
    })
    .await;
    let contract: ContractId = c
        .nodes()
        .await
        .unwrap()
        .iter()
        .find(|n| n.id == p.node_id())
        .expect("a virtual node for the provider")
        .entry
        .contracts[0]
        .parse()
        .unwrap();
    assert_eq!(end_of(&c, contract).await, None, "it runs");
    p.terminate(contract, "maintenance".into()).await.unwrap();
    // Again, on the provider's side: ended, not unknown.
    assert!(
        matches!(
            p.terminate(contract, "again".into()).await,
            Err(fluidos_core::TerminateError::AlreadyEnded(id)) if id == contract
        ),
        "a second termination names the contract as ended"
    );
    let (st, _) = final_state(&c, &id).await;
    assert_eq!(st.name(), "evicted", "{st:?}");
    assert_eq!(st.cause(), Some(EndCause::ByProvider), "{st:?}");
    assert_eq!(end_of(&c, contract).await, Some(EndCause::ByProvider));

    // The buyer ends one itself: "by owner"; with a signed cause, that cause.
    let mine = c.buy(want(3_600_000), None).await.unwrap();
    c.terminate(mine.id(), "no longer needed".into())
        .await
        .unwrap();
    assert_eq!(end_of(&c, mine.id()).await, Some(EndCause::ByOwner));
    let lost = c.buy(want(3_600_000), None).await.unwrap();
    c.terminate_for(
        lost.id(),
        "the provider stopped answering".into(),
        TerminationCause::ProviderLost,
    )
    .await
    .unwrap();
    assert_eq!(end_of(&c, lost.id()).await, Some(EndCause::ProviderLost));

    // One that runs out: "expired".
    let short = c.buy(want(1_500), None).await.unwrap().id();
    wait_for("the contract to expire", Duration::from_secs(10), || {
        let c = c.clone();
        async move { end_of(&c, short).await == Some(EndCause::Expired) }
    })
    .await;

    c.shutdown().await;
    p.shutdown().await;
}

/// Replicas that run in `rt` now.
async fn running_in(rt: &std::sync::Arc<dyn fluidos_core::runtime::Runtime>) -> usize {
    rt.list()
        .await
        .iter()
        .filter(|i| {
            matches!(
                i.status,
                fluidos_core::runtime::ReplicaStatus::Running { .. }
            )
        })
        .count()
}

/// More replicas than a provider takes requests in flight from one peer (32): the
/// owner's starts and stops are paced, none is dropped, and undeploy leaves nothing
/// running on the provider (before, a 100-replica undeploy left 68 running: the
/// provider dropped the stop requests over its limit, and the view frame that would
/// have told it could be dropped too while its sender counted it as applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploying_a_large_workload_stops_every_replica_on_the_provider() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let p_dir = dir.path().join("p");
    let rt = runtime(&p_dir);
    let p = Node::builder()
        .data_dir(&p_dir)
        .max_sellable(Resources {
            pods: 64,
            ..limit()
        })
        .detect_gpus(false)
        .runtime(rt.clone())
        .catalog(catalog(), vec![])
        .bind()
        .await
        .unwrap();
    let c = consumer(&dir.path().join("c"), p.listen_addrs().await).await;
    let pid = p.node_id();
    wait_for("the provider", Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.peers().await.unwrap().iter().any(|x| x.node == pid) }
    })
    .await;
    let s = WorkloadSpec::from_toml(&format!(
        "name = \"many\"\nreplicas = {N}\n[run]\ncommand = \"/bin/sleep\"\nargs = [\"600\"]\n\
         [requests]\ncpu = \"10m\"\nmemory = \"8MiB\"\npods = 1\n"
    ))
    .unwrap();
    let d = c.deploy(s, None, Duration::from_secs(60)).await.unwrap();
    wait_for(
        "every replica running on the provider",
        Duration::from_secs(60),
        || async { running_in(&rt).await == N },
    )
    .await;
    c.undeploy(&d.view.id).await.unwrap();
    wait_for(
        "no replica left running on the provider",
        Duration::from_secs(30),
        || async { running_in(&rt).await == 0 },
    )
    .await;
    c.shutdown().await;
    p.shutdown().await;
}
