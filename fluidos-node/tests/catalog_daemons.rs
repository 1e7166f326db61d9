//! Catalogs between real `fluidos-node` processes on loopback (mDNS off), set up
//! as a user would: a shared catalog address that joins no catalog itself, and
//! what `status`, `peers` and `buy` say while a catalog is not usable yet.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Daemon, free_port, init_with, peer_dids, poll, run, stderr, stdout};

/// Issue 14 point 1: A joins no catalog and sells nothing; B and C each get
/// `--catalog sites=<A>`. B and C find each other through A, and B buys from C.
#[test]
fn two_sites_find_each_other_through_a_catalog_address_that_joins_no_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir, c_dir) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    init_with(&a_dir, &["--provider", "false"]);
    let a = Daemon::start(&a_dir);
    let a_status = a.status();
    let a_addr = a_status["listen_addrs"][0].as_str().unwrap().to_string();
    assert!(a_addr.contains("/p2p/"), "{a_addr}");
    // Before anyone dialled it, A (in no catalog, mode auto) does not serve.
    assert_eq!(a_status["discovery"]["catalog_server"], false, "{a_status}");
    assert_eq!(a_status["discovery"]["catalog_server_mode"], "auto");

    let catalog = format!("sites={a_addr}");
    let b_did = init_with(&b_dir, &["--catalog", &catalog])["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c_did = init_with(&c_dir, &["--catalog", &catalog])["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Daemon::start(&b_dir);
    let c = Daemon::start(&c_dir);

    // Bounded: 100 rounds of 100 ms (plus the CLI calls themselves).
    let found = poll(100, Duration::from_millis(100), || {
        let (on_b, on_c) = (peer_dids(&b_dir), peer_dids(&c_dir));
        (on_b.contains(&c_did) && on_c.contains(&b_did)).then_some(())
    });
    assert!(
        found.is_some(),
        "B and C never listed each other\nB: {:?}\nC: {:?}\nA log:\n{}\nB log:\n{}",
        peer_dids(&b_dir),
        peer_dids(&c_dir),
        a.log(),
        b.log()
    );
    // A is no catalog member, so it is nobody's candidate.
    assert!(!peer_dids(&b_dir).contains(&a_status["did_key"].as_str().unwrap().to_string()));

    // status: A now serves the catalog it never joined; B reached `sites`.
    let a_status = a.status();
    println!("A discovery: {}", a_status["discovery"]);
    assert_eq!(a_status["discovery"]["catalog_server"], true, "{a_status}");
    assert_eq!(a_status["discovery"]["catalogs"], serde_json::json!([]));
    let b_status = b.status();
    println!("B discovery: {}", b_status["discovery"]);
    let sites = &b_status["discovery"]["catalogs"][0];
    assert_eq!(sites["name"], "sites", "{b_status}");
    assert_eq!(sites["reached"], true, "{b_status}");
    assert!(sites["members"].as_u64().unwrap() >= 1, "{b_status}");
    assert_eq!(sites["addresses"][0], a_addr.as_str());
    assert_eq!(b_status["discovery"]["catalog_server"], true);
    let text = stdout(&run(&b_dir, &["status"]));
    println!("{text}");
    assert!(text.contains("catalog sites: reached"), "{text}");

    // A has no peer of its own, and says why.
    let o = run(&a_dir, &["peers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let why = stdout(&o);
    assert!(why.contains("joins no catalog"), "{why}");
    assert!(why.contains("mDNS is off"), "{why}");

    let o = run(
        &b_dir,
        &[
            "buy",
            "--cpu",
            "500m",
            "--memory",
            "512MiB",
            "--duration",
            "10m",
        ],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let contracts: serde_json::Value =
        serde_json::from_slice(&run(&b_dir, &["contracts", "--json"]).stdout).unwrap();
    assert_eq!(contracts[0]["role"], "buyer", "{contracts}");
    assert_eq!(contracts[0]["provider"], c_did.as_str(), "{contracts}");
    drop((a, b, c));
}

/// `peers` and `buy` (without `--wait`) name the state when there is nobody to
/// buy from: catalog not reached, catalog reached with no members, members with
/// no matching flavor.
#[test]
fn peers_and_buy_name_why_there_is_no_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let buy = |dir: &std::path::Path, cpu: &str| {
        let o = run(dir, &["buy", "--cpu", cpu, "--duration", "10m"]);
        assert!(!o.status.success(), "{}", stdout(&o));
        stderr(&o)
    };

    // A catalog address where nothing listens: the key exists, the node never runs.
    let ghost = init_with(&tmp.path().join("ghost"), &[]);
    let nowhere = format!(
        "sites=/ip4/127.0.0.1/tcp/{}/p2p/{}",
        free_port(),
        ghost["peer_id"].as_str().unwrap()
    );
    let lone_dir = tmp.path().join("lone");
    init_with(&lone_dir, &["--catalog", &nowhere]);
    let lone = Daemon::start(&lone_dir);
    let why = stdout(&run(&lone_dir, &["peers"]));
    assert!(
        why.contains("catalog sites configured but not reached yet"),
        "{why}"
    );
    let err = buy(&lone_dir, "500m");
    assert!(
        err.contains("catalog sites configured but not reached yet"),
        "{err}"
    );
    let s = lone.status();
    assert_eq!(s["discovery"]["catalogs"][0]["reached"], false, "{s}");
    drop(lone);

    // A catalog address that answers, but nobody else joined.
    let addr_dir = tmp.path().join("addr");
    init_with(&addr_dir, &["--provider", "false"]);
    let addr = Daemon::start(&addr_dir);
    let a = addr.status()["listen_addrs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let first_dir = tmp.path().join("first");
    init_with(&first_dir, &["--catalog", &format!("sites={a}")]);
    let first = Daemon::start(&first_dir);
    let reached = poll(100, Duration::from_millis(100), || {
        let s = first.status();
        (s["discovery"]["catalogs"][0]["reached"] == true).then_some(s)
    });
    assert!(reached.is_some(), "catalog never reached: {}", first.log());
    let why = stdout(&run(&first_dir, &["peers"]));
    assert!(
        why.contains("catalog sites answered with no other members"),
        "{why}"
    );
    let err = buy(&first_dir, "500m");
    assert!(
        err.contains("catalog sites reached but it has no other members yet"),
        "{err}"
    );

    // A member that sells, but not that much.
    let second_dir = tmp.path().join("second");
    let second_did = init_with(&second_dir, &["--catalog", &format!("sites={a}")])["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = Daemon::start(&second_dir);
    let found = poll(100, Duration::from_millis(100), || {
        peer_dids(&first_dir).contains(&second_did).then_some(())
    });
    assert!(found.is_some(), "second member never listed");
    let err = buy(&first_dir, "100000");
    assert!(err.contains("no provider sold the request"), "{err}");
    assert!(
        err.contains("no flavor matches") || err.contains("no suitable flavor"),
        "{err}"
    );
    drop((addr, first, second));
}

/// Issue 19: the buyer starts first, its catalog (also the provider) 2 s later on
/// the fixed port the buyer dials; `buy --wait 10s`, sent before the catalog is
/// up, says what it waits for and ends with a contract. Without the fast
/// bootstrap retry the next attempt would come at the 30 s refresh, after the
/// wait is over.
#[test]
fn buy_wait_sent_before_the_catalog_starts_buys_once_it_is_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let a = init_with(&a_dir, &["--listen", &listen, "--catalog", "sites="]);
    let catalog = format!("sites={listen}/p2p/{}", a["peer_id"].as_str().unwrap());
    init_with(&b_dir, &["--provider", "false", "--catalog", &catalog]);
    let b = Daemon::start(&b_dir);

    let sent = Instant::now();
    let mut buying = common::cmd(&b_dir)
        .args([
            "buy",
            "--cpu",
            "500m",
            "--memory",
            "512MiB",
            "--duration",
            "10m",
            "--wait",
            "10s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let provider = Daemon::start(&a_dir);
    let up = Instant::now();
    // Bounded: the daemon's own wait ends 10 s after `sent`.
    let finished = poll(300, Duration::from_millis(100), || {
        buying.try_wait().unwrap()
    });
    if finished.is_none() {
        let _ = buying.kill();
    }
    let o = buying.wait_with_output().unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    println!(
        "buy --wait: contract {:?} after the catalog was up ({:?} after the buy was sent)\n{out}",
        up.elapsed(),
        sent.elapsed()
    );
    assert!(o.status.success(), "{out}\n{err}\nB log:\n{}", b.log());
    assert!(
        out.contains("waiting for a provider: catalog sites configured but not reached yet"),
        "{out}"
    );
    assert!(out.contains("countersign"), "{out}");
    let contracts: serde_json::Value =
        serde_json::from_slice(&run(&b_dir, &["contracts", "--json"]).stdout).unwrap();
    assert_eq!(contracts[0]["provider"], a["node_id"], "{contracts}");

    // `--wait` longer than the daemon allows is refused before anything is sent.
    let o = run(&b_dir, &["buy", "--cpu", "500m", "--wait", "1h"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--wait"), "{}", stderr(&o));
    drop((b, provider));
}
