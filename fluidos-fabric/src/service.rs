//! The contract-driven fabric as a tokio task (Linux): one task owns the UDP socket,
//! the [`Tunnels`] (and through it the [`Fabric`](crate::Fabric)) and, while any
//! contract needs it, the TUN interface. The node steers it through a cloneable
//! [`FabricHandle`] over a bounded channel.
//!
//! ```no_run
//! # async fn demo(me: fluidos_contracts::NodeId, contracts: Vec<fluidos_contracts::VerifiedContract>) -> anyhow::Result<()> {
//! use fluidos_fabric::service::{self, ServiceConfig};
//! use fluidos_fabric::{Desired, Fabric, FabricConfig, Tunnels, TunnelsConfig, keyfile};
//!
//! let (secret, _) = keyfile::load_or_create("/var/lib/fluidos/wireguard.key".as_ref())?;
//! let socket = tokio::net::UdpSocket::bind("0.0.0.0:51820").await?;
//! let tunnels = Tunnels::new(me, Fabric::new(&secret, FabricConfig::default()), TunnelsConfig::default());
//! let (handle, task) = service::spawn(tunnels, socket, ServiceConfig::new("fluidos0"))?;
//! // At start-up and whenever a contract starts or ends: the whole active set.
//! let report = handle.apply(Desired::mesh(&contracts, &me)).await?;
//! println!("{}", handle.status().await?);
//! handle.shutdown().await?;
//! task.await??;
//! # let _ = report; Ok(()) }
//! ```

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::driver::{TunIo, UdpIo};
use crate::status::{BackendKind, BackendStatus, Status};
use crate::tun::{TunConfig, TunDevice, TunError};
use crate::tunnels::{ApplyReport, Change, Desired, Tunnels};
use crate::userspace::{ConnectionId, Delivery, PortForward, Stack};

/// Which backend the service uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendChoice {
    /// A TUN interface; `apply` fails when it cannot be created.
    Tun,
    /// The userspace stack ([`crate::userspace`]): no interface, no privileges, only
    /// the [`ServiceConfig::forwards`] cross the overlay.
    Userspace,
    /// A TUN interface when this process may create one (CAP_NET_ADMIN and
    /// `/dev/net/tun`), the userspace backend otherwise; `status` says which and
    /// why. The default.
    #[default]
    Auto,
}

/// How the service runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Name of the TUN interface (at most 15 bytes, unique on the host).
    pub interface: String,
    /// Which backend.
    pub backend: BackendChoice,
    /// TUN offloads (see [`TunConfig::offload`]). Default on.
    pub offload: bool,
    /// Bound of the command channel. Default 16.
    pub queue: usize,
    /// Local ports forwarded to remote workloads when the userspace backend runs.
    pub forwards: Vec<PortForward>,
}

impl ServiceConfig {
    /// Defaults with this interface name.
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            backend: BackendChoice::Auto,
            offload: true,
            queue: 16,
            forwards: Vec::new(),
        }
    }

    /// Sets the ports the userspace backend forwards.
    pub fn with_forwards(mut self, forwards: Vec<PortForward>) -> Self {
        self.forwards = forwards;
        self
    }

    /// Sets the backend.
    pub fn with_backend(mut self, backend: BackendChoice) -> Self {
        self.backend = backend;
        self
    }

    /// Turns TUN offloads on or off.
    pub fn with_offload(mut self, offload: bool) -> Self {
        self.offload = offload;
        self
    }
}

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service task has stopped (after `shutdown`, or on an I/O error it
    /// returned from its task).
    #[error("the fabric service has stopped")]
    Stopped,
    /// Creating or changing the interface failed; the tunnels themselves were
    /// applied (see `status`).
    #[error("fabric interface: {0}")]
    Tun(#[from] TunError),
    /// Socket or device I/O failed.
    #[error("fabric I/O: {0}")]
    Io(#[from] std::io::Error),
}

enum Request {
    Apply(
        Box<Desired>,
        oneshot::Sender<Result<ApplyReport, ServiceError>>,
    ),
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<Result<(), ServiceError>>),
}

/// Steers the service task; cheap to clone.
#[derive(Clone, Debug)]
pub struct FabricHandle {
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Apply(..) => "Apply",
            Request::Status(_) => "Status",
            Request::Shutdown(_) => "Shutdown",
        })
    }
}

