//! The engine task: owns the ledger, the store and the buyer's book; answers
//! inbound REAR requests with group commit; keeps flavors and adverts current.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use fluidos_contracts::rear::{ErrorCode, RearError, Request, Response};
use fluidos_contracts::{
    ContractId, Flavor, FlavorId, NodeId, Nonce, SecretKey, Selector, Signed, Termination,
    TerminationCause, Timestamp, Verified, VerifiedContract,
};
use fluidos_discovery::{AdvertBody, InboundRequest};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::types::{ContractInfo, ContractRole, ContractState, NodeStatus, TerminateError};
use super::writer::Writer;
use crate::buyer::{Outcome, Ratings};
use crate::host::{self, FlavorKind, HostMeasurement, HostProbe};
use crate::ledger::{FlavorTemplate, Ledger, LedgerEvent};
use crate::store::{BuyerContractState, Record};
use crate::workload::EndCause;

mod bind;
mod commit;
mod quota;

pub(super) use bind::bind;
use bind::{advert_flavors, cap};
use commit::{Answers, next_synced};
pub(crate) use quota::{ContractBook, QuotaCommand, ReplicaKey};

/// Inbound requests handled in one batch, and so covered by one fsync.
const MAX_BATCH: usize = 128;
/// Batches applied to the ledger whose records are still being synced, at most.
/// While they are, the engine goes on applying the next requests; their answers
/// wait (in order) until their batch is durable.
const MAX_UNSYNCED_BATCHES: usize = 8;
/// The engine's command queue.
const COMMAND_QUEUE: usize = 64;
/// Adverts are re-signed at most this often when flavors change.
const ADVERT_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Write-behind records wait at most this long for a commit to ride along with.
const DEFERRED_MAX_WAIT: Duration = Duration::from_millis(100);

/// What a [`Node`] handle asks of the engine.
pub(super) enum Command {
    Status(oneshot::Sender<NodeStatus>),
    Flavors(oneshot::Sender<Vec<Flavor>>),
    Contracts(oneshot::Sender<Vec<ContractInfo>>),
    Contract(ContractId, oneshot::Sender<Option<VerifiedContract>>),
    /// Record how a bought contract ended.
    BoughtEnded {
        contract: ContractId,
        provider: NodeId,
        outcome: Outcome,
        reply: oneshot::Sender<Result<(), crate::store::StoreError>>,
    },
    /// Make the buyer's copy of a contract durable.
    PersistBought {
        contract: Box<VerifiedContract>,
        state: BuyerContractState,
        reply: oneshot::Sender<Result<(), crate::store::StoreError>>,
    },
    /// The provider acknowledged the countersignature of a contract stored as
    /// `PendingAck`: it is active. Written behind (no fsync of its own, no reply).
    BoughtAcknowledged {
        contract: ContractId,
    },
    /// End a contract; replies with the request to send to the other party.
    Terminate {
        id: ContractId,
        reason: String,
        cause: fluidos_contracts::TerminationCause,
        reply: oneshot::Sender<Result<Option<(NodeId, Request)>, TerminateError>>,
    },
    /// From the workload task.
    Quota(QuotaCommand),
    Shutdown,
}

/// The buyer's copy of a contract.
struct Bought {
    contract: VerifiedContract,
    state: ContractState,
    /// Why it ended, once it has (None for one that never became active, and for
    /// ends recorded before causes were).
    end: Option<EndCause>,
}

struct Engine {
    key: SecretKey,
    node_id: NodeId,
    ledger: Ledger,
    store: Writer,
    bought: BTreeMap<ContractId, Bought>,
    ratings: Ratings,
    /// The ratings as of the last change, for purchases to read without asking.
    ratings_tx: tokio::sync::watch::Sender<Ratings>,
    discovery: fluidos_discovery::DiscoveryHandle,
    probe: Option<HostProbe>,
    offer: host::OfferConfig,
    reserve: host::HostReserve,
    flavor_ids: BTreeMap<FlavorKind, FlavorId>,
    revision: u64,
    roles: super::Roles,
    advert_dirty: bool,
    advert: AdvertBody,
    max_sellable: Option<fluidos_contracts::Resources>,
    /// Write-behind records: nothing was acknowledged on their strength, so they
    /// need no fsync of their own. They go first into the next commit, or on their
    /// own once `deferred_until` passes.
    deferred: Vec<Record>,
    deferred_until: Option<tokio::time::Instant>,
    /// Admission of hosted replicas and the book of active contracts.
    quotas: quota::Quotas,
}

