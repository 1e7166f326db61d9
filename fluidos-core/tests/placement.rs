//! Placement over physical and virtual nodes: filters, ranking, acquire, unschedulable.

#![allow(clippy::unwrap_used)]

use fluidos_contracts::{Architecture, Location, NodeId, Resources, SecretKey, Timestamp};
use fluidos_core::placement::{Decision, Hints, Rejection, place, unschedulable_after};
use fluidos_core::view::{NodeEntry, NodeInfo, NodeKind};
use fluidos_core::workload::WorkloadSpec;

fn node(cpu: u64, price: Option<u64>, country: &str, arch: Architecture) -> NodeInfo {
    let id: NodeId = SecretKey::generate().node_id();
    let cap = Resources {
        cpu_millis: cpu,
        memory_bytes: 4 << 30,
        pods: 10,
        ..Resources::ZERO
    };
    NodeInfo {
        id,
        free: cap,
        entry: NodeEntry {
            kind: if price.is_some() {
                NodeKind::Virtual
            } else {
                NodeKind::Physical
            },
            capacity: cap,
            allocatable: cap,
            labels: [("zone".to_string(), "edge".to_string())].into(),
            location: Some(Location {
                country: country.into(),
                city: None,
                lat_e6: None,
                lon_e6: None,
            }),
            architecture: arch,
            price_micros_per_hour: price,
            currency: price.map(|_| "EUR".to_string()),
            carbon_g_per_kwh: None,
            gpu_model: None,
            step: price.map(|_| Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                ..Resources::ZERO
            }),
            contracts: vec![],
            usage: Default::default(),
            updated_at: Timestamp(0),
        },
    }
}

fn spec(extra: &str) -> WorkloadSpec {
    WorkloadSpec::from_toml(&format!(
        "name = \"w\"\nreplicas = 2\n[run]\ncommand = \"/bin/true\"\n[requests]\ncpu = \"1500m\"\nmemory = \"256MiB\"\n{extra}"
    ))
    .unwrap()
}

#[test]
fn filters_by_hard_constraints_and_explains_each_rejection() {
    let it = node(8000, Some(100_000), "IT", Architecture::X86_64);
    let de = node(8000, Some(50_000), "DE", Architecture::X86_64);
    let arm = node(8000, Some(10_000), "IT", Architecture::Aarch64);
    let small = node(1000, None, "IT", Architecture::X86_64);
    let s = spec("[intent.require]\ncountry = \"IT\"\narchitecture = \"x86_64\"\n");
    let nodes = vec![it.clone(), de.clone(), arm.clone(), small.clone()];
    let d = place(&s, &[0, 1], &nodes, &Hints::default());
    let Decision::Place {
        assignments,
        candidates,
    } = &d
    else {
        panic!("{d}")
    };
    assert!(assignments.iter().all(|a| a.node == it.id));
    let why = |id: NodeId| {
        candidates
            .iter()
            .find(|c| c.node == id)
            .unwrap()
            .rejected
            .clone()
    };
    assert_eq!(why(de.id), vec![Rejection::Country(Some("DE".into()))]);
    assert_eq!(why(arm.id), vec![Rejection::Architecture("aarch64".into())]);
    assert!(matches!(why(small.id)[..], [Rejection::Capacity { .. }]));
    let shown = d.to_string();
    assert!(
        shown.contains("country is DE") && shown.contains("architecture is aarch64"),
        "{shown}"
    );
}

#[test]
fn ranks_by_price_and_spreads_when_asked() {
    let cheap = node(8000, Some(10_000), "IT", Architecture::X86_64);
    let dear = node(8000, Some(90_000), "IT", Architecture::X86_64);
    let nodes = vec![dear.clone(), cheap.clone()];
    let d = place(
        &spec("[[intent.prefer]]\nkind = \"lower_price\"\n"),
        &[0, 1],
        &nodes,
        &Hints::default(),
    );
    let Decision::Place { assignments, .. } = d else {
        panic!()
    };
    assert!(
        assignments.iter().all(|a| a.node == cheap.id),
        "both on the cheaper node"
    );

    let d = place(
        &spec(
            "[[intent.prefer]]\nkind = \"lower_price\"\n[[intent.prefer]]\nkind = \"spread\"\nweight = 5\n",
        ),
        &[0, 1],
        &nodes,
        &Hints::default(),
    );
    let Decision::Place { assignments, .. } = d else {
        panic!()
    };
    assert_ne!(
        assignments[0].node, assignments[1].node,
        "spread over providers"
    );
}

