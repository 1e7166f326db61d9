//! Remembering recently ended deals, so a late request gets `ReservationExpired`
//! or `Replay` rather than an `Unknown…` that would read as a provider bug.

use std::collections::{BTreeMap, VecDeque};

use fluidos_contracts::{ContractId, NodeId, ReservationId};

/// How a deal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TombKind {
    /// A reservation lapsed before it was purchased.
    ReservationExpired,
    /// An offer lapsed before it was countersigned.
    OfferExpired,
    /// A contract reached `valid_until`.
    Ended,
    /// A contract or offer was terminated by a party.
    Terminated,
}

/// What is remembered about an ended deal.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tomb {
    /// The deal's buyer.
    pub(super) buyer: NodeId,
    /// The contract, if the deal got that far.
    pub(super) contract: Option<ContractId>,
    /// How it ended.
    pub(super) kind: TombKind,
}

/// A bounded memory of ended deals; the oldest are forgotten first.
#[derive(Debug)]
pub(super) struct Tombstones {
    by_reservation: BTreeMap<ReservationId, Tomb>,
    by_contract: BTreeMap<ContractId, ReservationId>,
    order: VecDeque<ReservationId>,
    cap: usize,
}

impl Tombstones {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            by_reservation: BTreeMap::new(),
            by_contract: BTreeMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(super) fn insert(&mut self, reservation: ReservationId, tomb: Tomb) {
        if self.cap == 0 {
            return;
        }
        while self.order.len() >= self.cap {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(t) = self.by_reservation.remove(&old)
                && let Some(c) = t.contract
            {
                self.by_contract.remove(&c);
            }
        }
        if let Some(c) = tomb.contract {
            self.by_contract.insert(c, reservation);
        }
        if self.by_reservation.insert(reservation, tomb).is_none() {
            self.order.push_back(reservation);
        }
    }

    pub(super) fn reservation(&self, id: &ReservationId) -> Option<&Tomb> {
        self.by_reservation.get(id)
    }

    pub(super) fn contract(&self, id: &ContractId) -> Option<&Tomb> {
        self.by_contract
            .get(id)
            .and_then(|r| self.by_reservation.get(r))
    }

    pub(super) fn contains_contract(&self, id: &ContractId) -> bool {
        self.by_contract.contains_key(id)
    }
}

/// A small deterministic generator of identifiers (SplitMix64). Identifiers only
/// need to be unique and hard to guess for other buyers; authorisation never
/// rests on them, the ledger checks the buyer of every request.
#[derive(Debug)]
pub(super) struct IdGen {
    state: u64,
}

impl IdGen {
    pub(super) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            let r = fluidos_contracts::Nonce::random().0;
            u64::from_le_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]])
        });
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn next16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_forget_the_oldest_first() {
        let buyer = fluidos_contracts::SecretKey::from_seed(&[1; 32]).node_id();
        let mut t = Tombstones::new(2);
        for i in 0..3u8 {
            t.insert(
                ReservationId([i; 16]),
                Tomb {
                    buyer,
                    contract: Some(ContractId([i; 16])),
                    kind: TombKind::Ended,
                },
            );
        }
        assert!(t.reservation(&ReservationId([0; 16])).is_none());
        assert!(!t.contains_contract(&ContractId([0; 16])));
        assert!(t.contract(&ContractId([2; 16])).is_some());
        assert_eq!(t.order.len(), 2);
    }

    #[test]
    fn ids_are_repeatable_per_seed_and_distinct() {
        let (mut a, mut b) = (IdGen::new(Some(5)), IdGen::new(Some(5)));
        let first = a.next16();
        assert_eq!(first, b.next16());
        assert_ne!(first, a.next16());
        assert_ne!(IdGen::new(Some(6)).next16(), first);
    }
}
