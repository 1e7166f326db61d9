//! The tokio driver of the TUN backend: one task owning the UDP socket, the TUN
//! device and the I/O-free [`Fabric`], steered through a bounded command channel.

use std::time::Instant;

use fluidos_contracts::WireGuardKey;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::fabric::{AddPeerError, Fabric, PeerConfig, PeerStatus};
use crate::tun::{TunDevice, TunError};

/// Commands the driver task accepts.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Adds a peer and routes its allowed networks through the interface.
    AddPeer(PeerConfig, oneshot::Sender<Result<(), DriverError>>),
    /// Removes a peer and its routes; `revoke` refuses its key from then on.
    RemovePeer {
        /// The peer's key.
        key: WireGuardKey,
        /// Whether the key is refused from now on (its contract ended).
        revoke: bool,
        /// Answered once done.
        done: oneshot::Sender<Result<(), DriverError>>,
    },
    /// The peers, as [`Fabric::peers`].
    Status(oneshot::Sender<Vec<PeerStatus>>),
    /// Stops the task, removing routes and the interface.
    Shutdown(oneshot::Sender<Result<(), DriverError>>),
}

/// Why a driver command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The fabric refused the peer.
    #[error(transparent)]
    Peer(#[from] AddPeerError),
    /// Changing routes or the interface failed.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// Socket or device I/O failed.
    #[error("fabric I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the fabric until [`Command::Shutdown`] or until every command sender is gone
/// (then the interface is removed as well).
pub async fn run(
    mut fabric: Fabric,
    mut tun: TunDevice,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
) -> Result<(), DriverError> {
    let mut io = TunIo::new(fabric.config().mtu);
    let mut udp = UdpIo::new(&socket)?;
    loop {
        let wake = fabric
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + crate::fabric::TICK * 4);
        tokio::select! {
            readable = socket.readable() => {
                readable?;
                // Bounded: at most 8 batches (each up to BATCH_SIZE GRO'd buffers) per wake-up.
                for _ in 0..8 {
                    if !udp.recv(&socket, &mut fabric)? {
                        break;
                    }
                }
            }
            read = tun.device().recv_multiple(&mut io.original, &mut io.segments, &mut io.sizes, 0) => {
                let count = read?;
                io.handle(&mut fabric, count);
                for _ in 0..15 {
                    match tun.device().try_recv_multiple(&mut io.original, &mut io.segments, &mut io.sizes, 0) {
                        Ok(count) => io.handle(&mut fabric, count),
                        Err(_) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {
                fabric.handle_timeout(Instant::now());
            }
            command = commands.recv() => {
                match command {
                    Some(Command::AddPeer(peer, done)) => {
                        let nets = peer.allowed_ips.clone();
                        let result = fabric.add_peer(peer).map_err(DriverError::from).and_then(|()| {
                            nets.into_iter().try_for_each(|n| tun.add_route(n)).map_err(DriverError::from)
                        });
                        let _ = done.send(result);
                    }
                    Some(Command::RemovePeer { key, revoke, done }) => {
                        let nets: Vec<_> = fabric
                            .peers()
                            .into_iter()
                            .filter(|p| p.public_key == key)
                            .flat_map(|p| p.allowed_ips)
                            .collect();
                        if revoke { fabric.revoke(&key) } else { fabric.remove_peer(&key); }
                        let result = nets.iter().try_for_each(|n| tun.remove_route(n)).map_err(DriverError::from);
                        let _ = done.send(result);
                    }
                    Some(Command::Status(reply)) => {
                        let _ = reply.send(fabric.peers());
                    }
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(tun.teardown().map_err(DriverError::from));
                        return Ok(());
                    }
                    None => {
                        tun.teardown()?;
                        return Ok(());
                    }
                }
            }
        }
        flush(&mut fabric, &tun, &socket, &mut io, &mut udp).await?;
    }
}

/// Buffers for batched device I/O: with offloads one read yields up to 64 KiB split
/// into MTU-sized segments, and the packets for the device are coalesced (GRO) into
/// as few writes as possible.
pub(crate) struct TunIo {
    pub(crate) original: Vec<u8>,
    pub(crate) segments: Vec<Vec<u8>>,
    pub(crate) sizes: Vec<usize>,
    outgoing: Vec<Vec<u8>>,
    gro: tun_rs::GROTable,
}

impl TunIo {
    pub(crate) fn new(mtu: u16) -> Self {
        let segment = usize::from(mtu) + 64;
        Self {
            original: vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_535],
            segments: vec![vec![0u8; segment]; tun_rs::IDEAL_BATCH_SIZE],
            sizes: vec![0; tun_rs::IDEAL_BATCH_SIZE],
            outgoing: Vec::new(),
            gro: tun_rs::GROTable::default(),
        }
    }

    pub(crate) fn handle(&self, fabric: &mut Fabric, count: usize) {
        let now = Instant::now();
        for (segment, &size) in self.segments.iter().zip(&self.sizes).take(count) {
            fabric.handle_packet(&segment[..size], now);
        }
    }
}

/// Room the offload header needs in front of each packet written to the device.
const WRITE_OFFSET: usize = tun_rs::VIRTIO_NET_HDR_LEN + 2;

async fn flush(
    fabric: &mut Fabric,
    tun: &TunDevice,
    socket: &UdpSocket,
    io: &mut TunIo,
    udp: &mut UdpIo,
) -> Result<(), DriverError> {
    udp.send_all(socket, fabric).await;
    io.write(fabric, tun).await
}

impl TunIo {
    /// Writes every packet the fabric has for the device, coalesced.
    pub(crate) async fn write(
        &mut self,
        fabric: &mut Fabric,
        tun: &TunDevice,
    ) -> Result<(), DriverError> {
        let io = self;
        io.outgoing.clear();
        while let Some(p) = fabric.poll_packet() {
            let mut buf = Vec::with_capacity(WRITE_OFFSET + p.len());
            buf.resize(WRITE_OFFSET, 0);
            buf.extend_from_slice(&p);
            io.outgoing.push(buf);
        }
        if !io.outgoing.is_empty()
        && let Err(e) = tun
            .device()
            .send_multiple(&mut io.gro, &mut io.outgoing, WRITE_OFFSET)
            .await
        // A full device queue drops packets, as a router would.
        && e.kind() != std::io::ErrorKind::WouldBlock
        {
            return Err(e.into());
        }
        Ok(())
    }
}

/// Batched UDP I/O: GRO'd receive buffers and GSO sends of equal-sized datagrams to
/// one destination (what a TCP flow through the tunnel produces).
pub(crate) struct UdpIo {
    state: quinn_udp::UdpSocketState,
    buffers: Vec<Vec<u8>>,
    metas: Vec<quinn_udp::RecvMeta>,
    gso: Vec<u8>,
}

/// One receive buffer: room for a full GRO batch of datagrams.
const GRO_BUFFER: usize = 65_536;

impl UdpIo {
    pub(crate) fn new(socket: &UdpSocket) -> std::io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new(socket.into())?;
        Ok(Self {
            buffers: vec![vec![0u8; GRO_BUFFER]; quinn_udp::BATCH_SIZE],
            metas: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            gso: Vec::with_capacity(GRO_BUFFER),
            state,
        })
    }

    /// Reads one batch if one is waiting; returns whether anything was read.
    pub(crate) fn recv(
        &mut self,
        socket: &UdpSocket,
        fabric: &mut Fabric,
    ) -> Result<bool, DriverError> {
        let Self {
            state,
            buffers,
            metas,
            ..
        } = self;
        let mut slices: Vec<std::io::IoSliceMut<'_>> = buffers
            .iter_mut()
            .map(|b| std::io::IoSliceMut::new(b))
            .collect();
        let received = socket.try_io(tokio::io::Interest::READABLE, || {
            state.recv(socket.into(), &mut slices, metas)
        });
        let count = match received {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            // ICMP errors surface as failed reads on Linux; they are not fatal.
            Err(_) => return Ok(true),
        };
        let now = Instant::now();
        for (meta, slice) in metas.iter().zip(&slices).take(count) {
            let data = slice.get(..meta.len).unwrap_or_default();
            let stride = meta.stride.max(1);
            for datagram in data.chunks(stride) {
                fabric.handle_datagram(meta.addr, datagram, now);
            }
        }
        Ok(true)
    }

    /// Sends every queued datagram, runs of equal size to one destination as one GSO
    /// send. Datagrams that cannot be sent are lost; WireGuard's timers retry what
    /// matters.
    pub(crate) async fn send_all(&mut self, socket: &UdpSocket, fabric: &mut Fabric) {
        let max_segments = self.state.max_gso_segments().clamp(1, 64);
        let mut pending = fabric.poll_transmit();
        while let Some(first) = pending.take() {
            let size = first.payload.len();
            self.gso.clear();
            self.gso.extend_from_slice(&first.payload);
            let mut segments = 1;
            while segments < max_segments && self.gso.len() + size <= GRO_BUFFER {
                match fabric.poll_transmit() {
                    Some(next) if next.to == first.to && next.payload.len() <= size => {
                        self.gso.extend_from_slice(&next.payload);
                        segments += 1;
                        if next.payload.len() < size {
                            // A shorter datagram can only end a GSO batch.
                            break;
                        }
                    }
                    other => {
                        pending = other;
                        break;
                    }
                }
            }
            let transmit = quinn_udp::Transmit {
                destination: first.to,
                ecn: None,
                contents: &self.gso,
                segment_size: (segments > 1).then_some(size),
                src_ip: None,
            };
            for _ in 0..4 {
                let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
                    self.state.try_send(socket.into(), &transmit)
                });
                match sent {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if socket.writable().await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if pending.is_none() {
                pending = fabric.poll_transmit();
            }
        }
    }
}
