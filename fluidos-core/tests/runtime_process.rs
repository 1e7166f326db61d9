//! The process runtime against real processes: output, exit codes, stop, limits, recovery
//! after the runtime's death, and bad input.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use fluidos_core::runtime::{
    BuildError, CgroupMode, Enforcement, Limits, LogsError, ProcessRuntime, RemoveError, ReplicaId,
    ReplicaSpec, ReplicaStatus, Runtime, SpecError, StartError, StopError, SupervisorCommand,
};

fn supervisor() -> SupervisorCommand {
    SupervisorCommand::new(env!("CARGO_BIN_EXE_fluidos-supervise"))
}

fn runtime(dir: &Path, cgroups: CgroupMode) -> ProcessRuntime {
    ProcessRuntime::builder(dir)
        .supervisor(supervisor())
        .cgroups(cgroups)
        .stop_grace(Duration::from_millis(500))
        .output_limit(64 * 1024)
        .build()
        .unwrap()
}

fn id(name: &str) -> ReplicaId {
    ReplicaId::new(name, 0, "c1").unwrap()
}

fn sh(id: ReplicaId, script: &str) -> ReplicaSpec {
    ReplicaSpec::builder(id, "/bin/sh")
        .args(["-c", script])
        .build()
        .unwrap()
}

/// Waits (bounded: 20 s) until the replica has ended.
async fn ended(rt: &dyn Runtime, id: &ReplicaId) -> ReplicaStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = rt.status(id).await.unwrap().status;
        if s.is_terminal() {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} still {s} after 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn exit_code(s: &ReplicaStatus) -> Option<i32> {
    match s {
        ReplicaStatus::Exited { exit, .. } => exit.code,
        _ => None,
    }
}

/// Processes (pids) whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // A zombie (state Z) is gone for our purposes.
        if f.get(2).and_then(|p| p.parse().ok()) == Some(pgid) && f.first() != Some(&"Z") {
            out.push(e.file_name().to_str().unwrap().parse().unwrap());
        }
    }
    out
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn output_and_exit_code_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    let mut events = rt.take_events().unwrap();
    assert!(rt.take_events().is_none());
    let r = id("echo");
    let info = rt
        .start(sh(r.clone(), "echo hi; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert!(
        matches!(info.status, ReplicaStatus::Running { .. }),
        "{info:?}"
    );
    let status = ended(&rt, &r).await;
    assert_eq!(exit_code(&status), Some(3), "{status}");
    let logs = rt.logs(&r, 1000).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&logs.data), "hi\nerr\n");
    assert!(!logs.truncated);
    // The event: exited with the code (running was start's answer).
    let e2 = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e2.id, r);
    assert_eq!(exit_code(&e2.status), Some(3));
    // Removing forgets it; the id can then be used again.
    rt.remove(&r).await.unwrap();
    assert!(rt.list().await.is_empty());
    assert!(!dir.path().join(r.dir_name()).exists());
    let again = rt.start(sh(r.clone(), "exit 0")).await.unwrap();
    assert_eq!(again.id, r);
    assert_eq!(exit_code(&ended(&rt, &r).await), Some(0));
}

#[tokio::test]
async fn environment_is_the_specs_plus_labels_only() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    let r = ReplicaId::new("envy", 4, "contract-9").unwrap();
    let spec = ReplicaSpec::builder(r.clone(), "sh")
        .args([
            "-c",
            "echo $FLUIDOS_WORKLOAD $FLUIDOS_REPLICA $FLUIDOS_CONTRACT $GREETING ${CARGO_MANIFEST_DIR:-clean}; pwd",
        ])
        .env("GREETING", "hello")
        .ports([8080])
        .build()
        .unwrap();
    assert_eq!(spec.ports(), [8080]);
    rt.start(spec).await.unwrap();
    assert_eq!(exit_code(&ended(&rt, &r).await), Some(0));
    let out = String::from_utf8(rt.logs(&r, 4096).await.unwrap().data).unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("envy 4 contract-9 hello clean"));
    let work = dir.path().join(r.dir_name()).join("work");
    assert_eq!(lines.next(), Some(work.to_str().unwrap()));
}

