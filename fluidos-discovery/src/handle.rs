//! The public face of a running discovery node: [`Discovery::spawn`] starts the
//! event loop and returns a cloneable [`DiscoveryHandle`] plus the queue of inbound
//! REAR requests.

use std::collections::BTreeMap;
use std::time::Duration;

use fluidos_contracts::rear::{self, MAX_REQUEST_BYTES};
use fluidos_contracts::{NodeId, SecretKey};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::advert::{AdvertBody, PublishError};
use crate::candidates::{Candidate, Rating};
use crate::catalog::CatalogName;
use crate::event_loop::EventLoop;
use crate::policy::IncomingPolicy;
use crate::{DiscoveryConfig, behaviour};

/// A REAR request from a peer, to be answered through `reply`.
///
/// Dropping `reply` answers `unavailable`; the peer's request also times out on its side.
#[derive(Debug)]
pub struct InboundRequest {
    /// The authenticated sender (its Noise handshake proved the key).
    pub from: NodeId,
    /// The request.
    pub request: rear::Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<rear::Response>,
}

/// Counters for operators and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// Adverts verified and taken (or refreshed) as candidates.
    pub adverts_accepted: u64,
    /// Adverts dropped, by reason (see [`crate::AdvertError::reason`]).
    pub adverts_rejected: BTreeMap<String, u64>,
    /// Candidates the incoming policy refused.
    pub refused_by_policy: u64,
    /// DHT records or providers from peers that this node refused to store.
    pub records_refused: u64,
    /// REAR requests handed to the embedder.
    pub rear_inbound: u64,
    /// REAR requests answered `malformed` or `too_large` by the node itself.
    pub rear_bad: u64,
    /// REAR requests answered `rate_limited`.
    pub rear_rate_limited: u64,
    /// Advert lookups that ended without any record.
    pub lookups_not_found: u64,
    /// Catalog members seen in provider lists (cumulative, with repeats).
    pub members_listed: u64,
    /// Adverts pushed to members as membership news (cumulative).
    pub news_sent: u64,
    /// Pushed adverts that were news to this node (cumulative).
    pub news_taken: u64,
    /// Adverts whose signature was not checked again because the same envelope
    /// verified before (cumulative; gossip relays each advert many times).
    pub signatures_remembered: u64,
    /// Catalog shard searches (Kademlia provider lookups) started (cumulative).
    pub member_searches: u64,
    /// Advert lookups (Kademlia record lookups) started (cumulative).
    pub advert_lookups: u64,
    /// Kademlia requests from peers that this node answered (cumulative).
    pub kad_requests_served: u64,
    /// Advert lookups running now.
    pub lookups_in_flight: usize,
    /// Advert lookups waiting for a slot.
    pub lookups_queued: usize,
    /// Kademlia queries this node is waiting on.
    pub queries: usize,
    /// Connections established now (all peers, all protocols).
    pub connections: usize,
    /// Connections established since start (cumulative).
    pub connections_established: u64,
    /// Peers whose connections are held open because they carried REAR traffic
    /// within the idle connection timeout.
    pub peers_kept_alive: usize,
    /// Whether this node serves catalogs now (Kademlia in server mode).
    pub catalog_server: bool,
    /// Each catalog this node joined, and how far it got.
    pub catalogs: BTreeMap<CatalogName, CatalogStatus>,
}

/// How far a node got with one catalog it joined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatalogStatus {
    /// A catalog address (or a member) answered: the catalog is reachable.
    pub reached: bool,
    /// Members seen other than this node.
    pub members: usize,
    /// Failed dials of its catalog addresses since the last success.
    pub bootstrap_failures: u32,
}

/// Why a discovery node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("invalid discovery configuration: {0}")]
    InvalidConfig(#[from] crate::config::ConfigError),
    /// The swarm could not be built.
    #[error(transparent)]
    Build(#[from] behaviour::BuildError),
    /// A listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {reason}; check that the address is local and the port is free"
    )]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// What went wrong.
        reason: String,
    },
}

/// Why an outbound REAR request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request is larger than peers accept.
    #[error("request of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The protocol's limit.
        limit: usize,
    },
    /// No answer within the timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// The peer could not be dialled (no known or working address).
    #[error("peer unreachable: {0}")]
    Unreachable(Unreachable),
    /// The connection closed before the answer.
    #[error("connection closed before the answer")]
    ConnectionClosed,
    /// The peer does not speak the protocol.
    #[error("peer does not support the protocol")]
    UnsupportedProtocol,
    /// The stream failed or the answer was not a REAR response.
    #[error("stream error: {0}")]
    Io(#[source] std::sync::Arc<std::io::Error>),
    /// The request could not be encoded.
    #[error("request not encodable: {0}")]
    Encode(#[source] std::sync::Arc<fluidos_contracts::canonical::EncodeError>),
    /// Too many requests are outstanding on this node.
    #[error("too many outbound requests in flight; try later")]
    Busy,
    /// The discovery node has stopped.
    #[error("discovery node has stopped")]
    Stopped,
}

/// Why a peer could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unreachable {
    /// The request was addressed to this node itself.
    #[error("cannot send a request to this node itself")]
    SelfRequest,
    /// Every known address failed to dial, or none is known.
    #[error("dial failed")]
    DialFailed,
}

