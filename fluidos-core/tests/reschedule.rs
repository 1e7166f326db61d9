//! Restart policies and lost providers, with real `Node`s over loopback (mDNS
//! off) and the process runtime.
//!
//! - The host applies a replica's restart policy when it ends by itself:
//!   on-failure up to its limit, always, never after a success.
//! - The owner applies it when a replica is lost with its provider: a provider
//!   killed for good, or one cut off past `provider_lost_after`; the replica is
//!   placed again on the other provider (buying there), and a cut-off provider
//!   that comes back stops its copy, so no replica runs twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fluidos_contracts::{NodeId, Resources};
use fluidos_core::runtime::Runtime;
use fluidos_core::view::ReplicaState;
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{Node, Roles, WorkloadDetail};
use fluidos_discovery::CatalogName;
use libp2p::Multiaddr;

fn catalog_name() -> CatalogName {
    "reschedule".parse().unwrap()
}

fn consumer_roles() -> Roles {
    Roles {
        provider: false,
        consumer: true,
        supernode: false,
    }
}

fn spec(name: &str, script: &str, restart: &str, env: &[(&str, String)]) -> WorkloadSpec {
    let env: String = env.iter().map(|(k, v)| format!("{k} = {v:?}\n")).collect();
    WorkloadSpec::from_toml(&format!(
        r#"
name = "{name}"
[run]
command = "/bin/sh"
args = ["-c", {script:?}]
[requests]
cpu = "100m"
memory = "64MiB"
[restart]
{restart}
[env]
{env}
"#
    ))
    .unwrap()
}

fn replica0(d: &WorkloadDetail) -> (Option<NodeId>, Option<fluidos_core::view::ReplicaStatus>) {
    let r = &d.view.record.replicas["0"];
    (r.node, r.status.clone())
}

async fn detail(node: &Node, id: &str) -> WorkloadDetail {
    node.workload(id).await.unwrap().unwrap()
}

