//! The userspace backend: no TUN interface and no privileges. A small TCP/IP stack
//! ([smoltcp]) in the process owns this node's overlay addresses and exchanges IP
//! packets with the fabric; chosen local TCP ports are forwarded through it to ports
//! of a remote workload at its overlay address (like `ssh -L`).
//!
//! What it does:
//! - TCP, outbound: a connection accepted on a local listener ([`PortForward::local`],
//!   typically `127.0.0.1:PORT`) is opened from this node's overlay address to
//!   [`PortForward::remote`] through the tunnel, and bytes are copied both ways until
//!   either side closes;
//! - IPv6 and IPv4 overlay addresses alike; ICMP echo requests to this node's
//!   overlay address are answered by smoltcp.
//!
//! What it does not do:
//! - no UDP forwarding, and no inbound forwarding (publishing a local port on this
//!   node's overlay address): a provider that serves workloads on the fabric runs the
//!   TUN backend;
//! - no other process on the host sees the overlay: only connections made to the
//!   forwarded local ports cross it (no routes, no interface, no `ping` from a shell);
//! - it is slower than the TUN backend (one copy more per byte, smoltcp's windows;
//!   see docs/PERFORMANCE.md for what was measured), and a connection whose local
//!   side stops reading holds back the others once [`MAX_PENDING`] bytes wait;
//! - no half-close from the remote side: when the workload finishes sending, the
//!   connection is closed both ways (what the local side still had queued leaves
//!   first); a local half-close works (the workload's answer still arrives).
//!
//! [smoltcp]: https://docs.rs/smoltcp

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

/// One forwarded port: connections to `local` reach `remote` through the tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Where to listen on this host, for example `127.0.0.1:8080`.
    pub local: SocketAddr,
    /// The workload's overlay address and port, for example `[fdf0:…]:80`.
    pub remote: SocketAddr,
}

/// Most bytes waiting to enter the stack, over all connections; beyond it no more is
/// read from local sockets until the stack takes some.
pub const MAX_PENDING: usize = 1 << 20;
/// Most packets waiting in each direction between the fabric and the stack.
const MAX_PACKETS: usize = 1024;
/// Each connection's send and receive windows inside the stack.
const SOCKET_BUFFER: usize = 256 * 1024;
/// Most connections at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The device between smoltcp and the fabric: two bounded packet queues.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let result = f(&mut buf);
        if self.0.len() < MAX_PACKETS {
            self.0.push_back(buf);
        }
        result
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// Identifies one forwarded connection.
pub type ConnectionId = u64;

/// Why a forwarded connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// [`MAX_CONNECTIONS`] are open.
    #[error("userspace backend already has {MAX_CONNECTIONS} connections")]
    TooMany,
    /// The remote address's family has no overlay address on this node (IPv4 off).
    #[error("no overlay address of the family of {0} on this node")]
    NoSource(IpAddr),
    /// smoltcp refused the connect (for example port 0).
    #[error("cannot open a connection to {0}")]
    Refused(SocketAddr),
}

struct Connection {
    handle: SocketHandle,
    /// Bytes from the local side not yet in the stack.
    pending: VecDeque<u8>,
    /// The local side closed.
    local_closed: bool,
}

/// What a connection has for its local side.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Bytes from the remote workload.
    Data(Vec<u8>),
    /// The connection is over (closed or reset by either side).
    Closed,
}

