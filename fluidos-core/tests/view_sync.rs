//! The replicated view at state-machine level: two parties sync, forge, partition
//! and compact.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use automerge::{ObjType, ROOT, ReadDoc, Value};
use fluidos_contracts::{Architecture, NodeId, Resources, SecretKey, Timestamp};
use fluidos_core::view::{
    NodeEntry, NodeKind, RawTransactable, ReplicaState, ReplicaStatus, SyncError, View, ViewConfig,
    ViewEvent, Violation,
};
use fluidos_core::workload::WorkloadSpec;

fn ids() -> (NodeId, NodeId) {
    let a = SecretKey::generate().node_id();
    let b = SecretKey::generate().node_id();
    // Consumer first, so tests can pick who compacts: the smaller id leads.
    if a.as_bytes() < b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    }
}

fn pair(config: ViewConfig) -> (View, View) {
    let (c, p) = ids();
    let mut cv = View::new(c, config.clone());
    let mut pv = View::new(p, config);
    cv.open(p);
    pv.open(c);
    let now = Instant::now();
    cv.connected(&p, now);
    pv.connected(&c, now);
    (cv, pv)
}

/// Moves frames both ways until neither side has anything to send (bounded).
fn pump(a: &mut View, b: &mut View) -> Vec<SyncError> {
    let mut errors = Vec::new();
    let now = Instant::now();
    for _ in 0..100 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            if let Err(e) = b.handle_message(&a.me(), &t.bytes, now) {
                errors.push(e);
            }
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            if let Err(e) = a.handle_message(&b.me(), &t.bytes, now) {
                errors.push(e);
            }
        }
        if !moved {
            return errors;
        }
    }
    panic!("sync did not settle in 100 rounds");
}

fn spec(name: &str, replicas: u32) -> WorkloadSpec {
    WorkloadSpec::from_toml(&format!(
        "name = \"{name}\"\nreplicas = {replicas}\n[run]\ncommand = \"/bin/true\"\n[requests]\ncpu = \"500m\"\nmemory = \"64MiB\"\n"
    ))
    .unwrap()
}

fn status(state: ReplicaState, at: u64) -> ReplicaStatus {
    ReplicaStatus {
        state,
        since: Timestamp(at),
        restarts: 0,
        output_tail: String::new(),
    }
}

fn entry(kind: NodeKind, cpu: u64) -> NodeEntry {
    let r = Resources {
        cpu_millis: cpu,
        memory_bytes: 8 << 30,
        pods: 10,
        ..Resources::ZERO
    };
    NodeEntry {
        kind,
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

#[test]
fn spec_goes_out_and_status_comes_back() {
    let (mut c, mut p) = pair(ViewConfig::default());
    let (cid, pid) = (c.me(), p.me());
    p.set_entry_for(&cid, Some(entry(NodeKind::Virtual, 4000)))
        .unwrap();
    let id = c.add_workload(spec("hello", 1), Timestamp(10)).unwrap();
    c.place(&id, 0, pid, Timestamp(11)).unwrap();
    assert!(pump(&mut c, &mut p).is_empty());

    // The provider sees the workload placed on it, and the consumer its virtual node.
    let seen = p.workload(&cid, &id).expect("provider sees the workload");
    assert_eq!(seen.record.replicas["0"].node, Some(pid));
    let nodes = c.nodes();
    let v = nodes.iter().find(|n| n.id == pid).expect("virtual node");
    assert_eq!(v.entry.capacity.cpu_millis, 4000);
    assert_eq!(
        v.free.cpu_millis, 3500,
        "the placed replica's request is taken"
    );

    p.set_status(&cid, &id, 0, status(ReplicaState::Running, 12))
        .unwrap();
    assert!(pump(&mut c, &mut p).is_empty());
    let w = c.workload(&cid, &id).unwrap();
    assert_eq!(
        w.record.replicas["0"].status.as_ref().unwrap().state,
        ReplicaState::Running
    );

    let mut exited = status(ReplicaState::Exited { code: 3 }, 13);
    exited.output_tail = "x".repeat(10_000);
    p.set_status(&cid, &id, 0, exited).unwrap();
    assert!(pump(&mut c, &mut p).is_empty());
    let s = c.workload(&cid, &id).unwrap().record.replicas["0"]
        .status
        .clone()
        .unwrap();
    assert_eq!(s.state, ReplicaState::Exited { code: 3 });
    assert_eq!(s.output_tail.len(), ViewConfig::default().max_output_tail);
    assert_eq!(c.heads(&pid), p.heads(&cid));
}

#[test]
fn local_api_refuses_what_it_does_not_own() {
    let (mut c, mut p) = pair(ViewConfig::default());
    let (cid, pid) = (c.me(), p.me());
    let id = c.add_workload(spec("w", 2), Timestamp(1)).unwrap();
    c.place(&id, 0, pid, Timestamp(2)).unwrap();
    // The consumer does not host replica 0 any more.
    assert!(
        c.set_status(&cid, &id, 0, status(ReplicaState::Running, 3))
            .is_err()
    );
    assert!(matches!(
        c.place(&id, 9, pid, Timestamp(2)),
        Err(fluidos_core::view::ViewError::UnknownReplica { .. })
    ));
    let stranger = SecretKey::generate().node_id();
    assert!(matches!(
        c.place(&id, 1, stranger, Timestamp(2)),
        Err(fluidos_core::view::ViewError::UnknownPeer(_))
    ));
    assert!(pump(&mut c, &mut p).is_empty());
    // The provider hosts 0, not 1.
    assert!(
        p.set_status(&cid, &id, 1, status(ReplicaState::Running, 3))
            .is_err()
    );
    p.set_status(&cid, &id, 0, status(ReplicaState::Running, 3))
        .unwrap();
}

fn assert_rejected(errors: &[SyncError], check: impl Fn(&Violation) -> bool) {
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, SyncError::Rejected { violation, .. } if check(violation))),
        "expected a rejection, got {errors:?}"
    );
}

