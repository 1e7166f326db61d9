//! Settling replicas whose supervisor is gone, and finding leftovers to kill.
//!
//! Both run with the replica's `lock` held (or after its supervisor was reaped), so no
//! supervisor can start the replica while they decide.

use std::fs;
use std::io;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cgroup;
use super::state::{STATE, State, now_ms, read_json, write_json};
use super::types::ReplicaStatus;

/// The final status of a replica whose supervisor is not running. Records it when the
/// supervisor did not: a replica that was running is killed (what is left of it) and
/// recorded `Lost`; one that never started is recorded `Failed`, which also stops a
/// supervisor that starts late from running it.
pub(crate) fn settle(dir: &Path) -> io::Result<ReplicaStatus> {
    let state: Option<State> = read_json(&dir.join(STATE))?;
    match state {
        Some(s) if s.status.is_terminal() => Ok(s.status),
        Some(mut s) => {
            cgroup::kill_all(&s.cgroup_dirs, true);
            if let Some(child) = s.child_pid {
                kill_group_of_session(child, s.supervisor_pid);
            }
            s.status = ReplicaStatus::Lost {
                reason: format!(
                    "its supervisor (pid {}) died without recording the end; what was left of it was killed at {} ms",
                    s.supervisor_pid,
                    now_ms()
                ),
            };
            write_json(dir, STATE, &s)?;
            Ok(s.status)
        }
        None => {
            let status = ReplicaStatus::Failed {
                reason: "the runtime stopped before the replica's supervisor started it".into(),
            };
            write_json(
                dir,
                STATE,
                &State {
                    supervisor_pid: 0,
                    child_pid: None,
                    cgroup_dirs: Vec::new(),
                    status: status.clone(),
                },
            )?;
            Ok(status)
        }
    }
}

/// SIGKILLs every process in process group `pgid` of session `sid`. Both must match, so a
/// reused process group id alone hits nothing.
fn kill_group_of_session(pgid: u32, sid: u32) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces and parentheses):
        // state ppid pgrp session …
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (Some(pg), Some(s)) = (f.get(2), f.get(3)) else {
            continue;
        };
        if pg.parse::<u32>().ok() == Some(pgid) && s.parse::<u32>().ok() == Some(sid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
