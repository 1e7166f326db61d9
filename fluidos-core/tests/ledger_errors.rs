//! The provider ledger: the happy path, idempotency, and every bad input with
//! its typed error.
#![allow(clippy::unwrap_used)]

mod ledger_support;

use fluidos_contracts::contract::CONTRACT_DOMAIN;
use fluidos_contracts::rear::{ErrorCode, Request, Response};
use fluidos_contracts::signed::signing_input;
use fluidos_contracts::{
    ContractId, FlavorId, Nonce, ReservationId, Resources, Selector, Signed, SignedContract,
    Termination, Timestamp,
};
use fluidos_core::ledger::{Ledger, LedgerEvent};
use fluidos_core::store::Record;
use ledger_support::*;

fn code<T: std::fmt::Debug>(r: Result<T, fluidos_contracts::rear::RearError>) -> ErrorCode {
    r.unwrap_err().code
}

fn termination(
    by: &fluidos_contracts::SecretKey,
    contract: ContractId,
    n: u8,
) -> Signed<Termination> {
    Signed::sign(
        Termination {
            contract,
            by: by.node_id(),
            reason: "done".into(),
            at: T0,
            nonce: Nonce([n; 16]),
            cause: Default::default(),
        },
        by,
    )
    .unwrap()
    .signed()
    .clone()
}

#[test]
fn full_cycle_and_capacity_accounting() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let listed = l.list(&Selector::default(), T0);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].characteristics.resources, cpu_mem(8000, 16));
    let rev0 = listed[0].revision;

    let part = cpu_mem(2000, 4);
    let r = l
        .reserve(b.node_id(), FLAVOR, part, Nonce([1; 16]), T0)
        .unwrap();
    assert_eq!(l.committed(), part);
    assert_eq!(r.expires_at, T0.plus_ms(30_000));
    let offer = l
        .purchase(b.node_id(), r.id, buyer_terms(2), T0.plus_ms(1))
        .unwrap();
    let t = offer.terms();
    assert_eq!(
        (t.provider, t.buyer, t.partition),
        (l.node_id(), b.node_id(), part)
    );
    // 4 of 16 GiB is the dominant share: a quarter of 1 EUR.
    assert_eq!(t.price.amount_micros, 250_000);
    assert!(t.forwarded_via.is_empty());
    assert_eq!(t.provider_fabric, fabric(1));
    assert_eq!(t.buyer_fabric, fabric(2));

    let buyer_view = offer
        .signed()
        .verify_offer()
        .unwrap()
        .countersign(&b)
        .unwrap();
    let active = l
        .countersign(
            b.node_id(),
            t.id,
            buyer_view.buyer_signature(),
            T0.plus_ms(2),
        )
        .unwrap();
    assert_eq!(active, buyer_view);
    assert!(matches!(
        l.poll_event(),
        Some(LedgerEvent::ContractActivated { .. })
    ));
    assert_eq!(l.contracts().count(), 1);
    assert_eq!(l.committed(), part);

    // Re-listed with the remainder, at a higher revision; the price stays that of
    // the full size, so the remainder costs 3/4 of it and the same partition
    // costs exactly what it cost before.
    let listed = l.list(&Selector::default(), T0.plus_ms(3));
    assert_eq!(listed[0].characteristics.resources, cpu_mem(6000, 12));
    assert!(listed[0].revision > rev0);
    assert_eq!(listed[0].price_basis, cpu_mem(8000, 16));
    assert_eq!(listed[0].whole_price(), 750_000);
    assert_eq!(listed[0].quote(&part), 250_000);
    // Unchanged remainder: the cached signature is reused (same revision).
    let again = l.list(&Selector::default(), T0.plus_ms(4));
    assert_eq!(again[0].revision, listed[0].revision);
    assert_eq!(again[0].signed(), listed[0].signed());

    // The contract ends at valid_until and the capacity comes back exactly.
    let end = t.valid_until;
    assert_eq!(l.poll_timeout(), Some(end));
    l.handle_timeout(end);
    assert_eq!(l.committed(), Resources::ZERO);
    assert!(matches!(
        l.poll_event(),
        Some(LedgerEvent::ContractEnded { .. })
    ));
}

