//! Starting the real `fluidos-node` binary on loopback, with mDNS off, in a
//! temporary data directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_fluidos-node");

/// A command for the binary with a clean environment: no FLUIDOS_* variables
/// from the caller leak in.
pub(crate) fn cmd(data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", data_dir)
        .env("RUST_LOG", "info")
        .arg("--data-dir")
        .arg(data_dir);
    c
}

/// Runs the binary to completion (bounded by `timeout` in the child itself: the
/// commands used here never block).
pub(crate) fn run(data_dir: &Path, args: &[&str]) -> Output {
    cmd(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `init` with loopback-only, ephemeral ports and mDNS off.
pub(crate) fn init(data_dir: &Path) {
    let o = run(
        data_dir,
        &[
            "init",
            "--mdns",
            "false",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--control",
            "127.0.0.1:0",
        ],
    );
    assert!(o.status.success(), "init failed: {}", stderr(&o));
}

/// [`init`] plus `extra` flags (an `--listen` in `extra` replaces the default one),
/// with `--json`; returns what `init` printed (`node_id`, `peer_id`, `config`, …).
pub(crate) fn init_with(data_dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--json",
        "init",
        "--mdns",
        "false",
        "--control",
        "127.0.0.1:0",
    ];
    // `--listen` accumulates, so the default is left out when `extra` has one.
    if !extra.contains(&"--listen") {
        args.extend(["--listen", "/ip4/127.0.0.1/tcp/0"]);
    }
    args.extend_from_slice(extra);
    let o = run(data_dir, &args);
    assert!(o.status.success(), "init failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A loopback TCP port that was free a moment ago (bound to port 0, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `f` every `every` until it returns `Some`, at most `tries` times.
pub(crate) fn poll<T>(tries: u32, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(every);
    }
    None
}

/// The did:keys in `peers --json` of the daemon in `data_dir`.
pub(crate) fn peer_dids(data_dir: &Path) -> Vec<String> {
    let o = run(data_dir, &["peers", "--json"]);
    assert!(o.status.success(), "peers failed: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["node_id"].as_str().map(str::to_string))
        .collect()
}

/// A running daemon; killed on drop if still running.
pub(crate) struct Daemon {
    pub(crate) dir: PathBuf,
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// Starts `run` and waits (≤ 20 s) until its control API answers `status`.
    pub(crate) fn start(dir: &Path) -> Daemon {
        let log = dir.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd(dir)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            dir: dir.to_owned(),
            child: Some(child),
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        for _ in 0..400 {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "daemon exited early ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if self.dir.join("control.addr").exists() {
                let o = run(&self.dir, &["status", "--json"]);
                if o.status.success() {
                    return;
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "daemon not ready within 20 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let o = run(&self.dir, &["status", "--json"]);
        assert!(o.status.success(), "status failed: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Sends SIGTERM (by pid) and waits ≤ 20 s; returns whether it exited 0.
    pub(crate) fn stop(&mut self) -> bool {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
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

    /// Kills it with SIGKILL, as a crash would: nothing is flushed or withdrawn.
    #[allow(dead_code)]
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
