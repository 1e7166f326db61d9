//! The REAR operations of the ledger: list, reserve, purchase, countersign, terminate.

use fluidos_contracts::rear::{ErrorCode, RearError};
use fluidos_contracts::{
    BuyerTerms, ContractId, ContractTerms, Flavor, FlavorId, NodeId, Nonce, Quote, Reservation,
    ReservationId, Resources, Selector, SignedContract, Termination, Timestamp, Verified,
    VerifiedContract, VerifiedOffer,
};

use super::tombs::{Tomb, TombKind};
use super::{Deal, Ledger, LedgerEvent, add_saturating, err, partition_error};
use crate::store::Record;

impl Ledger {
    // ----- operations ----------------------------------------------------------

    /// The flavors matching `selector` at `now`, each re-issued with what is left
    /// to sell. A flavor with nothing left is not listed. Signatures are cached:
    /// a flavor is signed again only when its quantities change or half of its
    /// validity has passed.
    ///
    /// This takes `&self` and so does not release lapsed deals first; call
    /// [`Ledger::handle_timeout`] (or use [`Ledger::handle`]) to list fresh numbers.
    pub fn list(&self, selector: &Selector, now: Timestamp) -> Vec<Verified<Flavor>> {
        let remaining = self.remaining();
        let mut cache = self.flavors.borrow_mut();
        let mut out = Vec::new();
        for template in self.templates.values() {
            if template.not_after.is_some_and(|end| now >= end) {
                continue;
            }
            let flavor = cache.current(
                self.me,
                template,
                &self.capacity,
                &remaining,
                self.config.flavor_ttl_ms,
                now,
            );
            if flavor.characteristics.resources.is_zero() || !selector.matches(flavor, now) {
                continue;
            }
            if let Some(signed) = cache.signed(&template.id, &self.key) {
                out.push(signed);
            }
        }
        out
    }

    /// Holds `partition` of flavor `flavor_id` for `buyer` until
    /// `now + reservation_ttl_ms`.
    ///
    /// Errors: `Replay` (nonce reused with other parameters), `NotAuthorised`
    /// (buying from oneself), `UnknownFlavor`, `FlavorExpired`, `RateLimited` (too
    /// many holds by this buyer), `InvalidPartition` (min, step, partitionability),
    /// `InsufficientCapacity`.
    pub fn reserve(
        &mut self,
        buyer: NodeId,
        flavor_id: FlavorId,
        partition: Resources,
        nonce: Nonce,
        now: Timestamp,
    ) -> Result<Reservation, RearError> {
        self.advance(now);
        if let Some(deal) = self
            .by_nonce
            .get(&(buyer, nonce))
            .and_then(|r| self.deals.get(r))
        {
            let r = deal.reservation();
            if r.flavor.id == flavor_id && r.partition == partition {
                return Ok(r.clone());
            }
            return Err(err(
                ErrorCode::Replay,
                "this nonce was used for a different reservation; use a fresh nonce",
            ));
        }
        if buyer == self.me {
            return Err(err(
                ErrorCode::NotAuthorised,
                "a node cannot buy from itself",
            ));
        }
        let template = self
            .templates
            .get(&flavor_id)
            .ok_or_else(|| err(ErrorCode::UnknownFlavor, format!("no flavor {flavor_id}")))?;
        if template.not_after.is_some_and(|end| now >= end) {
            return Err(err(
                ErrorCode::FlavorExpired,
                format!("flavor {flavor_id} is no longer sold"),
            ));
        }
        let holds = self.holds.get(&buyer).copied().unwrap_or(0);
        if self.total_holds >= self.config.max_holds {
            return Err(err(
                ErrorCode::RateLimited,
                "too many reservations are pending; try again shortly",
            ));
        }
        if holds >= self.config.max_reservations_per_buyer {
            return Err(err(
                ErrorCode::RateLimited,
                format!(
                    "{holds} reservations and offers are already held; purchase or let them lapse"
                ),
            ));
        }
        let remaining = self.remaining();
        let flavor = self
            .flavors
            .get_mut()
            .current(
                self.me,
                template,
                &self.capacity,
                &remaining,
                self.config.flavor_ttl_ms,
                now,
            )
            .clone();
        flavor
            .check_partition(&partition, &flavor.characteristics.resources)
            .map_err(partition_error)?;
        // Belt and braces: whatever a template says, the pool decides.
        if !add_saturating(&self.committed, &partition).fits_within(&self.capacity) {
            return Err(err(
                ErrorCode::InsufficientCapacity,
                "capacity is committed",
            ));
        }
        let id = loop {
            let id = ReservationId(self.ids.next16());
            if !self.deals.contains_key(&id) && self.tombs.reservation(&id).is_none() {
                break id;
            }
        };
        let reservation = Reservation {
            id,
            flavor,
            partition,
            buyer,
            buyer_nonce: nonce,
            expires_at: now.plus_ms(self.config.reservation_ttl_ms.max(1)),
        };
        tracing::debug!(reservation_id = %id, buyer = %buyer.short(), partition = %partition, "reserved");
        self.records.push(Record::Reserved(reservation.clone()));
        self.insert_deal(Deal::Reserved(reservation.clone()));
        Ok(reservation)
    }