#[test]
fn reserve_is_idempotent_per_nonce() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2).node_id();
    let r1 = l
        .reserve(b, FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0)
        .unwrap();
    let r2 = l
        .reserve(b, FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0.plus_ms(5))
        .unwrap();
    assert_eq!(r1, r2);
    assert_eq!(l.committed(), cpu_mem(1000, 1), "held once");
    // The same nonce for another partition is a replay, not a second hold.
    let e = l.reserve(b, FLAVOR, cpu_mem(2000, 1), Nonce([1; 16]), T0);
    assert_eq!(code(e), ErrorCode::Replay);
    // Another buyer with the same nonce is independent.
    let other = l
        .reserve(
            key(3).node_id(),
            FLAVOR,
            cpu_mem(1000, 1),
            Nonce([1; 16]),
            T0,
        )
        .unwrap();
    assert_ne!(other.id, r1.id);
}

#[test]
fn partition_rules_are_enforced() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2).node_id();
    let n = Nonce([1; 16]);
    // Below the minimum of 1 CPU.
    assert_eq!(
        code(l.reserve(b, FLAVOR, cpu_mem(500, 1), n, T0)),
        ErrorCode::InvalidPartition
    );
    // Off the 1-CPU step.
    assert_eq!(
        code(l.reserve(b, FLAVOR, cpu_mem(1500, 1), n, T0)),
        ErrorCode::InvalidPartition
    );
    // Empty.
    assert_eq!(
        code(l.reserve(b, FLAVOR, Resources::ZERO, n, T0)),
        ErrorCode::InvalidPartition
    );
    // More than there is.
    assert_eq!(
        code(l.reserve(b, FLAVOR, cpu_mem(9000, 1), n, T0)),
        ErrorCode::InsufficientCapacity
    );
    assert_eq!(l.committed(), Resources::ZERO);
}

#[test]
fn unknown_expired_and_rate_limited() {
    let mut cfg = config(cpu_mem(8000, 16));
    cfg.max_reservations_per_buyer = 2;
    cfg.max_holds = 3;
    let mut expiring = template(FlavorId([2; 16]), "IT");
    expiring.not_after = Some(T0.plus_ms(10));
    cfg.templates.push(expiring);
    let mut l = Ledger::new(key(1), cfg, T0);
    let b = key(2).node_id();
    let p = cpu_mem(1000, 1);
    assert_eq!(
        code(l.reserve(b, FlavorId([9; 16]), p, Nonce([1; 16]), T0)),
        ErrorCode::UnknownFlavor
    );
    assert_eq!(
        code(l.reserve(b, FlavorId([2; 16]), p, Nonce([1; 16]), T0.plus_ms(10))),
        ErrorCode::FlavorExpired
    );
    l.reserve(b, FLAVOR, p, Nonce([1; 16]), T0).unwrap();
    l.reserve(b, FLAVOR, p, Nonce([2; 16]), T0).unwrap();
    assert_eq!(
        code(l.reserve(b, FLAVOR, p, Nonce([3; 16]), T0)),
        ErrorCode::RateLimited
    );
    // Other buyers are not affected.
    l.reserve(key(3).node_id(), FLAVOR, p, Nonce([3; 16]), T0)
        .unwrap();
    // All buyers together are bounded too.
    assert_eq!(
        code(l.reserve(key(4).node_id(), FLAVOR, p, Nonce([5; 16]), T0)),
        ErrorCode::RateLimited
    );
    // Buying from oneself is refused.
    assert_eq!(
        code(l.reserve(key(1).node_id(), FLAVOR, p, Nonce([4; 16]), T0)),
        ErrorCode::NotAuthorised
    );
    // Unknown ids.
    assert_eq!(
        code(l.purchase(b, ReservationId([9; 16]), buyer_terms(2), T0)),
        ErrorCode::UnknownReservation
    );
    assert_eq!(
        code(l.countersign(
            b,
            ContractId([9; 16]),
            fluidos_contracts::Signature([0; 64]),
            T0
        )),
        ErrorCode::UnknownContract
    );
    let t = termination(&key(2), ContractId([9; 16]), 1)
        .verify()
        .unwrap();
    assert_eq!(code(l.terminate(&t, T0)), ErrorCode::UnknownContract);
}

