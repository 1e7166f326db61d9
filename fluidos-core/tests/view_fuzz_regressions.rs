//! Inputs the `view_sync` fuzz target found (`fuzz/regressions/view_sync/`), replayed
//! through the same arrival path: each must finish and leave the view consistent.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use fluidos_contracts::{NodeId, SecretKey};
use fluidos_core::view::{View, ViewConfig};

fn ids(me_leads: bool) -> (NodeId, NodeId) {
    let a = SecretKey::from_seed(&[1; 32]).node_id();
    let b = SecretKey::from_seed(&[2; 32]).node_id();
    let (small, large) = if a.as_bytes() < b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    if me_leads {
        (small, large)
    } else {
        (large, small)
    }
}

/// The fuzz target's body (`fuzz/fuzz_targets/view_sync.rs`).
fn replay(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let (me, peer) = ids(mode & 1 == 1);
    let mut view = View::new(me, ViewConfig::default());
    view.open(peer);
    let now = Instant::now();
    view.connected(&peer, now);
    for _ in 0..16 {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let before = view.heads(&peer);
        if view.handle_message(&peer, frame, now).is_err() {
            assert_eq!(
                view.heads(&peer),
                before,
                "a refused frame changed the view"
            );
        }
        // The driver drains poll_transmit after every input: it must run dry. The
        // first input found sent the same sync message forever.
        let mut sent = 0;
        while view.poll_transmit().is_some() {
            sent += 1;
            assert!(
                sent <= 16,
                "poll_transmit does not run dry after a peer's frame"
            );
        }
        assert!(!view.nodes().iter().any(|n| n.id == me));
        assert!(!view.workloads().iter().any(|w| w.owner == me));
    }
}

#[test]
fn fuzz_regressions_replay() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/view_sync");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        eprintln!("{}", path.display());
        replay(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 1, "no regression inputs in {}", dir.display());
}
