//! View benchmarks: size after 10,000 lifecycle events, placement over 1,000
//! virtual nodes, one status change through sync.
//!
//! Run: `nice cargo bench -p fluidos-core --no-default-features --bench view`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fluidos_contracts::{Architecture, NodeId, Resources, SecretKey, Timestamp};
use fluidos_core::placement::{Hints, place};
use fluidos_core::view::{
    NodeEntry, NodeInfo, NodeKind, ReplicaState, ReplicaStatus, View, ViewConfig,
};
use fluidos_core::workload::WorkloadSpec;

fn spec(name: &str) -> WorkloadSpec {
    WorkloadSpec::from_toml(&format!(
        "name = \"{name}\"\n[run]\ncommand = \"/bin/true\"\n[requests]\ncpu = \"100m\"\nmemory = \"64MiB\"\n[[intent.prefer]]\nkind = \"lower_price\"\n[[intent.prefer]]\nkind = \"spread\"\n"
    ))
    .unwrap()
}

fn pair(config: ViewConfig) -> (View, View) {
    let (a, b) = (
        SecretKey::generate().node_id(),
        SecretKey::generate().node_id(),
    );
    let (c, p) = if a.as_bytes() < b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut cv = View::new(c, config.clone());
    let mut pv = View::new(p, config);
    cv.open(p);
    pv.open(c);
    let now = Instant::now();
    cv.connected(&p, now);
    pv.connected(&c, now);
    (cv, pv)
}

fn pump(a: &mut View, b: &mut View) {
    let now = Instant::now();
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            let _ = b.handle_message(&a.me(), &t.bytes, now);
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            let _ = a.handle_message(&b.me(), &t.bytes, now);
        }
        if !moved {
            return;
        }
    }
}

fn st(state: ReplicaState, at: u64) -> ReplicaStatus {
    ReplicaStatus {
        state,
        since: Timestamp(at),
        restarts: 0,
        output_tail: String::new(),
    }
}

/// `workloads` workloads × 5 events (add, place, starting, running, exited); the
/// benchmark uses 2,000 of them, 10,000 events.
fn lifecycle(workloads: u64, compact: bool) -> (usize, usize) {
    let config = ViewConfig {
        compact_after_changes: if compact { 2000 } else { u64::MAX },
        retain_ended_ms: 0,
        ..ViewConfig::default()
    };
    let (mut c, mut p) = pair(config);
    let (cid, pid) = (c.me(), p.me());
    for n in 0..workloads {
        let id = c.add_workload(spec("job"), Timestamp(n)).unwrap();
        c.place(&id, 0, pid, Timestamp(n)).unwrap();
        pump(&mut c, &mut p);
        p.set_status(&cid, &id, 0, st(ReplicaState::Starting, n))
            .unwrap();
        p.set_status(&cid, &id, 0, st(ReplicaState::Running, n))
            .unwrap();
        p.set_status(&cid, &id, 0, st(ReplicaState::Exited { code: 0 }, n))
            .unwrap();
        pump(&mut c, &mut p);
        if compact && n % 100 == 99 {
            c.age_out(Timestamp(n + 1)).unwrap();
        }
    }
    pump(&mut c, &mut p);
    (c.saved_size(), p.saved_size())
}

fn virtual_nodes(n: usize) -> Vec<NodeInfo> {
    (0..n)
        .map(|i| {
            let cap = Resources {
                cpu_millis: 1000 + (i as u64 % 7) * 500,
                memory_bytes: 4 << 30,
                pods: 10,
                ..Resources::ZERO
            };
            NodeInfo {
                id: SecretKey::generate().node_id(),
                free: cap,
                entry: NodeEntry {
                    kind: NodeKind::Virtual,
                    capacity: cap,
                    allocatable: cap,
                    labels: Default::default(),
                    location: None,
                    architecture: Architecture::X86_64,
                    price_micros_per_hour: Some(10_000 + (i as u64 * 37) % 1000),
                    currency: Some("EUR".into()),
                    carbon_g_per_kwh: None,
                    gpu_model: None,
                    step: None,
                    contracts: vec![],
                    usage: Default::default(),
                    updated_at: Timestamp(0),
                },
            }
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let workloads = std::env::var("VIEW_BENCH_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let started = Instant::now();
    let (before_c, before_p) = lifecycle(workloads, false);
    let plain = started.elapsed();
    let (after_c, after_p) = lifecycle(workloads, true);
    let compacted = started.elapsed() - plain;
    println!(
        "{workloads} workloads ({} events): {plain:.1?} without compaction, {compacted:.1?} with",
        workloads * 5
    );
    println!(
        "view size after 10,000 lifecycle events: without compaction/aging consumer {before_c} B, provider {before_p} B; with compaction+aging consumer {after_c} B, provider {after_p} B"
    );

    let nodes = virtual_nodes(1000);
    let s = spec("web");
    c.bench_function("placement, 1 replica over 1,000 virtual nodes", |b| {
        b.iter(|| black_box(place(&s, &[0], black_box(&nodes), &Hints::default())))
    });

    let (mut cv, mut pv) = pair(ViewConfig::default());
    let (cid, pid): (NodeId, NodeId) = (cv.me(), pv.me());
    let id = cv.add_workload(spec("one"), Timestamp(0)).unwrap();
    cv.place(&id, 0, pid, Timestamp(0)).unwrap();
    pump(&mut cv, &mut pv);
    let mut t = 1u64;
    c.bench_function("one status change: generate + apply sync message", |b| {
        b.iter(|| {
            t += 1;
            pv.set_status(&cid, &id, 0, st(ReplicaState::Running, t))
                .unwrap();
            let frame = pv.poll_transmit().unwrap();
            cv.handle_message(&pid, &frame.bytes, Instant::now())
                .unwrap();
            // Drain the acknowledgements so the next round starts clean.
            pump(&mut cv, &mut pv);
        })
    });
}

criterion_group! {
    name = view;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(view);
