//! The workload task: owns the replicated [`View`], the [`Runtime`] and the book
//! of replicas hosted here.
//!
//! - It follows the engine's book of active contracts: a link (shared document)
//!   opens with the first contract with a peer; as provider it writes the
//!   virtual node it sells each buyer; when a contract ends, the replicas under
//!   it stop (host) or are taken back (owner).
//! - It syncs the view over `/fluidos/view/1`, one frame in flight per peer,
//!   in order; a failed send resets that peer's sync state and retries with
//!   backoff.
//! - As **host** ([`host`]) it answers `/fluidos/workload/1`: admits a replica
//!   under its contract (through the engine's quota book), starts it on the
//!   runtime and writes its status into the view as the runtime reports it.
//! - As **owner** ([`owner`]) it adds workloads, places them, sends them to
//!   their providers, and takes them back when refused.
//!
//! Nothing here blocks the loop on the network or the runtime: such work runs
//! in spawned tasks that report back on a bounded channel.

mod host;
mod image;
mod owner;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp};
use fluidos_discovery::{AppProtocol, AppRequest, DiscoveryHandle};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::engine::{Command, ContractBook, QuotaCommand, ReplicaKey};
use super::types::{ActiveContract, ContractRole};
use crate::runtime::{ReplicaEvent, ReplicaId, Runtime};
use crate::view::{NodeEntry, NodeInfo, NodeKind, ReplicaState, ReplicaStatus, View, ViewEvent};
use crate::workload::{EndCause, Ending};

pub(crate) use owner::OwnerCommand;
pub use owner::{DeployPhase, HistoryEntry, Submitted, WorkloadDetail, WorkloadError};

/// The task's command queue.
const QUEUE: usize = 64;
/// Frames queued per peer before its sync is restarted from scratch instead.
const MAX_QUEUED_FRAMES: usize = 64;
/// How long a view frame or workload request may take.
pub(crate) const APP_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry of a link whose last frame failed: first wait, doubled up to the max.
const LINK_RETRY_MIN: Duration = Duration::from_millis(200);
const LINK_RETRY_MAX: Duration = Duration::from_secs(5);
/// An idle link sends a fresh sync message this often, so that a peer that
/// restarted (and may not know this node's address) hears from it.
const HEARTBEAT: Duration = Duration::from_secs(3);

/// The answer to a view frame that was applied. Not empty: a request that the
/// receiver's transport dropped unanswered (busy, refused by policy) reads as an
/// empty answer, and such a frame was lost, not applied (`docs/PROTOCOL.md` §7).
pub(crate) const FRAME_APPLIED: &[u8] = &[0x00];

/// What the answer to a view frame says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameOutcome {
    Applied,
    /// The peer read it and refused it, with its reason.
    Refused(String),
    /// Nobody answered: the peer's transport dropped it.
    Dropped,
}

impl FrameOutcome {
    pub(crate) fn of(answer: &[u8]) -> Self {
        match answer {
            FRAME_APPLIED => Self::Applied,
            [] => Self::Dropped,
            text => Self::Refused(String::from_utf8_lossy(text).into_owned()),
        }
    }
}
/// The shortest silence after which a provider counts as lost: two heartbeats,
/// so that an idle but healthy link is never taken for a lost one.
pub(crate) const MIN_LOST_AFTER: Duration = Duration::from_secs(2 * HEARTBEAT.as_secs());
/// How often the round trips to peers are read from discovery.
const RTT_EVERY: Duration = Duration::from_secs(5);
/// How often ended workloads age out.
const AGE_OUT_EVERY: Duration = Duration::from_secs(60);
/// The view is saved at most this long after a change.
const SAVE_DELAY: Duration = Duration::from_millis(100);

/// What a [`Node`](super::Node) asks of the workload task.
pub(crate) enum WCommand {
    Owner(owner::OwnerCommand),
    Nodes(oneshot::Sender<Vec<NodeInfo>>),
    Export(oneshot::Sender<Vec<u8>>),
    Runtime(oneshot::Sender<Option<String>>),
    /// The last usage report of every contract with measured usage: the provider's own
    /// meters for contracts it sold, the providers' reports in the view for those it
    /// bought.
    Usage(oneshot::Sender<BTreeMap<ContractId, crate::usage::ContractUsage>>),
    /// Save the view and stop.
    Shutdown(oneshot::Sender<()>),
}

