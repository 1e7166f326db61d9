//! Measuring a process runtime replica: from its cgroups where they say, else from `/proc`.

use std::fs;
use std::path::{Path, PathBuf};

/// `/proc` reports cpu times in USER_HZ, which Linux fixes at 100 for user space.
const USER_HZ_NS: u64 = 10_000_000;

/// What one replica used: cumulative cpu ns, memory now, memory peak.
pub(crate) struct Measured {
    pub(crate) cpu_time_ns: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) memory_peak_bytes: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(p).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The pids of the replica: those of its cgroups, else its main process.
fn pids(cgroup_dirs: &[PathBuf], main: u32) -> Vec<u32> {
    for d in cgroup_dirs {
        if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            let v: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if !v.is_empty() {
                return v;
            }
        }
    }
    vec![main]
}

/// utime + stime + cutime + cstime of one process, in ns (children it reaped included).
fn proc_cpu_ns(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state(0) ppid … utime(11) stime(12) cutime(13) cstime(14).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = (11..=14)
        .map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        .sum();
    Some(ticks.saturating_mul(USER_HZ_NS))
}

fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(4096))
}

/// Measures a replica with main process `main` and cgroup directories `cgroup_dirs`.
pub(crate) fn measure(cgroup_dirs: &[PathBuf], main: u32) -> Option<Measured> {
    let pids = pids(cgroup_dirs, main);
    // cgroup v2: exact totals of the replica's cgroup, exited processes included.
    let v2_cpu = cgroup_dirs
        .iter()
        .find_map(|d| stat_field(&d.join("cpu.stat"), "usage_usec"))
        .map(|us| us.saturating_mul(1000));
    let cpu_time_ns = match v2_cpu {
        Some(ns) => ns,
        None => {
            let per: Vec<u64> = pids.iter().filter_map(|p| proc_cpu_ns(*p)).collect();
            if per.is_empty() {
                return None;
            }
            per.iter().sum()
        }
    };
    let mut memory_bytes = None;
    let mut memory_peak_bytes = None;
    for d in cgroup_dirs {
        if let Some(cur) = read_u64(&d.join("memory.current")) {
            let inactive = stat_field(&d.join("memory.stat"), "inactive_file").unwrap_or(0);
            memory_bytes = Some(cur.saturating_sub(inactive));
            memory_peak_bytes = read_u64(&d.join("memory.peak"));
        } else if let Some(cur) = read_u64(&d.join("memory.usage_in_bytes")) {
            let inactive = stat_field(&d.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            memory_bytes = Some(cur.saturating_sub(inactive));
            memory_peak_bytes = read_u64(&d.join("memory.max_usage_in_bytes"));
        }
    }
    let memory_bytes =
        memory_bytes.unwrap_or_else(|| pids.iter().filter_map(|p| proc_rss_bytes(*p)).sum());
    Some(Measured {
        cpu_time_ns,
        memory_bytes,
        memory_peak_bytes,
    })
}
