//! The replica supervisor: a small single-threaded program that owns one replica's process.
//!
//! The process runtime starts one supervisor per replica (the `fluidos-supervise` binary, or
//! any binary that calls [`supervise_main`], such as the daemon's hidden `supervise`
//! subcommand). The supervisor
//!
//! 1. leaves the daemon's session (`setsid`), so neither the daemon's death nor its terminal
//!    reaches the replica;
//! 2. takes the replica's `lock` (held until it exits: the lock *is* its liveness), and refuses
//!    to run when `state.json` already exists — so a replica is never started twice, even when
//!    recovery and a late supervisor race;
//! 3. creates the replica's cgroups, starts the process in a process group of its own with
//!    stdin `/dev/null` and stdout+stderr on one pipe, records `state.json` (pid, start time),
//!    and prints one JSON line (`Running {pid, started_at_ms}` or `Failed {reason}`) on its
//!    stdout for the runtime;
//! 4. copies the output into the bounded ring (`output.cur`/`output.old`);
//! 5. on SIGTERM/SIGINT sends SIGTERM to the replica's process group and SIGKILL after the
//!    grace period;
//! 6. when the main process exits, SIGKILLs what is left of its process group and cgroups,
//!    records the exit (code, signal, out-of-memory kill) in `state.json` and exits.
//!
//! Between fork and exec the child joins its cgroups, sets its rlimits and asks for SIGKILL
//! when the supervisor dies (`PR_SET_PDEATHSIG`), see `install_child_setup`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::{Pid, getppid, pipe2, setsid};

use super::cgroup::ReplicaCgroups;
use super::state::{
    LAUNCH, LOCK, Launch, OutputRing, Report, STATE, State, WORK, now_ms, read_json, try_lock,
    write_json,
};
use super::types::{ExitInfo, ReplicaStatus};

/// How long output is still read after the replica's processes are gone.
const DRAIN: Duration = Duration::from_millis(200);

/// Entry point of a supervisor: `args` is what follows the program name (or the hidden
/// subcommand): exactly one argument, the replica's directory in the runtime's state dir.
///
/// Call it from a binary's `main` and return its exit code; it must run in a process of its
/// own that has started no threads (the runtime starts it that way).
pub fn supervise_main<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let [dir] = args.as_slice() else {
        eprintln!(
            "usage: fluidos-supervise <replica-dir> (started by the fluidos process runtime)"
        );
        return ExitCode::from(2);
    };
    match supervise(Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluidos-supervise {}: {e}", Path::new(dir).display());
            ExitCode::from(1)
        }
    }
}