/// Why a peer address was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// Dialling failed at once (malformed or unsupported address).
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Too many manual peers.
    #[error("too many manual peers")]
    TooMany,
    /// The discovery node has stopped.
    #[error("discovery node has stopped")]
    Stopped,
}

/// A handle operation failed because the node has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("discovery node has stopped")]
pub struct Stopped;

/// Why publishing an advert failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetAdvertError {
    /// The advert could not be built; the previous one stays.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The discovery node has stopped.
    #[error("discovery node has stopped")]
    Stopped,
}

pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    AddPeer(Multiaddr, oneshot::Sender<Result<(), AddPeerError>>),
    Candidates(oneshot::Sender<Vec<Candidate>>),
    SetAdvert(AdvertBody, oneshot::Sender<Result<(), PublishError>>),
    Refresh(oneshot::Sender<()>),
    Request {
        node: NodeId,
        request: rear::Request,
        reply: oneshot::Sender<Result<rear::Response, RequestError>>,
    },
    App {
        node: NodeId,
        protocol: crate::AppProtocol,
        body: Vec<u8>,
        reply: oneshot::Sender<crate::AppResult>,
    },
    DangerBlock(NodeId, bool, oneshot::Sender<()>),
    SetRating(NodeId, Rating),
    SetIncoming(IncomingPolicy),
    Stats(oneshot::Sender<DiscoveryStats>),
    DangerRawAdvert(CatalogName, Vec<u8>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
    DangerKill(oneshot::Sender<()>),
}

/// Starts discovery nodes.
#[derive(Debug)]
pub struct Discovery;

impl Discovery {
    /// Builds the swarm, binds every listen address, joins the catalogs, publishes the
    /// advert and starts the event loop. Returns once the listen addresses are known.
    pub async fn spawn(
        key: &SecretKey,
        config: DiscoveryConfig,
    ) -> Result<(DiscoveryHandle, mpsc::Receiver<InboundRequest>), StartError> {
        config.validate()?;
        let swarm = behaviour::build_swarm(crate::identity::keypair(key), &config)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue);
        let (app_tx, app_rx) = mpsc::channel(config.inbound_queue);
        let (updates_tx, updates_rx) = watch::channel(0u64);
        let mut event_loop = EventLoop::new(
            swarm,
            key.clone(),
            config,
            cmd_rx,
            inbound_tx,
            app_tx,
            updates_tx,
        );
        event_loop.bind().await?;
        event_loop.start();
        let span = tracing::info_span!("discovery", node = %key.node_id().short());
        tokio::spawn(tracing::Instrument::instrument(event_loop.run(), span));
        let handle = DiscoveryHandle {
            node: key.node_id(),
            commands: cmd_tx,
            updates: updates_rx,
            app_requests: std::sync::Arc::new(std::sync::Mutex::new(Some(app_rx))),
        };
        Ok((handle, inbound_rx))
    }
}

/// A cloneable handle to a running discovery node. Every method goes through the
/// node's bounded command queue.
#[derive(Clone, Debug)]
pub struct DiscoveryHandle {
    node: NodeId,
    commands: mpsc::Sender<Command>,
    updates: watch::Receiver<u64>,
    /// The inbound application requests, until an embedder takes them.
    app_requests: std::sync::Arc<std::sync::Mutex<Option<mpsc::Receiver<crate::AppRequest>>>>,
}

