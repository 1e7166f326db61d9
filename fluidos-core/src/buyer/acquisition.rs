//! One purchase as a state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use fluidos_contracts::rear::{ErrorCode, RearError, Request, Response};
use fluidos_contracts::{
    BuyerTerms, FabricParams, Flavor, NodeId, Nonce, Reservation, SecretKey, SignedContract,
    Timestamp, Verified, VerifiedContract,
};

use super::AcquisitionRequest;
use super::events::{
    AcquisitionEvent, AcquisitionFailure, AcquisitionOptions, CandidateFailure, Phase,
};
use super::rank::{RankedOffer, Unsuitable, from_per_hour, per_hour, rank};

#[derive(Debug)]
enum Listing {
    Waiting { deadline: Instant },
    Done,
}

#[derive(Debug)]
enum Stage {
    Reserving,
    Purchasing {
        reservation: Box<Reservation>,
    },
    Persisting {
        contract: Box<VerifiedContract>,
    },
    Countersigning {
        contract: Box<VerifiedContract>,
        sends_left: u32,
    },
}

#[derive(Debug)]
struct Attempt {
    offer: RankedOffer,
    nonce: Nonce,
    stage: Stage,
    deadline: Option<Instant>,
}

/// One acquisition: list → rank → reserve → purchase → persist → countersign.
///
/// Call order (quinn style; the driver owns the I/O):
/// 1. [`Acquisition::new`] (or [`Acquisition::with_options`]);
/// 2. loop:
///    - send every [`Acquisition::poll_transmit`] to its peer;
///    - drain [`Acquisition::poll_event`]; on [`AcquisitionEvent::Persist`] make the
///      contract durable, then call [`Acquisition::handle_persisted`];
///    - arm a timer for [`Acquisition::poll_timeout`];
///    - feed [`Acquisition::handle_response`], [`Acquisition::handle_failure`]
///      (transport error) or [`Acquisition::handle_timeout`];
/// 3. until [`AcquisitionEvent::Done`] or [`AcquisitionEvent::Failed`]
///    ([`Acquisition::is_finished`]).
///
/// Listing goes to all candidates at once, each with its own deadline, so a
/// silent peer delays the result by one timeout at most. Then offers are tried in
/// rank order; a refusal, a bad answer or a timeout moves on to the next offer
/// (and a provider that failed to answer is not asked again). A `Replay` answer
/// to `Countersign` is success: the provider already has the countersignature.
#[derive(Debug)]
pub struct Acquisition {
    key: SecretKey,
    me: NodeId,
    request: AcquisitionRequest,
    fabric: FabricParams,
    opts: AcquisitionOptions,
    started: Instant,
    nonce_seed: [u8; 16],
    nonces_used: u64,
    listing: BTreeMap<NodeId, Listing>,
    offers: Vec<(NodeId, Verified<Flavor>)>,
    ranked: VecDeque<RankedOffer>,
    attempt: Option<Attempt>,
    attempts_made: usize,
    dead: BTreeSet<NodeId>,
    failures: Vec<(NodeId, CandidateFailure)>,
    transmits: VecDeque<(NodeId, Request)>,
    events: VecDeque<AcquisitionEvent>,
    finished: bool,
}

impl Acquisition {
    /// Starts an acquisition with default options: queues `ListFlavors` to every
    /// candidate (duplicates and this node itself are skipped).
    pub fn new(
        buyer_key: SecretKey,
        request: AcquisitionRequest,
        candidates: Vec<NodeId>,
        buyer_fabric: FabricParams,
        now: Instant,
    ) -> Self {
        Self::with_options(
            buyer_key,
            request,
            candidates,
            buyer_fabric,
            AcquisitionOptions::default(),
            now,
        )
    }

    /// Starts an acquisition with `options`.
    pub fn with_options(
        buyer_key: SecretKey,
        request: AcquisitionRequest,
        candidates: Vec<NodeId>,
        buyer_fabric: FabricParams,
        options: AcquisitionOptions,
        now: Instant,
    ) -> Self {
        let me = buyer_key.node_id();
        let nonce_seed = options.nonce_seed.unwrap_or_else(|| Nonce::random().0);
        let mut this = Self {
            key: buyer_key,
            me,
            request,
            fabric: buyer_fabric,
            started: now,
            nonce_seed,
            nonces_used: 0,
            listing: BTreeMap::new(),
            offers: Vec::new(),
            ranked: VecDeque::new(),
            attempt: None,
            attempts_made: 0,
            dead: BTreeSet::new(),
            failures: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            finished: false,
            opts: options,
        };
        let selector = this.request.selector();
        let deadline = now + this.opts.request_timeout;
        for c in candidates {
            if c == me || this.listing.contains_key(&c) {
                continue;
            }
            this.listing.insert(c, Listing::Waiting { deadline });
            this.transmits.push_back((
                c,
                Request::ListFlavors {
                    selector: selector.clone(),
                },
            ));
        }
        if this.listing.is_empty() {
            this.finish_failed();
        } else {
            let pending = this.listing.len();
            this.events
                .push_back(AcquisitionEvent::Progress(Phase::Listing { pending }));
        }
        this
    }

