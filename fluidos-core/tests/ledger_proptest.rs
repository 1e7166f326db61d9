//! The ledger against a trivially correct reference model: random interleavings
//! of reserve, purchase, countersign, expiry, terminate, capacity changes and
//! crash-restarts (through records encoded as CBOR and folded as the store does).
//! Every step must succeed or fail exactly as the model says, and the
//! invariants are checked after every step.
//!
//! A step is *effective* when it reached the ledger (a call that changes or queries
//! it, followed by the invariant check); steps that found nothing to act on (a
//! purchase with no reservation yet, say) are not counted. One run is 1 000
//! generated schedules of 12–20 steps, and must reach at least 10 000 effective
//! steps in all; the counts are printed.
#![allow(clippy::unwrap_used)]

mod ledger_support;

use std::collections::BTreeMap;

use fluidos_contracts::rear::ErrorCode;
use fluidos_contracts::{
    BuyerTerms, ContractId, Nonce, ReservationId, Resources, SecretKey, Selector, Signed,
    Termination, Timestamp, VerifiedOffer,
};
use fluidos_core::ledger::Ledger;
use fluidos_core::store::{LiveSet, Record};
use ledger_support::*;
use proptest::prelude::*;

const BUYERS: usize = 4;
const DURATION_MS: u64 = 50_000;
const TTL_MS: u64 = 30_000;
const MAX_HOLDS: usize = 3;

fn sizes() -> [Resources; 8] {
    [
        cpu_mem(1000, 1),
        cpu_mem(2000, 2),
        cpu_mem(3000, 1),
        cpu_mem(4000, 8),
        cpu_mem(1000, 0),
        cpu_mem(1500, 1), // off step
        cpu_mem(500, 1),  // below min
        Resources::ZERO,  // empty
    ]
}

fn capacities() -> [Resources; 4] {
    [
        cpu_mem(8000, 16),
        cpu_mem(4000, 8),
        cpu_mem(2000, 2),
        cpu_mem(16000, 32),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        buyer: usize,
        size: usize,
        nonce: u8,
    },
    /// `buyer: None` sends as the reservation's own buyer; `recent` picks among
    /// the last three reservations or offers instead of all of them.
    Purchase {
        buyer: Option<usize>,
        pick: usize,
        recent: bool,
        cheap: bool,
    },
    /// Reserve and purchase in one request.
    ReserveAndPurchase {
        buyer: usize,
        size: usize,
        nonce: u8,
        cheap: bool,
    },
    Countersign {
        buyer: Option<usize>,
        pick: usize,
        recent: bool,
        forge: bool,
    },
    Advance {
        ms: u64,
    },
    Terminate {
        who: usize,
        pick: usize,
    },
    SetCapacity {
        idx: usize,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..BUYERS, 0..8usize, 0..4u8).prop_map(|(buyer, size, nonce)| Op::Reserve { buyer, size, nonce }),
        8 => (prop::option::weighted(0.15, 0..BUYERS), any::<usize>(), prop::bool::weighted(0.8), prop::bool::weighted(0.1))
            .prop_map(|(buyer, pick, recent, cheap)| Op::Purchase { buyer, pick, recent, cheap }),
        6 => (0..BUYERS, 0..8usize, 0..4u8, prop::bool::weighted(0.1))
            .prop_map(|(buyer, size, nonce, cheap)| Op::ReserveAndPurchase { buyer, size, nonce, cheap }),
        8 => (prop::option::weighted(0.15, 0..BUYERS), any::<usize>(), prop::bool::weighted(0.8), prop::bool::weighted(0.1))
            .prop_map(|(buyer, pick, recent, forge)| Op::Countersign { buyer, pick, recent, forge }),
        4 => (0..40_000u64).prop_map(|ms| Op::Advance { ms }),
        2 => (0..BUYERS + 2, any::<usize>()).prop_map(|(who, pick)| Op::Terminate { who, pick }),
        1 => (0..4usize).prop_map(|idx| Op::SetCapacity { idx }),
        1 => Just(Op::Restart),
    ]
}

// ----- the reference model -----------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Reserved {
        expires: Timestamp,
    },
    Offered {
        contract: ContractId,
        expires: Timestamp,
    },
    Active {
        contract: ContractId,
        until: Timestamp,
    },
}