#[tokio::test]
async fn output_beyond_the_buffer_keeps_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ProcessRuntime::builder(dir.path())
        .supervisor(supervisor())
        .cgroups(CgroupMode::Off)
        .output_limit(4000)
        .build()
        .unwrap();
    let r = id("chatty");
    rt.start(sh(
        r.clone(),
        "i=0; while [ $i -lt 5000 ]; do echo line$i; i=$((i+1)); done",
    ))
    .await
    .unwrap();
    assert_eq!(exit_code(&ended(&rt, &r).await), Some(0));
    let logs = rt.logs(&r, usize::MAX).await.unwrap();
    assert!(logs.truncated);
    assert!(
        logs.data.len() <= 4000 && logs.data.len() >= 2000,
        "{}",
        logs.data.len()
    );
    let text = String::from_utf8_lossy(&logs.data);
    assert!(text.ends_with("line4998\nline4999\n"), "{text}");
    assert!(!text.contains("\nline0\n") && !text.starts_with("line0\n"));
    // On disk too, no more than the limit.
    let rdir = dir.path().join(r.dir_name());
    let on_disk: u64 = ["output.cur", "output.old"]
        .iter()
        .filter_map(|f| std::fs::metadata(rdir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    assert!(on_disk <= 4000, "{on_disk}");
    // A smaller tail is the end of it.
    let tail = rt.logs(&r, 9).await.unwrap();
    assert_eq!(tail.data, b"line4999\n");
    assert!(tail.truncated);
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    let r = id("sleepers");
    let info = rt
        .start(sh(r.clone(), "sleep 100 & sleep 100 & echo started; wait"))
        .await
        .unwrap();
    let ReplicaStatus::Running { pid, .. } = info.status else {
        panic!("{info:?}")
    };
    // Wait until both sleeps run in the group.
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_members(pid).len() < 3 {
        assert!(Instant::now() < deadline, "group {:?}", group_members(pid));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = rt.stop(&r).await.unwrap();
    let ReplicaStatus::Exited { exit, .. } = stopped.status else {
        panic!("{stopped:?}")
    };
    assert!(exit.stop_requested);
    assert_eq!(exit.signal, Some(15), "{exit}");
    assert!(
        group_members(pid).is_empty(),
        "left: {:?}",
        group_members(pid)
    );
    // Stopping again reports the same end.
    assert_eq!(
        rt.stop(&r).await.unwrap().status,
        ReplicaStatus::Exited {
            exit,
            started_at_ms: match rt.status(&r).await.unwrap().status {
                ReplicaStatus::Exited { started_at_ms, .. } => started_at_ms,
                s => panic!("{s}"),
            },
            finished_at_ms: match rt.status(&r).await.unwrap().status {
                ReplicaStatus::Exited { finished_at_ms, .. } => finished_at_ms,
                s => panic!("{s}"),
            },
        }
    );
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    let r = id("stubborn");
    // An ignored SIGTERM stays ignored in the sleep too.
    let info = rt
        .start(sh(r.clone(), "trap '' TERM; sleep 100; echo not-reached"))
        .await
        .unwrap();
    let ReplicaStatus::Running { pid, .. } = info.status else {
        panic!("{info:?}")
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let stopped = rt.stop(&r).await.unwrap();
    let ReplicaStatus::Exited { exit, .. } = stopped.status else {
        panic!("{stopped:?}")
    };
    assert_eq!(exit.signal, Some(9), "{exit}");
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    assert!(group_members(pid).is_empty());
}

fn has_perl() -> bool {
    Path::new("/usr/bin/perl").exists()
}

/// Skips (printing why) outside CI; fails under `CI`, unless `FLUIDOS_SKIP_CGROUP_TESTS` is
/// set for a CI machine known to have no writable cgroups.
fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() && std::env::var_os("FLUIDOS_SKIP_CGROUP_TESTS").is_none() {
        panic!("required in CI: {why}");
    }
    eprintln!("skipped: {why}");
}

const HOG: &str = "$x = 'x' x (400 * 1024 * 1024); print \"survived\\n\";";

fn hog(id: ReplicaId, memory: u64) -> ReplicaSpec {
    ReplicaSpec::builder(id, "/usr/bin/perl")
        .args(["-e", HOG])
        .limits(Limits {
            memory_bytes: Some(memory),
            ..Limits::default()
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn memory_limit_by_rlimit_makes_the_allocation_fail() {
    if !has_perl() {
        return skip_or_fail("perl (/usr/bin/perl) is needed to allocate memory");
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    let caps = rt.capabilities();
    assert_eq!(caps.memory, Enforcement::Rlimit);
    assert_eq!(caps.cpu, Enforcement::None);
    assert!(
        caps.summary().contains("memory by rlimit"),
        "{}",
        caps.summary()
    );
    let r = id("hog");
    rt.start(hog(r.clone(), 64 << 20)).await.unwrap();
    let status = ended(&rt, &r).await;
    let ReplicaStatus::Exited { exit, .. } = &status else {
        panic!("{status}")
    };
    assert!(!exit.success(), "{exit}");
    assert!(
        !exit.oom_killed,
        "rlimits cannot tell an out-of-memory kill: {exit}"
    );
    let out = String::from_utf8_lossy(&rt.logs(&r, 4096).await.unwrap().data).into_owned();
    assert!(!out.contains("survived"), "{out}");
    assert!(out.to_lowercase().contains("out of memory"), "{out}");
    // Without the limit the same program survives.
    let free = id("hog-free");
    rt.start(
        ReplicaSpec::builder(free.clone(), "/usr/bin/perl")
            .args(["-e", HOG])
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(exit_code(&ended(&rt, &free).await), Some(0));
}

#[tokio::test]
async fn memory_limit_by_cgroup_kills_and_says_so() {
    if !has_perl() {
        return skip_or_fail("perl (/usr/bin/perl) is needed to allocate memory");
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Auto);
    let caps = rt.capabilities();
    if !matches!(caps.memory, Enforcement::CgroupV1 | Enforcement::CgroupV2) {
        return skip_or_fail(&format!(
            "no writable memory cgroup for this process ({})",
            caps.summary()
        ));
    }
    let r = id("cghog");
    rt.start(hog(r.clone(), 64 << 20)).await.unwrap();
    let status = ended(&rt, &r).await;
    let ReplicaStatus::Exited { exit, .. } = &status else {
        panic!("{status}")
    };
    assert!(exit.oom_killed, "{exit}");
    assert_eq!(exit.signal, Some(9), "{exit}");
    assert!(status.to_string().contains("out of memory"), "{status}");
    // Its cgroups are gone afterwards.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(r.dir_name()).join("state.json")).unwrap(),
    )
    .unwrap();
    let dirs = state["cgroup_dirs"].as_array().unwrap();
    assert!(!dirs.is_empty());
    for d in dirs {
        assert!(!Path::new(d.as_str().unwrap()).exists(), "{d}");
    }
}

#[tokio::test]
async fn cpu_limit_by_cgroup_throttles() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Auto);
    if !matches!(
        rt.capabilities().cpu,
        Enforcement::CgroupV1 | Enforcement::CgroupV2
    ) {
        return skip_or_fail("no writable cpu cgroup for this process");
    }
    // A busy loop for 1 s of wall time under 100 millicores gets about 0.1 s of cpu.
    let r = id("spin");
    let spec = ReplicaSpec::builder(r.clone(), "/bin/sh")
        .args(["-c", "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done; cat /proc/$$/stat"])
        .limits(Limits {
            cpu_millicores: Some(100),
            ..Limits::default()
        })
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    assert_eq!(exit_code(&ended(&rt, &r).await), Some(0));
    let out = String::from_utf8(rt.logs(&r, 4096).await.unwrap().data).unwrap();
    let f: Vec<&str> = out.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // utime + stime + cutime + cstime, in clock ticks (100 per second).
    let ticks: u64 = f[11..15].iter().map(|v| v.parse::<u64>().unwrap()).sum();
    assert!(
        ticks < 100,
        "used {ticks} ticks in ~2 s under a 0.1-core limit"
    );
}

#[tokio::test]
async fn pids_limit_by_cgroup_refuses_forks() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Auto);
    if !matches!(
        rt.capabilities().pids,
        Enforcement::CgroupV1 | Enforcement::CgroupV2
    ) {
        return skip_or_fail("no writable pids cgroup for this process");
    }
    let r = id("forky");
    let spec = ReplicaSpec::builder(r.clone(), "/bin/sh")
        .args([
            "-c",
            "n=0; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & n=$((n+1)); done; echo forked $n",
        ])
        .limits(Limits {
            pids: Some(4),
            ..Limits::default()
        })
        .build()
        .unwrap();
    rt.start(spec).await.unwrap();
    let status = ended(&rt, &r).await;
    let out = String::from_utf8_lossy(&rt.logs(&r, 4096).await.unwrap().data).into_owned();
    // The shell cannot start ten background sleeps with four pids: fork fails.
    assert!(!out.contains("forked 10"), "{out} / {status}");
    assert!(out.to_lowercase().contains("fork"), "{out}");
}

fn supervisor_pid(dir: &Path, r: &ReplicaId) -> u32 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(r.dir_name()).join("state.json")).unwrap())
            .unwrap();
    u32::try_from(state["supervisor_pid"].as_u64().unwrap()).unwrap()
}

