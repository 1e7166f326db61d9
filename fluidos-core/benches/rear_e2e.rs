//! REAR end to end between real [`Node`]s over loopback TCP: latency of one buy,
//! and the durable contracts per second one provider completes for many buyers.
//!
//! Run with `cargo bench -p fluidos-core --bench rear_e2e` (release profile).
//! Run only one part with `-- latency` or `-- throughput`. Environment knobs:
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
//!   contracts, and the provider and the buyers hold the same set of contracts.
//!
//! Both run on a two-worker tokio runtime (the target machine has two cores), with
//! the data directories on the data disk under `target/`, not a tmpfs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp};
use fluidos_core::buyer::{AcquisitionRequest, CandidateFailure, Outcome, Phase};
use fluidos_core::host::OfferConfig;
use fluidos_core::store::{Record, Store};
use fluidos_core::{BuyError, BuyProgress, ContractRole, ContractState, LedgerTuning, Node, Roles};

const GIB: u64 = 1 << 30;
const PODS: u64 = 1_000_000;
const WARMUP: usize = 20;

struct Settings {
    full: bool,
    latency: bool,
    throughput: bool,
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
            };
            let t = Instant::now();
            store.commit(&[record]).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    pct(&times, 0.5)
}

// ----- latency ---------------------------------------------------------------------

/// Segments of one buy, from the buyer's progress reports.
const SEGMENTS: [&str; 5] = [
    "start -> candidates (peers query)",
    "candidates -> ranked (ratings, + ListFlavors RTT when listing)",
    "buying -> persisting (ReserveAndPurchase RTT, provider fsync, verify)",
    "persisting -> persisted (buyer PendingAck fsync)",
    "countersigning -> returned (Countersign RTT, provider fsync, Active)",
];

/// Buys once, timing each segment between progress reports.
async fn timed_buy(c: &Node, req: AcquisitionRequest) -> (Duration, [Duration; 5], ContractId) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BuyProgress>(32);
    let stamps = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(p) = rx.recv().await {
            out.push((Instant::now(), p));
        }
        out
    });
    let start = Instant::now();
    let contract = c.buy(req, Some(tx)).await.expect("buy");
    let end = Instant::now();
    let stamps = stamps.await.unwrap();
    let at = |want: &dyn Fn(&BuyProgress) -> bool| {
        stamps
            .iter()
            .find(|(_, p)| want(p))
            .map(|(t, _)| *t)
            .expect("every phase is reported")
    };
    let candidates = at(&|p| matches!(p, BuyProgress::Candidates(_)));
    let ranked = at(&|p| matches!(p, BuyProgress::Phase(Phase::Ranked { .. })));
    let buying = at(&|p| matches!(p, BuyProgress::Phase(Phase::Buying { .. })));
    let persisting = at(&|p| matches!(p, BuyProgress::Phase(Phase::Persisting { .. })));
    let persisted = at(&|p| matches!(p, BuyProgress::Persisted(_)));
    let countersigning = at(&|p| matches!(p, BuyProgress::Phase(Phase::Countersigning { .. })));
    let seg = [
        candidates - start,
        ranked - candidates,
        persisting - buying,
        persisted - persisting,
        end.saturating_duration_since(countersigning),
    ];
    (end - start, seg, contract.id())
}

