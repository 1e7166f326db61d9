//! The buyer's acquisition state machine against real provider ledgers,
//! in-process: a tiny loop moves requests and answers between them on a
//! simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ledger_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{FlavorId, NodeId, Nonce, SignedContract, Timestamp};
use fluidos_core::buyer::{
    Acquisition, AcquisitionEvent, AcquisitionOptions, AcquisitionRequest, CandidateFailure,
    Constraints, InvalidAnswer, Mismatch, Outcome, Ratings, rank,
};
use fluidos_core::ledger::{Ledger, LedgerConfig};
use ledger_support::*;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What a provider does with one request: answer (`Some`) or stay silent.
type Hook<'a> = dyn FnMut(NodeId, &Request, &mut Ledger, Timestamp) -> Option<Response> + 'a;

struct Net {
    ledgers: BTreeMap<NodeId, Ledger>,
    /// Peers that never answer anything.
    silent: BTreeSet<NodeId>,
    base: Instant,
    now: Instant,
    /// Contracts the buyer persisted, in order.
    persisted: Vec<SignedContract>,
}

impl Net {
    fn new() -> Self {
        let base = Instant::now();
        Self {
            ledgers: BTreeMap::new(),
            silent: BTreeSet::new(),
            base,
            now: base,
            persisted: Vec::new(),
        }
    }

    fn wall(&self) -> Timestamp {
        T0.plus_ms(self.now.duration_since(self.base).as_millis() as u64)
    }

    fn provider(&mut self, seed: u8, price_micros: u64, country: &str) -> NodeId {
        let mut t = template(FlavorId([seed; 16]), country);
        t.price.amount_micros = price_micros;
        let mut cfg = LedgerConfig::new(cpu_mem(8000, 16), vec![t], fabric(seed));
        cfg.id_seed = Some(u64::from(seed));
        let l = Ledger::new(key(seed), cfg, T0);
        let id = l.node_id();
        self.ledgers.insert(id, l);
        id
    }

    fn options(&self, ratings: Ratings) -> AcquisitionOptions {
        AcquisitionOptions::default()
            .with_request_timeout(TIMEOUT)
            .with_ratings(ratings)
            .with_wall_clock(self.wall())
            .with_nonce_seed([3; 16])
    }

    fn start(
        &self,
        request: AcquisitionRequest,
        candidates: Vec<NodeId>,
        ratings: Ratings,
    ) -> Acquisition {
        self.start_with(request, candidates, self.options(ratings))
    }

    fn start_with(
        &self,
        request: AcquisitionRequest,
        candidates: Vec<NodeId>,
        options: AcquisitionOptions,
    ) -> Acquisition {
        Acquisition::with_options(key(50), request, candidates, fabric(50), options, self.now)
    }

    /// Runs until `Done` or `Failed`, returning it.
    fn drive(&mut self, acq: &mut Acquisition, hook: &mut Hook<'_>) -> AcquisitionEvent {
        for _ in 0..1_000 {
            let mut progressed = false;
            let mut answers = Vec::new();
            while let Some((to, request)) = acq.poll_transmit() {
                progressed = true;
                if self.silent.contains(&to) {
                    continue;
                }
                let wall = self.wall();
                match self.ledgers.get_mut(&to) {
                    Some(ledger) => {
                        if let Some(answer) = hook(to, &request, ledger, wall) {
                            answers.push((to, answer));
                        }
                    }
                    None => acq.handle_failure(to, "no route to peer", self.now),
                }
            }
            for (from, answer) in answers {
                acq.handle_response(from, answer, self.now);
            }
            while let Some(event) = acq.poll_event() {
                progressed = true;
                match event {
                    AcquisitionEvent::Persist(contract) => {
                        // Persist before the countersignature leaves.
                        assert!(
                            acq.poll_transmit().is_none(),
                            "countersign sent before persisting"
                        );
                        self.persisted.push(contract.signed().clone());
                        acq.handle_persisted(self.now);
                    }
                    e @ (AcquisitionEvent::Done(_) | AcquisitionEvent::Failed(_)) => {
                        assert!(acq.is_finished());
                        return e;
                    }
                    _ => {}
                }
            }
            if !progressed {
                let next = acq.poll_timeout().expect("stalled with no timer");
                assert!(next >= self.now, "timer in the past");
                self.now = next;
                acq.handle_timeout(self.now);
            }
        }
        panic!("acquisition does not finish");
    }
}

