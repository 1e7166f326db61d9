//! The `/fluidos/view/1` frames and the per-peer sync state.
//!
//! A frame is `version (u8 = 1) ‖ kind (u8) ‖ epoch (u64, big-endian) ‖ payload`:
//! kind 0 carries an Automerge sync message (`automerge::sync::Message::encode`),
//! kind 1 a whole document (`Automerge::save`) that starts a new epoch after a
//! compaction. See `docs/PROTOCOL.md`.

use std::time::Instant;

use automerge::Automerge;
use automerge::sync::State;

/// Bytes before the payload.
pub const FRAME_HEADER: usize = 10;
/// The frame format's version byte.
pub const FRAME_VERSION: u8 = 1;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// An Automerge sync message for the current epoch.
    Sync,
    /// A compacted document that starts the frame's epoch.
    Snapshot,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: FrameKind,
    /// The sender's epoch (for a snapshot: the epoch it starts).
    pub epoch: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_HEADER + self.payload.len());
        out.push(FRAME_VERSION);
        out.push(match self.kind {
            FrameKind::Sync => 0,
            FrameKind::Snapshot => 1,
        });
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses a frame's header; `Err` says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < FRAME_HEADER {
            return Err("shorter than the 10-byte header");
        }
        if bytes[0] != FRAME_VERSION {
            return Err("unknown frame version");
        }
        let kind = match bytes[1] {
            0 => FrameKind::Sync,
            1 => FrameKind::Snapshot,
            _ => return Err("unknown frame kind"),
        };
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&bytes[2..FRAME_HEADER]);
        Ok(Frame {
            kind,
            epoch: u64::from_be_bytes(epoch),
            payload: bytes[FRAME_HEADER..].to_vec(),
        })
    }
}

/// The most probes a peer's bloom filter may ask for (Automerge uses 7).
const MAX_BLOOM_PROBES: u64 = 64;

/// Checks the bloom filters of a peer's sync message before Automerge uses them:
/// automerge 0.12 divides by the filter's bit count (a filter with entries but no
/// bits panics) and allocates one slot per probe (a huge probe count aborts). Both
/// were reachable from a peer; found by the `view_sync` fuzz target.
pub(crate) fn check_blooms(msg: &automerge::sync::Message) -> Result<(), &'static str> {
    fn uleb(bytes: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    for have in &msg.have {
        let encoded = have.bloom.to_bytes();
        let mut rest = &encoded[..];
        if rest.is_empty() {
            continue; // no entries
        }
        let (Some(_entries), Some(_bits_per_entry), Some(probes)) =
            (uleb(&mut rest), uleb(&mut rest), uleb(&mut rest))
        else {
            return Err("bloom filter header does not parse");
        };
        if rest.is_empty() {
            return Err("bloom filter with entries but no bits");
        }
        if probes == 0 || probes > MAX_BLOOM_PROBES {
            return Err("bloom filter probe count out of range");
        }
    }
    Ok(())
}

/// A frame for one peer, from [`super::View::poll_transmit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Who it is for.
    pub peer: fluidos_contracts::NodeId,
    /// The frame's bytes.
    pub bytes: Vec<u8>,
}

/// The document shared with one peer and the state of syncing it.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) doc: Automerge,
    pub(crate) sync: State,
    pub(crate) epoch: u64,
    pub(crate) connected: bool,
    /// A snapshot must go out before any sync message (we compacted, or the peer is behind).
    pub(crate) snapshot_due: bool,
    /// The epoch whose snapshot went out on this connection.
    pub(crate) snapshot_sent: Option<u64>,
    pub(crate) last_heard: Option<Instant>,
    /// A sync message went out at these heads and nothing came from the peer since:
    /// nothing more is generated until the peer speaks or the document changes. A
    /// crafted peer message can leave Automerge's sync state wanting to send forever
    /// (found by the `view_sync` fuzz target), which would spin the driver.
    pub(crate) sent_at_heads: Option<Vec<automerge::ChangeHash>>,
}

impl Link {
    pub(crate) fn new(doc: Automerge) -> Self {
        Self {
            doc,
            sync: State::new(),
            epoch: 0,
            connected: false,
            snapshot_due: false,
            snapshot_sent: None,
            last_heard: None,
            sent_at_heads: None,
        }
    }
}