#[derive(Clone, Copy, Debug)]
struct Deal {
    buyer: usize,
    partition: Resources,
    nonce: u8,
    stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gone {
    ReservationExpired,
    OfferExpired,
    Ended,
    Terminated,
}

#[derive(Default)]
struct Model {
    capacity: Resources,
    deals: BTreeMap<ReservationId, Deal>,
    /// Ended deals, by reservation and (when it got that far) by contract.
    gone: BTreeMap<ReservationId, (usize, Gone)>,
    gone_contracts: BTreeMap<ContractId, ReservationId>,
    /// Set when the capacity was cut below what is committed.
    overcommit_allowed: bool,
}

impl Model {
    fn committed(&self) -> Resources {
        self.deals.values().fold(Resources::ZERO, |acc, d| {
            acc.checked_add(&d.partition).unwrap()
        })
    }

    fn remaining(&self) -> Resources {
        let c = self.committed();
        if c.fits_within(&self.capacity) {
            self.capacity.checked_sub(&c).unwrap()
        } else {
            Resources::ZERO
        }
    }

    fn advance(&mut self, now: Timestamp) {
        let due: Vec<ReservationId> = self
            .deals
            .iter()
            .filter(|(_, d)| match d.stage {
                Stage::Reserved { expires } | Stage::Offered { expires, .. } => expires <= now,
                Stage::Active { until, .. } => until <= now,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let d = self.deals.remove(&id).unwrap();
            let (kind, contract) = match d.stage {
                Stage::Reserved { .. } => (Gone::ReservationExpired, None),
                Stage::Offered { contract, .. } => (Gone::OfferExpired, Some(contract)),
                Stage::Active { contract, .. } => (Gone::Ended, Some(contract)),
            };
            self.gone.insert(id, (d.buyer, kind));
            if let Some(c) = contract {
                self.gone_contracts.insert(c, id);
            }
        }
    }

    fn contract_deal(&self, c: &ContractId) -> Option<(ReservationId, Deal)> {
        self.deals.iter().find_map(|(id, d)| match d.stage {
            Stage::Offered { contract, .. } | Stage::Active { contract, .. } if contract == *c => {
                Some((*id, *d))
            }
            _ => None,
        })
    }

    fn holds(&self, buyer: usize) -> usize {
        self.deals
            .values()
            .filter(|d| d.buyer == buyer && !matches!(d.stage, Stage::Active { .. }))
            .count()
    }

    /// What `reserve` must answer: `Ok(Some(id))` for an idempotent repeat,
    /// `Ok(None)` for a new reservation.
    fn reserve(
        &self,
        buyer: usize,
        p: Resources,
        nonce: u8,
    ) -> Result<Option<ReservationId>, ErrorCode> {
        if let Some((id, d)) = self
            .deals
            .iter()
            .find(|(_, d)| d.buyer == buyer && d.nonce == nonce)
        {
            return if d.partition == p {
                Ok(Some(*id))
            } else {
                Err(ErrorCode::Replay)
            };
        }
        if self.holds(buyer) >= MAX_HOLDS {
            return Err(ErrorCode::RateLimited);
        }
        if p.is_zero() {
            return Err(ErrorCode::InvalidPartition);
        }
        let (min, step) = (cpu_mem(1000, 1).as_array(), cpu_mem(1000, 1).as_array());
        for (i, q) in p.as_array().into_iter().enumerate() {
            if q != 0 && (q < min[i] || (step[i] != 0 && (q - min[i]) % step[i] != 0)) {
                return Err(ErrorCode::InvalidPartition);
            }
        }
        if !p.fits_within(&self.remaining()) {
            return Err(ErrorCode::InsufficientCapacity);
        }
        Ok(None)
    }

    fn purchase(
        &self,
        buyer: usize,
        id: &ReservationId,
        cheap: bool,
    ) -> Result<Option<ContractId>, ErrorCode> {
        let Some(d) = self.deals.get(id) else {
            return Err(match self.gone.get(id) {
                None => ErrorCode::UnknownReservation,
                Some((b, _)) if *b != buyer => ErrorCode::NotAuthorised,
                Some((_, Gone::ReservationExpired | Gone::OfferExpired)) => {
                    ErrorCode::ReservationExpired
                }
                Some(_) => ErrorCode::Replay,
            });
        };
        if d.buyer != buyer {
            return Err(ErrorCode::NotAuthorised);
        }
        match d.stage {
            Stage::Offered { contract, .. } => Ok(Some(contract)),
            Stage::Active { .. } => Err(ErrorCode::Replay),
            Stage::Reserved { .. } if cheap => Err(ErrorCode::PriceNotAccepted),
            Stage::Reserved { .. } => Ok(None),
        }
    }

    fn countersign(
        &self,
        buyer: usize,
        c: &ContractId,
        forge: bool,
    ) -> Result<ReservationId, ErrorCode> {
        let Some((id, d)) = self.contract_deal(c) else {
            return Err(
                match self.gone_contracts.get(c).and_then(|r| self.gone.get(r)) {
                    None => ErrorCode::UnknownContract,
                    Some((b, _)) if *b != buyer => ErrorCode::NotAuthorised,
                    Some((_, Gone::OfferExpired)) => ErrorCode::ReservationExpired,
                    Some(_) => ErrorCode::Replay,
                },
            );
        };
        if d.buyer != buyer {
            return Err(ErrorCode::NotAuthorised);
        }
        match d.stage {
            Stage::Active { .. } => Err(ErrorCode::Replay),
            _ if forge => Err(ErrorCode::BadSignature),
            _ => Ok(id),
        }
    }

    /// `who`: a buyer index, `BUYERS` for the provider, `BUYERS + 1` for a stranger.
    fn terminate(&self, who: usize, c: &ContractId) -> Result<ReservationId, ErrorCode> {
        let party = |buyer: usize| who == buyer || who == BUYERS;
        let Some((id, d)) = self.contract_deal(c) else {
            return Err(
                match self.gone_contracts.get(c).and_then(|r| self.gone.get(r)) {
                    None => ErrorCode::UnknownContract,
                    Some((b, _)) if !party(*b) => ErrorCode::NotAuthorised,
                    Some((_, Gone::Ended | Gone::Terminated)) => ErrorCode::Replay,
                    Some(_) => ErrorCode::UnknownContract,
                },
            );
        };
        if !party(d.buyer) {
            return Err(ErrorCode::NotAuthorised);
        }
        Ok(id)
    }
}

// ----- the harness -------------------------------------------------------------

struct World {
    provider: SecretKey,
    buyers: Vec<SecretKey>,
    stranger: SecretKey,
    ledger: Ledger,
    model: Model,
    /// What the store would hold: records encoded, decoded and folded.
    disk: LiveSet,
    now: Timestamp,
    capacity: Resources,
    restarts: u64,
    reservations: Vec<ReservationId>,
    offers: Vec<VerifiedOffer>,
    owner: BTreeMap<ReservationId, usize>,
    /// Steps attempted, including those with nothing to act on.
    steps: usize,
    /// Steps that reached the ledger and were checked against the model.
    effective: usize,
}

/// An index into a list of `len`: one of the last three when `recent`.
fn choose(len: usize, pick: usize, recent: bool) -> usize {
    if recent {
        len - 1 - pick % len.min(3)
    } else {
        pick % len
    }
}

fn cfg(capacity: Resources, seed: u64) -> fluidos_core::ledger::LedgerConfig {
    let mut c = config(capacity);
    c.reservation_ttl_ms = TTL_MS;
    c.offer_ttl_ms = TTL_MS;
    c.max_reservations_per_buyer = MAX_HOLDS;
    c.id_seed = Some(seed);
    c
}

impl World {
    fn new() -> Self {
        let capacity = capacities()[0];
        Self {
            provider: key(100),
            buyers: (0..BUYERS as u8).map(|i| key(i + 1)).collect(),
            stranger: key(99),
            ledger: Ledger::new(key(100), cfg(capacity, 0), T0),
            model: Model {
                capacity,
                ..Model::default()
            },
            disk: LiveSet::new(),
            now: T0,
            capacity,
            restarts: 0,
            reservations: Vec::new(),
            offers: Vec::new(),
            owner: BTreeMap::new(),
            steps: 0,
            effective: 0,
        }
    }

