//! Cold start to first contract, as a distribution (issue 19).
//!
//! ```sh
//! cargo bench -p fluidos-node --bench cold_start --profile release
//! FLUIDOS_BENCH_RUNS=100 cargo bench -p fluidos-node --bench cold_start
//! ```
//!
//! Each run starts two fresh `fluidos-node` daemons on loopback (new data
//! directories, mDNS off): provider A joins its own catalog `sites` on a fixed
//! port, buyer B (not a provider) has `--catalog sites=<A>`. B is asked to buy
//! 500m / 512 MiB through its control API with a wait (`wait_ms`, what
//! `fluidos-node buy --wait` sends), so the request is in the daemon before A is
//! up when B starts first. Three start orders: catalog first (B is spawned once A
//! is ready), buyer first (A is spawned once B is ready and the buy is sent), and
//! together (both spawned at once). Two times per run, to the countersigned
//! contract (the end of the buy response):
//!
//! - **with process start**: from spawning the later of the two daemons;
//! - **from listening**: from the moment both daemons are ready (their
//!   `control.addr` file exists, which the daemon writes once libp2p listens).
//!
//! Prints p50 / p90 / p99 / max per order and the load average before and after.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fluidos-node");
/// How long the daemon may wait for a provider before it gives up.
const WAIT_MS: u64 = 20_000;
/// Bound on waiting for a daemon's control API.
const READY_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Order {
    CatalogFirst,
    BuyerFirst,
    Together,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::CatalogFirst => "catalog first",
            Order::BuyerFirst => "buyer first",
            Order::Together => "together",
        }
    }
}

fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("RUST_LOG", "warn")
        .arg("--data-dir")
        .arg(dir);
    c
}

fn init(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let o = cmd(dir)
        .args([
            "--json",
            "init",
            "--mdns",
            "false",
            "--control",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "init: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    cmd(dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Polls for `control.addr` every 1 ms; returns the address and when it appeared.
fn wait_ready(dir: &Path, child: &mut Child) -> (String, Instant) {
    let start = Instant::now();
    let file = dir.join("control.addr");
    while start.elapsed() < READY_LIMIT {
        if let Ok(text) = std::fs::read_to_string(&file)
            && !text.trim().is_empty()
        {
            return (text.trim().to_string(), Instant::now());
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "daemon in {} exited ({status}): {}",
                dir.display(),
                std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("daemon in {} not ready in {READY_LIMIT:?}", dir.display());
}

/// `POST /v1/buy` with a wait; returns when the response ended and whether it
/// ended with a contract.
fn buy(addr: &str, token: &str) -> (Instant, bool, String) {
    let body = format!(
        r#"{{"cpu_millis":500,"memory_bytes":536870912,"duration_ms":600000,"wait_ms":{WAIT_MS}}}"#
    );
    let req = format!(
        "POST /v1/buy HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(WAIT_MS + 20_000)))
        .unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let done = Instant::now();
    let ok = resp.contains(r#""event":"done""#);
    (done, ok, resp)
}

struct Run {
    with_start: Duration,
    from_listening: Duration,
}

fn one(order: Order, tmp: &Path) -> Run {
    let (a_dir, b_dir) = (tmp.join("a"), tmp.join("b"));
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let a = init(&a_dir, &["--listen", &listen, "--catalog", "sites="]);
    let peer = a["peer_id"].as_str().unwrap();
    let catalog = format!("sites={listen}/p2p/{peer}");
    init(
        &b_dir,
        &[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--provider",
            "false",
            "--catalog",
            &catalog,
        ],
    );
    let token = |dir: &Path| {
        // The token file is written by the daemon at its first start.
        std::fs::read_to_string(dir.join("control.token"))
            .unwrap()
            .trim()
            .to_string()
    };
    let buy_thread = |addr: String, token: String| std::thread::spawn(move || buy(&addr, &token));

    let (t0, t_listen, buying, mut a_child, mut b_child);
    match order {
        Order::CatalogFirst => {
            a_child = spawn(&a_dir);
            let (_, a_ready) = wait_ready(&a_dir, &mut a_child);
            t0 = Instant::now();
            b_child = spawn(&b_dir);
            let (b_addr, b_ready) = wait_ready(&b_dir, &mut b_child);
            t_listen = a_ready.max(b_ready);
            buying = buy_thread(b_addr, token(&b_dir));
        }
        Order::BuyerFirst => {
            b_child = spawn(&b_dir);
            let (b_addr, b_ready) = wait_ready(&b_dir, &mut b_child);
            buying = buy_thread(b_addr, token(&b_dir));
            t0 = Instant::now();
            a_child = spawn(&a_dir);
            let (_, a_ready) = wait_ready(&a_dir, &mut a_child);
            t_listen = a_ready.max(b_ready);
        }
        Order::Together => {
            t0 = Instant::now();
            a_child = spawn(&a_dir);
            b_child = spawn(&b_dir);
            let (b_addr, b_ready) = wait_ready(&b_dir, &mut b_child);
            buying = buy_thread(b_addr, token(&b_dir));
            let (_, a_ready) = wait_ready(&a_dir, &mut a_child);
            t_listen = a_ready.max(b_ready);
        }
    }
    let (done, ok, resp) = buying.join().unwrap();
    for c in [&mut a_child, &mut b_child] {
        // Fresh state every run: no need for a graceful stop.
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        ok,
        "{}: no contract: {resp}\nB log:\n{}",
        order.name(),
        std::fs::read_to_string(b_dir.with_extension("log")).unwrap_or_default()
    );
    Run {
        with_start: done.saturating_duration_since(t0),
        from_listening: done.saturating_duration_since(t_listen),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects orders by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = std::env::var("FLUIDOS_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let root: PathBuf = tempfile::tempdir().unwrap().keep();
    println!(
        "cold start → countersigned contract, {runs} runs per order; load average before: {}",
        loadavg()
    );
    println!(
        "| order | measured from | p50 ms | p90 ms | p99 ms | max ms | runs > 5 s |\n|---|---|---|---|---|---|---|"
    );
    for order in [Order::CatalogFirst, Order::BuyerFirst, Order::Together] {
        if !filter.is_empty() && !filter.iter().any(|f| order.name().contains(f.as_str())) {
            continue;
        }
        let mut with_start = Vec::with_capacity(runs);
        let mut from_listening = Vec::with_capacity(runs);
        for i in 0..runs {
            let dir = root.join(format!("{}-{i}", order.name().replace(' ', "-")));
            std::fs::create_dir_all(&dir).unwrap();
            let r = one(order, &dir);
            with_start.push(r.with_start);
            from_listening.push(r.from_listening);
            let _ = std::fs::remove_dir_all(&dir);
        }
        for (what, v) in [
            ("process start", &mut with_start),
            ("both listening", &mut from_listening),
        ] {
            v.sort();
            let slow = v.iter().filter(|d| **d > Duration::from_secs(5)).count();
            println!(
                "| {} | {what} | {} | {} | {} | {} | {slow} |",
                order.name(),
                ms(pct(v, 50.0)),
                ms(pct(v, 90.0)),
                ms(pct(v, 99.0)),
                ms(*v.last().unwrap()),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    println!("load average after: {}", loadavg());
}
