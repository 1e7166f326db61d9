//! Tombstones of ended deals survive a restart of the provider: after the store
//! is reopened (and compacted), a late request about a deal that lapsed, was
//! terminated or ran out is still answered `ReservationExpired` or `Replay`,
//! never `Unknown…`.
#![allow(clippy::unwrap_used)]

mod ledger_support;

use fluidos_contracts::rear::ErrorCode;
use fluidos_contracts::{Nonce, Timestamp};
use fluidos_core::ledger::Ledger;
use fluidos_core::store::{LiveSet, Record, Store};
use ledger_support::*;

fn code<T: std::fmt::Debug>(r: Result<T, fluidos_contracts::rear::RearError>) -> ErrorCode {
    r.unwrap_err().code
}

fn commit(ledger: &mut Ledger, store: &mut Store) {
    let records = ledger.take_records();
    store.commit(&records).unwrap();
}

#[test]
fn tombstones_survive_a_restart_and_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, records) = Store::open(dir.path()).unwrap();
    assert!(records.is_empty());
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let other = key(3);

    // 1. A reservation that lapses.
    let lapsed = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0)
        .unwrap();
    // 2. A contract that the buyer terminates.
    let r2 = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([2; 16]), T0)
        .unwrap();
    let offer = l.purchase(b.node_id(), r2.id, buyer_terms(2), T0).unwrap();
    let signed = offer
        .signed()
        .verify_offer()
        .unwrap()
        .countersign(&b)
        .unwrap();
    let terminated = signed.id();
    l.countersign(b.node_id(), terminated, signed.buyer_signature(), T0)
        .unwrap();
    let termination = terminate_by(&b, terminated, 9);
    l.terminate(&termination, T0).unwrap();
    // 3. An offer that is never countersigned.
    let r3 = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([3; 16]), T0)
        .unwrap();
    let lapsed_offer = l
        .purchase(b.node_id(), r3.id, buyer_terms(2), T0)
        .unwrap()
        .terms()
        .id;
    commit(&mut l, &mut store);
    let later = T0.plus_ms(60_000);
    l.handle_timeout(later);
    commit(&mut l, &mut store);
    assert_eq!(store.live().len(), 0, "every deal has ended");
    assert_eq!(store.live().tombstone_count(), 3);
    drop(store);
    drop(l);

    // Reopen twice: the first open replays the journal and compacts it into the
    // snapshot; the second reads the tombstones back from the snapshot alone.
    for round in 0..2 {
        let (store, records) = Store::open(dir.path()).unwrap();
        assert_eq!(store.journal_len(), 8, "round {round}: journal compacted");
        let now = Timestamp(later.0 + 1_000);
        let mut l = Ledger::restore(key(1), config(cpu_mem(8000, 16)), records, now);
        assert_eq!(l.committed(), fluidos_contracts::Resources::ZERO);

        // Without the tombstones all of these were `Unknown…`.
        assert_eq!(
            code(l.purchase(b.node_id(), lapsed.id, buyer_terms(2), now)),
            ErrorCode::ReservationExpired,
            "round {round}"
        );
        assert_eq!(
            code(l.purchase(b.node_id(), r2.id, buyer_terms(2), now)),
            ErrorCode::Replay
        );
        assert_eq!(
            code(l.countersign(b.node_id(), terminated, signed.buyer_signature(), now)),
            ErrorCode::Replay
        );
        assert_eq!(code(l.terminate(&termination, now)), ErrorCode::Replay);
        assert_eq!(
            code(l.countersign(b.node_id(), lapsed_offer, signed.buyer_signature(), now)),
            ErrorCode::ReservationExpired
        );
        // Another buyer learns nothing about the deal.
        assert_eq!(
            code(l.purchase(other.node_id(), lapsed.id, buyer_terms(3), now)),
            ErrorCode::NotAuthorised
        );
        assert!(
            l.take_records().is_empty(),
            "restoring tombstones writes nothing"
        );
    }
}

#[test]
fn ending_records_from_before_tombstones_restore_no_tombstone() {
    // A journal written before tombstones were persisted: ending records with
    // no buyer. They still remove their deal and are simply not remembered.
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let r = l
        .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([1; 16]), T0)
        .unwrap();
    let mut journal = l.take_records();
    journal.push(Record::Released {
        reservation: r.id,
        buyer: None,
        contract: None,
    });
    let mut back = Ledger::restore(key(1), config(cpu_mem(8000, 16)), journal, T0);
    assert_eq!(back.reservations().count(), 0);
    assert_eq!(
        code(back.purchase(b.node_id(), r.id, buyer_terms(2), T0)),
        ErrorCode::UnknownReservation
    );
}

#[test]
fn tombstones_are_bounded_oldest_first() {
    let mut l = ledger(1, cpu_mem(8000, 16));
    let b = key(2);
    let mut set = LiveSet::with_tomb_cap(2);
    let mut ids = Vec::new();
    for n in 0..3u8 {
        let r = l
            .reserve(b.node_id(), FLAVOR, cpu_mem(1000, 1), Nonce([n; 16]), T0)
            .unwrap();
        ids.push(r.id);
    }
    let reserved = l.take_records();
    assert_eq!(reserved.len(), 3);
    l.handle_timeout(T0.plus_ms(60_000));
    let ended = l.take_records();
    assert_eq!(ended.len(), 3);
    for record in &ended {
        set.apply(record);
    }
    assert_eq!(set.len(), 0);
    assert_eq!(set.tombstone_count(), 2);
    let kept: Vec<_> = set.tombstones().map(Record::key).collect();
    assert_eq!(kept.len(), 2);
    let newest: Vec<_> = ended[1..].iter().map(Record::key).collect();
    assert_eq!(kept, newest, "the first to end is forgotten first");
    assert!(ended.iter().all(|r| {
        ids.iter()
            .any(|id| r.key() == fluidos_core::store::RecordKey::Deal(*id))
    }));
    // A snapshot of the set folds back into the same set.
    let mut again = LiveSet::with_tomb_cap(2);
    for record in set.to_vec() {
        again.apply(&record);
    }
    assert_eq!(
        again.tombstones().map(Record::key).collect::<Vec<_>>(),
        kept
    );
}
