//! The throughput part: one provider, many buyer nodes in this process.

use super::*;

#[derive(Default)]
struct Tally {
    won: Vec<(ContractId, Resources)>,
    /// Failed buys by the first reason's code.
    lost: BTreeMap<String, usize>,
}

fn reason(e: &BuyError) -> String {
    match e {
        BuyError::Failed(f) => failure_reason(f),
        other => other.to_string(),
    }
}

/// A failed acquisition, by its first reason's code.
pub(super) fn failure_reason(f: &AcquisitionFailure) -> String {
    match f.reasons.first().map(|(_, why)| why) {
        Some(CandidateFailure::Refused { request, error }) => {
            format!("{request}: {:?}", error.code)
        }
        Some(CandidateFailure::TimedOut { request }) => format!("{request}: timed out"),
        Some(CandidateFailure::Unreachable { request, .. }) => format!("{request}: unreachable"),
        Some(CandidateFailure::InvalidResponse { request, .. }) => {
            format!("{request}: invalid response")
        }
        Some(CandidateFailure::NoSuitableFlavor { .. }) => "no suitable flavor".into(),
        Some(CandidateFailure::Unconfirmed { .. }) => "unconfirmed".into(),
        Some(other) => format!("{other}"),
        None => "no reasons".into(),
    }
}

pub(super) async fn throughput(s: &Settings) {
    let dir = bench_dir("rear-e2e-throughput");
    let mut p = Provider::start(&dir.path().join("p")).await;
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
    report_rate(&p, won.len(), elapsed, cpu, provider_cpu, &latencies);
    println!("  where one buyer's time goes ({sampled_buys} buys):");
    print_segments("    ", segments);
    report_failures(&lost);
    let mut held = BTreeSet::new();
    for b in &buyers {
        for i in b.contracts().await.unwrap() {
            assert_eq!(i.role, ContractRole::Buyer);
            assert_eq!(i.state, ContractState::Active, "{:?}", i.id);
            held.insert(i.id);
        }
    }
    let won_pods: u64 = won.iter().map(|(_, r)| r.pods).sum::<u64>() + warm_ids.len() as u64;
    check_nothing_oversold(&mut p, &won, won_pods, &held).await;
    for b in &buyers {
        b.shutdown().await;
    }
    p.shutdown().await;
}

pub(super) fn throughput_tuning() -> LedgerTuning {
    LedgerTuning {
        // Holds that a failed buy leaves behind lapse quickly, so the final check
        // does not have to wait long for them.
        reservation_ttl_ms: 3_000,
        offer_ttl_ms: 3_000,
        ..LedgerTuning::default()
    }
}

/// Prints the rate, the per-buy latency and the CPU per contract (of each side
/// when the provider runs in its own process).
pub(super) fn report_rate(
    p: &Provider,
    contracts: usize,
    elapsed: Duration,
    cpu: f64,
    provider_cpu: f64,
    sorted_latencies: &[Duration],
) {
    println!(
        "  {} contracts in {:.2} s = {:.0} contracts/s; per buy p50 {} p99 {}; process CPU {:.1} s ({:.0} % of 2 cores)",
        contracts,
        elapsed.as_secs_f64(),
        contracts as f64 / elapsed.as_secs_f64(),
        ms(pct(sorted_latencies, 0.5)),
        ms(pct(sorted_latencies, 0.99)),
        cpu,
        cpu / elapsed.as_secs_f64() / 2.0 * 100.0,
    );
    if contracts == 0 {
        return;
    }
    if let Provider::Child(_) = p {
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

/// Prints the failed buys by reason.
pub(super) fn report_failures(lost: &BTreeMap<String, usize>) {
    let rate_limited: usize = lost
        .iter()
        .filter(|(k, _)| k.contains("RateLimited"))
        .map(|(_, v)| v)
        .sum();
    println!(
        "  failed buys: {} (RateLimited {rate_limited}) {lost:?}",
        lost.values().sum::<usize>()
    );
}

/// Nothing oversold: once the holds that failed buys left have lapsed, the
/// provider's committed capacity fits its capacity and equals the sum of its
/// active contracts and what the buyers were sold (`won_pods`, warm-up included),
/// and the provider holds exactly the contracts the buyers hold (`held`).
pub(super) async fn check_nothing_oversold(
    p: &mut Provider,
    won: &[(ContractId, Resources)],
    won_pods: u64,
    held: &BTreeSet<ContractId>,
) {
    let lapse = Instant::now() + Duration::from_secs(15);
    let book = loop {
        let book = p.book().await;
        if book.reservations == 0 || Instant::now() > lapse {
            break book;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let won_ids: BTreeSet<ContractId> = won.iter().map(|(id, _)| *id).collect();
    assert_eq!(book.reservations, 0, "holds lapsed");
    assert!(book.committed.fits_within(&book.capacity), "not oversold");
    assert_eq!(
        book.committed.pods, book.sold_pods,
        "committed == active contracts"
    );
    assert_eq!(
        book.sold_pods, won_pods,
        "committed == what buyers were sold"
    );
    assert_eq!(
        &book.sold, held,
        "provider and buyers hold the same contracts"
    );
    assert!(won_ids.is_subset(&book.sold));
    println!(
        "  check: provider holds {} active contracts = buyers hold {}; committed {} pods of {}; oversold: none",
        book.sold.len(),
        held.len(),
        book.committed.pods,
        book.capacity.pods
    );
}
