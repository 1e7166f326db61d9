//! The TUN backend in real network namespaces: two namespaces joined only by a veth
//! pair (198.18.0.0/15), each running `fluidos-fabric-peer` (or wireguard-go for the
//! interop test). Both sites also carry the same private subnet (198.19.0.0/24) on a
//! the loopback interface (no dummy module needed), so the overlay must work with overlapping site addressing.
//!
//! Needs root, `ip`, `/dev/net/tun`, `ping` and `iperf3` (and `wireguard-go` + `wg`
//! for the interop test): skipped with a message when missing, failed when CI is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
    let message = format!("netns fabric test needs {}", missing.join(", "));
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

/// Two namespaces joined by a veth pair; removes them (and kills what runs in them)
/// on drop, whatever happened.
struct Pair {
    ns: [String; 2],
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ns = [format!("flfab{id}a"), format!("flfab{id}b")];
        let pair = Self {
            ns: ns.clone(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for n in &ns {
            must(&["ip", "netns", "add", n]);
        }
        let (va, vb) = (format!("ve{id}a"), format!("ve{id}b"));
        must(&[
            "ip", "link", "add", &va, "netns", &ns[0], "type", "veth", "peer", "name", &vb,
            "netns", &ns[1],
        ]);
        for (i, (n, v)) in ns.iter().zip([&va, &vb]).enumerate() {
            pair.exec(
                i,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.0.{}/24", i + 1),
                    "dev",
                    v,
                ],
            );
            pair.exec(i, &["ip", "link", "set", v, "up"]);
            pair.exec(i, &["ip", "link", "set", "lo", "up"]);
            // Both sites use the same private subnet locally.
            pair.exec(i, &["ip", "addr", "add", "198.19.0.1/24", "dev", "lo"]);
            let _ = n;
        }
        pair
    }