    fn terms(&self, buyer: usize, cheap: bool) -> BuyerTerms {
        BuyerTerms {
            max_price_micros: if cheap { 0 } else { 10_000_000 },
            duration_ms: DURATION_MS,
            ..buyer_terms(buyer as u8 + 1)
        }
    }

    /// Persists what the ledger produced, through CBOR, as the store would.
    fn persist(&mut self) {
        let records = self.ledger.take_records();
        let mut bytes = Vec::new();
        ciborium::into_writer(&records, &mut bytes).unwrap();
        let back: Vec<Record> = ciborium::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(back, records);
        for r in &back {
            self.disk.apply(r);
        }
    }

    fn step(&mut self, op: &Op) {
        self.steps += 1;
        self.now = self.now.plus_ms(1);
        let now = self.now;
        let mut sold = false;
        match *op {
            Op::Reserve { buyer, size, nonce } => {
                let p = sizes()[size];
                self.model.advance(now);
                let expect = self.model.reserve(buyer, p, nonce);
                let got = self.ledger.reserve(
                    self.buyers[buyer].node_id(),
                    FLAVOR,
                    p,
                    Nonce([nonce; 16]),
                    now,
                );
                match (expect, got) {
                    (Ok(Some(id)), Ok(r)) => assert_eq!(r.id, id, "idempotent reserve"),
                    (Ok(None), Ok(r)) => {
                        assert_eq!((r.partition, r.expires_at), (p, now.plus_ms(TTL_MS)));
                        self.model.deals.insert(
                            r.id,
                            Deal {
                                buyer,
                                partition: p,
                                nonce,
                                stage: Stage::Reserved {
                                    expires: r.expires_at,
                                },
                            },
                        );
                        self.reservations.push(r.id);
                        self.owner.insert(r.id, buyer);
                        sold = true;
                    }
                    (Err(code), Err(e)) => assert_eq!(e.code, code, "{}", e.message),
                    (e, g) => panic!("reserve: model {e:?}, ledger {g:?}"),
                }
            }
            Op::Purchase {
                buyer,
                pick,
                recent,
                cheap,
            } => {
                if self.reservations.is_empty() {
                    return;
                }
                let id = self.reservations[choose(self.reservations.len(), pick, recent)];
                let buyer = buyer.unwrap_or(self.owner[&id]);
                self.model.advance(now);
                let expect = self.model.purchase(buyer, &id, cheap);
                let got = self.ledger.purchase(
                    self.buyers[buyer].node_id(),
                    id,
                    self.terms(buyer, cheap),
                    now,
                );
                match (expect, got) {
                    (Ok(Some(c)), Ok(o)) => assert_eq!(o.terms().id, c, "idempotent purchase"),
                    (Ok(None), Ok(o)) => {
                        let t = o.terms();
                        assert_eq!(
                            (t.reservation, t.buyer, t.valid_until),
                            (id, self.buyers[buyer].node_id(), now.plus_ms(DURATION_MS))
                        );
                        let d = self.model.deals.get_mut(&id).unwrap();
                        assert_eq!(t.partition, d.partition);
                        d.stage = Stage::Offered {
                            contract: t.id,
                            expires: now.plus_ms(TTL_MS),
                        };
                        self.offers.push(o);
                    }
                    (Err(code), Err(e)) => assert_eq!(e.code, code, "{}", e.message),
                    (e, g) => panic!("purchase: model {e:?}, ledger {g:?}"),
                }
            }
            Op::ReserveAndPurchase {
                buyer,
                size,
                nonce,
                cheap,
            } => {
                let p = sizes()[size];
                self.model.advance(now);
                let held = self.model.reserve(buyer, p, nonce);
                let got = self.ledger.reserve_and_purchase(
                    self.buyers[buyer].node_id(),
                    FLAVOR,
                    p,
                    Nonce([nonce; 16]),
                    self.terms(buyer, cheap),
                    now,
                );
                match (held, got) {
                    (Err(code), Err(e)) => assert_eq!(e.code, code, "{}", e.message),
                    // The nonce names a live deal: the request is a purchase of it.
                    (Ok(Some(id)), got) => match (self.model.purchase(buyer, &id, cheap), got) {
                        (Ok(Some(c)), Ok(o)) => assert_eq!(o.terms().id, c, "idempotent"),
                        (Ok(None), Ok(o)) => {
                            assert_eq!(o.terms().reservation, id);
                            self.model.deals.get_mut(&id).unwrap().stage = Stage::Offered {
                                contract: o.terms().id,
                                expires: now.plus_ms(TTL_MS),
                            };
                            self.offers.push(o);
                        }
                        (Err(code), Err(e)) => assert_eq!(e.code, code, "{}", e.message),
                        (e, g) => {
                            panic!("reserve_and_purchase of a held deal: model {e:?}, ledger {g:?}")
                        }
                    },
                    // A fresh deal: all or nothing.
                    (Ok(None), Err(e)) => {
                        assert!(cheap, "fresh reserve_and_purchase refused: {e:?}");
                        assert_eq!(e.code, ErrorCode::PriceNotAccepted);
                    }
                    (Ok(None), Ok(o)) => {
                        assert!(!cheap, "sold below the price");
                        let t = o.terms();
                        assert_eq!(
                            (t.partition, t.buyer, t.valid_until),
                            (p, self.buyers[buyer].node_id(), now.plus_ms(DURATION_MS))
                        );
                        let id = t.reservation;
                        self.model.deals.insert(
                            id,
                            Deal {
                                buyer,
                                partition: p,
                                nonce,
                                stage: Stage::Offered {
                                    contract: t.id,
                                    expires: now.plus_ms(TTL_MS),
                                },
                            },
                        );
                        self.reservations.push(id);
                        self.owner.insert(id, buyer);
                        self.offers.push(o);
                        sold = true;
                    }
                    (e, g) => panic!("reserve_and_purchase: model {e:?}, ledger {g:?}"),
                }
            }
            Op::Countersign {
                buyer,
                pick,
                recent,
                forge,
            } => {
                if self.offers.is_empty() {
                    return;
                }
                let offer = self.offers[choose(self.offers.len(), pick, recent)].clone();
                let c = offer.terms().id;
                let buyer = buyer.unwrap_or(self.owner[&offer.terms().reservation]);
                let real_buyer = self
                    .buyers
                    .iter()
                    .find(|k| k.node_id() == offer.terms().buyer)
                    .unwrap();
                let signer = if forge { &self.stranger } else { real_buyer };
                let sig = signer.sign(&fluidos_contracts::signed::signing_input(
                    fluidos_contracts::contract::CONTRACT_DOMAIN,
                    &offer.signed().terms,
                ));
                self.model.advance(now);
                let expect = self.model.countersign(buyer, &c, forge);
                let got = self
                    .ledger
                    .countersign(self.buyers[buyer].node_id(), c, sig, now);
                match (expect, got) {
                    (Ok(id), Ok(contract)) => {
                        contract.signed().verify().unwrap();
                        let until = contract.terms().valid_until;
                        self.model.deals.get_mut(&id).unwrap().stage =
                            Stage::Active { contract: c, until };
                    }
                    (Err(code), Err(e)) => assert_eq!(e.code, code, "{}", e.message),
                    (e, g) => panic!("countersign: model {e:?}, ledger {g:?}"),
                }
            }
            Op::Advance { ms } => {
                self.now = self.now.plus_ms(ms);
                self.model.advance(self.now);
                self.ledger.handle_timeout(self.now);
            }
            Op::Terminate { who, pick } => {
                if self.offers.is_empty() {
                    return;
                }
                let c = self.offers[pick % self.offers.len()].terms().id;
                let signer = match who {
                    w if w < BUYERS => &self.buyers[w],
                    w if w == BUYERS => &self.provider,
                    _ => &self.stranger,
                };
                let t = Signed::sign(
                    Termination {
                        contract: c,
                        by: signer.node_id(),
                        reason: "test".into(),
                        at: now,
                        nonce: Nonce([self.steps as u8; 16]),
                        cause: Default::default(),
                    },
                    signer,
                )
                .unwrap();
                self.model.advance(now);
                let expect = self.model.terminate(who, &c);
                let got = self.ledger.terminate(&t, now);
                match (expect, got) {
                    (Ok(id), Ok(got)) => {
                        assert_eq!(got, c);
                        let d = self.model.deals.remove(&id).unwrap();
                        self.model.gone.insert(id, (d.buyer, Gone::Terminated));
                        self.model.gone_contracts.insert(c, id);
                    }
                    (Err(code), Err(e)) => assert_eq!(e.code, code, "{}", e.message),
                    (e, g) => panic!("terminate: model {e:?}, ledger {g:?}"),
                }
            }
            Op::SetCapacity { idx } => {
                self.capacity = capacities()[idx];
                self.model.advance(now);
                self.model.capacity = self.capacity;
                self.ledger.set_capacity(self.capacity, now);
                self.model.overcommit_allowed = !self.model.committed().fits_within(&self.capacity);
            }
            Op::Restart => {
                self.persist();
                self.restarts += 1;
                self.ledger = Ledger::restore(
                    self.provider.clone(),
                    cfg(self.capacity, self.restarts),
                    self.disk.to_vec(),
                    now,
                );
                // Ended deals are remembered across the restart: their
                // tombstones are persisted with the store's ending records.
                self.model.advance(now);
            }
        }
        // Only here: every early return above left the ledger untouched.
        self.effective += 1;
        self.persist();
        while self.ledger.poll_event().is_some() {}
        self.check(sold);
    }

