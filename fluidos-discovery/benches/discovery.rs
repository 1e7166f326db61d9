//! Discovery benchmarks (no criterion: each measures whole-system latencies).
//!
//! ```text
//! cargo bench -p fluidos-discovery --bench discovery            # all three
//! cargo bench -p fluidos-discovery --bench discovery -- catalog # one: catalog | mdns | fifty
//! ```
//!
//! - `catalog`: time from `Discovery::spawn` of a new node to its first candidate, over
//!   a loopback catalog whose root is already running (and until the root lists it);
//!   median of 25 runs.
//! - `mdns`: two probes in two network namespaces joined by a veth pair, mDNS only;
//!   time from each probe's start to its first candidate; median of 20 runs. Needs root.
//! - `fifty`: 50 catalog nodes in one process on loopback TCP, one shared catalog
//!   address; time until every node lists the 49 others; then a 51st node joins, and
//!   the time from its `spawn` until every one of the 50 lists it; median of 3 runs,
//!   once with a refresh every 2 s and once every 30 s (the default; the push alone
//!   must then carry the news). `FIFTY_REFRESH_S=2,30` chooses the intervals.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use fluidos_contracts::SecretKey;
use fluidos_discovery::libp2p::multiaddr::Protocol;
use fluidos_discovery::{CatalogConfig, Discovery, DiscoveryConfig, DiscoveryHandle};

fn config() -> DiscoveryConfig {
    DiscoveryConfig::default()
        .with_advert_ttl(Duration::from_secs(30), Duration::from_secs(10))
        .with_refresh_interval(Duration::from_secs(2))
}

/// The `fifty` configuration: `config()` with the given refresh interval.
fn fifty_config(refresh: Duration) -> DiscoveryConfig {
    config().with_refresh_interval(refresh)
}

fn lab(bootstrap: Vec<fluidos_discovery::libp2p::Multiaddr>) -> CatalogConfig {
    CatalogConfig::new("bench".parse().unwrap(), bootstrap)
}

async fn spawn(cfg: DiscoveryConfig) -> DiscoveryHandle {
    spawn_with(&SecretKey::generate(), cfg).await
}

async fn spawn_with(key: &SecretKey, cfg: DiscoveryConfig) -> DiscoveryHandle {
    let (h, _inbound) = Discovery::spawn(key, cfg).await.unwrap();
    h
}

async fn catalog_addr(h: &DiscoveryHandle) -> fluidos_discovery::libp2p::Multiaddr {
    h.listen_addrs().await.unwrap()[0]
        .clone()
        .with(Protocol::P2p(h.peer_id()))
}

/// Waits (bounded) until `h` lists at least `n` candidates.
async fn until_candidates(h: &DiscoveryHandle, n: usize, limit: Duration) -> bool {
    let mut updates = h.candidate_updates();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if h.candidates().await.unwrap().len() >= n {
            return true;
        }
        if tokio::time::timeout_at(deadline, updates.changed())
            .await
            .is_err()
        {
            return false;
        }
    }
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        println!("{name}: no samples");
        return;
    }
    let median = ms[ms.len() / 2];
    println!(
        "{name}: n={} median={median:.1} ms min={:.1} ms max={:.1} ms",
        ms.len(),
        ms[0],
        ms[ms.len() - 1]
    );
}

async fn bench_catalog() {
    let root = spawn(config().with_catalog(lab(vec![]))).await;
    let addr = catalog_addr(&root).await;
    let (mut joiner_sees, mut root_sees) = (Vec::new(), Vec::new());
    for i in 0..25 {
        let t0 = Instant::now();
        let node = spawn(config().with_catalog(lab(vec![addr.clone()]))).await;
        assert!(
            until_candidates(&node, 1, Duration::from_secs(20)).await,
            "run {i}: no candidate"
        );
        joiner_sees.push(t0.elapsed().as_secs_f64() * 1e3);
        let mut updates = root.candidate_updates();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !root
            .candidates()
            .await
            .unwrap()
            .iter()
            .any(|c| c.node == node.node_id())
        {
            if tokio::time::timeout_at(deadline, updates.changed())
                .await
                .is_err()
            {
                panic!("run {i}: the root never listed the joiner");
            }
        }
        root_sees.push(t0.elapsed().as_secs_f64() * 1e3);
        node.danger_kill().await.unwrap();
    }
    // The first run includes one-off costs (first TCP listener, first Noise keys).
    summary(
        "catalog: spawn -> first candidate (joiner lists root)",
        joiner_sees,
    );
    summary("catalog: spawn -> root lists the joiner", root_sees);
    root.shutdown().await.unwrap();
}

