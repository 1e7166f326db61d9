//! The provider's ledger: flavors, reservations, offers and contracts, as an
//! I/O-free state machine that never oversells.
//!
//! # Life of a deal
//!
//! ```text
//!  reserve ──► Reserved ──purchase──► Offered ──countersign──► Active
//!                 │                     │                       │
//!          expires_at passes     expires_at passes    valid_until passes / terminate
//!                 ▼                     ▼                       ▼
//!              released              released                 ended
//! ```
//!
//! Each deal is keyed by its [`ReservationId`]; the contract id is assigned at
//! purchase. Wall-clock [`Timestamp`]s drive every deadline, because reservations
//! and contracts are persisted and shared with the buyer.
//!
//! # Invariant
//!
//! `sum(partitions of reservations, offers and active contracts) <= capacity`,
//! per resource, whenever anything is sold. A reservation is only made when its
//! partition fits in what is left; if [`Ledger::set_capacity`] shrinks the capacity
//! below what is committed, the remainder is zero (never negative) and nothing is
//! sold until enough is released.
//!
//! # Call order
//!
//! The driver owns one `Ledger` and, for each event:
//! 1. feeds it: [`Ledger::handle`] for a REAR request from a peer (or the
//!    individual operations), [`Ledger::handle_timeout`] when
//!    [`Ledger::poll_timeout`] is due, [`Ledger::set_capacity`] after re-measuring;
//! 2. persists the records it returned ([`Ledger::handle`]) or that
//!    [`Ledger::take_records`] yields, with [`crate::store::Store`] (group commit);
//! 3. only then sends the response — *persist before you acknowledge*;
//! 4. drains [`Ledger::poll_event`] and re-arms its timer from
//!    [`Ledger::poll_timeout`].
//!
//! Every operation first releases what has lapsed by `now`, so answers never
//! depend on whether the timer fired yet.
//!
//! # Idempotency
//!
//! - `reserve` with the same `(buyer, nonce)` returns the same reservation while the
//!   deal lives; the same nonce with another flavor or partition is a `Replay`.
//! - `purchase` of a reservation already offered returns the same offer; after the
//!   countersignature it is a `Replay`.
//! - a second `countersign` or `terminate` is a `Replay`.
//!
//! Requests about a deal that ended recently are answered from a bounded memory
//! of ended deals ([`LedgerConfig::max_tombstones`]): `ReservationExpired` for a
//! lapsed reservation or offer, `Replay` for a concluded one.

mod config;
mod flavors;
mod ops;
mod restore;
mod tombs;
mod wire;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fluidos_contracts::rear::{ErrorCode, RearError};
use fluidos_contracts::{
    ContractId, FabricParams, FlavorId, NodeId, Nonce, PartitionError, Reservation, ReservationId,
    Resources, SecretKey, Timestamp, VerifiedContract, VerifiedOffer,
};

pub use config::{FlavorTemplate, LedgerConfig};

/// Where a contract stands in a [`Ledger`] ([`Ledger::contract_standing`]).
#[derive(Clone, Copy, Debug)]
pub enum ContractStanding<'a> {
    /// Countersigned and not ended (its validity is still to be checked against
    /// the caller's clock: [`VerifiedContract::is_active_at`]).
    Active(&'a VerifiedContract),
    /// Offered, not yet countersigned.
    Pending,
    /// Ran until `valid_until`.
    Ended {
        /// Its buyer.
        buyer: NodeId,
    },
    /// Terminated by a party.
    Terminated {
        /// Its buyer.
        buyer: NodeId,
    },
    /// The offer lapsed before the buyer countersigned it.
    NeverActive {
        /// Its buyer.
        buyer: NodeId,
    },
    /// Not a contract of this provider (or forgotten long ago).
    Unknown,
}

use crate::store::Record;
use flavors::FlavorCache;
use tombs::{IdGen, Tomb, TombKind, Tombstones};

