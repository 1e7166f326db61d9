//! `fluidos-fabric-peer` refuses bad input with a clear message before touching the
//! network (no root needed).
#![allow(clippy::unwrap_used)]

use std::process::Command;

const PEER_BIN: &str = env!("CARGO_BIN_EXE_fluidos-fabric-peer");

fn run(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer.json");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(PEER_BIN).arg(&path).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let (ok, err) = run("{ not json");
    assert!(!ok);
    assert!(err.contains("parsing"), "{err}");

    let (ok, err) = run(
        r#"{"interface":"x","listen":"198.18.0.1:1","key_file":"k","address":"fd00::1","colour":"red"}"#,
    );
    assert!(!ok);
    assert!(err.contains("unknown field"), "{err}");

    let (ok, err) =
        run(r#"{"interface":"x","listen":"not an address","key_file":"k","address":"fd00::1"}"#);
    assert!(!ok);
    assert!(err.contains("parsing"), "{err}");

    let (ok, err) = run(
        r#"{"interface":"x","listen":"198.18.0.1:1","key_file":"k","address":"fd00::1",
        "peers":[{"public_key":"c2hvcnQ=","allowed_ips":["fd00::2/128"]}]}"#,
    );
    assert!(!ok);
    assert!(err.contains("not 32 bytes of base64"), "{err}");

    let out = Command::new(PEER_BIN).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

#[test]
fn pubkey_creates_the_key_and_prints_what_wg_would() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wg.key");
    let first = Command::new(PEER_BIN)
        .arg("--pubkey")
        .arg(&key)
        .output()
        .unwrap();
    assert!(first.status.success());
    let second = Command::new(PEER_BIN)
        .arg("--pubkey")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(first.stdout, second.stdout, "the key is reused");
    let secret = fluidos_fabric::keyfile::load(&key).unwrap();
    use base64::Engine;
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        base64::engine::general_purpose::STANDARD.encode(secret.public().0)
    );
}