fn bench_mdns() {
    if let Some(why) = netns::unavailable() {
        println!("mdns: skipped ({why})");
        return;
    }
    let pair = netns::NetnsPair::create("b").unwrap();
    let bin = env!("CARGO_BIN_EXE_fluidos-discovery-probe");
    let args = [
        "--mdns",
        "--expect",
        "1",
        "--timeout-ms",
        "10000",
        "--linger-ms",
        "1500",
    ];
    let mut samples = Vec::new();
    let mut failures = 0;
    for _ in 0..20 {
        let a = pair.spawn(&pair.a, bin, &args);
        let b = pair.spawn(&pair.b, bin, &args);
        for out in [
            netns::collect(a, Duration::from_secs(15)),
            netns::collect(b, Duration::from_secs(15)),
        ] {
            match netns::parse_probe(&out).1.first() {
                Some((_, ms)) => samples.push(*ms as f64),
                None => {
                    failures += 1;
                    eprintln!("mdns: a probe found nothing:\n{out}");
                }
            }
        }
    }
    summary("mdns (netns): probe start -> first candidate", samples);
    println!("mdns: {failures} probe runs without a candidate");
}

/// CPU time of this process so far (user + system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which ends with the last ')').
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let field = |n: usize| -> u64 {
        // `rest` starts at field 3 (state); some fields before utime can be negative,
        // so the fields are counted, not filtered.
        rest.split_whitespace()
            .nth(n - 3)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of proc(5)'s stat.
    let ticks = field(14) + field(15);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// What 50 converged nodes do when nothing changes: over 10 s, the process's CPU
/// and the sum of each node's counters.
async fn steady_state(nodes: &[DiscoveryHandle]) {
    async fn totals(nodes: &[DiscoveryHandle]) -> [u64; 6] {
        let mut t = [0u64; 6];
        for n in nodes {
            let s = n.stats().await.unwrap();
            t[0] += s.connections_established;
            t[1] += s.adverts_accepted;
            t[2] += s.members_listed;
            t[3] += s.news_sent;
            t[4] += s.connections as u64;
            t[5] += s.signatures_remembered;
        }
        t
    }
    let window = Duration::from_secs(10);
    let (a, cpu0, t0) = (totals(nodes).await, process_cpu(), Instant::now());
    tokio::time::sleep(window).await;
    let (b, cpu1, el) = (totals(nodes).await, process_cpu(), t0.elapsed());
    let per_s = |i: usize| (b[i] - a[i]) as f64 / el.as_secs_f64();
    println!(
        "fifty: steady state over {:.1} s: CPU {:.0} % of one core; per second, all 50 nodes: \
         {:.1} connections opened, {:.0} adverts verified and taken, {:.0} members listed, \
         {:.1} news pushed, {:.0} signature checks saved; {} connections open",
        el.as_secs_f64(),
        (cpu1 - cpu0).as_secs_f64() / el.as_secs_f64() * 100.0,
        per_s(0),
        per_s(1),
        per_s(2),
        per_s(3),
        per_s(5),
        b[4]
    );
}

/// Nodes in the `fifty` catalog: 50, or `FIFTY_NODES` (at least 2).
fn fifty_size() -> usize {
    std::env::var("FIFTY_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize)
        .max(2)
}

async fn bench_fifty(refresh: Duration) {
    let config = || fifty_config(refresh);
    let mut runs = Vec::new();
    let mut joins = Vec::new();
    for run in 0..3 {
        let t0 = Instant::now();
        let cpu0 = process_cpu();
        let root = spawn(config().with_catalog(lab(vec![]))).await;
        let addr = catalog_addr(&root).await;
        let mut nodes = vec![root];
        let size = fifty_size();
        for _ in 1..size {
            nodes.push(spawn(config().with_catalog(lab(vec![addr.clone()]))).await);
        }
        let spawned = t0.elapsed();
        let deadline = Instant::now() + Duration::from_secs(120);
        let trace = std::env::var_os("FIFTY_TRACE").is_some();
        let mut next_trace = Instant::now();
        loop {
            if trace && Instant::now() >= next_trace {
                next_trace += Duration::from_millis(500);
                let mut known = 0;
                let mut short = 0;
                for n in &nodes {
                    let c = n.candidates().await.unwrap().len().min(size - 1);
                    known += c;
                    short += usize::from(c < size - 1);
                }
                println!(
                    "fifty: {:>6} ms: {known} of {} listings, {short} nodes short",
                    t0.elapsed().as_millis(),
                    size * (size - 1)
                );
            }
            let mut all = true;
            for n in &nodes {
                if n.candidates().await.unwrap().len() < size - 1 {
                    all = false;
                    break;
                }
            }
            if all {
                break;
            }
            if Instant::now() >= deadline {
                let mut counts = Vec::new();
                for n in &nodes {
                    counts.push(n.candidates().await.unwrap().len());
                }
                panic!("run {run}: not everyone saw everyone in 120 s: {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        println!(
            "fifty: run {run}: all {size} see {} others after {ms:.0} ms (spawning took {} ms; \
             CPU {:.0} % of one core meanwhile)",
            size - 1,
            spawned.as_millis(),
            (process_cpu() - cpu0).as_secs_f64() / (ms / 1e3) * 100.0
        );
        runs.push(ms);
        let mut t = [0u64; 5];
        for n in &nodes {
            let s = n.stats().await.unwrap();
            for (i, v) in [
                s.member_searches,
                s.advert_lookups,
                s.kad_requests_served,
                s.news_sent,
                s.signatures_remembered,
            ]
            .into_iter()
            .enumerate()
            {
                t[i] += v;
            }
        }
        println!(
            "fifty: run {run}: by then, all 50 nodes: {} shard searches, {} advert lookups, \
             {} Kademlia requests answered, {} adverts pushed, {} signature checks saved",
            t[0], t[1], t[2], t[3], t[4]
        );
        steady_state(&nodes).await;

        // A new member: until every one of the 50 lists it. Only the nodes that do
        // not list it yet are asked (asking all 50 every 10 ms is itself a load), all
        // at once: on a saturated machine each answer takes a while, and asking them
        // in turn would add those waits up.
        let key = SecretKey::generate();
        let t1 = Instant::now();
        let late = spawn_with(&key, config().with_catalog(lab(vec![addr.clone()]))).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pending: Vec<usize> = (0..nodes.len()).collect();
        let mut first = Vec::new();
        while !pending.is_empty() {
            let lists = futures::future::join_all(pending.iter().map(|i| async {
                let c = nodes[*i].candidates().await.unwrap();
                (*i, c.iter().any(|c| c.node == key.node_id()), t1.elapsed())
            }))
            .await;
            let mut still = Vec::new();
            for (i, listed, at) in lists {
                if listed {
                    first.push(at.as_secs_f64() * 1e3);
                } else {
                    still.push(i);
                }
            }
            pending = still;
            if Instant::now() >= deadline {
                panic!(
                    "run {run}: {} of 50 do not list the 51st node after 120 s",
                    pending.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        first.sort_by(f64::total_cmp);
        let join_ms = t1.elapsed().as_secs_f64() * 1e3;
        let stats = nodes[0].stats().await.unwrap();
        println!(
            "fifty: run {run}: a 51st node is listed by all 50 after {join_ms:.0} ms \
             (by half of them after {:.0} ms; the root sent {} and took {} pushed adverts in all)",
            first[first.len() / 2],
            stats.news_sent,
            stats.news_taken
        );
        joins.push(join_ms);
        late.danger_kill().await.unwrap();
        for n in nodes {
            n.danger_kill().await.unwrap();
        }
    }
    summary("fifty: first spawn -> every node lists 49 others", runs);
    summary("fifty: 51st node's spawn -> all 50 list it", joins);
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if wants("catalog") {
        rt.block_on(bench_catalog());
    }
    if wants("mdns") {
        bench_mdns();
    }
    if wants("fifty") {
        let secs: Vec<u64> = std::env::var("FIFTY_REFRESH_S")
            .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_else(|_| vec![2, 30]);
        for s in secs {
            println!("fifty: refresh every {s} s");
            rt.block_on(bench_fifty(Duration::from_secs(s)));
        }
    }
}