/// Work done in spawned tasks, reported back to the loop.
enum Done {
    FrameSent {
        peer: NodeId,
        ok: bool,
    },
    /// Round trips to the peering candidates, refreshed every [`RTT_EVERY`].
    Rtts(BTreeMap<NodeId, u32>),
    Host(host::HostDone),
    Owner(owner::OwnerDone),
}

/// Sending side of one link.
#[derive(Default)]
struct PeerOut {
    queue: VecDeque<Vec<u8>>,
    in_flight: bool,
    retry_at: Option<Instant>,
    failures: u32,
    /// When a frame last went out (or was answered).
    last_sent: Option<Instant>,
}

/// What the task is started with.
pub(crate) struct Setup {
    pub(crate) me: NodeId,
    pub(crate) discovery: DiscoveryHandle,
    pub(crate) engine: mpsc::Sender<Command>,
    pub(crate) contracts: watch::Receiver<ContractBook>,
    pub(crate) runtime: Option<Arc<dyn Runtime>>,
    pub(crate) view_file: PathBuf,
    /// This node's own entry (capacity for its own workloads).
    pub(crate) physical: NodeEntry,
    /// Silence after which a provider's replicas count as lost.
    pub(crate) lost_after: Duration,
    /// Workloads with replicas to place again go here (the node's rescheduler).
    pub(crate) reschedule: mpsc::Sender<String>,
    /// How often hosted replicas' usage is sampled into the view.
    pub(crate) usage_every: Duration,
}

pub(crate) struct Workloads {
    me: NodeId,
    view: View,
    view_file: PathBuf,
    discovery: DiscoveryHandle,
    engine: mpsc::Sender<Command>,
    contracts: watch::Receiver<ContractBook>,
    book: ContractBook,
    runtime: Option<Arc<dyn Runtime>>,
    physical: NodeEntry,
    out: BTreeMap<NodeId, PeerOut>,
    done_tx: mpsc::Sender<Done>,
    /// Replicas hosted here (peers' under contracts, and this node's own).
    hosted: host::Hosted,
    /// Owner-side records: placement reasons and status history.
    owned: owner::Owned,
    /// Bumped whenever the view changes, for callers that wait on it.
    changed: watch::Sender<u64>,
    save_at: Option<tokio::time::Instant>,
    lost_after: Duration,
    reschedule: mpsc::Sender<String>,
    /// When each linked peer was last heard from (a view frame), or the link
    /// (re)opened.
    heard: BTreeMap<NodeId, Instant>,
    /// Providers counted as lost: placement avoids them until they are heard again.
    lost: BTreeSet<NodeId>,
    /// Measured round trips to peers (libp2p ping), for `lower_latency`.
    rtt_ms: BTreeMap<NodeId, u32>,
    usage_every: Duration,
    /// Image tarballs owners are sending.
    uploads: image::Uploads,
}

/// The handle side: the command queue and the change counter.
#[derive(Clone)]
pub(crate) struct WorkloadsHandle {
    pub(crate) commands: mpsc::Sender<WCommand>,
    pub(crate) changed: watch::Receiver<u64>,
    pub(crate) runtime: Option<Arc<dyn Runtime>>,
}

impl std::fmt::Debug for WorkloadsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadsHandle")
            .field("runtime", &self.runtime.is_some())
            .finish()
    }
}

impl std::fmt::Debug for WCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WCommand")
    }
}

