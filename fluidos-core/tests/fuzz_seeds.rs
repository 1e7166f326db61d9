//! Writes the seed corpus of the fuzz targets in `fuzz/` (valid encodings for libFuzzer
//! to mutate: CBOR for the workload protocol, transcripts of real view syncs for the
//! view frames). Ignored in normal runs; refresh the seeds with
//! `cargo test -p fluidos-core --test fuzz_seeds -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use automerge::{ObjType, ROOT, ReadDoc};
use fluidos_contracts::{Architecture, ContractId, NodeId, Resources, SecretKey, Timestamp};
use fluidos_core::offload::wire::{WorkloadErrorCode, WorkloadRequest, WorkloadResponse, encode};
use fluidos_core::view::RawTransactable;
use fluidos_core::view::{NodeEntry, NodeKind, SyncError, View, ViewConfig};
use fluidos_core::workload::WorkloadSpec;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// The fuzz target's two nodes: (`me`, `peer`), `me` the compaction leader or not.
fn ids(me_leads: bool) -> (NodeId, NodeId) {
    let a = SecretKey::from_seed(&[1; 32]).node_id();
    let b = SecretKey::from_seed(&[2; 32]).node_id();
    let (small, large) = if a.as_bytes() < b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    if me_leads {
        (small, large)
    } else {
        (large, small)
    }
}

fn entry(cpu: u64) -> NodeEntry {
    let r = Resources {
        cpu_millis: cpu,
        memory_bytes: 8 << 30,
        pods: 10,
        ..Resources::ZERO
    };
    NodeEntry {
        kind: NodeKind::Virtual,
        capacity: r,
        allocatable: r,
        labels: [("zone".to_string(), "edge".to_string())].into(),
        location: None,
        architecture: Architecture::X86_64,
        price_micros_per_hour: Some(100_000),
        currency: Some("EUR".into()),
        carbon_g_per_kwh: None,
        gpu_model: None,
        step: None,
        contracts: vec![],
        usage: Default::default(),
        updated_at: Timestamp(1),
    }
}

/// Syncs a `me` that writes nothing with a `peer` that `act` drives, recording every
/// frame the peer sends as the target's input (mode byte, then length-prefixed frames).
fn transcript(me_leads: bool, act: impl FnOnce(&mut View, NodeId)) -> Vec<u8> {
    let (me, peer) = ids(me_leads);
    let now = Instant::now();
    let mut m = View::new(me, ViewConfig::default());
    let mut p = View::new(peer, ViewConfig::default());
    m.open(peer);
    p.open(me);
    m.connected(&peer, now);
    p.connected(&me, now);
    act(&mut p, me);
    let mut out = vec![u8::from(me_leads)];
    for _ in 0..50 {
        let mut moved = false;
        while let Some(t) = p.poll_transmit() {
            moved = true;
            out.extend_from_slice(&u32::try_from(t.bytes.len()).unwrap().to_le_bytes());
            out.extend_from_slice(&t.bytes);
            let _ = m.handle_message(&peer, &t.bytes, now);
        }
        while let Some(t) = m.poll_transmit() {
            moved = true;
            let _ = p.handle_message(&me, &t.bytes, now);
        }
        if !moved {
            break;
        }
    }
    out
}

/// Feeds a transcript to a fresh `me` as the fuzz target does: the view it ends with,
/// and the errors on the way.
fn replay(input: &[u8]) -> (View, Vec<SyncError>) {
    let (me, peer) = ids(input[0] == 1);
    let now = Instant::now();
    let mut view = View::new(me, ViewConfig::default());
    view.open(peer);
    view.connected(&peer, now);
    let mut rest = &input[1..];
    let mut errors = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let (frame, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
        rest = tail;
        if let Err(e) = view.handle_message(&peer, frame, now) {
            errors.push(e);
        }
        while view.poll_transmit().is_some() {}
    }
    (view, errors)
}

