//! [`DockerRuntime`]: each replica a container of a local Docker engine (through `bollard`).
//!
//! - the engine is the record: a replica's container carries `fluidos.*` labels (node,
//!   owner, contract, workload, replica) and a name derived from its id, so a second
//!   container for the same replica is refused by the engine, also across restarts of
//!   the daemon, and [`Runtime::recover`] finds every container of this node by its labels;
//! - limits are the engine's (`NanoCpus`, `Memory` with no swap, `PidsLimit`), taken from
//!   the spec's [`Limits`](super::Limits) as given: the caller caps them by the contract's
//!   quota before it starts the replica;
//! - the engine never restarts a container (restart policy `no`): restarts are the
//!   caller's, by the owner's policy, as with the process runtime;
//! - images are never pulled: the spec's image must be present, or be loaded first
//!   ([`DockerRuntime::load_image`], a `docker save` tarball).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fluidos_core::runtime::{DockerRuntime, Limits, ReplicaId, ReplicaSpec, Runtime};
//!
//! let docker = DockerRuntime::builder("did:key:z6MkProvider").connect().await?;
//! println!("{}", docker.capabilities().summary());
//! let spec = ReplicaSpec::image_builder(ReplicaId::new("web", 0, "c1")?, "nginx:1.27")
//!     .ports([80])
//!     .limits(Limits { memory_bytes: Some(128 << 20), ..Limits::default() })
//!     .build()?;
//! let info = docker.start(spec).await?;
//! println!("{}: {} on {:?}", info.id, info.status, docker.ports(&info.id).await?);
//! # Ok(()) }
//! ```

mod convert;
mod errors;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, watch};

use super::errors::{LogsError, RecoverError, RemoveError, StartError, StatusError, StopError};
use super::spec::{ReplicaId, ReplicaSpec};
use super::types::{
    Capabilities, Enforcement, Logs, ReplicaEvent, ReplicaInfo, ReplicaStatus, ReplicaUsage,
};
use super::{Runtime, RuntimeFuture};

use convert::ContainerPolicy;
pub use convert::{
    LABEL_CONTRACT, LABEL_NODE, LABEL_OWNER, LABEL_PREFIX, LABEL_REPLICA, LABEL_WORKLOAD,
    PublishedPort,
};
pub use errors::{ConnectError, FollowLogsError, LoadImageError, PortsError};

/// The oldest engine API the runtime accepts (Docker 20.10, as in Debian 12).
pub const MIN_API: (usize, usize) = (1, 41);
/// Chunks a [`DockerRuntime::follow_logs`] receiver may have queued before the reader waits.
pub const FOLLOW_CAPACITY: usize = 64;
/// Requests to the engine in flight at once while sampling usage.
const STATS_CONCURRENCY: usize = 8;
/// How long a watcher waits before asking again after the engine failed to answer.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// Builds a [`DockerRuntime`]. Defaults: the engine at `DOCKER_HOST` or the local socket,
/// ports published on 127.0.0.1 at engine-chosen host ports, stop grace 10 s, 1 MiB of
/// output kept per replica, 256 queued events, the engine's default bridge network.
#[derive(Debug)]
#[must_use]
pub struct DockerRuntimeBuilder {
    node: String,
    host_ip: IpAddr,
    same_host_ports: bool,
    stop_grace: Duration,
    output_limit: u64,
    event_capacity: usize,
    network: Option<String>,
    socket: Option<String>,
    request_timeout: Duration,
}

impl DockerRuntimeBuilder {
    /// The host address published ports listen on (default 127.0.0.1: reachable from this
    /// host only, e.g. through the fabric; `0.0.0.0` publishes them on every interface).
    pub fn host_ip(mut self, ip: IpAddr) -> Self {
        self.host_ip = ip;
        self
    }

    /// Publishes each port on the same host port number instead of one the engine picks
    /// (two replicas with the same port then cannot run on one host).
    pub fn same_host_ports(mut self, same: bool) -> Self {
        self.same_host_ports = same;
        self
    }

