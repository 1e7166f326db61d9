//! Images sent by their owner: a `docker save` tarball named by a spec's `run.file`
//! goes to the provider over `/fluidos/workload/1` in chunks of at most
//! [`IMAGE_CHUNK_BYTES`], with its sha256, before the replica's `start`
//! (`docs/PROTOCOL.md` §8).
//!
//! - owner ([`push`]): hashes the file, offers it (`image_offer`), then sends chunks
//!   in order from what the provider says it holds; a failed chunk is sent again after
//!   a fresh offer, so a transfer resumes where it stopped while the provider runs;
//! - provider ([`Uploads`]): one partial file per (sender, digest) under
//!   `<data-dir>/state/images`, appended in order, hashed as it grows; the last chunk
//!   is answered once the tarball matched its digest and the engine loaded it. A
//!   digest loaded before is answered at once (the transfer is idempotent).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use fluidos_contracts::{ContractId, NodeId};
use fluidos_discovery::{AppProtocol, DiscoveryHandle};
use sha2::{Digest, Sha256};

use crate::offload::wire::{
    self, IMAGE_CHUNK_BYTES, MAX_IMAGE_BYTES, WorkloadErrorCode as Code, WorkloadRequest,
    WorkloadResponse,
};

/// Transfers in progress per sender.
const MAX_UPLOADS_PER_PEER: usize = 2;
/// Attempts per chunk before the transfer fails.
const CHUNK_ATTEMPTS: u32 = 3;
/// How long the engine may take to load a tarball (the last chunk's answer waits).
pub(super) const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `sha256:<64 lower-case hex>`, checked.
fn parse_digest(d: &str) -> Option<&str> {
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

struct Part {
    size: u64,
    received: u64,
    hasher: Sha256,
    file: std::fs::File,
    path: PathBuf,
    /// The last chunk arrived and matched: the engine is loading it.
    loading: bool,
}

/// The provider's uploads.
#[derive(Default)]
pub(super) struct Uploads {
    dir: PathBuf,
    parts: BTreeMap<(NodeId, String), Part>,
    /// Digests loaded into the engine, with the images they held.
    loaded: BTreeMap<String, Vec<String>>,
}

/// What the workload loop does with an image request.
pub(super) enum Step {
    /// Answer now.
    Answer(WorkloadResponse),
    /// The tarball is complete at `path`: load it, then answer (and call
    /// [`Uploads::finished`]).
    Load {
        /// The sender.
        from: NodeId,
        /// Its digest.
        digest: String,
        /// The file.
        path: PathBuf,
    },
}

fn refuse(msg: impl Into<String>) -> Step {
    Step::Answer(WorkloadResponse::error(Code::ImageRefused, msg))
}

impl Uploads {
    /// Uploads kept under `dir` (created when the first one starts). Partial files left
    /// by an earlier run are dropped: their hash state is gone.
    pub(super) fn new(dir: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            dir,
            ..Self::default()
        }
    }

    fn answer(received: u64, loaded: Vec<String>) -> Step {
        Step::Answer(WorkloadResponse::Image { received, loaded })
    }

    /// An `image_offer` from `from` (whose contract was checked by the caller).
    pub(super) fn offer(&mut self, from: NodeId, digest: &str, size: u64) -> Step {
        if parse_digest(digest).is_none() {
            return refuse(format!("{digest:?} is not sha256:<64 hex digits>"));
        }
        if size == 0 || size > MAX_IMAGE_BYTES {
            return refuse(format!(
                "an image of {size} bytes: must be 1 byte to {MAX_IMAGE_BYTES} bytes"
            ));
        }
        if let Some(images) = self.loaded.get(digest) {
            return Self::answer(size, images.clone());
        }
        let key = (from, digest.to_string());
        if let Some(p) = self.parts.get(&key) {
            if p.size != size {
                return refuse(format!(
                    "the transfer of {digest} began with {} bytes, not {size}",
                    p.size
                ));
            }
            return Self::answer(p.received, Vec::new());
        }
        if self.parts.keys().filter(|(f, _)| *f == from).count() >= MAX_UPLOADS_PER_PEER {
            return refuse(format!(
                "{MAX_UPLOADS_PER_PEER} image transfers from this node are under way already"
            ));
        }
        let path = self
            .dir
            .join(format!("{}-{}.tar", from.short(), &digest[7..]));
        let file = std::fs::create_dir_all(&self.dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => return refuse(format!("cannot store the image here: {e}")),
        };
        self.parts.insert(
            key,
            Part {
                size,
                received: 0,
                hasher: Sha256::new(),
                file,
                path,
                loading: false,
            },
        );
        Self::answer(0, Vec::new())
    }

    /// An `image_chunk`.
    pub(super) fn chunk(&mut self, from: NodeId, digest: &str, offset: u64, data: &[u8]) -> Step {
        if let Some(images) = self.loaded.get(digest) {
            return Self::answer(offset.saturating_add(data.len() as u64), images.clone());
        }
        let key = (from, digest.to_string());
        let Some(p) = self.parts.get_mut(&key) else {
            return refuse(format!(
                "no offer of {digest} from this node: offer it first"
            ));
        };
        if data.is_empty() || data.len() > IMAGE_CHUNK_BYTES {
            return refuse(format!(
                "a chunk of {} bytes: must be 1 to {IMAGE_CHUNK_BYTES}",
                data.len()
            ));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > p.size {
            return refuse(format!(
                "bytes {offset}..{end} go past the offered size {}",
                p.size
            ));
        }
        // A repeat of a chunk already written: answered again, nothing written.
        if end <= p.received || p.loading {
            return Self::answer(p.received, Vec::new());
        }
        if offset != p.received {
            return refuse(format!(
                "chunk at {offset} out of order: this node has {} bytes; send from there",
                p.received
            ));
        }
        if let Err(e) = p.file.write_all(data) {
            let msg = format!("cannot store the image here: {e}");
            self.drop_part(&key);
            return refuse(msg);
        }
        p.hasher.update(data);
        p.received = end;
        if end < p.size {
            return Self::answer(end, Vec::new());
        }
        let got = hex::encode(p.hasher.clone().finalize());
        if Some(got.as_str()) != parse_digest(digest) {
            self.drop_part(&key);
            return refuse(format!(
                "the tarball's sha256 is {got}, not the offered {digest}: send it again"
            ));
        }
        p.loading = true;
        let _ = p.file.flush();
        Step::Load {
            from,
            digest: digest.to_string(),
            path: p.path.clone(),
        }
    }

    /// The engine loaded (or refused) a complete tarball; its file goes.
    pub(super) fn finished(
        &mut self,
        from: NodeId,
        digest: &str,
        result: &Result<Vec<String>, String>,
    ) {
        self.drop_part(&(from, digest.to_string()));
        if let Ok(images) = result {
            self.loaded.insert(digest.to_string(), images.clone());
        }
    }

    fn drop_part(&mut self, key: &(NodeId, String)) {
        if let Some(p) = self.parts.remove(key) {
            let _ = std::fs::remove_file(&p.path);
        }
    }
}

/// The sha256 of a file, as `sha256:<hex>`, and its size.
fn digest_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), size))
}

