//! One purchase as a state machine.

mod negotiate;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{
    FabricParams, Flavor, NodeId, Nonce, Reservation, SecretKey, Timestamp, Verified,
    VerifiedContract,
};

use super::AcquisitionRequest;
use super::events::{AcquisitionEvent, AcquisitionOptions, CandidateFailure, InvalidAnswer, Phase};
use super::rank::{RankedOffer, Unsuitable, rank};

#[derive(Debug)]
enum Listing {
    Waiting { deadline: Instant },
    Done,
}

#[derive(Debug)]
enum Stage {
    /// `ReserveAndPurchase` sent.
    Buying,
    /// `Reserve` sent (two-step negotiation).
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
    /// The reserve or purchase request in flight, kept to send it once more if
    /// its answer does not come (both are idempotent).
    in_flight: Option<Request>,
}

/// One acquisition: list → rank → reserve and purchase → persist → countersign.
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
/// silent peer delays the result by one timeout at most. Candidates whose
/// flavors the driver already knows ([`AcquisitionOptions::with_known_offers`])
/// are not asked; if every offer fails and some were known rather than listed,
/// those providers are listed once afresh and ranking starts over with what they
/// answer. Offers are tried in rank order; a refusal, a bad answer or a timeout
/// moves on to the next offer (and a provider that failed to answer is not asked
/// again). A `Replay` answer to `Countersign` is success: the provider already
/// has the countersignature.
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
    /// Candidates whose offers came from the driver, not from listing them now.
    known: BTreeSet<NodeId>,
    /// Whether the known candidates were listed afresh already.
    relisted: bool,
    /// Whether the offers are to be ranked once listing is over.
    awaiting_rank: bool,
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
        let mut options = options;
        let mut known_offers = std::mem::take(&mut options.known_offers);
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
            known: BTreeSet::new(),
            relisted: false,
            awaiting_rank: true,
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
            if let Some(flavors) = known_offers.remove(&c) {
                this.listing.insert(c, Listing::Done);
                this.known.insert(c);
                this.offers.extend(flavors.into_iter().map(|f| (c, f)));
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
            this.after_listing_step(now);
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
            Stage::Buying | Stage::Purchasing { .. } => self.on_offer_answer(response, now),
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
                let mut listed = Vec::with_capacity(flavors.len());
                for signed in flavors {
                    match signed.verify() {
                        Ok(f) => listed.push(f),
                        Err(_) => bad += 1,
                    }
                }
                self.offers.extend(listed.iter().map(|f| (from, f.clone())));
                self.events.push_back(AcquisitionEvent::Listed {
                    provider: from,
                    flavors: listed,
                });
                if bad > 0 {
                    self.failures.push((
                        from,
                        CandidateFailure::InvalidResponse {
                            request: "list_flavors",
                            reason: InvalidAnswer::BadFlavorSignatures { count: bad },
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
                    reason: InvalidAnswer::Unexpected {
                        got: response_kind(&other),
                    },
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
        if !self.awaiting_rank {
            return;
        }
        self.awaiting_rank = false;
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

    /// Lists afresh the candidates whose offers were known rather than listed,
    /// once, when every offer failed: what the driver knew may be stale. Returns
    /// whether it did.
    fn relist(&mut self, now: Instant) -> bool {
        if self.relisted || self.attempts_made >= self.opts.max_attempts {
            return false;
        }
        let stale: Vec<NodeId> = self.known.difference(&self.dead).copied().collect();
        if stale.is_empty() {
            return false;
        }
        self.relisted = true;
        // Every offer was ranked and tried or found unsuitable already.
        self.offers.clear();
        self.awaiting_rank = true;
        let selector = self.request.selector();
        let deadline = now + self.opts.request_timeout;
        for node in stale {
            self.listing.insert(node, Listing::Waiting { deadline });
            self.transmits.push_back((
                node,
                Request::ListFlavors {
                    selector: selector.clone(),
                },
            ));
        }
        self.after_listing_step(now);
        true
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