#[test]
fn expired_reservation_and_offer() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let p = cpu_mem(1000, 1);
    let r = l
        .reserve(b.node_id(), FLAVOR, p, Nonce([1; 16]), T0)
        .unwrap();
    let late = r.expires_at;
    assert_eq!(
        code(l.purchase(b.node_id(), r.id, buyer_terms(2), late)),
        ErrorCode::ReservationExpired
    );
    assert_eq!(l.committed(), Resources::ZERO, "released");
    assert!(matches!(
        l.poll_event(),
        Some(LedgerEvent::ReservationExpired { .. })
    ));

    let r = l
        .reserve(b.node_id(), FLAVOR, p, Nonce([2; 16]), late)
        .unwrap();
    let offer = l.purchase(b.node_id(), r.id, buyer_terms(2), late).unwrap();
    let sig = offer.clone().countersign(&b).unwrap().buyer_signature();
    let after = late.plus_ms(30_000);
    assert_eq!(
        code(l.countersign(b.node_id(), offer.terms().id, sig, after)),
        ErrorCode::ReservationExpired
    );
    assert_eq!(
        code(l.purchase(b.node_id(), r.id, buyer_terms(2), after)),
        ErrorCode::ReservationExpired
    );
    assert_eq!(l.committed(), Resources::ZERO);
}

#[test]
fn purchase_checks_buyer_price_and_replays() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let (b, mallory) = (key(2), key(3));
    let r = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(2000, 2), Nonce([1; 16]), T0)
        .unwrap();
    // Someone else's reservation.
    assert_eq!(
        code(l.purchase(mallory.node_id(), r.id, buyer_terms(3), T0)),
        ErrorCode::NotAuthorised
    );
    // Too cheap, wrong currency, zero duration.
    let mut cheap = buyer_terms(2);
    cheap.max_price_micros = 249_999;
    assert_eq!(
        code(l.purchase(b.node_id(), r.id, cheap, T0)),
        ErrorCode::PriceNotAccepted
    );
    let mut usd = buyer_terms(2);
    usd.currency = "USD".into();
    assert_eq!(
        code(l.purchase(b.node_id(), r.id, usd, T0)),
        ErrorCode::PriceNotAccepted
    );
    let mut zero = buyer_terms(2);
    zero.duration_ms = 0;
    assert_eq!(
        code(l.purchase(b.node_id(), r.id, zero, T0)),
        ErrorCode::Malformed
    );
    // Durations are clamped to the configured maximum.
    let mut long = buyer_terms(2);
    long.duration_ms = u64::MAX;
    let offer = l.purchase(b.node_id(), r.id, long, T0).unwrap();
    assert_eq!(
        offer.terms().valid_until,
        T0.plus_ms(l.config().max_contract_ms)
    );
    // Purchase again before the countersignature: the same offer.
    let again = l
        .purchase(b.node_id(), r.id, buyer_terms(2), T0.plus_ms(1))
        .unwrap();
    assert_eq!(again, offer);
    let sig = offer.clone().countersign(&b).unwrap().buyer_signature();
    l.countersign(b.node_id(), offer.terms().id, sig, T0.plus_ms(2))
        .unwrap();
    // After it: replays.
    assert_eq!(
        code(l.purchase(b.node_id(), r.id, buyer_terms(2), T0.plus_ms(3))),
        ErrorCode::Replay
    );
    assert_eq!(
        code(l.countersign(b.node_id(), offer.terms().id, sig, T0.plus_ms(3))),
        ErrorCode::Replay
    );
    assert_eq!(l.committed(), cpu_mem(2000, 2));
}

#[test]
fn forged_countersignatures_are_rejected() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let (b, mallory) = (key(2), key(3));
    let r = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0)
        .unwrap();
    let offer = l.purchase(b.node_id(), r.id, buyer_terms(2), T0).unwrap();
    let id = offer.terms().id;
    // Mallory's signature over the right bytes, sent by the buyer.
    let forged = mallory.sign(&signing_input(CONTRACT_DOMAIN, &offer.signed().terms));
    assert_eq!(
        code(l.countersign(b.node_id(), id, forged, T0)),
        ErrorCode::BadSignature
    );
    // The buyer's signature under another domain.
    let wrong_domain = b.sign(&signing_input("fluidos/terminate/1", &offer.signed().terms));
    assert_eq!(
        code(l.countersign(b.node_id(), id, wrong_domain, T0)),
        ErrorCode::BadSignature
    );
    // A valid signature, sent by someone who is not the buyer.
    let good = offer.clone().countersign(&b).unwrap().buyer_signature();
    assert_eq!(
        code(l.countersign(mallory.node_id(), id, good, T0)),
        ErrorCode::NotAuthorised
    );
    assert_eq!(l.contracts().count(), 0);
    l.countersign(b.node_id(), id, good, T0).unwrap();
    assert_eq!(l.contracts().count(), 1);
}

