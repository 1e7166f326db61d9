//! The contract-driven service (`fluidos-fabric-peer --tunnels`, what the daemon
//! runs) in real network namespaces, addresses from 198.18.0.0/15 only:
//!
//! - lifecycle: a contract brings the tunnel up (ping both ways, a TCP workload on the
//!   provider reached from the consumer at the provider's overlay address), a restart
//!   restores it, a forged key gets no response, termination removes peer, routes
//!   and interface and the revoked key gets no response either;
//! - hub-and-spoke: A and C, with no link between them, reach each other only through
//!   hub B, which forwards only the pair its policy lists.
//!
//! Needs root, `ip`, `/dev/net/tun`, `ping` and `iperf3`: skipped with a message when
//! missing, failed when CI is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fluidos_contracts::{ContractId, NodeId, SecretKey};
use fluidos_fabric::{
    ContractPeer, Desired, FabricParams, Forward, Forwarding, Relayed, Status, fabric_params,
    keyfile, overlay,
};

const PEER_BIN: &str = env!("CARGO_BIN_EXE_fluidos-fabric-peer");
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the test can run; prints why not, and panics instead under CI.
fn can_run(tools: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !have(t))
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
    let message = format!("netns tunnels test needs {}", missing.join(", "));
    assert!(
        std::env::var_os("CI").is_none(),
        "{message} (CI is set, so this fails)"
    );
    eprintln!("skipping: {message}");
    false
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces and veth links between them; removes everything on drop.
struct Lab {
    id: String,
    ns: Vec<String>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(count: usize) -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ns: Vec<String> = (0..count).map(|i| format!("fltun{id}n{i}")).collect();
        let lab = Self {
            id,
            ns: ns.clone(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for n in &ns {
            must(&["ip", "netns", "add", n]);
            lab.exec_in(n, &["ip", "link", "set", "lo", "up"]);
        }
        lab
    }

    /// A veth pair between namespaces `a` and `b` carrying 198.18.`net`.1/24 and .2/24.
    fn link(&self, a: usize, b: usize, net: u8) {
        let (va, vb) = (
            format!("v{}{a}{b}a", self.id),
            format!("v{}{a}{b}b", self.id),
        );
        must(&[
            "ip",
            "link",
            "add",
            &va,
            "netns",
            &self.ns[a],
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            &self.ns[b],
        ]);
        for (i, (side, v)) in [(a, &va), (b, &vb)].into_iter().enumerate() {
            self.exec(
                side,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.{net}.{}/24", i + 1),
                    "dev",
                    v,
                ],
            );
            self.exec(side, &["ip", "link", "set", v, "up"]);
        }
    }

    fn exec_in(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        must(&full)
    }

    fn exec(&self, i: usize, args: &[&str]) -> String {
        self.exec_in(&self.ns[i], args)
    }

    fn try_exec(&self, i: usize, args: &[&str]) -> std::process::Output {
        let mut full = vec!["ip", "netns", "exec", &self.ns[i]];
        full.extend_from_slice(args);
        run(&full)
    }

    fn can_ping(&self, i: usize, addr: &str, tries: usize) -> bool {
        (0..tries).any(|_| {
            self.try_exec(i, &["ping", "-c", "2", "-W", "2", addr])
                .status
                .success()
        })
    }

    /// TCP from namespace `client` to a workload listening on `addr` in `server`:
    /// iperf3 moves 1 MB; returns whether it worked (5 tries).
    fn tcp(&mut self, server: usize, client: usize, addr: &str) -> bool {
        self.tcp_via(server, addr, client, addr, "5201")
    }

