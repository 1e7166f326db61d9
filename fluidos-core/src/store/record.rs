//! What the store keeps: [`Record`]s of both roles, and the [`LiveSet`] that
//! folds a stream of records into the state they describe.

use std::collections::{BTreeMap, VecDeque};

use fluidos_contracts::{
    ContractId, NodeId, Reservation, ReservationId, Signed, SignedContract, Termination, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::buyer::Outcome;

/// One durable fact about a negotiation.
///
/// The provider's records are keyed by the reservation a deal started from
/// ([`RecordKey::Deal`]); each newer record of a deal replaces the older one, and
/// [`Record::Released`] / [`Record::Ended`] remove the deal. The buyer's records are
/// keyed by contract ([`RecordKey::Purchase`]); [`Record::BuyerEnded`] records its
/// outcome beside it ([`RecordKey::PurchaseEnd`]), kept as history: ratings are
/// rebuilt from it, and the ended contract is still listed after a restart.
///
/// Every provider record carries the whole [`Reservation`], so that a restarted
/// ledger can still answer a repeated `Reserve` with the same nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Record {
    /// Provider: capacity is held for a buyer until `expires_at`.
    Reserved(Reservation),
    /// Provider: the reservation became terms signed by the provider, awaiting the
    /// buyer's countersignature until `expires_at`.
    Offered {
        /// The reservation it came from.
        reservation: Reservation,
        /// The provider-signed contract.
        offer: SignedContract,
        /// When the offer lapses if not countersigned.
        expires_at: Timestamp,
    },
    /// Provider: the buyer countersigned; the contract is active.
    Activated {
        /// The reservation it came from.
        reservation: Reservation,
        /// The contract with both signatures.
        contract: SignedContract,
    },
    /// Provider: a reservation or offer lapsed and its capacity was released.
    ///
    /// Kept as a tombstone (see [`LiveSet`]), so that after a restart a late
    /// request about the deal still gets `ReservationExpired` rather than an
    /// `Unknown…` answer.
    Released {
        /// The deal.
        reservation: ReservationId,
        /// The deal's buyer (absent in journals written before tombstones
        /// were persisted; such a record restores no tombstone).
        #[serde(default)]
        buyer: Option<NodeId>,
        /// The contract of the offer that lapsed, when the deal got that far.
        #[serde(default)]
        contract: Option<ContractId>,
    },
    /// Provider: a contract (or an offer) ended: validity over, or terminated.
    Ended {
        /// The deal.
        reservation: ReservationId,
        /// The contract.
        contract: ContractId,
        /// The signed termination, when it was ended early.
        termination: Option<Signed<Termination>>,
        /// The deal's buyer (absent in journals written before tombstones
        /// were persisted; such a record restores no tombstone).
        #[serde(default)]
        buyer: Option<NodeId>,
    },
    /// Buyer: a contract this node countersigned.
    BuyerContract {
        /// The contract's id (also inside the signed terms).
        id: ContractId,
        /// The contract with both signatures.
        contract: SignedContract,
        /// Whether the provider acknowledged it.
        state: BuyerContractState,
    },
    /// Buyer: a contract ended (or never became active) with this outcome.
    BuyerEnded {
        /// The contract.
        contract: ContractId,
        /// Its provider, for ratings.
        provider: NodeId,
        /// How it went.
        outcome: Outcome,
        /// When it ended (wall clock).
        at: Timestamp,
        /// Why, typed (absent in records written before it existed, and for a
        /// contract that never became active).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<crate::workload::EndCause>,
    },
}

/// Where the buyer's copy of a contract stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuyerContractState {
    /// Countersigned and stored here, `Countersign` not yet acknowledged by the
    /// provider. After a crash the driver re-sends the countersignature (a
    /// `Replay` answer means the provider has it).
    PendingAck,
    /// The provider acknowledged the countersignature.
    Active,
}