#[test]
fn termination_rules() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let mut journal = Vec::new();
    let (p, b, mallory) = (key(1), key(2), key(3));
    let r = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0)
        .unwrap();
    let offer = l.purchase(b.node_id(), r.id, buyer_terms(2), T0).unwrap();
    let id = offer.terms().id;
    let sig = offer.clone().countersign(&b).unwrap().buyer_signature();
    l.countersign(b.node_id(), id, sig, T0).unwrap();
    assert_eq!(l.take_records().len(), 3, "reserved, offered, activated");

    // A non-party's signed termination.
    let resp = ask(
        &mut l,
        &mut journal,
        mallory.node_id(),
        Request::Terminate {
            termination: termination(&mallory, id, 1),
        },
        T0,
    );
    assert!(matches!(resp, Response::Error(e) if e.code == ErrorCode::NotAuthorised));
    // A termination claiming to be the buyer's but signed by mallory.
    let good = termination(&b, id, 2);
    let forged = Signed::<Termination>::from_parts(
        good.payload().to_vec(),
        mallory.sign(&signing_input("fluidos/terminate/1", good.payload())),
    );
    let resp = ask(
        &mut l,
        &mut journal,
        mallory.node_id(),
        Request::Terminate {
            termination: forged,
        },
        T0,
    );
    assert!(matches!(resp, Response::Error(e) if e.code == ErrorCode::BadSignature));
    assert_eq!(l.contracts().count(), 1);
    assert!(journal.is_empty(), "refusals persist nothing");

    // The provider itself may terminate; the records say so.
    let resp = ask(
        &mut l,
        &mut journal,
        b.node_id(),
        Request::Terminate {
            termination: termination(&p, id, 3),
        },
        T0,
    );
    assert_eq!(resp, Response::Terminated { contract: id });
    assert_eq!(l.committed(), Resources::ZERO);
    assert!(matches!(
        journal.last(),
        Some(Record::Ended {
            termination: Some(_),
            ..
        })
    ));
    // Again, by the buyer: a replay.
    let resp = ask(
        &mut l,
        &mut journal,
        b.node_id(),
        Request::Terminate {
            termination: termination(&b, id, 4),
        },
        T0,
    );
    assert!(matches!(resp, Response::Error(e) if e.code == ErrorCode::Replay));
    // Still not for mallory.
    let resp = ask(
        &mut l,
        &mut journal,
        mallory.node_id(),
        Request::Terminate {
            termination: termination(&mallory, id, 5),
        },
        T0,
    );
    assert!(matches!(resp, Response::Error(e) if e.code == ErrorCode::NotAuthorised));
}

#[test]
fn handle_returns_the_records_to_persist_and_restore_rebuilds() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let mut journal = Vec::new();
    let b = key(2);
    let resp = ask(
        &mut l,
        &mut journal,
        b.node_id(),
        Request::Reserve {
            flavor: FLAVOR,
            partition: cpu_mem(2000, 2),
            nonce: Nonce([1; 16]),
        },
        T0,
    );
    let Response::Reserved { reservation } = resp else {
        panic!("{resp:?}")
    };
    assert!(matches!(journal.as_slice(), [Record::Reserved(_)]));
    let resp = ask(
        &mut l,
        &mut journal,
        b.node_id(),
        Request::Purchase {
            reservation: reservation.id,
            terms: buyer_terms(2),
        },
        T0,
    );
    let Response::Offer { contract } = resp else {
        panic!("{resp:?}")
    };
    let signed_by_both = contract.verify_offer().unwrap().countersign(&b).unwrap();
    let resp = ask(
        &mut l,
        &mut journal,
        b.node_id(),
        Request::Countersign {
            contract: signed_by_both.id(),
            signature: signed_by_both.buyer_signature(),
        },
        T0,
    );
    assert_eq!(
        resp,
        Response::Countersigned {
            contract: signed_by_both.id()
        }
    );
    assert!(matches!(journal.last(), Some(Record::Activated { .. })));
    // A second reservation that will lapse while the node is down.
    let resp = ask(
        &mut l,
        &mut journal,
        key(3).node_id(),
        Request::Reserve {
            flavor: FLAVOR,
            partition: cpu_mem(1000, 1),
            nonce: Nonce([2; 16]),
        },
        T0,
    );
    assert!(matches!(resp, Response::Reserved { .. }));
    // Listing persists nothing.
    let n = journal.len();
    let _ = ask(
        &mut l,
        &mut journal,
        b.node_id(),
        Request::ListFlavors {
            selector: Selector::default(),
        },
        T0,
    );
    assert_eq!(journal.len(), n);

    let later = T0.plus_ms(60_000);
    let mut back = Ledger::restore(key(1), config(cpu_mem(8000, 16)), journal.clone(), later);
    assert_eq!(back.contracts().count(), 1);
    assert_eq!(back.contract(&signed_by_both.id()), Some(&signed_by_both));
    assert_eq!(back.reservations().count(), 0, "lapsed while down");
    assert_eq!(back.committed(), cpu_mem(2000, 2));
    assert!(matches!(
        back.take_records().as_slice(),
        [Record::Released { .. }]
    ));
    // The restored contract still refuses a replayed countersignature.
    let e = back.countersign(
        b.node_id(),
        signed_by_both.id(),
        signed_by_both.buyer_signature(),
        later,
    );
    assert_eq!(code(e), ErrorCode::Replay);

    // A contract whose bytes were tampered with on disk is dropped on restore.
    let tampered: Vec<Record> = journal
        .into_iter()
        .map(|r| match r {
            Record::Activated {
                reservation,
                mut contract,
            } => {
                contract.buyer_signature = Some(fluidos_contracts::Signature([1; 64]));
                Record::Activated {
                    reservation,
                    contract,
                }
            }
            other => other,
        })
        .collect();
    let back = Ledger::restore(key(1), config(cpu_mem(8000, 16)), tampered, later);
    assert_eq!(back.contracts().count(), 0);
    assert_eq!(back.committed(), Resources::ZERO);
}