/// Starts the task.
pub(crate) async fn spawn(setup: Setup) -> WorkloadsHandle {
    let view = match std::fs::read(&setup.view_file) {
        Ok(bytes) => match View::load(setup.me, Default::default(), &bytes) {
            Ok(v) => {
                info!(file = %setup.view_file.display(), "view restored");
                v
            }
            Err(e) => {
                warn!(error = %e, file = %setup.view_file.display(), "saved view unreadable; starting empty");
                View::new(setup.me, Default::default())
            }
        },
        Err(_) => View::new(setup.me, Default::default()),
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let (done_tx, done_rx) = mpsc::channel(QUEUE * 4);
    let (changed, changed_rx) = watch::channel(0);
    let app = setup.discovery.take_app_requests();
    let runtime_events = setup.runtime.as_ref().and_then(|r| r.take_events());
    let book = setup.contracts.borrow().clone();
    let images_dir = setup
        .view_file
        .parent()
        .map(|d| d.join("images"))
        .unwrap_or_else(|| PathBuf::from("images"));
    let mut w = Workloads {
        me: setup.me,
        view,
        view_file: setup.view_file,
        discovery: setup.discovery,
        engine: setup.engine,
        contracts: setup.contracts,
        book: Arc::default(),
        runtime: setup.runtime.clone(),
        physical: setup.physical,
        out: BTreeMap::new(),
        done_tx,
        hosted: host::Hosted::default(),
        owned: owner::Owned::default(),
        changed,
        save_at: None,
        lost_after: setup.lost_after.max(MIN_LOST_AFTER),
        reschedule: setup.reschedule,
        heard: BTreeMap::new(),
        lost: BTreeSet::new(),
        rtt_ms: BTreeMap::new(),
        usage_every: setup.usage_every.max(Duration::from_millis(100)),
        uploads: image::Uploads::new(images_dir),
    };
    // Links restored from disk start disconnected: sync with each afresh.
    let restored: Vec<NodeId> = w.view.peers().copied().collect();
    for peer in restored {
        w.open_link(peer);
    }
    w.apply_contracts(book);
    w.restore_owned();
    w.recover().await;
    w.refresh_physical();
    w.flush();
    let span = tracing::info_span!("workloads", node = %w.me.short());
    tokio::spawn(tracing::Instrument::instrument(
        w.run(rx, done_rx, app, runtime_events),
        span,
    ));
    WorkloadsHandle {
        commands: tx,
        changed: changed_rx,
        runtime: setup.runtime,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Workloads {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<WCommand>,
        mut done: mpsc::Receiver<Done>,
        mut app: Option<mpsc::Receiver<AppRequest>>,
        mut runtime_events: Option<mpsc::Receiver<ReplicaEvent>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_age_out = Instant::now();
        let mut last_rtts: Option<Instant> = None;
        let mut usage_tick = tokio::time::interval(self.usage_every);
        usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(WCommand::Shutdown(done)) => {
                        self.save();
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                Some(d) = done.recv() => self.done(d),
                Some(req) = recv_opt(&mut app) => self.app_request(req),
                Some(ev) = recv_opt(&mut runtime_events) => self.runtime_event(ev),
                Ok(()) = self.contracts.changed() => {
                    let book = self.contracts.borrow_and_update().clone();
                    self.apply_contracts(book);
                }
                _ = sleep_until_opt(self.save_at) => {
                    self.save_at = None;
                    self.save();
                }
                _ = usage_tick.tick() => self.sample_usage(),
                _ = tick.tick() => {
                    self.retry_links();
                    self.check_lost(Instant::now());
                    if last_rtts.is_none_or(|t| t.elapsed() >= RTT_EVERY) {
                        last_rtts = Some(Instant::now());
                        self.refresh_rtts();
                    }
                    if last_age_out.elapsed() >= AGE_OUT_EVERY {
                        last_age_out = Instant::now();
                        if let Err(e) = self.view.age_out(Timestamp::now()) {
                            warn!(error = %e, "aging out ended workloads failed");
                        }
                    }
                }
            }
            self.flush();
        }
        self.save();
        debug!("workload task stopped");
    }

    fn command(&mut self, cmd: WCommand) {
        match cmd {
            WCommand::Owner(c) => self.owner_command(c),
            WCommand::Nodes(reply) => {
                let _ = reply.send(self.view.nodes());
            }
            WCommand::Export(reply) => {
                let _ = reply.send(self.view.export());
            }
            WCommand::Runtime(reply) => {
                let _ = reply.send(self.runtime.as_ref().map(|r| r.summary()));
            }
            WCommand::Usage(reply) => {
                let _ = reply.send(self.usage_reports());
            }
            WCommand::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }

    fn done(&mut self, d: Done) {
        match d {
            Done::FrameSent { peer, ok } => {
                let Some(o) = self.out.get_mut(&peer) else {
                    return;
                };
                o.in_flight = false;
                if ok {
                    o.failures = 0;
                    o.last_sent = Some(Instant::now());
                    return;
                }
                // Lost or refused: Automerge's sync state assumed it arrived. Start the
                // peer's sync afresh once it is back.
                o.queue.clear();
                let wait = LINK_RETRY_MIN
                    .saturating_mul(1u32 << o.failures.min(5))
                    .min(LINK_RETRY_MAX);
                o.failures = o.failures.saturating_add(1);
                o.retry_at = Some(Instant::now() + wait);
                self.view.disconnected(&peer);
                debug!(peer = %peer.short(), ?wait, "view link down; retrying");
            }
            Done::Rtts(m) => self.rtt_ms = m,
            Done::Host(h) => self.host_done(h),
            Done::Owner(o) => self.owner_done(o),
        }
    }

    /// Reads the measured round trips to the candidates, in the background.
    fn refresh_rtts(&self) {
        let (discovery, done) = (self.discovery.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let Ok(list) = discovery.candidates().await else {
                return;
            };
            let m = list
                .iter()
                .filter_map(|c| {
                    let ms = c.rtt?.as_millis();
                    Some((c.node, u32::try_from(ms).unwrap_or(u32::MAX)))
                })
                .collect();
            let _ = done.send(Done::Rtts(m)).await;
        });
    }

    fn app_request(&mut self, req: AppRequest) {
        match req.protocol {
            AppProtocol::View => {
                let answer = self.view_frame(req.from, &req.body);
                let _ = req.reply.send(answer);
            }
            AppProtocol::Workload => self.workload_request(req),
            _ => {}
        }
    }

    /// A view frame from `from`: applied, or refused with the reason as text.
    fn view_frame(&mut self, from: NodeId, body: &fluidos_discovery::AppBody) -> Vec<u8> {
        let bytes = match body {
            fluidos_discovery::AppBody::Bytes(b) => b,
            fluidos_discovery::AppBody::TooLarge { at_least } => {
                return format!("view frame of at least {at_least} bytes is too large")
                    .into_bytes();
            }
        };
        if !self.view.peers().any(|p| *p == from) && self.book.iter().any(|c| c.peer == from) {
            self.open_link(from);
        }
        let now = Instant::now();
        self.heard.insert(from, now);
        if self.lost.remove(&from) {
            info!(peer = %from.short(), "a provider counted as lost is back");
        }
        if self.out.get(&from).is_some_and(|o| o.retry_at.is_some()) {
            // The peer is back before our retry: resume now.
            self.reconnect(from);
        }
        match self.view.handle_message(&from, bytes, now) {
            Ok(()) => {
                self.drain_view_events();
                FRAME_APPLIED.to_vec()
            }
            Err(e) => {
                self.drain_view_events();
                debug!(peer = %from.short(), error = %e, "view frame refused");
                e.to_string().into_bytes()
            }
        }
    }

    fn drain_view_events(&mut self) {
        let mut changed = false;
        while let Some(ev) = self.view.poll_event() {
            match ev {
                ViewEvent::Changed { peer } => {
                    changed = true;
                    self.peer_changed(peer);
                }
                ViewEvent::Rejected { peer, violation } => {
                    warn!(peer = %peer.short(), %violation, "view change from peer rejected");
                }
                ViewEvent::Compacted { .. } => changed = true,
                ViewEvent::Oversize { peer, bytes } => {
                    warn!(peer = %peer.short(), bytes, "view frame too large to send");
                }
            }
        }
        if changed {
            self.touch();
        }
    }

    /// The view changed: wake waiters and save soon.
    fn touch(&mut self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        if self.save_at.is_none() {
            self.save_at = Some(tokio::time::Instant::now() + SAVE_DELAY);
        }
    }

    fn save(&mut self) {
        let bytes = self.view.save();
        let tmp = self.view_file.with_extension("tmp");
        let result =
            std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &self.view_file));
        if let Err(e) = result {
            warn!(error = %e, file = %self.view_file.display(), "could not save the view");
        }
    }

    fn open_link(&mut self, peer: NodeId) {
        self.view.open(peer);
        self.view.connected(&peer, Instant::now());
        self.out.entry(peer).or_default();
        self.heard.entry(peer).or_insert_with(Instant::now);
    }

    fn reconnect(&mut self, peer: NodeId) {
        if let Some(o) = self.out.get_mut(&peer) {
            o.retry_at = None;
        }
        self.view.connected(&peer, Instant::now());
    }

    fn retry_links(&mut self) {
        let now = Instant::now();
        let due: Vec<NodeId> = self
            .out
            .iter()
            .filter(|(_, o)| o.retry_at.is_some_and(|t| t <= now))
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.reconnect(peer);
        }
        // Idle links: a fresh sync message (just the heads when nothing changed).
        let idle: Vec<NodeId> = self
            .out
            .iter()
            .filter(|(_, o)| {
                !o.in_flight
                    && o.retry_at.is_none()
                    && o.queue.is_empty()
                    && o.last_sent
                        .is_none_or(|t| now.duration_since(t) >= HEARTBEAT)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in idle {
            if let Some(o) = self.out.get_mut(&peer) {
                o.last_sent = Some(now);
            }
            self.view.disconnected(&peer);
            self.view.connected(&peer, now);
        }
    }

    /// Sends what the view has for every peer, one frame in flight per peer.
    fn flush(&mut self) {
        while let Some(t) = self.view.poll_transmit() {
            let o = self.out.entry(t.peer).or_default();
            if o.queue.len() >= MAX_QUEUED_FRAMES {
                o.queue.clear();
                self.view.disconnected(&t.peer);
                self.view.connected(&t.peer, Instant::now());
                continue;
            }
            o.queue.push_back(t.bytes);
        }
        // Never send a change that is not on disk: a node killed after sending it would
        // restart from an older save and write different changes under the same actor
        // sequence numbers, which its peer then refuses ("duplicate seq") for good.
        let sending = self
            .out
            .values()
            .any(|o| !o.in_flight && o.retry_at.is_none() && !o.queue.is_empty());
        if sending && self.save_at.is_some() {
            self.save_at = None;
            self.save();
        }
        for (peer, o) in self.out.iter_mut() {
            if o.in_flight || o.retry_at.is_some() {
                continue;
            }
            let Some(bytes) = o.queue.pop_front() else {
                continue;
            };
            o.in_flight = true;
            o.last_sent = Some(Instant::now());
            let (peer, discovery, done) = (*peer, self.discovery.clone(), self.done_tx.clone());
            tokio::spawn(async move {
                let r = discovery
                    .app_request(peer, AppProtocol::View, bytes, APP_TIMEOUT)
                    .await;
                let ok = match r.as_deref().map(FrameOutcome::of) {
                    Ok(FrameOutcome::Applied) => true,
                    Ok(FrameOutcome::Refused(answer)) => {
                        debug!(peer = %peer.short(), %answer, "view frame refused by peer");
                        false
                    }
                    Ok(FrameOutcome::Dropped) => {
                        debug!(peer = %peer.short(), "view frame dropped unanswered by the peer (busy or refused)");
                        false
                    }
                    Err(e) => {
                        debug!(peer = %peer.short(), error = %e, "view frame not delivered");
                        false
                    }
                };
                let _ = done.send(Done::FrameSent { peer, ok }).await;
            });
        }
    }

    /// Follows the engine's book of active contracts.
    fn apply_contracts(&mut self, book: ContractBook) {
        let old = std::mem::replace(&mut self.book, book);
        let peers: BTreeSet<NodeId> = self.book.iter().map(|c| c.peer).collect();
        for peer in &peers {
            if !self.view.peers().any(|p| p == peer) {
                self.open_link(*peer);
            }
        }
        // The virtual node this node sells each buyer.
        let open: Vec<NodeId> = self.view.peers().copied().collect();
        for peer in open {
            let entry = self.entry_for(&peer);
            if let Err(e) = self.view.set_entry_for(&peer, entry) {
                warn!(error = %e, "could not write the node entry for a peer");
            }
        }
        let ended: Vec<ActiveContract> = old
            .iter()
            .filter(|c| !self.book.iter().any(|n| n.id == c.id))
            .cloned()
            .collect();
        for c in ended {
            match c.role {
                ContractRole::Provider => {
                    let cause = self.book.end_of(&c.id);
                    let reason = match cause {
                        Some(EndCause::Expired) => format!("contract {} expired", c.id),
                        Some(EndCause::ByOwner) => {
                            format!("contract {} terminated by its buyer", c.id)
                        }
                        Some(EndCause::ByProvider) => format!("contract {} terminated here", c.id),
                        _ => format!("contract {} ended", c.id),
                    };
                    self.evict_contract(&c.id, host::Eviction::new(cause, reason));
                }
                ContractRole::Buyer => self.provider_contract_ended(&c),
            }
        }
        self.touch();
    }

    /// The entry this node shows `peer`: the sum of the contracts it sold it.
    fn entry_for(&self, peer: &NodeId) -> Option<NodeEntry> {
        let sold: Vec<&ActiveContract> = self
            .book
            .iter()
            .filter(|c| c.peer == *peer && c.role == ContractRole::Provider)
            .collect();
        let first = sold.first()?;
        let capacity = sold.iter().fold(Resources::ZERO, |acc, c| {
            acc.checked_add(&c.partition).unwrap_or(acc)
        });
        let used = self.hosted.used_by(peer);
        let per_hour: u64 = sold.iter().map(|c| per_hour(&c.price)).sum();
        let f = &first.flavor;
        Some(NodeEntry {
            kind: NodeKind::Virtual,
            capacity,
            allocatable: capacity.saturating_sub(&used),
            labels: f.properties.labels.clone(),
            location: f.properties.location.clone(),
            architecture: f.characteristics.architecture.clone(),
            price_micros_per_hour: Some(per_hour),
            currency: Some(first.price.currency.clone()),
            carbon_g_per_kwh: f.properties.carbon_g_per_kwh,
            gpu_model: f.characteristics.gpu.as_ref().map(|g| g.model.clone()),
            step: f.policy.partitionable.then_some(f.policy.step),
            contracts: sold.iter().map(|c| c.id.to_string()).collect(),
            // The meters' reports; a contract without a meter (yet: just after a restart)
            // keeps the report written before.
            usage: {
                let before = self
                    .view
                    .entry_for(peer)
                    .map(|e| e.usage)
                    .unwrap_or_default();
                sold.iter()
                    .filter_map(|c| {
                        let hex = c.id.to_string();
                        match self.hosted.meters.get(&c.id) {
                            Some(m) => Some((hex, m.report().clone())),
                            None => before.get(&hex).cloned().map(|u| (hex, u)),
                        }
                    })
                    .collect()
            },
            updated_at: Timestamp::now(),
        })
    }

    /// Writes this node's physical entry, with what its own replicas use.
    fn refresh_physical(&mut self) {
        let mut e = self.physical.clone();
        e.allocatable = e.capacity.saturating_sub(&self.hosted.used_by(&self.me));
        e.updated_at = Timestamp::now();
        if let Err(err) = self.view.set_physical(e) {
            warn!(error = %err, "could not write the physical entry");
        }
    }

    /// Asks the engine to release a hosted replica's share of its contract.
    fn release_quota(&self, key: ReplicaKey) {
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let _ = engine
                .send(Command::Quota(QuotaCommand::Release { key }))
                .await;
        });
    }

    /// Usage reports by contract: this node's meters (as provider), and the reports in
    /// the entries of the providers it buys from.
    fn usage_reports(&self) -> BTreeMap<ContractId, crate::usage::ContractUsage> {
        let mut out: BTreeMap<ContractId, crate::usage::ContractUsage> = self
            .hosted
            .meters
            .iter()
            .map(|(c, m)| (*c, m.report().clone()))
            .collect();
        for n in self.view.nodes() {
            if n.id == self.me {
                continue;
            }
            for (hex, u) in n.entry.usage {
                if let Ok(c) = hex.parse::<ContractId>()
                    && self
                        .active(&c)
                        .is_some_and(|a| a.role == ContractRole::Buyer)
                {
                    out.insert(c, u);
                }
            }
        }
        out
    }

    /// The active contract `id`, if it is one.
    fn active(&self, id: &ContractId) -> Option<&ActiveContract> {
        self.book.iter().find(|c| c.id == *id)
    }
}

