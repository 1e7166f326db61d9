//! Docker runtime: how long from `start` until the replica's container runs.
//!
//! Run with `cargo bench -p fluidos-core --bench docker_start` (add `-- 50` for more rounds).
//! Needs a Docker engine and the test image `fluidos-test/busybox:1` (built by
//! `cargo test -p fluidos-core --test runtime_docker`). Each round starts `sleep 600` and
//! measures until `start` returns (the container runs and has been inspected), then stops
//! and removes it outside the measurement. Baselines in the same run: the same container
//! created and started with bare API calls (bollard), and `docker run -d` of the CLI.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use fluidos_core::runtime::{DockerRuntime, ReplicaId, ReplicaSpec, Runtime};

const IMAGE: &str = "fluidos-test/busybox:1";

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1e3
    };
    println!(
        "{name:<40} n={:<4} p50 {:>8.1} ms  p90 {:>8.1} ms  max {:>8.1} ms",
        v.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}

async fn force_remove(docker: &Docker, name: &str) {
    let opts = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(name, Some(opts)).await;
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => match d.negotiate_version().await {
            Ok(d) => d,
            Err(e) => return eprintln!("no Docker engine: {e}"),
        },
        Err(e) => return eprintln!("no Docker engine: {e}"),
    };
    if docker.inspect_image(IMAGE).await.is_err() {
        return eprintln!("{IMAGE} missing: run cargo test -p fluidos-core --test runtime_docker");
    }
    let rt = DockerRuntime::builder("fluidos-bench")
        .stop_grace(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let (mut fl, mut raw, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        // Interleaved, so load changes hit all three alike.
        let id = ReplicaId::new("bench", u32::try_from(i).unwrap(), "c-bench").unwrap();
        let spec = ReplicaSpec::image_builder(id.clone(), IMAGE)
            .args(["sleep", "600"])
            .build()
            .unwrap();
        let t = Instant::now();
        rt.start(spec).await.unwrap();
        fl.push(t.elapsed());
        force_remove(&docker, &rt.container_name(&id)).await;
        let _ = rt.stop(&id).await;
        let _ = rt.remove(&id).await;

        let name = format!("fluidos-bench-raw-{i}");
        let t = Instant::now();
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["sleep".into(), "600".into()]),
            ..ContainerCreateBody::default()
        };
        docker.create_container(Some(opts), body).await.unwrap();
        docker.start_container(&name, None).await.unwrap();
        raw.push(t.elapsed());
        force_remove(&docker, &name).await;

        let name = format!("fluidos-bench-cli-{i}");
        let t = Instant::now();
        let out = tokio::process::Command::new("docker")
            .args(["run", "-d", "--name", &name, IMAGE, "sleep", "600"])
            .output()
            .await
            .unwrap();
        cli.push(t.elapsed());
        assert!(out.status.success(), "{out:?}");
        force_remove(&docker, &name).await;
    }
    println!(
        "engine {} (API {})",
        rt.engine().version,
        rt.engine().api_version
    );
    percentiles("DockerRuntime::start → running", fl);
    percentiles("bare API create + start (bollard)", raw);
    percentiles("docker run -d (CLI)", cli);
}
