//! Keeps connections that carry REAR traffic open between requests, without a timer
//! per request.
//!
//! Why: libp2p closes a connection that has no streams and whose handlers all say
//! `connection_keep_alive() == false` after `idle_connection_timeout`, and it arms a
//! fresh `futures_timer::Delay` for that every time the connection goes idle, then
//! drops it when the next stream opens. REAR opens one stream per request, so a buyer
//! in a loop paid two timer registrations per request (one per side) on the global
//! timer thread. This behaviour's handler says "keep alive" while the peer is *in use*
//! (a REAR message was exchanged with it within the idle timeout), so the swarm arms
//! no idle timer between back-to-back requests.
//!
//! Use is marked by the event loop ([`KeepAlive::touch`]) and released by one coarse
//! periodic [`KeepAlive::sweep`]; on release the handlers are told to stop keeping the
//! connection alive and libp2p's normal idle timeout runs from there (so an unused
//! connection closes between 2× and 2× + one sweep period after its last request).
//! The handler arms no timer and speaks no protocol.
//!
//! Bounds: at most [`MAX_TRACKED_PEERS`] peers (connected, or touched before their
//! connection is up) and [`MAX_CONNECTIONS_PER_PEER`] connections of each are
//! tracked; a peer is forgotten when its last connection closes (or, if it never
//! connected, when it is swept). Peers and connections beyond the bounds get
//! libp2p's plain idle timeout, i.e. the behaviour before this module existed.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    FromSwarm, NetworkBehaviour, NotifyHandler, StreamUpgradeError, SubstreamProtocol, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Peers tracked at most (connected peers plus peers touched before connecting): 64
/// times the REAR benchmark's 64 buyers, at ~150 bytes each (~600 KiB when full).
pub(crate) const MAX_TRACKED_PEERS: usize = 4096;
/// Connections of one peer tracked at most; a peer normally has one or two.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 8;

#[derive(Debug, Default)]
struct Peer {
    /// The last REAR exchange while the peer is in use; `None` once released.
    last_use: Option<Instant>,
    /// Its established connections whose handlers this behaviour steers.
    connections: Vec<ConnectionId>,
}

/// The keep-alive table. Call [`KeepAlive::touch`] on every REAR message and
/// [`KeepAlive::sweep`] periodically; the swarm polls it for handler notifications.
#[derive(Debug)]
pub(crate) struct KeepAlive {
    timeout: Duration,
    max_peers: usize,
    peers: BTreeMap<PeerId, Peer>,
    /// Peers with `last_use.is_some()`.
    in_use: usize,
    /// Connections whose handler must be told the peer's current state. A set, not a
    /// queue: repeated changes before the swarm polls coalesce into one notification
    /// of the latest state, so it never holds more than the tracked connections.
    dirty: BTreeSet<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl KeepAlive {
    /// A table that keeps peers in use for `timeout` after their last REAR message
    /// (the swarm's idle connection timeout). A zero timeout keeps nothing alive.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self::with_capacity(timeout, MAX_TRACKED_PEERS)
    }

    fn with_capacity(timeout: Duration, max_peers: usize) -> Self {
        Self {
            timeout,
            max_peers,
            peers: BTreeMap::new(),
            in_use: 0,
            dirty: BTreeSet::new(),
            waker: None,
        }
    }

    /// Marks `peer` in use at `now` (a REAR request or response was sent to or seen
    /// from it). Returns whether the peer is kept alive; `false` when the table is full
    /// (that peer gets the plain idle timeout) or the timeout is zero.
    pub(crate) fn touch(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.timeout.is_zero() {
            return false;
        }
        let Some(p) = Self::slot(&mut self.peers, self.max_peers, peer) else {
            tracing::debug!(%peer, "keep-alive table full; plain idle timeout for this peer");
            return false;
        };
        match &mut p.last_use {
            Some(t) => *t = (*t).max(now),
            None => {
                p.last_use = Some(now);
                self.in_use += 1;
                Self::mark(&mut self.dirty, &mut self.waker, peer, &p.connections);
            }
        }
        true
    }