fn runs(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A node that runs its own workloads (local capacity, no market).
async fn local_node(dir: &Path) -> Node {
    Node::builder()
        .data_dir(dir)
        .roles(consumer_roles())
        .detect_gpus(false)
        .local_capacity(Resources {
            cpu_millis: 1000,
            memory_bytes: GIB,
            pods: 10,
            ..Resources::ZERO
        })
        .runtime(runtime(dir))
        .bind()
        .await
        .unwrap()
}

async fn final_of(node: &Node, id: &str) -> fluidos_core::view::ReplicaStatus {
    wait_for("the replica to end", Duration::from_secs(20), || {
        let (node, id) = (node.clone(), id.to_string());
        async move {
            let (_, s) = replica0(&detail(&node, &id).await);
            s.is_some_and(|s| s.state.is_final())
        }
    })
    .await;
    replica0(&detail(node, id).await).1.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_up_to_its_limit_and_keeps_the_last_exit() {
    let dir = tempfile::tempdir().unwrap();
    let n = local_node(&dir.path().join("n")).await;
    let count = dir.path().join("runs");
    let s = spec(
        "flaky",
        "echo run >> \"$COUNT\"; echo attempt; exit 3",
        "policy = \"on-failure\"\nmax_restarts = 2",
        &[("COUNT", count.display().to_string())],
    );
    let d = n.deploy(s, None, Duration::from_secs(5)).await.unwrap();
    let st = final_of(&n, &d.view.id).await;
    assert_eq!(st.state, ReplicaState::Exited { code: 3 }, "{st:?}");
    assert_eq!(st.restarts, 2, "{st:?}");
    assert_eq!(runs(&count), 3, "one run and two restarts");
    assert!(st.output_tail.contains("attempt"), "{st:?}");
    // A success under on-failure is final at once.
    let ok_count = dir.path().join("ok-runs");
    let s = spec(
        "fine",
        "echo run >> \"$COUNT\"; exit 0",
        "policy = \"on-failure\"\nmax_restarts = 5",
        &[("COUNT", ok_count.display().to_string())],
    );
    let d = n.deploy(s, None, Duration::from_secs(5)).await.unwrap();
    let st = final_of(&n, &d.view.id).await;
    assert_eq!(st.state, ReplicaState::Exited { code: 0 });
    assert_eq!(st.restarts, 0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(runs(&ok_count), 1);
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_restarts_even_a_success_until_undeployed() {
    let dir = tempfile::tempdir().unwrap();
    let n = local_node(&dir.path().join("n")).await;
    let count = dir.path().join("runs");
    let s = spec(
        "loop",
        "echo run >> \"$COUNT\"; exit 0",
        "policy = \"always\"",
        &[("COUNT", count.display().to_string())],
    );
    let d = n.deploy(s, None, Duration::from_secs(5)).await.unwrap();
    let id = d.view.id.clone();
    wait_for("three runs", Duration::from_secs(15), || {
        let count = count.clone();
        async move { runs(&count) >= 3 }
    })
    .await;
    let (_, st) = replica0(&detail(&n, &id).await);
    let st = st.unwrap();
    assert!(!st.state.is_final(), "always never ends by itself: {st:?}");
    assert!(st.restarts >= 2, "{st:?}");
    n.undeploy(&id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = runs(&count);
    // The longest back-off so far is well under 2 s: a restart due would have run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs(&count), after, "no restart after undeploy");
    n.shutdown().await;
}

/// A catalog node, two providers and a consumer that counts a provider lost
/// after 6 s of silence (the shortest allowed: two view heartbeats).
struct Site {
    catalog: Node,
    providers: Vec<Node>,
    /// The providers' runtimes, to look inside them.
    runtimes: Vec<Arc<dyn Runtime>>,
    consumer: Node,
}

async fn site(dir: &Path) -> Site {
    let catalog = Node::builder()
        .data_dir(dir.join("k"))
        .roles(consumer_roles())
        .detect_gpus(false)
        .no_runtime()
        .catalog(catalog_name(), vec![])
        .bind()
        .await
        .unwrap();
    let addrs: Vec<Multiaddr> = catalog.listen_addrs().await;
    let (mut providers, mut runtimes) = (Vec::new(), Vec::new());
    for name in ["p1", "p2"] {
        let d = dir.join(name);
        let rt = runtime(&d);
        runtimes.push(rt.clone());
        providers.push(
            Node::builder()
                .data_dir(&d)
                .max_sellable(Resources {
                    cpu_millis: 2000,
                    memory_bytes: 4 * GIB,
                    storage_bytes: 10 * GIB,
                    pods: 10,
                    gpus: 0,
                })
                .detect_gpus(false)
                .runtime(rt)
                .catalog(catalog_name(), addrs.clone())
                .bind()
                .await
                .unwrap(),
        );
    }
    let ids: Vec<NodeId> = providers.iter().map(Node::node_id).collect();
    let consumer = consumer(dir, addrs, &ids).await;
    Site {
        catalog,
        providers,
        runtimes,
        consumer,
    }
}

/// The consumer (over `dir/c`), once it has found the providers `ids`.
async fn consumer(dir: &Path, catalog: Vec<Multiaddr>, ids: &[NodeId]) -> Node {
    let consumer = Node::builder()
        .data_dir(dir.join("c"))
        .roles(consumer_roles())
        .detect_gpus(false)
        .local_capacity(Resources::ZERO)
        .runtime(runtime(&dir.join("c")))
        .provider_lost_after(Duration::from_secs(6))
        .catalog(catalog_name(), catalog)
        .bind()
        .await
        .unwrap();
    wait_for(
        "the consumer to find both providers",
        Duration::from_secs(15),
        || {
            let c = consumer.clone();
            async move {
                let peers = c.peers().await.unwrap();
                ids.iter().all(|id| peers.iter().any(|p| p.node == *id))
            }
        },
    )
    .await;
    consumer
}

/// Deploys a long-running replica; returns its id and the index of the
/// provider it runs on.
async fn deploy_long(s: &Site, count: &Path) -> (String, usize) {
    let spec = spec(
        "svc",
        "echo run >> \"$COUNT\"; echo up; exec sleep 600",
        "policy = \"on-failure\"\nmax_restarts = 3",
        &[("COUNT", count.display().to_string())],
    );
    let d = s
        .consumer
        .deploy(spec, None, Duration::from_secs(20))
        .await
        .unwrap();
    let (node, _) = replica0(&d);
    let at = s
        .providers
        .iter()
        .position(|p| Some(p.node_id()) == node)
        .expect("placed on one of the providers");
    let on = s.providers[at].node_id();
    wait_running_on(&s.consumer, &d.view.id, on, "the replica to run").await;
    (d.view.id, at)
}

async fn wait_running_on(c: &Node, id: &str, on: NodeId, what: &str) -> WorkloadDetail {
    wait_for(what, Duration::from_secs(30), || {
        let (c, id) = (c.clone(), id.to_string());
        async move {
            let (node, st) = replica0(&detail(&c, &id).await);
            node == Some(on) && st.is_some_and(|s| s.state == ReplicaState::Running)
        }
    })
    .await;
    detail(c, id).await
}

async fn live_replicas(rt: &Arc<dyn Runtime>) -> usize {
    rt.list()
        .await
        .iter()
        .filter(|r| !r.status.is_terminal())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lost_with_its_killed_provider_runs_again_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = site(dir.path()).await;
    let count = dir.path().join("runs");
    let (id, at) = deploy_long(&s, &count).await;
    let lost = s.providers.remove(at);
    let other = s.providers.remove(0);
    // The provider dies for good (its process would be killed: here its node
    // stops, and its replica with it).
    lost.shutdown().await;
    let d = wait_running_on(
        &s.consumer,
        &id,
        other.node_id(),
        "the replica to run on the other provider",
    )
    .await;
    let history: Vec<String> = d
        .history
        .iter()
        .map(|h| format!("{} {}", h.state, h.detail))
        .collect();
    assert!(
        history.iter().any(|h| h.contains("provider lost")),
        "{history:?}"
    );
    assert!(
        history.iter().any(|h| h.contains("placing it again")),
        "{history:?}"
    );
    assert_eq!(runs(&count), 2, "started once on each provider");
    s.consumer.shutdown().await;
    other.shutdown().await;
    s.catalog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_provider_that_comes_back_stops_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let count = dir.path().join("runs");
    let (id, at) = deploy_long(&s, &count).await;
    let (cut, other) = (&s.providers[at], &s.providers[1 - at]);
    let c = &s.consumer;
    c.discovery()
        .danger_block(cut.node_id(), true)
        .await
        .unwrap();
    cut.discovery()
        .danger_block(c.node_id(), true)
        .await
        .unwrap();
    wait_running_on(
        c,
        &id,
        other.node_id(),
        "the replica to run on the other provider",
    )
    .await;
    assert_eq!(runs(&count), 2);
    // Heal: the cut-off provider learns that the replica was taken back and
    // stops its copy; exactly one runs.
    c.discovery()
        .danger_block(cut.node_id(), false)
        .await
        .unwrap();
    cut.discovery()
        .danger_block(c.node_id(), false)
        .await
        .unwrap();
    let cut_rt = s.runtimes[at].clone();
    wait_for(
        "the cut-off provider to stop its copy",
        Duration::from_secs(20),
        || {
            let rt = cut_rt.clone();
            async move { live_replicas(&rt).await == 0 }
        },
    )
    .await;
    let d = detail(c, &id).await;
    assert_eq!(replica0(&d).0, Some(other.node_id()));
    assert_eq!(runs(&count), 2, "never started a third time");
    for n in [&s.consumer, &s.providers[0], &s.providers[1], &s.catalog] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_still_reschedules_its_lost_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let count = dir.path().join("runs");
    let (id, at) = deploy_long(&s, &count).await;
    let Site {
        catalog,
        mut providers,
        consumer: c,
        ..
    } = s;
    // The owner restarts: its records of the workload come back from its view.
    c.shutdown().await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<NodeId> = providers.iter().map(Node::node_id).collect();
    let c = consumer(dir.path(), catalog.listen_addrs().await, &ids).await;
    let lost = providers.remove(at);
    let other = providers.remove(0);
    lost.shutdown().await;
    wait_running_on(
        &c,
        &id,
        other.node_id(),
        "the replica to run on the other provider",
    )
    .await;
    assert_eq!(runs(&count), 2, "started once on each provider");
    c.shutdown().await;
    other.shutdown().await;
    catalog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_with_nowhere_to_go_runs_again_once_its_provider_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let count = dir.path().join("runs");
    let (id, at) = deploy_long(&s, &count).await;
    let Site {
        catalog,
        mut providers,
        runtimes,
        consumer: c,
    } = s;
    // The providers' runtimes hold their state directories; the restart needs them free.
    drop(runtimes);
    // The other provider goes for good first: after the loss, nothing has room.
    let gone = providers.remove(1 - at);
    gone.shutdown().await;
    drop(gone);
    let lost = providers.remove(0);
    let lost_id = lost.node_id();
    lost.shutdown().await;
    drop(lost);
    wait_for(
        "the replica to be found unschedulable",
        Duration::from_secs(30),
        || {
            let (c, id) = (c.clone(), id.clone());
            async move {
                detail(&c, &id)
                    .await
                    .history
                    .iter()
                    .any(|h| h.detail.contains("unschedulable"))
            }
        },
    )
    .await;
    // The provider comes back (same data dir, same key): its policy (on-failure,
    // 3 restarts) keeps the replica trying, and it runs there again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = dir.path().join(["p1", "p2"][at]);
    let back = Node::builder()
        .data_dir(&d)
        .max_sellable(Resources {
            cpu_millis: 2000,
            memory_bytes: 4 * GIB,
            storage_bytes: 10 * GIB,
            pods: 10,
            gpus: 0,
        })
        .detect_gpus(false)
        .runtime(runtime(&d))
        .catalog(catalog_name(), catalog.listen_addrs().await)
        .bind()
        .await
        .unwrap();
    assert_eq!(back.node_id(), lost_id);
    wait_running_on(&c, &id, lost_id, "the replica to run again on its provider").await;
    let history = detail(&c, &id).await.history;
    assert!(
        history.iter().any(|h| h.detail.contains("restart")),
        "{history:?}"
    );
    for n in [&c, &back, &catalog] {
        n.shutdown().await;
    }
}