fn answer(
    from: NodeId,
) -> impl FnMut(NodeId, &Request, &mut Ledger, Timestamp) -> Option<Response> {
    move |_, request, ledger, wall| Some(ledger.handle(from, request.clone(), wall).0)
}

fn want(cpu: u64, mem_gib: u64) -> AcquisitionRequest {
    AcquisitionRequest {
        resources: cpu_mem(cpu, mem_gib),
        constraints: Constraints::default(),
        duration_ms: 3_600_000,
    }
}

fn buyer() -> NodeId {
    key(50).node_id()
}

fn done(e: AcquisitionEvent) -> fluidos_contracts::VerifiedContract {
    match e {
        AcquisitionEvent::Done(c) => *c,
        other => panic!("expected Done, got {other:?}"),
    }
}

#[test]
fn buys_the_cheapest_and_both_sides_hold_the_same_contract() {
    let mut net = Net::new();
    let dear = net.provider(1, 2_000_000, "IT");
    let cheap = net.provider(2, 1_000_000, "DE");
    let mut acq = net.start(want(2000, 2), vec![dear, cheap], Ratings::new());
    let c = done(net.drive(&mut acq, &mut answer(buyer())));
    assert_eq!(c.terms().provider, cheap);
    assert_eq!(c.terms().buyer, buyer());
    assert_eq!(c.terms().partition, cpu_mem(2000, 2));
    assert_eq!(c.terms().buyer_fabric, fabric(50));
    // The provider holds the same contract with both signatures; a third party
    // verifies the bytes.
    assert_eq!(net.ledgers[&cheap].contract(&c.id()), Some(&c));
    assert_eq!(
        &SignedContract::from_bytes(&c.signed().to_bytes().unwrap())
            .unwrap()
            .verify()
            .unwrap(),
        &c
    );
    assert_eq!(net.persisted, vec![c.signed().clone()]);
    assert_eq!(
        net.ledgers[&dear].reservations().count(),
        0,
        "the dearer one was never reserved"
    );
}

#[test]
fn falls_back_when_the_best_provider_refuses() {
    let mut net = Net::new();
    let best = net.provider(1, 500_000, "IT");
    let next = net.provider(2, 900_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![best, next], Ratings::new());
    // Between listing and reserving, someone else buys all of `best`.
    let mut hook = |to: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        if to == best
            && matches!(
                request,
                Request::Reserve { .. } | Request::ReserveAndPurchase { .. }
            )
        {
            ledger
                .reserve(
                    key(77).node_id(),
                    FlavorId([1; 16]),
                    cpu_mem(8000, 16),
                    Nonce([7; 16]),
                    wall,
                )
                .unwrap();
        }
        Some(ledger.handle(buyer(), request.clone(), wall).0)
    };
    let c = done(net.drive(&mut acq, &mut hook));
    assert_eq!(c.terms().provider, next);
}

/// Records the kind of every request that reaches a provider, then answers it.
fn logging<'a>(
    from: NodeId,
    log: &'a mut Vec<(NodeId, &'static str)>,
) -> impl FnMut(NodeId, &Request, &mut Ledger, Timestamp) -> Option<Response> + 'a {
    move |to, request, ledger, wall| {
        log.push((to, request.kind()));
        Some(ledger.handle(from, request.clone(), wall).0)
    }
}

