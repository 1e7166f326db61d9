//! The engine's side of workloads: the book of active contracts that the
//! workload task follows, and admission of offloaded replicas against the
//! ledger's contracts ([`QuotaBook`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp};
use tokio::sync::oneshot;

use super::{ContractState, Engine};
use crate::node::types::{ActiveContract, ContractRole};
use crate::offload::{AdmitError, QuotaBook};
use crate::workload::EndCause;

/// A replica hosted here: its owner, workload id and index.
pub(crate) type ReplicaKey = (NodeId, String, u32);

/// The active contracts, as the workload and fabric tasks see them, with why the
/// recently ended ones ended.
pub(crate) type ContractBook = Arc<Book>;

/// What [`ContractBook`] holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Book {
    /// The contracts active now, by id.
    pub(crate) active: Vec<ActiveContract>,
    /// Why contracts ended, for the most recent [`MAX_ENDS`] ends: a contract
    /// that leaves `active` is found here.
    pub(crate) ends: BTreeMap<ContractId, EndCause>,
}

impl Book {
    /// The active contracts.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, ActiveContract> {
        self.active.iter()
    }

    /// Why contract `id` ended, if it did recently.
    pub(crate) fn end_of(&self, id: &ContractId) -> Option<EndCause> {
        self.ends.get(id).copied()
    }
}

/// How many contract ends the book remembers.
pub(crate) const MAX_ENDS: usize = 1024;

/// Recent contract ends, the oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Ends {
    map: BTreeMap<ContractId, EndCause>,
    order: VecDeque<ContractId>,
}

impl Ends {
    pub(crate) fn insert(&mut self, id: ContractId, cause: EndCause) {
        if self.map.insert(id, cause).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_ENDS {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

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
    /// Why recent contracts ended (both roles).
    pub(crate) ends: Ends,
}

impl Quotas {
    pub(crate) fn new() -> Self {
        Self {
            book: QuotaBook::new(),
            contracts_tx: tokio::sync::watch::Sender::new(Arc::new(Book::default())),
            dirty: true,
            ends: Ends::default(),
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
    pub(super) fn contract_gone(&mut self, contract: &ContractId, cause: EndCause) {
        self.quotas.book.ended(contract);
        self.quotas.ends.insert(*contract, cause);
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
        let book = Book {
            active: book,
            ends: self.quotas.ends.map.clone(),
        };
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
