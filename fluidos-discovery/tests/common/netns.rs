//! Two network namespaces joined by a veth pair (198.18.0.1/24 and 198.18.0.2/24), for
//! mDNS tests and benchmarks. Removed on drop, also when a test fails.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why namespaces cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string));
    if uid.as_deref() != Some("0") {
        return Some("not running as root (effective uid is not 0)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is not available".into()),
    }
}

/// Skips (prints why) or, when `CI` is set, fails.
pub fn skip_unless_available(test: &str) -> bool {
    match unavailable() {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("{test} cannot run in CI: {why}"),
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

impl NetnsPair {
    /// Creates the pair; names carry the process id and `tag` so runs never collide.
    pub fn create(tag: &str) -> Result<Self, String> {
        let id = format!("{}{tag}", std::process::id() % 1_000_000);
        let pair = NetnsPair {
            a: format!("fdm{id}a"),
            b: format!("fdm{id}b"),
        };
        let (va, vb) = (format!("fv{id}a"), format!("fv{id}b"));
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        ip(&["link", "set", &va, "netns", &pair.a])?;
        ip(&["link", "set", &vb, "netns", &pair.b])?;
        for (ns, dev, addr) in [
            (&pair.a, &va, "198.18.0.1/24"),
            (&pair.b, &vb, "198.18.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up", "multicast", "on"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(pair)
    }

    /// Starts `bin args…` inside namespace `ns` with stdout piped.
    pub fn spawn(&self, ns: &str, bin: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", ns, bin])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it its peer.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Waits for a child up to `limit`, killing it past that; returns its stdout.
pub fn collect(mut child: Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    out
}

/// The `SELF` id and the `(id, ms)` of each `CANDIDATE` line of a probe's output.
pub fn parse_probe(out: &str) -> (Option<String>, Vec<(String, u64)>) {
    let mut me = None;
    let mut seen = Vec::new();
    for line in out.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["SELF", id] => me = Some(id.to_string()),
            ["CANDIDATE", id, ms] => seen.push((id.to_string(), ms.parse().unwrap_or(u64::MAX))),
            _ => {}
        }
    }
    (me, seen)
}