    /// TCP from namespace `client` to `target:port` reaching a workload that listens
    /// on `listen:5201` in namespace `server`.
    fn tcp_via(
        &mut self,
        server: usize,
        listen: &str,
        client: usize,
        target: &str,
        port: &str,
    ) -> bool {
        let (addr, server_addr) = (target, listen);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[server]])
            .args(["iperf3", "-s", "-1", "-B", server_addr, "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        let idx = self.children.len() - 1;
        std::thread::sleep(Duration::from_millis(300));
        let ok = (0..5).any(|_| {
            let out = self.try_exec(
                client,
                &[
                    "iperf3",
                    "-c",
                    addr,
                    "-p",
                    port,
                    "-n",
                    "1M",
                    "--connect-timeout",
                    "3000",
                ],
            );
            if !out.status.success() {
                std::thread::sleep(Duration::from_millis(300));
            }
            out.status.success()
        });
        let _ = self.children[idx].kill();
        let _ = self.children[idx].wait();
        ok
    }

    /// Bytes the workload (iperf3 on `listen:5201` in `server`) received in a
    /// 2-second run from namespace `client` to `target:port`, as iperf3 reports them;
    /// `None` when the run failed.
    fn received(
        &mut self,
        server: usize,
        listen: &str,
        client: usize,
        target: &str,
        port: &str,
    ) -> Option<u64> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[server]])
            .args(["iperf3", "-s", "-1", "-B", listen, "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        let idx = self.children.len() - 1;
        std::thread::sleep(Duration::from_millis(300));
        let out = self.try_exec(
            client,
            &[
                "iperf3",
                "-c",
                target,
                "-p",
                port,
                "-t",
                "2",
                "-J",
                "--connect-timeout",
                "3000",
            ],
        );
        let _ = self.children[idx].kill();
        let _ = self.children[idx].wait();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        report["end"]["sum_received"]["bytes"].as_u64()
    }

    /// Starts the tunnels service in namespace `i`.
    fn start(&mut self, i: usize, node: &Party, interface: &str) -> Service {
        self.start_with(i, node, interface, serde_json::json!({}))
    }

    /// Starts the tunnels service in namespace `i` with extra settings.
    fn start_with(
        &mut self,
        i: usize,
        node: &Party,
        interface: &str,
        extra: serde_json::Value,
    ) -> Service {
        let mut config = serde_json::json!({
            "interface": interface,
            "listen": node.listen,
            "key_file": node.key_file,
            "node_id": node.id,
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let path = self
            .dir
            .path()
            .join(format!("svc{i}-{}.json", self.children.len()));
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns[i], PEER_BIN, "--tunnels"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::sync_channel(16);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.children.push(child);
        let svc = Service {
            index: self.children.len() - 1,
            stdin: Some(stdin),
            lines: rx,
        };
        assert_eq!(svc.line(), "ready");
        svc
    }

    /// Stops a service through `quit` and waits (at most 10 s) for it to exit.
    fn stop(&mut self, mut svc: Service) {
        svc.send("quit");
        drop(svc.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.children[svc.index].try_wait() {
                assert!(status.success(), "service exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("service did not stop within 10 s");
    }

    fn has_link(&self, i: usize, name: &str) -> bool {
        self.try_exec(i, &["ip", "link", "show", name])
            .status
            .success()
    }

    fn routes(&self, i: usize, interface: &str) -> String {
        let mut all = self.exec(i, &["ip", "-6", "route", "show", "dev", interface]);
        all.push_str(&self.exec(i, &["ip", "-4", "route", "show", "dev", interface]));
        all
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in &self.ns {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// One running service, steered through its standard input.
struct Service {
    index: usize,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Service {
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("service did not answer in 20 s")
    }

    fn apply(&mut self, desired: &Desired) -> serde_json::Value {
        self.send(&format!(
            "apply {}",
            serde_json::to_string(desired).unwrap()
        ));
        let answer: serde_json::Value = serde_json::from_str(&self.line()).unwrap();
        assert!(answer.get("error").is_none(), "{answer}");
        answer
    }

    fn status(&mut self) -> Status {
        self.send("status");
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("status {line:?}: {e}"))
    }
}

/// A node of the test: identity, WireGuard key file, endpoint.
struct Party {
    id: NodeId,
    key_file: std::path::PathBuf,
    listen: SocketAddr,
    params: FabricParams,
}

impl Party {
    fn new(lab: &Lab, seed: u8, listen: &str) -> Self {
        let id = SecretKey::from_seed(&[seed; 32]).node_id();
        let key_file = lab.dir.path().join(format!("wg{seed}.key"));
        let (secret, _) = keyfile::load_or_create(&key_file).unwrap();
        let listen: SocketAddr = listen.parse().unwrap();
        let params = fabric_params(&secret, [listen], &id);
        Self {
            id,
            key_file,
            listen,
            params,
        }
    }

    fn v6(&self) -> String {
        overlay::address(&self.id).to_string()
    }

    fn v4(&self) -> String {
        overlay::ipv4_address(&self.id).to_string()
    }

    fn as_peer(&self, contract: u8) -> ContractPeer {
        ContractPeer {
            contract: ContractId([contract; 16]),
            node: self.id,
            params: self.params.clone(),
        }
    }
}

fn mesh(peers: Vec<ContractPeer>) -> Desired {
    Desired {
        peers,
        ..Desired::default()
    }
}

#[test]
fn contracts_bring_tunnels_up_restore_them_and_tear_them_down() {
    if !can_run(&["ip", "ping", "iperf3"]) {
        return;
    }
    // 0: provider P, 1: consumer C, 2: a forger F with its own link to P.
    let mut lab = Lab::new(3);
    lab.link(0, 1, 0);
    lab.link(0, 2, 1);
    let mut p = Party::new(&lab, 1, "198.18.0.1:51820");
    // The provider listens on both of its links.
    p.listen = "0.0.0.0:51820".parse().unwrap();
    let c = Party::new(&lab, 2, "198.18.0.2:51820");
    let f = Party::new(&lab, 3, "198.18.1.2:51820");

    let mut sp = lab.start(0, &p, "flp0");
    let mut sc = lab.start(1, &c, "flc0");
    // Nothing active: no interface yet.
    assert!(!lab.has_link(0, "flp0"));
    let dp = mesh(vec![c.as_peer(1)]);
    let dc = mesh(vec![p.as_peer(1)]);
    assert_eq!(sp.apply(&dp)["added"], 1);
    assert_eq!(sc.apply(&dc)["added"], 1);
    assert!(lab.has_link(0, "flp0"));
    assert!(lab.routes(0, "flp0").contains(&c.v6()));

    assert!(lab.can_ping(1, &p.v6(), 3), "consumer cannot ping provider");
    assert!(lab.can_ping(0, &c.v6(), 3), "provider cannot ping consumer");
    assert!(lab.can_ping(1, &p.v4(), 3), "no IPv4 overlay");
    // The workload: a TCP server on the provider's overlay address.
    assert!(lab.tcp(0, 1, &p.v6()), "workload unreachable over IPv6");
    assert!(lab.tcp(0, 1, &p.v4()), "workload unreachable over IPv4");

    let status = sp.status();
    assert_eq!(status.backend.kind, fluidos_fabric::BackendKind::Tun);
    assert_eq!(status.peers.len(), 1);
    assert!(status.peers[0].latest_handshake_secs.is_some());
    assert!(status.peers[0].rx_bytes > 500_000, "{status:?}");
    sp.send("show");
    let shown: Vec<String> = std::iter::from_fn(|| Some(sp.line()))
        .take_while(|l| l != ".")
        .take(50)
        .collect();
    assert_eq!(shown[0], "interface: flp0");
    assert!(shown.iter().any(|l| l.starts_with("peer: ")), "{shown:?}");

    // A forger claims the contract with its own key: the provider never answers.
    let mut sf = lab.start(2, &f, "flf0");
    let mut forged = p.as_peer(1);
    forged.params.endpoints = vec!["198.18.1.1:51820".into()];
    sf.apply(&mesh(vec![forged]));
    assert!(!lab.can_ping(2, &p.v6(), 1));
    let fs = sf.status();
    assert_eq!(
        fs.peers[0].latest_handshake_secs, None,
        "forger got a handshake"
    );
    assert_eq!(fs.peers[0].rx_bytes, 0);
    assert!(
        sp.status().drops.unknown_key >= 1,
        "initiations did not arrive"
    );

    // The consumer restarts: the interface goes with it, and comes back with the
    // same active contracts.
    lab.stop(sc);
    assert!(!lab.has_link(1, "flc0"));
    let mut sc = lab.start(1, &c, "flc0");
    assert!(!lab.can_ping(1, &p.v6(), 1));
    sc.apply(&dc);
    assert!(
        lab.can_ping(1, &p.v6(), 3),
        "tunnel not restored after restart"
    );
    assert!(lab.tcp(0, 1, &p.v6()), "workload unreachable after restart");

    // The provider terminates the contract: peer, routes and interface are gone.
    let report = sp.apply(&Desired::default());
    assert_eq!(report["ended"][0], ContractId([1; 16]).to_string());
    assert!(!lab.has_link(0, "flp0"));
    assert!(sp.status().peers.is_empty());
    assert!(!lab.can_ping(1, &p.v6(), 1));
    // The consumer, restarted with the ended contract (as a stale or malicious peer
    // would), gets no answer at all: no handshake completes.
    lab.stop(sc);
    let mut sc = lab.start(1, &c, "flc0");
    sc.apply(&dc);
    assert!(!lab.can_ping(1, &p.v6(), 1));
    let cs = sc.status();
    assert_eq!(
        cs.peers[0].latest_handshake_secs, None,
        "revoked key answered"
    );
    assert_eq!(cs.peers[0].rx_bytes, 0);
    // Re-applying the ended contract on the provider is refused.
    let report = sp.apply(&dp);
    assert_eq!(report["added"], 0);
    assert_eq!(report["refused"].as_array().unwrap().len(), 1);
    assert!(!lab.has_link(0, "flp0"));
    lab.stop(sp);
}

#[test]
fn spokes_reach_each_other_only_through_the_hub() {
    if !can_run(&["ip", "ping", "iperf3"]) {
        return;
    }
    // 0: spoke A, 1: hub B, 2: spoke C. Links A–B and B–C only.
    let mut lab = Lab::new(3);
    lab.link(0, 1, 2);
    lab.link(1, 2, 3);
    let a = Party::new(&lab, 11, "198.18.2.1:51820");
    let b_for_a = Party::new(&lab, 12, "198.18.2.2:51820");
    // The hub listens on every address; each spoke is told the one on its link.
    let mut b_for_c = Party::new(&lab, 12, "198.18.3.1:51820");
    b_for_c.listen = "0.0.0.0:51820".parse().unwrap();
    let c = Party::new(&lab, 13, "198.18.3.2:51820");
    let hub = b_for_a.id;
    let relayed = |node: &Party| Relayed {
        contract: ContractId([10; 16]),
        node: node.id,
        hub,
    };
    let mut sa = lab.start(0, &a, "fla0");
    let mut sb = lab.start(1, &b_for_c, "flb0");
    let mut sc = lab.start(2, &c, "flc0");
    let da = Desired {
        peers: vec![b_for_a.as_peer(1)],
        relayed: vec![relayed(&c)],
        forwarding: Forwarding::None,
    };
    let dc = Desired {
        peers: vec![b_for_c.as_peer(2)],
        relayed: vec![relayed(&a)],
        forwarding: Forwarding::None,
    };
    let db = Desired {
        peers: vec![a.as_peer(1), c.as_peer(2)],
        relayed: Vec::new(),
        forwarding: Forwarding::Pairs(vec![Forward {
            contract: ContractId([10; 16]),
            a: a.id,
            b: c.id,
        }]),
    };
    for (svc, d) in [(&mut sa, &da), (&mut sb, &db), (&mut sc, &dc)] {
        let r = svc.apply(d);
        assert!(r["refused"].as_array().unwrap().is_empty(), "{r}");
    }
    // No path between A and C but the hub.
    assert!(!lab.can_ping(0, "198.18.3.2", 1));
    assert!(lab.routes(0, "fla0").contains(&c.v6()));

    assert!(lab.can_ping(0, &c.v6(), 3), "A cannot reach C through B");
    assert!(lab.can_ping(2, &a.v6(), 3), "C cannot reach A through B");
    assert!(lab.can_ping(0, &c.v4(), 3), "no IPv4 through the hub");
    assert!(lab.tcp(2, 0, &c.v6()), "TCP from A to C through B failed");
    let hub_status = sb.status();
    assert!(hub_status.forwarded > 0);
    assert_eq!(hub_status.forwarding.len(), 1);

    // The hub stops forwarding the pair (the A–C contract ended): A and C are cut
    // off, while each still reaches the hub.
    let db2 = Desired {
        forwarding: Forwarding::Pairs(Vec::new()),
        ..db.clone()
    };
    sb.apply(&db2);
    assert!(!lab.can_ping(0, &c.v6(), 1));
    assert!(sb.status().drops.forbidden > 0);
    assert!(lab.can_ping(0, &b_for_a.v6(), 3), "A lost the hub");
    for s in [sa, sb, sc] {
        lab.stop(s);
    }
}

#[test]
fn the_userspace_backend_forwards_a_local_port_to_a_remote_workload() {
    if !can_run(&["ip", "iperf3"]) {
        return;
    }
    // 0: provider with a TUN interface and the workload; 1: consumer with the
    // userspace backend (no interface), forwarding 127.0.0.1:15201 to the workload.
    let mut lab = Lab::new(2);
    lab.link(0, 1, 4);
    let p = Party::new(&lab, 21, "198.18.4.1:51820");
    let c = Party::new(&lab, 22, "198.18.4.2:51820");
    let mut sp = lab.start(0, &p, "flp1");
    let forwards = serde_json::json!({
        "backend": "userspace",
        "forwards": [
            { "local": "127.0.0.1:15201", "remote": format!("[{}]:5201", p.v6()) },
            { "local": "127.0.0.1:15202", "remote": format!("{}:5201", p.v4()) },
        ],
    });
    let mut sc = lab.start_with(1, &c, "flu1", forwards);
    sp.apply(&mesh(vec![c.as_peer(5)]));
    sc.apply(&mesh(vec![p.as_peer(5)]));
    let status = sc.status();
    assert_eq!(status.backend.kind, fluidos_fabric::BackendKind::Userspace);
    assert!(
        status.backend.reason.contains("userspace"),
        "{:?}",
        status.backend
    );
    // No interface and no route on the consumer: only the forwarded ports cross.
    assert!(!lab.has_link(1, "flu1"));
    assert!(
        !lab.exec(1, &["ip", "-6", "route", "show"])
            .contains(&p.v6()),
        "the userspace backend installed a route"
    );

    let v6 = lab.received(0, &p.v6(), 1, "127.0.0.1", "15201");
    eprintln!("userspace forward, IPv6: the workload received {v6:?} bytes in 2 s");
    assert!(
        v6.is_some_and(|b| b > 0),
        "workload unreachable through the IPv6 forward"
    );
    let v4 = lab.received(0, &p.v4(), 1, "127.0.0.1", "15202");
    eprintln!("userspace forward, IPv4: the workload received {v4:?} bytes in 2 s");
    assert!(
        v4.is_some_and(|b| b > 0),
        "workload unreachable through the IPv4 forward"
    );
    let status = sc.status();
    assert!(status.peers[0].tx_bytes > 0, "{status:?}");

    // The contract ends on the consumer: the forwarded port stops answering.
    sc.apply(&Desired::default());
    assert_eq!(lab.received(0, &p.v6(), 1, "127.0.0.1", "15201"), None);
    lab.stop(sc);
    lab.stop(sp);
}