#[test]
fn forged_node_entry_is_rejected_and_leaves_the_view_unchanged() {
    let (mut c, mut p) = pair(ViewConfig::default());
    let cid = c.me();
    c.set_entry_for(&p.me(), Some(entry(NodeKind::Virtual, 1000)))
        .unwrap();
    assert!(pump(&mut c, &mut p).is_empty());
    let before = c.heads(&p.me());
    let nodes_before = c.nodes();

    // The provider rewrites the consumer's own entry in their shared document.
    let key = cid.to_did_key();
    p.danger_raw_write(&cid, |tx| {
        let (_, nodes) = tx.get(ROOT, "nodes")?.unwrap();
        let (_, mine) = tx.get(&nodes, key.as_str())?.unwrap();
        let (_, cap) = tx.get(&mine, "capacity")?.unwrap();
        tx.put(&cap, "cpu_millis", 999_999u64)?;
        Ok(())
    })
    .unwrap();
    let errors = pump(&mut c, &mut p);
    assert_rejected(&errors, |v| matches!(v, Violation::OtherNodeEntry { .. }));
    assert_eq!(
        c.heads(&p.me()),
        before,
        "nothing of the forged message was applied"
    );
    assert_eq!(c.nodes(), nodes_before);
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, ViewEvent::Rejected { .. })));
}

#[test]
fn forged_status_of_a_workload_not_hosted_is_rejected() {
    let (mut c, mut p) = pair(ViewConfig::default());
    let (cid, pid) = (c.me(), p.me());
    // The provider owns a workload placed on the consumer: the consumer hosts it.
    let pw = p.add_workload(spec("theirs", 1), Timestamp(1)).unwrap();
    p.place(&pw, 0, cid, Timestamp(2)).unwrap();
    // The consumer owns one placed on the provider.
    let cw = c.add_workload(spec("mine", 1), Timestamp(1)).unwrap();
    c.place(&cw, 0, pid, Timestamp(2)).unwrap();
    assert!(pump(&mut c, &mut p).is_empty());
    let before = c.heads(&pid);

    // 1. The provider writes the status of its own workload, which the consumer hosts.
    let (pkey, pw2) = (pid.to_did_key(), pw.clone());
    p.danger_raw_write(&cid, |tx| {
        let (_, w) = tx.get(ROOT, "workloads")?.unwrap();
        let (_, om) = tx.get(&w, pkey.as_str())?.unwrap();
        let (_, rec) = tx.get(&om, pw2.as_str())?.unwrap();
        let (_, reps) = tx.get(&rec, "replicas")?.unwrap();
        let (_, r0) = tx.get(&reps, "0")?.unwrap();
        let st = tx.put_object(&r0, "status", ObjType::Map)?;
        tx.put(&st, "state", "running")?;
        tx.put(&st, "since", 5u64)?;
        Ok(())
    })
    .unwrap();
    let errors = pump(&mut c, &mut p);
    assert_rejected(&errors, |v| matches!(v, Violation::OwnerWroteStatus { .. }));
    assert_eq!(c.heads(&pid), before);
    assert!(
        c.workload(&pid, &pw).unwrap().record.replicas["0"]
            .status
            .is_none()
    );

    // 2. A fresh provider state, forging a replica (and its status) under the consumer's workload.
    let (mut c2, mut p2) = pair(ViewConfig::default());
    let (cid, pid) = (c2.me(), p2.me());
    let cw = c2.add_workload(spec("mine", 1), Timestamp(1)).unwrap();
    c2.place(&cw, 0, pid, Timestamp(2)).unwrap();
    assert!(pump(&mut c2, &mut p2).is_empty());
    let before = c2.heads(&pid);
    let (ckey, cw2) = (cid.to_did_key(), cw.clone());
    p2.danger_raw_write(&cid, |tx| {
        let (_, w) = tx.get(ROOT, "workloads")?.unwrap();
        let (_, om) = tx.get(&w, ckey.as_str())?.unwrap();
        let (_, rec) = tx.get(&om, cw2.as_str())?.unwrap();
        let (_, reps) = tx.get(&rec, "replicas")?.unwrap();
        let r5 = tx.put_object(&reps, "5", ObjType::Map)?;
        let st = tx.put_object(&r5, "status", ObjType::Map)?;
        tx.put(&st, "state", "running")?;
        Ok(())
    })
    .unwrap();
    let errors = pump(&mut c2, &mut p2);
    assert_rejected(&errors, |v| matches!(v, Violation::NotOwner { .. }));
    assert_eq!(c2.heads(&pid), before);
    assert_eq!(c2.workload(&cid, &cw).unwrap().record.replicas.len(), 1);
}

