//! A provider daemon hosting 100 running replicas: its CPU and RSS (issue 16), and the
//! time from `deploy` to a running container against a local `docker run -d`.
//!
//! ```sh
//! cargo bench -p fluidos-node --bench hundred_replicas --profile release            # both runtimes
//! FLUIDOS_BENCH_RUNTIME=process cargo bench -p fluidos-node --bench hundred_replicas --profile release
//! ```
//!
//! `FLUIDOS_BENCH_KEEP=1` keeps the daemons' data dirs and logs; `FLUIDOS_BENCH_LOG` sets their
//! `RUST_LOG` (default `warn`).
//!
//! Two fresh daemons on loopback (mDNS off): a provider (`--usage-interval 5s`, the
//! default) and a consumer that deploys one workload of 100 replicas (`sleep 3600`, as
//! processes or in `fluidos-test/busybox:1` containers), buying what it needs. Once all
//! 100 run, the provider's CPU time (utime + stime of the daemon process, from
//! `/proc/<pid>/stat`) is measured over 30 s, and its RSS (`VmRSS`) at the end. Then the
//! workload is undeployed and what still runs on the provider (containers with its label,
//! or the replicas' processes) is counted until none is left (at most 120 s). Prints the
//! load average before and after. (Deploy → running against `docker run` is
//! `fluidos-core/benches/deploy_docker.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fluidos-node");
const IMAGE: &str = "fluidos-test/busybox:1";
const REPLICAS: u32 = 100;

fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env(
            "RUST_LOG",
            std::env::var("FLUIDOS_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .arg("--data-dir")
        .arg(dir);
    c
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    cmd(dir).args(args).stdin(Stdio::null()).output().unwrap()
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

fn start(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let mut child = cmd(dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if dir.join("control.addr").exists() && run(dir, &["status", "--json"]).status.success() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("daemon in {} not ready", dir.display());
}

fn init(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--json",
        "init",
        "--mdns",
        "false",
        "--control",
        "127.0.0.1:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
    ];
    args.extend_from_slice(extra);
    let o = run(dir, &args);
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn running(c_dir: &Path, id: &str) -> usize {
    let o = run(c_dir, &["workload", id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["replicas"]
        .as_array()
        .map(|r| r.iter().filter(|r| r["state"] == "running").count())
        .unwrap_or(0)
}

fn deploy(c_dir: &Path, spec: &Path) -> String {
    let o = run(c_dir, &["deploy", spec.to_str().unwrap(), "--wait", "10m"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        out(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    out(&o)
        .lines()
        .find_map(|l| l.strip_prefix("workload "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// Replicas that still run on the provider: its labelled containers, or the replicas'
/// `sleep 3600` processes (nothing else on the machine runs that command line).
fn on_provider(runtime: &str, p_did: &str) -> usize {
    let o = if runtime == "docker" {
        Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=fluidos.node={p_did}"),
            ])
            .output()
    } else {
        Command::new("pgrep")
            .args(["-x", "-f", "/bin/sleep 3600"])
            .output()
    };
    o.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .count()
    })
    .unwrap_or(0)
}

fn bench(runtime: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (p_dir, c_dir) = (tmp.path().join("p"), tmp.path().join("c"));
    let p_did = init(
        &p_dir,
        &[
            "--runtime",
            if runtime == "docker" {
                "docker"
            } else {
                "process"
            },
        ],
    )["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    init(&c_dir, &["--provider", "false"]);
    let p = start(&p_dir);
    let c = start(&c_dir);
    let s: serde_json::Value =
        serde_json::from_slice(&run(&p_dir, &["status", "--json"]).stdout).unwrap();
    let addr = s["listen_addrs"][0].as_str().unwrap().to_string();
    assert!(run(&c_dir, &["peer", "add", &addr]).status.success());
    let t = Instant::now();
    while !out(&run(&c_dir, &["peers", "--json"])).contains(&p_did) {
        assert!(t.elapsed() < Duration::from_secs(20), "no peer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run_line = if runtime == "docker" {
        format!("image = \"{IMAGE}\"\nargs = [\"sleep\", \"3600\"]")
    } else {
        "command = \"/bin/sleep\"\nargs = [\"3600\"]".to_string()
    };
    let spec = tmp.path().join("many.toml");
    std::fs::write(
        &spec,
        format!("name = \"many\"\nreplicas = {REPLICAS}\n[run]\n{run_line}\n[requests]\ncpu = \"10m\"\nmemory = \"8MiB\"\npods = 1\n"),
    )
    .unwrap();
    let before = load();
    let t = Instant::now();
    let id = deploy(&c_dir, &spec);
    // Under load an offload may time out (the owner then reports that replica failed):
    // measure with what runs after at most 5 minutes, and say how many.
    let mut n = running(&c_dir, &id);
    while n < REPLICAS as usize && t.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(500));
        n = running(&c_dir, &id);
    }
    let all = t.elapsed();
    let pid = p.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(30));
    let cpu_s = (cpu_ticks(pid) - c0) as f64 / 100.0;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{runtime}: {n} of {REPLICAS} replicas running {:.1} s after deploy; provider daemon CPU {:.2} % of one core over {wall:.0} s ({cpu_s:.2} s), RSS {} MiB",
        all.as_secs_f64(),
        100.0 * cpu_s / wall,
        rss_kib(pid) / 1024
    );
    // Undeploy, then count what still runs *on the provider* (not in the consumer's view,
    // which forgets the workload at once): every replica must be stopped.
    let t = Instant::now();
    let o = run(&c_dir, &["undeploy", &id]);
    let undeploy_cli = t.elapsed();
    let mut left = on_provider(runtime, &p_did);
    while left > 0 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(250));
        left = on_provider(runtime, &p_did);
    }
    println!(
        "{runtime}: undeploy (CLI {}, {:.1} s) → {left} replicas still on the provider after {:.1} s",
        if o.status.success() { "ok" } else { "failed" },
        undeploy_cli.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    println!("load average before: {}after: {}", before, load());
    if std::env::var_os("FLUIDOS_BENCH_KEEP").is_some() {
        // The daemons' logs (p.log, c.log) and data dirs, for a look afterwards.
        println!("kept {}", tmp.keep().display());
        return cleanup(p, c, &p_did);
    }
    cleanup(p, c, &p_did);
}

fn cleanup(mut p: Child, mut c: Child, p_did: &str) {
    let _ = p.kill();
    let _ = c.kill();
    let _ = p.wait();
    let _ = c.wait();
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("docker ps -aq --filter label=fluidos.node={p_did} | xargs -r docker rm -f"),
        ])
        .output();
}

fn main() {
    match std::env::var("FLUIDOS_BENCH_RUNTIME").as_deref() {
        Ok("process") => bench("process"),
        Ok("docker") => bench("docker"),
        _ => {
            bench("process");
            bench("docker");
        }
    }
}
