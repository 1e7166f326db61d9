//! Negotiating with one provider at a time: reserve and purchase (in one request,
//! or two), persist, countersign; on any failure, the next ranked offer.

use std::sync::Arc;
use std::time::Instant;

use fluidos_contracts::rear::{ErrorCode, RearError, Request, Response};
use fluidos_contracts::{
    BuyerTerms, Flavor, Nonce, Reservation, ReservationId, Resources, SignedContract,
    VerifiedContract,
};

use super::{Acquisition, Attempt, Stage, countersign_request, response_kind};
use crate::buyer::events::{
    AcquisitionEvent, AcquisitionFailure, CandidateFailure, InvalidAnswer, Mismatch, Phase,
};
use crate::buyer::rank::{from_per_hour, per_hour};

/// What the offer must match: the flavor and partition the buyer asked for, and
/// the reservation when it was made in a request of its own.
struct Expected<'a> {
    flavor: &'a Flavor,
    partition: &'a Resources,
    reservation: Option<ReservationId>,
}

/// How much above a listed quote a buyer with no price ceiling accepts.
///
/// Providers re-issue a flavor with a new price whenever what is left changes,
/// and both that price and the partition's quote are rounded up, so the same
/// partition may be quoted a little differently by the revision listed and by
/// the one current when the request arrives: 1 ‰ plus 2 micro-units covers
/// the two roundings. A reservation made in its own request is quoted exactly.
fn with_rounding_allowance(quote: u64) -> u64 {
    quote.saturating_add(quote / 1000).saturating_add(2)
}

impl Acquisition {
    pub(super) fn next_attempt(&mut self, now: Instant) {
        self.attempt = None;
        while let Some(offer) = self.ranked.pop_front() {
            if self.attempts_made >= self.opts.max_attempts {
                break;
            }
            if self.dead.contains(&offer.provider) {
                continue;
            }
            // The same check the provider makes, against what it advertised.
            if offer
                .flavor
                .check_partition(&offer.partition, &offer.flavor.characteristics.resources)
                .is_err()
            {
                continue;
            }
            let provider = offer.provider;
            let (request, stage, phase) = if self.opts.reserve_first {
                (
                    Request::Reserve {
                        flavor: offer.flavor.id,
                        partition: offer.partition,
                        nonce: self.peek_nonce(),
                    },
                    Stage::Reserving,
                    Phase::Reserving { provider },
                )
            } else {
                let terms = match self.buyer_terms(&offer.flavor, &offer.partition, true) {
                    Ok(terms) => terms,
                    Err(reason) => {
                        // Ranking filters prices above the ceiling; a flavor that
                        // still fails here is unsuitable, not a provider's fault.
                        tracing::debug!(provider = %provider.short(), %reason, "offer skipped");
                        continue;
                    }
                };
                (
                    Request::ReserveAndPurchase {
                        flavor: offer.flavor.id,
                        partition: offer.partition,
                        nonce: self.peek_nonce(),
                        terms,
                    },
                    Stage::Buying,
                    Phase::Buying { provider },
                )
            };
            self.attempts_made += 1;
            let nonce = self.next_nonce();
            self.transmits.push_back((provider, request.clone()));
            self.attempt = Some(Attempt {
                offer,
                nonce,
                stage,
                deadline: Some(now + self.opts.request_timeout),
                in_flight: Some(request),
            });
            self.events.push_back(AcquisitionEvent::Progress(phase));
            return;
        }
        if self.relist(now) {
            return;
        }
        self.finish_failed();
    }

    /// The nonce [`Acquisition::next_nonce`] returns next.
    fn peek_nonce(&self) -> Nonce {
        let mut n = self.nonce_seed;
        for (b, c) in n[8..].iter_mut().zip(self.nonces_used.to_le_bytes()) {
            *b ^= c;
        }
        Nonce(n)
    }

    fn next_nonce(&mut self) -> Nonce {
        let n = self.peek_nonce();
        self.nonces_used += 1;
        n
    }

    /// What the buyer accepts for `partition` of `flavor`: its fabric, the price
    /// ceiling (the constraint converted to the flavor's period, or exactly the
    /// quoted price when there is none), the currency and the duration.
    fn buyer_terms(
        &self,
        flavor: &Flavor,
        partition: &Resources,
        listed: bool,
    ) -> Result<BuyerTerms, InvalidAnswer> {
        let price = flavor.quote(partition);
        let max = match self.request.constraints.max_price_micros_per_hour {
            Some(max_per_hour) if per_hour(price, flavor.price.period) > max_per_hour => {
                return Err(InvalidAnswer::PriceRose {
                    price,
                    period: flavor.price.period,
                });
            }
            Some(max_per_hour) => from_per_hour(max_per_hour, flavor.price.period),
            None if listed => with_rounding_allowance(price),
            None => price,
        };
        Ok(BuyerTerms {
            fabric: self.fabric.clone(),
            max_price_micros: max,
            currency: flavor.price.currency.clone(),
            duration_ms: self.request.duration_ms,
        })
    }