#[test]
fn bad_frames_are_typed_errors() {
    let (mut c, p) = pair(ViewConfig {
        max_message_bytes: 64,
        ..ViewConfig::default()
    });
    let now = Instant::now();
    assert!(matches!(
        c.handle_message(&p.me(), &[0u8; 65], now),
        Err(SyncError::TooLarge {
            size: 65,
            limit: 64
        })
    ));
    assert!(matches!(
        c.handle_message(&p.me(), &[1, 0, 0], now),
        Err(SyncError::Malformed(_))
    ));
    assert!(matches!(
        c.handle_message(&p.me(), &[9; 12], now),
        Err(SyncError::Malformed(_))
    ));
    let mut garbage = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(b"not automerge");
    assert!(matches!(
        c.handle_message(&p.me(), &garbage, now),
        Err(SyncError::Malformed(_))
    ));
    let stranger = SecretKey::generate().node_id();
    assert!(matches!(
        c.handle_message(&stranger, &garbage, now),
        Err(SyncError::UnknownPeer(_))
    ));
    // A snapshot from the party that does not compact (c has the smaller id, so c leads).
    let mut snap = vec![1u8, 1, 0, 0, 0, 0, 0, 0, 0, 5];
    snap.extend_from_slice(b"x");
    assert!(matches!(
        c.handle_message(&p.me(), &snap, now),
        Err(SyncError::NotLeader(_))
    ));
}

/// Both sides change state while cut off, then sync: the views converge and
/// every replica is there exactly once.
#[test]
fn partition_heals_without_duplicating_or_losing_replicas() {
    for compact_during_partition in [false, true] {
        let (mut c, mut p) = pair(ViewConfig::default());
        let (cid, pid) = (c.me(), p.me());
        let w = c.add_workload(spec("web", 3), Timestamp(1)).unwrap();
        for i in 0..3 {
            c.place(&w, i, pid, Timestamp(2)).unwrap();
        }
        assert!(pump(&mut c, &mut p).is_empty());
        p.set_status(&cid, &w, 0, status(ReplicaState::Running, 3))
            .unwrap();
        assert!(pump(&mut c, &mut p).is_empty());

        c.disconnected(&pid);
        p.disconnected(&cid);
        // Provider: replica 0 exits, replica 1 runs, its entry changes.
        p.set_status(&cid, &w, 0, status(ReplicaState::Exited { code: 0 }, 10))
            .unwrap();
        p.set_status(&cid, &w, 1, status(ReplicaState::Running, 11))
            .unwrap();
        p.set_entry_for(&cid, Some(entry(NodeKind::Virtual, 2000)))
            .unwrap();
        // Consumer: replica 2 comes home; a second workload goes to the provider.
        c.place(&w, 2, cid, Timestamp(12)).unwrap();
        let w2 = c.add_workload(spec("batch", 2), Timestamp(13)).unwrap();
        c.place(&w2, 0, pid, Timestamp(14)).unwrap();
        if compact_during_partition {
            // The consumer has the smaller id: it leads and compacts while cut off.
            assert!(c.compact(&pid));
            assert_eq!(c.epoch(&pid), Some(1));
        }
        assert!(
            p.poll_transmit().is_none(),
            "nothing leaves while disconnected"
        );

        let now = Instant::now();
        c.connected(&pid, now);
        p.connected(&cid, now);
        assert!(pump(&mut c, &mut p).is_empty());
        assert_eq!(
            c.heads(&pid),
            p.heads(&cid),
            "converged (compaction: {compact_during_partition})"
        );
        assert_eq!(c.epoch(&pid), p.epoch(&cid));

        let web = c.workload(&cid, &w).unwrap().record;
        assert_eq!(web.replicas.len(), 3, "no replica lost or duplicated");
        assert_eq!(
            web.replicas["0"].status.as_ref().unwrap().state,
            ReplicaState::Exited { code: 0 }
        );
        assert_eq!(
            web.replicas["1"].status.as_ref().unwrap().state,
            ReplicaState::Running
        );
        assert_eq!(web.replicas["2"].node, Some(cid));
        // The provider no longer holds replica 2; it holds 0 and 1 of `web` and 0 of `batch`.
        let on_p = p.workload(&cid, &w).unwrap().record;
        assert_eq!(
            on_p.replicas.keys().cloned().collect::<Vec<_>>(),
            vec!["0", "1"]
        );
        assert_eq!(p.workload(&cid, &w2).unwrap().record.replicas.len(), 1);
        let v = c.nodes().into_iter().find(|n| n.id == pid).unwrap();
        assert_eq!(
            v.entry.capacity.cpu_millis, 2000,
            "the provider's entry survived"
        );
    }
}

