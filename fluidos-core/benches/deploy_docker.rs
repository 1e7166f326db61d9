//! Deploy → container running on the provider, through two in-process nodes over loopback
//! TCP, against a local `docker run -d` of the same image measured in the same run
//! (issue #16's goal: ≤ `docker run` + 50 ms).
//!
//! `cargo bench -p fluidos-core --bench deploy_docker --profile release [-- ROUNDS]` (default
//! 20). Needs a Docker engine and the test image `fluidos-test/busybox:1` (built by
//! `cargo test -p fluidos-core --test runtime_docker`). A contract with room for every replica
//! is bought first; each round deploys a `sleep 600` image workload and measures until
//! `Node::deploy` returns (the provider answered that the container runs, after it started
//! and inspected it), then undeploys it outside the measurement; `docker run -d` of the same
//! image and command is timed in the same round, once without limits and once with the
//! workload's cpu and memory limits (`--cpus`, `--memory`): a cpu limit is enforced from the
//! container's first instruction, so it slows the start itself.
//!
//! `FLUIDOS_BENCH_CPU` / `FLUIDOS_BENCH_MEMORY` set the workload's requests (= limits;
//! default `250m` / `16MiB`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/mod.rs"]
mod support;
use support::report;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluidos_contracts::Resources;
use fluidos_core::buyer::AcquisitionRequest;
use fluidos_core::runtime::{DockerRuntime, ProcessRuntime, Runtime, SupervisorCommand};
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{Node, Roles};

const IMAGE: &str = "fluidos-test/busybox:1";

async fn node(
    dir: &Path,
    runtime: Arc<dyn Runtime>,
    provider: bool,
    catalog: Vec<libp2p::Multiaddr>,
) -> Node {
    Node::builder()
        .data_dir(dir)
        .detect_gpus(false)
        .runtime(runtime)
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
        .catalog("bench".parse().unwrap(), catalog)
        .bind()
        .await
        .unwrap()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let docker = match DockerRuntime::builder("fluidos-bench-provider")
            .stop_grace(Duration::from_secs(1))
            .connect()
            .await
        {
            Ok(d) => d,
            Err(e) => return eprintln!("no Docker engine: {e}"),
        };
        let probe = tokio::process::Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .await
            .unwrap();
        if !probe.status.success() {
            return eprintln!("{IMAGE} missing: run cargo test -p fluidos-core --test runtime_docker");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = node(&dir.path().join("p"), Arc::new(docker), true, vec![]).await;
        let process: Arc<dyn Runtime> = Arc::new(
            ProcessRuntime::builder(dir.path().join("c/replicas"))
                .supervisor(SupervisorCommand::new(env!("CARGO_BIN_EXE_fluidos-supervise")))
                .build()
                .unwrap(),
        );
        let c = node(&dir.path().join("c"), process, false, p.listen_addrs().await).await;
        let pid = p.node_id();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.peers().await.unwrap().iter().any(|x| x.node == pid) {
            assert!(Instant::now() < deadline, "no provider found");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.buy(
            AcquisitionRequest {
                resources: Resources {
                    cpu_millis: 1000,
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
        let cpu = std::env::var("FLUIDOS_BENCH_CPU").unwrap_or_else(|_| "250m".into());
        let memory = std::env::var("FLUIDOS_BENCH_MEMORY").unwrap_or_else(|_| "16MiB".into());
        let (mut deploy, mut cli, mut cli_limited) = (Vec::new(), Vec::new(), Vec::new());
        let mut limits = Vec::new();
        for i in 0..rounds {
            let spec = WorkloadSpec::from_toml(&format!(
                "name = \"d{i}\"\n[run]\nimage = \"{IMAGE}\"\nargs = [\"sleep\", \"600\"]\n[requests]\ncpu = \"{cpu}\"\nmemory = \"{memory}\"\n"
            ))
            .unwrap();
            if limits.is_empty() {
                let r = spec.requests.0;
                limits = vec![
                    format!("--cpus={}", r.cpu_millis as f64 / 1000.0),
                    format!("--memory={}", r.memory_bytes),
                ];
            }
            let t = Instant::now();
            let d = c.deploy(spec, None, Duration::from_secs(30)).await.unwrap();
            deploy.push(t.elapsed().as_secs_f64() * 1e3);
            c.undeploy(&d.view.id).await.unwrap();

            let name = format!("fluidos-bench-cli-{i}");
            let t = Instant::now();
            let out = tokio::process::Command::new("docker")
                .args(["run", "-d", "--name", &name, IMAGE, "sleep", "600"])
                .output()
                .await
                .unwrap();
            cli.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(out.status.success(), "{out:?}");
            let _ = tokio::process::Command::new("docker")
                .args(["rm", "-f", &name])
                .output()
                .await;

            let name = format!("fluidos-bench-cli-limited-{i}");
            let t = Instant::now();
            let out = tokio::process::Command::new("docker")
                .args(["run", "-d", "--name", &name])
                .args(&limits)
                .args([IMAGE, "sleep", "600"])
                .output()
                .await
                .unwrap();
            cli_limited.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(out.status.success(), "{out:?}");
            let _ = tokio::process::Command::new("docker")
                .args(["rm", "-f", &name])
                .output()
                .await;
            // The undeployed container stops within its 1 s grace: let it go before the
            // next round, so rounds do not overlap.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        println!(
            "deploy → container running, {rounds} rounds (2 worker threads), requests = limits cpu {cpu} memory {memory}"
        );
        report("Node::deploy → running on the provider", deploy);
        report("docker run -d (CLI, same image, no limits)", cli);
        report(&format!("docker run -d {} (same limits)", limits.join(" ")), cli_limited);
        c.shutdown().await;
        p.shutdown().await;
        let left = tokio::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=fluidos.node=fluidos-bench-provider"])
            .output()
            .await
            .unwrap();
        let left = String::from_utf8_lossy(&left.stdout).split_whitespace().count();
        println!("containers left behind: {left}");
    });
}