    /// Time between SIGTERM and SIGKILL when stopping (whole seconds; at least 1 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace.max(Duration::from_secs(1));
        self
    }

    /// Bytes of output the engine keeps per replica (at least 2; two files of half each).
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.output_limit = bytes.max(2);
        self
    }

    /// Capacity of the event channel (at least 1).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// The engine network containers join (`--network`); default the engine's bridge.
    pub fn network(mut self, name: impl Into<String>) -> Self {
        self.network = Some(name.into());
        self
    }

    /// A unix socket of the engine other than the default (`/var/run/docker.sock` or
    /// `DOCKER_HOST`).
    pub fn socket(mut self, path: impl Into<String>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// How long one request to the engine may take (default 120 s).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }

    /// Connects to the engine, negotiates the API version (at least [`MIN_API`]) and reads
    /// what it isolates. Fails with [`ConnectError::Unavailable`] when no engine answers:
    /// the node then runs the process runtime only, and should say so.
    pub async fn connect(self) -> Result<DockerRuntime, ConnectError> {
        if !valid_label(&self.node) {
            return Err(ConnectError::BadNodeLabel(self.node));
        }
        let secs = self.request_timeout.as_secs().max(1);
        let (endpoint, client) = match &self.socket {
            Some(path) => (
                format!("unix://{path}"),
                Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION),
            ),
            None => (
                std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
                Docker::connect_with_local_defaults().map(|d| d.with_timeout(self.request_timeout)),
            ),
        };
        let unavailable = |e: DockerError| ConnectError::Unavailable {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        };
        let docker = client.map_err(unavailable)?;
        docker.ping().await.map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        let v = docker.client_version();
        let found = (v.major_version, v.minor_version);
        if found < MIN_API {
            return Err(ConnectError::TooOld {
                found: format!("{}.{}", found.0, found.1),
                needed: format!("{}.{}", MIN_API.0, MIN_API.1),
            });
        }
        let version = docker.version().await.map_err(unavailable)?;
        // `info` only refines the summary; an engine whose answer does not parse still runs.
        let userns = match docker.info().await {
            Ok(info) => info
                .security_options
                .unwrap_or_default()
                .iter()
                .any(|o| o.contains("name=userns")),
            Err(e) => {
                tracing::debug!(error = %e, "docker info unreadable; assuming no user namespaces");
                false
            }
        };
        let caps = Capabilities {
            kind: "docker".into(),
            memory: Enforcement::Engine,
            cpu: Enforcement::Engine,
            pids: Enforcement::Engine,
            filesystem_isolation: true,
            network_isolation: self.network.as_deref() != Some("host"),
            user_isolation: userns,
        };
        let engine = EngineInfo {
            endpoint,
            version: version.version.unwrap_or_default(),
            api_version: format!("{}.{}", found.0, found.1),
        };
        tracing::info!(
            endpoint = %engine.endpoint,
            version = %engine.version,
            api = %engine.api_version,
            isolation = %caps.summary(),
            "docker runtime ready"
        );
        let (tx, rx) = mpsc::channel(self.event_capacity);
        let (shutdown, shutdown_rx) = watch::channel(());
        Ok(DockerRuntime {
            shared: Arc::new(Shared {
                docker,
                policy: ContainerPolicy {
                    node: self.node,
                    host_ip: self.host_ip,
                    same_host_ports: self.same_host_ports,
                    output_limit: self.output_limit,
                    network: self.network,
                },
                caps,
                engine,
                stop_grace: self.stop_grace,
                entries: Mutex::new(BTreeMap::new()),
                events: tx,
                events_rx: Mutex::new(Some(rx)),
                events_taken: AtomicBool::new(false),
                shutdown_rx,
            }),
            _shutdown: shutdown,
        })
    }
}

fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 512 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The engine a [`DockerRuntime`] talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    /// Where it was reached (`unix:///var/run/docker.sock`).
    pub endpoint: String,
    /// Its version (`20.10.24+dfsg1`).
    pub version: String,
    /// The API version negotiated with it (`1.41`).
    pub api_version: String,
}

/// What [`DockerRuntime::load_image`] loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// The image references (tags) or ids the tarball held, as the engine names them.
    pub images: Vec<String>,
}

/// Runs replicas as containers of a Docker engine.
///
/// Build with [`DockerRuntime::builder`] (giving this node's id: it labels every container
/// and scopes recovery to this node's containers), call [`Runtime::reconcile`] (or
/// [`Runtime::recover`]) once, then use the [`Runtime`] methods. Dropping it leaves the
/// containers running; a later runtime with the same node label adopts them.
pub struct DockerRuntime {
    shared: Arc<Shared>,
    /// Dropped with the runtime: ends its watcher tasks.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("node", &self.shared.policy.node)
            .field("engine", &self.shared.engine)
            .finish_non_exhaustive()
    }
}

struct Shared {
    docker: Docker,
    policy: ContainerPolicy,
    caps: Capabilities,
    engine: EngineInfo,
    stop_grace: Duration,
    entries: Mutex<BTreeMap<ReplicaId, Entry>>,
    events: mpsc::Sender<ReplicaEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<ReplicaEvent>>>,
    events_taken: AtomicBool,
    shutdown_rx: watch::Receiver<()>,
}

struct Entry {
    /// The container's name (known before the engine gives it an id).
    name: String,
    status: watch::Sender<ReplicaStatus>,
    stop_requested: bool,
    ports: Vec<PublishedPort>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn http_status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl Shared {
    fn info(&self, id: &ReplicaId) -> Option<ReplicaInfo> {
        lock(&self.entries).get(id).map(|e| ReplicaInfo {
            id: id.clone(),
            status: e.status.borrow().clone(),
        })
    }

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

    fn stop_requested(&self, id: &ReplicaId) -> bool {
        lock(&self.entries)
            .get(id)
            .is_some_and(|e| e.stop_requested)
    }

    /// The replica's status as the engine sees it now.
    async fn inspect_status(
        &self,
        id: &ReplicaId,
        name: &str,
    ) -> Result<ReplicaStatus, DockerError> {
        match self.docker.inspect_container(name, None).await {
            Ok(c) => Ok(convert::status_of(&c, self.stop_requested(id))),
            Err(e) if http_status(&e) == Some(404) => Ok(ReplicaStatus::Lost {
                reason: format!("its container {name} was removed outside fluidos"),
            }),
            Err(e) => Err(e),
        }
    }
}

impl DockerRuntime {
    /// A builder for a runtime whose containers carry `node` (this node's id) as their
    /// [`LABEL_NODE`].
    pub fn builder(node: impl Into<String>) -> DockerRuntimeBuilder {
        DockerRuntimeBuilder {
            node: node.into(),
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            same_host_ports: false,
            stop_grace: Duration::from_secs(10),
            output_limit: 1 << 20,
            event_capacity: 256,
            network: None,
            socket: None,
            request_timeout: Duration::from_secs(120),
        }
    }

    /// The engine this runtime talks to (for a `status` command).
    pub fn engine(&self) -> &EngineInfo {
        &self.shared.engine
    }

    /// The node label of this runtime's containers.
    pub fn node_label(&self) -> &str {
        &self.shared.policy.node
    }

    /// The engine's name of a replica's container (for `docker inspect`, logs, debugging).
    pub fn container_name(&self, id: &ReplicaId) -> String {
        convert::container_name(&self.shared.policy.node, id)
    }