/// Something the driver may want to act on (log, notify the fabric, update metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerEvent {
    /// A reservation lapsed before purchase; its capacity is free again.
    ReservationExpired {
        /// The reservation.
        reservation: ReservationId,
        /// Its buyer.
        buyer: NodeId,
    },
    /// An offer lapsed before the countersignature; its capacity is free again.
    OfferExpired {
        /// The reservation it came from.
        reservation: ReservationId,
        /// The contract that was offered.
        contract: ContractId,
        /// Its buyer.
        buyer: NodeId,
    },
    /// A contract became active: both signatures are in place.
    ContractActivated {
        /// The contract.
        contract: Box<VerifiedContract>,
    },
    /// A contract reached `valid_until`; its capacity is free again.
    ContractEnded {
        /// The contract.
        contract: ContractId,
        /// Its buyer.
        buyer: NodeId,
    },
    /// A party terminated a contract (or an offer not yet countersigned).
    ContractTerminated {
        /// The contract.
        contract: ContractId,
        /// Who ended it.
        by: NodeId,
        /// Why, as the termination says.
        cause: fluidos_contracts::TerminationCause,
        /// Whether it had been countersigned.
        was_active: bool,
    },
    /// The capacity shrank below what is committed; nothing is sold until enough
    /// is released.
    Overcommitted {
        /// What reservations, offers and contracts hold.
        committed: Resources,
        /// The new capacity.
        capacity: Resources,
    },
}

/// One deal, by stage.
#[derive(Clone, Debug)]
enum Deal {
    Reserved(Reservation),
    Offered {
        reservation: Reservation,
        offer: VerifiedOffer,
        expires_at: Timestamp,
    },
    Active {
        reservation: Reservation,
        contract: VerifiedContract,
    },
}

impl Deal {
    fn reservation(&self) -> &Reservation {
        match self {
            Deal::Reserved(r) => r,
            Deal::Offered { reservation, .. } | Deal::Active { reservation, .. } => reservation,
        }
    }

    /// When the deal lapses or ends.
    fn deadline(&self) -> Timestamp {
        match self {
            Deal::Reserved(r) => r.expires_at,
            Deal::Offered { expires_at, .. } => *expires_at,
            Deal::Active { contract, .. } => contract.terms().valid_until,
        }
    }

    /// Reservations and offers count against the buyer's hold limit.
    fn is_hold(&self) -> bool {
        !matches!(self, Deal::Active { .. })
    }