/// Sleeps until `at`; never completes without a deadline (the branch using it is
/// disabled then anyway).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type Measured =
    Result<(HostProbe, Result<HostMeasurement, host::HostError>), tokio::task::JoinError>;

impl Engine {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<InboundRequest>,
        remeasure_every: Duration,
    ) {
        let mut remeasure = tokio::time::interval(remeasure_every);
        remeasure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        remeasure.tick().await; // the first tick is immediate; we just measured
        let mut measuring: Option<tokio::task::JoinHandle<_>> = None;
        let mut advert_timer = tokio::time::interval(ADVERT_MIN_INTERVAL);
        advert_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unsynced: VecDeque<Answers> = VecDeque::new();
        loop {
            let now = Timestamp::now();
            // The ledger's deadlines, and the end of the next contract this node bought.
            let next_bought_end = self
                .bought
                .values()
                .filter(|b| b.state != ContractState::Ended)
                .map(|b| b.contract.terms().valid_until)
                .min();
            let sleep = [self.ledger.poll_timeout(), next_bought_end]
                .into_iter()
                .flatten()
                .min()
                .map(|t| Duration::from_millis(now.until(t)))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(cmd) => self.command(cmd).await,
                },
                synced = next_synced(&mut unsynced), if !unsynced.is_empty() => {
                    if let Some(answers) = unsynced.pop_front() {
                        answers.send(synced);
                    }
                }
                Some(first) = inbound.recv(), if unsynced.len() < MAX_UNSYNCED_BATCHES => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match inbound.try_recv() {
                            Ok(req) => batch.push(req),
                            Err(_) => break,
                        }
                    }
                    unsynced.push_back(self.inbound(batch).await);
                }
                _ = tokio::time::sleep(sleep) => {
                    let now = Timestamp::now();
                    self.ledger.handle_timeout(now);
                    self.flush_ledger().await;
                    // Expired contracts: the advert, the quotas and the book of active
                    // contracts (the workload and fabric tasks follow it) change now,
                    // not at the next inbound request.
                    self.drain_ledger_events().await;
                    self.end_bought(now).await;
                }
                _ = remeasure.tick(), if measuring.is_none() => {
                    if let Some(mut probe) = self.probe.take() {
                        measuring = Some(tokio::task::spawn_blocking(move || {
                            let m = probe.measure();
                            (probe, m)
                        }));
                    }
                }
                done = async {
                    match measuring.as_mut() {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                }, if measuring.is_some() => {
                    measuring = None;
                    self.measured(done).await;
                }
                _ = advert_timer.tick(), if self.advert_dirty => {
                    self.publish_advert().await;
                }
                _ = sleep_until(self.deferred_until), if self.deferred_until.is_some() => {
                    let _ = self.persist(Vec::new()).await;
                }
            }
            self.publish_contracts();
        }
        // Shutting down: answer what is queued, then make everything durable.
        inbound.close();
        let mut rest = Vec::new();
        while let Ok(req) = inbound.try_recv() {
            rest.push(req);
        }
        if !rest.is_empty() {
            unsynced.push_back(self.inbound(rest).await);
        }
        while !unsynced.is_empty() {
            let synced = next_synced(&mut unsynced).await;
            if let Some(answers) = unsynced.pop_front() {
                answers.send(synced);
            }
        }
        self.flush_ledger().await;
        info!(node_id = %self.node_id, "engine stopped");
    }

    /// Records how a bought contract ended and publishes the new ratings to
    /// purchases starting from now.
    fn record_outcome(&mut self, provider: NodeId, outcome: Outcome) {
        self.ratings.record(provider, outcome);
        self.ratings_tx.send_replace(self.ratings.clone());
    }

    async fn drain_ledger_events(&mut self) {
        while let Some(event) = self.ledger.poll_event() {
            match event {
                LedgerEvent::ContractActivated { contract } => {
                    info!(contract_id = %contract.id(), buyer = %contract.terms().buyer.short(), "contract active (provider)");
                    self.advert_dirty = true;
                    self.quotas.dirty = true;
                }
                LedgerEvent::ContractEnded { contract, .. } => {
                    info!(contract_id = %contract, "contract ended (provider)");
                    self.advert_dirty = true;
                    self.contract_gone(&contract, EndCause::Expired);
                }
                LedgerEvent::ContractTerminated {
                    contract,
                    by,
                    cause,
                    ..
                } => {
                    info!(contract_id = %contract, by = %by.short(), cause = cause.as_str(), "contract terminated (provider)");
                    self.advert_dirty = true;
                    let end = match cause {
                        TerminationCause::ProviderLost => EndCause::ProviderLost,
                        TerminationCause::OverQuota => EndCause::OverQuota,
                        _ if by == self.node_id => EndCause::ByProvider,
                        _ => EndCause::ByOwner,
                    };
                    self.contract_gone(&contract, end);
                }
                other => debug!(?other, "ledger event"),
            }
        }
    }

    /// Contracts this node bought that reached `valid_until` were delivered: record
    /// the outcome (it feeds the provider's rating) and tell discovery.
    async fn end_bought(&mut self, now: Timestamp) {
        let ended: Vec<(ContractId, NodeId)> = self
            .bought
            .iter()
            .filter(|(_, b)| {
                b.state != ContractState::Ended && b.contract.terms().valid_until <= now
            })
            .map(|(id, b)| (*id, b.contract.terms().provider))
            .collect();
        if ended.is_empty() {
            return;
        }
        let records = ended
            .iter()
            .map(|(contract, provider)| Record::BuyerEnded {
                contract: *contract,
                provider: *provider,
                outcome: Outcome::Delivered,
                at: now,
                cause: Some(EndCause::Expired),
            })
            .collect();
        if self.persist(records).await.is_err() {
            return; // retried at the next timer
        }
        self.quotas.dirty = true;
        for (contract, provider) in ended {
            self.bought_ended(&contract, Some(EndCause::Expired));
            self.record_outcome(provider, Outcome::Delivered);
            info!(contract_id = %contract, provider = %provider.short(), "bought contract ended: delivered");
            let rating = super::buy::to_rating(self.ratings.get(&provider));
            let _ = self.discovery.set_rating(provider, rating).await;
        }
    }

    fn is_bought(&self, termination: &Signed<Termination>) -> bool {
        termination
            .verify()
            .is_ok_and(|t| self.bought.contains_key(&t.contract))
    }

    /// The provider of a contract this node bought ended it.
    fn terminated_by_provider(
        &mut self,
        from: NodeId,
        termination: Signed<Termination>,
        now: Timestamp,
    ) -> (Response, Vec<Record>) {
        let err = |code, msg: &str| (Response::Error(RearError::new(code, msg)), Vec::new());
        let Ok(t) = termination.verify() else {
            return err(
                ErrorCode::BadSignature,
                "termination signature does not verify",
            );
        };
        let Some(b) = self.bought.get_mut(&t.contract) else {
            return err(ErrorCode::UnknownContract, "no such contract");
        };
        let provider = b.contract.terms().provider;
        if t.by != provider || from != provider {
            return err(
                ErrorCode::NotAuthorised,
                "only the provider can end this contract",
            );
        }
        if b.state == ContractState::Ended {
            return err(ErrorCode::Replay, "contract already ended");
        }
        let cause = EndCause::of_termination(&t, &provider);
        self.bought_ended(&t.contract, Some(cause));
        self.record_outcome(provider, Outcome::TerminatedEarly);
        warn!(contract_id = %t.contract, provider = %provider.short(), reason = %t.reason, "provider terminated a contract early");
        let discovery = self.discovery.clone();
        let rating = super::buy::to_rating(self.ratings.get(&provider));
        tokio::spawn(async move {
            let _ = discovery.set_rating(provider, rating).await;
        });
        (
            Response::Terminated {
                contract: t.contract,
            },
            vec![Record::BuyerEnded {
                contract: t.contract,
                provider,
                outcome: Outcome::TerminatedEarly,
                at: now,
                cause: Some(cause),
            }],
        )
    }

    async fn measured(&mut self, done: Measured) {
        let (probe, measured) = match done {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, "host measurement task failed; measuring stops");
                return;
            }
        };
        self.probe = Some(probe);
        let measured = match measured {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "host measurement failed; keeping the previous capacity");
                return;
            }
        };
        let now = Timestamp::now();
        let sellable = cap(
            host::sellable(&measured, &self.reserve, self.offer.pods),
            self.max_sellable,
        );
        if sellable == self.ledger.capacity() {
            return;
        }
        self.revision += 1;
        let flavors = host::build_flavors(
            self.node_id,
            &measured,
            &sellable,
            &self.offer,
            now,
            self.revision,
            &mut self.flavor_ids,
            FlavorId::random,
        );
        for (_, f) in &flavors {
            self.ledger.set_template(FlavorTemplate::from_flavor(f));
        }
        self.ledger.set_capacity(sellable, now);
        self.flush_ledger().await;
        debug!(capacity = %sellable, "host re-measured");
        self.advert_dirty = true;
    }

    async fn publish_advert(&mut self) {
        self.advert_dirty = false;
        let now = Timestamp::now();
        self.advert.flavors = advert_flavors(&self.roles, &self.ledger, now);
        if let Err(e) = self.discovery.set_advert(self.advert.clone()).await {
            warn!(error = %e, "could not update the advert");
        }
    }

    async fn command(&mut self, cmd: Command) {
        let now = Timestamp::now();
        if matches!(
            cmd,
            Command::PersistBought { .. }
                | Command::BoughtAcknowledged { .. }
                | Command::BoughtEnded { .. }
                | Command::Terminate { .. }
        ) {
            self.quotas.dirty = true;
        }
        match cmd {
            Command::Quota(q) => self.quota_command(q),
            Command::Status(reply) => {
                let _ = reply.send(NodeStatus {
                    node_id: self.node_id,
                    did_key: self.node_id.to_did_key(),
                    peer_id: fluidos_discovery::peer_id(&self.node_id).to_string(),
                    listen_addrs: Vec::new(),
                    roles: self.roles,
                    capacity: self.ledger.capacity(),
                    committed: self.ledger.committed(),
                    flavors: self.flavors(now),
                    reservations: self.ledger.reservations().count(),
                    contracts_sold: self
                        .ledger
                        .contracts()
                        .filter(|c| c.is_active_at(now))
                        .count(),
                    contracts_bought: self
                        .bought
                        .values()
                        .filter(|b| b.state != ContractState::Ended && b.contract.is_active_at(now))
                        .count(),
                    candidates: 0,
                });
            }
            Command::Flavors(reply) => {
                let _ = reply.send(self.flavors(now));
            }
            Command::Contracts(reply) => {
                let _ = reply.send(self.contract_infos(now));
            }
            Command::Contract(id, reply) => {
                let found = self
                    .ledger
                    .contract(&id)
                    .cloned()
                    .or_else(|| self.bought.get(&id).map(|b| b.contract.clone()));
                let _ = reply.send(found);
            }
            Command::PersistBought {
                contract,
                state,
                reply,
            } => {
                let record = Record::BuyerContract {
                    id: contract.id(),
                    contract: contract.signed().clone(),
                    state,
                };
                let result = self.persist(vec![record]).await;
                if result.is_ok() {
                    let state = match state {
                        BuyerContractState::PendingAck => ContractState::PendingAck,
                        BuyerContractState::Active => ContractState::Active,
                    };
                    self.bought.insert(
                        contract.id(),
                        Bought {
                            contract: *contract,
                            state,
                            end: None,
                        },
                    );
                }
                let _ = reply.send(result);
            }
            Command::BoughtAcknowledged { contract } => {
                if let Some(b) = self.bought.get_mut(&contract)
                    && b.state == ContractState::PendingAck
                {
                    b.state = ContractState::Active;
                    let record = Record::BuyerContract {
                        id: contract,
                        contract: b.contract.signed().clone(),
                        state: BuyerContractState::Active,
                    };
                    self.write_behind(record);
                }
            }
            Command::BoughtEnded {
                contract,
                provider,
                outcome,
                reply,
            } => {
                let result = self
                    .persist(vec![Record::BuyerEnded {
                        contract,
                        provider,
                        outcome,
                        at: now,
                        cause: None,
                    }])
                    .await;
                if result.is_ok() {
                    self.bought_ended(&contract, None);
                    self.record_outcome(provider, outcome);
                }
                let _ = reply.send(result);
            }
            Command::Terminate {
                id,
                reason,
                cause,
                reply,
            } => {
                let _ = reply.send(self.terminate(id, reason, cause, now).await);
                self.drain_ledger_events().await;
            }
            Command::Shutdown => {}
        }
    }

    fn flavors(&self, now: Timestamp) -> Vec<Flavor> {
        self.ledger
            .list(&Selector::default(), now)
            .into_iter()
            .map(|f| f.into_inner())
            .collect()
    }

    fn contract_infos(&self, now: Timestamp) -> Vec<ContractInfo> {
        let mut out: Vec<ContractInfo> = self
            .ledger
            .contracts()
            .map(|c| {
                let (state, end) = if c.is_active_at(now) {
                    (ContractState::Active, None)
                } else {
                    (ContractState::Ended, Some(EndCause::Expired))
                };
                ContractInfo::new(c, ContractRole::Provider, state).ended(end)
            })
            .collect();
        out.extend(self.bought.values().map(|b| {
            let (state, end) = match b.state {
                ContractState::Active if !b.contract.is_active_at(now) => {
                    (ContractState::Ended, Some(EndCause::Expired))
                }
                s => (s, b.end),
            };
            ContractInfo::new(&b.contract, ContractRole::Buyer, state).ended(end)
        }));
        out
    }

    /// A contract this node bought has ended, for `cause`.
    fn bought_ended(&mut self, contract: &ContractId, cause: Option<EndCause>) {
        if let Some(b) = self.bought.get_mut(contract) {
            b.state = ContractState::Ended;
            b.end = cause;
        }
        if let Some(c) = cause {
            self.quotas.ends.insert(*contract, c);
        }
        self.quotas.dirty = true;
    }

    fn sign_termination(
        &self,
        id: ContractId,
        reason: String,
        cause: TerminationCause,
        now: Timestamp,
    ) -> Result<Verified<Termination>, TerminateError> {
        let t = Termination {
            contract: id,
            by: self.node_id,
            reason,
            at: now,
            nonce: Nonce::random(),
            cause,
        };
        Ok(Signed::sign(t, &self.key)?)
    }

    async fn terminate(
        &mut self,
        id: ContractId,
        reason: String,
        cause: TerminationCause,
        now: Timestamp,
    ) -> Result<Option<(NodeId, Request)>, TerminateError> {
        if let Some(c) = self.ledger.contract(&id) {
            let buyer = c.terms().buyer;
            let verified = self.sign_termination(id, reason, cause, now)?;
            self.ledger.terminate(&verified, now)?;
            let records = self.ledger.take_records();
            self.persist(records).await?;
            return Ok(Some((
                buyer,
                Request::Terminate {
                    termination: verified.signed().clone(),
                },
            )));
        }
        let Some(b) = self.bought.get(&id) else {
            // One this node sold that has ended (terminated, or ran out) is not unknown.
            return Err(match self.ledger.contract_standing(&id) {
                crate::ledger::ContractStanding::Terminated { .. }
                | crate::ledger::ContractStanding::Ended { .. } => TerminateError::AlreadyEnded(id),
                _ => TerminateError::UnknownContract(id),
            });
        };
        if b.state == ContractState::Ended {
            return Err(TerminateError::AlreadyEnded(id));
        }
        let provider = b.contract.terms().provider;
        let signed = self
            .sign_termination(id, reason, cause, now)?
            .signed()
            .clone();
        let (end, outcome) = match cause {
            // The provider failed to deliver: that counts against its rating.
            TerminationCause::ProviderLost => (EndCause::ProviderLost, Outcome::Failed),
            TerminationCause::OverQuota => (EndCause::OverQuota, Outcome::Delivered),
            _ => (EndCause::ByOwner, Outcome::Delivered),
        };
        self.persist(vec![Record::BuyerEnded {
            contract: id,
            provider,
            outcome,
            at: now,
            cause: Some(end),
        }])
        .await?;
        self.bought_ended(&id, Some(end));
        // As a restart would count it from the record.
        self.record_outcome(provider, outcome);
        Ok(Some((
            provider,
            Request::Terminate {
                termination: signed,
            },
        )))
    }
}