    /// The current attempt failed; record why and move on.
    fn give_up_attempt(&mut self, failure: CandidateFailure, now: Instant) {
        if let Some(a) = self.attempt.take() {
            if matches!(
                failure,
                CandidateFailure::Unreachable { .. } | CandidateFailure::TimedOut { .. }
            ) {
                self.dead.insert(a.offer.provider);
            }
            self.failures.push((a.offer.provider, failure));
        }
        self.next_attempt(now);
    }

    /// No answer (transport failure when `reason` is set, else a timeout).
    pub(super) fn attempt_failed_to_answer(&mut self, reason: Option<String>, now: Instant) {
        let timeout = self.opts.request_timeout;
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let request = match &attempt.stage {
            Stage::Reserving => "reserve",
            Stage::Buying => "reserve_and_purchase",
            Stage::Purchasing { .. } => "purchase",
            Stage::Persisting { .. } => return,
            Stage::Countersigning { .. } => "countersign",
        };
        if let Stage::Countersigning {
            contract,
            sends_left,
        } = &mut attempt.stage
        {
            // The provider may have activated the contract: never walk away from
            // it silently. Send again (idempotent: `Replay` means it has it).
            let provider = attempt.offer.provider;
            if *sends_left > 0 {
                *sends_left -= 1;
                self.transmits
                    .push_back((provider, countersign_request(contract)));
                attempt.deadline = Some(now + timeout);
                return;
            }
            let id = contract.id();
            self.failures
                .push((provider, CandidateFailure::Unconfirmed { contract: id }));
            self.attempt = None;
            self.finish_failed();
            return;
        }
        // No answer in time: the request or its answer may have been lost on the
        // way. Send it once more before moving on; the provider answers a repeat
        // with what it answered the first time.
        if reason.is_none()
            && let Some(again) = attempt.in_flight.take()
        {
            let provider = attempt.offer.provider;
            self.transmits.push_back((provider, again));
            attempt.deadline = Some(now + timeout);
            return;
        }
        let failure = match reason {
            Some(reason) => CandidateFailure::Unreachable { request, reason },
            None => CandidateFailure::TimedOut { request },
        };
        self.give_up_attempt(failure, now);
    }

    pub(super) fn on_reserve_answer(&mut self, response: Response, now: Instant) {
        let Some(attempt) = self.attempt.as_ref() else {
            return;
        };
        let reservation = match response {
            Response::Reserved { reservation } => reservation,
            Response::Error(error) => {
                return self.give_up_attempt(
                    CandidateFailure::Refused {
                        request: "reserve",
                        error,
                    },
                    now,
                );
            }
            other => {
                return self.invalid(
                    "reserve",
                    InvalidAnswer::Unexpected {
                        got: response_kind(&other),
                    },
                    now,
                );
            }
        };
        let offer = &attempt.offer;
        let problem = if reservation.buyer != self.me {
            Some(Mismatch::Buyer)
        } else if reservation.partition != offer.partition {
            Some(Mismatch::Partition)
        } else if reservation.flavor.id != offer.flavor.id
            || reservation.flavor.owner != offer.provider
        {
            Some(Mismatch::Flavor)
        } else if reservation.buyer_nonce != attempt.nonce {
            Some(Mismatch::Nonce)
        } else {
            None
        };
        if let Some(problem) = problem {
            return self.invalid("reserve", InvalidAnswer::Reservation(problem), now);
        }
        let terms = match self.buyer_terms(&reservation.flavor, &reservation.partition, false) {
            Ok(terms) => terms,
            Err(problem) => return self.invalid("reserve", problem, now),
        };
        let provider = offer.provider;
        let request = Request::Purchase {
            reservation: reservation.id,
            terms,
        };
        self.transmits.push_back((provider, request.clone()));
        let timeout = self.opts.request_timeout;
        if let Some(a) = self.attempt.as_mut() {
            a.stage = Stage::Purchasing {
                reservation: Box::new(reservation),
            };
            a.deadline = Some(now + timeout);
            a.in_flight = Some(request);
        }
        self.events
            .push_back(AcquisitionEvent::Progress(Phase::Purchasing { provider }));
    }

    /// The answer to `Purchase` or `ReserveAndPurchase`.
    pub(super) fn on_offer_answer(&mut self, response: Response, now: Instant) {
        let request = match self.attempt.as_ref().map(|a| &a.stage) {
            Some(Stage::Buying) => "reserve_and_purchase",
            _ => "purchase",
        };
        let signed = match response {
            Response::Offer { contract } => contract,
            Response::Error(error) => {
                return self.give_up_attempt(CandidateFailure::Refused { request, error }, now);
            }
            other => {
                return self.invalid(
                    request,
                    InvalidAnswer::Unexpected {
                        got: response_kind(&other),
                    },
                    now,
                );
            }
        };
        let contract = match self.check_offer(&signed) {
            Ok(c) => c,
            Err(problem) => return self.invalid(request, problem, now),
        };
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let provider = attempt.offer.provider;
        attempt.stage = Stage::Persisting {
            contract: Box::new(contract.clone()),
        };
        // Local disk, not the peer: no timeout while persisting.
        attempt.deadline = None;
        self.events
            .push_back(AcquisitionEvent::Progress(Phase::Persisting { provider }));
        self.events
            .push_back(AcquisitionEvent::Persist(Box::new(contract)));
    }

