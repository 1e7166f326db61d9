//! Application protocols: `/fluidos/view/1` and `/fluidos/workload/1`.
//!
//! Discovery carries their bytes and knows nothing of what they mean (that lives in
//! `fluidos-core`): one request per substream, the requester writes its bytes and
//! closes its write side, the responder writes its answer and closes. Requests and
//! responses are bounded ([`MAX_APP_MESSAGE_BYTES`]); a request over the bound is
//! read no further and handed to the embedder as [`AppBody::TooLarge`], so that
//! it can answer with its own typed error instead of a reset stream.
//!
//! The sender is authenticated by the connection (Noise); the incoming policy's
//! identity lists apply as they do to REAR, and so does the per-peer in-flight
//! limit.

use std::collections::{HashMap, VecDeque};
use std::io;

use fluidos_contracts::NodeId;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot};

use crate::event_loop::EventLoop;
use crate::handle::{RequestError, Unreachable};
use crate::identity::node_id;

/// The largest request or response of an application protocol (a view frame may
/// carry a whole document snapshot).
pub const MAX_APP_MESSAGE_BYTES: usize = 4 << 20;

/// An application protocol that discovery carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AppProtocol {
    /// `/fluidos/view/1`: frames of the replicated view.
    View,
    /// `/fluidos/workload/1`: start, stop and logs of offloaded replicas.
    Workload,
}

impl AppProtocol {
    /// The protocol id on the wire.
    pub const fn id(self) -> &'static str {
        match self {
            AppProtocol::View => "/fluidos/view/1",
            AppProtocol::Workload => "/fluidos/workload/1",
        }
    }

    pub(crate) const fn stream_protocol(self) -> StreamProtocol {
        StreamProtocol::new(self.id())
    }
}

/// The body of an inbound application request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppBody {
    /// The request's bytes.
    Bytes(Vec<u8>),
    /// The request was larger than [`MAX_APP_MESSAGE_BYTES`]; it was not read.
    TooLarge {
        /// How many bytes were seen before reading stopped.
        at_least: usize,
    },
}

/// An application request from a peer, to be answered through `reply`.
///
/// Dropping `reply` closes the peer's stream without an answer: the peer reads an
/// **empty** answer. Requests refused here (incoming policy, in-flight limit, full
/// queue) end the same way, so an application protocol must never use an empty
/// answer as a valid one (`docs/PROTOCOL.md` §7, §8).
#[derive(Debug)]
pub struct AppRequest {
    /// The authenticated sender.
    pub from: NodeId,
    /// Which protocol it came on.
    pub protocol: AppProtocol,
    /// What it sent.
    pub body: AppBody,
    /// Where the answer goes (at most [`MAX_APP_MESSAGE_BYTES`]).
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// The byte codec of the application protocols.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AppCodec;

async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(MAX_APP_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .await?;
    Ok(buf)
}

fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("message of {len} bytes exceeds {MAX_APP_MESSAGE_BYTES} bytes"),
    )
}

impl request_response::Codec for AppCodec {
    type Protocol = StreamProtocol;
    type Request = AppBody;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<AppBody> {
        let buf = read_bounded(io).await?;
        if buf.len() > MAX_APP_MESSAGE_BYTES {
            return Ok(AppBody::TooLarge {
                at_least: buf.len(),
            });
        }
        Ok(AppBody::Bytes(buf))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let buf = read_bounded(io).await?;
        if buf.len() > MAX_APP_MESSAGE_BYTES {
            return Err(too_large(buf.len()));
        }
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: AppBody,
    ) -> io::Result<()> {
        let AppBody::Bytes(bytes) = req else {
            return Err(io::Error::other("refusing to send an oversized request"));
        };
        io.write_all(&bytes).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Vec<u8>,
    ) -> io::Result<()> {
        if resp.len() > MAX_APP_MESSAGE_BYTES {
            return Err(too_large(resp.len()));
        }
        io.write_all(&resp).await?;
        io.close().await
    }
}

/// Builds the behaviour of one application protocol.
pub(crate) fn behaviour(
    protocol: AppProtocol,
    cfg: request_response::Config,
) -> request_response::Behaviour<AppCodec> {
    request_response::Behaviour::new(
        [(
            protocol.stream_protocol(),
            request_response::ProtocolSupport::Full,
        )],
        cfg,
    )
}