#[test]
fn lower_latency_prefers_the_node_with_the_shorter_measured_round_trip() {
    let far = node(8000, Some(10_000), "IT", Architecture::X86_64);
    let near = node(8000, Some(10_000), "IT", Architecture::X86_64);
    let nodes = vec![far.clone(), near.clone()];
    let s = spec("[[intent.prefer]]\nkind = \"lower_latency\"\n");
    for (fast, slow) in [(&near, &far), (&far, &near)] {
        let hints = Hints {
            rtt_ms: [(fast.id, 2), (slow.id, 80)].into(),
            ..Hints::default()
        };
        let d = place(&s, &[0, 1], &nodes, &hints);
        let Decision::Place { assignments, .. } = d else {
            panic!("{d}")
        };
        assert!(
            assignments.iter().all(|a| a.node == fast.id),
            "both replicas on the node 2 ms away"
        );
    }
}

#[test]
fn acquire_states_exactly_what_is_missing_rounded_to_the_step() {
    // One replica fits on the virtual node; the second does not.
    let mut v = node(2000, Some(10_000), "IT", Architecture::X86_64);
    v.free = Resources {
        cpu_millis: 2000,
        memory_bytes: 4 << 30,
        pods: 10,
        ..Resources::ZERO
    };
    let d = place(&spec(""), &[0, 1], &[v.clone()], &Hints::default());
    let Decision::Acquire { plan, .. } = &d else {
        panic!("{d}")
    };
    assert_eq!(plan.placed.len(), 1);
    assert_eq!(plan.unplaced, vec![1]);
    // 1.5 CPU rounds up to the 1-CPU step; 256 MiB up to the 1 GiB step.
    assert_eq!(plan.missing.cpu_millis, 2000);
    assert_eq!(plan.missing.memory_bytes, 1 << 30);
    assert_eq!(plan.request.resources, plan.missing);

    let failed = unschedulable_after(d, "no provider offers 2 CPUs");
    let Decision::Unschedulable { reason, .. } = &failed else {
        panic!()
    };
    assert!(reason.contains("no provider offers 2 CPUs"), "{reason}");
}

#[test]
fn unschedulable_names_every_rejected_candidate_when_buying_is_off() {
    let a = node(1000, None, "IT", Architecture::X86_64);
    let b = node(8000, Some(1), "FR", Architecture::X86_64);
    let d = place(
        &spec("[intent]\nacquire = false\n[intent.require]\ncountry = \"IT\"\n"),
        &[0],
        &[a.clone(), b.clone()],
        &Hints::default(),
    );
    let Decision::Unschedulable { reason, .. } = &d else {
        panic!("{d}")
    };
    assert!(
        reason.contains(&a.id.short()) && reason.contains(&b.id.short()),
        "{reason}"
    );
    assert!(reason.contains("country is FR"), "{reason}");
}

#[test]
fn a_replica_on_a_virtual_node_takes_a_pod_and_what_is_bought_counts_them() {
    // Room for three replicas' cpu and memory, but the contract holds two pods: two are
    // placed, and the third is bought for with its pod (the provider charges one per
    // replica, so placing it there would only be refused as over quota).
    let mut v = node(8000, Some(10_000), "IT", Architecture::X86_64);
    v.free.pods = 2;
    let s = WorkloadSpec::from_toml(
        "name = \"w\"\nreplicas = 3\n[run]\ncommand = \"/bin/true\"\n[requests]\ncpu = \"100m\"\nmemory = \"64MiB\"\n",
    )
    .unwrap();
    let d = place(&s, &[0, 1, 2], &[v], &Hints::default());
    let Decision::Acquire { plan, .. } = &d else {
        panic!("{d}")
    };
    assert_eq!(plan.placed.len(), 2, "{d}");
    assert_eq!(plan.unplaced, vec![2]);
    assert_eq!(plan.missing.pods, 1);
    // A physical node is not charged pods it does not count.
    let mut p = node(8000, None, "IT", Architecture::X86_64);
    p.free.pods = 0;
    let d = place(&s, &[0, 1, 2], &[p], &Hints::default());
    assert!(matches!(d, Decision::Place { .. }), "{d}");
}