#[test]
fn shrinking_capacity_sells_nothing_more() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2).node_id();
    l.reserve(b, FLAVOR, cpu_mem(4000, 4), Nonce([1; 16]), T0)
        .unwrap();
    l.set_capacity(cpu_mem(2000, 16), T0);
    assert!(matches!(
        l.poll_event(),
        Some(LedgerEvent::Overcommitted { .. })
    ));
    assert_eq!(l.remaining(), Resources::ZERO);
    assert!(l.list(&Selector::default(), T0).is_empty());
    assert_eq!(
        code(l.reserve(b, FLAVOR, cpu_mem(1000, 1), Nonce([2; 16]), T0)),
        ErrorCode::InsufficientCapacity
    );
    // Once the reservation lapses, selling resumes within the new capacity.
    let later = Timestamp(T0.0 + 30_000);
    l.reserve(b, FLAVOR, cpu_mem(2000, 1), Nonce([3; 16]), later)
        .unwrap();
    assert_eq!(l.remaining(), cpu_mem(0, 15));
}

#[test]
fn template_max_masks_the_pool() {
    let mut cfg = config(Resources {
        gpus: 2,
        ..cpu_mem(8000, 16)
    });
    cfg.templates[0].max = Some(cpu_mem(4000, 8));
    let mut l = Ledger::new(key(1), cfg, T0);
    let listed = l.list(&Selector::default(), T0);
    assert_eq!(listed[0].characteristics.resources, cpu_mem(4000, 8));
    let gpu = Resources {
        gpus: 1,
        ..cpu_mem(1000, 1)
    };
    assert_eq!(
        code(l.reserve(key(2).node_id(), FLAVOR, gpu, Nonce([1; 16]), T0)),
        ErrorCode::InsufficientCapacity
    );
}

#[test]
fn signed_contracts_round_trip_through_records() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let r = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0)
        .unwrap();
    let offer = l.purchase(b.node_id(), r.id, buyer_terms(2), T0).unwrap();
    let bytes = offer.signed().to_bytes().unwrap();
    let back = SignedContract::from_bytes(&bytes).unwrap();
    assert_eq!(&back, offer.signed());
}