    /// Where a replica's ports are published on the host, by container port.
    pub async fn ports(&self, id: &ReplicaId) -> Result<Vec<PublishedPort>, PortsError> {
        let (name, known) = {
            let entries = lock(&self.shared.entries);
            let e = entries
                .get(id)
                .ok_or_else(|| PortsError::NotFound(id.clone()))?;
            (e.name.clone(), e.ports.clone())
        };
        if !known.is_empty() {
            return Ok(known);
        }
        let c = self
            .shared
            .docker
            .inspect_container(&name, None)
            .await
            .map_err(|e| PortsError::Engine {
                id: id.clone(),
                reason: e.to_string(),
            })?;
        Ok(convert::published_ports(&c))
    }

    /// Loads the images of a `docker save` tarball held in memory (what an owner sent over
    /// the workload protocol) into the engine.
    pub async fn load_image(&self, tarball: Vec<u8>) -> Result<LoadedImage, LoadImageError> {
        let body = bollard::body_full(tarball.into());
        let stream = self.shared.docker.import_image(
            ImportImageOptionsBuilder::new().quiet(true).build(),
            body,
            None,
        );
        collect_loaded(stream).await
    }

    /// Whether the engine has image `reference` (a tag or an id).
    pub async fn has_image(&self, reference: &str) -> bool {
        self.shared.docker.inspect_image(reference).await.is_ok()
    }

    /// Imports a root filesystem tarball as image `repo:tag`, as `docker import` does,
    /// applying Dockerfile `changes` (`ENV PATH=/bin`). For local test and demo images
    /// where no registry is reachable.
    pub async fn import_rootfs(
        &self,
        tarball: Vec<u8>,
        repo: &str,
        tag: &str,
        changes: &[&str],
    ) -> Result<(), LoadImageError> {
        let opts = bollard::query_parameters::CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(changes.iter().map(|c| (*c).to_owned()).collect())
            .build();
        let body = bollard::body_full(tarball.into());
        let _: Vec<_> = self
            .shared
            .docker
            .create_image(Some(opts), Some(body), None)
            .try_collect()
            .await
            .map_err(|e| LoadImageError::Engine(e.to_string()))?;
        if !self.has_image(&format!("{repo}:{tag}")).await {
            return Err(LoadImageError::Empty);
        }
        Ok(())
    }