/// A quote's amount per hour.
fn per_hour(q: &fluidos_contracts::Quote) -> u64 {
    use fluidos_contracts::PricePeriod;
    match q.period {
        PricePeriod::Hour => q.amount_micros,
        PricePeriod::Day => q.amount_micros / 24,
        PricePeriod::Month => q.amount_micros / (24 * 30),
    }
}

/// How the reason of a replica killed for exceeding its memory limit begins, in its
/// `failed` state in the view.
pub(crate) const OOM_REASON_PREFIX: &str = "out of memory";

/// The view's state for what a runtime reports.
pub(super) fn view_status(
    status: &crate::runtime::ReplicaStatus,
    evicting: Option<&host::Eviction>,
    output_tail: String,
    restarts: u32,
) -> ReplicaStatus {
    use crate::runtime::ReplicaStatus as R;
    let state = match status {
        R::Starting => ReplicaState::Starting,
        R::Running { .. } => ReplicaState::Running,
        R::Exited { exit, .. } if exit.stop_requested => ReplicaState::Evicted {
            reason: evicting.map_or_else(|| "stopped".to_string(), |e| e.reason.clone()),
            cause: evicting.and_then(|e| e.cause),
        },
        // The kernel killed it for going past its memory limit: say so, not just 137.
        R::Exited { exit, .. } if exit.oom_killed => ReplicaState::failed_by(
            crate::workload::EndCause::OverQuota,
            format!(
                "{OOM_REASON_PREFIX}: the replica went past its memory limit and was killed ({})",
                match (exit.code, exit.signal) {
                    (Some(c), _) => format!("exit code {c}"),
                    (None, Some(s)) => format!("signal {s}"),
                    (None, None) => "no exit code".into(),
                }
            ),
        ),
        R::Exited { exit, .. } => ReplicaState::Exited {
            code: exit.code.unwrap_or_else(|| 128 + exit.signal.unwrap_or(0)),
        },
        R::Failed { reason } => ReplicaState::failed(reason.clone()),
        R::Lost { reason } => ReplicaState::failed(format!("lost: {reason}")),
    };
    ReplicaStatus {
        state,
        since: Timestamp::now(),
        restarts,
        output_tail,
    }
}

