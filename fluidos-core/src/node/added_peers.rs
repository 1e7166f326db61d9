//! Peers added while the node runs ([`Node::add_peer`](super::Node::add_peer)),
//! remembered in `<data-dir>/state/peers` so that a restarted node dials them
//! again, as it does the peers it was built with.
//!
//! The file is text, one multiaddr per line, written whole and crash-safely
//! (0600, written aside and renamed). A line that does not parse is skipped
//! with a warning and dropped at the next write; the others still count.
//! To forget a peer, remove its line while the node is stopped.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;

/// The file's name in the node's state directory.
pub(crate) const ADDED_PEERS_FILE: &str = "peers";

/// The largest file read: 256 peers (discovery's limit) of long addresses.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// The remembered peers and where they live.
#[derive(Debug)]
pub(crate) struct AddedPeers {
    path: PathBuf,
    addrs: Vec<Multiaddr>,
}

impl AddedPeers {
    /// Reads `dir/peers` (none yet: an empty list). Lines that do not parse
    /// are skipped with a warning.
    pub(crate) fn open(dir: &Path) -> Self {
        let path = dir.join(ADDED_PEERS_FILE);
        let addrs = match fluidos_contracts::private_file::read_private(&path, MAX_FILE_BYTES) {
            Ok(bytes) => parse(&String::from_utf8_lossy(&bytes), &path),
            Err(fluidos_contracts::private_file::ReadPrivateError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "added peers not read; starting without them");
                Vec::new()
            }
        };
        Self { path, addrs }
    }

    /// The remembered addresses, oldest first.
    pub(crate) fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Remembers `addr` (once) and writes the file.
    pub(crate) fn remember(&mut self, addr: Multiaddr) -> std::io::Result<()> {
        if self.addrs.contains(&addr) {
            return Ok(());
        }
        self.addrs.push(addr);
        let text: String = self.addrs.iter().map(|a| format!("{a}\n")).collect();
        fluidos_contracts::private_file::write_private(&self.path, text.as_bytes())
    }
}

fn parse(text: &str, path: &Path) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<Multiaddr>() {
            Ok(a) if !out.contains(&a) => out.push(a),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), line = i + 1, error = %e, "an added peer's address does not parse; skipped");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn remembered_peers_come_back_once_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/7001".parse().unwrap();
        let b: Multiaddr = "/ip4/127.0.0.1/tcp/7002".parse().unwrap();
        let mut peers = AddedPeers::open(dir.path());
        assert!(peers.addrs().is_empty());
        peers.remember(a.clone()).unwrap();
        peers.remember(b.clone()).unwrap();
        peers.remember(a.clone()).unwrap();
        assert_eq!(AddedPeers::open(dir.path()).addrs(), [a.clone(), b.clone()]);

        // A damaged line costs only itself.
        let file = dir.path().join(ADDED_PEERS_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, format!("not an address\n{text}\n# a note\n")).unwrap();
        let back = AddedPeers::open(dir.path());
        assert_eq!(back.addrs(), [a, b]);
    }
}