impl DiscoveryHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        crate::identity::peer_id(&self.node)
    }

    /// The addresses the node listens on (without `/p2p/`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Stopped> {
        self.ask(Command::ListenAddrs).await
    }

    /// Dials a peer (with or without `/p2p/<id>`) and asks it for its advert; it
    /// stays a manual peer, asked again at every refresh.
    pub async fn add_peer(&self, addr: Multiaddr) -> Result<(), AddPeerError> {
        self.ask(|tx| Command::AddPeer(addr, tx))
            .await
            .map_err(|_| AddPeerError::Stopped)?
    }

    /// The current peering candidates, ordered by node id.
    pub async fn candidates(&self) -> Result<Vec<Candidate>, Stopped> {
        self.ask(Command::Candidates).await
    }

    /// A receiver whose value changes whenever the candidate list does.
    pub fn candidate_updates(&self) -> watch::Receiver<u64> {
        self.updates.clone()
    }

    /// Replaces what the node announces and re-publishes it everywhere at once.
    pub async fn set_advert(&self, body: AdvertBody) -> Result<(), SetAdvertError> {
        self.ask(|tx| Command::SetAdvert(body, tx))
            .await
            .map_err(|_| SetAdvertError::Stopped)?
            .map_err(SetAdvertError::Publish)
    }

    /// Searches every catalog and asks every direct peer again, now.
    pub async fn refresh(&self) -> Result<(), Stopped> {
        self.ask(Command::Refresh).await
    }

    /// Sends a REAR request to `node` and waits up to `timeout` for the answer. The
    /// node is dialled at the addresses discovery knows if it is not connected.
    pub async fn request(
        &self,
        node: NodeId,
        request: rear::Request,
        timeout: Duration,
    ) -> Result<rear::Response, RequestError> {
        let len = fluidos_contracts::canonical::to_vec(&request)
            .map_err(|e| RequestError::Encode(std::sync::Arc::new(e)))?
            .len();
        if len > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge {
                len,
                limit: MAX_REQUEST_BYTES,
            });
        }
        let fut = self.ask(|reply| Command::Request {
            node,
            request,
            reply,
        });
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(RequestError::Timeout),
            Ok(Err(Stopped)) => Err(RequestError::Stopped),
            Ok(Ok(r)) => r,
        }
    }

    /// The queue of inbound `/fluidos/view/1` and `/fluidos/workload/1` requests.
    /// `Some` once (for the first caller of any clone), `None` afterwards. Until it
    /// is taken, such requests wait in the queue and, once it is full, are dropped.
    pub fn take_app_requests(&self) -> Option<mpsc::Receiver<crate::AppRequest>> {
        self.app_requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Sends `body` to `node` on an application protocol and waits up to `timeout`
    /// for the answer's bytes.
    pub async fn app_request(
        &self,
        node: NodeId,
        protocol: crate::AppProtocol,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, RequestError> {
        if body.len() > crate::MAX_APP_MESSAGE_BYTES {
            return Err(RequestError::TooLarge {
                len: body.len(),
                limit: crate::MAX_APP_MESSAGE_BYTES,
            });
        }
        let fut = self.ask(|reply| Command::App {
            node,
            protocol,
            body,
            reply,
        });
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(RequestError::Timeout),
            Ok(Err(Stopped)) => Err(RequestError::Stopped),
            Ok(Ok(r)) => r,
        }
    }

    /// Cuts `node` off (closes every connection to it and refuses new ones) or lets
    /// it back. Only for testing partitions.
    #[doc(hidden)]
    pub async fn danger_block(&self, node: NodeId, blocked: bool) -> Result<(), Stopped> {
        self.ask(|tx| Command::DangerBlock(node, blocked, tx)).await
    }

    /// Records how contracts with `node` went; the candidate list shows it.
    pub async fn set_rating(&self, node: NodeId, rating: Rating) -> Result<(), Stopped> {
        self.commands
            .send(Command::SetRating(node, rating))
            .await
            .map_err(|_| Stopped)
    }

    /// Replaces the incoming policy; candidates it refuses disappear at once.
    pub async fn set_incoming_policy(&self, policy: IncomingPolicy) -> Result<(), Stopped> {
        self.commands
            .send(Command::SetIncoming(policy))
            .await
            .map_err(|_| Stopped)
    }

    /// Counters.
    pub async fn stats(&self) -> Result<DiscoveryStats, Stopped> {
        self.ask(Command::Stats).await
    }

    /// Publishes `bytes` as this node's advert record in `catalog`, unchecked, and
    /// stops regular publishing there. Only for testing how peers treat bad adverts.
    #[doc(hidden)]
    pub async fn danger_publish_raw_advert(
        &self,
        catalog: CatalogName,
        bytes: Vec<u8>,
    ) -> Result<(), Stopped> {
        self.ask(|tx| Command::DangerRawAdvert(catalog, bytes, tx))
            .await
    }

    /// Stops the node at once, without withdrawing its adverts: what peers see when
    /// a node crashes. Only for testing expiry.
    #[doc(hidden)]
    pub async fn danger_kill(&self) -> Result<(), Stopped> {
        self.ask(Command::DangerKill).await
    }

    /// Withdraws the adverts from the catalogs (best effort, bounded in time), then
    /// stops the node. Other handles fail with [`Stopped`] afterwards.
    pub async fn shutdown(&self) -> Result<(), Stopped> {
        self.ask(Command::Shutdown).await
    }
}