impl FabricHandle {
    /// Makes the tunnels match `desired`, the complete set of active contracts (see
    /// [`Tunnels::apply`]), and carries the changes out on the backend.
    pub async fn apply(&self, desired: Desired) -> Result<ApplyReport, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Apply(Box::new(desired), reply))
            .await
            .map_err(|_| ServiceError::Stopped)?;
        answer.await.map_err(|_| ServiceError::Stopped)?
    }

    /// The status, as `wg show` would print it ([`Status`] is `Display` and
    /// serializable).
    pub async fn status(&self) -> Result<Status, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Status(reply))
            .await
            .map_err(|_| ServiceError::Stopped)?;
        answer.await.map_err(|_| ServiceError::Stopped)
    }

    /// Stops the task, removing routes and the interface. The tunnels come back when
    /// a new service is given the same active contracts.
    pub async fn shutdown(&self) -> Result<(), ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Shutdown(reply))
            .await
            .map_err(|_| ServiceError::Stopped)?;
        answer.await.map_err(|_| ServiceError::Stopped)?
    }
}

/// Starts the service task over `tunnels` and `socket` (must run inside a tokio
/// runtime). The task ends on [`FabricHandle::shutdown`], when every handle is
/// dropped (removing the interface as well), or on a socket error.
pub fn spawn(
    tunnels: Tunnels,
    socket: UdpSocket,
    config: ServiceConfig,
) -> Result<(FabricHandle, JoinHandle<Result<(), ServiceError>>), ServiceError> {
    let udp = UdpIo::new(&socket)?;
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let listen = socket.local_addr().ok();
    let service = Service {
        io: TunIo::new(tunnels.fabric().config().mtu),
        tunnels,
        socket,
        udp,
        backend_io: Backend::None,
        backend: BackendStatus {
            kind: BackendKind::Idle,
            reason: "no active contract needs an interface".into(),
            interface: None,
        },
        listen,
        config,
    };
    Ok((FabricHandle { tx }, tokio::spawn(service.run(rx))))
}

struct Service {
    tunnels: Tunnels,
    socket: UdpSocket,
    udp: UdpIo,
    io: TunIo,
    backend_io: Backend,
    backend: BackendStatus,
    listen: Option<SocketAddr>,
    config: ServiceConfig,
}