type AppReply = BoxFuture<
    'static,
    (
        AppProtocol,
        PeerId,
        ResponseChannel<Vec<u8>>,
        Result<Vec<u8>, oneshot::error::RecvError>,
    ),
>;

/// Outbound application requests in flight or waiting at most, to all peers.
const MAX_PENDING_APP: usize = 1024;

/// Application requests (all protocols) this node keeps in flight to one peer at
/// most; further ones wait, in order, until an earlier one is answered. A receiver
/// takes up to 4 × its `max_inbound_per_peer` (32 by default) and drops the rest
/// unanswered, so a burst (the stop requests of a 100-replica undeploy) must not
/// reach it all at once (`docs/PROTOCOL.md` §8).
pub const MAX_OUTBOUND_APP_PER_PEER: usize = 16;

/// An outbound request waiting for a slot to its peer.
struct Waiting {
    node: NodeId,
    protocol: AppProtocol,
    body: Vec<u8>,
    reply: oneshot::Sender<AppResult>,
}

/// The event loop's state for the application protocols.
pub(crate) struct AppState {
    inbound: mpsc::Sender<AppRequest>,
    outbound: HashMap<(AppProtocol, OutboundRequestId), (PeerId, oneshot::Sender<AppResult>)>,
    /// Outbound requests in flight per peer, and those waiting for a slot.
    sending: HashMap<PeerId, usize>,
    waiting: HashMap<PeerId, VecDeque<Waiting>>,
    waiting_total: usize,
    pub(crate) replies: FuturesUnordered<AppReply>,
    inflight: HashMap<PeerId, usize>,
}

/// What an outbound application request ends with.
pub type AppResult = Result<Vec<u8>, RequestError>;

impl AppState {
    pub(crate) fn new(inbound: mpsc::Sender<AppRequest>) -> Self {
        Self {
            inbound,
            outbound: HashMap::new(),
            sending: HashMap::new(),
            waiting: HashMap::new(),
            waiting_total: 0,
            replies: FuturesUnordered::new(),
            inflight: HashMap::new(),
        }
    }
}

impl EventLoop {
    fn app_behaviour(
        &mut self,
        protocol: AppProtocol,
    ) -> &mut request_response::Behaviour<AppCodec> {
        let b = self.swarm.behaviour_mut();
        match protocol {
            AppProtocol::View => &mut b.view,
            AppProtocol::Workload => &mut b.workload,
        }
    }

    pub(crate) fn send_app(
        &mut self,
        node: NodeId,
        protocol: AppProtocol,
        body: Vec<u8>,
        reply: oneshot::Sender<AppResult>,
    ) {
        if node == self.node {
            let _ = reply.send(Err(RequestError::Unreachable(Unreachable::SelfRequest)));
            return;
        }
        if self.app.outbound.len() + self.app.waiting_total >= MAX_PENDING_APP {
            let _ = reply.send(Err(RequestError::Busy));
            return;
        }
        let peer = crate::identity::peer_id(&node);
        if self.app.sending.get(&peer).copied().unwrap_or(0) >= MAX_OUTBOUND_APP_PER_PEER {
            self.app
                .waiting
                .entry(peer)
                .or_default()
                .push_back(Waiting {
                    node,
                    protocol,
                    body,
                    reply,
                });
            self.app.waiting_total += 1;
            return;
        }
        self.dispatch_app(peer, node, protocol, body, reply);
    }

    fn dispatch_app(
        &mut self,
        peer: PeerId,
        node: NodeId,
        protocol: AppProtocol,
        body: Vec<u8>,
        reply: oneshot::Sender<AppResult>,
    ) {
        let addrs = self.known_addresses(&node);
        self.swarm
            .behaviour_mut()
            .keep_alive
            .touch(peer, std::time::Instant::now());
        let id = self.app_behaviour(protocol).send_request_with_addresses(
            &peer,
            AppBody::Bytes(body),
            addrs,
        );
        *self.app.sending.entry(peer).or_default() += 1;
        self.app.outbound.insert((protocol, id), (peer, reply));
    }

