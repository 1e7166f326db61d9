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

/// Which backend the service uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendChoice {
    /// A TUN interface; `apply` fails when it cannot be created.
    Tun,
    /// A TUN interface when this process may create one (CAP_NET_ADMIN and
    /// `/dev/net/tun`); otherwise the tunnels are kept without an interface and
    /// `status` says why. The default.
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
}

impl ServiceConfig {
    /// Defaults with this interface name.
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            backend: BackendChoice::Auto,
            offload: true,
            queue: 16,
        }
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
        tun: None,
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
    tun: Option<TunDevice>,
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
            let tun = self.tun.as_ref();
            let io = &mut self.io;
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
                    if let Some(t) = &self.tun {
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
            self.udp
                .send_all(&self.socket, self.tunnels.fabric_mut())
                .await;
            match &self.tun {
                Some(t) => self
                    .io
                    .write(self.tunnels.fabric_mut(), t)
                    .await
                    .map_err(into_service)?,
                // No interface: nothing can take the packets.
                None => while self.tunnels.fabric_mut().poll_packet().is_some() {},
            }
        }
    }

    /// Carries out the changes `apply` queued; the first error is returned, the
    /// remaining changes are still tried.
    fn carry_out(&mut self) -> Result<(), ServiceError> {
        let mut first = None;
        while let Some(change) = self.tunnels.poll_change() {
            let result = match change {
                Change::InterfaceUp { ipv6, ipv4 } => self.interface_up(ipv6, ipv4),
                Change::AddRoute(net) => match &mut self.tun {
                    Some(t) => t.add_route(net).map_err(ServiceError::from),
                    None => Ok(()),
                },
                Change::RemoveRoute(net) => match &mut self.tun {
                    Some(t) => t.remove_route(&net).map_err(ServiceError::from),
                    None => Ok(()),
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
        if self.tun.is_some() {
            return Ok(());
        }
        let config = TunConfig::new(self.config.interface.clone(), ipv6)
            .with_mtu(self.tunnels.fabric().config().mtu)
            .with_ipv4(ipv4)
            .with_offload(self.config.offload);
        match TunDevice::open(&config) {
            Ok(tun) => {
                self.tun = Some(tun);
                self.backend = BackendStatus {
                    kind: BackendKind::Tun,
                    reason: match self.config.backend {
                        BackendChoice::Tun => "configured: tun".into(),
                        BackendChoice::Auto => {
                            "auto: this process may create TUN interfaces".into()
                        }
                    },
                    interface: Some(self.config.interface.clone()),
                };
                Ok(())
            }
            Err(e) => {
                self.backend = BackendStatus {
                    kind: BackendKind::Unavailable,
                    reason: format!(
                        "no TUN interface ({e}); no CAP_NET_ADMIN or /dev/net/tun means no \
                         backend until the userspace one lands"
                    ),
                    interface: None,
                };
                match self.config.backend {
                    BackendChoice::Tun => Err(e.into()),
                    BackendChoice::Auto => Ok(()),
                }
            }
        }
    }

    fn interface_down(&mut self) -> Result<(), ServiceError> {
        self.backend = BackendStatus {
            kind: BackendKind::Idle,
            reason: "no active contract needs an interface".into(),
            interface: None,
        };
        match self.tun.take() {
            Some(t) => t.teardown().map_err(ServiceError::from),
            None => Ok(()),
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