impl Service {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) -> Result<(), ServiceError> {
        loop {
            let wake = self
                .tunnels
                .fabric()
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + crate::fabric::TICK * 4);
            let wake = match &mut self.backend_io {
                Backend::Userspace(u) => u.wake(wake),
                _ => wake,
            };
            let io = &mut self.io;
            let (tun, accepted, up) = match &mut self.backend_io {
                Backend::Tun(t) => (Some(&*t), None, None),
                Backend::Userspace(u) => {
                    let Userspace {
                        stack,
                        accept_rx,
                        up_rx,
                        ..
                    } = &mut **u;
                    let wants = stack.wants_data();
                    (None, Some(accept_rx), wants.then_some(up_rx))
                }
                Backend::None => (None, None, None),
            };
            let accept = async {
                match accepted {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let upstream = async {
                match up {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let read = async {
                match tun {
                    Some(t) => {
                        t.device()
                            .recv_multiple(&mut io.original, &mut io.segments, &mut io.sizes, 0)
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                readable = self.socket.readable() => {
                    readable?;
                    // Bounded: at most 8 batches per wake-up.
                    for _ in 0..8 {
                        if !self.udp.recv(&self.socket, self.tunnels.fabric_mut()).map_err(into_service)? {
                            break;
                        }
                    }
                }
                count = read => {
                    let count = count?;
                    self.io.handle(self.tunnels.fabric_mut(), count);
                    if let Backend::Tun(t) = &self.backend_io {
                        for _ in 0..15 {
                            match t.device().try_recv_multiple(&mut self.io.original, &mut self.io.segments, &mut self.io.sizes, 0) {
                                Ok(count) => self.io.handle(self.tunnels.fabric_mut(), count),
                                Err(_) => break,
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    self.tunnels.fabric_mut().handle_timeout(Instant::now());
                }
                Some((stream, remote)) = accept => {
                    if let Backend::Userspace(u) = &mut self.backend_io {
                        u.open(stream, remote);
                    }
                }
                Some(up) = upstream => {
                    if let Backend::Userspace(u) = &mut self.backend_io {
                        u.upstream(up);
                    }
                }
                request = rx.recv() => match request {
                    Some(Request::Apply(desired, reply)) => {
                        let report = self.tunnels.apply(&desired, Instant::now());
                        let _ = reply.send(self.carry_out().map(|()| report));
                    }
                    Some(Request::Status(reply)) => {
                        let _ = reply.send(Status::of(&self.tunnels, self.backend.clone(), self.listen));
                    }
                    Some(Request::Shutdown(reply)) => {
                        let _ = reply.send(self.teardown());
                        return Ok(());
                    }
                    None => return self.teardown(),
                },
            }
            match &mut self.backend_io {
                Backend::Tun(t) => self
                    .io
                    .write(self.tunnels.fabric_mut(), t)
                    .await
                    .map_err(into_service)?,
                Backend::Userspace(u) => u.pump(self.tunnels.fabric_mut()),
                // No backend: nothing can take the packets.
                Backend::None => while self.tunnels.fabric_mut().poll_packet().is_some() {},
            }
            self.udp
                .send_all(&self.socket, self.tunnels.fabric_mut())
                .await;
        }
    }

    /// Carries out the changes `apply` queued; the first error is returned, the
    /// remaining changes are still tried.
    fn carry_out(&mut self) -> Result<(), ServiceError> {
        let mut first = None;
        while let Some(change) = self.tunnels.poll_change() {
            let result = match change {
                Change::InterfaceUp { ipv6, ipv4 } => self.interface_up(ipv6, ipv4),
                Change::AddRoute(net) => match &mut self.backend_io {
                    Backend::Tun(t) => t.add_route(net).map_err(ServiceError::from),
                    _ => Ok(()),
                },
                Change::RemoveRoute(net) => match &mut self.backend_io {
                    Backend::Tun(t) => t.remove_route(&net).map_err(ServiceError::from),
                    _ => Ok(()),
                },
                Change::InterfaceDown => self.interface_down(),
            };
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn interface_up(
        &mut self,
        ipv6: std::net::Ipv6Addr,
        ipv4: Option<std::net::Ipv4Addr>,
    ) -> Result<(), ServiceError> {
        if !matches!(self.backend_io, Backend::None) {
            return Ok(());
        }
        let tun_error = if self.config.backend == BackendChoice::Userspace {
            None
        } else {
            let config = TunConfig::new(self.config.interface.clone(), ipv6)
                .with_mtu(self.tunnels.fabric().config().mtu)
                .with_ipv4(ipv4)
                .with_offload(self.config.offload);
            match TunDevice::open(&config) {
                Ok(tun) => {
                    self.backend_io = Backend::Tun(tun);
                    self.backend = BackendStatus {
                        kind: BackendKind::Tun,
                        reason: match self.config.backend {
                            BackendChoice::Tun => "configured: tun".into(),
                            _ => "auto: this process may create TUN interfaces".into(),
                        },
                        interface: Some(self.config.interface.clone()),
                    };
                    return Ok(());
                }
                Err(e) if self.config.backend == BackendChoice::Tun => {
                    self.backend = BackendStatus {
                        kind: BackendKind::Unavailable,
                        reason: format!("configured: tun, but {e}"),
                        interface: None,
                    };
                    return Err(e.into());
                }
                Err(e) => Some(e),
            }
        };
        let mtu = self.tunnels.fabric().config().mtu;
        let userspace = Userspace::start(ipv6, ipv4, mtu, &self.config.forwards)?;
        self.backend_io = Backend::Userspace(Box::new(userspace));
        self.backend = BackendStatus {
            kind: BackendKind::Userspace,
            reason: match tun_error {
                None => "configured: userspace".into(),
                Some(e) => format!("auto: no TUN interface ({e}), so userspace"),
            },
            interface: None,
        };
        Ok(())
    }

    fn interface_down(&mut self) -> Result<(), ServiceError> {
        self.backend = BackendStatus {
            kind: BackendKind::Idle,
            reason: "no active contract needs an interface".into(),
            interface: None,
        };
        match std::mem::replace(&mut self.backend_io, Backend::None) {
            Backend::Tun(t) => t.teardown().map_err(ServiceError::from),
            Backend::Userspace(_) | Backend::None => Ok(()),
        }
    }

    fn teardown(&mut self) -> Result<(), ServiceError> {
        self.interface_down()
    }
}

fn into_service(e: crate::driver::DriverError) -> ServiceError {
    match e {
        crate::driver::DriverError::Tun(e) => ServiceError::Tun(e),
        crate::driver::DriverError::Io(e) => ServiceError::Io(e),
        other => ServiceError::Io(std::io::Error::other(other.to_string())),
    }
}

/// The backend carrying packets now.
enum Backend {
    None,
    Tun(TunDevice),
    Userspace(Box<Userspace>),
}

/// Bytes read from one local connection, or its end.
enum Up {
    Data(ConnectionId, Vec<u8>),
    Closed(ConnectionId),
}

/// Most bytes read from a local socket at once.
const CHUNK: usize = 16 * 1024;

/// The userspace backend's I/O: the stack, one accept task per forwarded port, one
/// task per connection, bounded channels between them.
struct Userspace {
    stack: Stack,
    accept_rx: mpsc::Receiver<(tokio::net::TcpStream, SocketAddr)>,
    up_tx: mpsc::Sender<Up>,
    up_rx: mpsc::Receiver<Up>,
    down: std::collections::BTreeMap<ConnectionId, mpsc::Sender<Delivery>>,
    tasks: Vec<JoinHandle<()>>,
    /// A delivery waited for room in a connection's channel: poll again soon.
    blocked: bool,
}

impl Drop for Userspace {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Userspace {
    fn start(
        ipv6: std::net::Ipv6Addr,
        ipv4: Option<std::net::Ipv4Addr>,
        mtu: u16,
        forwards: &[PortForward],
    ) -> Result<Self, ServiceError> {
        let (accept_tx, accept_rx) = mpsc::channel(8);
        let (up_tx, up_rx) = mpsc::channel(64);
        let mut tasks = Vec::new();
        for f in forwards {
            let listener = std::net::TcpListener::bind(f.local)?;
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let (tx, remote) = (accept_tx.clone(), f.remote);
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    if tx.send((stream, remote)).await.is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(Self {
            stack: Stack::new(ipv6, ipv4, mtu, Instant::now()),
            accept_rx,
            up_tx,
            up_rx,
            down: std::collections::BTreeMap::new(),
            tasks,
            blocked: false,
        })
    }

    fn wake(&mut self, wake: tokio::time::Instant) -> tokio::time::Instant {
        let now = Instant::now();
        let delay = if self.blocked {
            Some(std::time::Duration::from_millis(1))
        } else {
            self.stack.poll_delay(now)
        };
        match delay {
            Some(d) => wake.min(tokio::time::Instant::from_std(now + d)),
            None => wake,
        }
    }

    fn open(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        // A connection the stack cannot take is closed at once (dropped).
        let Ok(id) = self.stack.connect(remote) else {
            return;
        };
        let (down_tx, down_rx) = mpsc::channel(32);
        self.down.insert(id, down_tx);
        let up = self.up_tx.clone();
        self.tasks.retain(|t| !t.is_finished());
        self.tasks
            .push(tokio::spawn(connection(stream, id, up, down_rx)));
    }

    fn upstream(&mut self, up: Up) {
        match up {
            Up::Data(id, data) => self.stack.send(id, &data),
            Up::Closed(id) => self.stack.close(id),
        }
    }

    /// Packets from the fabric into the stack, the stack's packets into the fabric,
    /// received bytes to the connections.
    fn pump(&mut self, fabric: &mut crate::Fabric) {
        let now = Instant::now();
        while let Some(p) = fabric.poll_packet() {
            self.stack.handle_packet(p);
        }
        self.stack.poll(now);
        self.blocked = false;
        let ids: Vec<ConnectionId> = self.stack.connections().collect();
        for id in ids {
            let Some(tx) = self.down.get(&id) else {
                continue;
            };
            // Bounded: at most 32 deliveries per connection per round.
            for _ in 0..32 {
                let Ok(permit) = tx.try_reserve() else {
                    self.blocked = true;
                    break;
                };
                match self.stack.poll_delivery(id, CHUNK) {
                    Some(Delivery::Data(d)) => permit.send(Delivery::Data(d)),
                    Some(Delivery::Closed) => {
                        permit.send(Delivery::Closed);
                        self.down.remove(&id);
                        break;
                    }
                    None => break,
                }
            }
        }
        // Reading may have opened windows: let the acknowledgements leave.
        self.stack.poll(now);
        while let Some(p) = self.stack.poll_packet() {
            fabric.handle_packet(&p, now);
        }
    }
}

/// Copies between one local TCP connection and the stack.
async fn connection(
    stream: tokio::net::TcpStream,
    id: ConnectionId,
    up: mpsc::Sender<Up>,
    mut down: mpsc::Receiver<Delivery>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = stream.into_split();
    let mut buf = vec![0u8; CHUNK];
    let mut reading = true;
    loop {
        tokio::select! {
            n = read.read(&mut buf), if reading => match n {
                Ok(0) | Err(_) => {
                    reading = false;
                    if up.send(Up::Closed(id)).await.is_err() {
                        return;
                    }
                }
                Ok(n) => {
                    if up.send(Up::Data(id, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            },
            d = down.recv() => match d {
                Some(Delivery::Data(d)) => {
                    if write.write_all(&d).await.is_err() {
                        let _ = up.send(Up::Closed(id)).await;
                        return;
                    }
                }
                Some(Delivery::Closed) | None => {
                    let _ = write.shutdown().await;
                    return;
                }
            },
        }
    }
}