    /// Releases every peer not touched for the timeout, and forgets released peers
    /// that never connected. Meant for one coarse periodic tick, not per request.
    pub(crate) fn sweep(&mut self, now: Instant) {
        if self.in_use == 0 {
            return;
        }
        let Self {
            timeout,
            peers,
            in_use,
            dirty,
            waker,
            ..
        } = self;
        peers.retain(|peer, p| {
            let Some(t) = p.last_use else { return true };
            if now.saturating_duration_since(t) < *timeout {
                return true;
            }
            p.last_use = None;
            *in_use -= 1;
            Self::mark(dirty, waker, *peer, &p.connections);
            !p.connections.is_empty()
        });
    }

    /// The entry of `peer`, created if the table has room.
    fn slot(
        peers: &mut BTreeMap<PeerId, Peer>,
        max_peers: usize,
        peer: PeerId,
    ) -> Option<&mut Peer> {
        let full = peers.len() >= max_peers;
        match peers.entry(peer) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(_) if full => None,
            Entry::Vacant(e) => Some(e.insert(Peer::default())),
        }
    }

    /// Peers kept alive now.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Whether `peer` is in use.
    #[cfg(test)]
    fn is_in_use(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.last_use.is_some())
    }

    fn mark(
        dirty: &mut BTreeSet<(PeerId, ConnectionId)>,
        waker: &mut Option<Waker>,
        peer: PeerId,
        connections: &[ConnectionId],
    ) {
        if connections.is_empty() {
            return;
        }
        dirty.extend(connections.iter().map(|c| (peer, *c)));
        if let Some(w) = waker.take() {
            w.wake();
        }
    }

    /// The initial state of a new connection's handler. Only a connection this table
    /// will track may start kept alive, or nothing would ever release it.
    fn new_handler(&self, peer: &PeerId) -> Handler {
        let keep_alive = self.peers.get(peer).is_some_and(|p| {
            p.last_use.is_some() && p.connections.len() < MAX_CONNECTIONS_PER_PEER
        });
        Handler { keep_alive }
    }

    fn on_established(&mut self, peer: PeerId, connection: ConnectionId) {
        // Same rule as `new_handler`, which the swarm calls just before this.
        let Some(p) = Self::slot(&mut self.peers, self.max_peers, peer) else {
            return;
        };
        if p.connections.len() < MAX_CONNECTIONS_PER_PEER {
            p.connections.push(connection);
        }
    }

    fn on_closed(&mut self, peer: PeerId, connection: ConnectionId, remaining: usize) {
        self.dirty.remove(&(peer, connection));
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.connections.retain(|c| *c != connection);
        // The last connection is gone: forget the peer, in use or not.
        if remaining == 0
            && let Some(p) = self.peers.remove(&peer)
        {
            if p.last_use.is_some() {
                self.in_use -= 1;
            }
            for c in p.connections {
                self.dirty.remove(&(peer, c));
            }
        }
    }
}