/// Sequential buys; `listing_ttl` zero lists the provider before every buy.
async fn latency(s: &Settings, listing_ttl: Duration) {
    let dir = bench_dir("rear-e2e-latency");
    let p = provider(&dir.path().join("p"), LedgerTuning::default()).await;
    let c = consumer_listing(&dir.path().join("c"), &p.listen_addrs().await, listing_ttl).await;
    wait_to_see(&c, p.node_id()).await;
    // Contracts outlive the run so both sides can be compared afterwards.
    let req = one_pod(600_000);
    for _ in 0..WARMUP {
        c.buy(req.clone(), None).await.expect("warm-up buy");
    }
    let mut totals = Vec::with_capacity(s.n);
    let mut segments: Vec<Vec<Duration>> = vec![Vec::with_capacity(s.n); SEGMENTS.len()];
    let mut ids = BTreeSet::new();
    let cpu0 = cpu_seconds();
    let wall = Instant::now();
    for _ in 0..s.n {
        let (total, seg, id) = timed_buy(&c, req.clone()).await;
        totals.push(total);
        for (all, d) in segments.iter_mut().zip(seg) {
            all.push(d);
        }
        ids.insert(id);
    }
    let wall = wall.elapsed();
    let cpu = cpu_seconds() - cpu0;
    totals.sort();
    println!(
        "latency ({}): {} sequential buys of pods:1 after {WARMUP} warm-up, {:.1} s",
        if listing_ttl.is_zero() {
            "listing before every buy"
        } else {
            "listing reused"
        },
        s.n,
        wall.as_secs_f64()
    );
    println!(
        "  end to end   p50 {}  p90 {}  p99 {}  max {}  mean {}",
        ms(pct(&totals, 0.5)),
        ms(pct(&totals, 0.9)),
        ms(pct(&totals, 0.99)),
        ms(*totals.last().unwrap()),
        ms(wall / s.n as u32),
    );
    println!(
        "  process CPU per buy (both nodes): {:.0} µs",
        cpu * 1e6 / s.n as f64
    );
    for (name, mut all) in SEGMENTS.iter().zip(segments) {
        all.sort();
        println!(
            "  {name:<70} p50 {:>9}  p90 {:>9}",
            ms(pct(&all, 0.5)),
            ms(pct(&all, 0.9))
        );
    }
    // Both sides hold every timed contract.
    let sold: BTreeSet<ContractId> = p
        .contracts()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.role == ContractRole::Provider && i.state == ContractState::Active)
        .map(|i| i.id)
        .collect();
    assert!(ids.is_subset(&sold), "the provider holds every contract");
    assert_eq!(sold.len(), s.n + WARMUP);
    // The buyer writes "acknowledged" behind; a clean shutdown still makes every
    // contract durable as active.
    c.shutdown().await;
    let c = consumer(&dir.path().join("c"), &p.listen_addrs().await).await;
    let bought = c.contracts().await.unwrap();
    assert_eq!(bought.len(), s.n + WARMUP);
    assert!(bought.iter().all(|i| i.state == ContractState::Active));
    c.shutdown().await;
    p.shutdown().await;
}

// ----- throughput ------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    won: Vec<(ContractId, Resources)>,
    /// Failed buys by the first reason's code.
    lost: BTreeMap<String, usize>,
}

fn reason(e: &BuyError) -> String {
    match e {
        BuyError::Failed(f) => match f.reasons.first().map(|(_, why)| why) {
            Some(CandidateFailure::Refused { request, error }) => {
                format!("{request}: {:?}", error.code)
            }
            Some(CandidateFailure::TimedOut { request }) => format!("{request}: timed out"),
            Some(CandidateFailure::Unreachable { request, .. }) => {
                format!("{request}: unreachable")
            }
            Some(CandidateFailure::InvalidResponse { request, .. }) => {
                format!("{request}: invalid response")
            }
            Some(CandidateFailure::NoSuitableFlavor { .. }) => "no suitable flavor".into(),
            Some(CandidateFailure::Unconfirmed { .. }) => "unconfirmed".into(),
            Some(other) => format!("{other}"),
            None => "no reasons".into(),
        },
        other => other.to_string(),
    }
}

