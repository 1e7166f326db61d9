//! [`ProcessRuntime`]: each replica a child process of its own supervisor.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::fcntl::Flock;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::cgroup::{self, CgroupMode, CgroupPlan};
use super::errors::{
    BuildError, LogsError, RecoverError, RemoveError, StartError, StatusError, StopError,
};
use super::recover::settle;
use super::spec::{ReplicaId, ReplicaSpec};
use super::state::{
    LAUNCH, LOCK, Launch, Report, STATE, SUPERVISOR_LOG, State, WORK, read_json, read_output,
    try_lock, write_json,
};
use super::types::{
    Capabilities, Enforcement, Logs, ReplicaEvent, ReplicaInfo, ReplicaStatus, ReplicaUsage,
};
use super::{Runtime, RuntimeFuture};

/// `PATH` of a replica whose spec sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Name of the supervisor binary looked up by [`SupervisorCommand::default`].
pub const SUPERVISOR_BIN: &str = "fluidos-supervise";
/// How often a recovered replica (not a child of this runtime) is checked for its end.
const RECOVERED_POLL: Duration = Duration::from_millis(100);
/// How long the supervisor may take to report that the process runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run a replica's supervisor: a program and arguments, followed by the replica's
/// directory. See [`supervise_main`](super::supervise_main).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

impl SupervisorCommand {
    /// Runs `program <replica-dir>`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Adds an argument before the replica dir (for a hidden subcommand).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// This very executable with a (hidden) subcommand, for a binary whose `main` calls
    /// [`supervise_main`](super::supervise_main) when it sees `subcommand`.
    pub fn current_exe_subcommand(subcommand: impl Into<OsString>) -> io::Result<Self> {
        Ok(Self::new(std::env::current_exe()?).arg(subcommand))
    }

    /// The program.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

impl Default for SupervisorCommand {
    /// `fluidos-supervise` next to the current executable, else the first one in `PATH`,
    /// else the bare name (building the runtime then fails with `SupervisorNotFound`).
    fn default() -> Self {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(SUPERVISOR_BIN)))
            .filter(|p| is_executable(p));
        let in_path = || {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(SUPERVISOR_BIN))
                    .find(|c| is_executable(c))
            })
        };
        Self::new(
            beside
                .or_else(in_path)
                .unwrap_or_else(|| PathBuf::from(SUPERVISOR_BIN)),
        )
    }
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Builds a [`ProcessRuntime`]. Defaults: cgroups [`CgroupMode::Auto`], stop grace 10 s,
/// 1 MiB of output kept per replica, 256 queued events, the default supervisor.
#[derive(Debug)]
#[must_use]
pub struct ProcessRuntimeBuilder {
    state_dir: PathBuf,
    supervisor: Option<SupervisorCommand>,
    cgroups: CgroupMode,
    stop_grace: Duration,
    output_limit: u64,
    event_capacity: usize,
}

impl ProcessRuntimeBuilder {
    /// The supervisor to run per replica.
    pub fn supervisor(mut self, cmd: SupervisorCommand) -> Self {
        self.supervisor = Some(cmd);
        self
    }

    /// Whether to use cgroups.
    pub fn cgroups(mut self, mode: CgroupMode) -> Self {
        self.cgroups = mode;
        self
    }