    /// Turns `buyer`'s reservation into contract terms signed by the provider.
    ///
    /// Errors: `UnknownReservation`, `NotAuthorised` (not the reservation's buyer),
    /// `ReservationExpired`, `Replay` (already countersigned or ended),
    /// `Malformed` (zero duration), `PriceNotAccepted` (price above the buyer's
    /// maximum or another currency), `Unavailable` (the terms cannot be signed).
    pub fn purchase(
        &mut self,
        buyer: NodeId,
        reservation_id: ReservationId,
        terms: BuyerTerms,
        now: Timestamp,
    ) -> Result<VerifiedOffer, RearError> {
        self.advance(now);
        let Some(deal) = self.deals.get(&reservation_id) else {
            return Err(self.ended_reservation(&buyer, &reservation_id));
        };
        if deal.reservation().buyer != buyer {
            return Err(err(
                ErrorCode::NotAuthorised,
                "the reservation belongs to another buyer",
            ));
        }
        let reservation = match deal {
            Deal::Offered { offer, .. } => return Ok(offer.clone()),
            Deal::Active { .. } => {
                return Err(err(ErrorCode::Replay, "the reservation was already bought"));
            }
            Deal::Reserved(r) => r.clone(),
        };
        if terms.duration_ms == 0 {
            return Err(err(ErrorCode::Malformed, "contract duration is zero"));
        }
        let flavor = &reservation.flavor;
        if !terms.currency.eq_ignore_ascii_case(&flavor.price.currency) {
            return Err(err(
                ErrorCode::PriceNotAccepted,
                format!(
                    "prices are in {}, not {}",
                    flavor.price.currency, terms.currency
                ),
            ));
        }
        let amount = flavor.quote(&reservation.partition);
        if amount > terms.max_price_micros {
            return Err(err(
                ErrorCode::PriceNotAccepted,
                format!(
                    "the price is {amount} micro-{} per {:?}, above the {} accepted",
                    flavor.price.currency, flavor.price.period, terms.max_price_micros
                ),
            ));
        }
        let contract_id = loop {
            let id = ContractId(self.ids.next16());
            if !self.by_contract.contains_key(&id) && !self.tombs.contains_contract(&id) {
                break id;
            }
        };
        let duration = terms.duration_ms.min(self.config.max_contract_ms.max(1));
        let contract_terms = ContractTerms {
            id: contract_id,
            reservation: reservation.id,
            provider: self.me,
            buyer,
            flavor: flavor.clone(),
            partition: reservation.partition,
            price: Quote {
                amount_micros: amount,
                currency: flavor.price.currency.clone(),
                period: flavor.price.period,
                model: flavor.price.model,
            },
            valid_from: now,
            valid_until: now.plus_ms(duration),
            nonce: Nonce(self.ids.next16()),
            provider_fabric: self.config.fabric.clone(),
            buyer_fabric: terms.fabric,
            forwarded_via: Vec::new(),
        };
        let offer = SignedContract::offer(contract_terms, &self.key).map_err(|e| {
            tracing::error!(error = %e, "cannot sign contract terms");
            err(
                ErrorCode::Unavailable,
                format!("cannot sign the terms: {e}"),
            )
        })?;
        // An offer never outlives the contract it offers.
        let expires_at = now
            .plus_ms(self.config.offer_ttl_ms.max(1))
            .min(offer.terms().valid_until);
        tracing::debug!(reservation_id = %reservation.id, contract_id = %contract_id, "offered");
        self.records.push(Record::Offered {
            reservation: reservation.clone(),
            offer: offer.signed().clone(),
            expires_at,
        });
        self.remove_deal(&reservation.id);
        self.insert_deal(Deal::Offered {
            reservation,
            offer: offer.clone(),
            expires_at,
        });
        Ok(offer)
    }

    /// [`Ledger::reserve`] and [`Ledger::purchase`] as one step: either an offer
    /// holding `partition`, or nothing held at all. Repeating it with the same
    /// `(buyer, nonce)` returns the same offer, as a repeated purchase does.
    ///
    /// Only the `Offered` record is produced (it carries the reservation), so
    /// the pair costs one record and one group commit instead of two.
    ///
    /// Errors: those of [`Ledger::reserve`], then those of [`Ledger::purchase`].
    pub fn reserve_and_purchase(
        &mut self,
        buyer: NodeId,
        flavor_id: FlavorId,
        partition: Resources,
        nonce: Nonce,
        terms: BuyerTerms,
        now: Timestamp,
    ) -> Result<VerifiedOffer, RearError> {
        let fresh = !self.by_nonce.contains_key(&(buyer, nonce));
        let reservation = self.reserve(buyer, flavor_id, partition, nonce, now)?;
        let id = reservation.id;
        let result = self.purchase(buyer, id, terms, now);
        if fresh {
            // The reservation was never shown to anyone: it needs no record of
            // its own, and when the purchase fails it is undone without a trace.
            self.records
                .retain(|r| !matches!(r, Record::Reserved(r) if r.id == id));
            if result.is_err() {
                self.remove_deal(&id);
            }
        }
        result
    }