fn spec() -> WorkloadSpec {
    WorkloadSpec::from_toml(
        "name = \"seed\"\nreplicas = 1\n[run]\ncommand = \"/bin/true\"\n[requests]\ncpu = \"500m\"\nmemory = \"64MiB\"\n",
    )
    .unwrap()
}

#[test]
#[ignore = "writes fuzz/seeds; run explicitly"]
fn write_fuzz_seeds() {
    // The workload protocol: each request and response kind.
    let reqs = [
        WorkloadRequest::Start {
            contract: ContractId([7; 16]),
            workload: "w-1".into(),
            replica: 0,
            spec: spec().to_json(),
        },
        WorkloadRequest::Stop {
            workload: "w-1".into(),
            replica: 0,
        },
        WorkloadRequest::Logs {
            workload: "w-1".into(),
            replica: 0,
            tail: 4096,
        },
    ];
    for (i, r) in reqs.iter().enumerate() {
        write(
            "workload_wire",
            &format!("request-{i}"),
            &[&[0][..], &encode(r)].concat(),
        );
    }
    let resps = [
        WorkloadResponse::Started {
            state: "running".into(),
        },
        WorkloadResponse::Stopped,
        WorkloadResponse::Logs {
            data: "hello\n".into(),
            truncated: true,
        },
        WorkloadResponse::error(WorkloadErrorCode::OverQuota, "seed"),
    ];
    for (i, r) in resps.iter().enumerate() {
        write(
            "workload_wire",
            &format!("response-{i}"),
            &[&[1][..], &encode(r)].concat(),
        );
    }

    // The view: a provider peer showing its virtual node and hosting a workload of its
    // own on this node, in both leadership roles.
    for me_leads in [true, false] {
        let t = transcript(me_leads, |p, me| {
            p.set_entry_for(&me, Some(entry(4000))).unwrap();
            let id = p.add_workload(spec(), Timestamp(10)).unwrap();
            p.place(&id, 0, me, Timestamp(11)).unwrap();
        });
        // Replayed into a fresh node, the frames alone carry the peer's workload.
        let (view, errors) = replay(&t);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(view.workloads().len(), 1);
        write(
            "view_sync",
            &format!("placed-lead{}", u8::from(me_leads)),
            &t,
        );
    }
    // Forgeries the ownership check refuses: this node's own entry, and a workload in
    // this node's name.
    let t = transcript(false, |p, me| {
        let key = me.to_did_key();
        p.danger_raw_write(&me, |tx| {
            let (_, nodes) = tx.get(ROOT, "nodes")?.unwrap();
            let mine = tx.put_object(&nodes, key.as_str(), ObjType::Map)?;
            tx.put(&mine, "kind", "physical")?;
            Ok(())
        })
        .unwrap();
    });
    assert!(matches!(replay(&t).1[..], [SyncError::Rejected { .. }, ..]));
    write("view_sync", "forged-entry", &t);
    let t = transcript(true, |p, me| {
        let key = me.to_did_key();
        p.danger_raw_write(&me, |tx| {
            let (_, w) = tx.get(ROOT, "workloads")?.unwrap();
            let mine = tx.put_object(&w, key.as_str(), ObjType::Map)?;
            tx.put_object(&mine, "w-forged", ObjType::Map)?;
            Ok(())
        })
        .unwrap();
    });
    assert!(matches!(replay(&t).1[..], [SyncError::Rejected { .. }, ..]));
    write("view_sync", "forged-workload", &t);
    // A compaction by the peer when it leads: a snapshot frame.
    let t = transcript(false, |p, me| {
        p.set_entry_for(&me, Some(entry(2000))).unwrap();
        assert!(p.compact(&me), "the peer leads");
    });
    let (view, errors) = replay(&t);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        view.epoch(&ids(false).1),
        Some(1),
        "the snapshot was adopted"
    );
    write("view_sync", "snapshot", &t);
}