    /// Verifies the provider's offer against what was asked for and countersigns it.
    fn check_offer(&self, signed: &SignedContract) -> Result<VerifiedContract, InvalidAnswer> {
        let Some(attempt) = self.attempt.as_ref() else {
            return Err(InvalidAnswer::NoPurchase);
        };
        let expected = match &attempt.stage {
            Stage::Buying => Expected {
                flavor: &attempt.offer.flavor,
                partition: &attempt.offer.partition,
                reservation: None,
            },
            Stage::Purchasing { reservation } => {
                let Reservation {
                    id,
                    flavor,
                    partition,
                    ..
                } = reservation.as_ref();
                Expected {
                    flavor,
                    partition,
                    reservation: Some(*id),
                }
            }
            _ => return Err(InvalidAnswer::NoPurchase),
        };
        let verified = signed
            .verify_offer()
            .map_err(|e| InvalidAnswer::OfferDoesNotVerify(Arc::new(e)))?;
        let t = verified.terms();
        let flavor = expected.flavor;
        let max_price = match self.request.constraints.max_price_micros_per_hour {
            Some(m) => from_per_hour(m, flavor.price.period),
            None if expected.reservation.is_none() => {
                with_rounding_allowance(flavor.quote(expected.partition))
            }
            None => flavor.quote(expected.partition),
        };
        let duration = t.valid_until.0.saturating_sub(t.valid_from.0);
        let problem = if t.provider != attempt.offer.provider {
            Some(Mismatch::Provider)
        } else if t.buyer != self.me {
            Some(Mismatch::Buyer)
        } else if expected.reservation.is_some_and(|r| r != t.reservation) {
            Some(Mismatch::Reservation)
        } else if t.partition != *expected.partition {
            Some(Mismatch::Partition)
        } else if t.flavor.id != flavor.id {
            Some(Mismatch::Flavor)
        } else if t.price.amount_micros > max_price
            || !t
                .price
                .currency
                .eq_ignore_ascii_case(&flavor.price.currency)
            || t.price.period != flavor.price.period
        {
            Some(Mismatch::Price)
        } else if t.buyer_fabric != self.fabric {
            Some(Mismatch::Fabric)
        } else if !t.forwarded_via.is_empty() {
            Some(Mismatch::Forwarding)
        } else if duration == 0 || duration > self.request.duration_ms {
            Some(Mismatch::Duration)
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(InvalidAnswer::Terms(problem));
        }
        verified
            .countersign(&self.key)
            .map_err(|e| InvalidAnswer::Countersign(Arc::new(e)))
    }

    pub(super) fn on_countersign_answer(&mut self, response: Response, now: Instant) {
        let Some(Attempt {
            offer,
            stage: Stage::Countersigning { contract, .. },
            ..
        }) = self.attempt.as_ref()
        else {
            return;
        };
        let provider = offer.provider;
        let id = contract.id();
        match response {
            Response::Countersigned { contract: acked } if acked == id => self.finish_done(),
            Response::Error(RearError {
                code: ErrorCode::Replay,
                ..
            }) => self.finish_done(),
            Response::Error(error) => {
                // A definite refusal: the contract is not active at the provider.
                self.events.push_back(AcquisitionEvent::Discarded {
                    contract: id,
                    provider,
                });
                self.give_up_attempt(
                    CandidateFailure::Refused {
                        request: "countersign",
                        error,
                    },
                    now,
                );
            }
            // Anything else leaves the contract's state unknown: treat it as no
            // answer, which re-sends the countersignature.
            _ => self.attempt_failed_to_answer(None, now),
        }
    }

    fn invalid(&mut self, request: &'static str, reason: InvalidAnswer, now: Instant) {
        self.give_up_attempt(CandidateFailure::InvalidResponse { request, reason }, now);
    }

    fn finish_done(&mut self) {
        let Some(Attempt {
            stage: Stage::Countersigning { contract, .. },
            ..
        }) = self.attempt.take()
        else {
            return;
        };
        self.finished = true;
        self.events.push_back(AcquisitionEvent::Done(contract));
    }

    pub(super) fn finish_failed(&mut self) {
        self.finished = true;
        self.attempt = None;
        self.events
            .push_back(AcquisitionEvent::Failed(AcquisitionFailure {
                reasons: std::mem::take(&mut self.failures),
            }));
    }
}
