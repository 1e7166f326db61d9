//! The buyer's driver: runs an [`Acquisition`] over the discovery handle.

use std::fmt;
use std::time::{Duration, Instant};

use fluidos_contracts::rear::{ErrorCode, Request, Response};
use fluidos_contracts::{NodeId, VerifiedContract};
use fluidos_discovery::Role;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Node;
use super::engine::Command;
use super::types::ShutDown;
use crate::buyer::{
    Acquisition, AcquisitionEvent, AcquisitionFailure, AcquisitionOptions, AcquisitionRequest,
    CandidateFailure, Outcome, Phase, RatingCounts,
};
use crate::store::BuyerContractState;

/// What [`Node::buy`] reports while it works.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuyProgress {
    /// The candidates being asked.
    Candidates(usize),
    /// The acquisition moved to a new phase.
    Phase(Phase),
    /// The contract is stored here, countersigned; the provider is told next.
    Persisted(fluidos_contracts::ContractId),
    /// [`Node::buy_waiting`] has no provider to ask yet and waits for one.
    Waiting(NotReady),
}

/// Why a buyer has no provider to ask (what [`Node::buy_waiting`] waits for).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// No catalog is configured and no direct peer has answered.
    NoSource,
    /// Catalogs are configured but none has been reached yet.
    CatalogNotReached {
        /// The catalogs.
        catalogs: Vec<String>,
    },
    /// A catalog was reached but lists no other member yet.
    CatalogEmpty {
        /// The reached catalogs.
        catalogs: Vec<String>,
    },
    /// Peers are known, but none announces the provider role.
    NoProvider {
        /// How many peers are known.
        peers: usize,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::NoSource => {
                f.write_str("no catalog joined and no peer found: join a catalog or add a peer")
            }
            NotReady::CatalogNotReached { catalogs } => {
                write!(
                    f,
                    "catalog {} configured but not reached yet",
                    catalogs.join(", ")
                )
            }
            NotReady::CatalogEmpty { catalogs } => {
                write!(
                    f,
                    "catalog {} reached but it has no other members yet",
                    catalogs.join(", ")
                )
            }
            NotReady::NoProvider { peers } => {
                write!(f, "{peers} peer(s) known, none of them a provider")
            }
        }
    }
}

/// What discovery's state says about an empty provider list.
pub(super) async fn not_ready(node: &Node, peers: usize) -> NotReady {
    if peers > 0 {
        return NotReady::NoProvider { peers };
    }
    let Ok(stats) = node.inner.discovery.stats().await else {
        return NotReady::NoSource;
    };
    if stats.catalogs.is_empty() {
        return NotReady::NoSource;
    }
    let reached: Vec<String> = stats
        .catalogs
        .iter()
        .filter(|(_, c)| c.reached)
        .map(|(n, _)| n.to_string())
        .collect();
    if reached.is_empty() {
        NotReady::CatalogNotReached {
            catalogs: stats.catalogs.keys().map(|n| n.to_string()).collect(),
        }
    } else {
        NotReady::CatalogEmpty { catalogs: reached }
    }
}

impl fmt::Display for BuyProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuyProgress::Candidates(n) => write!(f, "asking {n} candidate(s) for flavors"),
            BuyProgress::Phase(Phase::Listing { pending }) => {
                write!(f, "listing: {pending} answer(s) pending")
            }
            BuyProgress::Phase(Phase::Ranked { offers }) => {
                write!(f, "ranked {offers} suitable offer(s)")
            }
            BuyProgress::Phase(Phase::Buying { provider }) => {
                write!(
                    f,
                    "reserving and purchasing from {} (provider signs the terms)",
                    provider.short()
                )
            }
            BuyProgress::Phase(Phase::Reserving { provider }) => {
                write!(f, "reserving from {}", provider.short())
            }
            BuyProgress::Phase(Phase::Purchasing { provider }) => {
                write!(
                    f,
                    "purchasing from {} (provider signs the terms)",
                    provider.short()
                )
            }
            BuyProgress::Phase(Phase::Persisting { provider }) => {
                write!(
                    f,
                    "offer from {} verified and countersigned; storing it",
                    provider.short()
                )
            }
            BuyProgress::Phase(Phase::Countersigning { provider }) => {
                write!(f, "sending the countersignature to {}", provider.short())
            }
            BuyProgress::Persisted(id) => {
                write!(f, "contract {id} stored (pending acknowledgement)")
            }
            BuyProgress::Waiting(why) => write!(f, "waiting for a provider: {why}"),
        }
    }
}