#[tokio::test]
async fn recover_after_the_runtime_died() {
    let dir = tempfile::tempdir().unwrap();
    let long = id("long");
    let short = id("short");
    let later = id("later");
    let long_pid = {
        let rt = runtime(dir.path(), CgroupMode::Off);
        let info = rt
            .start(sh(long.clone(), "echo up; exec sleep 60"))
            .await
            .unwrap();
        rt.start(sh(short.clone(), "echo bye; exit 7"))
            .await
            .unwrap();
        rt.start(sh(later.clone(), "sleep 3; exit 5"))
            .await
            .unwrap();
        let ReplicaStatus::Running { pid, .. } = info.status else {
            panic!("{info:?}")
        };
        pid
        // Dropped without stopping anything: the "daemon" dies.
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rt = runtime(dir.path(), CgroupMode::Off);
    let mut events = rt.take_events().unwrap();
    let found = rt.recover().await.unwrap();
    let ids: Vec<&ReplicaId> = found.iter().map(|i| &i.id).collect();
    assert_eq!(ids, [&later, &long, &short]);
    // Still running, the same process: not started again.
    assert_eq!(
        rt.status(&long).await.unwrap().status,
        ReplicaStatus::Running {
            pid: long_pid,
            started_at_ms: match &found[1].status {
                ReplicaStatus::Running { started_at_ms, .. } => *started_at_ms,
                s => panic!("{s}"),
            }
        }
    );
    assert!(pid_alive(long_pid));
    assert_eq!(
        String::from_utf8_lossy(&rt.logs(&long, 100).await.unwrap().data),
        "up\n"
    );
    // Exited while the runtime was down: its exit code and output are there.
    assert_eq!(exit_code(&found[2].status), Some(7));
    assert_eq!(rt.logs(&short, 100).await.unwrap().data, b"bye\n");
    // Recovering twice finds nothing new and starts nothing.
    assert_eq!(rt.recover().await.unwrap().len(), 3);
    // A replica that ends after recovery is noticed, and reported as an event.
    assert_eq!(exit_code(&ended(&rt, &later).await), Some(5));
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.id, later);
    assert_eq!(exit_code(&ev.status), Some(5));
    // Never twice: starting a recovered id again is refused.
    assert!(matches!(
        rt.start(sh(long.clone(), "exit 0")).await,
        Err(StartError::AlreadyExists(i)) if i == long
    ));
    // The new runtime can stop what the old one started.
    let stopped = rt.stop(&long).await.unwrap();
    let ReplicaStatus::Exited { exit, .. } = stopped.status else {
        panic!("{stopped:?}")
    };
    assert!(exit.stop_requested);
    assert!(!pid_alive(long_pid));
}