    fn contract_id(&self) -> Option<ContractId> {
        match self {
            Deal::Reserved(_) => None,
            Deal::Offered { offer, .. } => Some(offer.terms().id),
            Deal::Active { contract, .. } => Some(contract.id()),
        }
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> RearError {
    RearError::new(code, message)
}

fn partition_error(e: PartitionError) -> RearError {
    let code = match e {
        PartitionError::Insufficient { .. } => ErrorCode::InsufficientCapacity,
        _ => ErrorCode::InvalidPartition,
    };
    err(code, e.to_string())
}

fn add_saturating(a: &Resources, b: &Resources) -> Resources {
    let (x, y) = (a.as_array(), b.as_array());
    Resources::from_array(std::array::from_fn(|i| x[i].saturating_add(y[i])))
}

/// The provider ledger. See the [module docs](self) for the life of a deal, the
/// invariant and the call order.
#[derive(Debug)]
pub struct Ledger {
    key: SecretKey,
    me: NodeId,
    config: LedgerConfig,
    capacity: Resources,
    committed: Resources,
    templates: BTreeMap<FlavorId, FlavorTemplate>,
    flavors: RefCell<FlavorCache>,
    deals: BTreeMap<ReservationId, Deal>,
    by_nonce: BTreeMap<(NodeId, Nonce), ReservationId>,
    by_contract: BTreeMap<ContractId, ReservationId>,
    holds: BTreeMap<NodeId, usize>,
    total_holds: usize,
    deadlines: BTreeSet<(Timestamp, ReservationId)>,
    tombs: Tombstones,
    ids: IdGen,
    events: VecDeque<LedgerEvent>,
    records: Vec<Record>,
}

impl Ledger {
    /// An empty ledger selling `config.capacity` through `config.templates`.
    pub fn new(key: SecretKey, config: LedgerConfig, now: Timestamp) -> Self {
        let me = key.node_id();
        let templates = config.templates.iter().map(|t| (t.id, t.clone())).collect();
        Self {
            me,
            key,
            capacity: config.capacity,
            committed: Resources::ZERO,
            templates,
            flavors: RefCell::new(FlavorCache::new(now)),
            deals: BTreeMap::new(),
            by_nonce: BTreeMap::new(),
            by_contract: BTreeMap::new(),
            holds: BTreeMap::new(),
            total_holds: 0,
            deadlines: BTreeSet::new(),
            tombs: Tombstones::new(config.max_tombstones),
            ids: IdGen::new(config.id_seed),
            events: VecDeque::new(),
            records: Vec::new(),
            config,
        }
    }

    // ----- configuration -------------------------------------------------------

    /// The provider's identity.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// The configuration (templates as given at construction).
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Sets the sellable capacity (after the host was re-measured). Flavors are
    /// re-issued with the new remainder on the next listing.
    pub fn set_capacity(&mut self, capacity: Resources, now: Timestamp) {
        self.advance(now);
        self.capacity = capacity;
        if !self.committed.fits_within(&capacity) {
            tracing::warn!(
                committed = %self.committed,
                capacity = %capacity,
                "capacity is below what is committed; selling nothing until it is released"
            );
            self.events.push_back(LedgerEvent::Overcommitted {
                committed: self.committed,
                capacity,
            });
        }
    }

    /// Adds or replaces a flavor template.
    pub fn set_template(&mut self, template: FlavorTemplate) {
        self.flavors.borrow_mut().forget(&template.id);
        self.templates.insert(template.id, template);
    }

    /// Replaces all templates (for example after the host was re-measured and
    /// its flavors rebuilt). Deals already made are unaffected.
    pub fn set_templates(&mut self, templates: Vec<FlavorTemplate>) {
        let mut cache = self.flavors.borrow_mut();
        for id in self.templates.keys() {
            cache.forget(id);
        }
        drop(cache);
        self.templates = templates.into_iter().map(|t| (t.id, t)).collect();
    }

    /// Withdraws a flavor: it is no longer listed or reserved. Deals already made
    /// from it are unaffected.
    pub fn remove_template(&mut self, id: &FlavorId) -> Option<FlavorTemplate> {
        self.flavors.borrow_mut().forget(id);
        self.templates.remove(id)
    }

    /// The templates for sale.
    pub fn templates(&self) -> impl Iterator<Item = &FlavorTemplate> {
        self.templates.values()
    }

    /// Sets the provider fabric parameters written into future contracts.
    pub fn set_fabric(&mut self, fabric: FabricParams) {
        self.config.fabric = fabric;
    }

    // ----- state ---------------------------------------------------------------

    /// The sellable capacity.
    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    /// What reservations, offers and active contracts hold together.
    pub fn committed(&self) -> Resources {
        self.committed
    }

    /// What is left to sell: `capacity - committed`, or zero if the capacity
    /// shrank below what is committed.
    pub fn remaining(&self) -> Resources {
        if self.committed.fits_within(&self.capacity) {
            self.capacity.saturating_sub(&self.committed)
        } else {
            Resources::ZERO
        }
    }

    /// A live reservation (not yet purchased).
    pub fn reservation(&self, id: &ReservationId) -> Option<&Reservation> {
        match self.deals.get(id) {
            Some(Deal::Reserved(r)) => Some(r),
            _ => None,
        }
    }

    /// Live reservations, not yet purchased.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.deals.values().filter_map(|d| match d {
            Deal::Reserved(r) => Some(r),
            _ => None,
        })
    }

    /// Offers waiting for the buyer's countersignature.
    pub fn offers(&self) -> impl Iterator<Item = &VerifiedOffer> {
        self.deals.values().filter_map(|d| match d {
            Deal::Offered { offer, .. } => Some(offer),
            _ => None,
        })
    }

    /// Active contracts.
    pub fn contracts(&self) -> impl Iterator<Item = &VerifiedContract> {
        self.deals.values().filter_map(|d| match d {
            Deal::Active { contract, .. } => Some(contract),
            _ => None,
        })
    }

    /// An active contract.
    pub fn contract(&self, id: &ContractId) -> Option<&VerifiedContract> {
        match self.by_contract.get(id).and_then(|r| self.deals.get(r)) {
            Some(Deal::Active { contract, .. }) => Some(contract),
            _ => None,
        }
    }

    /// Where a contract of this provider stands: active, ended (ran out or
    /// lapsed before it was countersigned), terminated, or unknown (never
    /// sold here, or forgotten with the oldest tombstones).
    pub fn contract_standing(&self, id: &ContractId) -> ContractStanding<'_> {
        if let Some(c) = self.contract(id) {
            return ContractStanding::Active(c);
        }
        match self.tombs.contract(id) {
            Some(t) if t.kind == TombKind::Terminated => {
                ContractStanding::Terminated { buyer: t.buyer }
            }
            Some(t) if t.kind == TombKind::Ended => ContractStanding::Ended { buyer: t.buyer },
            Some(t) => ContractStanding::NeverActive { buyer: t.buyer },
            None if self.by_contract.contains_key(id) => ContractStanding::Pending,
            None => ContractStanding::Unknown,
        }
    }

    // ----- outputs -------------------------------------------------------------

    /// The next event, if any. Drain after every call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LedgerEvent> {
        self.events.pop_front()
    }

    /// The records produced since the last call, in order. They must be durable
    /// before any answer that depends on them is sent.
    #[must_use]
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// When the next reservation, offer or contract lapses.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Releases every reservation, offer and contract whose deadline is at or
    /// before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
    }

    // ----- internals -----------------------------------------------------------

    /// The error for a request about a reservation that is not live.
    fn ended_reservation(&self, buyer: &NodeId, id: &ReservationId) -> RearError {
        match self.tombs.reservation(id) {
            None => err(
                ErrorCode::UnknownReservation,
                format!("no reservation {id}"),
            ),
            Some(t) if t.buyer != *buyer => err(
                ErrorCode::NotAuthorised,
                "the reservation belongs to another buyer",
            ),
            Some(t) => match t.kind {
                TombKind::ReservationExpired | TombKind::OfferExpired => err(
                    ErrorCode::ReservationExpired,
                    "the reservation lapsed; its capacity was released — reserve again",
                ),
                TombKind::Ended | TombKind::Terminated => {
                    err(ErrorCode::Replay, "the reservation was already bought")
                }
            },
        }
    }

    fn insert_deal(&mut self, deal: Deal) {
        let r = deal.reservation();
        let id = r.id;
        self.committed = add_saturating(&self.committed, &r.partition);
        if deal.is_hold() {
            *self.holds.entry(r.buyer).or_insert(0) += 1;
            self.total_holds += 1;
        }
        self.by_nonce.insert((r.buyer, r.buyer_nonce), id);
        if let Some(c) = deal.contract_id() {
            self.by_contract.insert(c, id);
        }
        self.deadlines.insert((deal.deadline(), id));
        self.deals.insert(id, deal);
    }

    fn remove_deal(&mut self, id: &ReservationId) -> Option<Deal> {
        let deal = self.deals.remove(id)?;
        let r = deal.reservation();
        self.committed = match self.committed.checked_sub(&r.partition) {
            Some(c) => c,
            None => {
                // Unreachable while insert/remove stay paired; never go negative.
                tracing::error!(committed = %self.committed, partition = %r.partition, "ledger accounting underflow");
                self.committed.saturating_sub(&r.partition)
            }
        };
        if deal.is_hold()
            && let Some(n) = self.holds.get_mut(&r.buyer)
        {
            *n = n.saturating_sub(1);
            self.total_holds = self.total_holds.saturating_sub(1);
            if *n == 0 {
                self.holds.remove(&r.buyer);
            }
        }
        self.by_nonce.remove(&(r.buyer, r.buyer_nonce));
        if let Some(c) = deal.contract_id() {
            self.by_contract.remove(&c);
        }
        self.deadlines.remove(&(deal.deadline(), *id));
        Some(deal)
    }

    /// Releases everything whose deadline is at or before `now`.
    fn advance(&mut self, now: Timestamp) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.lapse(&id);
        }
    }

    /// Releases a deal whose deadline passed.
    fn lapse(&mut self, id: &ReservationId) {
        let Some(deal) = self.remove_deal(id) else {
            return;
        };
        let buyer = deal.reservation().buyer;
        let (kind, contract) = match &deal {
            Deal::Reserved(_) => {
                self.records.push(Record::Released {
                    reservation: *id,
                    buyer: Some(buyer),
                    contract: None,
                });
                self.events.push_back(LedgerEvent::ReservationExpired {
                    reservation: *id,
                    buyer,
                });
                (TombKind::ReservationExpired, None)
            }
            Deal::Offered { offer, .. } => {
                let contract = offer.terms().id;
                self.records.push(Record::Released {
                    reservation: *id,
                    buyer: Some(buyer),
                    contract: Some(contract),
                });
                self.events.push_back(LedgerEvent::OfferExpired {
                    reservation: *id,
                    contract,
                    buyer,
                });
                (TombKind::OfferExpired, Some(contract))
            }
            Deal::Active { contract, .. } => {
                let contract = contract.id();
                self.records.push(Record::Ended {
                    reservation: *id,
                    contract,
                    termination: None,
                    buyer: Some(buyer),
                });
                self.events
                    .push_back(LedgerEvent::ContractEnded { contract, buyer });
                (TombKind::Ended, Some(contract))
            }
        };
        tracing::debug!(reservation_id = %id, ?kind, "released");
        self.tombs.insert(
            *id,
            Tomb {
                buyer,
                contract,
                kind,
            },
        );
    }
}
