//! Rebuilding a ledger from the records of a [`Store`](crate::store::Store).

use fluidos_contracts::{SecretKey, Timestamp};

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
        let mut ledger = Ledger::new(key, config, now);
        let mut live = LiveSet::new();
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
        ledger.advance(now);
        tracing::info!(
            reservations = ledger.reservations().count(),
            offers = ledger.offers().count(),
            contracts = ledger.contracts().count(),
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