    /// Time between SIGTERM and SIGKILL when stopping.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Bytes of output kept per replica (at least 2; the last half of it is always kept).
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.output_limit = bytes.max(2);
        self
    }

    /// Capacity of the event channel (at least 1).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Creates (or opens) the state dir, locks it, and probes cgroups (by creating and
    /// removing a test cgroup, a few file operations).
    pub fn build(self) -> Result<ProcessRuntime, BuildError> {
        let dir_err = |source| BuildError::StateDir {
            path: self.state_dir.clone(),
            source,
        };
        fs::create_dir_all(&self.state_dir).map_err(dir_err)?;
        let lock = try_lock(&self.state_dir.join(".lock"))
            .map_err(dir_err)?
            .ok_or_else(|| BuildError::Locked(self.state_dir.clone()))?;
        let supervisor = self.supervisor.unwrap_or_default();
        if !is_executable(&supervisor.program) {
            return Err(BuildError::SupervisorNotFound(supervisor.program));
        }
        let plan = cgroup::detect(&self.cgroups);
        let (memory, cpu, pids) = match &plan {
            Some(p) => p.enforcement(),
            None => (Enforcement::Rlimit, Enforcement::None, Enforcement::None),
        };
        let memory = if memory == Enforcement::None {
            Enforcement::Rlimit
        } else {
            memory
        };
        let caps = Capabilities {
            kind: "process".into(),
            memory,
            cpu,
            pids,
            filesystem_isolation: false,
            network_isolation: false,
            user_isolation: false,
        };
        let (tx, rx) = mpsc::channel(self.event_capacity);
        let (shutdown, shutdown_rx) = watch::channel(());
        tracing::info!(state_dir = %self.state_dir.display(), isolation = %caps.summary(), "process runtime ready");
        Ok(ProcessRuntime {
            shared: Arc::new(Shared {
                state_dir: self.state_dir,
                supervisor,
                plan,
                caps,
                stop_grace: self.stop_grace,
                output_limit: self.output_limit,
                entries: Mutex::new(BTreeMap::new()),
                events: tx,
                events_rx: Mutex::new(Some(rx)),
                events_taken: AtomicBool::new(false),
                shutdown_rx,
            }),
            _shutdown: shutdown,
            _lock: lock,
        })
    }
}

/// Runs replicas as child processes, each under its own supervisor process.
///
/// Build with [`ProcessRuntime::builder`], call [`Runtime::recover`] once, then use the
/// [`Runtime`] methods. Dropping it leaves the replicas running (a later runtime over the
/// same state dir recovers them); stop them first to end them.
pub struct ProcessRuntime {
    shared: Arc<Shared>,
    /// Dropped with the runtime: ends its watcher tasks.
    _shutdown: watch::Sender<()>,
    /// The state dir's lock: one runtime per state dir.
    _lock: Flock<File>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("state_dir", &self.shared.state_dir)
            .field("capabilities", &self.shared.caps)
            .finish_non_exhaustive()
    }
}

struct Shared {
    state_dir: PathBuf,
    supervisor: SupervisorCommand,
    plan: Option<CgroupPlan>,
    caps: Capabilities,
    stop_grace: Duration,
    output_limit: u64,
    entries: Mutex<BTreeMap<ReplicaId, Entry>>,
    events: mpsc::Sender<ReplicaEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<ReplicaEvent>>>,
    events_taken: AtomicBool,
    shutdown_rx: watch::Receiver<()>,
}

struct Entry {
    dir: PathBuf,
    status: watch::Sender<ReplicaStatus>,
    supervisor_pid: Option<u32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn info(&self, id: &ReplicaId) -> Option<ReplicaInfo> {
        lock(&self.entries).get(id).map(|e| ReplicaInfo {
            id: id.clone(),
            status: e.status.borrow().clone(),
        })
    }

    /// Records a new status without an event (for changes the caller made itself and
    /// learns from the return value).
    fn set_status_quietly(&self, id: &ReplicaId, status: ReplicaStatus) {
        if let Some(e) = lock(&self.entries).get(id) {
            e.status.send_replace(status);
        }
    }

    /// Records a new status and sends it as an event once the receiver has been taken
    /// (waiting while the channel is full, unless the runtime is dropped meanwhile).
    async fn set_status(&self, id: &ReplicaId, status: ReplicaStatus) {
        {
            let entries = lock(&self.entries);
            let Some(e) = entries.get(id) else { return };
            if *e.status.borrow() == status {
                return;
            }
            e.status.send_replace(status.clone());
        }
        if !self.events_taken.load(Ordering::Acquire) {
            return;
        }
        let mut shutdown = self.shutdown_rx.clone();
        let event = ReplicaEvent {
            id: id.clone(),
            status,
        };
        tokio::select! {
            _ = self.events.send(event) => {}
            _ = shutdown.changed() => {}
        }
    }
}

