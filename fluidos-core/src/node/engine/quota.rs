//! The engine's side of workloads: the book of active contracts that the
//! workload task follows, and admission of offloaded replicas against the
//! ledger's contracts ([`QuotaBook`]).

use std::sync::Arc;

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp};
use tokio::sync::oneshot;

use super::{ContractState, Engine};
use crate::node::types::{ActiveContract, ContractRole};
use crate::offload::{AdmitError, QuotaBook};

/// A replica hosted here: its owner, workload id and index.
pub(crate) type ReplicaKey = (NodeId, String, u32);

/// The active contracts, as the workload task sees them.
pub(crate) type ContractBook = Arc<Vec<ActiveContract>>;

/// What the workload task asks of the engine.
pub(crate) enum QuotaCommand {
    /// Admit a replica under a contract this node sold.
    Admit {
        from: NodeId,
        contract: ContractId,
        key: ReplicaKey,
        demand: Resources,
        reply: oneshot::Sender<Result<(), AdmitError>>,
    },
    /// A hosted replica stopped: its share of the contract is free again.
    Release { key: ReplicaKey },
}

/// The engine's state for workloads.
pub(crate) struct Quotas {
    pub(crate) book: QuotaBook<ReplicaKey>,
    pub(crate) contracts_tx: tokio::sync::watch::Sender<ContractBook>,
    pub(crate) dirty: bool,
}

impl Quotas {
    pub(crate) fn new() -> Self {
        Self {
            book: QuotaBook::new(),
            contracts_tx: tokio::sync::watch::Sender::new(Arc::new(Vec::new())),
            dirty: true,
        }
    }
}

impl Engine {
    pub(super) fn quota_command(&mut self, cmd: QuotaCommand) {
        match cmd {
            QuotaCommand::Admit {
                from,
                contract,
                key,
                demand,
                reply,
            } => {
                let result = self
                    .quotas
                    .book
                    .admit(
                        &self.ledger,
                        &from,
                        &contract,
                        key,
                        demand,
                        Timestamp::now(),
                    )
                    .map(|_| ());
                let _ = reply.send(result);
            }
            QuotaCommand::Release { key } => {
                self.quotas.book.release(&key);
            }
        }
    }

    /// A contract this node sold ended: forget what its replicas held.
    pub(super) fn contract_gone(&mut self, contract: &ContractId) {
        self.quotas.book.ended(contract);
        self.quotas.dirty = true;
    }

    /// Publishes the active contracts if they may have changed.
    pub(super) fn publish_contracts(&mut self) {
        if !self.quotas.dirty {
            return;
        }
        self.quotas.dirty = false;
        let now = Timestamp::now();
        let mut book: Vec<ActiveContract> = self
            .ledger
            .contracts()
            .filter(|c| c.is_active_at(now))
            .map(|c| ActiveContract::new(c, ContractRole::Provider))
            .collect();
        book.extend(
            self.bought
                .values()
                .filter(|b| b.state != ContractState::Ended && b.contract.is_active_at(now))
                .map(|b| ActiveContract::new(&b.contract, ContractRole::Buyer)),
        );
        book.sort_by_key(|c| c.id);
        self.quotas.contracts_tx.send_if_modified(|old| {
            if **old == book {
                false
            } else {
                *old = Arc::new(book);
                true
            }
        });
    }
}