#[test]
fn one_request_reserves_and_purchases_and_two_step_still_works() {
    let mut net = Net::new();
    let p = net.provider(1, 1_000_000, "IT");
    let mut log = Vec::new();
    let mut acq = net.start(want(1000, 1), vec![p], Ratings::new());
    let c = done(net.drive(&mut acq, &mut logging(buyer(), &mut log)));
    let kinds: Vec<&str> = log.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        kinds,
        ["list_flavors", "reserve_and_purchase", "countersign"]
    );
    assert_eq!(net.ledgers[&p].contract(&c.id()), Some(&c));

    // The FLUIDOS order, reserve then purchase, on request.
    let mut log = Vec::new();
    let options = net
        .options(Ratings::new())
        .with_reserve_first(true)
        .with_nonce_seed([4; 16]);
    let mut acq = net.start_with(want(1000, 1), vec![p], options);
    let c = done(net.drive(&mut acq, &mut logging(buyer(), &mut log)));
    let kinds: Vec<&str> = log.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        kinds,
        ["list_flavors", "reserve", "purchase", "countersign"]
    );
    assert_eq!(net.ledgers[&p].contract(&c.id()), Some(&c));
}

/// Drives an acquisition and returns what it listed, by provider.
fn listed_by(
    net: &mut Net,
    acq: &mut Acquisition,
) -> BTreeMap<NodeId, Vec<fluidos_contracts::Verified<fluidos_contracts::Flavor>>> {
    let mut listed = BTreeMap::new();
    let mut hook = answer(buyer());
    // Drain Listed events as the driver would, then let `drive` finish.
    while let Some((to, request)) = acq.poll_transmit() {
        let wall = net.wall();
        let response = hook(to, &request, net.ledgers.get_mut(&to).unwrap(), wall).unwrap();
        acq.handle_response(to, response, net.now);
        while let Some(event) = acq.poll_event() {
            if let AcquisitionEvent::Listed { provider, flavors } = event {
                listed.insert(provider, flavors);
            }
        }
        if !listed.is_empty() {
            break;
        }
    }
    listed
}

#[test]
fn known_offers_skip_listing_and_stale_ones_are_listed_afresh() {
    let mut net = Net::new();
    let p = net.provider(1, 1_000_000, "IT");
    let q = net.provider(2, 2_000_000, "IT");
    // A first acquisition lists both and reports what each listed.
    let mut first = net.start(want(1000, 1), vec![p, q], Ratings::new());
    let mut known = BTreeMap::new();
    for _ in 0..2 {
        known.append(&mut listed_by(&mut net, &mut first));
    }
    assert_eq!(
        known.keys().copied().collect::<BTreeSet<_>>(),
        [p, q].into()
    );
    assert_eq!(known[&p][0].owner, p);

    // Known offers: nobody is listed, the cheapest sells at once.
    let mut log = Vec::new();
    let options = net.options(Ratings::new()).with_known_offers(known.clone());
    let mut acq = net.start_with(want(1000, 1), vec![p, q], options);
    let c = done(net.drive(&mut acq, &mut logging(buyer(), &mut log)));
    assert_eq!(c.terms().provider, p);
    assert_eq!(
        log,
        [(p, "reserve_and_purchase"), (p, "countersign")],
        "no listing"
    );

    // Stale knowledge: meanwhile `p` sold out and `q` withdrew its flavor. Both
    // refuse; both are listed afresh once; `p` has nothing, `q` has nothing:
    // the acquisition fails after exactly one fresh listing round.
    let rest = net.ledgers[&p].remaining();
    let wall = net.wall();
    net.ledgers
        .get_mut(&p)
        .unwrap()
        .reserve(
            key(77).node_id(),
            FlavorId([1; 16]),
            rest,
            Nonce([9; 16]),
            wall,
        )
        .unwrap();
    net.ledgers
        .get_mut(&q)
        .unwrap()
        .remove_template(&FlavorId([2; 16]));
    let mut log = Vec::new();
    let options = net
        .options(Ratings::new())
        .with_known_offers(known.clone())
        .with_nonce_seed([5; 16]);
    let mut acq = net.start_with(want(1000, 1), vec![p, q], options);
    let AcquisitionEvent::Failed(_) = net.drive(&mut acq, &mut logging(buyer(), &mut log)) else {
        panic!("nothing is left to sell")
    };
    let lists = log.iter().filter(|(_, k)| *k == "list_flavors").count();
    assert_eq!(
        lists, 2,
        "each known provider listed afresh exactly once: {log:?}"
    );

    // Stale but recoverable: `q` is back with a new flavor id; its fresh listing
    // sells.
    let mut t = template(FlavorId([3; 16]), "IT");
    t.price.amount_micros = 2_000_000;
    net.ledgers.get_mut(&q).unwrap().set_template(t);
    let mut log = Vec::new();
    let options = net
        .options(Ratings::new())
        .with_known_offers(known)
        .with_nonce_seed([6; 16]);
    let mut acq = net.start_with(want(1000, 1), vec![p, q], options);
    let c = done(net.drive(&mut acq, &mut logging(buyer(), &mut log)));
    assert_eq!(c.terms().provider, q);
    assert_eq!(c.terms().flavor.id, FlavorId([3; 16]));
}