/// The userspace TCP/IP stack (I/O-free): packets in and out with the fabric, byte
/// streams in and out with the local sockets.
///
/// Order for a driver: [`Stack::handle_packet`] for what the fabric delivers,
/// [`Stack::send`]/[`Stack::close`] for what local sockets give, then
/// [`Stack::poll`]; then drain [`Stack::poll_packet`] into the fabric and
/// [`Stack::poll_delivery`] towards the local sockets; wake again after
/// [`Stack::poll_delay`].
pub struct Stack {
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    connections: BTreeMap<ConnectionId, Connection>,
    next_id: ConnectionId,
    next_port: u16,
    ipv6: Ipv6Addr,
    ipv4: Option<Ipv4Addr>,
    pending_total: usize,
    epoch: std::time::Instant,
    /// Sockets of finished connections, closing; freed once closed.
    closing: Vec<SocketHandle>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("ipv6", &self.ipv6)
            .field("ipv4", &self.ipv4)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// A stack owning this node's overlay addresses, with the overlay's MTU.
    pub fn new(ipv6: Ipv6Addr, ipv4: Option<Ipv4Addr>, mtu: u16, now: std::time::Instant) -> Self {
        let mut device = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu: usize::from(mtu),
        };
        let epoch = now;
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            smoltcp::time::Instant::ZERO,
        );
        // Every overlay address is on-link: the whole mesh prefix (and the shared
        // IPv4 space) is reached through the one "interface", the fabric.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(
                IpAddress::Ipv6(ipv6),
                crate::overlay::PREFIX_LEN,
            ));
            if let Some(v4) = ipv4 {
                let _ = addrs.push(IpCidr::new(
                    IpAddress::Ipv4(v4),
                    crate::overlay::ipv4_prefix().prefix_len(),
                ));
            }
        });
        Self {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            connections: BTreeMap::new(),
            next_id: 1,
            next_port: 49_152,
            ipv6,
            ipv4,
            pending_total: 0,
            epoch,
            closing: Vec::new(),
        }
    }

    fn at(&self, now: std::time::Instant) -> smoltcp::time::Instant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// An IP packet the fabric delivered (dropped when the queue is full).
    pub fn handle_packet(&mut self, packet: Vec<u8>) {
        if self.device.rx.len() < MAX_PACKETS {
            self.device.rx.push_back(packet);
        }
    }

    /// The next IP packet for the fabric.
    #[must_use]
    pub fn poll_packet(&mut self) -> Option<Vec<u8>> {
        self.device.tx.pop_front()
    }

    /// Opens a connection to `remote` from this node's overlay address.
    pub fn connect(&mut self, remote: SocketAddr) -> Result<ConnectionId, ConnectError> {
        if self.connections.len() >= MAX_CONNECTIONS {
            return Err(ConnectError::TooMany);
        }
        let source = match remote.ip() {
            IpAddr::V6(_) => IpAddress::Ipv6(self.ipv6),
            IpAddr::V4(_) => match self.ipv4 {
                Some(v4) => IpAddress::Ipv4(v4),
                None => return Err(ConnectError::NoSource(remote.ip())),
            },
        };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
        );
        let port = self.next_port;
        self.next_port = if port == u16::MAX { 49_152 } else { port + 1 };
        let target = (IpAddress::from(remote.ip()), remote.port());
        socket
            .connect(self.iface.context(), target, (source, port))
            .map_err(|_| ConnectError::Refused(remote))?;
        let handle = self.sockets.add(socket);
        let id = self.next_id;
        self.next_id += 1;
        self.connections.insert(
            id,
            Connection {
                handle,
                pending: VecDeque::new(),
                local_closed: false,
            },
        );
        Ok(id)
    }

    /// Whether more local bytes may be handed in ([`MAX_PENDING`] not reached).
    pub fn wants_data(&self) -> bool {
        self.pending_total < MAX_PENDING
    }

    /// Bytes from the local side of `id`.
    pub fn send(&mut self, id: ConnectionId, data: &[u8]) {
        if let Some(c) = self.connections.get_mut(&id) {
            c.pending.extend(data);
            self.pending_total += data.len();
        }
    }

    /// The local side of `id` closed.
    pub fn close(&mut self, id: ConnectionId) {
        if let Some(c) = self.connections.get_mut(&id) {
            c.local_closed = true;
        }
    }

    /// Runs the stack at `now`: packets in, sockets, packets out.
    pub fn poll(&mut self, now: std::time::Instant) {
        let at = self.at(now);
        // Bounded: smoltcp handles what is queued; two rounds let data written after
        // the first (window updates) leave at once.
        for _ in 0..2 {
            self.iface.poll(at, &mut self.device, &mut self.sockets);
            for c in self.connections.values_mut() {
                let socket = self.sockets.get_mut::<tcp::Socket>(c.handle);
                while socket.can_send() && !c.pending.is_empty() {
                    let (front, _) = c.pending.as_slices();
                    match socket.send_slice(front) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            c.pending.drain(..n);
                            self.pending_total -= n;
                        }
                    }
                }
                if c.local_closed && c.pending.is_empty() && socket.may_send() {
                    socket.close();
                }
            }
        }
        let sockets = &mut self.sockets;
        self.closing.retain(|h| {
            let done = !sockets.get::<tcp::Socket>(*h).is_active();
            if done {
                sockets.remove(*h);
            }
            !done
        });
    }

    /// What connection `id` has for its local side, at most `max` bytes; `None`
    /// when nothing is waiting.
    #[must_use]
    pub fn poll_delivery(&mut self, id: ConnectionId, max: usize) -> Option<Delivery> {
        let c = self.connections.get(&id)?;
        let socket = self.sockets.get_mut::<tcp::Socket>(c.handle);
        if socket.can_recv() {
            let mut buf = vec![0u8; max.min(socket.recv_queue()).max(1)];
            return match socket.recv_slice(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    Some(Delivery::Data(buf))
                }
                Err(_) => Some(self.remove(id)),
            };
        }
        // Over when closed, or when the remote side finished sending (no half-close:
        // the local side is closed too, after what is queued has left).
        let over =
            !socket.is_active() || (!socket.may_recv() && socket.state() != tcp::State::SynSent);
        over.then(|| self.remove(id))
    }

    fn remove(&mut self, id: ConnectionId) -> Delivery {
        if let Some(c) = self.connections.remove(&id) {
            self.pending_total -= c.pending.len();
            // A graceful close: what is queued still leaves. The socket is freed once
            // closed; too many closing ones are reset, oldest first.
            self.sockets.get_mut::<tcp::Socket>(c.handle).close();
            self.closing.push(c.handle);
            while self.closing.len() > MAX_CONNECTIONS {
                let old = self.closing.remove(0);
                self.sockets.get_mut::<tcp::Socket>(old).abort();
                self.sockets.remove(old);
            }
        }
        Delivery::Closed
    }

    /// The open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.connections.keys().copied()
    }

    /// How long until [`Stack::poll`] wants to run again (`None`: only on input).
    pub fn poll_delay(&mut self, now: std::time::Instant) -> Option<std::time::Duration> {
        let at = self.at(now);
        self.iface
            .poll_delay(at, &self.sockets)
            .map(|d| std::time::Duration::from_micros(d.total_micros()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A plain smoltcp host on the other end of the "tunnel", listening on a port.
    struct Server {
        iface: Interface,
        device: Queues,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    }

    impl Server {
        fn new(addr: Ipv6Addr, port: u16) -> Self {
            let mut device = Queues {
                rx: VecDeque::new(),
                tx: VecDeque::new(),
                mtu: 1420,
            };
            let mut iface = Interface::new(
                Config::new(HardwareAddress::Ip),
                &mut device,
                smoltcp::time::Instant::ZERO,
            );
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(addr), 48));
            });
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; 65_536]),
                tcp::SocketBuffer::new(vec![0u8; 65_536]),
            );
            socket.listen(port).unwrap();
            let mut sockets = SocketSet::new(Vec::new());
            let handle = sockets.add(socket);
            Self {
                iface,
                device,
                sockets,
                handle,
            }
        }
    }

    #[test]
    fn a_forwarded_connection_carries_bytes_both_ways_and_closes() {
        let me: Ipv6Addr = "fdf0:6a54:bda7::1".parse().unwrap();
        let them: Ipv6Addr = "fdf0:6a54:bda7::2".parse().unwrap();
        let start = Instant::now();
        let mut stack = Stack::new(me, None, 1420, start);
        let mut server = Server::new(them, 80);
        assert_eq!(
            stack.connect(SocketAddr::from((Ipv4Addr::new(100, 64, 0, 9), 80))),
            Err(ConnectError::NoSource(IpAddr::V4(Ipv4Addr::new(
                100, 64, 0, 9
            ))))
        );
        let id = stack.connect(SocketAddr::from((them, 80))).unwrap();
        let request = vec![7u8; 100_000];
        stack.send(id, &request);
        stack.close(id);

        let mut received = Vec::new();
        let mut answered = false;
        let mut got = Vec::new();
        let mut closed = false;
        // Bounded: 2000 rounds of 1 ms simulated time.
        for round in 0..2000u64 {
            let now = start + Duration::from_millis(round);
            let at = smoltcp::time::Instant::from_millis(i64::try_from(round).unwrap());
            stack.poll(now);
            while let Some(p) = stack.poll_packet() {
                server.device.rx.push_back(p);
            }
            server
                .iface
                .poll(at, &mut server.device, &mut server.sockets);
            let socket = server.sockets.get_mut::<tcp::Socket>(server.handle);
            while socket.can_recv() {
                let mut buf = [0u8; 4096];
                let n = socket.recv_slice(&mut buf).unwrap();
                received.extend_from_slice(&buf[..n]);
            }
            if received.len() == request.len() && !answered && socket.can_send() {
                socket.send_slice(b"thanks").unwrap();
                socket.close();
                answered = true;
            }
            server
                .iface
                .poll(at, &mut server.device, &mut server.sockets);
            while let Some(p) = server.device.tx.pop_front() {
                stack.handle_packet(p);
            }
            stack.poll(now);
            while let Some(d) = stack.poll_delivery(id, 1024) {
                match d {
                    Delivery::Data(d) => got.extend(d),
                    Delivery::Closed => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
        }
        assert_eq!(received.len(), request.len());
        assert!(received == request);
        assert_eq!(got, b"thanks");
        assert!(closed, "the connection did not end");
        assert_eq!(stack.connections().count(), 0);
        assert!(stack.wants_data());
    }
}
