//! Time to detect a lost provider and have its replica running elsewhere.
//!
//! Per round: a catalog node, two providers and a consumer (in-process nodes,
//! loopback TCP, process runtime); a long-running replica is deployed (buying
//! from one provider); that provider stops for good. Measured:
//! - kill → the consumer's view shows the replica running on the other
//!   provider (detection after `provider_lost_after`, then placement, buying
//!   from the other provider, offload and start);
//! - lost → running elsewhere: the same minus the detection wait, from the
//!   owner's history (ms timestamps).
//!
//! `cargo bench -p fluidos-core --bench reschedule [-- ROUNDS]` (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;
use support::report;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluidos_contracts::Resources;
use fluidos_core::runtime::{ProcessRuntime, Runtime, SupervisorCommand};
use fluidos_core::view::ReplicaState;
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{Node, Roles};

/// The shortest silence the owner waits (two 3 s heartbeats).
const LOST_AFTER: Duration = Duration::from_secs(6);

fn runtime(dir: &Path) -> Arc<dyn Runtime> {
    Arc::new(
        ProcessRuntime::builder(dir.join("replicas"))
            .supervisor(SupervisorCommand::new(env!(
                "CARGO_BIN_EXE_fluidos-supervise"
            )))
            .build()
            .unwrap(),
    )
}

fn roles(provider: bool) -> Roles {
    Roles {
        provider,
        consumer: true,
        supernode: false,
    }
}

async fn node(dir: &Path, provider: bool, catalog: Vec<libp2p::Multiaddr>) -> Node {
    Node::builder()
        .data_dir(dir)
        .detect_gpus(false)
        .runtime(runtime(dir))
        .local_capacity(Resources::ZERO)
        .provider_lost_after(LOST_AFTER)
        .max_sellable(Resources {
            cpu_millis: 1000,
            memory_bytes: 8 << 30,
            storage_bytes: 1 << 30,
            pods: 64,
            gpus: 0,
        })
        .roles(roles(provider))
        .catalog("lost".parse().unwrap(), catalog)
        .bind()
        .await
        .unwrap()
}

async fn round(dir: &Path) -> (f64, f64) {
    let k = node(&dir.join("k"), false, vec![]).await;
    let addrs = k.listen_addrs().await;
    let mut p = vec![
        node(&dir.join("p1"), true, addrs.clone()).await,
        node(&dir.join("p2"), true, addrs.clone()).await,
    ];
    let c = node(&dir.join("c"), false, addrs).await;
    let ids: Vec<_> = p.iter().map(Node::node_id).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = c.peers().await.unwrap();
        if ids.iter().all(|id| peers.iter().any(|x| x.node == *id)) {
            break;
        }
        assert!(Instant::now() < deadline, "providers not found");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spec = WorkloadSpec::from_toml(
        "name = \"svc\"\n[run]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"exec sleep 600\"]\n[requests]\ncpu = \"100m\"\nmemory = \"64MiB\"\n[restart]\npolicy = \"always\"\n",
    )
    .unwrap();
    let d = c.deploy(spec, None, Duration::from_secs(20)).await.unwrap();
    let id = d.view.id.clone();
    let first = d.view.record.replicas["0"].node.unwrap();
    let at = ids.iter().position(|i| *i == first).unwrap();
    let other = ids[1 - at];
    let lost = p.remove(at);
    let killed = Instant::now();
    lost.shutdown().await;
    drop(lost);
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let d = c.workload(&id).await.unwrap().unwrap();
        let r = &d.view.record.replicas["0"];
        if r.node == Some(other)
            && r.status.as_ref().map(|s| &s.state) == Some(&ReplicaState::Running)
        {
            break d;
        }
        assert!(Instant::now() < deadline, "never rescheduled: {d:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let total = killed.elapsed().as_secs_f64() * 1e3;
    let lost_at = detail
        .history
        .iter()
        .find(|h| h.detail.contains("provider lost"))
        .map(|h| h.at.0)
        .unwrap();
    let running_at = detail
        .history
        .iter()
        .rev()
        .find(|h| h.state == "running" && h.node == Some(other))
        .map(|h| h.at.0)
        .unwrap();
    for n in [&c, &p[0], &k] {
        n.shutdown().await;
    }
    (total, running_at.saturating_sub(lost_at) as f64)
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (mut total, mut after) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            let dir = tempfile::tempdir().unwrap();
            let (t, a) = round(dir.path()).await;
            println!("round {i}: kill → running elsewhere {t:.1} ms, lost → running {a:.0} ms");
            total.push(t);
            after.push(a);
        }
        println!("provider_lost_after = {} s", LOST_AFTER.as_secs());
        report("kill → running on the other provider", total);
        report("declared lost → running elsewhere", after);
    });
}
