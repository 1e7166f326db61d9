//! cgroup detection (by the runtime) and per-replica cgroups (made by the supervisor).
//!
//! - **v2**: a parent cgroup whose `cgroup.controllers` offers `memory` and `cpu` and where we
//!   may create children. It is the one configured with [`CgroupMode::V2`], or in `Auto` mode
//!   the root of the cgroup2 mount when this process's own cgroup is that root (a container
//!   with its own cgroup namespace, or a host daemon not placed by systemd). A replica gets
//!   `<parent>/fluidos-<replica>-<supervisor pid>` with `memory.max`, `memory.swap.max = 0`,
//!   `memory.oom.group = 1`, `cpu.max` and `pids.max`.
//! - **v1**: for each of the `memory`, `cpu` and `pids` hierarchies that is mounted, a
//!   `fluidos` cgroup under this process's own cgroup in that hierarchy (so replicas stay
//!   inside whatever limits the daemon itself runs under). A replica gets a child there with
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` when swap is accounted),
//!   `cpu.cfs_quota_us` / `cpu.cfs_period_us` and `pids.max`.
//!
//! Both are probed at start by creating and removing a child cgroup, so "applies" means "was
//! just shown to work", not "is mounted".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::spec::Limits;
use super::types::Enforcement;

/// Whether and how the process runtime uses cgroups.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CgroupMode {
    /// Use cgroup v2 where it works, else cgroup v1, else fall back to rlimits.
    #[default]
    Auto,
    /// Use this cgroup v2 directory as the parent of replicas' cgroups (a delegated subtree).
    V2(PathBuf),
    /// Never use cgroups: rlimits only.
    Off,
}

/// What the supervisor should create for each replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CgroupPlan {
    V2 {
        parent: PathBuf,
        pids: bool,
    },
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

impl CgroupPlan {
    pub(crate) fn enforcement(&self) -> (Enforcement, Enforcement, Enforcement) {
        match self {
            Self::V2 { pids, .. } => (
                Enforcement::CgroupV2,
                Enforcement::CgroupV2,
                if *pids {
                    Enforcement::CgroupV2
                } else {
                    Enforcement::None
                },
            ),
            Self::V1 { memory, cpu, pids } => {
                let e = |o: &Option<PathBuf>| {
                    if o.is_some() {
                        Enforcement::CgroupV1
                    } else {
                        Enforcement::None
                    }
                };
                (e(memory), e(cpu), e(pids))
            }
        }
    }

    pub(crate) fn has_memory(&self) -> bool {
        matches!(
            self,
            Self::V2 { .. }
                | Self::V1 {
                    memory: Some(_),
                    ..
                }
        )
    }
}

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn mounts() -> Vec<Mount> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The mounts of a `/proc/<pid>/mountinfo` text (proc(5)): root, mount point, fs type and
/// super options of each line.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(Mount {
                root: (*pre.get(3)?).to_owned(),
                point: PathBuf::from(*pre.get(4)?),
                fstype: (*post.first()?).to_owned(),
                super_opts: (*post.get(2)?).to_owned(),
            })
        })
        .collect()
}

/// This process's cgroup path in the hierarchy named `controller` ("" = the v2 hierarchy).
fn own_cgroup(controller: &str) -> Option<String> {
    parse_own_cgroup(&fs::read_to_string("/proc/self/cgroup").ok()?, controller)
}

/// The path for `controller` in a `/proc/<pid>/cgroup` text (`id:controllers:path` lines).
fn parse_own_cgroup(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_owned())
    })
}

fn join_cgroup_path(m: &Mount, own: &str) -> PathBuf {
    let rel = if m.root == "/" {
        own
    } else {
        own.strip_prefix(m.root.as_str()).unwrap_or(own)
    };
    m.point.join(rel.trim_start_matches('/'))
}

fn probe_dir(parent: &Path, limit_file: &str, value: &str) -> bool {
    let probe = parent.join(format!("fluidos-probe-{}", std::process::id()));
    let _ = fs::remove_dir(&probe);
    if fs::create_dir(&probe).is_err() {
        return false;
    }
    let ok = fs::write(probe.join(limit_file), value).is_ok();
    let _ = fs::remove_dir(&probe);
    ok
}

fn detect_v2(parent: Option<PathBuf>) -> Option<CgroupPlan> {
    let parent = match parent {
        Some(p) => p,
        None => {
            let m = mounts().into_iter().find(|m| m.fstype == "cgroup2")?;
            let own = own_cgroup("")?;
            if own != "/" {
                return None;
            }
            m.point
        }
    };
    let ctrls = fs::read_to_string(parent.join("cgroup.controllers")).ok()?;
    let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
    if !has("memory") || !has("cpu") {
        return None;
    }
    let pids = has("pids");
    let want = if pids {
        "+memory +cpu +pids"
    } else {
        "+memory +cpu"
    };
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    let on = |c: &str| enabled.split_whitespace().any(|x| x == c);
    if !(on("memory") && on("cpu") && (!pids || on("pids"))) {
        fs::write(parent.join("cgroup.subtree_control"), want).ok()?;
    }
    probe_dir(&parent, "memory.max", "max").then_some(CgroupPlan::V2 { parent, pids })
}

fn detect_v1() -> Option<CgroupPlan> {
    let ms = mounts();
    let parent_for = |ctrl: &str, file: &str, value: &str| -> Option<PathBuf> {
        let m = ms
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_opts.split(',').any(|o| o == ctrl))?;
        let own = own_cgroup(ctrl)?;
        let parent = join_cgroup_path(m, &own).join("fluidos");
        if let Err(e) = fs::create_dir(&parent)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return None;
        }
        probe_dir(&parent, file, value).then_some(parent)
    };
    let memory = parent_for("memory", "memory.limit_in_bytes", "-1");
    let cpu = parent_for("cpu", "cpu.cfs_quota_us", "-1");
    let pids = parent_for("pids", "pids.max", "max");
    if memory.is_none() && cpu.is_none() && pids.is_none() {
        return None;
    }
    Some(CgroupPlan::V1 { memory, cpu, pids })
}

/// What cgroups can do on this machine, for this process.
pub(crate) fn detect(mode: &CgroupMode) -> Option<CgroupPlan> {
    match mode {
        CgroupMode::Off => None,
        CgroupMode::V2(p) => detect_v2(Some(p.clone())),
        CgroupMode::Auto => detect_v2(None).or_else(detect_v1),
    }
}

/// A replica's cgroups, made by its supervisor.
pub(crate) struct ReplicaCgroups {
    v2: bool,
    /// (kind, dir): kind is "memory", "cpu", "pids" or "v2".
    dirs: Vec<(&'static str, PathBuf)>,
}

const CPU_PERIOD_US: u64 = 100_000;

impl ReplicaCgroups {
    /// Creates the cgroups of one replica and writes its limits.
    pub(crate) fn create(plan: &CgroupPlan, name: &str, limits: &Limits) -> io::Result<Self> {
        let quota = limits
            .cpu_millicores
            .map(|m| (m.saturating_mul(CPU_PERIOD_US) / 1000).max(1000));
        let mut made = Self {
            v2: matches!(plan, CgroupPlan::V2 { .. }),
            dirs: Vec::new(),
        };
        let mk = |made: &mut Self, kind: &'static str, parent: &Path| -> io::Result<PathBuf> {
            let dir = parent.join(name);
            fs::create_dir(&dir)?;
            made.dirs.push((kind, dir.clone()));
            Ok(dir)
        };
        let result = (|| -> io::Result<()> {
            match plan {
                CgroupPlan::V2 { parent, pids } => {
                    let dir = mk(&mut made, "v2", parent)?;
                    if let Some(m) = limits.memory_bytes {
                        fs::write(dir.join("memory.max"), m.to_string())?;
                        let swap = dir.join("memory.swap.max");
                        if swap.exists() {
                            fs::write(swap, "0")?;
                        }
                    }
                    let group = dir.join("memory.oom.group");
                    if group.exists() {
                        fs::write(group, "1")?;
                    }
                    if let Some(q) = quota {
                        fs::write(dir.join("cpu.max"), format!("{q} {CPU_PERIOD_US}"))?;
                    }
                    if let (true, Some(p)) = (*pids, limits.pids) {
                        fs::write(dir.join("pids.max"), p.to_string())?;
                    }
                }
                CgroupPlan::V1 { memory, cpu, pids } => {
                    if let Some(parent) = memory {
                        let dir = mk(&mut made, "memory", parent)?;
                        if let Some(m) = limits.memory_bytes {
                            fs::write(dir.join("memory.limit_in_bytes"), m.to_string())?;
                            let sw = dir.join("memory.memsw.limit_in_bytes");
                            if sw.exists() {
                                fs::write(sw, m.to_string())?;
                            }
                        }
                    }
                    if let Some(parent) = cpu {
                        let dir = mk(&mut made, "cpu", parent)?;
                        if let Some(q) = quota {
                            fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                            fs::write(dir.join("cpu.cfs_quota_us"), q.to_string())?;
                        }
                    }
                    if let Some(parent) = pids {
                        let dir = mk(&mut made, "pids", parent)?;
                        if let Some(p) = limits.pids {
                            fs::write(dir.join("pids.max"), p.to_string())?;
                        }
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(made),
            Err(e) => {
                made.remove();
                Err(e)
            }
        }
    }

    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    /// The `cgroup.procs` files, opened for writing: the child writes `0` to each (joining
    /// "the writing process") between fork and exec.
    pub(crate) fn open_procs(&self) -> io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|(_, d)| OpenOptions::new().write(true).open(d.join("cgroup.procs")))
            .collect()
    }

    /// The kernel killed a process of the replica for exceeding its memory limit.
    pub(crate) fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.dirs
            .iter()
            .filter(|(k, _)| *k == "v2" || *k == "memory")
            .any(|(_, d)| {
                fs::read_to_string(d.join(file))
                    .ok()
                    .and_then(|t| {
                        t.lines().find_map(|l| {
                            l.strip_prefix("oom_kill ")
                                .and_then(|n| n.trim().parse::<u64>().ok())
                        })
                    })
                    .is_some_and(|n| n > 0)
            })
    }

    /// SIGKILLs every process in the replica's cgroups, then removes them.
    pub(crate) fn kill_and_remove(&self) {
        kill_all(&self.dirs(), true);
    }

    fn remove(&self) {
        for (_, d) in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

/// SIGKILLs every process listed in these cgroups' `cgroup.procs` until they are empty
/// (bounded: 2 s), then removes the directories if `remove`. Used by the supervisor and by
/// recovery when a supervisor died.
pub(crate) fn kill_all(dirs: &[PathBuf], remove: bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    for d in dirs {
        let kill_file = d.join("cgroup.kill");
        if kill_file.exists() {
            let _ = File::options()
                .write(true)
                .open(&kill_file)
                .and_then(|mut f| f.write_all(b"1"));
        }
        while let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if remove {
            let _ = fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // This development VM's hybrid layout, abridged.
    const MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:40 /sub /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP: &str = "8:pids:/sub/x\n4:memory:/process_api/48\n1:cpu:/\n0::/\n";

    #[test]
    fn parses_mounts_and_own_cgroups() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].fstype, "cgroup2");
        assert_eq!(m[3].point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m[1].super_opts, "rw,memory");
        assert_eq!(
            parse_own_cgroup(CGROUP, "memory").as_deref(),
            Some("/process_api/48")
        );
        assert_eq!(parse_own_cgroup(CGROUP, "").as_deref(), Some("/"));
        assert_eq!(parse_own_cgroup(CGROUP, "blkio"), None);
        // Own cgroup joined under the mount point, minus the mount's own root.
        assert_eq!(
            join_cgroup_path(&m[1], "/process_api/48"),
            Path::new("/sys/fs/cgroup/memory/process_api/48")
        );
        assert_eq!(
            join_cgroup_path(&m[2], "/sub/x"),
            Path::new("/sys/fs/cgroup/pids/x")
        );
        assert_eq!(
            join_cgroup_path(&m[0], "/"),
            Path::new("/sys/fs/cgroup/cpu")
        );
    }

    #[test]
    fn off_means_no_cgroups() {
        assert_eq!(detect(&CgroupMode::Off), None);
        assert_eq!(detect(&CgroupMode::V2("/nonexistent/cgroup".into())), None);
    }

    #[test]
    fn enforcement_follows_the_plan() {
        let v1 = CgroupPlan::V1 {
            memory: Some("/m".into()),
            cpu: None,
            pids: Some("/p".into()),
        };
        assert_eq!(
            v1.enforcement(),
            (
                Enforcement::CgroupV1,
                Enforcement::None,
                Enforcement::CgroupV1
            )
        );
        assert!(v1.has_memory());
        let v2 = CgroupPlan::V2 {
            parent: "/x".into(),
            pids: false,
        };
        assert_eq!(
            v2.enforcement(),
            (
                Enforcement::CgroupV2,
                Enforcement::CgroupV2,
                Enforcement::None
            )
        );
    }
}
