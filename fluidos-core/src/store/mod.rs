//! Crash-safe persistence of reservations, offers and contracts, for both roles.
//!
//! # Durability rule
//!
//! **Persist before you acknowledge.** The ledger and the buyer hand out
//! [`Record`]s; the driver [`Store::append`]s the records of every request it is
//! about to answer, calls [`Store::sync`] once (group commit: one `fdatasync` for
//! the whole batch), and only then sends the responses. A crash therefore never
//! loses anything a peer was told.
//!
//! # On-disk format
//!
//! A directory with three files:
//!
//! - `journal.fldb`: the 8-byte magic `FLDJRN01`, then frames;
//! - `snapshot.fldb`: the 8-byte magic `FLDSNP01`, then frames — the live set as of
//!   the last compaction;
//! - `lock`: held with an exclusive `flock` while a [`Store`] is open.
//!
//! A frame is `len: u32 LE`, `crc: u32 LE` (CRC-32/IEEE of the payload), then
//! `len` bytes of payload: a CBOR array of [`Record`]s. Each [`Store::sync`] writes
//! exactly one frame and `fdatasync`s it before the next frame is written, so only
//! the last frame of the journal can be torn by a crash.
//!
//! On open, the snapshot must be intact (it is only ever made visible by
//! `rename`); the journal is replayed over it. A bad last frame of the journal, or
//! one followed only by zero bytes, is a torn write: it is cut off (it was never
//! acknowledged). A bad frame followed by other data is corruption, and opening
//! fails with [`OpenError::Corrupt`] naming the file and the offset.
//!
//! Compaction writes the [`LiveSet`] to `snapshot.fldb.tmp`, `fsync`s it, renames
//! it over `snapshot.fldb`, `fsync`s the directory, then truncates the journal. A
//! crash in between replays the journal over a snapshot that already holds it,
//! which is harmless: folding records is last-write-wins per key. The store
//! compacts on open and whenever the journal outgrows both
//! [`StoreOptions::compact_threshold_bytes`] and the last snapshot: rewriting the
//! live set costs what it holds, so waiting until the journal is as large keeps
//! the writing per record constant, however many contracts are live.

mod record;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub use record::{BuyerContractState, LiveSet, Record, RecordKey};

const JOURNAL: &str = "journal.fldb";
const SNAPSHOT: &str = "snapshot.fldb";
const SNAPSHOT_TMP: &str = "snapshot.fldb.tmp";
const LOCK: &str = "lock";
const JOURNAL_MAGIC: &[u8; 8] = b"FLDJRN01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"FLDSNP01";
const FRAME_HEADER: usize = 8;
/// The largest frame accepted, in bytes of payload.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// Records per snapshot frame.
const SNAPSHOT_CHUNK: usize = 1024;

/// Tuning of a [`Store`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Compact once the journal holds more than this many bytes.
    pub compact_threshold_bytes: u64,
}

impl StoreOptions {
    /// Sets the journal size that triggers compaction.
    pub fn with_compact_threshold(mut self, bytes: u64) -> Self {
        self.compact_threshold_bytes = bytes;
        self
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            compact_threshold_bytes: 8 << 20,
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A file or directory could not be read, written or created.
    #[error("store file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process (or another `Store` in this one) has the store open.
    #[error("store {path} is locked by another process; stop it or use another data directory")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A file holds damaged data that is not a torn tail. Nothing was changed;
    /// restore the file from a backup, or move it away to start empty.
    #[error("store file {path} is corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged frame starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why records could not be made durable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Writing or syncing failed. The records of the failed batch are not durable:
    /// do not acknowledge the requests they belong to.
    #[error("store file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The records could not be encoded.
    #[error("cannot encode records: {0}")]
    Encode(String),
    /// The batch is larger than [`MAX_FRAME_BYTES`]; sync smaller batches.
    #[error("batch of {len} bytes exceeds the frame limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge {
        /// The encoded size of the batch.
        len: usize,
    },
    /// An earlier write failed half-way and could not be undone; the journal may
    /// end in a partial frame. Reopen the store (which cuts it off).
    #[error("store is unusable after a failed write; reopen it")]
    Poisoned,
}

/// The durable journal of one node. See the [module docs](self) for the format.
///
/// Call order: [`Store::open`] once (it returns the live records to restore the
/// ledger and the buyer from), then any number of [`Store::append`] for the records
/// of the requests being answered, then [`Store::sync`], then send the answers.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal: File,
    journal_len: u64,
    /// Bytes of the snapshot last written or read (compaction waits for the journal to outgrow it).
    snapshot_len: u64,
    pending: Vec<Record>,
    live: LiveSet,
    options: StoreOptions,
    poisoned: bool,
    // Held for its flock; released when the store is dropped.
    _lock: File,
}

