//! REAR end to end between real [`Node`]s over loopback TCP: latency of one buy,
//! and the durable contracts per second one provider completes for many buyers.
//!
//! Run with `cargo bench -p fluidos-core --bench rear_e2e` (release profile).
//! Run only one part with `-- latency`, `-- throughput` or `-- lean`. Environment knobs:
//! `REAR_BENCH_N` (timed sequential buys, default 300), `REAR_BENCH_SECS`
//! (throughput run, default 10), `REAR_BENCH_BUYERS` (default 64); `RUST_LOG` turns
//! on logging to stderr.
//! Without `--bench` (as under `cargo test --benches`) it runs a short smoke pass.
//!
//! - **latency**: one provider, one consumer (mDNS off, the consumer dials the
//!   provider as a manual peer); 20 warm-up buys, then `N` sequential buys of a
//!   `pods: 1` partition. Each buy is list → reserve → purchase → countersign with
//!   every durable step fsynced. Reports p50/p90/p99/max, and the time between
//!   the buyer's [`BuyProgress`] reports to show where it goes;
//! - **throughput**: one provider and `BUYERS` consumer-only nodes in this process,
//!   each buying in a loop for `SECS` seconds; counts contracts per second and
//!   refusals by code, then checks that nothing was oversold: the provider's
//!   committed capacity fits its capacity and equals the sum of its active
//!   contracts, and the provider and the buyers hold the same set of contracts;
//! - **lean**: the same provider and the same check, with `BUYERS` lean buyers as
//!   the load (see [`lean`]): each has its own identity and libp2p connection and
//!   runs the real I/O-free [`Acquisition`](fluidos_core::buyer::Acquisition)
//!   (it verifies the provider's signature and countersigns), but has no
//!   discovery, no engine and no store of its own. This measures the provider: the
//!   buyer nodes of `throughput` spend more CPU than the provider they load (see
//!   `docs/PERFORMANCE.md`), and they share its two cores.
//!
//! `REAR_BENCH_SPLIT=1` runs the provider of `throughput` and `lean` in a child
//! process (this binary with `--serve-provider`), so each side's CPU is read apart;
//! `REAR_BENCH_QUIC=1` makes the buyers dial QUIC instead of TCP.
//!
//! Both run on a two-worker tokio runtime (the target machine has two cores), with
//! the data directories on the data disk under `target/`, not a tmpfs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod latency;
mod lean;
mod provider;
mod throughput;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp};
use fluidos_core::buyer::{
    AcquisitionFailure, AcquisitionRequest, CandidateFailure, Outcome, Phase,
};
use fluidos_core::host::OfferConfig;
use fluidos_core::store::{Record, Store};
use fluidos_core::{BuyError, BuyProgress, ContractRole, ContractState, LedgerTuning, Node, Roles};

use latency::{SEGMENTS, latency, print_segments, timed_buy};
use lean::lean;
use provider::{Provider, book_of, serve_provider};
use throughput::{throughput, throughput_tuning};

const GIB: u64 = 1 << 30;
const PODS: u64 = 1_000_000;
const WARMUP: usize = 20;

struct Settings {
    full: bool,
    latency: bool,
    throughput: bool,
    lean: bool,
    n: usize,
    secs: u64,
    buyers: usize,
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let named: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let wants = |what: &str| named.is_empty() || named.iter().any(|a| what.contains(a.as_str()));
    let env = |k: &str, full_default: u64, smoke: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { full_default } else { smoke })
    };
    Settings {
        full,
        latency: wants("latency"),
        throughput: wants("throughput"),
        lean: wants("lean"),
        n: env("REAR_BENCH_N", 300, 10) as usize,
        secs: env("REAR_BENCH_SECS", 10, 1),
        buyers: env("REAR_BENCH_BUYERS", 64, 4) as usize,
    }
}

fn bench_dir(prefix: &str) -> tempfile::TempDir {
    // On the data disk, not a tmpfs: fsync must cost what it costs.
    let base = option_env!("CARGO_TARGET_TMPDIR").unwrap_or("target");
    std::fs::create_dir_all(base).unwrap();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap()
}