/// What a record is about; the unit the store compacts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordKey {
    /// A provider deal, from reservation to contract.
    Deal(ReservationId),
    /// A contract this node bought.
    Purchase(ContractId),
    /// How a contract this node bought ended. Its own key, beside the contract's:
    /// the signed contract stays, so an ended purchase is still listed (and
    /// verifiable) after a restart.
    PurchaseEnd(ContractId),
}

impl Record {
    /// The key this record is filed under.
    pub fn key(&self) -> RecordKey {
        match self {
            Record::Reserved(r) => RecordKey::Deal(r.id),
            Record::Offered { reservation, .. } | Record::Activated { reservation, .. } => {
                RecordKey::Deal(reservation.id)
            }
            Record::Released { reservation, .. } | Record::Ended { reservation, .. } => {
                RecordKey::Deal(*reservation)
            }
            Record::BuyerContract { id, .. } => RecordKey::Purchase(*id),
            Record::BuyerEnded { contract, .. } => RecordKey::PurchaseEnd(*contract),
        }
    }

    /// Whether the record ends its key: it leaves the live set and is kept as
    /// a tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Record::Released { .. } | Record::Ended { .. })
    }
}

/// The state a stream of records describes: the newest record per key, without
/// the keys a [`Record::Released`] or [`Record::Ended`] removed, plus those
/// ending records themselves as a bounded memory of **tombstones** (the newest
/// [`LiveSet::DEFAULT_TOMB_CAP`] by default; the oldest are forgotten first).
///
/// Applying the same stream twice gives the same set (last write wins per key),
/// which is what makes replaying a journal over a snapshot taken from it safe.
#[derive(Clone, Debug)]
pub struct LiveSet {
    records: BTreeMap<RecordKey, Record>,
    tombs: BTreeMap<RecordKey, Record>,
    tomb_order: VecDeque<RecordKey>,
    tomb_cap: usize,
}

impl Default for LiveSet {
    fn default() -> Self {
        Self::with_tomb_cap(Self::DEFAULT_TOMB_CAP)
    }
}

impl LiveSet {
    /// How many tombstones a set keeps unless told otherwise; the same as the
    /// ledger's default [`LedgerConfig::max_tombstones`](crate::ledger::LedgerConfig::max_tombstones).
    pub const DEFAULT_TOMB_CAP: usize = 65_536;

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set that keeps at most `cap` tombstones.
    pub fn with_tomb_cap(cap: usize) -> Self {
        Self {
            records: BTreeMap::new(),
            tombs: BTreeMap::new(),
            tomb_order: VecDeque::new(),
            tomb_cap: cap,
        }
    }

    /// Folds one record in.
    pub fn apply(&mut self, record: &Record) {
        let key = record.key();
        if record.is_tombstone() {
            self.records.remove(&key);
            self.bury(key, record);
        } else {
            if self.tombs.remove(&key).is_some() {
                self.tomb_order.retain(|k| *k != key);
            }
            self.records.insert(key, record.clone());
        }
    }

    fn bury(&mut self, key: RecordKey, record: &Record) {
        if self.tomb_cap == 0 {
            return;
        }
        if self.tombs.insert(key, record.clone()).is_some() {
            return;
        }
        self.tomb_order.push_back(key);
        while self.tomb_order.len() > self.tomb_cap {
            if let Some(old) = self.tomb_order.pop_front() {
                self.tombs.remove(&old);
            }
        }
    }

    /// The live records, ordered by key.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// The tombstones (ending records), oldest first.
    pub fn tombstones(&self) -> impl Iterator<Item = &Record> {
        self.tomb_order.iter().filter_map(|k| self.tombs.get(k))
    }

    /// The live records ordered by key, then the tombstones oldest first: the
    /// stream a snapshot holds, which folds back into this same set.
    pub fn to_vec(&self) -> Vec<Record> {
        self.records
            .values()
            .chain(self.tombstones())
            .cloned()
            .collect()
    }

    /// How many keys are live (tombstones not counted).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is live (tombstones not counted).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many tombstones are kept.
    pub fn tombstone_count(&self) -> usize {
        self.tombs.len()
    }
}