impl NetworkBehaviour for KeepAlive {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(&peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(&peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => self.on_established(e.peer_id, e.connection_id),
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => self.on_closed(peer_id, connection_id, remaining_established),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        while let Some((peer, connection)) = self.dirty.pop_first() {
            if let Some(p) = self.peers.get(&peer)
                && p.connections.contains(&connection)
            {
                return Poll::Ready(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(connection),
                    event: p.last_use.is_some(),
                });
            }
        }
        // The swarm polls behaviours very often; clone the waker only when it changed.
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A connection handler without protocols that keeps its connection alive while the
/// behaviour says the peer is in use (the event is the new state).
#[derive(Debug)]
pub(crate) struct Handler {
    keep_alive: bool,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = bool;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive
    }

    fn on_behaviour_event(&mut self, keep_alive: bool) {
        self.keep_alive = keep_alive;
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol, ..
            }) => libp2p::core::util::unreachable(protocol),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol, ..
            }) => libp2p::core::util::unreachable(protocol),
            // This handler never asks for an outbound stream, so there is nothing to fail;
            // ignore rather than panic if a future libp2p reports one anyway.
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => match error {
                StreamUpgradeError::Apply(e) => libp2p::core::util::unreachable(e),
                StreamUpgradeError::Timeout
                | StreamUpgradeError::NegotiationFailed
                | StreamUpgradeError::Io(_) => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::ConnectedPoint;
    use libp2p::swarm::behaviour::ConnectionEstablished;

    const T: Duration = Duration::from_secs(60);

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    /// What the swarm does when a connection comes up: ask for a handler, then report it.
    fn connect(ka: &mut KeepAlive, peer: PeerId, id: usize) -> (ConnectionId, Handler) {
        let c = ConnectionId::new_unchecked(id);
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let h = ka
            .handle_established_inbound_connection(c, peer, &a, &a)
            .unwrap();
        let ep = endpoint();
        ka.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: c,
            endpoint: &ep,
            failed_addresses: &[],
            other_established: 0,
        }));
        (c, h)
    }

    fn close(ka: &mut KeepAlive, peer: PeerId, c: ConnectionId, remaining: usize) {
        let ep = endpoint();
        ka.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: c,
            endpoint: &ep,
            cause: None,
            remaining_established: remaining,
        }));
    }

    /// Drains the behaviour: every (peer, connection, keep-alive) notification.
    fn drain(ka: &mut KeepAlive) -> Vec<(PeerId, ConnectionId, bool)> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match ka.poll(&mut cx) {
                Poll::Ready(ToSwarm::NotifyHandler {
                    peer_id,
                    handler: NotifyHandler::One(c),
                    event,
                }) => out.push((peer_id, c, event)),
                Poll::Ready(other) => panic!("unexpected {other:?}"),
                Poll::Pending => return out,
            }
        }
        panic!("the behaviour never settles");
    }

    #[test]
    fn touch_keeps_alive_and_sweep_releases_after_the_timeout() {
        let mut ka = KeepAlive::new(T);
        let peer = PeerId::random();
        let (c, mut h) = connect(&mut ka, peer, 1);
        assert!(
            !h.connection_keep_alive(),
            "not in use before any REAR message"
        );
        assert!(drain(&mut ka).is_empty());

        let t0 = Instant::now();
        assert!(ka.touch(peer, t0));
        assert!(ka.is_in_use(&peer));
        assert_eq!(ka.in_use(), 1);
        let n = drain(&mut ka);
        assert_eq!(n, vec![(peer, c, true)]);
        h.on_behaviour_event(n[0].2);
        assert!(h.connection_keep_alive());

        // More use while in use notifies nobody: no work per request.
        assert!(ka.touch(peer, t0 + Duration::from_secs(30)));
        assert!(drain(&mut ka).is_empty());

        // Within the timeout of the last touch: still in use.
        ka.sweep(t0 + Duration::from_secs(80));
        assert!(ka.is_in_use(&peer));
        assert!(drain(&mut ka).is_empty());

        ka.sweep(t0 + Duration::from_secs(90));
        assert!(!ka.is_in_use(&peer));
        assert_eq!(ka.in_use(), 0);
        let n = drain(&mut ka);
        assert_eq!(n, vec![(peer, c, false)]);
        h.on_behaviour_event(n[0].2);
        assert!(!h.connection_keep_alive());

        // Used again: kept alive again.
        assert!(ka.touch(peer, t0 + Duration::from_secs(100)));
        assert_eq!(drain(&mut ka), vec![(peer, c, true)]);
    }

    #[test]
    fn a_connection_to_a_peer_in_use_starts_kept_alive() {
        let mut ka = KeepAlive::new(T);
        let peer = PeerId::random();
        // The buyer touches before the dial completes.
        let t0 = Instant::now();
        assert!(ka.touch(peer, t0));
        assert!(drain(&mut ka).is_empty(), "no connection to notify yet");
        let (c1, h1) = connect(&mut ka, peer, 1);
        let (c2, h2) = connect(&mut ka, peer, 2);
        assert!(h1.connection_keep_alive() && h2.connection_keep_alive());
        ka.sweep(t0 + T);
        let mut n = drain(&mut ka);
        n.sort();
        assert_eq!(n, vec![(peer, c1, false), (peer, c2, false)]);
        // Another peer that is not in use starts without keep-alive.
        let (_, h3) = connect(&mut ka, PeerId::random(), 3);
        assert!(!h3.connection_keep_alive());
    }

    #[test]
    fn changes_before_a_poll_coalesce_into_the_latest_state() {
        let mut ka = KeepAlive::new(T);
        let peer = PeerId::random();
        let (c, _) = connect(&mut ka, peer, 1);
        let t0 = Instant::now();
        ka.touch(peer, t0);
        ka.sweep(t0 + T);
        ka.touch(peer, t0 + T);
        assert_eq!(drain(&mut ka), vec![(peer, c, true)]);
    }

    #[test]
    fn peers_are_forgotten_when_their_last_connection_closes() {
        let mut ka = KeepAlive::new(T);
        let peer = PeerId::random();
        let (c1, _) = connect(&mut ka, peer, 1);
        let (c2, _) = connect(&mut ka, peer, 2);
        ka.touch(peer, Instant::now());
        close(&mut ka, peer, c1, 1);
        assert!(ka.is_in_use(&peer), "one connection left");
        // Notifications for closed connections are dropped, not sent.
        assert_eq!(drain(&mut ka), vec![(peer, c2, true)]);
        ka.sweep(Instant::now() + T);
        close(&mut ka, peer, c2, 0);
        assert!(drain(&mut ka).is_empty());
        assert!(ka.peers.is_empty());
        assert_eq!(ka.in_use(), 0);

        // Closing while in use forgets the peer too.
        let (c3, _) = connect(&mut ka, peer, 3);
        ka.touch(peer, Instant::now());
        close(&mut ka, peer, c3, 0);
        assert!(ka.peers.is_empty());
        assert_eq!(ka.in_use(), 0);
        assert!(drain(&mut ka).is_empty());
    }

    #[test]
    fn touched_peers_that_never_connect_are_forgotten_by_the_sweep() {
        let mut ka = KeepAlive::new(T);
        let t0 = Instant::now();
        ka.touch(PeerId::random(), t0);
        ka.sweep(t0 + T);
        assert!(ka.peers.is_empty());
        assert_eq!(ka.in_use(), 0);
    }

    #[test]
    fn the_table_is_capped() {
        let mut ka = KeepAlive::with_capacity(T, 4);
        let now = Instant::now();
        for i in 0..3 {
            connect(&mut ka, PeerId::random(), i);
        }
        assert!(ka.touch(PeerId::random(), now));
        assert_eq!(ka.peers.len(), 4);
        // Full: a new peer is neither touched nor tracked, and its handler stays plain.
        let extra = PeerId::random();
        assert!(!ka.touch(extra, now));
        assert!(!ka.is_in_use(&extra));
        let (_, h) = connect(&mut ka, extra, 99);
        assert!(!h.connection_keep_alive());
        assert!(!ka.touch(extra, now));
        assert_eq!(ka.peers.len(), 4);
        assert_eq!(ka.in_use(), 1);
        // Closing an untracked connection is harmless.
        close(&mut ka, extra, ConnectionId::new_unchecked(99), 0);
        assert_eq!(ka.peers.len(), 4);
    }

    #[test]
    fn connections_per_peer_are_capped_and_extra_ones_never_kept_alive() {
        let mut ka = KeepAlive::new(T);
        let peer = PeerId::random();
        ka.touch(peer, Instant::now());
        let handlers: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER + 2)
            .map(|i| connect(&mut ka, peer, i).1)
            .collect();
        let kept = handlers
            .iter()
            .filter(|h| h.connection_keep_alive())
            .count();
        assert_eq!(kept, MAX_CONNECTIONS_PER_PEER);
        assert_eq!(ka.peers[&peer].connections.len(), MAX_CONNECTIONS_PER_PEER);
    }

    #[test]
    fn a_zero_timeout_keeps_nothing_alive() {
        let mut ka = KeepAlive::new(Duration::ZERO);
        let peer = PeerId::random();
        assert!(!ka.touch(peer, Instant::now()));
        let (_, h) = connect(&mut ka, peer, 1);
        assert!(!h.connection_keep_alive());
    }
}