    fn check(&mut self, sold: bool) {
        let committed = self.ledger.committed();
        assert_eq!(
            committed,
            self.model.committed(),
            "committed after step {}",
            self.steps
        );
        assert_eq!(self.ledger.remaining(), self.model.remaining());
        if sold {
            assert!(committed.fits_within(&self.capacity), "oversold");
        }
        if !committed.fits_within(&self.capacity) {
            assert!(
                self.model.overcommit_allowed,
                "over capacity without a capacity cut"
            );
        } else {
            self.model.overcommit_allowed = false;
        }
        let count =
            |f: fn(&Stage) -> bool| self.model.deals.values().filter(|d| f(&d.stage)).count();
        assert_eq!(
            self.ledger.reservations().count(),
            count(|s| matches!(s, Stage::Reserved { .. }))
        );
        assert_eq!(
            self.ledger.offers().count(),
            count(|s| matches!(s, Stage::Offered { .. }))
        );
        assert_eq!(
            self.ledger.contracts().count(),
            count(|s| matches!(s, Stage::Active { .. }))
        );
        // What is listed is exactly what is left.
        let listed = self.ledger.list(&Selector::default(), self.now);
        let remaining = self.model.remaining();
        if remaining.is_zero() {
            assert!(listed.is_empty());
        } else {
            assert_eq!(listed[0].characteristics.resources, remaining);
        }
        // The store's view agrees with the ledger's.
        let on_disk = self
            .disk
            .records()
            .filter(|r| !matches!(r, Record::BuyerEnded { .. }))
            .count();
        assert_eq!(
            on_disk,
            self.model.deals.len(),
            "records on disk after step {}",
            self.steps
        );
    }
}

const SCHEDULES: u32 = 1_000;
const MIN_EFFECTIVE: usize = 10_000;

#[test]
fn ledger_matches_the_model() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Counted over the schedules that ran, shrinking included (a shrink only
    // happens after a failure, which fails the test anyway).
    let schedules = AtomicUsize::new(0);
    let effective = AtomicUsize::new(0);
    let attempted = AtomicUsize::new(0);
    proptest!(
        ProptestConfig {
            cases: SCHEDULES,
            max_shrink_iters: 2_000,
            // Next to this file, as `ledger_proptest.proptest-regressions`.
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        },
        |(ops in prop::collection::vec(op(), 12..=20))| {
            let mut w = World::new();
            for op in &ops {
                w.step(op);
            }
            schedules.fetch_add(1, Ordering::Relaxed);
            attempted.fetch_add(w.steps, Ordering::Relaxed);
            effective.fetch_add(w.effective, Ordering::Relaxed);
            // In the end everything lapses, and exactly everything is released.
            w.step(&Op::Advance { ms: 10 * DURATION_MS });
            prop_assert_eq!(w.ledger.committed(), Resources::ZERO);
            prop_assert!(w.disk.is_empty());
        }
    );
    let (schedules, effective, attempted) = (
        schedules.into_inner(),
        effective.into_inner(),
        attempted.into_inner(),
    );
    println!(
        "ledger proptest: {schedules} schedules, {effective} effective steps \
         ({attempted} attempted), 0 violations"
    );
    assert!(
        schedules >= SCHEDULES as usize,
        "only {schedules} schedules ran"
    );
    assert!(
        effective >= MIN_EFFECTIVE,
        "only {effective} effective steps (of {attempted}) over {schedules} schedules"
    );
}
