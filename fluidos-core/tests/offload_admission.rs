//! The provider admits an offloaded replica only under an active contract with
//! the sender and within what that contract has left; every refusal is typed.
#![allow(clippy::unwrap_used)]

mod ledger_support;

use fluidos_contracts::{ContractId, Nonce, Resources, VerifiedContract};
use fluidos_core::ledger::Ledger;
use fluidos_core::offload::{AdmitError, QuotaBook};
use ledger_support::*;

/// A ledger of 8 CPUs / 16 GiB (pods 110) with one active contract of 2 CPUs,
/// 2 GiB and 2 pods bought by `key(2)`.
fn with_contract() -> (Ledger, VerifiedContract) {
    let capacity = Resources {
        pods: 110,
        ..cpu_mem(8000, 16)
    };
    let mut c = config(capacity);
    c.templates[0].policy.min.pods = 1;
    c.templates[0].policy.step.pods = 1;
    let mut l = Ledger::new(key(1), c, T0);
    let active = buy(&mut l, 1);
    (l, active)
}

/// `key(2)` buys 2 CPUs, 2 GiB and 2 pods.
fn buy(l: &mut Ledger, nonce: u8) -> VerifiedContract {
    let b = key(2);
    let part = Resources {
        pods: 2,
        ..cpu_mem(2000, 2)
    };
    let r = l
        .reserve(b.node_id(), FLAVOR, part, Nonce([nonce; 16]), T0)
        .unwrap();
    let offer = l.purchase(b.node_id(), r.id, buyer_terms(2), T0).unwrap();
    let signed = offer
        .signed()
        .verify_offer()
        .unwrap()
        .countersign(&b)
        .unwrap();
    l.countersign(b.node_id(), signed.id(), signed.buyer_signature(), T0)
        .unwrap()
}

fn replica(cpu: u64, mem_gib: u64) -> Resources {
    cpu_mem(cpu, mem_gib)
}

#[test]
fn admits_within_quota_and_releases() {
    let (l, c) = with_contract();
    let b = key(2).node_id();
    let mut book = QuotaBook::new();
    let now = T0.plus_ms(1);
    let a = book
        .admit(&l, &b, &c.id(), "w/0", replica(1000, 1), now)
        .unwrap();
    assert_eq!(a.charged.pods, 1, "every replica takes one pod");
    // Idempotent: the same replica again charges nothing more.
    book.admit(&l, &b, &c.id(), "w/0", replica(1000, 1), now)
        .unwrap();
    assert_eq!(
        book.used(&c.id()),
        Resources {
            pods: 1,
            ..cpu_mem(1000, 1)
        }
    );
    book.admit(&l, &b, &c.id(), "w/1", replica(1000, 1), now)
        .unwrap();
    // The contract is full: 2 CPUs, 2 GiB, 2 pods.
    let e = book
        .admit(&l, &b, &c.id(), "w/2", replica(100, 0), now)
        .unwrap_err();
    assert!(
        matches!(
            e,
            AdmitError::OverQuota {
                resource: "cpu",
                requested: 100,
                remaining: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(book.release(&"w/1").is_some());
    book.admit(&l, &b, &c.id(), "w/2", replica(500, 1), now)
        .unwrap();
    // Ending the contract hands back every replica under it.
    let stopped = book.ended(&c.id());
    assert_eq!(stopped.len(), 2);
    assert_eq!(book.used(&c.id()), Resources::ZERO);
}

#[test]
fn over_quota_names_the_resource() {
    let (l, c) = with_contract();
    let b = key(2).node_id();
    let mut book = QuotaBook::new();
    let e = book
        .admit(&l, &b, &c.id(), 1u32, replica(1000, 3), T0)
        .unwrap_err();
    assert_eq!(
        e,
        AdmitError::OverQuota {
            contract: c.id(),
            resource: "memory",
            requested: 3 * GIB,
            remaining: 2 * GIB
        }
    );
    assert!(e.to_string().contains("buy more capacity"));
    // Pods: a third replica of nothing still needs a slot.
    book.admit(&l, &b, &c.id(), 1, Resources::ZERO, T0).unwrap();
    book.admit(&l, &b, &c.id(), 2, Resources::ZERO, T0).unwrap();
    let e = book
        .admit(&l, &b, &c.id(), 3, Resources::ZERO, T0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            AdmitError::OverQuota {
                resource: "pods",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn no_contract_and_another_partys_contract() {
    let (l, c) = with_contract();
    let mut book = QuotaBook::new();
    let e = book
        .admit(
            &l,
            &key(2).node_id(),
            &ContractId([7; 16]),
            0u8,
            replica(100, 0),
            T0,
        )
        .unwrap_err();
    assert!(matches!(e, AdmitError::NoContract { .. }), "{e}");
    let e = book
        .admit(&l, &key(3).node_id(), &c.id(), 0u8, replica(100, 0), T0)
        .unwrap_err();
    assert_eq!(e, AdmitError::NotYourContract { contract: c.id() });
    assert_eq!(book.replicas().count(), 0, "nothing admitted by a refusal");
}

#[test]
fn expired_and_terminated_contracts() {
    let (mut l, c) = with_contract();
    let b = key(2);
    let mut book = QuotaBook::new();
    // Past valid_until but before the ledger lapsed it: checked on our clock.
    let after = c.terms().valid_until;
    let e = book
        .admit(&l, &b.node_id(), &c.id(), 0u8, replica(100, 0), after)
        .unwrap_err();
    assert!(
        matches!(
            e,
            AdmitError::Expired {
                valid_until: Some(_),
                ..
            }
        ),
        "{e}"
    );
    // Once the ledger ended it, it is still `Expired`, for its buyer only.
    l.handle_timeout(after);
    let e = book
        .admit(&l, &b.node_id(), &c.id(), 0u8, replica(100, 0), after)
        .unwrap_err();
    assert!(matches!(e, AdmitError::Expired { .. }), "{e}");
    let e = book
        .admit(&l, &key(3).node_id(), &c.id(), 0u8, replica(100, 0), after)
        .unwrap_err();
    assert!(matches!(e, AdmitError::NotYourContract { .. }), "{e}");

    let (mut l, c) = with_contract();
    let t = terminate_by(&b, c.id(), 5);
    l.terminate(&t, T0).unwrap();
    let e = book
        .admit(&l, &b.node_id(), &c.id(), 0u8, replica(100, 0), T0)
        .unwrap_err();
    assert_eq!(e, AdmitError::Terminated { contract: c.id() });
}

#[test]
fn a_replica_runs_under_one_contract_only() {
    let (mut l, c) = with_contract();
    let second = buy(&mut l, 2);
    let b = key(2).node_id();
    let mut book = QuotaBook::new();
    book.admit(&l, &b, &c.id(), "r", replica(100, 0), T0)
        .unwrap();
    // The same key under a contract that does not exist is refused before the
    // duplicate check; under the same contract it is idempotent.
    assert!(matches!(
        book.admit(&l, &b, &ContractId([9; 16]), "r", replica(100, 0), T0),
        Err(AdmitError::NoContract { .. })
    ));
    assert_eq!(
        book.admit(&l, &b, &second.id(), "r", replica(100, 0), T0),
        Err(AdmitError::AlreadyAdmitted { existing: c.id() })
    );
    assert_eq!(book.used(&second.id()), Resources::ZERO);
    assert_eq!(book.replicas().count(), 1);
}