#[test]
fn a_silent_candidate_does_not_stall_the_result() {
    let mut net = Net::new();
    let silent = net.provider(1, 100_000, "IT");
    net.silent.insert(silent);
    let good = net.provider(2, 900_000, "IT");
    let unknown = key(88).node_id(); // not on the network at all
    let start = net.now;
    let mut acq = net.start(want(1000, 1), vec![silent, good, unknown], Ratings::new());
    let c = done(net.drive(&mut acq, &mut answer(buyer())));
    assert_eq!(c.terms().provider, good);
    // One listing timeout, and no more, on the simulated clock.
    assert_eq!(net.now, start + TIMEOUT);
}

#[test]
fn a_provider_that_goes_silent_after_listing_is_skipped() {
    let mut net = Net::new();
    let flaky = net.provider(1, 100_000, "IT");
    let good = net.provider(2, 900_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![flaky, good], Ratings::new());
    let mut hook = |to: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        let response = ledger.handle(buyer(), request.clone(), wall).0;
        // The flaky provider reserves, then never answers again.
        (to != flaky || matches!(request, Request::ListFlavors { .. })).then_some(response)
    };
    let c = done(net.drive(&mut acq, &mut hook));
    assert_eq!(c.terms().provider, good);
}

#[test]
fn a_lost_countersign_answer_is_resent_and_replay_counts_as_success() {
    let mut net = Net::new();
    let p = net.provider(1, 1_000_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![p], Ratings::new());
    let mut dropped = 0;
    let mut hook = |_: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        let response = ledger.handle(buyer(), request.clone(), wall).0;
        if matches!(request, Request::Countersign { .. }) && dropped == 0 {
            dropped += 1;
            return None; // the provider activated it, the answer is lost
        }
        Some(response)
    };
    let c = done(net.drive(&mut acq, &mut hook));
    assert_eq!(dropped, 1);
    assert_eq!(net.ledgers[&p].contract(&c.id()), Some(&c));
}