fn report(r: &Report) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, r).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn supervise(dir: &Path) -> io::Result<()> {
    // Fails only when already a session leader, which is fine.
    let _ = setsid();
    let Some(_lock) = try_lock(&dir.join(LOCK))? else {
        return Err(io::Error::other(
            "another supervisor (or the runtime's recovery) holds this replica's lock",
        ));
    };
    if dir.join(STATE).exists() {
        return Err(io::Error::other(
            "this replica already has a state.json: it was started (or given up) before, and is not started twice",
        ));
    }
    let launch: Launch = read_json(&dir.join(LAUNCH))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "launch.json is missing"))?;
    let me = std::process::id();

    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask.thread_block()?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;

    let fail = |reason: String, cgroups: Option<&ReplicaCgroups>| -> io::Result<()> {
        if let Some(c) = cgroups {
            c.kill_and_remove();
        }
        write_json(
            dir,
            STATE,
            &State {
                supervisor_pid: me,
                child_pid: None,
                cgroup_dirs: Vec::new(),
                status: ReplicaStatus::Failed {
                    reason: reason.clone(),
                },
            },
        )?;
        report(&Report::Failed { reason })
    };

    let spec = &launch.spec;
    let cgroups = match &launch.cgroup {
        Some(plan) => {
            let name = format!("fluidos-{}-{me}", spec.id().dir_name());
            match ReplicaCgroups::create(plan, &name, &spec.limits()) {
                Ok(c) => Some(c),
                Err(e) => return fail(format!("cannot create the replica's cgroups: {e}"), None),
            }
        }
        None => None,
    };
    let procs = match cgroups.as_ref().map(ReplicaCgroups::open_procs).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return fail(format!("cannot open cgroup.procs: {e}"), cgroups.as_ref()),
    };
    let rlimit_as = if launch.rlimit_memory {
        spec.limits().memory_bytes
    } else {
        None
    };

    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
    let out_w2 = out_w.try_clone()?;
    let mut cmd = Command::new(&launch.program_path);
    cmd.arg0(spec.program())
        .args(spec.args())
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.join(WORK))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2))
        .process_group(0);
    install_child_setup(
        &mut cmd,
        ChildSetup {
            procs,
            rlimit_as,
            supervisor: me,
        },
    );
    let spawned = cmd.spawn();
    // The write ends of the pipe live in `cmd`: drop them, or the output never ends.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return fail(
                format!("cannot start {}: {e}", launch.program_path.display()),
                cgroups.as_ref(),
            );
        }
    };
    let pid = child.id();
    let started_at_ms = now_ms();
    let cgroup_dirs = cgroups
        .as_ref()
        .map(ReplicaCgroups::dirs)
        .unwrap_or_default();
    let record = |status: ReplicaStatus| {
        write_json(
            dir,
            STATE,
            &State {
                supervisor_pid: me,
                child_pid: Some(pid),
                cgroup_dirs: cgroup_dirs.clone(),
                status,
            },
        )
    };
    record(ReplicaStatus::Running { pid, started_at_ms })?;
    // The runtime may be gone already (then nobody reads this): carry on regardless.
    let _ = report(&Report::Running { pid, started_at_ms });

    let mut out = File::from(out_r);
    fcntl(out.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let mut ring = OutputRing::create(dir, launch.output_limit_bytes)?;
    let mut buf = vec![0u8; 64 * 1024];
    let pgid = Pid::from_raw(i32::try_from(pid).map_err(io::Error::other)?);
    let grace = Duration::from_millis(launch.stop_grace_ms);
    let mut out_open = true;
    let mut stop_requested = false;
    let mut kill_at: Option<Instant> = None;

    // WNOWAIT: the exited leader stays a zombie, so its pid (= the process group id)
    // cannot be reused before the group has been killed below.
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    while let Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) = waitid(Id::Pid(pgid), flags) {
        let timeout = match kill_at {
            Some(t) => PollTimeout::try_from(t.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let (sig_ready, out_ready) = {
            let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            if out_open {
                fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if out_ready {
            out_open = drain(&mut out, &mut ring, &mut buf)?;
        }
        if sig_ready {
            while let Ok(Some(si)) = sfd.read_signal() {
                let signo = i32::try_from(si.ssi_signo).unwrap_or(0);
                let stop = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT]
                    .iter()
                    .any(|s| *s as i32 == signo);
                if stop && !stop_requested {
                    stop_requested = true;
                    let _ = killpg(pgid, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
            }
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            kill_at = None;
            let _ = killpg(pgid, Signal::SIGKILL);
            if let Some(c) = &cgroups {
                super::cgroup::kill_all(&c.dirs(), false);
            }
        }
    }

    // The main process has ended: nothing of the replica outlives it.
    let _ = killpg(pgid, Signal::SIGKILL);
    let oom_killed = cgroups.as_ref().is_some_and(ReplicaCgroups::oom_killed);
    if let Some(c) = &cgroups {
        c.kill_and_remove();
    }
    let status = child.wait()?;
    let drain_until = Instant::now() + DRAIN;
    while out_open && Instant::now() < drain_until {
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let left = drain_until.saturating_duration_since(Instant::now());
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO),
        ) {
            Ok(0) => break,
            Ok(_) | Err(Errno::EINTR) => out_open = drain(&mut out, &mut ring, &mut buf)?,
            Err(e) => return Err(e.into()),
        }
    }
    record(ReplicaStatus::Exited {
        exit: ExitInfo {
            code: status.code(),
            signal: status.signal(),
            oom_killed,
            stop_requested,
        },
        started_at_ms,
        finished_at_ms: now_ms(),
    })
}

/// Copies what the pipe holds into the ring. Returns whether the pipe is still open.
fn drain(out: &mut File, ring: &mut OutputRing, buf: &mut [u8]) -> io::Result<bool> {
    loop {
        match out.read(buf) {
            Ok(0) => return Ok(false),
            // Output is best effort: a full disk loses output, never the replica.
            Ok(n) => {
                if let Err(e) = ring.write(&buf[..n]) {
                    ring.note_error(&e);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What the child does to itself between fork and exec.
struct ChildSetup {
    /// `cgroup.procs` of each of the replica's cgroups, opened by the supervisor.
    procs: Vec<File>,
    /// `RLIMIT_AS` (soft and hard), when memory is limited by rlimit.
    rlimit_as: Option<u64>,
    /// The supervisor's pid, to notice it died before `PR_SET_PDEATHSIG` took effect.
    supervisor: u32,
}

impl ChildSetup {
    /// Runs in the forked child. Only system calls on memory and files prepared before the
    /// fork: no allocation, no locks.
    fn apply(&self) -> io::Result<()> {
        // The supervisor blocks the signals it reads from its signalfd; the replica must not
        // inherit that mask (std's spawn does not reset it).
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&SigSet::empty()),
            None,
        )?;
        for mut f in self.procs.iter() {
            // "0" means the writing process (cgroup v1 and v2 alike).
            f.write_all(b"0")?;
        }
        if let Some(bytes) = self.rlimit_as {
            setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
        }
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        if u32::try_from(getppid().as_raw()).ok() != Some(self.supervisor) {
            // ESRCH: the supervisor is gone; an errno needs no allocation.
            return Err(io::Error::from(Errno::ESRCH));
        }
        Ok(())
    }
}

/// Installs [`ChildSetup::apply`] as the command's `pre_exec` hook.
///
/// This is the one `unsafe` block of the runtime. `pre_exec` is unsafe because the closure
/// runs in the child between `fork` and `exec`, where only async-signal-safe operations are
/// sound if the parent had other threads (another thread may have held the allocator's
/// lock at the moment of the fork).
#[allow(unsafe_code)]
fn install_child_setup(cmd: &mut Command, setup: ChildSetup) {
    // SAFETY: the closure calls only `sigprocmask(2)`, `write(2)` on already-open files, `setrlimit(2)`,
    // `prctl(2)` and `getppid(2)` — all async-signal-safe — and allocates nothing (its
    // errors are `io::Error`s made from an errno, which do not allocate).
    // It captures only owned data moved in here. Besides, the supervisor is single-threaded
    // (it starts no threads, and `supervise_main` documents that it must be called so), so
    // the child is a copy of a process with no other thread.
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
}