    fn exec(&self, i: usize, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.ns[i]];
        full.extend_from_slice(args);
        must(&full)
    }

    fn try_exec(&self, i: usize, args: &[&str]) -> std::process::Output {
        let mut full = vec!["ip", "netns", "exec", &self.ns[i]];
        full.extend_from_slice(args);
        run(&full)
    }

    fn spawn(&mut self, i: usize, args: &[&str]) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[i]])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Starts the fluidos peer in namespace `i` and waits (at most 20 s) for `ready`.
    fn start_peer(&mut self, i: usize, config: &serde_json::Value) -> usize {
        let path = self.dir.path().join(format!("peer{i}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let idx = self.spawn(i, &[PEER_BIN, path.to_str().unwrap()]);
        let stdout = self.children[idx].stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("peer did not get ready in 20 s");
        assert!(line.starts_with("ready"), "peer said {line:?}");
        idx
    }

    fn stop(&mut self, idx: usize) {
        let pid = self.children[idx].id().to_string();
        let _ = run(&["kill", "-TERM", &pid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.children[idx].try_wait() {
                assert!(status.success(), "peer exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("peer did not stop within 10 s");
    }

    fn key(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join(format!("{name}.key"));
        let public = must(&[PEER_BIN, "--pubkey", path.to_str().unwrap()]);
        (path, public.trim().to_owned())
    }

    fn ping(&self, i: usize, addr: &str) {
        // Bounded: 3 tries of up to 5 pings each (the first may wait for the handshake).
        for _ in 0..3 {
            if self
                .try_exec(i, &["ping", "-c", "2", "-W", "2", addr])
                .status
                .success()
            {
                return;
            }
        }
        panic!("namespace {i} cannot ping {addr}");
    }

    /// TCP from namespace `client` to `addr` in namespace `server`: iperf3 sends 1 MB.
    fn tcp(&mut self, server: usize, client: usize, addr: &str) {
        let server_idx = self.spawn(server, &["iperf3", "-s", "-1", "-B", addr, "-p", "5201"]);
        std::thread::sleep(Duration::from_millis(300));
        let mut ok = false;
        for _ in 0..5 {
            let out = self.try_exec(
                client,
                &[
                    "iperf3",
                    "-c",
                    addr,
                    "-p",
                    "5201",
                    "-n",
                    "1M",
                    "--connect-timeout",
                    "3000",
                ],
            );
            if out.status.success() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = self.children[server_idx].kill();
        let _ = self.children[server_idx].wait();
        assert!(
            ok,
            "TCP from namespace {client} to {addr} in {server} failed"
        );
    }
}

impl Drop for Pair {
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

fn peer_config(
    interface: &str,
    listen: &str,
    key_file: &Path,
    address: &str,
    ipv4: &str,
    peer_key: &str,
    endpoint: &str,
    peer_address: &str,
    peer_ipv4: &str,
) -> serde_json::Value {
    serde_json::json!({
        "interface": interface,
        "listen": listen,
        "key_file": key_file,
        "address": address,
        "ipv4": ipv4,
        "peers": [ {
            "public_key": peer_key,
            "endpoint": endpoint,
            "allowed_ips": [format!("{peer_address}/128"), format!("{peer_ipv4}/32")],
        } ],
    })
}

const OA: &str = "fdf0:6a54:bda7::a";
const OB: &str = "fdf0:6a54:bda7::b";

#[test]
fn two_fluidos_nodes_ping_and_tcp_both_ways_then_tear_down() {
    if !can_run(&["ip", "ping", "iperf3"]) {
        return;
    }
    let mut pair = Pair::new();
    let (ka, pa) = pair.key("a");
    let (kb, pb) = pair.key("b");
    let a = peer_config(
        "fla0",
        "198.18.0.1:51820",
        &ka,
        OA,
        "100.64.0.10",
        &pb,
        "198.18.0.2:51820",
        OB,
        "100.64.0.11",
    );
    let b = peer_config(
        "flb0",
        "198.18.0.2:51820",
        &kb,
        OB,
        "100.64.0.11",
        &pa,
        "198.18.0.1:51820",
        OA,
        "100.64.0.10",
    );
    let ia = pair.start_peer(0, &a);
    pair.start_peer(1, &b);

    pair.ping(0, OB);
    pair.ping(1, OA);
    pair.ping(0, "100.64.0.11");
    pair.tcp(1, 0, OB);
    pair.tcp(0, 1, OA);
    // The overlapping site subnet stayed local on both sides.
    assert!(
        pair.exec(0, &["ip", "-4", "route", "get", "198.19.0.1"])
            .contains("dev lo")
    );

    // The route to B's overlay address goes through the fabric interface.
    assert!(
        pair.exec(0, &["ip", "-6", "route", "show", &format!("{OB}/128")])
            .contains("dev fla0")
    );
    pair.stop(ia);
    // Teardown: interface and routes are gone, B is unreachable.
    assert!(
        !pair
            .try_exec(0, &["ip", "link", "show", "fla0"])
            .status
            .success()
    );
    assert!(
        pair.exec(0, &["ip", "-6", "route", "show", &format!("{OB}/128")])
            .trim()
            .is_empty()
    );
    assert!(
        pair.exec(0, &["ip", "-4", "route", "show", "100.64.0.11/32"])
            .trim()
            .is_empty()
    );
    assert!(
        !pair
            .try_exec(1, &["ping", "-c", "1", "-W", "1", OA])
            .status
            .success()
    );
}

#[test]
fn a_fluidos_node_interoperates_with_wireguard_go() {
    if !can_run(&["ip", "ping", "iperf3", "wireguard-go", "wg"]) {
        return;
    }
    let mut pair = Pair::new();
    let (ka, pa) = pair.key("a");
    let (kb, pb) = pair.key("b");
    let a = peer_config(
        "flw0",
        "198.18.0.1:51820",
        &ka,
        OA,
        "100.64.0.10",
        &pb,
        "198.18.0.2:51820",
        OB,
        "100.64.0.11",
    );
    pair.start_peer(0, &a);

    // The reference implementation in namespace B, configured by `wg`.
    let wg_if = format!("wgo{}", &pair.ns[1][5..pair.ns[1].len().min(14)]);
    let wg_if: String = wg_if.chars().take(15).collect();
    let mut go = Command::new("ip")
        .args(["netns", "exec", &pair.ns[1], "wireguard-go", "-f", &wg_if])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = format!("/var/run/wireguard/{wg_if}.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(&sock).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let setup = || {
        pair.exec(
            1,
            &[
                "wg",
                "set",
                &wg_if,
                "private-key",
                kb.to_str().unwrap(),
                "listen-port",
                "51820",
                "peer",
                &pa,
                "endpoint",
                "198.18.0.1:51820",
                "allowed-ips",
                &format!("{OA}/128,100.64.0.10/32"),
            ],
        );
        pair.exec(
            1,
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{OB}/128"),
                "dev",
                &wg_if,
                "nodad",
            ],
        );
        pair.exec(1, &["ip", "link", "set", &wg_if, "mtu", "1420", "up"]);
        pair.exec(
            1,
            &[
                "ip",
                "-6",
                "route",
                "add",
                &format!("{OA}/128"),
                "dev",
                &wg_if,
            ],
        );
    };
    setup();
    pair.ping(0, OB);
    pair.ping(1, OA);
    pair.tcp(1, 0, OB);
    pair.tcp(0, 1, OA);
    let show = pair.exec(1, &["wg", "show", &wg_if, "latest-handshakes"]);
    assert!(show.contains(&pa), "{show}");
    assert!(
        !show.trim().ends_with("\t0"),
        "wireguard-go saw a handshake: {show}"
    );
    let _ = go.kill();
    let _ = go.wait();
    let _ = std::fs::remove_file(&sock);
}