#[test]
fn reserve_and_purchase_is_all_or_nothing_and_idempotent() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let part = cpu_mem(2000, 4);
    let request = |nonce: u8, max_price: u64| Request::ReserveAndPurchase {
        flavor: FLAVOR,
        partition: part,
        nonce: Nonce([nonce; 16]),
        terms: fluidos_contracts::BuyerTerms {
            max_price_micros: max_price,
            ..buyer_terms(2)
        },
    };

    // Refused price: nothing is held and nothing is written.
    let (response, records) = l.handle(b.node_id(), request(1, 1), T0);
    assert!(
        matches!(&response, Response::Error(e) if e.code == ErrorCode::PriceNotAccepted),
        "{response:?}"
    );
    assert!(records.is_empty());
    assert_eq!(l.committed(), Resources::ZERO);
    assert_eq!(l.reservations().count(), 0);

    // Accepted: one `Offered` record (it carries the reservation), no `Reserved`.
    let (response, records) = l.handle(b.node_id(), request(2, 10_000_000), T0);
    let Response::Offer { contract } = response else {
        panic!("expected an offer, got {response:?}")
    };
    assert!(
        matches!(records.as_slice(), [Record::Offered { .. }]),
        "{records:?}"
    );
    assert_eq!(l.committed(), part);
    let offer = contract.verify_offer().unwrap();
    assert_eq!(offer.terms().partition, part);
    assert_eq!(offer.terms().buyer, b.node_id());

    // The same nonce again: the same offer, nothing new to write.
    let (again, records) = l.handle(b.node_id(), request(2, 10_000_000), T0.plus_ms(5));
    assert_eq!(
        again,
        Response::Offer {
            contract: contract.clone()
        }
    );
    assert!(records.is_empty());
    assert_eq!(l.committed(), part);

    // The same nonce for another partition: replay.
    let other = Request::ReserveAndPurchase {
        flavor: FLAVOR,
        partition: cpu_mem(1000, 1),
        nonce: Nonce([2; 16]),
        terms: buyer_terms(2),
    };
    let (response, _) = l.handle(b.node_id(), other, T0.plus_ms(6));
    assert!(matches!(&response, Response::Error(e) if e.code == ErrorCode::Replay));

    // Countersigned, then asked again: replay, as for a purchase.
    let sig = b.sign(&signing_input(CONTRACT_DOMAIN, &contract.terms));
    l.countersign(b.node_id(), offer.terms().id, sig, T0.plus_ms(7))
        .unwrap();
    let (response, _) = l.handle(b.node_id(), request(2, 10_000_000), T0.plus_ms(8));
    assert!(matches!(&response, Response::Error(e) if e.code == ErrorCode::Replay));

    // Reserve-side refusals come first: too big, off step, unknown flavor.
    let too_big = Request::ReserveAndPurchase {
        flavor: FLAVOR,
        partition: cpu_mem(8000, 16),
        nonce: Nonce([3; 16]),
        terms: buyer_terms(2),
    };
    let (response, records) = l.handle(b.node_id(), too_big, T0.plus_ms(9));
    assert!(matches!(&response, Response::Error(e) if e.code == ErrorCode::InsufficientCapacity));
    assert!(records.is_empty());
    let unknown = Request::ReserveAndPurchase {
        flavor: FlavorId([99; 16]),
        partition: part,
        nonce: Nonce([4; 16]),
        terms: buyer_terms(2),
    };
    let (response, _) = l.handle(b.node_id(), unknown, T0.plus_ms(10));
    assert!(matches!(&response, Response::Error(e) if e.code == ErrorCode::UnknownFlavor));
    assert_eq!(l.committed(), part);
}

#[test]
fn a_partition_costs_the_same_in_every_revision() {
    // Memory is the dominant resource of the first sales; CPU of the later ones.
    let mut l = ledger(1, cpu_mem(8000, 16));
    let part = cpu_mem(1000, 1);
    let quote0 = l.list(&Selector::default(), T0)[0].quote(&part);
    for (i, sale) in [cpu_mem(1000, 8), cpu_mem(3000, 1), cpu_mem(1000, 2)]
        .into_iter()
        .enumerate()
    {
        let b = key(10 + i as u8);
        let r = l
            .reserve(b.node_id(), FLAVOR, sale, Nonce([i as u8; 16]), T0)
            .unwrap();
        l.purchase(b.node_id(), r.id, buyer_terms(10 + i as u8), T0)
            .unwrap();
        let listed = l.list(&Selector::default(), T0.plus_ms(1 + i as u64));
        assert_eq!(listed[0].quote(&part), quote0, "after sale {i}");
        // And the provider charges what the listing quoted.
        let b = key(20 + i as u8);
        let offer = l
            .reserve_and_purchase(
                b.node_id(),
                FLAVOR,
                part,
                Nonce([i as u8; 16]),
                fluidos_contracts::BuyerTerms {
                    max_price_micros: quote0,
                    ..buyer_terms(20 + i as u8)
                },
                T0.plus_ms(2 + i as u64),
            )
            .unwrap();
        assert_eq!(offer.terms().price.amount_micros, quote0);
    }
}