impl Store {
    /// Opens (or creates) the store in `dir` with default options. Returns the
    /// live records, ordered by key.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Store, Vec<Record>), OpenError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<(Store, Vec<Record>), OpenError> {
        let dir = dir.as_ref().to_path_buf();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;

        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OpenError::Io {
                    path: lock_path,
                    source,
                });
            }
        }

        let mut live = LiveSet::new();
        let mut snapshot_len = 0;
        let snapshot_path = dir.join(SNAPSHOT);
        if let Some(bytes) = read_if_exists(&snapshot_path).map_err(io(&snapshot_path))? {
            snapshot_len = bytes.len() as u64;
            let parsed = parse(&bytes, SNAPSHOT_MAGIC, &snapshot_path)?;
            if let Some(torn) = parsed.torn_at {
                // The snapshot only becomes visible through rename after fsync:
                // a bad frame in it is damage, never a torn write.
                return Err(OpenError::Corrupt {
                    path: snapshot_path,
                    offset: torn,
                    reason: "snapshot ends in a damaged frame".into(),
                });
            }
            parsed.records.iter().for_each(|r| live.apply(r));
        }
        let tmp = dir.join(SNAPSHOT_TMP);
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io(&tmp))?;
        }

        let journal_path = dir.join(JOURNAL);
        let mut journal = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&journal_path)
            .map_err(io(&journal_path))?;
        let mut bytes = Vec::new();
        journal.read_to_end(&mut bytes).map_err(io(&journal_path))?;
        let journal_len = if bytes.len() < JOURNAL_MAGIC.len() && JOURNAL_MAGIC.starts_with(&bytes)
        {
            // New, or torn while being created.
            journal.set_len(0).map_err(io(&journal_path))?;
            write_at_end(&mut journal, 0, JOURNAL_MAGIC).map_err(io(&journal_path))?;
            journal.sync_all().map_err(io(&journal_path))?;
            sync_dir(&dir).map_err(io(&dir))?;
            JOURNAL_MAGIC.len() as u64
        } else {
            let parsed = parse(&bytes, JOURNAL_MAGIC, &journal_path)?;
            if let Some(torn) = parsed.torn_at {
                tracing::warn!(
                    path = %journal_path.display(),
                    offset = torn,
                    cut_bytes = bytes.len() as u64 - torn,
                    "cutting off a torn write at the end of the journal"
                );
                journal.set_len(torn).map_err(io(&journal_path))?;
                journal.sync_all().map_err(io(&journal_path))?;
            }
            parsed.records.iter().for_each(|r| live.apply(r));
            parsed.torn_at.unwrap_or(bytes.len() as u64)
        };

        let mut store = Store {
            dir,
            journal,
            journal_len,
            snapshot_len,
            pending: Vec::new(),
            live,
            options,
            poisoned: false,
            _lock: lock,
        };
        if store.journal_len > JOURNAL_MAGIC.len() as u64 {
            store.compact().map_err(|e| match e {
                StoreError::Io { path, source } => OpenError::Io { path, source },
                other => OpenError::Io {
                    path: store.dir.join(SNAPSHOT_TMP),
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        }
        let records = store.live.to_vec();
        Ok((store, records))
    }

    /// Queues records for the next [`Store::sync`]. Nothing is durable before it.
    pub fn append(&mut self, records: &[Record]) {
        self.pending.extend_from_slice(records);
    }

    /// Writes every queued record as one frame and `fdatasync`s it. On success all
    /// of them are durable; on error none may be relied on.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let frame = match encode_frame(&self.pending) {
            Ok(frame) => frame,
            Err(e) => {
                self.pending.clear();
                return Err(e);
            }
        };
        let path = self.dir.join(JOURNAL);
        let result = write_at_end(&mut self.journal, self.journal_len, &frame)
            .and_then(|()| self.journal.sync_data());
        if let Err(source) = result {
            self.pending.clear();
            // Leave no partial frame behind, or the next frame would follow garbage
            // and the journal would read as corrupt.
            if self.journal.set_len(self.journal_len).is_err() {
                self.poisoned = true;
            }
            return Err(StoreError::Io { path, source });
        }
        self.journal_len += frame.len() as u64;
        for record in self.pending.drain(..) {
            self.live.apply(&record);
        }
        if self.journal_len > self.options.compact_threshold_bytes.max(self.snapshot_len) {
            // The batch is durable already; a failed compaction only leaves a long
            // journal behind, to be compacted on the next attempt or open.
            if let Err(error) = self.compact() {
                tracing::error!(%error, "journal compaction failed");
            }
        }
        Ok(())
    }

    /// [`Store::append`] then [`Store::sync`].
    pub fn commit(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.append(records);
        self.sync()
    }

    /// The live records as of the last successful sync, ordered by key.
    pub fn live(&self) -> &LiveSet {
        &self.live
    }

    /// Bytes in the journal, its header included.
    pub fn journal_len(&self) -> u64 {
        self.journal_len
    }

    /// Bytes of the snapshot last written or read at open.
    pub fn snapshot_len(&self) -> u64 {
        self.snapshot_len
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the live set as the new snapshot and empties the journal.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let tmp_path = self.dir.join(SNAPSHOT_TMP);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        let records = self.live.to_vec();
        for chunk in records.chunks(SNAPSHOT_CHUNK) {
            out.extend_from_slice(&encode_frame(chunk)?);
        }
        let mut tmp = File::create(&tmp_path).map_err(io(&tmp_path))?;
        tmp.write_all(&out).map_err(io(&tmp_path))?;
        self.snapshot_len = out.len() as u64;
        tmp.sync_all().map_err(io(&tmp_path))?;
        drop(tmp);
        let snapshot_path = self.dir.join(SNAPSHOT);
        std::fs::rename(&tmp_path, &snapshot_path).map_err(io(&snapshot_path))?;
        sync_dir(&self.dir).map_err(io(&self.dir))?;

        let journal_path = self.dir.join(JOURNAL);
        self.journal
            .set_len(JOURNAL_MAGIC.len() as u64)
            .map_err(io(&journal_path))?;
        self.journal.sync_all().map_err(io(&journal_path))?;
        self.journal_len = JOURNAL_MAGIC.len() as u64;
        tracing::debug!(live = self.live.len(), "store compacted");
        Ok(())
    }
}

fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_at_end(file: &mut File, at: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(at))?;
    file.write_all(bytes)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One frame: length, CRC-32 and the CBOR array of `records`.
pub fn encode_frame(records: &[Record]) -> Result<Vec<u8>, StoreError> {
    let mut frame = vec![0u8; FRAME_HEADER];
    ciborium::into_writer(&records, &mut frame).map_err(|e| StoreError::Encode(e.to_string()))?;
    let len = frame.len() - FRAME_HEADER;
    if len > MAX_FRAME_BYTES {
        return Err(StoreError::TooLarge { len });
    }
    let crc = crc32fast::hash(&frame[FRAME_HEADER..]);
    frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(frame)
}

struct Parsed {
    records: Vec<Record>,
    /// Where a torn tail starts, if the file ends in one.
    torn_at: Option<u64>,
}

fn parse(bytes: &[u8], magic: &[u8; 8], path: &Path) -> Result<Parsed, OpenError> {
    let corrupt = |offset: usize, reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < magic.len() || &bytes[..magic.len()] != magic {
        return Err(corrupt(
            0,
            format!(
                "missing the header `{}`: not a fluidos store file of this version",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let mut records = Vec::new();
    let mut at = magic.len();
    while at < bytes.len() {
        let rest = &bytes[at..];
        // Everything after `at` is zero: the file was extended but never written.
        let only_zeros = |from: usize| bytes[from..].iter().all(|b| *b == 0);
        if rest.len() < FRAME_HEADER {
            return Ok(Parsed {
                records,
                torn_at: Some(at as u64),
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 || len > MAX_FRAME_BYTES {
            if only_zeros(at) {
                return Ok(Parsed {
                    records,
                    torn_at: Some(at as u64),
                });
            }
            return Err(corrupt(at, format!("frame length {len} is out of range")));
        }
        let end = at + FRAME_HEADER + len;
        if end > bytes.len() {
            // The frame runs past the end of the file: its write was cut short.
            return Ok(Parsed {
                records,
                torn_at: Some(at as u64),
            });
        }
        let payload = &bytes[at + FRAME_HEADER..end];
        if crc32fast::hash(payload) != crc {
            if end == bytes.len() || only_zeros(end) {
                return Ok(Parsed {
                    records,
                    torn_at: Some(at as u64),
                });
            }
            return Err(corrupt(
                at,
                "checksum mismatch in a frame that is followed by more data".into(),
            ));
        }
        let batch: Vec<Record> = ciborium::from_reader(payload).map_err(|e| {
            corrupt(
                at,
                format!("frame checksum is right but its records do not decode: {e}"),
            )
        })?;
        records.extend(batch);
        at = end;
    }
    Ok(Parsed {
        records,
        torn_at: None,
    })
}
