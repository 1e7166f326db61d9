//! The real daemon binary on loopback (mDNS off): start-up refusals, token
//! checks, two daemons side by side, key reuse, and a purchase between them.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, cmd, init, run, stderr, stdout};

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_key_readable_by_others_stops_the_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let key = dir.join("node.key");
    chmod(&key, 0o644);
    let o = run(&dir, &["run"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("cannot use the node key"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
    assert!(
        !dir.join("control.addr").exists(),
        "must stop before serving"
    );
}

#[cfg(unix)]
#[test]
fn a_corrupt_key_stops_the_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let key = dir.join("node.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    chmod(&key, 0o600);
    let o = run(&dir, &["run"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("is not a PKCS#8 PEM ed25519 key"), "{err}");
}

#[test]
fn a_bad_config_stops_the_start_naming_file_key_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let cfg = dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("percent = 10.0", "percent = 150.0")).unwrap();
    let o = run(&dir, &["run"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(err.contains("reserve.percent"), "{err}");
    assert!(err.contains("not between 0 and 100"), "{err}");
}

#[test]
fn an_environment_override_is_validated_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let o = common::cmd(&dir)
        .env("FLUIDOS_COUNTRY", "Italy")
        .arg("run")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("FLUIDOS_COUNTRY"), "{err}");
    assert!(err.contains("location.country"), "{err}");
}

#[test]
fn client_commands_without_a_daemon_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let o = run(&dir, &["status"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is `fluidos-node run` running"),
        "{}",
        stderr(&o)
    );
}

/// Sends one raw HTTP/1.1 request and returns the status line and body.
fn http(addr: &str, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.lines().next().unwrap_or_default().to_string();
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

#[test]
fn the_control_api_refuses_a_wrong_or_missing_token_with_401_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    init(&dir);
    let mut d = Daemon::start(&dir);
    let addr = std::fs::read_to_string(dir.join("control.addr")).unwrap();
    let token = std::fs::read_to_string(dir.join("control.token")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("control.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let wrong = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        "0".repeat(64)
    );
    let (status, body) = http(&addr, &wrong);
    assert!(status.contains("401"), "{status}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");

    let missing = "GET /v1/flavors HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, body) = http(&addr, missing);
    assert!(status.contains("401"), "{status}");
    assert!(body.contains("Authorization"), "{body}");

    let good = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    );
    let (status, _) = http(&addr, &good);
    assert!(status.contains("200"), "{status}");

    // The CLI with a token it does not know gets the same refusal.
    std::fs::write(dir.join("control.token"), format!("{}\n", "a".repeat(64))).unwrap();
    let o = run(&dir, &["status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    assert!(d.stop(), "graceful shutdown failed: {}", d.log());
    assert!(d.log().contains("shutting down"), "{}", d.log());
}

#[test]
fn two_daemons_side_by_side_then_a_restart_reuses_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ([a_dir, _], [mut a, mut b]) = two_daemons(tmp.path(), ["a", "b"]);
    let (sa, sb) = (a.status(), b.status());
    for s in [&sa, &sb] {
        let did = s["did_key"].as_str().unwrap();
        assert!(did.starts_with("did:key:z6Mk"), "{s}");
        assert_eq!(s["node_id"].as_str().unwrap(), did);
        assert!(s["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
        let flavors = s["flavors"].as_array().unwrap();
        assert!(!flavors.is_empty(), "no measured flavor: {s}");
        assert!(
            flavors[0]["characteristics"]["resources"]["cpu_millis"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(
            flavors[0]["characteristics"]["resources"]["memory_bytes"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
    assert_ne!(sa["did_key"], sb["did_key"]);

    // The flavors command agrees with status.
    let o = run(&a_dir, &["flavors", "--json"]);
    let flavors: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(flavors[0]["owner"], sa["did_key"]);

    // Output into a pipe that is already closed (`fluidos-node status | head -0`):
    // the command ends quietly with success, no panic about a broken pipe.
    let mut child = cmd(&a_dir)
        .args(["status", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));

    assert!(a.stop(), "{}", a.log());
    let a2 = Daemon::start(&a_dir);
    assert_eq!(
        a2.status()["did_key"],
        sa["did_key"],
        "restart must reuse the key"
    );
    assert!(b.stop(), "{}", b.log());
}

#[test]
fn a_consumer_buys_from_a_provider_and_the_contract_verifies_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let ([_, c_dir], [provider, consumer]) = two_daemons(tmp.path(), ["provider", "consumer"]);
    let addr = first_addr(&provider);
    let o = run(&c_dir, &["peer", "add", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The candidate appears once the provider has answered; bounded wait.
    let provider_did = provider.status()["did_key"].as_str().unwrap().to_string();
    assert!(
        lists_within(&c_dir, &provider_did, Duration::from_secs(10)),
        "the provider never became a candidate"
    );

    let o = run(
        &c_dir,
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
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for phase in ["reserve", "purchase", "countersign"] {
        assert!(out.contains(phase), "phase {phase} not shown: {out}");
    }

    let contracts: serde_json::Value =
        serde_json::from_slice(&run(&c_dir, &["contracts", "--json"]).stdout).unwrap();
    let id = contracts[0]["id"].as_str().unwrap().to_string();
    assert_eq!(contracts[0]["role"], "buyer");

    let nodes: serde_json::Value =
        serde_json::from_slice(&run(&c_dir, &["nodes", "--json"]).stdout).unwrap();
    let virt = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "virtual")
        .unwrap();
    assert_eq!(virt["node_id"], provider_did.as_str());
    assert_eq!(virt["capacity"]["cpu_millis"], 500);

    let file = tmp.path().join("contract.cbor");
    let o = run(
        &c_dir,
        &["contract", "export", &id, "--out", file.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Verification is offline: a data dir with no daemon and no config.
    let offline = tmp.path().join("nobody");
    let o = run(
        &offline,
        &["contract", "verify", file.to_str().unwrap(), "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["id"], id.as_str());
    assert_eq!(report["provider"], provider_did.as_str());

    // One flipped byte and it no longer verifies.
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    let bad = tmp.path().join("bad.cbor");
    std::fs::write(&bad, &bytes).unwrap();
    let o = run(&offline, &["contract", "verify", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does NOT verify") || stderr(&o).contains("not a fluidos contract"),
        "{}",
        stderr(&o)
    );

    #[cfg(feature = "vc")]
    {
        let vc = tmp.path().join("contract.vc.json");
        let o = run(
            &c_dir,
            &[
                "contract",
                "export",
                &id,
                "--out",
                vc.to_str().unwrap(),
                "--vc",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run(
            &offline,
            &["contract", "verify", vc.to_str().unwrap(), "--json"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["format"], "vc");
        assert_eq!(report["id"], id.as_str());
    }

    let o = run(
        &c_dir,
        &["contract", "terminate", &id, "--reason", "test over"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let contracts: serde_json::Value =
        serde_json::from_slice(&run(&c_dir, &["contracts", "--json"]).stdout).unwrap();
    assert!(
        contracts
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != id.as_str() || c["state"] != "active"),
        "{contracts}"
    );
    drop(consumer);
    drop(provider);
}

/// Two fresh daemons over `root/<name>`, started.
fn two_daemons(root: &std::path::Path, names: [&str; 2]) -> ([std::path::PathBuf; 2], [Daemon; 2]) {
    let dirs = names.map(|n| root.join(n));
    for d in &dirs {
        init(d);
    }
    let daemons = [Daemon::start(&dirs[0]), Daemon::start(&dirs[1])];
    (dirs, daemons)
}

/// The first address a daemon listens on, as `peer add` takes it.
fn first_addr(d: &Daemon) -> String {
    d.status()["listen_addrs"][0].as_str().unwrap().to_string()
}

/// Whether the daemon over `dir` lists `did` among its peers within `limit`
/// (asked every 100 ms).
fn lists_within(dir: &std::path::Path, did: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let peers: serde_json::Value =
            serde_json::from_slice(&run(dir, &["peers", "--json"]).stdout).unwrap();
        if peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node_id"] == did)
        {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_peer_added_by_hand_is_dialled_again_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ([_, c_dir], [mut provider, mut consumer]) =
        two_daemons(tmp.path(), ["provider", "consumer"]);
    let did = provider.status()["did_key"].as_str().unwrap().to_string();
    let addr = first_addr(&provider);
    let o = run(&c_dir, &["peer", "add", &addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lists_within(&c_dir, &did, Duration::from_secs(10)));
    let remembered = std::fs::read_to_string(c_dir.join("state").join("peers")).unwrap();
    assert!(remembered.lines().any(|l| l == addr), "{remembered}");

    // Restarted without a new `peer add` (no mDNS, no catalog): it finds the peer
    // only because it remembered it.
    assert!(consumer.stop(), "{}", consumer.log());
    let mut consumer = Daemon::start(&c_dir);
    assert!(
        lists_within(&c_dir, &did, Duration::from_secs(10)),
        "the restarted node did not dial its added peer again: {}",
        consumer.log()
    );
    assert!(consumer.stop(), "{}", consumer.log());
    assert!(provider.stop(), "{}", provider.log());
}