    /// An outbound request ended: answers its caller, and sends the next one
    /// waiting for that peer (skipping those whose caller gave up).
    fn finish_outbound(&mut self, protocol: AppProtocol, id: OutboundRequestId, result: AppResult) {
        let Some((peer, tx)) = self.app.outbound.remove(&(protocol, id)) else {
            return;
        };
        let _ = tx.send(result);
        if let Some(n) = self.app.sending.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.app.sending.remove(&peer);
            }
        }
        while let Some(queue) = self.app.waiting.get_mut(&peer) {
            let Some(next) = queue.pop_front() else {
                self.app.waiting.remove(&peer);
                break;
            };
            self.app.waiting_total -= 1;
            if queue.is_empty() {
                self.app.waiting.remove(&peer);
            }
            if next.reply.is_closed() {
                continue;
            }
            self.dispatch_app(peer, next.node, next.protocol, next.body, next.reply);
            break;
        }
    }

    pub(crate) fn on_app(
        &mut self,
        protocol: AppProtocol,
        ev: request_response::Event<AppBody, Vec<u8>>,
    ) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                self.swarm
                    .behaviour_mut()
                    .keep_alive
                    .touch(peer, std::time::Instant::now());
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_app_request(protocol, peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => self.finish_outbound(protocol, request_id, Ok(response)),
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => self.finish_outbound(protocol, request_id, Err(map_outbound_failure(error))),
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, protocol = protocol.id(), "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_app_request(
        &mut self,
        protocol: AppProtocol,
        peer: PeerId,
        body: AppBody,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        // Refusals are streams closed unanswered (the peer reads an empty answer): the
        // embedder's typed answers need the embedder, and a peer that is refused here
        // has no business with it.
        let Some(from) = node_id(&peer) else {
            return;
        };
        let policy = self.candidates.policy();
        if policy.deny.contains(&from) || policy.allow.as_ref().is_some_and(|a| !a.contains(&from))
        {
            tracing::debug!(%peer, protocol = protocol.id(), "refused by the incoming policy");
            return;
        }
        let inflight = self.app.inflight.get(&peer).copied().unwrap_or(0);
        if inflight >= self.cfg.max_inbound_per_peer * 4 {
            tracing::debug!(%peer, protocol = protocol.id(), "too many requests in flight");
            return;
        }
        let (tx, rx) = oneshot::channel();
        let request = AppRequest {
            from,
            protocol,
            body,
            reply: tx,
        };
        match self.app.inbound.try_send(request) {
            Ok(()) => {
                *self.app.inflight.entry(peer).or_default() += 1;
                self.app
                    .replies
                    .push(Box::pin(async move { (protocol, peer, channel, rx.await) }));
            }
            Err(e) => {
                tracing::debug!(%peer, protocol = protocol.id(), error = %e, "request dropped");
            }
        }
    }

    pub(crate) fn finish_app(
        &mut self,
        protocol: AppProtocol,
        peer: PeerId,
        channel: ResponseChannel<Vec<u8>>,
        result: Result<Vec<u8>, oneshot::error::RecvError>,
    ) {
        if let Some(n) = self.app.inflight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.app.inflight.remove(&peer);
            }
        }
        let Ok(bytes) = result else {
            return; // dropped unanswered: the peer reads an empty answer
        };
        self.swarm
            .behaviour_mut()
            .keep_alive
            .touch(peer, std::time::Instant::now());
        if self
            .app_behaviour(protocol)
            .send_response(channel, bytes)
            .is_err()
        {
            tracing::debug!(
                protocol = protocol.id(),
                "response not sent: the stream is gone"
            );
        }
    }
}

/// The typed error of a failed outbound request (REAR and application protocols).
pub(crate) fn map_outbound_failure(error: OutboundFailure) -> RequestError {
    match error {
        OutboundFailure::DialFailure => RequestError::Unreachable(Unreachable::DialFailed),
        OutboundFailure::Timeout => RequestError::Timeout,
        OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => RequestError::UnsupportedProtocol,
        OutboundFailure::Io(e) => RequestError::Io(std::sync::Arc::new(e)),
    }
}