#[tokio::test]
async fn a_killed_supervisor_leaves_a_lost_replica_and_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let r = id("orphan");
    let pid = {
        let rt = runtime(dir.path(), CgroupMode::Off);
        let info = rt.start(sh(r.clone(), "exec sleep 60")).await.unwrap();
        let ReplicaStatus::Running { pid, .. } = info.status else {
            panic!("{info:?}")
        };
        pid
    };
    let sup = supervisor_pid(dir.path(), &r);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(sup).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    rt.recover().await.unwrap();
    let status = ended(&rt, &r).await;
    assert!(matches!(status, ReplicaStatus::Lost { .. }), "{status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "replica {pid} outlived its supervisor"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path(), CgroupMode::Off);
    // Refused before any runtime sees them.
    assert_eq!(
        ReplicaSpec::builder(id("e"), "").build(),
        Err(SpecError::EmptyCommand)
    );
    assert_eq!(
        ReplicaSpec::builder(id("z"), "/bin/true")
            .limits(Limits {
                memory_bytes: Some(0),
                ..Limits::default()
            })
            .build(),
        Err(SpecError::ZeroMemory)
    );
    // Programs that are not there, or not executable.
    let missing = ReplicaSpec::builder(id("m"), "/nonexistent/program")
        .build()
        .unwrap();
    assert!(
        matches!(rt.start(missing).await, Err(StartError::ProgramNotFound(p)) if p == "/nonexistent/program")
    );
    let no_such = ReplicaSpec::builder(id("n"), "no-such-program-fluidos")
        .build()
        .unwrap();
    assert!(matches!(
        rt.start(no_such).await,
        Err(StartError::ProgramNotFound(_))
    ));
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "not a program").unwrap();
    let not_exec = ReplicaSpec::builder(id("x"), plain.to_str().unwrap())
        .build()
        .unwrap();
    assert!(matches!(rt.start(not_exec).await, Err(StartError::NotExecutable(p)) if p == plain));
    // A memory limit too small to load anything is refused; one that lets exec start but
    // not finish loading (rlimit mode) ends the process before it runs a line.
    assert_eq!(
        ReplicaSpec::builder(id("tiny"), "/bin/sh")
            .limits(Limits {
                memory_bytes: Some(4096),
                ..Limits::default()
            })
            .build(),
        Err(SpecError::MemoryTooSmall(4096))
    );
    let small = id("small");
    let spec = ReplicaSpec::builder(small.clone(), "/bin/sh")
        .args(["-c", "echo should-not-run"])
        .limits(Limits {
            memory_bytes: Some(1 << 20),
            ..Limits::default()
        })
        .build()
        .unwrap();
    match rt.start(spec).await {
        // exec itself failed for lack of address space…
        Err(StartError::Spawn { id: i, reason }) => {
            assert_eq!(i, small);
            assert!(reason.contains("/bin/sh"), "{reason}");
        }
        // …or the kernel killed it while loading.
        Ok(_) => {
            let s = ended(&rt, &small).await;
            assert!(
                matches!(&s, ReplicaStatus::Exited { exit, .. } if !exit.success()),
                "{s}"
            );
            assert!(
                !String::from_utf8_lossy(&rt.logs(&small, 100).await.unwrap().data)
                    .contains("should-not-run")
            );
            rt.remove(&small).await.unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    // Nothing of the failed starts is left behind.
    assert!(rt.list().await.is_empty());
    assert!(rt.list().await.is_empty());
    // Duplicate ids while the first one's record exists.
    let d = id("dup");
    rt.start(sh(d.clone(), "sleep 30")).await.unwrap();
    assert!(matches!(
        rt.start(sh(d.clone(), "exit 0")).await,
        Err(StartError::AlreadyExists(_))
    ));
    assert!(matches!(
        rt.remove(&d).await,
        Err(RemoveError::StillRunning(_))
    ));
    rt.stop(&d).await.unwrap();
    rt.remove(&d).await.unwrap();
    // Unknown ids.
    let unknown = id("unknown");
    assert!(matches!(
        rt.stop(&unknown).await,
        Err(StopError::NotFound(_))
    ));
    assert!(matches!(
        rt.logs(&unknown, 10).await,
        Err(LogsError::NotFound(_))
    ));
    assert!(matches!(
        rt.remove(&unknown).await,
        Err(RemoveError::NotFound(_))
    ));
    assert!(rt.status(&unknown).await.is_err());
    // A second runtime over the same state dir, and a missing supervisor.
    assert!(matches!(
        ProcessRuntime::builder(dir.path())
            .supervisor(supervisor())
            .build(),
        Err(BuildError::Locked(_))
    ));
    let other = tempfile::tempdir().unwrap();
    assert!(matches!(
        ProcessRuntime::builder(other.path())
            .supervisor(SupervisorCommand::new("/nonexistent/fluidos-supervise"))
            .build(),
        Err(BuildError::SupervisorNotFound(_))
    ));
}

#[tokio::test]
async fn the_trait_is_object_safe() {
    let dir = tempfile::tempdir().unwrap();
    let rt: Box<dyn Runtime> = Box::new(runtime(dir.path(), CgroupMode::Off));
    let r = id("dyn");
    rt.start(sh(r.clone(), "exit 0")).await.unwrap();
    assert_eq!(exit_code(&ended(rt.as_ref(), &r).await), Some(0));
}

const CHILD_DIR_ENV: &str = "FLUIDOS_RUNTIME_TEST_CHILD_DIR";

/// The "daemon" of `replicas_survive_kill_9_of_the_daemon`: does nothing unless started by it.
#[tokio::test]
async fn daemon_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let rt = runtime(Path::new(&dir), CgroupMode::Auto);
    let long = rt
        .start(sh(id("long"), "echo up; exec sleep 60"))
        .await
        .unwrap();
    rt.start(sh(id("short"), "sleep 1; echo done; exit 9"))
        .await
        .unwrap();
    let ReplicaStatus::Running { pid, .. } = long.status else {
        panic!("{long:?}")
    };
    println!("READY {pid}");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn replicas_survive_kill_9_of_the_daemon() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "daemon_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let pid: u32 = loop {
        let line = lines.next().expect("the daemon child ended early").unwrap();
        // libtest may print "test daemon_child ... " on the same line first.
        if let Some((_, p)) = line.split_once("READY ") {
            break p.trim().parse().unwrap();
        }
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(pid_alive(pid), "the replica died with the daemon");
    let rt = runtime(dir.path(), CgroupMode::Auto);
    let found = rt.recover().await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(
        matches!(rt.status(&id("long")).await.unwrap().status, ReplicaStatus::Running { pid: p, .. } if p == pid)
    );
    assert_eq!(exit_code(&ended(&rt, &id("short")).await), Some(9));
    assert_eq!(rt.logs(&id("short"), 100).await.unwrap().data, b"done\n");
    rt.stop(&id("long")).await.unwrap();
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn a_replica_whose_supervisor_never_ran_is_failed_and_never_starts_late() {
    // A launch record as the runtime writes it, taken from a real start.
    let a = tempfile::tempdir().unwrap();
    let r = id("late");
    {
        let rt = runtime(a.path(), CgroupMode::Off);
        rt.start(sh(r.clone(), "echo ran")).await.unwrap();
        ended(&rt, &r).await;
    }
    // The daemon "died" after writing launch.json and before its supervisor ran; another
    // directory was claimed but never got a launch record.
    let b = tempfile::tempdir().unwrap();
    let late = b.path().join(r.dir_name());
    std::fs::create_dir_all(late.join("work")).unwrap();
    std::fs::copy(
        a.path().join(r.dir_name()).join("launch.json"),
        late.join("launch.json"),
    )
    .unwrap();
    let empty = b.path().join("junk~0~c1");
    std::fs::create_dir(&empty).unwrap();
    let rt = runtime(b.path(), CgroupMode::Off);
    let found = rt.recover().await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(
        matches!(&found[0].status, ReplicaStatus::Failed { reason } if reason.contains("before the replica's supervisor started")),
        "{found:?}"
    );
    assert!(!empty.exists());
    // The supervisor, arriving late, refuses: nothing runs, the record is unchanged.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fluidos-supervise"))
        .arg(&late)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not started twice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!late.join("output.cur").exists());
    assert_eq!(rt.status(&r).await.unwrap().status, found[0].status);
}

#[tokio::test]
async fn usage_counters_grow() {
    for mode in [CgroupMode::Off, CgroupMode::Auto] {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), mode);
        let r = id("busy");
        rt.start(sh(r.clone(), "while :; do :; done"))
            .await
            .unwrap();
        let first = rt.usage().await;
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].id, r);
        // Grows by about a core-second per second; bounded wait, no timing assertion.
        let deadline = Instant::now() + Duration::from_secs(30);
        let grown = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = rt.usage().await;
            if let Some(u) = now.first().filter(|u| u.cpu_time_ns > first[0].cpu_time_ns) {
                break u.clone();
            }
            assert!(
                Instant::now() < deadline,
                "cpu time did not grow: {first:?} → {now:?}"
            );
        };
        assert!(grown.memory_bytes > 0, "{grown:?}");
        rt.stop(&r).await.unwrap();
        // Ended replicas are not measured.
        assert!(rt.usage().await.is_empty());
        rt.remove(&r).await.unwrap();
    }
}
