//! The latency part: sequential buys between one provider and one consumer.

use super::*;

/// Segments of one buy, from the buyer's progress reports.
pub(super) const SEGMENTS: [&str; 5] = [
    "start -> candidates (peers query)",
    "candidates -> ranked (ratings, + ListFlavors RTT when listing)",
    "buying -> persisting (ReserveAndPurchase RTT, provider fsync, verify)",
    "persisting -> persisted (buyer PendingAck fsync)",
    "countersigning -> returned (Countersign RTT, provider fsync, Active)",
];

/// Buys once, timing each segment between progress reports.
pub(super) async fn timed_buy(
    c: &Node,
    req: AcquisitionRequest,
) -> (Duration, [Duration; 5], ContractId) {
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
pub(super) async fn latency(s: &Settings, listing_ttl: Duration) {
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
    print_segments("  ", segments);
    // Both sides hold every timed contract.
    let sold = book_of(&p).await.sold;
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

/// Prints the p50 and p90 of each segment of [`SEGMENTS`].
pub(super) fn print_segments(indent: &str, segments: Vec<Vec<Duration>>) {
    for (name, mut all) in SEGMENTS.iter().zip(segments) {
        all.sort();
        println!(
            "{indent}{name:<70} p50 {:>9}  p90 {:>9}",
            ms(pct(&all, 0.5)),
            ms(pct(&all, 0.9))
        );
    }
}
