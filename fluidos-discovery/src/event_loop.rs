//! The one task that owns the swarm. Handles send it commands; it answers through
//! oneshots and keeps every pending reply keyed by `QueryId` / `OutboundRequestId`.
//!
//! Loop order: commands and timers, then swarm events, then finished inbound replies;
//! `tokio::select!` is biased towards finishing local work (replies) before taking new
//! remote work.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use fluidos_contracts::rear::{ErrorCode, RearError, Response};
use fluidos_contracts::{NodeId, SecretKey, Timestamp, VerifyCache};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::transport::ListenerId;
use libp2p::kad::QueryId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::advert::AdvertBody;
use crate::app::{AppRequest, AppState};
use crate::backoff::Jitter;
use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::candidates::CandidateTable;
use crate::catalog::{CatalogName, split_peer};
use crate::codec::Inbound;
use crate::config::CatalogServer;
use crate::handle::{
    AddPeerError, Command, DiscoveryStats, InboundRequest, RequestError, StartError, Unreachable,
};
use crate::identity::node_id;
use crate::policy::Source;
use crate::{CatalogStatus, DiscoveryConfig};

/// Outbound REAR requests in flight at most.
const MAX_PENDING_OUTBOUND: usize = 1024;
/// Direct (manual and mDNS) peers remembered at most.
pub(crate) const MAX_DIRECT_PEERS: usize = 256;
/// How long binding the listeners may take.
const BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for withdrawals to reach the catalog.
pub(crate) const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(2);

type ReplyFuture = BoxFuture<
    'static,
    (
        PeerId,
        ResponseChannel<Response>,
        Result<Response, oneshot::error::RecvError>,
    ),
>;

/// A Kademlia lookup that counts against the lookup limit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lookup {
    /// Listing one shard of a catalog's members.
    Members(CatalogName, u8),
    /// Fetching one member's advert.
    Advert(CatalogName, NodeId),
}

/// What a Kademlia query is for.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    /// A lookup; `slot` while it counts against the limit.
    Lookup { lookup: Lookup, slot: bool },
    /// Publishing our advert or membership (or withdrawing it).
    Publish,
}

/// A peer found through mDNS or given by hand.
#[derive(Debug, Default)]
pub(crate) struct DirectPeer {
    pub(crate) sources: BTreeSet<Source>,
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) asking: bool,
    pub(crate) retry_at: Option<std::time::Instant>,
    /// Dial failures since the last answer and the hot window (drive the retries).
    pub(crate) retry: crate::backoff::Retry,
}

/// A catalog bootstrap address: dialled at start and, while none of its catalogs is
/// reached, again with backoff after every failure.
#[derive(Debug, Default)]
pub(crate) struct BootstrapPeer {
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) catalogs: BTreeSet<CatalogName>,
    pub(crate) retry: crate::backoff::Retry,
    pub(crate) retry_at: Option<std::time::Instant>,
}

/// A membership pull in flight.
#[derive(Debug, Clone)]
pub(crate) struct Pull {
    /// The catalog asked about.
    pub(crate) catalog: CatalogName,
    /// The pull to a catalog address that this node just reached: when it brings
    /// no member, the catalog's shards are searched at once (else at the next
    /// refresh).
    pub(crate) joining: bool,
    /// Earlier pulls from the same peer whose full answers led to this one.
    pub(crate) page: usize,
}

/// What this node knows about one catalog it joined.
#[derive(Debug, Default)]
pub(crate) struct CatalogProgress {
    /// A bootstrap peer that serves Kademlia answered identify.
    pub(crate) reached: bool,
    /// Members seen (other than this node), bounded.
    pub(crate) members: BTreeSet<NodeId>,
}

/// Members remembered per catalog for the status (the candidate table holds the rest).
const MAX_MEMBERS_TRACKED: usize = 4096;
/// Envelopes remembered as verified (32-byte digests; ~150 KiB when full).
const VERIFY_CACHE_ENTRIES: usize = 2048;
/// The first catch-up pull after a catalog is reached (see `start_catch_up`).
const CATCH_UP_FIRST: Duration = Duration::from_millis(250);
/// The last catch-up interval: pulls at 0.25, 0.75, 1.75, 3.75, 7.75 and 15.75 s.
const CATCH_UP_LAST: Duration = Duration::from_secs(8);

