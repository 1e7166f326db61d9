//! Rebuilding a ledger from the records of a [`Store`](crate::store::Store).

use fluidos_contracts::{SecretKey, Timestamp};

use super::tombs::{Tomb, TombKind};
use super::{Deal, Ledger, LedgerConfig};
use crate::store::{LiveSet, Record};

impl Ledger {
    /// Rebuilds the ledger from persisted `records` (as [`Store::open`] returns
    /// them, or any stream of records in write order) at `now`.
    ///
    /// - reservations and offers whose deadline passed are released, and contracts
    ///   past `valid_until` ended; the matching records are queued in
    ///   [`Ledger::take_records`] so the store forgets them too;
    /// - offers and contracts are verified again (`verify_offer` / `verify`) and
    ///   checked to be this provider's; one that fails is left out with an error
    ///   log (its record stays in the store as evidence);
    /// - the ending records (`Released`, `Ended`) become the ledger's tombstones
    ///   again, so a late request about an ended deal is still answered
    ///   `Replay` or `ReservationExpired`;
    /// - buyer-side records are ignored.
    ///
    /// What is restored counts against the capacity even if the capacity is now
    /// smaller ([`super::LedgerEvent::Overcommitted`] is not raised here; call
    /// [`Ledger::set_capacity`] after measuring).
    ///
    /// [`Store::open`]: crate::store::Store::open
    pub fn restore(
        key: SecretKey,
        config: LedgerConfig,
        records: impl IntoIterator<Item = Record>,
        now: Timestamp,
    ) -> Self {
        let mut live = LiveSet::with_tomb_cap(config.max_tombstones);
        let mut ledger = Ledger::new(key, config, now);
        for record in records {
            live.apply(&record);
        }
        for record in live.records() {
            if let Some(deal) = ledger.check_restored(record) {
                let r = deal.reservation();
                let duplicate = ledger.by_nonce.contains_key(&(r.buyer, r.buyer_nonce))
                    || deal
                        .contract_id()
                        .is_some_and(|c| ledger.by_contract.contains_key(&c));
                if duplicate {
                    tracing::error!(reservation_id = %r.id, "restored deal repeats a nonce or contract id; left out");
                    continue;
                }
                ledger.insert_deal(deal);
            }
        }
        for record in live.tombstones() {
            if let Some((reservation, tomb)) = restored_tomb(record) {
                ledger.tombs.insert(reservation, tomb);
            }
        }
        ledger.advance(now);
        tracing::info!(
            reservations = ledger.reservations().count(),
            offers = ledger.offers().count(),
            contracts = ledger.contracts().count(),
            tombstones = live.tombstone_count(),
            committed = %ledger.committed,
            "ledger restored"
        );
        ledger
    }

    /// The deal a provider record describes, if it is sound and this provider's.
    fn check_restored(&self, record: &Record) -> Option<Deal> {
        let me = self.me;
        match record {
            Record::Reserved(r) => {
                if r.flavor.owner != me {
                    tracing::error!(reservation_id = %r.id, "restored reservation is for another provider's flavor; left out");
                    return None;
                }
                Some(Deal::Reserved(r.clone()))
            }
            Record::Offered {
                reservation,
                offer,
                expires_at,
            } => match offer.verify_offer() {
                Ok(o)
                    if o.terms().provider == me
                        && o.terms().reservation == reservation.id
                        && o.terms().buyer == reservation.buyer
                        && o.terms().partition == reservation.partition =>
                {
                    Some(Deal::Offered {
                        reservation: reservation.clone(),
                        offer: o,
                        expires_at: *expires_at,
                    })
                }
                Ok(_) => {
                    tracing::error!(reservation_id = %reservation.id, "restored offer does not match its reservation or provider; left out");
                    None
                }
                Err(error) => {
                    tracing::error!(reservation_id = %reservation.id, %error, "restored offer fails verification; left out");
                    None
                }
            },
            Record::Activated {
                reservation,
                contract,
            } => match contract.verify() {
                Ok(c)
                    if c.terms().provider == me
                        && c.terms().reservation == reservation.id
                        && c.terms().buyer == reservation.buyer
                        && c.terms().partition == reservation.partition =>
                {
                    Some(Deal::Active {
                        reservation: reservation.clone(),
                        contract: c,
                    })
                }
                Ok(c) => {
                    tracing::error!(contract_id = %c.id(), "restored contract does not match its reservation or provider; left out");
                    None
                }
                Err(error) => {
                    tracing::error!(reservation_id = %reservation.id, %error, "restored contract fails verification; left out");
                    None
                }
            },
            _ => None,
        }
    }
}

/// The tombstone an ending record describes; `None` for other records and for
/// ending records written before tombstones were persisted (no buyer).
fn restored_tomb(record: &Record) -> Option<(fluidos_contracts::ReservationId, Tomb)> {
    match record {
        Record::Released {
            reservation,
            buyer: Some(buyer),
            contract,
        } => Some((
            *reservation,
            Tomb {
                buyer: *buyer,
                contract: *contract,
                kind: if contract.is_some() {
                    TombKind::OfferExpired
                } else {
                    TombKind::ReservationExpired
                },
            },
        )),
        Record::Ended {
            reservation,
            contract,
            termination,
            buyer: Some(buyer),
        } => Some((
            *reservation,
            Tomb {
                buyer: *buyer,
                contract: Some(*contract),
                kind: if termination.is_some() {
                    TombKind::Terminated
                } else {
                    TombKind::Ended
                },
            },
        )),
        _ => None,
    }
}
