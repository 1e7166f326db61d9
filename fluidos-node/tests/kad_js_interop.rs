//! A second libp2p implementation reads a catalog that real `fluidos-node` daemons
//! serve: js-libp2p with `@libp2p/kad-dht` (`tests/js_kad/read-catalog.mjs`) follows
//! `docs/PROTOCOL.md` §4.3 "Reading a catalog from another implementation" — shard keys,
//! GET_PROVIDERS, advert records, envelope and signature checked in JavaScript.
//!
//! Needs `node` and `npm ci` in `fluidos-node/tests/js_kad` (done by `.ci/run`).
//! Without them the test skips with a message, or fails when `CI` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Daemon, init_with, peer_dids, poll};

/// The script's folder, or `None` (after a message, or a panic under CI) when node
/// or its modules are missing.
fn js_kad() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js_kad");
    let problem = match Command::new("node").arg("--version").output() {
        Err(e) => Some(format!("`node` cannot be run ({e})")),
        Ok(out) if !out.status.success() => Some("`node --version` failed".to_owned()),
        Ok(_) if !dir.join("node_modules/@libp2p/kad-dht").is_dir() => Some(format!(
            "no node_modules in {} (run `npm ci` there)",
            dir.display()
        )),
        Ok(_) => None,
    };
    match problem {
        None => Some(dir),
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the js-libp2p Kademlia test cannot run: {why}")
        }
        Some(why) => {
            eprintln!("skipping the js-libp2p Kademlia test: {why}");
            None
        }
    }
}

#[test]
fn js_libp2p_lists_a_catalogs_members_and_reads_their_adverts() {
    let Some(js) = js_kad() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    // A joins its own catalog `sites` (it is the catalog address); B joins through A.
    let a_did = init_with(&a_dir, &["--catalog", "sites="])["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = Daemon::start(&a_dir);
    let a_addr = a.status()["listen_addrs"][0].as_str().unwrap().to_string();
    assert!(a_addr.contains("/p2p/"), "{a_addr}");
    let b_did = init_with(&b_dir, &["--catalog", &format!("sites={a_addr}")])["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Daemon::start(&b_dir);
    // Both have published (provider record and advert) once each lists the other.
    let listed = poll(100, Duration::from_millis(100), || {
        (peer_dids(&a_dir).contains(&b_did) && peer_dids(&b_dir).contains(&a_did)).then_some(())
    });
    assert!(
        listed.is_some(),
        "A and B never listed each other:\n{}",
        b.log()
    );

    let out = Command::new("node")
        .arg("read-catalog.mjs")
        .args([a_addr.as_str(), "sites"])
        .current_dir(&js)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "read-catalog.mjs failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got["problems"], serde_json::json!([]), "{got}");
    let members = got["members"].as_array().unwrap();
    for (did, daemon) in [(&a_did, &a), (&b_did, &b)] {
        let m = members
            .iter()
            .find(|m| m["did"] == did.as_str())
            .unwrap_or_else(|| panic!("{did} not among the members js-libp2p found: {got}"));
        let advert = &m["advert"];
        assert_eq!(advert["node"], did.as_str(), "{m}");
        assert_eq!(advert["catalog"], "sites", "{m}");
        assert!(
            advert["roles"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "provider"),
            "{m}"
        );
        assert!(advert["flavors"].as_u64().unwrap() >= 1, "{m}");
        // The advert's addresses include the one the daemon reports, with its peer id.
        let listen = daemon.status()["listen_addrs"][0]
            .as_str()
            .unwrap()
            .to_string();
        let tcp = listen.split("/p2p/").next().unwrap().to_string();
        assert!(
            advert["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x.as_str().unwrap().starts_with(&tcp)),
            "{listen} not in {m}"
        );
        assert_eq!(m["peer_id"], listen.split("/p2p/").nth(1).unwrap(), "{m}");
    }
    drop((a, b));
}