    /// Loads the images of a `docker save` tarball file into the engine, streaming it in
    /// chunks of 64 KiB.
    pub async fn load_image_file(&self, path: &Path) -> Result<LoadedImage, LoadImageError> {
        use tokio::io::AsyncReadExt;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| LoadImageError::Io {
                path: path.to_owned(),
                source,
            })?;
        let chunks = futures::stream::try_unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 64 << 10];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), f)))
        });
        let stream = self.shared.docker.import_image_stream(
            ImportImageOptionsBuilder::new().quiet(true).build(),
            chunks,
            None,
        );
        collect_loaded(stream).await
    }

    /// Follows a replica's output from now on: chunks of stdout and stderr as the
    /// container writes them, on a channel of [`FOLLOW_CAPACITY`] chunks (a slow reader
    /// makes the follower wait, nothing is dropped). The channel closes when the container
    /// ends, the runtime is dropped, or the receiver is.
    pub fn follow_logs(&self, id: &ReplicaId) -> Result<mpsc::Receiver<Vec<u8>>, FollowLogsError> {
        let name = lock(&self.shared.entries)
            .get(id)
            .map(|e| e.name.clone())
            .ok_or_else(|| FollowLogsError::NotFound(id.clone()))?;
        let (tx, rx) = mpsc::channel(FOLLOW_CAPACITY);
        let docker = self.shared.docker.clone();
        let mut shutdown = self.shared.shutdown_rx.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let opts = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .tail("0")
                .build();
            // Follows outlive the request timeout: a client without one.
            let docker = docker.with_timeout(Duration::from_secs(365 * 24 * 3600));
            let mut stream = docker.logs(&name, Some(opts));
            loop {
                let chunk = tokio::select! {
                    c = stream.next() => c,
                    _ = shutdown.changed() => return,
                };
                match chunk {
                    Some(Ok(out)) => {
                        if tx.send(out.into_bytes().to_vec()).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(replica = %id, error = %e, "log follow ended");
                        return;
                    }
                    None => return,
                }
            }
        });
        Ok(rx)
    }

    async fn start_impl(&self, spec: ReplicaSpec) -> Result<ReplicaInfo, StartError> {
        let sh = &self.shared;
        let id = spec.id().clone();
        let Some(image) = spec.image().map(str::to_owned) else {
            return Err(StartError::Unsupported {
                id,
                reason: format!(
                    "it names the program {:?}; the Docker runtime runs container images only",
                    spec.program()
                ),
            });
        };
        let name = self.container_name(&id);
        {
            let mut entries = lock(&sh.entries);
            if entries.contains_key(&id) {
                return Err(StartError::AlreadyExists(id));
            }
            entries.insert(
                id.clone(),
                Entry {
                    name: name.clone(),
                    status: watch::channel(ReplicaStatus::Starting).0,
                    stop_requested: false,
                    ports: Vec::new(),
                },
            );
        }
        match self.launch(&spec, &image, &name).await {
            Ok(info) => Ok(info),
            Err((e, created)) => {
                if created {
                    let opts = RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build();
                    if let Err(err) = sh.docker.remove_container(&name, Some(opts)).await {
                        tracing::warn!(replica = %id, error = %err, "cannot remove the container of a failed start");
                    }
                }
                lock(&sh.entries).remove(&id);
                Err(e)
            }
        }
    }

    /// Creates and starts the container. On failure, says whether it was created (and must
    /// be removed).
    async fn launch(
        &self,
        spec: &ReplicaSpec,
        image: &str,
        name: &str,
    ) -> Result<ReplicaInfo, (StartError, bool)> {
        let sh = &self.shared;
        let id = spec.id().clone();
        let engine = |e: DockerError, created| {
            (
                StartError::Engine {
                    id: id.clone(),
                    reason: e.to_string(),
                },
                created,
            )
        };
        match sh.docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if http_status(&e) == Some(404) => {
                return Err((
                    StartError::ImageNotFound {
                        id: id.clone(),
                        image: image.to_owned(),
                    },
                    false,
                ));
            }
            Err(e) => return Err(engine(e, false)),
        }
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        let body = convert::create_body(&sh.policy, spec);
        match sh.docker.create_container(Some(opts), body).await {
            Ok(_) => {}
            // The name is the claim: a container of this replica exists already (one this
            // runtime has not recovered, or another runtime's with the same node label).
            Err(e) if http_status(&e) == Some(409) => {
                return Err((StartError::AlreadyExists(id.clone()), false));
            }
            Err(e) => return Err(engine(e, false)),
        }
        if let Err(e) = sh.docker.start_container(name, None).await {
            return Err((
                StartError::Spawn {
                    id: id.clone(),
                    reason: e.to_string(),
                },
                true,
            ));
        }
        let c = sh
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| engine(e, true))?;
        let status = convert::status_of(&c, false);
        let ports = convert::published_ports(&c);
        if let Some(e) = lock(&sh.entries).get_mut(&id) {
            e.ports = ports;
        }
        sh.set_status_quietly(&id, status.clone());
        tracing::debug!(replica = %id, container = %name, %status, "replica container started");
        self.watch(id.clone(), name.to_owned());
        Ok(ReplicaInfo { id, status })
    }

    /// Waits for the container to end, then records how it ended.
    fn watch(&self, id: ReplicaId, name: String) {
        let sh = Arc::clone(&self.shared);
        let mut shutdown = sh.shutdown_rx.clone();
        tokio::spawn(async move {
            // A wait lasts as long as the container runs: a client without request timeout.
            let docker = sh
                .docker
                .clone()
                .with_timeout(Duration::from_secs(365 * 24 * 3600));
            loop {
                let opts = WaitContainerOptionsBuilder::new()
                    .condition("not-running")
                    .build();
                let mut wait = docker.wait_container(&name, Some(opts));
                let ended = tokio::select! {
                    r = wait.next() => r,
                    _ = shutdown.changed() => return,
                };
                // The stream ends, or yields the exit (an error for a non-zero one), or
                // fails (engine restarting, container removed): in every case look.
                if let Some(Err(e)) = &ended
                    && !matches!(e, DockerError::DockerContainerWaitError { .. })
                {
                    tracing::debug!(replica = %id, error = %e, "waiting for a container failed");
                }
                match sh.inspect_status(&id, &name).await {
                    Ok(status) if status.is_terminal() => {
                        sh.set_status(&id, status).await;
                        return;
                    }
                    Ok(status) => sh.set_status(&id, status).await,
                    Err(e) => {
                        tracing::debug!(replica = %id, error = %e, "cannot inspect a container");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(WATCH_RETRY) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    async fn stop_impl(&self, id: &ReplicaId) -> Result<ReplicaInfo, StopError> {
        let sh = &self.shared;
        let name = {
            let mut entries = lock(&sh.entries);
            let e = entries
                .get_mut(id)
                .ok_or_else(|| StopError::NotFound(id.clone()))?;
            if e.status.borrow().is_terminal() {
                return Ok(ReplicaInfo {
                    id: id.clone(),
                    status: e.status.borrow().clone(),
                });
            }
            e.stop_requested = true;
            e.name.clone()
        };
        let engine = |e: DockerError| StopError::Engine {
            id: id.clone(),
            reason: e.to_string(),
        };
        let grace = i32::try_from(sh.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::new().t(grace).build();
        match sh.docker.stop_container(&name, Some(opts)).await {
            // 304: it had stopped already; 404: it is gone (recorded as lost below).
            Err(e) if !matches!(http_status(&e), Some(304 | 404)) => return Err(engine(e)),
            _ => {}
        }
        let status = sh.inspect_status(id, &name).await.map_err(engine)?;
        if !status.is_terminal() {
            return Err(StopError::Timeout(id.clone()));
        }
        sh.set_status_quietly(id, status.clone());
        Ok(ReplicaInfo {
            id: id.clone(),
            status,
        })
    }

    async fn logs_impl(&self, id: &ReplicaId, tail: usize) -> Result<Logs, LogsError> {
        let sh = &self.shared;
        let name = lock(&sh.entries)
            .get(id)
            .map(|e| e.name.clone())
            .ok_or_else(|| LogsError::NotFound(id.clone()))?;
        let tail = tail.min(usize::try_from(sh.policy.output_limit).unwrap_or(usize::MAX));
        let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let mut stream = sh.docker.logs(&name, Some(opts));
        // Keeps the last `tail` bytes of what the engine has (at most its output limit).
        let mut data: Vec<u8> = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| LogsError::Engine {
                id: id.clone(),
                reason: e.to_string(),
            })?;
            data.extend_from_slice(&chunk.into_bytes());
            if data.len() > tail {
                let cut = data.len() - tail;
                data.drain(..cut);
                truncated = true;
            }
        }
        Ok(Logs { data, truncated })
    }

    async fn remove_impl(&self, id: &ReplicaId) -> Result<(), RemoveError> {
        let sh = &self.shared;
        let name = {
            let entries = lock(&sh.entries);
            let e = entries
                .get(id)
                .ok_or_else(|| RemoveError::NotFound(id.clone()))?;
            if !e.status.borrow().is_terminal() {
                return Err(RemoveError::StillRunning(id.clone()));
            }
            e.name.clone()
        };
        let opts = RemoveContainerOptionsBuilder::new().v(true).build();
        match sh.docker.remove_container(&name, Some(opts)).await {
            Err(e) if http_status(&e) != Some(404) => {
                return Err(RemoveError::Engine {
                    id: id.clone(),
                    reason: e.to_string(),
                });
            }
            _ => {}
        }
        lock(&sh.entries).remove(id);
        Ok(())
    }

    async fn recover_impl(&self) -> Result<Vec<ReplicaInfo>, RecoverError> {
        let sh = &self.shared;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", sh.policy.node)],
        )]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let found = sh
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| RecoverError::Engine(e.to_string()))?;
        for c in found {
            let labels = c.labels.unwrap_or_default();
            let container = c.id.unwrap_or_default();
            let Some(id) = convert::id_from_labels(&labels) else {
                // Labelled as this node's but naming no replica: nothing can adopt it.
                tracing::warn!(%container, "removing a container with this node's label but no valid replica labels");
                let opts = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                let _ = sh.docker.remove_container(&container, Some(opts)).await;
                continue;
            };
            let name = self.container_name(&id);
            if lock(&sh.entries).contains_key(&id) {
                continue;
            }
            let inspected = match sh.docker.inspect_container(&name, None).await {
                Ok(i) => i,
                // Removed meanwhile, or named otherwise (not created by this runtime).
                Err(e) => {
                    tracing::warn!(replica = %id, %container, error = %e, "cannot inspect a labelled container; left as it is");
                    continue;
                }
            };
            let status = convert::status_of(&inspected, false);
            let live = !status.is_terminal();
            {
                let mut entries = lock(&sh.entries);
                if entries.contains_key(&id) {
                    continue;
                }
                tracing::info!(replica = %id, %status, "adopted a replica's container");
                entries.insert(
                    id.clone(),
                    Entry {
                        name: name.clone(),
                        status: watch::channel(status).0,
                        stop_requested: false,
                        ports: convert::published_ports(&inspected),
                    },
                );
            }
            if live {
                self.watch(id, name);
            }
        }
        Ok(self.list_now())
    }

    async fn usage_impl(&self) -> Vec<ReplicaUsage> {
        let running: Vec<(ReplicaId, String)> = lock(&self.shared.entries)
            .iter()
            .filter(|(_, e)| matches!(*e.status.borrow(), ReplicaStatus::Running { .. }))
            .map(|(id, e)| (id.clone(), e.name.clone()))
            .collect();
        let sh = &self.shared;
        let mut out: Vec<ReplicaUsage> = futures::stream::iter(running)
            .map(|(id, name)| async move {
                let opts = StatsOptionsBuilder::new()
                    .stream(false)
                    .one_shot(true)
                    .build();
                let sample = sh.docker.stats(&name, Some(opts)).try_next().await;
                match sample {
                    Ok(Some(s)) => convert::usage_of(id, &s, now_ms()),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(replica = %id, error = %e, "cannot sample a container's usage");
                        None
                    }
                }
            })
            .buffer_unordered(STATS_CONCURRENCY)
            .filter_map(|u| async move { u })
            .collect()
            .await;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
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

async fn collect_loaded(
    stream: impl futures::Stream<Item = Result<bollard::models::BuildInfo, DockerError>>,
) -> Result<LoadedImage, LoadImageError> {
    let infos: Vec<_> = stream
        .try_collect()
        .await
        .map_err(|e| LoadImageError::Engine(e.to_string()))?;
    let mut images = Vec::new();
    for info in infos {
        let text = info.stream.unwrap_or_default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line
                .strip_prefix("Loaded image: ")
                .or_else(|| line.strip_prefix("Loaded image ID: "))
            {
                images.push(name.to_owned());
            }
        }
    }
    if images.is_empty() {
        return Err(LoadImageError::Empty);
    }
    Ok(LoadedImage { images })
}

impl Runtime for DockerRuntime {
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

    fn load_image<'a>(&'a self, path: &'a Path) -> RuntimeFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            self.load_image_file(path)
                .await
                .map(|l| l.images)
                .map_err(|e| e.to_string())
        })
    }
}
