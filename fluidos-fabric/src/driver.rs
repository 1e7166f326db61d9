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
    let mut packet = vec![0u8; 65_536];
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
            read = tun.device().recv(&mut packet) => {
                let len = read?;
                fabric.handle_packet(&packet[..len], Instant::now());
                for _ in 0..63 {
                    match tun.device().try_recv(&mut packet) {
                        Ok(len) => fabric.handle_packet(&packet[..len], Instant::now()),
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
        flush(&mut fabric, &tun, &socket).await?;
    }
}

async fn flush(
    fabric: &mut Fabric,
    tun: &TunDevice,
    socket: &UdpSocket,
) -> Result<(), DriverError> {
    while let Some(t) = fabric.poll_transmit() {
        send(socket, t.to, &t.payload).await;
    }
    while let Some(p) = fabric.poll_packet() {
        // A full device queue drops the packet, as a router would.
        if let Err(e) = tun.device().try_send(&p)
            && e.kind() != std::io::ErrorKind::WouldBlock
        {
            return Err(e.into());
        }
    }
    Ok(())
}

async fn send(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) {
    // Unreachable peers and full buffers lose the datagram; WireGuard's timers
    // retry what matters.
    let _ = socket.send_to(payload, to).await;
}