async fn ask(
    discovery: &DiscoveryHandle,
    node: NodeId,
    req: &WorkloadRequest,
    timeout: std::time::Duration,
) -> Result<WorkloadResponse, String> {
    let bytes = discovery
        .app_request(node, AppProtocol::Workload, wire::encode(req), timeout)
        .await
        .map_err(|e| e.to_string())?;
    wire::decode_response(&bytes).map_err(|e| e.to_string())
}

/// Sends the tarball at `path` to `node` for replicas under `contract`, unless it has
/// it already; returns the images the provider's engine loaded from it.
pub(super) async fn push(
    discovery: &DiscoveryHandle,
    node: NodeId,
    contract: ContractId,
    path: &Path,
) -> Result<Vec<String>, String> {
    let p = path.to_owned();
    let (digest, size) = tokio::task::spawn_blocking(move || digest_file(&p))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot read the image file {}: {e}", path.display()))?;
    let offer = WorkloadRequest::ImageOffer {
        contract,
        digest: digest.clone(),
        size,
    };
    let mut attempts = 0u32;
    let mut from = match ask(discovery, node, &offer, super::APP_TIMEOUT).await? {
        WorkloadResponse::Image { loaded, .. } if !loaded.is_empty() => return Ok(loaded),
        WorkloadResponse::Image { received, .. } => received,
        WorkloadResponse::Error { message, .. } => return Err(message),
        other => return Err(format!("unexpected answer to the image offer: {other:?}")),
    };
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read the image file {}: {e}", path.display()))?;
    loop {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        file.seek(std::io::SeekFrom::Start(from))
            .await
            .map_err(|e| e.to_string())?;
        let want = usize::try_from((size - from).min(IMAGE_CHUNK_BYTES as u64)).unwrap_or(0);
        let mut data = vec![0u8; want];
        file.read_exact(&mut data)
            .await
            .map_err(|e| format!("cannot read the image file {}: {e}", path.display()))?;
        let last = from + want as u64 == size;
        let chunk = WorkloadRequest::ImageChunk {
            contract,
            digest: digest.clone(),
            offset: from,
            data,
        };
        let timeout = if last {
            LOAD_TIMEOUT
        } else {
            super::APP_TIMEOUT
        };
        match ask(discovery, node, &chunk, timeout).await {
            Ok(WorkloadResponse::Image { loaded, .. }) if !loaded.is_empty() => return Ok(loaded),
            Ok(WorkloadResponse::Image { received, .. }) if received > from => {
                attempts = 0;
                from = received;
                continue;
            }
            Ok(WorkloadResponse::Error { code, message }) if code != Code::ImageRefused => {
                return Err(message);
            }
            Ok(WorkloadResponse::Error { message, .. }) if last => return Err(message),
            Ok(_) | Err(_) => {}
        }
        attempts += 1;
        if attempts >= CHUNK_ATTEMPTS {
            return Err(format!(
                "the image transfer to {} stopped at byte {from} of {size}",
                node.short()
            ));
        }
        // Ask where the provider stands, and go on from there.
        match ask(discovery, node, &offer, super::APP_TIMEOUT).await {
            Ok(WorkloadResponse::Image { loaded, .. }) if !loaded.is_empty() => return Ok(loaded),
            Ok(WorkloadResponse::Image { received, .. }) => from = received,
            Ok(WorkloadResponse::Error { message, .. }) => return Err(message),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        fluidos_contracts::SecretKey::from_seed(&[3; 32]).node_id()
    }

    fn digest_of(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    #[test]
    fn chunks_in_order_complete_the_tarball_repeats_are_idempotent_and_bad_input_is_typed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut u = Uploads::new(tmp.path().join("images"));
        let data = vec![7u8; 10];
        let d = digest_of(&data);
        let refused = |s: Step| {
            matches!(
                s,
                Step::Answer(WorkloadResponse::Error {
                    code: Code::ImageRefused,
                    ..
                })
            )
        };
        assert!(refused(u.offer(node(), "sha256:xyz", 10)));
        assert!(refused(u.offer(node(), &d, 0)));
        assert!(refused(u.offer(node(), &d, MAX_IMAGE_BYTES + 1)));
        assert!(
            refused(u.chunk(node(), &d, 0, &data[..4])),
            "chunk before offer"
        );
        assert!(matches!(
            u.offer(node(), &d, 10),
            Step::Answer(WorkloadResponse::Image { received: 0, .. })
        ));
        assert!(matches!(
            u.chunk(node(), &d, 0, &data[..4]),
            Step::Answer(WorkloadResponse::Image { received: 4, .. })
        ));
        // The same chunk again: nothing more written.
        assert!(matches!(
            u.chunk(node(), &d, 0, &data[..4]),
            Step::Answer(WorkloadResponse::Image { received: 4, .. })
        ));
        // Out of order, or past the size: refused.
        assert!(refused(u.chunk(node(), &d, 6, &data[..2])));
        assert!(refused(u.chunk(node(), &d, 4, &[0; 7])));
        // A new offer says where to resume.
        assert!(matches!(
            u.offer(node(), &d, 10),
            Step::Answer(WorkloadResponse::Image { received: 4, .. })
        ));
        let Step::Load { path, .. } = u.chunk(node(), &d, 4, &data[4..]) else {
            panic!("the last chunk did not complete the tarball");
        };
        assert_eq!(std::fs::read(&path).unwrap(), data);
        u.finished(node(), &d, &Ok(vec!["img:1".into()]));
        assert!(!path.exists());
        // Loaded: a new offer is answered at once.
        let Step::Answer(WorkloadResponse::Image { loaded, .. }) = u.offer(node(), &d, 10) else {
            panic!("not answered");
        };
        assert_eq!(loaded, ["img:1"]);
    }

    #[test]
    fn a_tarball_that_does_not_match_its_digest_is_refused_and_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let mut u = Uploads::new(tmp.path().join("images"));
        let d = digest_of(b"right");
        assert!(matches!(
            u.offer(node(), &d, 5),
            Step::Answer(WorkloadResponse::Image { .. })
        ));
        let Step::Answer(WorkloadResponse::Error { code, message }) =
            u.chunk(node(), &d, 0, b"wrong")
        else {
            panic!("a wrong tarball was accepted");
        };
        assert_eq!(code, Code::ImageRefused);
        assert!(message.contains("sha256"), "{message}");
        // It starts over with a fresh offer.
        assert!(matches!(
            u.offer(node(), &d, 5),
            Step::Answer(WorkloadResponse::Image { received: 0, .. })
        ));
    }
}