/// Why [`Node::buy`] made no contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuyError {
    /// Discovery knows no provider to ask; says why.
    #[error("no provider among the peering candidates: {0}")]
    NoCandidates(NotReady),
    /// Every candidate refused or failed; the reasons are per candidate.
    #[error("{0}")]
    Failed(AcquisitionFailure),
    /// The node has shut down.
    #[error("the node has shut down")]
    ShutDown,
    /// Discovery has stopped, so no candidate can be asked.
    #[error("listing the providers: {0}")]
    Discovery(#[from] fluidos_discovery::Stopped),
    /// The countersigned contract could not be stored, so it was not sent to the
    /// provider (nothing was bought).
    #[error("storing the contract: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// [`run`], retried while there is no provider to ask, until `wait` has passed.
pub(super) async fn run_waiting(
    node: &Node,
    request: AcquisitionRequest,
    progress: Option<mpsc::Sender<BuyProgress>>,
    wait: Duration,
) -> Result<VerifiedContract, BuyError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut updates = node.inner.discovery.candidate_updates();
    let mut last: Option<NotReady> = None;
    loop {
        match run(node, request.clone(), progress.clone()).await {
            Err(BuyError::NoCandidates(why)) if tokio::time::Instant::now() < deadline => {
                if last.as_ref() != Some(&why) {
                    if let Some(tx) = &progress {
                        let _ = tx.send(BuyProgress::Waiting(why.clone())).await;
                    }
                    last = Some(why);
                }
                // Woken by a candidate change, or after 100 ms to re-read the state.
                let nap = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
                let _ = tokio::time::timeout_at(nap, updates.changed()).await;
            }
            other => return other,
        }
    }
}

/// Discovery's rating type, from the buyer's counts.
pub(super) fn to_rating(c: RatingCounts) -> fluidos_discovery::Rating {
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    fluidos_discovery::Rating {
        delivered: clamp(c.delivered),
        failed: clamp(c.failed),
        terminated_early: clamp(c.terminated_early),
    }
}

pub(super) async fn run(
    node: &Node,
    request: AcquisitionRequest,
    progress: Option<mpsc::Sender<BuyProgress>>,
) -> Result<VerifiedContract, BuyError> {
    let report = |p: BuyProgress| {
        let progress = progress.clone();
        async move {
            if let Some(tx) = progress {
                let _ = tx.send(p).await;
            }
        }
    };
    let candidates = providers(node).await?;
    if candidates.is_empty() {
        let peers = node.peers().await.map(|p| p.len()).unwrap_or(0);
        return Err(BuyError::NoCandidates(not_ready(node, peers).await));
    }
    report(BuyProgress::Candidates(candidates.len())).await;
    let ratings = node.inner.ratings.borrow().clone();
    let timeout = node.inner.request_timeout;
    let wall = fluidos_contracts::Timestamp::now();
    let known = node.offer_cache().fresh(&candidates, Instant::now(), wall);
    let options = AcquisitionOptions::default()
        .with_ratings(ratings)
        .with_request_timeout(timeout)
        .with_wall_clock(wall)
        .with_known_offers(known);
    let mut acq = Acquisition::with_options(
        node.inner.key.clone(),
        request,
        candidates,
        node.inner.fabric.clone(),
        options,
        Instant::now(),
    );
    let discovery = node.inner.discovery.clone();
    let mut inflight = FuturesUnordered::new();
    loop {
        let mut progressed = true;
        while progressed {
            progressed = false;
            while let Some((peer, req)) = acq.poll_transmit() {
                progressed = true;
                let d = discovery.clone();
                inflight.push(async move { (peer, d.request(peer, req, timeout).await) });
            }
            while let Some(event) = acq.poll_event() {
                progressed = true;
                match event {
                    AcquisitionEvent::Progress(phase) => report(BuyProgress::Phase(phase)).await,
                    AcquisitionEvent::Listed { provider, flavors } => {
                        node.offer_cache().record(provider, flavors, Instant::now());
                    }
                    AcquisitionEvent::Persist(contract) => {
                        let id = contract.id();
                        persist(node, *contract, BuyerContractState::PendingAck).await?;
                        report(BuyProgress::Persisted(id)).await;
                        acq.handle_persisted(Instant::now());
                    }
                    AcquisitionEvent::Discarded { contract, provider } => {
                        warn!(contract_id = %contract, provider = %provider.short(), "countersignature refused; contract not concluded");
                        let _ = node
                            .ask(|reply| Command::BoughtEnded {
                                contract,
                                provider,
                                outcome: Outcome::NotConcluded,
                                reply,
                            })
                            .await;
                    }
                    AcquisitionEvent::Done(contract) => {
                        // The countersigned contract is durable already (`PendingAck`);
                        // that the provider acknowledged it is written behind, with no
                        // fsync on this path: after a crash before that write, the
                        // restart sends the countersignature again and the provider's
                        // `Replay` answer confirms it.
                        acknowledged(node, contract.id()).await?;
                        info!(contract_id = %contract.id(), provider = %contract.terms().provider.short(), "contract active (buyer)");
                        return Ok(*contract);
                    }
                    AcquisitionEvent::Failed(failure) => {
                        let mut cache = node.offer_cache();
                        for (provider, why) in &failure.reasons {
                            if matches!(
                                why,
                                CandidateFailure::Unreachable { .. }
                                    | CandidateFailure::TimedOut { .. }
                            ) {
                                cache.forget(provider);
                            }
                        }
                        drop(cache);
                        return Err(BuyError::Failed(failure));
                    }
                }
            }
        }
        let wait = acq
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            Some((peer, result)) = inflight.next() => match result {
                Ok(response) => acq.handle_response(peer, response, Instant::now()),
                Err(e) => acq.handle_failure(peer, e.to_string(), Instant::now()),
            },
            _ = tokio::time::sleep(wait) => acq.handle_timeout(Instant::now()),
        }
    }
}

