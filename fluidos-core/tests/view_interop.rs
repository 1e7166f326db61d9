//! A view exported by fluidos loads with the plain `automerge` crate and shows the
//! schema documented in docs/ARCHITECTURE.md.

#![allow(clippy::unwrap_used)]

use automerge::{Automerge, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use fluidos_contracts::{Architecture, Resources, SecretKey, Timestamp};
use fluidos_core::view::{NodeEntry, NodeKind, View, ViewConfig};
use fluidos_core::workload::WorkloadSpec;

fn str_at(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn uint_at(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> Option<u64> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Uint(u) => Some(*u),
            _ => None,
        },
        _ => None,
    }
}

fn map_at(doc: &Automerge, obj: &automerge::ObjId, key: &str) -> automerge::ObjId {
    match doc.get(obj, key).unwrap() {
        Some((Value::Object(ObjType::Map), id)) => id,
        other => panic!("{key} is not a map: {other:?}"),
    }
}

#[test]
fn exported_view_has_the_documented_schema() {
    let me = SecretKey::generate().node_id();
    let mut view = View::new(me, ViewConfig::default());
    let cap = Resources {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        pods: 20,
        ..Resources::ZERO
    };
    view.set_physical(NodeEntry {
        kind: NodeKind::Physical,
        capacity: cap,
        allocatable: cap,
        labels: [("zone".into(), "edge".into())].into(),
        location: None,
        architecture: Architecture::X86_64,
        price_micros_per_hour: None,
        currency: None,
        carbon_g_per_kwh: None,
        gpu_model: None,
        step: None,
        contracts: vec![],
        usage: Default::default(),
        updated_at: Timestamp(7),
    })
    .unwrap();
    let spec = WorkloadSpec::from_toml("name = \"hello\"\n[run]\ncommand = \"/bin/echo\"\nargs = [\"hi\"]\n[requests]\ncpu = \"250m\"\n").unwrap();
    let id = view.add_workload(spec, Timestamp(9)).unwrap();
    view.place(&id, 0, me, Timestamp(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.automerge");
    std::fs::write(&path, view.export()).unwrap();

    let doc = Automerge::load(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        str_at(&doc, &ROOT, "schema").as_deref(),
        Some("fluidos-view/1")
    );
    let nodes = map_at(&doc, &ROOT, "nodes");
    let mine = map_at(&doc, &nodes, &me.to_did_key());
    assert_eq!(str_at(&doc, &mine, "kind").as_deref(), Some("physical"));
    assert_eq!(
        str_at(&doc, &mine, "architecture").as_deref(),
        Some("x86_64")
    );
    let capacity = map_at(&doc, &mine, "capacity");
    assert_eq!(uint_at(&doc, &capacity, "cpu_millis"), Some(4000));
    assert_eq!(uint_at(&doc, &mine, "updated_at"), Some(7));
    let labels = map_at(&doc, &mine, "labels");
    assert_eq!(str_at(&doc, &labels, "zone").as_deref(), Some("edge"));

    let workloads = map_at(&doc, &ROOT, "workloads");
    let by_owner = map_at(&doc, &workloads, &me.to_did_key());
    let w = map_at(&doc, &by_owner, &id);
    assert_eq!(str_at(&doc, &w, "name").as_deref(), Some("hello"));
    assert_eq!(uint_at(&doc, &w, "created_at"), Some(9));
    let spec = map_at(&doc, &w, "spec");
    let run = map_at(&doc, &spec, "run");
    assert_eq!(str_at(&doc, &run, "command").as_deref(), Some("/bin/echo"));
    let requests = map_at(&doc, &spec, "requests");
    assert_eq!(str_at(&doc, &requests, "cpu").as_deref(), Some("250m"));
    let replicas = map_at(&doc, &w, "replicas");
    let r0 = map_at(&doc, &replicas, "0");
    assert_eq!(str_at(&doc, &r0, "node"), Some(me.to_did_key()));
    assert_eq!(uint_at(&doc, &r0, "placed_at"), Some(10));
    let status = map_at(&doc, &r0, "status");
    assert_eq!(str_at(&doc, &status, "state").as_deref(), Some("pending"));
    assert_eq!(uint_at(&doc, &status, "since"), Some(10));
}
