//! The provider's side of offloading: which replicas a peer may run here.
//!
//! A consumer that places a replica on the virtual node of a provider sends it
//! to that provider under one of their contracts. The provider admits it only
//! when
//! 1. the contract is one of its own and active at `now` (not unknown, pending,
//!    ended, terminated, or outside its validity);
//! 2. the sender is the contract's buyer;
//! 3. the replica's demand fits what the contract's partition has left after the
//!    replicas already admitted under it (cpu, memory, storage, gpus and one pod
//!    per replica).
//!
//! [`QuotaBook`] is I/O-free like the [`Ledger`] it reads: the driver admits a
//! replica before it starts it, releases it when it stops, and asks
//! [`QuotaBook::ended`] for the replicas to stop when a contract ends. The book
//! is generic over the replica key so that it does not depend on how workloads
//! are named.

pub mod wire;

use std::collections::BTreeMap;

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp};

use crate::ledger::{ContractStanding, Ledger};

/// Why a replica was not admitted. Each refusal names the contract and what
/// the sender can do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// No contract of this provider has this id.
    #[error("no contract {contract} with this provider: buy capacity first")]
    NoContract {
        /// The contract named.
        contract: ContractId,
    },
    /// The contract exists but belongs to another buyer.
    #[error("contract {contract} belongs to another party")]
    NotYourContract {
        /// The contract named.
        contract: ContractId,
    },
    /// The contract is offered but not countersigned yet.
    #[error("contract {contract} is not countersigned yet")]
    NotActiveYet {
        /// The contract named.
        contract: ContractId,
    },
    /// The contract's validity is over (or has not begun at `now`).
    #[error("contract {contract} is not valid now (valid until {valid_until:?}): buy again")]
    Expired {
        /// The contract named.
        contract: ContractId,
        /// Its end.
        valid_until: Option<Timestamp>,
    },
    /// The contract was terminated by a party.
    #[error("contract {contract} was terminated")]
    Terminated {
        /// The contract named.
        contract: ContractId,
    },
    /// The replica does not fit in what the contract has left.
    #[error(
        "replica needs {requested} {resource} but contract {contract} has {remaining} left: buy more capacity"
    )]
    OverQuota {
        /// The contract named.
        contract: ContractId,
        /// The resource that does not fit (`cpu`, `memory`, `storage`, `pods`, `gpus`).
        resource: &'static str,
        /// What the replica asks for.
        requested: u64,
        /// What is left under the contract.
        remaining: u64,
    },
    /// The replica key is already admitted under another contract.
    #[error("the replica is already running under contract {existing}")]
    AlreadyAdmitted {
        /// The contract it runs under.
        existing: ContractId,
    },
}

/// One admitted replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The contract it counts against.
    pub contract: ContractId,
    /// The sender, the contract's buyer.
    pub owner: NodeId,
    /// What it counts for (its demand plus one pod).
    pub charged: Resources,
}

/// The replicas admitted per contract and what they use of it.
#[derive(Clone, Debug)]
pub struct QuotaBook<K> {
    replicas: BTreeMap<K, Admitted>,
    used: BTreeMap<ContractId, Resources>,
}

impl<K> Default for QuotaBook<K> {
    fn default() -> Self {
        Self {
            replicas: BTreeMap::new(),
            used: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> QuotaBook<K> {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits replica `key` from `from` under `contract`, charging `demand`
    /// (plus one pod). Admitting the same key again under the same contract is
    /// idempotent and charges nothing more.
    pub fn admit(
        &mut self,
        ledger: &Ledger,
        from: &NodeId,
        contract: &ContractId,
        key: K,
        demand: Resources,
        now: Timestamp,
    ) -> Result<&Admitted, AdmitError> {
        let c = *contract;
        let verified = match ledger.contract_standing(contract) {
            ContractStanding::Active(v) => v,
            ContractStanding::Unknown => return Err(AdmitError::NoContract { contract: c }),
            ContractStanding::Pending => {
                // Only its buyer learns that it exists.
                return Err(AdmitError::NotActiveYet { contract: c });
            }
            ContractStanding::Ended { buyer } | ContractStanding::NeverActive { buyer } => {
                return Err(if buyer == *from {
                    AdmitError::Expired {
                        contract: c,
                        valid_until: None,
                    }
                } else {
                    AdmitError::NotYourContract { contract: c }
                });
            }
            ContractStanding::Terminated { buyer } => {
                return Err(if buyer == *from {
                    AdmitError::Terminated { contract: c }
                } else {
                    AdmitError::NotYourContract { contract: c }
                });
            }
        };
        let terms = verified.terms();
        if terms.buyer != *from {
            return Err(AdmitError::NotYourContract { contract: c });
        }
        if !verified.is_active_at(now) {
            return Err(AdmitError::Expired {
                contract: c,
                valid_until: Some(terms.valid_until),
            });
        }
        match self.replicas.get(&key).map(|a| a.contract) {
            Some(existing) if existing == c => return Ok(&self.replicas[&key]),
            Some(existing) => return Err(AdmitError::AlreadyAdmitted { existing }),
            None => {}
        }
        let charged = Resources {
            pods: demand.pods.max(1),
            ..demand
        };
        let used = self.used.get(&c).copied().unwrap_or(Resources::ZERO);
        let remaining = terms.partition.saturating_sub(&used);
        if let Some((resource, requested, left)) = first_excess(&charged, &remaining) {
            return Err(AdmitError::OverQuota {
                contract: c,
                resource,
                requested,
                remaining: left,
            });
        }
        let total = used.checked_add(&charged).unwrap_or(terms.partition);
        self.used.insert(c, total);
        let admitted = Admitted {
            contract: c,
            owner: *from,
            charged,
        };
        Ok(self.replicas.entry(key).or_insert(admitted))
    }

    /// Releases an admitted replica (it stopped or was removed); returns what
    /// it was charged.
    pub fn release(&mut self, key: &K) -> Option<Admitted> {
        let admitted = self.replicas.remove(key)?;
        if let Some(used) = self.used.get_mut(&admitted.contract) {
            *used = used.saturating_sub(&admitted.charged);
            if *used == Resources::ZERO {
                self.used.remove(&admitted.contract);
            }
        }
        Some(admitted)
    }

    /// The replicas admitted under `contract`, which the driver stops when the
    /// contract ends; they are released from the book.
    pub fn ended(&mut self, contract: &ContractId) -> Vec<(K, Admitted)> {
        let keys: Vec<K> = self
            .replicas
            .iter()
            .filter(|(_, a)| a.contract == *contract)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.release(&k).map(|a| (k, a)))
            .collect()
    }

    /// What the replicas under `contract` use of it.
    pub fn used(&self, contract: &ContractId) -> Resources {
        self.used.get(contract).copied().unwrap_or(Resources::ZERO)
    }

    /// An admitted replica.
    pub fn get(&self, key: &K) -> Option<&Admitted> {
        self.replicas.get(key)
    }

    /// Every admitted replica, ordered by key.
    pub fn replicas(&self) -> impl Iterator<Item = (&K, &Admitted)> {
        self.replicas.iter()
    }
}

/// The first resource of `want` above `left`, as (name, wanted, left).
fn first_excess(want: &Resources, left: &Resources) -> Option<(&'static str, u64, u64)> {
    let (w, l) = (want.as_array(), left.as_array());
    fluidos_contracts::resources::RESOURCE_NAMES
        .iter()
        .zip(w.iter().zip(l.iter()))
        .find(|(_, (w, l))| w > l)
        .map(|(name, (w, l))| (*name, *w, *l))
}