/// The runtime id of a replica: `local` for this node's own.
/// How a replica that the runtime reports as `status` ended, for its restart
/// policy; `stopping` when this node was stopping it.
pub(crate) fn ending_of(status: &crate::runtime::ReplicaStatus, stopping: bool) -> Ending {
    use crate::runtime::ReplicaStatus as R;
    match status {
        _ if stopping => Ending::Stopped,
        R::Exited { exit, .. } if exit.stop_requested => Ending::Stopped,
        R::Exited { exit, .. } if exit.code == Some(0) => Ending::Succeeded,
        _ => Ending::Failed,
    }
}

pub(crate) fn replica_id(
    workload: &str,
    replica: u32,
    contract: Option<&ContractId>,
) -> Result<ReplicaId, crate::runtime::ReplicaIdError> {
    match contract {
        Some(c) => ReplicaId::new(workload, replica, c.to_string()),
        None => ReplicaId::new(workload, replica, "local"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_view_frame_is_lost_not_applied() {
        assert_eq!(FrameOutcome::of(FRAME_APPLIED), FrameOutcome::Applied);
        // What a receiver's transport leaves when it drops the request (in-flight
        // limit, policy): it must not count as applied, or the sync state would
        // believe the peer has changes it never got.
        assert_eq!(FrameOutcome::of(&[]), FrameOutcome::Dropped);
        assert_eq!(
            FrameOutcome::of(b"no view relationship with did:key:z6Mk"),
            FrameOutcome::Refused("no view relationship with did:key:z6Mk".into())
        );
    }
}