async fn provider(dir: &Path, tuning: LedgerTuning) -> Node {
    Node::builder()
        .data_dir(dir)
        .roles(Roles {
            provider: true,
            consumer: false,
            supernode: false,
        })
        .offer(OfferConfig {
            pods: PODS,
            ..OfferConfig::default()
        })
        // Small fixed CPU and memory so that host measurements never change the
        // flavor; a million workload slots so capacity never runs out.
        .max_sellable(Resources {
            cpu_millis: 500,
            memory_bytes: GIB,
            storage_bytes: 0,
            pods: PODS,
            gpus: 0,
        })
        .ledger_tuning(tuning)
        .remeasure_every(Duration::from_secs(3600))
        .detect_gpus(false)
        .listen(vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ])
        .bind()
        .await
        .unwrap()
}

/// The provider address buyers dial: TCP, or QUIC with `REAR_BENCH_QUIC=1`.
fn dial_addr(addrs: &[libp2p::Multiaddr]) -> libp2p::Multiaddr {
    let quic = std::env::var("REAR_BENCH_QUIC").is_ok_and(|v| v == "1");
    addrs
        .iter()
        .find(|a| a.to_string().contains("quic") == quic)
        .cloned()
        .expect("the provider listens on TCP and QUIC")
}

async fn consumer(dir: &Path, provider: &[libp2p::Multiaddr]) -> Node {
    consumer_listing(dir, provider, fluidos_core::DEFAULT_OFFER_CACHE_TTL).await
}

/// A consumer that reuses a provider's listing for `listing_ttl`.
async fn consumer_listing(dir: &Path, addr: &[libp2p::Multiaddr], listing_ttl: Duration) -> Node {
    Node::builder()
        .data_dir(dir)
        .offer_cache_ttl(listing_ttl)
        .roles(Roles {
            provider: false,
            consumer: true,
            supernode: false,
        })
        .manual_peer(dial_addr(addr))
        .remeasure_every(Duration::from_secs(3600))
        .detect_gpus(false)
        .bind()
        .await
        .unwrap()
}

async fn wait_to_see(node: &Node, other: NodeId) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if node.peers().await.unwrap().iter().any(|c| c.node == other) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the buyer never found the provider"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn one_pod(duration_ms: u64) -> AcquisitionRequest {
    AcquisitionRequest {
        resources: Resources {
            pods: 1,
            ..Resources::ZERO
        },
        duration_ms,
        ..AcquisitionRequest::default()
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// One fsynced `Store::commit` of a small record, on the same disk as the nodes.
fn fsync_baseline(rounds: usize) -> Duration {
    let dir = bench_dir("rear-e2e-fsync");
    let (mut store, _) = Store::open(dir.path()).unwrap();
    let provider = fluidos_contracts::SecretKey::generate().node_id();
    let mut times: Vec<Duration> = (0..rounds)
        .map(|i| {
            let record = Record::BuyerEnded {
                contract: ContractId([i as u8; 16]),
                provider,
                outcome: Outcome::Delivered,
                at: Timestamp::now(),
                cause: None,
            };
            let t = Instant::now();
            store.commit(&[record]).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    pct(&times, 0.5)
}

/// Reads utime + stime of a process from its `/proc/<pid>/stat`, in seconds.
fn proc_cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Sockets this process has open (one per TCP connection or listener).
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits until the number of open sockets has not changed for two seconds, or
/// `limit` has passed. Returns the count and whether it settled.
async fn settle_sockets(limit: Duration) -> (usize, bool) {
    let deadline = Instant::now() + limit;
    let mut last = sockets();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sockets();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(2) {
            return (now, true);
        }
    }
    (last, false)
}

/// User + system CPU time of this process, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    proc_cpu_seconds("/proc/self/stat")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-provider") {
        serve_provider(Path::new(&args[i + 1]));
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let s = settings();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "rear_e2e ({}): fsync baseline, one small Store::commit: p50 {}",
        if s.full { "bench" } else { "smoke" },
        ms(fsync_baseline(if s.full { 50 } else { 5 }))
    );
    rt.block_on(async {
        if s.latency {
            latency(&s, fluidos_core::DEFAULT_OFFER_CACHE_TTL).await;
            latency(&s, Duration::ZERO).await;
        }
        if s.throughput {
            throughput(&s).await;
        }
        if s.lean {
            lean(&s).await;
        }
    });
}
