//! Saving a [`View`] to disk and loading it back, so that a restarted node keeps
//! its own changes (its peers would otherwise relay them back as changes of an
//! actor other than themselves, which the ownership check refuses) and its
//! documents' epochs.
//!
//! Format (all integers big-endian): `b"FVS1"`, the local document
//! (`u32` length + `Automerge::save` bytes), `u32` number of shared documents,
//! then per document the peer's 32-byte public key, its epoch (`u64`) and the
//! document (`u32` length + bytes).

use automerge::{Automerge, ReadDoc};
use fluidos_contracts::NodeId;

use super::schema::{self, SCHEMA};
use super::sync::Link;
use super::{View, ViewConfig};

const MAGIC: &[u8; 4] = b"FVS1";

/// A saved view could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("saved view is unreadable: {0}")]
pub struct LoadError(String);

fn bad(msg: impl Into<String>) -> LoadError {
    LoadError(msg.into())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, LoadError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, LoadError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn doc(&mut self, me: &NodeId) -> Result<Automerge, LoadError> {
        let len = self.u32()? as usize;
        let mut doc = Automerge::load(self.take(len)?).map_err(|e| bad(e.to_string()))?;
        let schema_ok = matches!(
            doc.get(automerge::ROOT, "schema"),
            Ok(Some((automerge::Value::Scalar(s), _))) if s.as_str() == Some(SCHEMA)
        );
        if !schema_ok {
            return Err(bad("not a fluidos-view/1 document"));
        }
        doc.set_actor(schema::actor_of(me));
        Ok(doc)
    }
}

fn put_doc(out: &mut Vec<u8>, doc: &Automerge) {
    let bytes = doc.save();
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
}

impl View {
    /// Every document with its epoch, for [`View::load`].
    pub fn save(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        put_doc(&mut out, &self.local);
        out.extend_from_slice(&(self.links.len() as u32).to_be_bytes());
        for (peer, link) in &self.links {
            out.extend_from_slice(peer.as_bytes());
            out.extend_from_slice(&link.epoch.to_be_bytes());
            put_doc(&mut out, &link.doc);
        }
        out
    }

    /// A view of node `me` from what [`View::save`] wrote. Every link starts
    /// disconnected.
    pub fn load(me: NodeId, config: ViewConfig, bytes: &[u8]) -> Result<Self, LoadError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(bad("wrong magic"));
        }
        let mut view = View::new(me, config);
        view.local = r.doc(&me)?;
        let n = r.u32()?;
        for _ in 0..n {
            let mut key = [0u8; 32];
            key.copy_from_slice(r.take(32)?);
            let peer = NodeId::from_bytes(key).map_err(|e| bad(e.to_string()))?;
            let epoch = r.u64()?;
            let mut link = Link::new(r.doc(&me)?);
            link.epoch = epoch;
            view.links.insert(peer, link);
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        // Ids of workloads added from now on must not repeat earlier ones.
        view.next_id = schema::workloads(&view.local).len() as u64 + 1;
        Ok(view)
    }
}