impl ProcessRuntime {
    /// A builder for a runtime keeping its records in `state_dir`.
    pub fn builder(state_dir: impl Into<PathBuf>) -> ProcessRuntimeBuilder {
        ProcessRuntimeBuilder {
            state_dir: state_dir.into(),
            supervisor: None,
            cgroups: CgroupMode::Auto,
            stop_grace: Duration::from_secs(10),
            output_limit: 1 << 20,
            event_capacity: 256,
        }
    }

    async fn start_impl(&self, spec: ReplicaSpec) -> Result<ReplicaInfo, StartError> {
        let sh = &self.shared;
        let id = spec.id().clone();
        if let Some(image) = spec.image() {
            return Err(StartError::Unsupported {
                id,
                reason: format!(
                    "it names the container image {image}; the process runtime runs programs only"
                ),
            });
        }
        let program_path = resolve_program(&spec)?;
        let dir = sh.state_dir.join(id.dir_name());
        {
            let mut entries = lock(&sh.entries);
            if entries.contains_key(&id) {
                return Err(StartError::AlreadyExists(id));
            }
            // The directory is the claim: it exists as long as the replica's record does,
            // also when this runtime does not know it (yet).
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StartError::AlreadyExists(id));
                }
                Err(source) => return Err(StartError::Io { id, source }),
            }
            entries.insert(
                id.clone(),
                Entry {
                    dir: dir.clone(),
                    status: watch::channel(ReplicaStatus::Starting).0,
                    supervisor_pid: None,
                },
            );
        }
        match self.launch(spec, &dir, program_path).await {
            Ok(info) => Ok(info),
            Err(e) => {
                lock(&sh.entries).remove(&id);
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn launch(
        &self,
        spec: ReplicaSpec,
        dir: &Path,
        program_path: PathBuf,
    ) -> Result<ReplicaInfo, StartError> {
        let sh = &self.shared;
        let id = spec.id().clone();
        let io_err = |source| StartError::Io {
            id: id.clone(),
            source,
        };
        let mut env: BTreeMap<String, String> = spec.env().clone();
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        env.entry("HOME".into())
            .or_insert_with(|| dir.join(WORK).display().to_string());
        env.insert("FLUIDOS_WORKLOAD".into(), id.workload().into());
        env.insert("FLUIDOS_REPLICA".into(), id.index().to_string());
        env.insert("FLUIDOS_CONTRACT".into(), id.contract().into());
        let launch = Launch {
            rlimit_memory: !sh.plan.as_ref().is_some_and(CgroupPlan::has_memory),
            cgroup: sh.plan.clone(),
            spec,
            program_path,
            env: env.into_iter().collect(),
            stop_grace_ms: u64::try_from(sh.stop_grace.as_millis()).unwrap_or(u64::MAX),
            output_limit_bytes: sh.output_limit,
        };
        let d = dir.to_owned();
        let log = tokio::task::spawn_blocking(move || -> io::Result<File> {
            fs::create_dir(d.join(WORK))?;
            write_json(&d, LAUNCH, &launch)?;
            File::create(d.join(SUPERVISOR_LOG))
        })
        .await
        .map_err(|e| io_err(io::Error::other(e)))?
        .map_err(io_err)?;

        let mut child = tokio::process::Command::new(&sh.supervisor.program)
            .args(&sh.supervisor.args)
            .arg(dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| StartError::Supervisor {
                id: id.clone(),
                reason: format!("cannot run {}: {e}", sh.supervisor.program.display()),
            })?;
        let supervisor_pid = child.id();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let mut out = BufReader::new(out);
            let _ = tokio::time::timeout(START_TIMEOUT, out.read_line(&mut line)).await;
        }
        match serde_json::from_str::<Report>(line.trim()) {
            Ok(Report::Running { pid, started_at_ms }) => {
                let status = ReplicaStatus::Running { pid, started_at_ms };
                if let Some(e) = lock(&sh.entries).get_mut(&id) {
                    e.supervisor_pid = supervisor_pid;
                }
                sh.set_status_quietly(&id, status.clone());
                tracing::debug!(replica = %id, pid, "replica running");
                self.watch_child(id.clone(), dir.to_owned(), child);
                Ok(ReplicaInfo { id, status })
            }
            Ok(Report::Failed { reason }) => {
                let _ = child.wait().await;
                Err(StartError::Spawn { id, reason })
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let said = fs::read_to_string(dir.join(SUPERVISOR_LOG)).unwrap_or_default();
                Err(StartError::Supervisor {
                    id,
                    reason: if said.trim().is_empty() {
                        "it exited without reporting".into()
                    } else {
                        said.trim().to_owned()
                    },
                })
            }
        }
    }

    /// Waits for a supervisor this runtime started; then reads how the replica ended.
    fn watch_child(&self, id: ReplicaId, dir: PathBuf, mut child: tokio::process::Child) {
        let sh = Arc::clone(&self.shared);
        let mut shutdown = sh.shutdown_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = child.wait() => {}
                _ = shutdown.changed() => return,
            }
            let status = settle_blocking(dir).await;
            sh.set_status(&id, status).await;
        });
    }

    /// Checks a supervisor of an earlier runtime until it ends.
    fn watch_recovered(&self, id: ReplicaId, dir: PathBuf) {
        let sh = Arc::clone(&self.shared);
        let mut shutdown = sh.shutdown_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECOVERED_POLL);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let d = dir.clone();
                type Probe = Option<(ReplicaStatus, Option<u32>)>;
                let probe = tokio::task::spawn_blocking(move || -> io::Result<Probe> {
                    match try_lock(&d.join(LOCK))? {
                        Some(_held) => settle(&d).map(|s| Some((s, None))),
                        None => Ok(read_json::<State>(&d.join(STATE))?
                            .map(|s| (s.status, Some(s.supervisor_pid)))),
                    }
                })
                .await;
                match probe {
                    Ok(Ok(Some((status, pid)))) => {
                        let end = status.is_terminal();
                        if let (Some(pid), Some(e)) = (pid, lock(&sh.entries).get_mut(&id)) {
                            e.supervisor_pid = Some(pid);
                        }
                        sh.set_status(&id, status).await;
                        if end {
                            return;
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(replica = %id, error = %e, "cannot check a recovered replica")
                    }
                    Err(_) => return,
                }
            }
        });
    }

    async fn stop_impl(&self, id: &ReplicaId) -> Result<ReplicaInfo, StopError> {
        let sh = &self.shared;
        let (dir, mut rx, pid) = {
            let entries = lock(&sh.entries);
            let e = entries
                .get(id)
                .ok_or_else(|| StopError::NotFound(id.clone()))?;
            (e.dir.clone(), e.status.subscribe(), e.supervisor_pid)
        };
        if rx.borrow().is_terminal() {
            return sh.info(id).ok_or_else(|| StopError::NotFound(id.clone()));
        }
        let pid = match pid {
            Some(p) => Some(p),
            None => read_json::<State>(&dir.join(STATE))
                .ok()
                .flatten()
                .map(|s| s.supervisor_pid),
        };
        // Signal the supervisor only while its lock is held: then it is alive, and its pid
        // cannot belong to another process.
        let alive = matches!(try_lock(&dir.join(LOCK)), Ok(None));
        if let (true, Some(pid)) = (alive, pid) {
            let pid = i32::try_from(pid).map_err(|e| StopError::Signal {
                id: id.clone(),
                source: io::Error::other(e),
            })?;
            kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| StopError::Signal {
                id: id.clone(),
                source: e.into(),
            })?;
        }
        let wait = sh.stop_grace + Duration::from_secs(5);
        match tokio::time::timeout(wait, rx.wait_for(ReplicaStatus::is_terminal)).await {
            Ok(Ok(_)) => sh.info(id).ok_or_else(|| StopError::NotFound(id.clone())),
            Ok(Err(_)) => Err(StopError::NotFound(id.clone())),
            Err(_) => Err(StopError::Timeout(id.clone())),
        }
    }

    async fn logs_impl(&self, id: &ReplicaId, tail: usize) -> Result<Logs, LogsError> {
        let sh = &self.shared;
        let dir = lock(&sh.entries)
            .get(id)
            .map(|e| e.dir.clone())
            .ok_or_else(|| LogsError::NotFound(id.clone()))?;
        let tail = tail.min(usize::try_from(sh.output_limit).unwrap_or(usize::MAX));
        let read = tokio::task::spawn_blocking(move || read_output(&dir, tail))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        let (data, truncated) = read.map_err(|source| LogsError::Io {
            id: id.clone(),
            source,
        })?;
        Ok(Logs { data, truncated })
    }

    async fn remove_impl(&self, id: &ReplicaId) -> Result<(), RemoveError> {
        let sh = &self.shared;
        let dir = {
            let entries = lock(&sh.entries);
            let e = entries
                .get(id)
                .ok_or_else(|| RemoveError::NotFound(id.clone()))?;
            if !e.status.borrow().is_terminal() {
                return Err(RemoveError::StillRunning(id.clone()));
            }
            e.dir.clone()
        };
        let r = tokio::task::spawn_blocking(move || fs::remove_dir_all(dir))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        r.map_err(|source| RemoveError::Io {
            id: id.clone(),
            source,
        })?;
        lock(&sh.entries).remove(id);
        Ok(())
    }

    async fn recover_impl(&self) -> Result<Vec<ReplicaInfo>, RecoverError> {
        let sh = &self.shared;
        let state_dir = sh.state_dir.clone();
        let shared = Arc::clone(sh);
        let found = tokio::task::spawn_blocking(move || scan(&state_dir, &shared))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|source| RecoverError::Io {
                path: sh.state_dir.clone(),
                source,
            })?;
        for (id, dir, status, supervisor_pid) in found {
            let live = !status.is_terminal();
            {
                let mut entries = lock(&sh.entries);
                if entries.contains_key(&id) {
                    continue;
                }
                tracing::info!(replica = %id, %status, "recovered replica");
                entries.insert(
                    id.clone(),
                    Entry {
                        dir: dir.clone(),
                        status: watch::channel(status).0,
                        supervisor_pid,
                    },
                );
            }
            if live {
                self.watch_recovered(id, dir);
            }
        }
        Ok(self.list_now())
    }

    /// Measures each running replica from its cgroups (cgroup v2: the cgroup's cpu time;
    /// memory from the memory cgroup), else from `/proc` (cpu time of its live processes
    /// and what they reaped; resident memory of its main process or cgroup members).
    async fn usage_impl(&self) -> Vec<ReplicaUsage> {
        let running: Vec<(ReplicaId, PathBuf, u32)> = lock(&self.shared.entries)
            .iter()
            .filter_map(|(id, e)| match *e.status.borrow() {
                ReplicaStatus::Running { pid, .. } => Some((id.clone(), e.dir.clone(), pid)),
                _ => None,
            })
            .collect();
        let measured = tokio::task::spawn_blocking(move || {
            running
                .into_iter()
                .filter_map(|(id, dir, pid)| {
                    let dirs = read_json::<State>(&dir.join(STATE))
                        .ok()
                        .flatten()
                        .map(|s| s.cgroup_dirs)
                        .unwrap_or_default();
                    let m = super::usage::measure(&dirs, pid)?;
                    Some(ReplicaUsage {
                        id,
                        cpu_time_ns: m.cpu_time_ns,
                        memory_bytes: m.memory_bytes,
                        memory_peak_bytes: m.memory_peak_bytes,
                        sampled_at_ms: super::state::now_ms(),
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        measured.unwrap_or_default()
    }

    fn list_now(&self) -> Vec<ReplicaInfo> {
        lock(&self.shared.entries)
            .iter()
            .map(|(id, e)| ReplicaInfo {
                id: id.clone(),
                status: e.status.borrow().clone(),
            })
            .collect()
    }
}

type Found = (ReplicaId, PathBuf, ReplicaStatus, Option<u32>);

/// Reads every replica directory this runtime does not know. `start` creates a directory and
/// its entry in one critical section of `entries`, so a directory without an entry, checked
/// under that lock, belongs to no start in progress.
fn scan(state_dir: &Path, sh: &Shared) -> io::Result<Vec<Found>> {
    let known = |dir: &Path| lock(&sh.entries).values().any(|e| e.dir == dir);
    let mut found = Vec::new();
    let mut names: Vec<_> = fs::read_dir(state_dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        let dir = state_dir.join(&name);
        if name.starts_with('.') || known(&dir) {
            continue;
        }
        let launch: Option<Launch> = match read_json(&dir.join(LAUNCH)) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "unreadable replica record; left as it is");
                continue;
            }
        };
        let Some(launch) = launch else {
            // The runtime died between claiming the directory and writing what to run:
            // no supervisor was started for it.
            let entries = lock(&sh.entries);
            if !entries.values().any(|e| e.dir == dir) {
                tracing::info!(dir = %dir.display(), "removing a replica directory that never got a launch record");
                let _ = fs::remove_dir_all(&dir);
            }
            continue;
        };
        let id = launch.spec.id().clone();
        let (status, pid) = match try_lock(&dir.join(LOCK))? {
            Some(_held) => (settle(&dir)?, None),
            None => match read_json::<State>(&dir.join(STATE))? {
                Some(s) => (s.status, Some(s.supervisor_pid)),
                None => (ReplicaStatus::Starting, None),
            },
        };
        found.push((id, dir, status, pid));
    }
    Ok(found)
}

async fn settle_blocking(dir: PathBuf) -> ReplicaStatus {
    let r = tokio::task::spawn_blocking(move || settle(&dir)).await;
    match r {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => ReplicaStatus::Lost {
            reason: format!("cannot read the replica's record: {e}"),
        },
        Err(e) => ReplicaStatus::Lost {
            reason: format!("cannot read the replica's record: {e}"),
        },
    }
}

fn resolve_program(spec: &ReplicaSpec) -> Result<PathBuf, StartError> {
    let p = spec.program();
    let found = if p.contains('/') {
        let path = PathBuf::from(p);
        if !path.exists() {
            return Err(StartError::ProgramNotFound(p.to_owned()));
        }
        path
    } else {
        let search = spec.env().get("PATH").map_or(DEFAULT_PATH, String::as_str);
        search
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(p))
            .find(|c| c.exists())
            .ok_or_else(|| StartError::ProgramNotFound(p.to_owned()))?
    };
    if !is_executable(&found) {
        return Err(StartError::NotExecutable(found));
    }
    Ok(found)
}

impl Runtime for ProcessRuntime {
    fn capabilities(&self) -> Capabilities {
        self.shared.caps.clone()
    }

    fn start(&self, spec: ReplicaSpec) -> RuntimeFuture<'_, Result<ReplicaInfo, StartError>> {
        Box::pin(self.start_impl(spec))
    }

    fn stop<'a>(&'a self, id: &'a ReplicaId) -> RuntimeFuture<'a, Result<ReplicaInfo, StopError>> {
        Box::pin(self.stop_impl(id))
    }

    fn status<'a>(
        &'a self,
        id: &'a ReplicaId,
    ) -> RuntimeFuture<'a, Result<ReplicaInfo, StatusError>> {
        Box::pin(async move {
            self.shared
                .info(id)
                .ok_or_else(|| StatusError::NotFound(id.clone()))
        })
    }

    fn list(&self) -> RuntimeFuture<'_, Vec<ReplicaInfo>> {
        Box::pin(async move { self.list_now() })
    }

    fn logs<'a>(
        &'a self,
        id: &'a ReplicaId,
        tail: usize,
    ) -> RuntimeFuture<'a, Result<Logs, LogsError>> {
        Box::pin(self.logs_impl(id, tail))
    }

    fn remove<'a>(&'a self, id: &'a ReplicaId) -> RuntimeFuture<'a, Result<(), RemoveError>> {
        Box::pin(self.remove_impl(id))
    }

    fn recover(&self) -> RuntimeFuture<'_, Result<Vec<ReplicaInfo>, RecoverError>> {
        Box::pin(self.recover_impl())
    }

    fn take_events(&self) -> Option<mpsc::Receiver<ReplicaEvent>> {
        let rx = lock(&self.shared.events_rx).take();
        self.shared.events_taken.store(true, Ordering::Release);
        rx
    }

    fn usage(&self) -> RuntimeFuture<'_, Vec<ReplicaUsage>> {
        Box::pin(self.usage_impl())
    }
}