/// How long a provider list is reused while discovery reports no change.
const PROVIDERS_MAX_AGE: Duration = Duration::from_secs(1);

/// The providers among discovery's candidates, as of one generation of the
/// candidate table.
#[derive(Debug)]
pub(super) struct Providers {
    generation: u64,
    at: Instant,
    nodes: Vec<NodeId>,
}

/// The candidates that sell, other than this node. Asks discovery only when its
/// candidate table changed (or a second passed): back-to-back purchases share one
/// answer.
async fn providers(node: &Node) -> Result<Vec<NodeId>, fluidos_discovery::Stopped> {
    let generation = *node.inner.discovery.candidate_updates().borrow();
    let now = Instant::now();
    if let Some(p) = node.cached_providers().as_ref()
        && p.generation == generation
        && now.saturating_duration_since(p.at) < PROVIDERS_MAX_AGE
    {
        return Ok(p.nodes.clone());
    }
    let me = node.node_id();
    let nodes: Vec<NodeId> = node
        .peers()
        .await?
        .into_iter()
        .filter(|c| c.node != me && c.advert.roles.contains(&Role::Provider))
        .map(|c| c.node)
        .collect();
    *node.cached_providers() = Some(Providers {
        generation,
        at: now,
        nodes: nodes.clone(),
    });
    Ok(nodes)
}

/// Marks a `PendingAck` contract active (written behind by the engine).
async fn acknowledged(
    node: &Node,
    contract: fluidos_contracts::ContractId,
) -> Result<(), ShutDown> {
    node.inner
        .engine
        .send(Command::BoughtAcknowledged { contract })
        .await
        .map_err(|_| ShutDown)
}

async fn persist(
    node: &Node,
    contract: VerifiedContract,
    state: BuyerContractState,
) -> Result<(), BuyError> {
    node.ask(|reply| Command::PersistBought {
        contract: Box::new(contract),
        state,
        reply,
    })
    .await??;
    Ok(())
}

impl From<ShutDown> for BuyError {
    fn from(_: ShutDown) -> Self {
        Self::ShutDown
    }
}

/// After a restart: a contract countersigned and stored before the crash, whose
/// countersignature the provider never acknowledged, is sent again. `Countersigned`
/// or `Replay` means the provider has it; a definitive refusal ends it as not concluded.
pub(super) async fn resend_countersign(node: &Node, contract: VerifiedContract) {
    let provider = contract.terms().provider;
    let request = Request::Countersign {
        contract: contract.id(),
        signature: contract.buyer_signature(),
    };
    let mut delay = Duration::from_millis(500);
    for _ in 0..8 {
        if !contract.is_active_at(fluidos_contracts::Timestamp::now()) {
            break;
        }
        match node
            .inner
            .discovery
            .request(provider, request.clone(), node.inner.request_timeout)
            .await
        {
            Ok(Response::Countersigned { .. }) => {
                let _ = acknowledged(node, contract.id()).await;
                info!(contract_id = %contract.id(), "provider acknowledged a countersignature after restart");
                return;
            }
            Ok(Response::Error(e)) if e.code == ErrorCode::Replay => {
                let _ = acknowledged(node, contract.id()).await;
                return;
            }
            Ok(Response::Error(e))
                if matches!(
                    e.code,
                    ErrorCode::UnknownContract
                        | ErrorCode::ReservationExpired
                        | ErrorCode::BadSignature
                        | ErrorCode::NotAuthorised
                ) =>
            {
                warn!(contract_id = %contract.id(), error = %e, "provider refused a stored countersignature; contract not concluded");
                let _ = node
                    .ask(|reply| Command::BoughtEnded {
                        contract: contract.id(),
                        provider,
                        outcome: Outcome::NotConcluded,
                        reply,
                    })
                    .await;
                return;
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
