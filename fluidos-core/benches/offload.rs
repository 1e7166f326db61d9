//! Offload latency between two in-process nodes over loopback TCP:
//! - warm: `Node::deploy` → the provider confirms the process runs, under an
//!   existing contract;
//! - cold: the same when the deploy must buy capacity first;
//! - status propagation: the provider's status change (its timestamp) → the
//!   consumer's view shows it.
//!
//! `cargo bench -p fluidos-core --bench offload [-- ROUNDS]` (default 30).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;
use support::report;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluidos_contracts::{Resources, Timestamp};
use fluidos_core::buyer::AcquisitionRequest;
use fluidos_core::runtime::{ProcessRuntime, Runtime, SupervisorCommand};
use fluidos_core::view::ReplicaState;
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{Node, Roles};

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

fn spec(name: &str, script: &str) -> WorkloadSpec {
    WorkloadSpec::from_toml(&format!(
        "name = \"{name}\"\n[run]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n[requests]\ncpu = \"10m\"\nmemory = \"8MiB\"\n"
    ))
    .unwrap()
}

async fn node(dir: &Path, provider: bool, catalog: Vec<libp2p::Multiaddr>) -> Node {
    let b = Node::builder()
        .data_dir(dir)
        .detect_gpus(false)
        .runtime(runtime(dir))
        .max_sellable(Resources {
            cpu_millis: 1000,
            memory_bytes: 8 << 30,
            storage_bytes: 1 << 30,
            pods: 4096,
            gpus: 0,
        })
        .roles(Roles {
            provider,
            consumer: true,
            supernode: false,
        })
        .catalog("bench".parse().unwrap(), catalog);
    b.bind().await.unwrap()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let p = node(&dir.path().join("p"), true, vec![]).await;
        let c = node(&dir.path().join("c"), false, p.listen_addrs().await).await;
        let pid = p.node_id();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.peers().await.unwrap().iter().any(|x| x.node == pid) {
            assert!(Instant::now() < deadline, "no provider found");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Cold: each deploy buys exactly what it needs first.
        let mut cold = Vec::new();
        for i in 0..rounds.min(20) {
            let t = Instant::now();
            let d = c
                .deploy(
                    spec(&format!("cold{i}"), "sleep 30"),
                    None,
                    Duration::from_secs(20),
                )
                .await
                .unwrap();
            cold.push(t.elapsed().as_secs_f64() * 1e3);
            c.undeploy(&d.view.id).await.unwrap();
            // The next round must buy again.
            for k in c.contracts().await.unwrap() {
                if k.role == fluidos_core::ContractRole::Buyer
                    && k.state != fluidos_core::ContractState::Ended
                {
                    c.terminate(k.id, "next round".into()).await.unwrap();
                }
            }
            let pid = p.node_id();
            while c.nodes().await.unwrap().iter().any(|n| n.id == pid) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // Warm: a contract with room for every replica exists.
        c.buy(
            AcquisitionRequest {
                resources: Resources {
                    cpu_millis: 500,
                    memory_bytes: 1 << 30,
                    pods: 64,
                    ..Resources::ZERO
                },
                duration_ms: 3_600_000,
                ..AcquisitionRequest::default()
            },
            None,
        )
        .await
        .unwrap();
        let mut warm = Vec::new();
        let mut propagation = Vec::new();
        for i in 0..rounds {
            let t = Instant::now();
            let d = c
                .deploy(
                    spec(&format!("warm{i}"), "sleep 0.2"),
                    None,
                    Duration::from_secs(20),
                )
                .await
                .unwrap();
            warm.push(t.elapsed().as_secs_f64() * 1e3);
            // The replica exits after 0.2 s: how long after the provider wrote
            // that does the consumer's view show it?
            let seen = loop {
                let w = c.workload(&d.view.id).await.unwrap().unwrap();
                let s = w.view.record.replicas["0"].status.clone();
                if let Some(s) = s
                    && matches!(s.state, ReplicaState::Exited { .. })
                {
                    break Timestamp::now().0.saturating_sub(s.since.0);
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            };
            propagation.push(seen as f64);
            c.undeploy(&d.view.id).await.unwrap();
        }
        println!("offload over loopback, {rounds} rounds (process runtime, 2 worker threads)");
        report("cold deploy (buys first) → running", cold);
        report("warm deploy → running", warm);
        report("status change → consumer's view (ms)", propagation);
        c.shutdown().await;
        p.shutdown().await;
    });
}
