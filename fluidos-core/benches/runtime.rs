//! Process runtime: how long from `start` until the replica's process runs.
//!
//! Run with `cargo bench -p fluidos-core --bench runtime` (add `-- 500` for more rounds).
//! The state dir is a temporary directory under `$TMPDIR` (set `FLUIDOS_BENCH_DIR` to use
//! another disk). For each isolation mode the runtime can use here (rlimits; cgroups when
//! available) it starts `/bin/true` in a loop: `start` returns once the supervisor has
//! spawned the process and recorded it durably (launch.json and state.json, each fsynced).
//! Baselines in the same run: a bare `fork+exec` of `/bin/true`, and of the supervisor
//! binary itself (the cost of the extra process). `FLUIDOS_BENCH_SUPERVISOR=<path>` runs
//! another supervisor binary (e.g. a release build of `fluidos-supervise`).
// A benchmark harness: a setup that fails ends the run with its message.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fluidos_core::runtime::{
    CgroupMode, Enforcement, ProcessRuntime, ReplicaId, ReplicaSpec, Runtime, SupervisorCommand,
};

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1e3
    };
    println!(
        "{name:<44} n={:<4} p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

fn supervisor_path() -> PathBuf {
    std::env::var_os("FLUIDOS_BENCH_SUPERVISOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fluidos-supervise")))
}

async fn bench_runtime(mode: CgroupMode, label: &str, rounds: usize, base: &std::path::Path) {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let rt = ProcessRuntime::builder(dir.path())
        .supervisor(SupervisorCommand::new(env!(
            "CARGO_BIN_EXE_fluidos-supervise"
        )))
        .cgroups(mode)
        .build()
        .expect("runtime");
    let caps = rt.capabilities();
    if label == "cgroups"
        && caps.memory != Enforcement::CgroupV1
        && caps.memory != Enforcement::CgroupV2
    {
        println!("start → running, cgroups: skipped ({})", caps.summary());
        return;
    }
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let id = ReplicaId::new("bench", u32::try_from(i).expect("index"), "c1").expect("id");
        let spec = ReplicaSpec::builder(id.clone(), "/bin/true")
            .limits(fluidos_core::runtime::Limits {
                memory_bytes: Some(256 << 20),
                cpu_millicores: Some(1000),
                pids: Some(64),
            })
            .build()
            .expect("spec");
        let t = Instant::now();
        rt.start(spec).await.expect("start");
        times.push(t.elapsed());
        // Outside the timed region: let it end and forget it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rt.status(&id).await.expect("status").status.is_terminal() {
            assert!(Instant::now() < deadline, "replica did not end");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        rt.remove(&id).await.expect("remove");
    }
    percentiles(
        &format!("start → running, {label} ({})", short(&caps.memory)),
        times,
    );
}

fn short(e: &Enforcement) -> String {
    format!("memory by {e}")
}

fn bench_spawn(program: &str, args: &[&str], label: &str, rounds: usize) {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut c = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        times.push(t.elapsed());
        let _ = c.wait();
    }
    percentiles(label, times);
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let base = std::env::var_os("FLUIDOS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!("state dir under {}", base.display());
    bench_spawn(
        "/bin/true",
        &[],
        "baseline: spawn /bin/true (fork+exec)",
        rounds,
    );
    let sup = supervisor_path();
    println!("supervisor {}", sup.display());
    bench_spawn(
        sup.to_str().expect("utf-8 path"),
        &[],
        "baseline: spawn fluidos-supervise (fork+exec)",
        rounds,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        bench_runtime(CgroupMode::Off, "rlimits", rounds, &base).await;
        bench_runtime(CgroupMode::Auto, "cgroups", rounds, &base).await;
    });
}