#[test]
fn compaction_shrinks_history_and_sync_continues() {
    let config = ViewConfig {
        compact_after_changes: 200,
        ..ViewConfig::default()
    };
    let (mut c, mut p) = pair(config);
    let (cid, pid) = (c.me(), p.me());
    let w = c.add_workload(spec("loop", 1), Timestamp(1)).unwrap();
    c.place(&w, 0, pid, Timestamp(2)).unwrap();
    assert!(pump(&mut c, &mut p).is_empty());
    let size_at = |v: &View, peer: &NodeId| v.shared_doc(peer).unwrap().save().len();
    for i in 0..150u64 {
        p.set_status(&cid, &w, 0, status(ReplicaState::Running, 10 + i))
            .unwrap();
        assert!(pump(&mut c, &mut p).is_empty());
    }
    let big = size_at(&c, &pid);
    for i in 150..300u64 {
        p.set_status(&cid, &w, 0, status(ReplicaState::Running, 10 + i))
            .unwrap();
        assert!(pump(&mut c, &mut p).is_empty());
    }
    assert!(c.epoch(&pid).unwrap() >= 1, "the leader compacted");
    assert_eq!(c.epoch(&pid), p.epoch(&cid));
    assert!(
        size_at(&c, &pid) < big,
        "compacted {} < {big}",
        size_at(&c, &pid)
    );
    let s = c.workload(&cid, &w).unwrap().record.replicas["0"]
        .status
        .clone()
        .unwrap();
    assert_eq!(s.since, Timestamp(309));
    assert_eq!(c.heads(&pid), p.heads(&cid));
}

#[test]
fn ended_workloads_age_out_keeping_their_final_status() {
    let config = ViewConfig {
        retain_ended_ms: 100,
        max_ended: 2,
        ..ViewConfig::default()
    };
    let (mut c, mut p) = pair(config);
    let (cid, pid) = (c.me(), p.me());
    let mut ids = Vec::new();
    for n in 0..4u64 {
        let w = c
            .add_workload(spec(&format!("job{n}"), 1), Timestamp(n))
            .unwrap();
        c.place(&w, 0, pid, Timestamp(n)).unwrap();
        ids.push(w);
    }
    assert!(pump(&mut c, &mut p).is_empty());
    for (n, w) in ids.iter().enumerate() {
        let mut s = status(ReplicaState::Exited { code: n as i32 }, 1000 + n as u64);
        s.output_tail = format!("bye {n}");
        p.set_status(&cid, w, 0, s).unwrap();
    }
    assert!(pump(&mut c, &mut p).is_empty());
    c.age_out(Timestamp(1050)).unwrap();
    assert!(
        c.workload(&cid, &ids[0]).unwrap().record.spec.is_some(),
        "still within retention"
    );
    c.age_out(Timestamp(5000)).unwrap();
    assert!(pump(&mut c, &mut p).is_empty());
    // The two most recent remain as summaries; the two oldest went.
    assert!(c.workload(&cid, &ids[0]).is_none());
    assert!(c.workload(&cid, &ids[1]).is_none());
    let kept = c.workload(&cid, &ids[3]).unwrap().record;
    assert!(kept.spec.is_none());
    assert_eq!(kept.ended_at, Some(Timestamp(1003)));
    let s = kept.replicas["0"].status.clone().unwrap();
    assert_eq!(
        (s.state, s.output_tail.as_str()),
        (ReplicaState::Exited { code: 3 }, "bye 3")
    );
    // The shared document no longer carries them.
    assert!(p.workload(&cid, &ids[3]).is_none());
    let doc = p.shared_doc(&cid).unwrap();
    let (_, w) = doc.get(ROOT, "workloads").unwrap().unwrap();
    let (v, om) = doc.get(&w, cid.to_did_key()).unwrap().unwrap();
    assert!(matches!(v, Value::Object(ObjType::Map)));
    assert_eq!(doc.length(&om), 0);
}
