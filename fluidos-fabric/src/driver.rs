//! The tokio driver of the TUN backend: one task owning the UDP socket, the TUN
//! device and the I/O-free [`Fabric`], steered through a bounded command channel.

use std::net::SocketAddr;
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
    let mut datagram = vec![0u8; 65_536];
    let mut io = TunIo::new(fabric.config().mtu);
    loop {
        let wake = fabric
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + crate::fabric::TICK * 4);
        tokio::select! {
            received = socket.recv_from(&mut datagram) => {
                let (len, from) = received?;
                fabric.handle_datagram(from, &datagram[..len], Instant::now());
                // Drain what else is already waiting, without another wake-up.
                for _ in 0..63 {
                    match socket.try_recv_from(&mut datagram) {
                        Ok((len, from)) => fabric.handle_datagram(from, &datagram[..len], Instant::now()),
                        Err(_) => break,
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
        flush(&mut fabric, &tun, &socket, &mut io).await?;
    }
}

/// Buffers for batched device I/O: with offloads one read yields up to 64 KiB split
/// into MTU-sized segments, and the packets for the device are coalesced (GRO) into
/// as few writes as possible.
struct TunIo {
    original: Vec<u8>,
    segments: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    outgoing: Vec<Vec<u8>>,
    gro: tun_rs::GROTable,
}

impl TunIo {
    fn new(mtu: u16) -> Self {
        let segment = usize::from(mtu) + 64;
        Self {
            original: vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_535],
            segments: vec![vec![0u8; segment]; tun_rs::IDEAL_BATCH_SIZE],
            sizes: vec![0; tun_rs::IDEAL_BATCH_SIZE],
            outgoing: Vec::new(),
            gro: tun_rs::GROTable::default(),
        }
    }

    fn handle(&self, fabric: &mut Fabric, count: usize) {
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
) -> Result<(), DriverError> {
    while let Some(t) = fabric.poll_transmit() {
        send(socket, t.to, &t.payload).await;
    }
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

async fn send(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) {
    // Unreachable peers and full buffers lose the datagram; WireGuard's timers
    // retry what matters.
    if socket.try_send_to(payload, to).is_err() {
        let _ = socket.send_to(payload, to).await;
    }
}