#[test]
fn a_lost_offer_is_asked_for_once_more_and_the_same_offer_comes_back() {
    let mut net = Net::new();
    let p = net.provider(1, 1_000_000, "IT");
    let other = net.provider(2, 2_000_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![p, other], Ratings::new());
    let mut offers = Vec::new();
    let start = net.now;
    let mut hook = |to: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        let response = ledger.handle(buyer(), request.clone(), wall).0;
        if let Response::Offer { contract } = &response {
            offers.push(contract.clone());
            if offers.len() == 1 {
                return None; // the provider made the offer; the answer is lost
            }
        }
        assert!(
            to == p || matches!(request, Request::ListFlavors { .. }),
            "the buyer moved on to the other provider"
        );
        Some(response)
    };
    let c = done(net.drive(&mut acq, &mut hook));
    // Asked twice with the same nonce: the provider answered the same offer,
    // and exactly one partition is held.
    assert_eq!(offers.len(), 2);
    assert_eq!(offers[0], offers[1]);
    assert_eq!(c.terms().provider, p);
    assert_eq!(net.ledgers[&p].committed(), cpu_mem(1000, 1));
    assert_eq!(net.now, start + TIMEOUT, "one timeout, then the repeat");

    // A provider that stays silent is given up after the repeat.
    let mut net = Net::new();
    let silent = net.provider(1, 1_000_000, "IT");
    let good = net.provider(2, 2_000_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![silent, good], Ratings::new());
    let mut asked = 0;
    let mut hook = |to: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        let response = ledger.handle(buyer(), request.clone(), wall).0;
        if to == silent && matches!(request, Request::ReserveAndPurchase { .. }) {
            asked += 1;
            return None;
        }
        Some(response)
    };
    let c = done(net.drive(&mut acq, &mut hook));
    assert_eq!(asked, 2);
    assert_eq!(c.terms().provider, good);
}

#[test]
fn an_offer_with_changed_terms_is_refused() {
    let mut net = Net::new();
    let cheat = net.provider(1, 100_000, "IT");
    let honest = net.provider(2, 900_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![cheat, honest], Ratings::new());
    let mut hook = |to: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        let response = ledger.handle(buyer(), request.clone(), wall).0;
        match response {
            // The cheat re-signs the terms with a higher price.
            Response::Offer { contract } if to == cheat => {
                let mut terms = contract.verify_offer().unwrap().terms().clone();
                terms.price.amount_micros *= 10;
                Some(Response::Offer {
                    contract: SignedContract::offer(terms, &key(1))
                        .unwrap()
                        .signed()
                        .clone(),
                })
            }
            other => Some(other),
        }
    };
    let c = done(net.drive(&mut acq, &mut hook));
    assert_eq!(c.terms().provider, honest);
    assert_eq!(net.ledgers[&cheat].contracts().count(), 0);
}