async fn throughput(s: &Settings) {
    let dir = bench_dir("rear-e2e-throughput");
    let tuning = throughput_tuning();
    let mut p = if std::env::var("REAR_BENCH_SPLIT").is_ok_and(|v| v == "1") {
        Provider::Child(ChildProvider::spawn(&dir.path().join("p")))
    } else {
        Provider::Here(provider(&dir.path().join("p"), tuning).await)
    };
    let p_addrs = p.listen_addrs().await;
    let mut buyers = Vec::with_capacity(s.buyers);
    let setup = Instant::now();
    // `REAR_BENCH_BUYER_DIR` puts the buyers' data elsewhere (a tmpfs, to see what
    // their fsyncs cost the shared disk); the provider's stays on the data disk.
    let buyer_base = std::env::var_os("REAR_BENCH_BUYER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    let buyer_dir = tempfile::Builder::new()
        .prefix("rear-e2e-buyers")
        .tempdir_in(&buyer_base)
        .unwrap();
    for i in 0..s.buyers {
        buyers.push(consumer(&buyer_dir.path().join(format!("b{i}")), &p_addrs).await);
    }
    for b in &buyers {
        wait_to_see(b, p.node_id()).await;
    }
    println!(
        "throughput: {} buyers bound and connected in {:.1} s",
        s.buyers,
        setup.elapsed().as_secs_f64()
    );
    // Every node runs Kademlia in server mode; each buyer's automatic bootstrap
    // learns the other buyers from the provider and dials them, so the buyers
    // form a mesh. Let that settle before measuring.
    let settle = Instant::now();
    let (sockets, stable) = settle_sockets(Duration::from_secs(40)).await;
    println!(
        "  Kademlia mesh: {sockets} sockets open in this process after {:.1} s{}",
        settle.elapsed().as_secs_f64(),
        if stable { "" } else { " (still changing)" }
    );
    // Warm every connection with one buy each.
    let warm =
        futures::future::join_all(buyers.iter().map(|b| b.buy(one_pod(600_000), None))).await;
    let mut warm_ids = BTreeSet::new();
    for r in warm {
        warm_ids.insert(r.expect("warm-up buy").id());
    }
    let cpu0 = cpu_seconds();
    let provider_cpu0 = p.cpu_seconds();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(s.secs);
    // The first buyer times each segment of its buys: where the time goes under load.
    let sampler = buyers[0].clone();
    let sampled = tokio::spawn(async move {
        let mut segments: Vec<Vec<Duration>> = vec![Vec::new(); SEGMENTS.len()];
        let mut ids = Vec::new();
        while Instant::now() < deadline {
            let (_, seg, id) = timed_buy(&sampler, one_pod(600_000)).await;
            for (all, d) in segments.iter_mut().zip(seg) {
                all.push(d);
            }
            ids.push(id);
        }
        (segments, ids)
    });
    let tasks: Vec<_> = buyers[1..]
        .iter()
        .map(|b| {
            let b = b.clone();
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    match b.buy(one_pod(600_000), None).await {
                        Ok(c) => {
                            latencies.push(began.elapsed());
                            t.won.push((c.id(), c.terms().partition));
                        }
                        Err(e) => *t.lost.entry(reason(&e)).or_default() += 1,
                    }
                }
                (t, latencies)
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for task in tasks {
        let (t, l) = task.await.unwrap();
        won.extend(t.won);
        for (k, v) in t.lost {
            *lost.entry(k).or_default() += v;
        }
        latencies.extend(l);
    }
    let (segments, sampled_ids) = sampled.await.unwrap();
    let sampled_buys = sampled_ids.len();
    let pod = Resources {
        pods: 1,
        ..Resources::ZERO
    };
    won.extend(sampled_ids.into_iter().map(|id| (id, pod)));
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let provider_cpu = p.cpu_seconds() - provider_cpu0;
    latencies.sort();
    let contracts = won.len();
    println!(
        "  {} contracts in {:.2} s = {:.0} contracts/s; per buy p50 {} p99 {}; process CPU {:.1} s ({:.0} % of 2 cores)",
        contracts,
        elapsed.as_secs_f64(),
        contracts as f64 / elapsed.as_secs_f64(),
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.99)),
        cpu,
        cpu / elapsed.as_secs_f64() / 2.0 * 100.0,
    );
    if !won.is_empty() {
        if let Provider::Child(_) = &p {
            // Buyers here, the provider in its own process: the CPU of each side.
            println!(
                "  CPU per contract: provider process {:.0} µs ({:.0} % of 2 cores), buyers' process {:.0} µs, together {:.0} µs",
                provider_cpu * 1e6 / contracts as f64,
                provider_cpu / elapsed.as_secs_f64() / 2.0 * 100.0,
                cpu * 1e6 / contracts as f64,
                (cpu + provider_cpu) * 1e6 / contracts as f64,
            );
        } else {
            println!("  CPU per contract: {:.0} µs", cpu * 1e6 / contracts as f64);
        }
    }
    println!("  where one buyer's time goes ({sampled_buys} buys):");
    for (name, mut all) in SEGMENTS.iter().zip(segments) {
        all.sort();
        println!(
            "    {name:<70} p50 {:>9}  p90 {:>9}",
            ms(pct(&all, 0.5)),
            ms(pct(&all, 0.9))
        );
    }
    let rate_limited: usize = lost
        .iter()
        .filter(|(k, _)| k.contains("RateLimited"))
        .map(|(_, v)| v)
        .sum();
    println!(
        "  failed buys: {} (RateLimited {rate_limited}) {lost:?}",
        lost.values().sum::<usize>()
    );

    // Nothing oversold. Failed buys may have left holds: wait for them to lapse.
    let lapse = Instant::now() + Duration::from_secs(15);
    let book = loop {
        let book = p.book().await;
        if book.reservations == 0 || Instant::now() > lapse {
            break book;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, sold_ids, sum_pods) = (&book, book.sold.clone(), book.sold_pods);
    let mut held = BTreeSet::new();
    for b in &buyers {
        for i in b.contracts().await.unwrap() {
            assert_eq!(i.role, ContractRole::Buyer);
            assert_eq!(i.state, ContractState::Active, "{:?}", i.id);
            held.insert(i.id);
        }
    }
    let won_ids: BTreeSet<ContractId> = won.iter().map(|(id, _)| *id).collect();
    let won_pods: u64 = won.iter().map(|(_, r)| r.pods).sum::<u64>() + warm_ids.len() as u64;
    assert_eq!(status.reservations, 0, "holds lapsed");
    assert!(
        status.committed.fits_within(&status.capacity),
        "not oversold"
    );
    assert_eq!(
        status.committed.pods, sum_pods,
        "committed == active contracts"
    );
    assert_eq!(sum_pods, won_pods, "committed == what buyers were sold");
    assert_eq!(
        sold_ids, held,
        "provider and buyers hold the same contracts"
    );
    assert!(won_ids.is_subset(&sold_ids));
    println!(
        "  check: provider holds {} active contracts = buyers hold {}; committed {} pods of {}; oversold: none",
        sold_ids.len(),
        held.len(),
        status.committed.pods,
        status.capacity.pods
    );
    for b in &buyers {
        b.shutdown().await;
    }
    p.shutdown().await;
}

fn throughput_tuning() -> LedgerTuning {
    LedgerTuning {
        // Holds that a failed buy leaves behind lapse quickly, so the final check
        // does not have to wait long for them.
        reservation_ttl_ms: 3_000,
        offer_ttl_ms: 3_000,
        ..LedgerTuning::default()
    }
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

/// What the oversold check needs from the provider.
#[derive(Debug)]
struct Book {
    reservations: usize,
    committed: Resources,
    capacity: Resources,
    sold: BTreeSet<ContractId>,
    sold_pods: u64,
}

async fn book_of(p: &Node) -> Book {
    let st = p.status().await.unwrap();
    let sold: Vec<_> = p
        .contracts()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.role == ContractRole::Provider && i.state == ContractState::Active)
        .collect();
    Book {
        reservations: st.reservations,
        committed: st.committed,
        capacity: st.capacity,
        sold_pods: sold.iter().map(|i| i.partition.pods).sum(),
        sold: sold.iter().map(|i| i.id).collect(),
    }
}

/// The provider of the throughput run: in this process, or (`REAR_BENCH_SPLIT=1`)
/// in a child process of its own, so that each side's CPU can be read apart.
enum Provider {
    Here(Node),
    Child(ChildProvider),
}

impl Provider {
    async fn listen_addrs(&self) -> Vec<libp2p::Multiaddr> {
        match self {
            Provider::Here(p) => p.listen_addrs().await,
            Provider::Child(c) => c.addrs.clone(),
        }
    }

    fn node_id(&self) -> NodeId {
        match self {
            Provider::Here(p) => p.node_id(),
            Provider::Child(c) => c.node,
        }
    }

    fn cpu_seconds(&self) -> f64 {
        match self {
            Provider::Here(_) => 0.0,
            Provider::Child(c) => proc_cpu_seconds(&format!("/proc/{}/stat", c.child.id())),
        }
    }

    async fn book(&mut self) -> Book {
        match self {
            Provider::Here(p) => book_of(p).await,
            Provider::Child(c) => c.book(),
        }
    }

    async fn shutdown(self) {
        match self {
            Provider::Here(p) => p.shutdown().await,
            Provider::Child(mut c) => {
                drop(c.stdin.take());
                let _ = c.child.wait();
            }
        }
    }
}

/// A provider in a child process (this binary with `--serve-provider <dir>`),
/// driven over its standard input and output.
struct ChildProvider {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    addrs: Vec<libp2p::Multiaddr>,
    node: NodeId,
}

impl ChildProvider {
    fn spawn(dir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--serve-provider")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("PROVIDER"), "child said {line:?}");
        let node: NodeId = words.next().unwrap().parse().unwrap();
        let addrs = words.map(|a| a.parse().unwrap()).collect();
        Self {
            child,
            stdin,
            stdout,
            addrs,
            node,
        }
    }

    fn book(&mut self) -> Book {
        use std::io::{BufRead, Write};
        writeln!(self.stdin.as_mut().unwrap(), "book").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        // BOOK <reservations> <committed pods> <capacity pods> <sold pods> <contract id>…
        let mut w = line.split_whitespace();
        assert_eq!(w.next(), Some("BOOK"), "child said {line:?}");
        let mut num = || w.next().unwrap().parse::<u64>().unwrap();
        let (reservations, committed, capacity, sold_pods) = (num(), num(), num(), num());
        let pods = |n: u64| Resources {
            pods: n,
            ..Resources::ZERO
        };
        Book {
            reservations: reservations as usize,
            committed: pods(committed),
            capacity: pods(capacity),
            sold: w.map(|id| id.parse().unwrap()).collect(),
            sold_pods,
        }
    }
}

/// `--serve-provider <dir>`: runs the throughput provider and answers `book`
/// lines on standard input until it closes.
fn serve_provider(dir: &Path) {
    use std::io::BufRead;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = provider(dir, throughput_tuning()).await;
        let addrs: Vec<String> = p
            .listen_addrs()
            .await
            .iter()
            .map(|a| a.to_string())
            .collect();
        println!("PROVIDER {} {}", p.did_key(), addrs.join(" "));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            if line.trim() == "book" {
                let b = book_of(&p).await;
                let ids: Vec<String> = b.sold.iter().map(|id| id.to_string()).collect();
                println!(
                    "BOOK {} {} {} {} {}",
                    b.reservations,
                    b.committed.pods,
                    b.capacity.pods,
                    b.sold_pods,
                    ids.join(" ")
                );
            }
        }
        p.shutdown().await;
    });
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
    });
}