    /// Attaches `buyer`'s countersignature to the offer `contract_id`, making the
    /// contract active.
    ///
    /// Errors: `UnknownContract`, `NotAuthorised` (not the contract's buyer),
    /// `ReservationExpired` (the offer lapsed), `Replay` (already countersigned or
    /// ended), `BadSignature`.
    pub fn countersign(
        &mut self,
        buyer: NodeId,
        contract_id: ContractId,
        signature: fluidos_contracts::Signature,
        now: Timestamp,
    ) -> Result<VerifiedContract, RearError> {
        self.advance(now);
        let Some(deal) = self
            .by_contract
            .get(&contract_id)
            .and_then(|r| self.deals.get(r))
        else {
            return Err(match self.tombs.contract(&contract_id) {
                None => err(
                    ErrorCode::UnknownContract,
                    format!("no contract {contract_id}"),
                ),
                Some(t) if t.buyer != buyer => err(
                    ErrorCode::NotAuthorised,
                    "the contract belongs to another buyer",
                ),
                Some(t) if t.kind == TombKind::OfferExpired => err(
                    ErrorCode::ReservationExpired,
                    "the offer lapsed before it was countersigned; its capacity was released",
                ),
                Some(_) => err(ErrorCode::Replay, "the contract has already ended"),
            });
        };
        if deal.reservation().buyer != buyer {
            return Err(err(
                ErrorCode::NotAuthorised,
                "the contract belongs to another buyer",
            ));
        }
        let (reservation, offer) = match deal {
            Deal::Offered {
                reservation, offer, ..
            } => (reservation.clone(), offer.clone()),
            Deal::Active { .. } => {
                return Err(err(
                    ErrorCode::Replay,
                    "the contract is already countersigned",
                ));
            }
            Deal::Reserved(_) => {
                return Err(err(
                    ErrorCode::UnknownContract,
                    format!("no contract {contract_id}"),
                ));
            }
        };
        let contract = offer.accept_countersignature(signature).map_err(|_| {
            err(
                ErrorCode::BadSignature,
                "the countersignature is not the buyer's signature over the terms",
            )
        })?;
        tracing::info!(contract_id = %contract_id, buyer = %buyer.short(), "contract active");
        self.records.push(Record::Activated {
            reservation: reservation.clone(),
            contract: contract.signed().clone(),
        });
        self.remove_deal(&reservation.id);
        self.insert_deal(Deal::Active {
            reservation,
            contract: contract.clone(),
        });
        self.events.push_back(LedgerEvent::ContractActivated {
            contract: Box::new(contract.clone()),
        });
        Ok(contract)
    }

    /// Ends a contract (or withdraws an offer not yet countersigned) on the
    /// request of a party, releasing its capacity. The signature must have been
    /// checked ([`Verified`]); [`Ledger::handle`] does that for wire requests.
    ///
    /// Errors: `UnknownContract`, `NotAuthorised` (the signer is not a party),
    /// `Replay` (already ended).
    pub fn terminate(
        &mut self,
        termination: &Verified<Termination>,
        now: Timestamp,
    ) -> Result<ContractId, RearError> {
        self.advance(now);
        let contract_id = termination.contract;
        let by = termination.by;
        let Some(rid) = self.by_contract.get(&contract_id).copied() else {
            return Err(match self.tombs.contract(&contract_id) {
                Some(t) if t.buyer != by && by != self.me => err(
                    ErrorCode::NotAuthorised,
                    "only the provider or the buyer may terminate a contract",
                ),
                Some(t) if matches!(t.kind, TombKind::Ended | TombKind::Terminated) => {
                    err(ErrorCode::Replay, "the contract has already ended")
                }
                _ => err(
                    ErrorCode::UnknownContract,
                    format!("no contract {contract_id}"),
                ),
            });
        };
        let Some(deal) = self.deals.get(&rid) else {
            return Err(err(
                ErrorCode::UnknownContract,
                format!("no contract {contract_id}"),
            ));
        };
        if by != self.me && by != deal.reservation().buyer {
            return Err(err(
                ErrorCode::NotAuthorised,
                "only the provider or the buyer may terminate a contract",
            ));
        }
        let was_active = matches!(deal, Deal::Active { .. });
        let buyer = deal.reservation().buyer;
        self.remove_deal(&rid);
        self.tombs.insert(
            rid,
            Tomb {
                buyer,
                contract: Some(contract_id),
                kind: TombKind::Terminated,
            },
        );
        tracing::info!(contract_id = %contract_id, by = %by.short(), reason = %termination.reason, "terminated");
        self.records.push(Record::Ended {
            reservation: rid,
            contract: contract_id,
            termination: Some(termination.signed().clone()),
            buyer: Some(buyer),
        });
        self.events.push_back(LedgerEvent::ContractTerminated {
            contract: contract_id,
            by,
            cause: termination.cause,
            was_active,
        });
        Ok(contract_id)
    }
}