/// An unacceptable answer is reported as a typed `InvalidAnswer`, with the contract
/// error as its source when a signature is at fault.
#[test]
fn invalid_answers_are_typed_per_problem() {
    type Tamper = fn(SignedContract) -> SignedContract;
    let raise_price: Tamper = |contract| {
        let mut terms = contract.verify_offer().unwrap().terms().clone();
        terms.price.amount_micros *= 10;
        SignedContract::offer(terms, &key(1))
            .unwrap()
            .signed()
            .clone()
    };
    let break_signature: Tamper = |mut contract| {
        contract.terms.push(0);
        contract
    };
    for (tamper, check) in [
        (
            raise_price,
            (|r: &InvalidAnswer| matches!(r, InvalidAnswer::Terms(Mismatch::Price))) as fn(&_) -> _,
        ),
        (break_signature, |r: &InvalidAnswer| {
            matches!(r, InvalidAnswer::OfferDoesNotVerify(_))
                && std::error::Error::source(r).is_some()
        }),
    ] {
        let mut net = Net::new();
        let p = net.provider(1, 100_000, "IT");
        let mut acq = net.start(want(1000, 1), vec![p], Ratings::new());
        let mut hook =
            |_: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| match ledger
                .handle(buyer(), request.clone(), wall)
                .0
            {
                Response::Offer { contract } => Some(Response::Offer {
                    contract: tamper(contract),
                }),
                other => Some(other),
            };
        let AcquisitionEvent::Failed(failure) = net.drive(&mut acq, &mut hook) else {
            panic!("a tampered offer was accepted")
        };
        let reason = failure
            .reasons
            .iter()
            .find_map(|(_, f)| match f {
                CandidateFailure::InvalidResponse { reason, .. } => Some(reason),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no invalid answer reported: {failure}"));
        assert!(check(reason), "{reason:?}");
        assert!(failure.to_string().contains("invalid answer"), "{failure}");
    }
}

#[test]
fn failure_says_why_per_candidate() {
    let mut net = Net::new();
    let small = net.provider(1, 1_000_000, "IT");
    let silent = net.provider(2, 1_000_000, "IT");
    net.silent.insert(silent);
    let unreachable = key(88).node_id();
    // 9 CPUs: more than anyone sells.
    let mut acq = net.start(
        want(9000, 1),
        vec![small, silent, unreachable],
        Ratings::new(),
    );
    let AcquisitionEvent::Failed(failure) = net.drive(&mut acq, &mut answer(buyer())) else {
        panic!("expected failure")
    };
    let why: BTreeMap<NodeId, &CandidateFailure> =
        failure.reasons.iter().map(|(n, w)| (*n, w)).collect();
    assert!(
        matches!(why[&small], CandidateFailure::NoSuitableFlavor { .. }),
        "{failure}"
    );
    assert!(matches!(
        why[&silent],
        CandidateFailure::TimedOut {
            request: "list_flavors"
        }
    ));
    assert!(matches!(
        why[&unreachable],
        CandidateFailure::Unreachable { .. }
    ));
    assert!(failure.to_string().contains("no answer in time"));

    // Too expensive for everyone: refused locally, never reserved.
    let mut net = Net::new();
    let p = net.provider(1, 1_000_000, "IT");
    let mut request = want(1000, 1);
    request.constraints.max_price_micros_per_hour = Some(10);
    let mut acq = net.start(request, vec![p], Ratings::new());
    assert!(matches!(
        net.drive(&mut acq, &mut answer(buyer())),
        AcquisitionEvent::Failed(_)
    ));
    assert_eq!(net.ledgers[&p].reservations().count(), 0);
}

#[test]
fn refused_countersignature_is_discarded_and_falls_back() {
    let mut net = Net::new();
    let a = net.provider(1, 100_000, "IT");
    let b = net.provider(2, 900_000, "IT");
    let mut acq = net.start(want(1000, 1), vec![a, b], Ratings::new());
    let mut discarded = Vec::new();
    let mut hook = |to: NodeId, request: &Request, ledger: &mut Ledger, wall: Timestamp| {
        if to == a && matches!(request, Request::Countersign { .. }) {
            // The offer lapsed at the provider meanwhile.
            ledger.handle_timeout(wall.plus_ms(60_000));
            return Some(
                ledger
                    .handle(buyer(), request.clone(), wall.plus_ms(60_000))
                    .0,
            );
        }
        Some(ledger.handle(buyer(), request.clone(), wall).0)
    };
    // Drive by hand to see the Discarded event.
    let c = loop {
        match net.drive_step(&mut acq, &mut hook) {
            Some(AcquisitionEvent::Discarded { contract, provider }) => {
                discarded.push((contract, provider))
            }
            Some(AcquisitionEvent::Done(c)) => break *c,
            Some(AcquisitionEvent::Failed(f)) => panic!("{f}"),
            _ => {}
        }
    };
    assert_eq!(c.terms().provider, b);
    assert_eq!(discarded.len(), 1);
    assert_eq!(discarded[0].1, a);
    assert_eq!(
        net.persisted.len(),
        2,
        "both countersigned contracts were persisted first"
    );
}

impl Net {
    /// One round of `drive`, returning the first interesting event.
    fn drive_step(
        &mut self,
        acq: &mut Acquisition,
        hook: &mut Hook<'_>,
    ) -> Option<AcquisitionEvent> {
        let mut answers = Vec::new();
        let mut progressed = false;
        while let Some((to, request)) = acq.poll_transmit() {
            progressed = true;
            let wall = self.wall();
            if let Some(ledger) = self.ledgers.get_mut(&to)
                && let Some(answer) = hook(to, &request, ledger, wall)
            {
                answers.push((to, answer));
            }
        }
        for (from, answer) in answers {
            acq.handle_response(from, answer, self.now);
        }
        let mut out = None;
        while let Some(event) = acq.poll_event() {
            progressed = true;
            match event {
                AcquisitionEvent::Persist(contract) => {
                    self.persisted.push(contract.signed().clone());
                    acq.handle_persisted(self.now);
                }
                AcquisitionEvent::Progress(_) => {}
                e => out = out.or(Some(e)),
            }
        }
        if !progressed && let Some(next) = acq.poll_timeout() {
            self.now = next;
            acq.handle_timeout(next);
        }
        out
    }
}

#[test]
fn ranking_order() {
    let mut net = Net::new();
    let a = net.provider(1, 1_000_000, "IT");
    let b = net.provider(2, 1_000_000, "DE");
    let c = net.provider(3, 1_000_000, "DE");
    let listed = |n: &NodeId, net: &Net| {
        let f = net.ledgers[n].list(&Default::default(), T0).pop().unwrap();
        (*n, f)
    };
    let offers = vec![listed(&a, &net), listed(&b, &net), listed(&c, &net)];
    let mut request = want(1000, 1);

    // All equal: deterministic tie-break by provider id.
    let (ranked, _) = rank(&request, &offers, &Ratings::new(), T0);
    let mut ids = vec![a, b, c];
    ids.sort();
    assert_eq!(ranked.iter().map(|r| r.provider).collect::<Vec<_>>(), ids);

    // Location preference beats the tie-break.
    request.constraints.preferred_country = Some("it".into());
    let (ranked, _) = rank(&request, &offers, &Ratings::new(), T0);
    assert_eq!(ranked[0].provider, a);

    // Ratings come after location.
    let mut ratings = Ratings::new();
    for _ in 0..5 {
        ratings.record(a, Outcome::Failed);
        ratings.record(c, Outcome::Delivered);
    }
    ratings.record(b, Outcome::TerminatedEarly);
    let (ranked, _) = rank(&request, &offers, &ratings, T0);
    assert_eq!(
        ranked.iter().map(|r| r.provider).collect::<Vec<_>>(),
        vec![a, c, b]
    );
    request.constraints.preferred_country = None;
    let (ranked, _) = rank(&request, &offers, &ratings, T0);
    assert_eq!(ranked[0].provider, c);

    // Price beats location and rating.
    net.ledgers.get_mut(&b).unwrap().set_template({
        let mut t = template(FlavorId([2; 16]), "DE");
        t.price.amount_micros = 10;
        t
    });
    let offers = vec![listed(&a, &net), listed(&b, &net), listed(&c, &net)];
    let (ranked, _) = rank(&request, &offers, &ratings, T0);
    assert_eq!(ranked[0].provider, b);

    // Exact fit beats price: 1.5 CPUs rounds up to 2 with a 1-CPU step, but
    // fits exactly a flavor stepping by 500m.
    let mut fine = template(FlavorId([3; 16]), "DE");
    fine.policy.step = cpu_mem(500, 1);
    fine.price.amount_micros = 5_000_000;
    net.ledgers.get_mut(&c).unwrap().set_template(fine);
    let offers = vec![listed(&a, &net), listed(&b, &net), listed(&c, &net)];
    let (ranked, _) = rank(&want(1500, 1), &offers, &ratings, T0);
    assert_eq!(ranked[0].provider, c);
    assert!(ranked[0].exact && !ranked[1].exact);

    // A flavor relayed by someone who does not own it is unsuitable.
    let relayed = vec![(a, offers[1].1.clone())];
    let (ranked, unsuitable) = rank(&request, &relayed, &ratings, T0);
    assert!(ranked.is_empty());
    assert_eq!(unsuitable.len(), 1);
}

#[test]
fn no_candidates_fails_at_once() {
    let net = Net::new();
    let mut acq = net.start(want(1000, 1), vec![buyer()], Ratings::new());
    assert!(matches!(acq.poll_event(), Some(AcquisitionEvent::Failed(f)) if f.reasons.is_empty()));
    assert!(acq.poll_transmit().is_none());
}
