//! 64 buyers compete for the last capacity of a provider, their requests
//! interleaved in many seeded orders and handed to the ledger one at a time
//! (deterministic interleavings, not threads). Exactly as much is sold as exists,
//! and every loser is told why. The truly concurrent version, 64 buyer nodes in
//! their own tasks on a multi-thread runtime against one provider node, is
//! `sixty_four_buyers_race_and_exactly_the_capacity_is_sold` in `node_e2e.rs`.
#![allow(clippy::unwrap_used)]

mod ledger_support;

use fluidos_contracts::rear::{ErrorCode, Request, Response};
use fluidos_contracts::{Nonce, ReservationId, Resources, SecretKey, VerifiedContract};
use ledger_support::*;

enum Next {
    Reserve,
    Purchase(ReservationId),
    Countersign(Box<VerifiedContract>),
    Won,
    Lost(ErrorCode),
}

struct Buyer {
    key: SecretKey,
    partition: Resources,
    next: Next,
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn race(seed: u64) {
    let capacity = cpu_mem(8000, 16);
    let mut l = ledger(1, capacity);
    let mut journal = Vec::new();
    // Someone already holds 4 of the 8 CPUs: 4 are left for the race.
    let early = key(200);
    let r = l
        .reserve(
            early.node_id(),
            FLAVOR,
            cpu_mem(4000, 4),
            Nonce([0; 16]),
            T0,
        )
        .unwrap();
    let offer = l
        .purchase(early.node_id(), r.id, buyer_terms(200), T0)
        .unwrap();
    let sig = offer.clone().countersign(&early).unwrap().buyer_signature();
    l.countersign(early.node_id(), offer.terms().id, sig, T0)
        .unwrap();

    let mut buyers: Vec<Buyer> = (0..64u8)
        .map(|i| Buyer {
            key: key(i + 2),
            // Most ask for one CPU and one GiB; every eighth for an invalid
            // partition (off the step, or below the minimum).
            partition: match i % 8 {
                0 => cpu_mem(1500, 1),
                4 => cpu_mem(500, 1),
                _ => cpu_mem(1000, 1),
            },
            next: Next::Reserve,
        })
        .collect();

    let mut rng = seed | 1;
    let mut now = T0;
    let mut live: Vec<usize> = (0..buyers.len()).collect();
    let mut steps = 0;
    while !live.is_empty() {
        steps += 1;
        assert!(steps < 1_000, "race does not finish");
        let pick = (xorshift(&mut rng) % live.len() as u64) as usize;
        let i = live[pick];
        now = now.plus_ms(1);
        let b = &mut buyers[i];
        let me = b.key.node_id();
        let request = match &b.next {
            Next::Reserve => Request::Reserve {
                flavor: FLAVOR,
                partition: b.partition,
                nonce: Nonce([i as u8; 16]),
            },
            Next::Purchase(id) => Request::Purchase {
                reservation: *id,
                terms: buyer_terms(i as u8 + 2),
            },
            Next::Countersign(c) => Request::Countersign {
                contract: c.id(),
                signature: c.buyer_signature(),
            },
            Next::Won | Next::Lost(_) => unreachable!(),
        };
        b.next = match ask(&mut l, &mut journal, me, request, now) {
            Response::Reserved { reservation } => Next::Purchase(reservation.id),
            Response::Offer { contract } => Next::Countersign(Box::new(
                contract
                    .verify_offer()
                    .unwrap()
                    .countersign(&b.key)
                    .unwrap(),
            )),
            Response::Countersigned { .. } => Next::Won,
            Response::Error(e) => Next::Lost(e.code),
            other => panic!("unexpected {other:?}"),
        };
        if matches!(b.next, Next::Won | Next::Lost(_)) {
            live.swap_remove(pick);
        }
        // Never oversold, at any step.
        assert!(
            l.committed().fits_within(&capacity),
            "oversold at step {steps}"
        );
    }

    let winners = buyers
        .iter()
        .filter(|b| matches!(b.next, Next::Won))
        .count();
    assert_eq!(winners, 4, "seed {seed}: exactly the 4 CPUs left are sold");
    assert_eq!(l.committed(), cpu_mem(8000, 8));
    assert_eq!(l.contracts().count(), 5);
    for (i, b) in buyers.iter().enumerate() {
        match &b.next {
            Next::Won => assert_eq!(b.partition, cpu_mem(1000, 1)),
            Next::Lost(code) => {
                let expected = if b.partition == cpu_mem(1000, 1) {
                    ErrorCode::InsufficientCapacity
                } else {
                    ErrorCode::InvalidPartition
                };
                assert_eq!(*code, expected, "seed {seed}, buyer {i}");
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn sixty_four_buyers_race_for_the_last_capacity() {
    for seed in 1..=20u64 {
        race(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}