    /// The next request to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Request)> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AcquisitionEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline of an outstanding request.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let listing = self.listing.values().filter_map(|l| match l {
            Listing::Waiting { deadline } => Some(*deadline),
            Listing::Done => None,
        });
        listing
            .chain(self.attempt.as_ref().and_then(|a| a.deadline))
            .min()
    }

    /// Whether `Done` or `Failed` has been emitted.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The buyer's identity.
    pub fn buyer(&self) -> NodeId {
        self.me
    }

    /// Expires every request whose deadline passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let late: Vec<NodeId> = self
            .listing
            .iter()
            .filter(|(_, l)| matches!(l, Listing::Waiting { deadline } if *deadline <= now))
            .map(|(n, _)| *n)
            .collect();
        let any_late = !late.is_empty();
        for node in late {
            self.listing.insert(node, Listing::Done);
            self.failures.push((
                node,
                CandidateFailure::TimedOut {
                    request: "list_flavors",
                },
            ));
        }
        if any_late {
            self.after_listing_step(now);
        }
        let due = self
            .attempt
            .as_ref()
            .and_then(|a| a.deadline)
            .is_some_and(|d| d <= now);
        if due {
            self.attempt_failed_to_answer(None, now);
        }
    }

    /// The transport could not deliver a request to `from`, or its answer.
    pub fn handle_failure(&mut self, from: NodeId, reason: impl Into<String>, now: Instant) {
        if self.finished {
            return;
        }
        let reason = reason.into();
        if matches!(self.listing.get(&from), Some(Listing::Waiting { .. })) {
            self.listing.insert(from, Listing::Done);
            self.failures.push((
                from,
                CandidateFailure::Unreachable {
                    request: "list_flavors",
                    reason,
                },
            ));
            self.after_listing_step(now);
            return;
        }
        if self
            .attempt
            .as_ref()
            .is_some_and(|a| a.offer.provider == from)
        {
            self.attempt_failed_to_answer(Some(reason), now);
        }
    }

    /// An answer from `from`. Answers nobody is waiting for are ignored.
    pub fn handle_response(&mut self, from: NodeId, response: Response, now: Instant) {
        if self.finished {
            return;
        }
        if matches!(self.listing.get(&from), Some(Listing::Waiting { .. })) {
            self.listing.insert(from, Listing::Done);
            self.take_listing(from, response);
            self.after_listing_step(now);
            return;
        }
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        if attempt.offer.provider != from {
            return;
        }
        match &attempt.stage {
            Stage::Reserving => self.on_reserve_answer(response, now),
            Stage::Purchasing { .. } => self.on_purchase_answer(response, now),
            Stage::Persisting { .. } => {}
            Stage::Countersigning { .. } => self.on_countersign_answer(response, now),
        }
    }

    /// The contract from [`AcquisitionEvent::Persist`] is durable; send the
    /// countersignature.
    pub fn handle_persisted(&mut self, now: Instant) {
        let timeout = self.opts.request_timeout;
        let sends = self.opts.countersign_attempts.max(1);
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let Stage::Persisting { contract } = &attempt.stage else {
            return;
        };
        let contract = contract.clone();
        let provider = attempt.offer.provider;
        self.transmits
            .push_back((provider, countersign_request(&contract)));
        attempt.stage = Stage::Countersigning {
            contract,
            sends_left: sends - 1,
        };
        attempt.deadline = Some(now + timeout);
        self.events
            .push_back(AcquisitionEvent::Progress(Phase::Countersigning {
                provider,
            }));
    }

    // ----- listing -------------------------------------------------------------

    fn take_listing(&mut self, from: NodeId, response: Response) {
        match response {
            Response::Flavors { flavors } => {
                let before = self.offers.len();
                let mut bad = 0usize;
                for signed in flavors {
                    match signed.verify() {
                        Ok(f) => self.offers.push((from, f)),
                        Err(_) => bad += 1,
                    }
                }
                if bad > 0 {
                    self.failures.push((
                        from,
                        CandidateFailure::InvalidResponse {
                            request: "list_flavors",
                            reason: format!("{bad} flavors with bad signatures ignored"),
                        },
                    ));
                }
                if self.offers.len() == before {
                    self.failures.push((
                        from,
                        CandidateFailure::NoSuitableFlavor {
                            reasons: Vec::new(),
                        },
                    ));
                }
            }
            Response::Error(error) => self.failures.push((
                from,
                CandidateFailure::Refused {
                    request: "list_flavors",
                    error,
                },
            )),
            other => self.failures.push((
                from,
                CandidateFailure::InvalidResponse {
                    request: "list_flavors",
                    reason: format!("unexpected answer {}", response_kind(&other)),
                },
            )),
        }
    }

    /// Ranks and starts negotiating once every candidate answered or timed out.
    fn after_listing_step(&mut self, now: Instant) {
        if self.finished || self.attempt.is_some() || !self.ranked.is_empty() {
            return;
        }
        let pending = self
            .listing
            .values()
            .filter(|l| matches!(l, Listing::Waiting { .. }))
            .count();
        if pending > 0 {
            self.events
                .push_back(AcquisitionEvent::Progress(Phase::Listing { pending }));
            return;
        }
        if self.attempts_made > 0 {
            return;
        }
        // Without a wall clock, Timestamp(0) accepts every flavor: see
        // `AcquisitionOptions::wall_clock`.
        let wall = self
            .opts
            .wall_clock
            .map(|w| {
                let elapsed = now.saturating_duration_since(self.started).as_millis();
                w.plus_ms(u64::try_from(elapsed).unwrap_or(u64::MAX))
            })
            .unwrap_or(Timestamp(0));
        let (ranked, unsuitable) = rank(&self.request, &self.offers, &self.opts.ratings, wall);
        let suitable: BTreeSet<NodeId> = ranked.iter().map(|r| r.provider).collect();
        let mut why: BTreeMap<NodeId, Vec<Unsuitable>> = BTreeMap::new();
        for (node, reason) in unsuitable {
            if !suitable.contains(&node) {
                why.entry(node).or_default().push(reason);
            }
        }
        for (node, reasons) in why {
            self.failures
                .push((node, CandidateFailure::NoSuitableFlavor { reasons }));
        }
        self.ranked = ranked.into();
        self.events
            .push_back(AcquisitionEvent::Progress(Phase::Ranked {
                offers: self.ranked.len(),
            }));
        self.next_attempt(now);
    }

    // ----- negotiating ---------------------------------------------------------

    fn next_attempt(&mut self, now: Instant) {
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
            self.attempts_made += 1;
            let nonce = self.next_nonce();
            let provider = offer.provider;
            self.transmits.push_back((
                provider,
                Request::Reserve {
                    flavor: offer.flavor.id,
                    partition: offer.partition,
                    nonce,
                },
            ));
            self.attempt = Some(Attempt {
                offer,
                nonce,
                stage: Stage::Reserving,
                deadline: Some(now + self.opts.request_timeout),
            });
            self.events
                .push_back(AcquisitionEvent::Progress(Phase::Reserving { provider }));
            return;
        }
        self.finish_failed();
    }

    fn next_nonce(&mut self) -> Nonce {
        let mut n = self.nonce_seed;
        for (b, c) in n[8..].iter_mut().zip(self.nonces_used.to_le_bytes()) {
            *b ^= c;
        }
        self.nonces_used += 1;
        Nonce(n)
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
    fn attempt_failed_to_answer(&mut self, reason: Option<String>, now: Instant) {
        let timeout = self.opts.request_timeout;
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        let request = match &attempt.stage {
            Stage::Reserving => "reserve",
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
        let failure = match reason {
            Some(reason) => CandidateFailure::Unreachable { request, reason },
            None => CandidateFailure::TimedOut { request },
        };
        self.give_up_attempt(failure, now);
    }

    fn on_reserve_answer(&mut self, response: Response, now: Instant) {
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
                    format!("unexpected answer {}", response_kind(&other)),
                    now,
                );
            }
        };
        let offer = &attempt.offer;
        let problem = if reservation.buyer != self.me {
            Some("reservation names another buyer".to_string())
        } else if reservation.partition != offer.partition {
            Some("reservation holds another partition".into())
        } else if reservation.flavor.id != offer.flavor.id
            || reservation.flavor.owner != offer.provider
        {
            Some("reservation is for another flavor".into())
        } else if reservation.buyer_nonce != attempt.nonce {
            Some("reservation carries another nonce".into())
        } else {
            None
        };
        if let Some(problem) = problem {
            return self.invalid("reserve", problem, now);
        }
        let flavor = &reservation.flavor;
        let price = flavor.quote(&reservation.partition);
        let max = match self.request.constraints.max_price_micros_per_hour {
            Some(max_per_hour) => {
                if per_hour(price, flavor.price.period) > max_per_hour {
                    return self.invalid(
                        "reserve",
                        format!(
                            "price rose to {price} micro-units per {:?}",
                            flavor.price.period
                        ),
                        now,
                    );
                }
                from_per_hour(max_per_hour, flavor.price.period)
            }
            // No ceiling given: accept the price the reservation quotes, no more.
            None => price,
        };
        let terms = BuyerTerms {
            fabric: self.fabric.clone(),
            max_price_micros: max,
            currency: flavor.price.currency.clone(),
            duration_ms: self.request.duration_ms,
        };
        let provider = offer.provider;
        self.transmits.push_back((
            provider,
            Request::Purchase {
                reservation: reservation.id,
                terms,
            },
        ));
        let timeout = self.opts.request_timeout;
        if let Some(a) = self.attempt.as_mut() {
            a.stage = Stage::Purchasing {
                reservation: Box::new(reservation),
            };
            a.deadline = Some(now + timeout);
        }
        self.events
            .push_back(AcquisitionEvent::Progress(Phase::Purchasing { provider }));
    }

    fn on_purchase_answer(&mut self, response: Response, now: Instant) {
        let signed = match response {
            Response::Offer { contract } => contract,
            Response::Error(error) => {
                return self.give_up_attempt(
                    CandidateFailure::Refused {
                        request: "purchase",
                        error,
                    },
                    now,
                );
            }
            other => {
                return self.invalid(
                    "purchase",
                    format!("unexpected answer {}", response_kind(&other)),
                    now,
                );
            }
        };
        let contract = match self.check_offer(&signed) {
            Ok(c) => c,
            Err(problem) => return self.invalid("purchase", problem, now),
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

    /// Verifies the provider's offer against what was agreed and countersigns it.
    fn check_offer(&self, signed: &SignedContract) -> Result<VerifiedContract, String> {
        let Some(Attempt {
            offer,
            stage: Stage::Purchasing { reservation },
            ..
        }) = self.attempt.as_ref()
        else {
            return Err("no purchase in progress".into());
        };
        let verified = signed
            .verify_offer()
            .map_err(|e| format!("offer does not verify: {e}"))?;
        let t = verified.terms();
        let max_price = match self.request.constraints.max_price_micros_per_hour {
            Some(m) => from_per_hour(m, reservation.flavor.price.period),
            None => reservation.flavor.quote(&reservation.partition),
        };
        let duration = t.valid_until.0.saturating_sub(t.valid_from.0);
        let problem = if t.provider != offer.provider {
            "terms name another provider"
        } else if t.buyer != self.me {
            "terms name another buyer"
        } else if t.reservation != reservation.id {
            "terms are for another reservation"
        } else if t.partition != reservation.partition {
            "terms hold another partition"
        } else if t.flavor.id != reservation.flavor.id {
            "terms are for another flavor"
        } else if t.price.amount_micros > max_price
            || !t
                .price
                .currency
                .eq_ignore_ascii_case(&reservation.flavor.price.currency)
            || t.price.period != reservation.flavor.price.period
        {
            "terms carry a price above what was accepted"
        } else if t.buyer_fabric != self.fabric {
            "terms carry other buyer fabric parameters"
        } else if !t.forwarded_via.is_empty() {
            "terms claim a forwarding path for a direct sale"
        } else if duration == 0 || duration > self.request.duration_ms {
            "terms last longer than requested"
        } else {
            ""
        };
        if !problem.is_empty() {
            return Err(problem.into());
        }
        verified
            .countersign(&self.key)
            .map_err(|e| format!("cannot countersign: {e}"))
    }

    fn on_countersign_answer(&mut self, response: Response, now: Instant) {
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

    fn invalid(&mut self, request: &'static str, reason: String, now: Instant) {
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

    fn finish_failed(&mut self) {
        self.finished = true;
        self.attempt = None;
        self.events
            .push_back(AcquisitionEvent::Failed(AcquisitionFailure {
                reasons: std::mem::take(&mut self.failures),
            }));
    }
}

fn countersign_request(contract: &VerifiedContract) -> Request {
    Request::Countersign {
        contract: contract.id(),
        signature: contract.buyer_signature(),
    }
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Flavors { .. } => "flavors",
        Response::Reserved { .. } => "reserved",
        Response::Offer { .. } => "offer",
        Response::Countersigned { .. } => "countersigned",
        Response::Terminated { .. } => "terminated",
        Response::Error(_) => "error",
    }
}
