//! The fabric between real `fluidos-node` daemons, each in a network namespace this
//! test creates (joined by one veth pair, addresses from 198.18.0.0/15), with its own
//! data dir and control port, mDNS off, peered by manual address:
//!
//! - after `buy`, each pings the other's overlay addresses (IPv6 and IPv4) and TCP
//!   crosses the tunnel both ways; `fabric` and `status` show the TUN backend, the
//!   peer, its endpoint and a handshake;
//! - a workload deployed on the provider (process runtime, busybox `nc`) listening on
//!   a TCP port is reached from the consumer at the provider's overlay address;
//! - a provider restarted with the contract active brings the tunnel back;
//! - after the contract is terminated the peers and the interfaces are gone on both
//!   sides and the overlay carries nothing;
//! - a consumer configured with the userspace backend makes no interface, says so in
//!   `status`, and reaches the provider's workload through a forwarded local port.
//!
//! These need root, `ip`, `/dev/net/tun`, `ping` and `busybox`: skipped with a message
//! when one is missing, failed when CI is set. A disabled fabric is checked on
//! loopback without privileges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{BIN, poll, stderr, stdout};

fn have(tool: &str) -> Option<String> {
    let o = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Whether the test can run; prints why not, and panics instead under CI.
fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut missing: Vec<String> = ["ip", "ping", "busybox"]
        .iter()
        .filter(|t| have(t).is_none())
        .map(|t| t.to_string())
        .collect();
    if !root {
        missing.push("root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".into());
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!("fabric daemons test needs {}", missing.join(", "));
    assert!(
        std::env::var_os("CI").is_none(),
        "{message} (CI is set, so this fails)"
    );
    eprintln!("skipping: {message}");
    false
}

fn must(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair (198.18.0.1/24 and .2/24); removed on drop.
struct Lab {
    ns: [String; 2],
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short id unique to this process and call: namespace and interface names.
fn unique() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

impl Lab {
    fn new(id: &str) -> Self {
        let ns = [format!("flfab{id}a"), format!("flfab{id}b")];
        for n in &ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            must(&["ip", "netns", "add", n]);
            must(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        let (va, vb) = (format!("vfab{id}a"), format!("vfab{id}b"));
        must(&[
            "ip", "link", "add", &va, "netns", &ns[0], "type", "veth", "peer", "name", &vb,
            "netns", &ns[1],
        ]);
        for (i, v) in [&va, &vb].into_iter().enumerate() {
            let addr = format!("198.18.0.{}/24", i + 1);
            must(&["ip", "-n", &ns[i], "addr", "add", &addr, "dev", v]);
            must(&["ip", "-n", &ns[i], "link", "set", v, "up"]);
        }
        Self { ns }
    }

    fn cmd(&self, i: usize, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[i]]).args(args);
        c
    }

    fn run(&self, i: usize, args: &[&str]) -> Output {
        self.cmd(i, args).stdin(Stdio::null()).output().unwrap()
    }

    fn can_ping(&self, i: usize, addr: &str, tries: usize) -> bool {
        (0..tries).any(|_| {
            self.run(i, &["ping", "-c", "1", "-W", "2", addr])
                .status
                .success()
        })
    }

    fn interface_exists(&self, i: usize, name: &str) -> bool {
        self.run(i, &["ip", "link", "show", name]).status.success()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// A `fluidos-node` in namespace `ns` with data dir `dir`.
struct NsNode<'a> {
    lab: &'a Lab,
    ns: usize,
    dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl<'a> NsNode<'a> {
    fn new(lab: &'a Lab, ns: usize, dir: PathBuf) -> Self {
        let log = dir.with_extension("log");
        Self {
            lab,
            ns,
            dir,
            child: None,
            log,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.lab.cmd(self.ns, &[BIN]);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("RUST_LOG", "info")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args);
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let o = self.cli(&full);
        assert!(
            o.status.success(),
            "{args:?}: {}\n{}",
            stderr(&o),
            self.log()
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn start(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command(&["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited early ({status}): {}", self.log());
            }
            if self.dir.join("control.addr").exists() && self.cli(&["status"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("daemon not ready within 30 s: {}", self.log());
    }

    /// SIGTERM, then waits ≤ 20 s; returns whether it exited 0.
    fn stop(&mut self) -> bool {
        let mut child = self.child.take().unwrap();
        must(&["kill", "-TERM", &child.id().to_string()]);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `fabric --json` shows `peers` peers, each with a handshake when
    /// `peers > 0`; returns the report.
    fn wait_fabric(&self, peers: usize) -> serde_json::Value {
        poll(300, Duration::from_millis(100), || {
            let v = self.json(&["fabric"]);
            let list = v["status"]["peers"].as_array()?;
            let ok =
                list.len() == peers && list.iter().all(|p| p["latest_handshake_secs"].is_u64());
            ok.then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "fabric never showed {peers} peer(s) with a handshake: {}\n{}",
                self.json(&["fabric"]),
                self.log()
            )
        })
    }
}

impl Drop for NsNode<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `line` to `addr:port` from namespace `client` through an echo server that
/// listens in namespace `server`; returns whether the line came back.
fn tcp_echo(lab: &Lab, server: usize, client: usize, addr: &str, port: &str, line: &str) -> bool {
    let mut srv = lab
        .cmd(
            server,
            &["busybox", "nc", "-l", "-p", port, "-e", "/bin/cat"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        let out = lab
            .cmd(
                client,
                &[
                    "sh",
                    "-c",
                    &format!("echo {line} | busybox nc -w 5 {addr} {port}"),
                ],
            )
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(line) {
            ok = true;
            break;
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    ok
}

/// The consumer `c` dials the provider `p` at its 198.18.0.1 address and lists it;
/// returns the provider's did:key.
fn peer_up(p: &NsNode<'_>, c: &NsNode<'_>) -> String {
    let p_status = p.json(&["status"]);
    let p_did = p_status["did_key"].as_str().unwrap().to_string();
    let p_addr = p_status["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("198.18.0.1"))
        .unwrap()
        .to_string();
    let o = c.cli(&["peer", "add", &p_addr]);
    assert!(o.status.success(), "{}", stderr(&o));
    let found = poll(100, Duration::from_millis(100), || {
        let peers = c.json(&["peers"]);
        peers
            .as_array()?
            .iter()
            .any(|x| x["node_id"] == p_did.as_str())
            .then_some(())
    });
    assert!(found.is_some(), "the consumer never listed the provider");

    p_did
}

/// Deploys, from `c`, a workload that answers every TCP connection on port 8080 with
/// `served-by-the-workload`; returns its id.
fn deploy_server(c: &NsNode<'_>, dir: &Path, busybox: &str) -> String {
    let spec = dir.join("server.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "overlay-server"
[run]
command = "{busybox}"
args = ["nc", "-ll", "-p", "8080", "-e", "/bin/echo", "served-by-the-workload"]
[requests]
cpu = "250m"
memory = "128MiB"
"#
        ),
    )
    .unwrap();
    let o = c.cli(&["deploy", spec.to_str().unwrap(), "--wait", "30s"]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}\n{}\n{}", stderr(&o), c.log());
    text.lines()
        .find_map(|l| l.strip_prefix("workload "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string()
}

#[test]
fn two_daemons_in_namespaces_get_a_tunnel_from_their_contract() {
    if !can_run() {
        return;
    }
    let busybox = have("busybox").unwrap();
    let id = unique();
    let lab = Lab::new(&id);
    let tmp = tempfile::tempdir().unwrap();
    let (if_p, if_c) = (format!("flfp{id}"), format!("flfc{id}"));
    let mut p = NsNode::new(&lab, 0, tmp.path().join("p"));
    let mut c = NsNode::new(&lab, 1, tmp.path().join("c"));
    for (node, addr, iface) in [(&p, "198.18.0.1", &if_p), (&c, "198.18.0.2", &if_c)] {
        let listen = format!("/ip4/{addr}/tcp/7070");
        let o = node.cli(&[
            "init",
            "--mdns",
            "false",
            "--control",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--fabric-interface",
            iface,
        ]);
        assert!(o.status.success(), "init: {}", stderr(&o));
    }
    p.start();
    c.start();

    // Before any contract: the fabric runs, with no interface.
    let before = c.json(&["fabric"]);
    assert_eq!(before["state"], "running", "{before}");
    assert_eq!(before["status"]["backend"]["kind"], "idle", "{before}");
    assert!(!lab.interface_exists(1, &if_c));

    let p_did = peer_up(&p, &c);

    let buying = Instant::now();
    let o = c.cli(&[
        "buy",
        "--cpu",
        "500m",
        "--memory",
        "512MiB",
        "--duration",
        "10m",
    ]);
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        stdout(&o),
        stderr(&o),
        c.log()
    );
    let bought = buying.elapsed();
    // Informational (no timing target): from `buy` returning (the contract
    // countersigned and acknowledged) until the consumer's `fabric` shows a handshake.
    let shaken = poll(1000, Duration::from_millis(5), || {
        let v = c.json(&["fabric"]);
        v["status"]["peers"][0]["latest_handshake_secs"]
            .is_u64()
            .then(|| buying.elapsed())
    });
    if let Some(at) = shaken {
        println!(
            "buy took {} ms; first handshake seen {} ms after buy returned (CLI polling)",
            bought.as_millis(),
            at.saturating_sub(bought).as_millis()
        );
    }
    let contracts = c.json(&["contracts"]);
    let contract = contracts[0]["id"].as_str().unwrap().to_string();

    // Both sides get the tunnel, on the TUN backend, with a handshake.
    let pf = p.wait_fabric(1);
    let cf = c.wait_fabric(1);
    for (f, iface) in [(&pf, &if_p), (&cf, &if_c)] {
        let st = &f["status"];
        assert_eq!(st["backend"]["kind"], "tun", "{f}");
        assert_eq!(st["backend"]["interface"], iface.as_str(), "{f}");
        assert_eq!(st["peers"][0]["contracts"][0], contract.as_str(), "{f}");
        assert!(st["peers"][0]["endpoint"].is_string(), "{f}");
    }
    assert!(
        cf["status"]["peers"][0]["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("198.18.0.1:"),
        "{cf}"
    );
    assert_eq!(cf["status"]["peers"][0]["node"], p_did.as_str());
    assert!(lab.interface_exists(0, &if_p) && lab.interface_exists(1, &if_c));
    let status = c.json(&["status"]);
    assert_eq!(status["fabric"]["backend"], "tun", "{status}");
    let text = stdout(&c.cli(&["status"]));
    assert!(
        text.contains(&format!("fabric:      tun on {if_c}")),
        "{text}"
    );
    let text = stdout(&c.cli(&["fabric"]));
    println!("{text}");
    assert!(text.contains("latest handshake:"), "{text}");
    assert!(text.contains(&format!("interface: {if_c}")), "{text}");

    let (p6, c6) = (
        pf["status"]["ipv6"].as_str().unwrap().to_string(),
        cf["status"]["ipv6"].as_str().unwrap().to_string(),
    );
    let (p4, c4) = (
        pf["status"]["ipv4"].as_str().unwrap().to_string(),
        cf["status"]["ipv4"].as_str().unwrap().to_string(),
    );
    // Ping both ways, IPv6 and IPv4 overlay.
    assert!(lab.can_ping(1, &p6, 5), "consumer → provider {p6}");
    assert!(lab.can_ping(0, &c6, 5), "provider → consumer {c6}");
    assert!(lab.can_ping(1, &p4, 5), "consumer → provider {p4}");
    assert!(lab.can_ping(0, &c4, 5), "provider → consumer {c4}");
    // TCP both ways (each also carries the echo back).
    assert!(
        tcp_echo(&lab, 0, 1, &p6, "5001", "consumer-to-provider"),
        "TCP consumer → provider"
    );
    assert!(
        tcp_echo(&lab, 1, 0, &c4, "5002", "provider-to-consumer"),
        "TCP provider → consumer"
    );
    let after = c.json(&["fabric"]);
    let peer = &after["status"]["peers"][0];
    assert!(
        peer["rx_bytes"].as_u64().unwrap() > 0 && peer["tx_bytes"].as_u64().unwrap() > 0,
        "{after}"
    );

    // A workload on the provider (process runtime) serves TCP at its overlay address.
    let workload = deploy_server(&c, tmp.path(), &busybox);
    let served = poll(50, Duration::from_millis(300), || {
        let out = lab.run(1, &["busybox", "nc", "-w", "3", &p6, "8080"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("served-by-the-workload")
            .then_some(())
    });
    assert!(
        served.is_some(),
        "the workload was not reached at {p6}:8080\n{}\n{}",
        serde_json::to_string(&c.json(&["workload", &workload])).unwrap(),
        p.log()
    );
    let over_v4 = lab.run(1, &["busybox", "nc", "-w", "3", &p4, "8080"]);
    assert!(
        stdout(&over_v4).contains("served-by-the-workload"),
        "IPv4 overlay: {}",
        stderr(&over_v4)
    );
    let o = c.cli(&["undeploy", &workload]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A restarted provider brings the tunnel of its active contract back.
    assert!(p.stop(), "provider did not stop cleanly: {}", p.log());
    assert!(
        !lab.interface_exists(0, &if_p),
        "shutdown leaves no interface"
    );
    p.start();
    let pf = p.wait_fabric(1);
    assert_eq!(
        pf["status"]["peers"][0]["contracts"][0],
        contract.as_str(),
        "{pf}"
    );
    assert!(lab.interface_exists(0, &if_p));
    assert!(
        lab.can_ping(1, &p6, 10),
        "after restart: consumer → provider"
    );
    assert!(
        lab.can_ping(0, &c6, 5),
        "after restart: provider → consumer"
    );

    // Termination: peers and interfaces go on both sides, traffic stops.
    let o = c.cli(&["contract", "terminate", &contract]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (node, ns, iface) in [(&c, 1, &if_c), (&p, 0, &if_p)] {
        let gone = poll(100, Duration::from_millis(100), || {
            let v = node.json(&["fabric"]);
            let empty = v["status"]["peers"]
                .as_array()
                .is_some_and(|l| l.is_empty());
            (empty && !lab.interface_exists(ns, iface)).then_some(v)
        });
        assert!(
            gone.is_some(),
            "peer or interface left after termination: {}\n{}",
            node.json(&["fabric"]),
            node.log()
        );
    }
    assert!(
        !lab.can_ping(1, &p6, 1),
        "the overlay still carries traffic"
    );
    let routes = lab.run(1, &["ip", "-6", "route", "show"]);
    assert!(!stdout(&routes).contains(&p6), "{}", stdout(&routes));
    assert!(c.stop() && p.stop());
}

/// The userspace backend, chosen in the consumer's config: no interface, `status` says
/// why, and the local port it forwards reaches a workload on the provider (TUN,
/// `auto`) through the tunnel of the contract.
#[test]
fn a_userspace_consumer_reaches_a_provider_workload_through_a_forwarded_port() {
    if !can_run() {
        return;
    }
    let busybox = have("busybox").unwrap();
    let id = unique();
    let lab = Lab::new(&id);
    let tmp = tempfile::tempdir().unwrap();
    let (if_p, if_c) = (format!("flfp{id}"), format!("flfc{id}"));
    let mut p = NsNode::new(&lab, 0, tmp.path().join("p"));
    let mut c = NsNode::new(&lab, 1, tmp.path().join("c"));
    let mut p_id = String::new();
    for (node, addr, iface, backend) in [
        (&p, "198.18.0.1", &if_p, "auto"),
        (&c, "198.18.0.2", &if_c, "userspace"),
    ] {
        let listen = format!("/ip4/{addr}/tcp/7070");
        let o = node.cli(&[
            "--json",
            "init",
            "--mdns",
            "false",
            "--control",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--fabric-interface",
            iface,
            "--fabric-backend",
            backend,
        ]);
        assert!(o.status.success(), "init: {}", stderr(&o));
        if p_id.is_empty() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            p_id = v["node_id"].as_str().unwrap().to_string();
        }
    }
    // The consumer forwards its local port 18080 to the provider's overlay port 8080.
    let p_overlay = fluidos_fabric::overlay::address(&p_id.parse().unwrap());
    let file = c.dir.join("config.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let forward = format!(
        "[fabric]\nforwards = [{{ local = \"127.0.0.1:18080\", remote = \"[{p_overlay}]:8080\" }}]"
    );
    assert!(text.contains("\n[fabric]\n"), "{text}");
    std::fs::write(
        &file,
        text.replacen("\n[fabric]", &format!("\n{forward}"), 1),
    )
    .unwrap();
    p.start();
    c.start();
    peer_up(&p, &c);
    let o = c.cli(&[
        "buy",
        "--cpu",
        "500m",
        "--memory",
        "512MiB",
        "--duration",
        "10m",
    ]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), c.log());

    let cf = c.wait_fabric(1);
    assert_eq!(cf["status"]["backend"]["kind"], "userspace", "{cf}");
    assert_eq!(
        cf["status"]["backend"]["reason"], "configured: userspace",
        "{cf}"
    );
    assert!(
        !lab.interface_exists(1, &if_c),
        "userspace made an interface"
    );
    let status = c.json(&["status"]);
    assert_eq!(status["fabric"]["backend"], "userspace", "{status}");
    let text = stdout(&c.cli(&["status"]));
    assert!(
        text.contains("fabric:      userspace (configured: userspace)"),
        "{text}"
    );
    let pf = p.wait_fabric(1);
    assert_eq!(pf["status"]["backend"]["kind"], "tun", "{pf}");

    let workload = deploy_server(&c, tmp.path(), &busybox);
    let served = poll(50, Duration::from_millis(300), || {
        let out = lab.run(1, &["busybox", "nc", "-w", "3", "127.0.0.1", "18080"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("served-by-the-workload")
            .then_some(())
    });
    assert!(
        served.is_some(),
        "the forwarded port never reached the workload\n{}\n{}",
        c.log(),
        p.log()
    );
    let o = c.cli(&["undeploy", &workload]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Expiry: a second, short contract joins the peer's contracts and leaves them when
    // it expires, on both sides; the first keeps the tunnel.
    let o = c.cli(&[
        "buy",
        "--cpu",
        "500m",
        "--memory",
        "512MiB",
        "--duration",
        "3s",
    ]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), c.log());
    let contracts_of = |node: &NsNode<'_>| -> Option<usize> {
        node.json(&["fabric"])["status"]["peers"][0]["contracts"]
            .as_array()
            .map(Vec::len)
    };
    for node in [&c, &p] {
        let both = poll(100, Duration::from_millis(50), || {
            (contracts_of(node) == Some(2)).then_some(())
        });
        assert!(
            both.is_some(),
            "second contract not in the tunnel: {}",
            node.json(&["fabric"])
        );
    }
    for node in [&c, &p] {
        let expired = poll(200, Duration::from_millis(100), || {
            (contracts_of(node) == Some(1)).then_some(())
        });
        assert!(
            expired.is_some(),
            "the expired contract still admits the tunnel: {}\n{}",
            node.json(&["fabric"]),
            node.log()
        );
    }
    assert!(c.stop() && p.stop());
}

/// `fabric.enabled = false`: no socket, no tunnels, and `fabric` and `status` say
/// which key turns it on (loopback only; needs no privileges).
#[test]
fn a_disabled_fabric_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    common::init_with(&dir, &["--fabric", "false"]);
    let d = common::Daemon::start(&dir);
    let o = common::run(&dir, &["--json", "fabric"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "off", "{v}");
    assert_eq!(v["reason"], "disabled (fabric.enabled = false)", "{v}");
    assert!(v["status"].is_null(), "{v}");
    assert_eq!(d.status()["fabric"]["state"], "off");
    let text = stdout(&common::run(&dir, &["fabric"]));
    assert!(
        text.contains("fabric: off (disabled (fabric.enabled = false))"),
        "{text}"
    );
}
