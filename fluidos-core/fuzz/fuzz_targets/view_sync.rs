//! `/fluidos/view/1` frames from a peer, fed to the arrival path (`View::handle_message`:
//! the frame header, the Automerge sync message or snapshot, the ownership check).
//!
//! Input: one byte that picks which side compacts (so snapshots are both refused and
//! adopted), then frames, each a 4-byte little-endian length and its bytes. This node
//! writes nothing, so a change the view accepts can never carry an entry for this node
//! or a workload it owns; a frame that fails leaves the shared document unchanged.
#![no_main]

use std::time::Instant;

use fluidos_contracts::{NodeId, SecretKey};
use fluidos_core::view::{View, ViewConfig};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
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
        // What this node answers is generated from whatever state the frame left.
        while view.poll_transmit().is_some() {}
        while view.poll_event().is_some() {}
        assert!(
            !view.nodes().iter().any(|n| n.id == me),
            "a peer wrote this node's entry"
        );
        assert!(
            !view.workloads().iter().any(|w| w.owner == me),
            "a peer wrote a workload this node owns"
        );
    }
});