pub(crate) struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) key: SecretKey,
    pub(crate) node: NodeId,
    pub(crate) cfg: DiscoveryConfig,
    commands: mpsc::Receiver<Command>,
    inbound_tx: mpsc::Sender<InboundRequest>,
    updates: watch::Sender<u64>,
    pub(crate) candidates: CandidateTable,
    /// The last ping round trip to each peer with a live connection.
    pub(crate) rtts: BTreeMap<PeerId, std::time::Duration>,
    pub(crate) body: AdvertBody,
    pub(crate) seq: u64,
    /// The advert handed out over `/fluidos/advert/1`.
    pub(crate) direct_advert: Option<Vec<u8>>,
    /// Catalogs whose advert was replaced by `danger_publish_raw_advert`, with the bytes
    /// kept in the local store at every re-publication.
    pub(crate) raw_catalogs: BTreeMap<CatalogName, Vec<u8>>,
    pub(crate) addresses_dirty: bool,
    pub(crate) queries: HashMap<QueryId, Query>,
    pub(crate) fetch_queue: VecDeque<Lookup>,
    pub(crate) queued: BTreeSet<Lookup>,
    pub(crate) fetches_in_flight: usize,
    /// When each catalog member's advert was last fetched successfully.
    pub(crate) fetched: HashMap<(CatalogName, NodeId), std::time::Instant>,
    /// The newest withdrawal seen per node (bounded): gossip never brings back an
    /// advert older than it.
    pub(crate) withdrawn: HashMap<NodeId, u64>,
    outbound: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, RequestError>>>,
    pub(crate) advert_requests: HashMap<OutboundRequestId, PeerId>,
    /// Membership pulls in flight (see [`Pull`]).
    pub(crate) gossip_requests: HashMap<OutboundRequestId, Pull>,
    /// Which members are asked next (rotates through each catalog's members).
    pub(crate) gossip_round: usize,
    /// The next catch-up pull and the step that led to it (see `start_catch_up`).
    catch_up: Option<(std::time::Instant, Duration)>,
    /// Membership news to push (see `rumor`).
    pub(crate) rumors: crate::rumor::Rumors,
    /// Pushes in flight, by the catalog and the member pushed to.
    pub(crate) push_requests: HashMap<OutboundRequestId, (CatalogName, NodeId)>,
    /// This node's current advert in each catalog it announces in (for introductions).
    pub(crate) own_adverts: BTreeMap<CatalogName, Vec<u8>>,
    pub(crate) direct_peers: BTreeMap<PeerId, DirectPeer>,
    pub(crate) manual_dials: HashMap<ConnectionId, Multiaddr>,
    inflight_inbound: HashMap<PeerId, usize>,
    replies: FuturesUnordered<ReplyFuture>,
    pub(crate) stats: DiscoveryStats,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pending_listeners: HashMap<ListenerId, Multiaddr>,
    bind_error: Option<StartError>,
    /// Whether Kademlia runs in server mode now.
    pub(crate) kad_server: bool,
    /// Established connections that the remote dialled.
    inbound_conns: HashSet<ConnectionId>,
    pub(crate) bootstrap: BTreeMap<PeerId, BootstrapPeer>,
    pub(crate) catalog_progress: BTreeMap<CatalogName, CatalogProgress>,
    pub(crate) jitter: Jitter,
    /// Adverts whose signature already verified (gossip relays each one many times).
    pub(crate) verify_cache: VerifyCache,
    /// The application protocols (`app`).
    pub(crate) app: AppState,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        key: SecretKey,
        cfg: DiscoveryConfig,
        commands: mpsc::Receiver<Command>,
        inbound_tx: mpsc::Sender<InboundRequest>,
        app_tx: mpsc::Sender<AppRequest>,
        updates: watch::Sender<u64>,
    ) -> Self {
        let max_age = u64::try_from(cfg.candidate_expiry.as_millis()).unwrap_or(u64::MAX);
        let node = key.node_id();
        let seed = cfg.jitter_seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&node.as_bytes()[..8]);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_nanos() as u64)
                .unwrap_or(0);
            u64::from_le_bytes(b) ^ nanos
        });
        Self {
            kad_server: cfg.serves_catalogs_from_start(),
            inbound_conns: HashSet::new(),
            bootstrap: BTreeMap::new(),
            catalog_progress: cfg
                .catalogs
                .iter()
                .map(|c| (c.name.clone(), CatalogProgress::default()))
                .collect(),
            jitter: Jitter::new(seed),
            verify_cache: VerifyCache::new(VERIFY_CACHE_ENTRIES),
            app: AppState::new(app_tx),
            candidates: CandidateTable::new(cfg.incoming.clone(), max_age),
            rtts: BTreeMap::new(),
            body: cfg.advert.clone(),
            node: key.node_id(),
            swarm,
            key,
            cfg,
            commands,
            inbound_tx,
            updates,
            seq: 0,
            direct_advert: None,
            raw_catalogs: BTreeMap::new(),
            addresses_dirty: false,
            queries: HashMap::new(),
            fetch_queue: VecDeque::new(),
            queued: BTreeSet::new(),
            fetches_in_flight: 0,
            fetched: HashMap::new(),
            outbound: HashMap::new(),
            advert_requests: HashMap::new(),
            gossip_requests: HashMap::new(),
            withdrawn: HashMap::new(),
            gossip_round: 0,
            catch_up: None,
            rumors: crate::rumor::Rumors::default(),
            push_requests: HashMap::new(),
            own_adverts: BTreeMap::new(),
            direct_peers: BTreeMap::new(),
            manual_dials: HashMap::new(),
            inflight_inbound: HashMap::new(),
            replies: FuturesUnordered::new(),
            stats: DiscoveryStats::default(),
            listen_addrs: Vec::new(),
            pending_listeners: HashMap::new(),
            bind_error: None,
        }
    }

    /// Binds every listen address and waits until each reports one address.
    pub(crate) async fn bind(&mut self) -> Result<(), StartError> {
        for addr in self.cfg.listen.clone() {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| StartError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            self.pending_listeners.insert(id, addr);
        }
        let deadline = Instant::now() + BIND_TIMEOUT;
        while !self.pending_listeners.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await;
            match event {
                Ok(ev) => self.on_swarm_event(ev),
                Err(_) => {
                    let addrs: Vec<String> = self
                        .pending_listeners
                        .values()
                        .map(|a| a.to_string())
                        .collect();
                    return Err(StartError::Listen {
                        addr: self.cfg.listen[0].clone(),
                        reason: format!("no address reported in time for {}", addrs.join(", ")),
                    });
                }
            }
            if let Some(e) = self.bind_error.take() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Joins catalogs, dials manual peers and relays, publishes and searches.
    pub(crate) fn start(&mut self) {
        for addr in self.cfg.external_addresses.clone() {
            self.swarm.add_external_address(addr);
        }
        for relay in self.cfg.relays.clone() {
            if let Err(e) = self.swarm.listen_on(relay.with(Protocol::P2pCircuit)) {
                tracing::warn!(error = %e, "cannot listen through relay");
            }
        }
        let me = *self.swarm.local_peer_id();
        let (now, schedule) = (std::time::Instant::now(), self.cfg.retry_schedule());
        for catalog in self.cfg.catalogs.clone() {
            for addr in &catalog.bootstrap {
                if let Some((peer, base)) = split_peer(addr) {
                    if peer == me {
                        // This node is the catalog's address itself.
                        if let Some(p) = self.catalog_progress.get_mut(&catalog.name) {
                            p.reached = true;
                        }
                        continue;
                    }
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, base.clone());
                    let b = self.bootstrap.entry(peer).or_insert_with(|| {
                        let mut b = BootstrapPeer::default();
                        b.retry.configured(now, &schedule);
                        b
                    });
                    b.catalogs.insert(catalog.name.clone());
                    if !b.addrs.contains(&base) {
                        b.addrs.push(base);
                    }
                }
            }
        }
        let peers: Vec<PeerId> = self.bootstrap.keys().copied().collect();
        for peer in peers {
            self.dial_bootstrap(peer);
        }
        for addr in self.cfg.manual_peers.clone() {
            if let Err(e) = self.add_peer(addr) {
                tracing::warn!(error = %e, "manual peer not added");
            }
        }
        self.publish();
        if self.cfg.catch_up {
            // A catalog with an address to reach is first pulled from there once
            // reached (`catalog_peer_identified`); the others are searched now.
            let pulled: BTreeSet<CatalogName> = self
                .bootstrap
                .values()
                .flat_map(|b| b.catalogs.iter().cloned())
                .collect();
            let catalogs: Vec<CatalogName> =
                self.cfg.catalogs.iter().map(|c| c.name.clone()).collect();
            for c in catalogs.iter().filter(|c| !pulled.contains(*c)) {
                self.search_catalog(c);
            }
            self.refresh_direct();
            self.gossip();
        } else {
            self.refresh();
        }
    }

    pub(crate) async fn run(mut self) {
        let mut republish = tokio::time::interval_at(
            Instant::now() + self.cfg.republish_interval,
            self.cfg.republish_interval,
        );
        let mut refresh = tokio::time::interval_at(
            Instant::now() + self.cfg.refresh_interval,
            self.cfg.refresh_interval,
        );
        let sweep_every =
            (self.cfg.advert_ttl / 8).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        for t in [&mut republish, &mut refresh, &mut sweep] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        loop {
            let retry_at = self.next_retry();
            let push_at = self.rumors.poll_timeout();
            let catch_up_at = self.catch_up.map(|(at, _)| at);
            tokio::select! {
                biased;
                Some((peer, channel, result)) = self.replies.next(), if !self.replies.is_empty() => {
                    self.finish_inbound(peer, channel, result);
                }
                Some((protocol, peer, channel, result)) = self.app.replies.next(), if !self.app.replies.is_empty() => {
                    self.finish_app(protocol, peer, channel, result);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.withdraw().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(Command::DangerKill(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone: nobody can use or stop the node any more.
                    None => {
                        self.withdraw().await;
                        break;
                    }
                },
                _ = republish.tick() => self.publish(),
                _ = refresh.tick() => self.refresh(),
                _ = tokio::time::sleep_until(Instant::from_std(retry_at.unwrap_or_else(std::time::Instant::now))), if retry_at.is_some() => {
                    self.retry_due();
                }
                _ = tokio::time::sleep_until(Instant::from_std(push_at.unwrap_or_else(std::time::Instant::now))), if push_at.is_some() => {
                    self.push_news();
                }
                _ = tokio::time::sleep_until(Instant::from_std(catch_up_at.unwrap_or_else(std::time::Instant::now))), if catch_up_at.is_some() => {
                    self.catch_up_due();
                }
                _ = sweep.tick() => {
                    self.candidates.sweep(Timestamp::now());
                    let keep = self.cfg.republish_interval;
                    self.fetched.retain(|_, t| t.elapsed() < keep);
                    // The one periodic release of peers no longer in use (see `keep_alive`).
                    self.swarm
                        .behaviour_mut()
                        .keep_alive
                        .sweep(std::time::Instant::now());
                    if self.addresses_dirty {
                        self.publish();
                    }
                }
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
            }
            self.notify();
        }
        tracing::info!(node = %self.node.short(), "discovery stopped");
    }

    /// Dials a catalog bootstrap peer (a no-op when connected).
    fn dial_bootstrap(&mut self, peer: PeerId) {
        let Some(b) = self.bootstrap.get(&peer) else {
            return;
        };
        if self.swarm.is_connected(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(b.addrs.clone()).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "catalog bootstrap dial not started");
        }
    }

    /// The earliest pending retry (bootstrap or direct peer).
    fn next_retry(&self) -> Option<std::time::Instant> {
        self.bootstrap
            .values()
            .filter_map(|b| b.retry_at)
            .chain(self.direct_peers.values().filter_map(|d| d.retry_at))
            .min()
    }

    /// Runs the retries that are due.
    fn retry_due(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<PeerId> = self
            .bootstrap
            .iter_mut()
            .filter(|(_, b)| b.retry_at.is_some_and(|t| t <= now))
            .map(|(p, b)| {
                b.retry_at = None;
                *p
            })
            .collect();
        for peer in due {
            self.dial_bootstrap(peer);
        }
        self.retry_direct();
    }

    /// A peer that dialled this node speaks Kademlia as a server: it is a catalog
    /// member using this node as a catalog address, so (in `auto`) serve from now on.
    fn dialled_by_catalog_member(&mut self, peer: PeerId) {
        if self.kad_server || self.cfg.catalog_server != CatalogServer::Auto {
            return;
        }
        self.kad_server = true;
        self.swarm
            .behaviour_mut()
            .kad
            .set_mode(Some(libp2p::kad::Mode::Server));
        tracing::info!(%peer, "a catalog member dialled this node: serving catalogs from now on");
    }

    /// A peer that serves Kademlia identified itself: the catalogs it bootstraps are
    /// reached. The first time, publish and learn the members at once instead of at
    /// the next re-publication and refresh, since what ran before found nobody.
    fn catalog_peer_identified(&mut self, peer: PeerId) {
        let Some(b) = self.bootstrap.get_mut(&peer) else {
            return;
        };
        b.retry.succeeded();
        b.retry_at = None;
        let mut newly = Vec::new();
        for c in b.catalogs.clone() {
            if let Some(p) = self.catalog_progress.get_mut(&c)
                && !p.reached
            {
                p.reached = true;
                tracing::info!(catalog = %c, %peer, "catalog reached");
                newly.push(c);
            }
        }
        if !newly.is_empty() {
            self.publish();
            if self.cfg.catch_up {
                // Membership comes first from the catalog address itself (one pull,
                // continued while its answers are full); the shard searches follow
                // only if it brings nobody, else at the next refresh.
                for c in &newly {
                    self.pull(peer, c, true, 0);
                }
                self.refresh_direct();
            } else {
                self.refresh();
            }
            self.start_catch_up();
        }
    }

    /// Schedules the catch-up pulls after a catalog is first reached: members
    /// are asked (with the digest of what this node knows, so each answer
    /// brings what it lacks) after [`CATCH_UP_FIRST`], then at doubling
    /// intervals up to [`CATCH_UP_LAST`], instead of only at the next refresh.
    /// Members that joined at the same moment have heard of each other by then.
    fn start_catch_up(&mut self) {
        if self.cfg.catch_up && self.catch_up.is_none() {
            self.catch_up = Some((std::time::Instant::now() + CATCH_UP_FIRST, CATCH_UP_FIRST));
        }
    }

    /// A catch-up pull is due: gossip now and schedule the next one.
    fn catch_up_due(&mut self) {
        self.gossip();
        self.catch_up = self.catch_up.and_then(|(at, step)| {
            let next = step * 2;
            (next <= CATCH_UP_LAST).then(|| (at + next, next))
        });
    }

    /// Records a member seen in `catalog`.
    pub(crate) fn saw_member(&mut self, catalog: &CatalogName, node: NodeId) {
        if node == self.node {
            return;
        }
        let held_back = self.awaits_catalog(catalog);
        let Some(p) = self.catalog_progress.get_mut(catalog) else {
            return;
        };
        let first_member = !std::mem::replace(&mut p.reached, true);
        let first_sight = p.members.len() < MAX_MEMBERS_TRACKED && p.members.insert(node);
        if held_back {
            // Records held back for want of a reached catalog can be stored now.
            self.publish();
        }
        if first_member {
            self.start_catch_up();
        }
        if first_sight {
            // The first sight of a member: introduce this node to it.
            self.introduce(catalog, node);
        }
    }

    fn notify(&self) {
        let g = self.candidates.generation();
        if *self.updates.borrow() != g {
            self.updates.send_replace(g);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.listen_addrs.clone());
            }
            Command::AddPeer(addr, tx) => {
                let _ = tx.send(self.add_peer(addr));
            }
            Command::Candidates(tx) => {
                self.candidates.sweep(Timestamp::now());
                let mut list = self.candidates.list();
                for c in &mut list {
                    c.rtt = self.rtts.get(&c.peer_id).copied();
                }
                let _ = tx.send(list);
            }
            Command::SetAdvert(body, tx) => {
                let old = std::mem::replace(&mut self.body, body);
                let result = self.check_advert();
                match result {
                    Ok(()) => self.publish(),
                    Err(_) => self.body = old,
                }
                let _ = tx.send(result);
            }
            Command::Refresh(tx) => {
                self.refresh();
                let _ = tx.send(());
            }
            Command::Request {
                node,
                request,
                reply,
            } => self.send_request(node, request, reply),
            Command::App {
                node,
                protocol,
                body,
                reply,
            } => self.send_app(node, protocol, body, reply),
            Command::DangerBlock(node, blocked, tx) => {
                let peer = crate::identity::peer_id(&node);
                let block = &mut self.swarm.behaviour_mut().block;
                if blocked {
                    block.block_peer(peer);
                } else {
                    block.unblock_peer(peer);
                }
                let _ = tx.send(());
            }
            Command::SetRating(node, rating) => self.candidates.set_rating(node, rating),
            Command::SetIncoming(policy) => self.candidates.set_policy(policy),
            Command::Stats(tx) => {
                let mut stats = self.stats.clone();
                stats.catalog_server = self.kad_server;
                stats.catalogs = self
                    .catalog_progress
                    .iter()
                    .map(|(name, p)| {
                        let failures = self
                            .bootstrap
                            .values()
                            .filter(|b| b.catalogs.contains(name))
                            .map(|b| b.retry.failures)
                            .max()
                            .unwrap_or(0);
                        let status = CatalogStatus {
                            reached: p.reached,
                            members: p.members.len(),
                            bootstrap_failures: failures,
                        };
                        (name.clone(), status)
                    })
                    .collect();
                stats.lookups_in_flight = self.fetches_in_flight;
                stats.lookups_queued = self.fetch_queue.len();
                stats.queries = self.queries.len();
                stats.connections = self
                    .swarm
                    .network_info()
                    .connection_counters()
                    .num_established() as usize;
                stats.peers_kept_alive = self.swarm.behaviour().keep_alive.in_use();
                stats.signatures_remembered = self.verify_cache.hits();
                let _ = tx.send(stats);
            }
            Command::DangerRawAdvert(catalog, bytes, tx) => {
                self.danger_raw_advert(catalog, bytes);
                let _ = tx.send(());
            }
            Command::Shutdown(_) | Command::DangerKill(_) => {} // handled in `run`
        }
    }

    pub(crate) fn add_peer(&mut self, addr: Multiaddr) -> Result<(), AddPeerError> {
        let (opts, peer) = match split_peer(&addr) {
            Some((peer, base)) => (
                DialOpts::peer_id(peer)
                    .addresses(vec![base.clone()])
                    .build(),
                Some((peer, base)),
            ),
            None => (
                DialOpts::unknown_peer_id().address(addr.clone()).build(),
                None,
            ),
        };
        if let Some((peer, base)) = &peer {
            if *peer == *self.swarm.local_peer_id() {
                return Ok(());
            }
            if !self.direct_peers.contains_key(peer) && self.direct_peers.len() >= MAX_DIRECT_PEERS
            {
                return Err(AddPeerError::TooMany);
            }
            let schedule = self.cfg.retry_schedule();
            let entry = self.direct_peers.entry(*peer).or_insert_with(|| {
                let mut d = DirectPeer::default();
                d.retry.configured(std::time::Instant::now(), &schedule);
                d
            });
            entry.sources.insert(Source::Manual);
            if !entry.addrs.contains(base) {
                entry.addrs.push(base.clone());
            }
            if self.swarm.is_connected(peer) {
                self.ask_advert(*peer);
                return Ok(());
            }
        } else if self.manual_dials.len() >= MAX_DIRECT_PEERS {
            return Err(AddPeerError::TooMany);
        }
        let id = opts.connection_id();
        self.swarm.dial(opts).map_err(|e| AddPeerError::Dial {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        if peer.is_none() {
            self.manual_dials.insert(id, addr);
        }
        Ok(())
    }

    fn send_request(
        &mut self,
        node: NodeId,
        request: fluidos_contracts::rear::Request,
        reply: oneshot::Sender<Result<Response, RequestError>>,
    ) {
        if node == self.node {
            let _ = reply.send(Err(RequestError::Unreachable(Unreachable::SelfRequest)));
            return;
        }
        if self.outbound.len() >= MAX_PENDING_OUTBOUND {
            let _ = reply.send(Err(RequestError::Busy));
            return;
        }
        let peer = crate::identity::peer_id(&node);
        let addrs = self.known_addresses(&node);
        let behaviour = self.swarm.behaviour_mut();
        behaviour.keep_alive.touch(peer, std::time::Instant::now());
        let id = behaviour
            .rear
            .send_request_with_addresses(&peer, Inbound::Ok(request), addrs);
        self.outbound.insert(id, reply);
    }

    /// Every address known for `node`: from its adverts and as a direct peer.
    pub(crate) fn known_addresses(&self, node: &NodeId) -> Vec<Multiaddr> {
        let peer = crate::identity::peer_id(node);
        let mut addrs = self.candidates.addresses(node);
        if let Some(d) = self.direct_peers.get(&peer) {
            addrs.extend(d.addrs.iter().cloned());
        }
        addrs
    }

    pub(crate) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Rear(ev)) => self.on_rear(ev),
            SwarmEvent::Behaviour(BehaviourEvent::View(ev)) => {
                self.on_app(crate::AppProtocol::View, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Workload(ev)) => {
                self.on_app(crate::AppProtocol::Workload, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Advert(ev)) => self.on_advert(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Members(ev)) => self.on_members(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(ev)) => self.on_mdns(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(
                libp2p::identify::Event::Received {
                    peer_id,
                    info,
                    connection_id,
                },
            )) => {
                let kad_proto = libp2p::StreamProtocol::new(crate::catalog::KAD_PROTOCOL);
                if info.protocols.contains(&kad_proto) {
                    for addr in info.listen_addrs.into_iter().take(8) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                    if self.inbound_conns.contains(&connection_id) {
                        self.dialled_by_catalog_member(peer_id);
                    }
                    self.catalog_peer_identified(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                // Bounded: only peers with a live connection are pinged, and the
                // entry goes when the last connection closes.
                self.rtts.insert(peer, rtt);
            }
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::debug!(%address, "listening");
                self.pending_listeners.remove(&listener_id);
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                    self.addresses_dirty = true;
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
                self.addresses_dirty = true;
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = self.pending_listeners.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "listener closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    self.bind_error = Some(StartError::Listen { addr, reason });
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = self.pending_listeners.remove(&listener_id) {
                    self.bind_error = Some(StartError::Listen {
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
            SwarmEvent::ExternalAddrConfirmed { .. } | SwarmEvent::ExternalAddrExpired { .. } => {
                self.addresses_dirty = true;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                self.stats.connections_established += 1;
                if endpoint.is_listener() {
                    self.inbound_conns.insert(connection_id);
                }
                if let Some(addr) = self.manual_dials.remove(&connection_id)
                    && (self.direct_peers.contains_key(&peer_id)
                        || self.direct_peers.len() < MAX_DIRECT_PEERS)
                {
                    let entry = self.direct_peers.entry(peer_id).or_default();
                    entry.sources.insert(Source::Manual);
                    if !entry.addrs.contains(&addr) {
                        entry.addrs.push(addr);
                    }
                }
                if let Some(d) = self.direct_peers.get(&peer_id)
                    && !d.asking
                {
                    if endpoint.is_dialer()
                        && let Some(node) = node_id(&peer_id)
                    {
                        self.candidates
                            .observe_address(&node, endpoint.get_remote_address().clone());
                    }
                    self.ask_advert(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                peer_id,
                num_established,
                ..
            } => {
                self.inbound_conns.remove(&connection_id);
                if num_established == 0 {
                    self.rtts.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                if let Some(addr) = self.manual_dials.remove(&connection_id) {
                    tracing::debug!(%addr, %error, "manual peer unreachable");
                }
                let Some(peer) = peer_id else { return };
                if self.swarm.is_connected(&peer) {
                    return; // another dial to it worked
                }
                let schedule = self.cfg.retry_schedule();
                let now = std::time::Instant::now();
                let rand = self.jitter.next();
                if let Some(d) = self.direct_peers.get_mut(&peer)
                    && d.retry_at.is_none()
                {
                    // Retried with backoff and jitter, so that two peers dialling each
                    // other at once (TCP simultaneous open) do not collide again.
                    let wait = d.retry.failed(now, &schedule, rand);
                    d.retry_at = Some(now + wait);
                    tracing::debug!(%peer, %error, ?wait, "direct peer dial failed");
                }
                let unreached = self.bootstrap.get(&peer).is_some_and(|b| {
                    b.catalogs
                        .iter()
                        .any(|c| self.catalog_progress.get(c).is_some_and(|p| !p.reached))
                });
                if let Some(b) = self.bootstrap.get_mut(&peer)
                    && unreached
                    && b.retry_at.is_none()
                {
                    let wait = b.retry.failed(now, &schedule, rand);
                    b.retry_at = Some(now + wait);
                    tracing::debug!(%peer, %error, ?wait, "catalog bootstrap dial failed; retrying");
                }
            }
            _ => {}
        }
    }

    fn on_rear(&mut self, ev: request_response::Event<Inbound, Response>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => {
                // Every REAR message keeps the peer's connections open a while longer.
                self.swarm
                    .behaviour_mut()
                    .keep_alive
                    .touch(peer, std::time::Instant::now());
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_inbound_request(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if let Some(tx) = self.outbound.remove(&request_id) {
                            let _ = tx.send(Ok(response));
                        }
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(tx) = self.outbound.remove(&request_id) {
                    let _ = tx.send(Err(crate::app::map_outbound_failure(error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound REAR request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        request: Inbound,
        channel: ResponseChannel<Response>,
    ) {
        let error = |code, msg: &str| Response::Error(RearError::new(code, msg));
        let request = match request {
            Inbound::Bad(e) => {
                self.stats.rear_bad += 1;
                tracing::debug!(%peer, code = ?e.code, "answering a bad REAR request");
                self.respond(channel, Response::Error(e));
                return;
            }
            Inbound::Ok(r) => r,
        };
        let Some(from) = node_id(&peer) else {
            self.respond(
                channel,
                error(
                    ErrorCode::NotAuthorised,
                    "only ed25519 peers are fluidos nodes",
                ),
            );
            return;
        };
        // The incoming policy's identity lists bind negotiation too, not only the
        // candidate list: a deny-listed node cannot buy from this one either.
        let policy = self.candidates.policy();
        if policy.deny.contains(&from) || policy.allow.as_ref().is_some_and(|a| !a.contains(&from))
        {
            self.stats.rear_bad += 1;
            self.respond(
                channel,
                error(
                    ErrorCode::NotAuthorised,
                    "this node's incoming policy does not accept you",
                ),
            );
            return;
        }
        let inflight = self.inflight_inbound.get(&peer).copied().unwrap_or(0);
        if inflight >= self.cfg.max_inbound_per_peer {
            self.stats.rear_rate_limited += 1;
            self.respond(
                channel,
                error(
                    ErrorCode::RateLimited,
                    "too many requests in flight; retry later",
                ),
            );
            return;
        }
        let (tx, rx) = oneshot::channel();
        let kind = request.kind();
        match self.inbound_tx.try_send(InboundRequest {
            from,
            request,
            reply: tx,
        }) {
            Ok(()) => {
                self.stats.rear_inbound += 1;
                tracing::trace!(node = %from.short(), kind, "REAR request");
                *self.inflight_inbound.entry(peer).or_default() += 1;
                self.replies
                    .push(Box::pin(async move { (peer, channel, rx.await) }));
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.rear_rate_limited += 1;
                self.respond(
                    channel,
                    error(ErrorCode::RateLimited, "provider busy; retry later"),
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.respond(
                    channel,
                    error(ErrorCode::Unavailable, "provider is not serving requests"),
                );
            }
        }
    }

    fn finish_inbound(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<Response>,
        result: Result<Response, oneshot::error::RecvError>,
    ) {
        if let Some(n) = self.inflight_inbound.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight_inbound.remove(&peer);
            }
        }
        self.swarm
            .behaviour_mut()
            .keep_alive
            .touch(peer, std::time::Instant::now());
        let response = result.unwrap_or_else(|_| {
            Response::Error(RearError::new(
                ErrorCode::Unavailable,
                "the request was dropped unanswered",
            ))
        });
        self.respond(channel, response);
    }

    fn respond(&mut self, channel: ResponseChannel<Response>, response: Response) {
        if self
            .swarm
            .behaviour_mut()
            .rear
            .send_response(channel, response)
            .is_err()
        {
            tracing::debug!("REAR response not sent: the stream is gone");
        }
    }
}
