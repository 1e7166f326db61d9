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
    /// Why the file could not be read, if it exists but could not: it is then
    /// never written over, so that what it holds is not lost.
    unreadable: Option<String>,
}

impl AddedPeers {
    /// Reads `dir/peers` (none yet: an empty list). Lines that do not parse
    /// are skipped with a warning.
    pub(crate) fn open(dir: &Path) -> Self {
        let path = dir.join(ADDED_PEERS_FILE);
        let (addrs, unreadable) = match fluidos_contracts::private_file::read_private(
            &path,
            MAX_FILE_BYTES,
        ) {
            Ok(bytes) => (parse(&String::from_utf8_lossy(&bytes), &path), None),
            Err(fluidos_contracts::private_file::ReadPrivateError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                (Vec::new(), None)
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "added peers not read; starting without them, and the file is left as it is");
                (Vec::new(), Some(e.to_string()))
            }
        };
        Self {
            path,
            addrs,
            unreadable,
        }
    }

    /// The remembered addresses, oldest first.
    pub(crate) fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }

    /// Remembers `addr` (once) and writes the file.
    pub(crate) fn remember(&mut self, addr: Multiaddr) -> std::io::Result<()> {
        if let Some(why) = &self.unreadable {
            return Err(std::io::Error::other(format!(
                "{} was not readable at start ({why}); it is not written over",
                self.path.display()
            )));
        }
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

    #[test]
    fn a_file_others_can_read_or_an_oversized_one_is_not_used_and_not_written_over() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(ADDED_PEERS_FILE);
        let c: Multiaddr = "/ip4/127.0.0.1/tcp/7003".parse().unwrap();
        for (content, mode) in [
            ("/ip4/127.0.0.1/tcp/7001\n".to_string(), 0o644),
            ("#".repeat(MAX_FILE_BYTES as usize + 1), 0o600),
        ] {
            std::fs::write(&file, &content).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let mut peers = AddedPeers::open(dir.path());
            assert!(peers.addrs().is_empty());
            let e = peers.remember(c.clone()).unwrap_err();
            assert!(e.to_string().contains("not written over"), "{e}");
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                content,
                "lost nothing"
            );
        }
    }
}
