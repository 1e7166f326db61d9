//! The files a replica leaves in the runtime's state dir, shared by the runtime and the
//! supervisor. One directory per replica (`ReplicaId::dir_name`):
//!
//! | file | written by | content |
//! |---|---|---|
//! | `launch.json` | runtime, before the supervisor starts | [`Launch`]: the spec and how to run it |
//! | `lock` | supervisor | exclusive `flock` held for the supervisor's whole life: held ⇔ it is alive |
//! | `state.json` | supervisor (recovery when it died) | [`State`]: pids and the [`ReplicaStatus`] |
//! | `output.cur`, `output.old` | supervisor | the output ring, two segments of half the limit |
//! | `output.dropped` | supervisor | exists once output has been dropped from the ring |
//! | `supervisor.log` | supervisor's stderr | its own diagnostics |
//! | `work/` | — | the replica's working directory |
//!
//! `launch.json` and `state.json` are replaced atomically (write, fsync, rename, fsync dir).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::cgroup::CgroupPlan;
use super::spec::ReplicaSpec;
use super::types::ReplicaStatus;

pub(crate) const LAUNCH: &str = "launch.json";
pub(crate) const STATE: &str = "state.json";
pub(crate) const LOCK: &str = "lock";
pub(crate) const OUT_CUR: &str = "output.cur";
pub(crate) const OUT_OLD: &str = "output.old";
pub(crate) const OUT_DROPPED: &str = "output.dropped";
pub(crate) const SUPERVISOR_LOG: &str = "supervisor.log";
pub(crate) const WORK: &str = "work";

/// Everything the supervisor needs to run a replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Launch {
    pub(crate) spec: ReplicaSpec,
    /// The program, resolved to a path by the runtime.
    pub(crate) program_path: PathBuf,
    /// Environment given to the process (spec env + PATH default + labels).
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stop_grace_ms: u64,
    pub(crate) output_limit_bytes: u64,
    pub(crate) cgroup: Option<CgroupPlan>,
    /// Apply `RLIMIT_AS` = the memory limit (when no memory cgroup applies).
    pub(crate) rlimit_memory: bool,
}

/// The supervisor's record of a replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) supervisor_pid: u32,
    pub(crate) child_pid: Option<u32>,
    /// The cgroup directories made for the replica, so recovery can kill what is left.
    pub(crate) cgroup_dirs: Vec<PathBuf>,
    pub(crate) status: ReplicaStatus,
}

/// The one line the supervisor prints on stdout once the process runs, or could not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Report {
    Running { pid: u32, started_at_ms: u64 },
    Failed { reason: String },
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Writes `bytes` to `dir/name` so that a reader sees the old or the new content, never a mix,
/// and the new content survives a crash once this returns.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

pub(crate) fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(dir, name, &bytes)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Tries to take the exclusive lock `path`. `Ok(None)`: someone else holds it.
pub(crate) fn try_lock(path: &Path) -> io::Result<Option<Flock<File>>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(io::Error::from(e)),
    }
}

/// Reads the tail of a replica's output ring: at most `tail` bytes.
pub(crate) fn read_output(dir: &Path, tail: usize) -> io::Result<(Vec<u8>, bool)> {
    let read = |name: &str| -> io::Result<Vec<u8>> {
        match fs::read(dir.join(name)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    };
    // `cur` first: a rotation between the two reads then loses a segment rather than
    // showing one twice.
    let cur = read(OUT_CUR)?;
    let mut data = read(OUT_OLD)?;
    data.extend_from_slice(&cur);
    let mut truncated = dir.join(OUT_DROPPED).exists();
    if data.len() > tail {
        data.drain(..data.len() - tail);
        truncated = true;
    }
    Ok((data, truncated))
}

/// Bounded output log: two segments of `limit / 2` bytes; when the current one is full it
/// becomes the old one (replacing the previous old one) and a new one starts. At most
/// `limit` bytes are ever on disk, and the last `limit / 2` bytes are always kept.
pub(crate) struct OutputRing {
    dir: PathBuf,
    segment: u64,
    cur: File,
    cur_len: u64,
    dropped: bool,
    errors: u64,
}

impl OutputRing {
    pub(crate) fn create(dir: &Path, limit: u64) -> io::Result<Self> {
        let cur = File::create(dir.join(OUT_CUR))?;
        Ok(Self {
            dir: dir.to_owned(),
            segment: (limit / 2).max(1),
            cur,
            cur_len: 0,
            dropped: false,
            errors: 0,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let old = self.dir.join(OUT_OLD);
        if !self.dropped && old.exists() {
            self.dropped = true;
            File::create(self.dir.join(OUT_DROPPED))?;
        }
        fs::rename(self.dir.join(OUT_CUR), old)?;
        self.cur = File::create(self.dir.join(OUT_CUR))?;
        self.cur_len = 0;
        Ok(())
    }

    /// A write failed (disk full?): said once on the supervisor's stderr, then counted.
    pub(crate) fn note_error(&mut self, e: &io::Error) {
        if self.errors == 0 {
            eprintln!("cannot write the replica's output, dropping it: {e}");
        }
        self.errors += 1;
    }

    pub(crate) fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        // Bytes that would be rotated out before this write ends are skipped.
        let keep = usize::try_from(self.segment.saturating_mul(2)).unwrap_or(usize::MAX);
        if buf.len() > keep {
            buf = &buf[buf.len() - keep..];
            // Output was skipped: say so, as a rotation over an old segment would.
            if !self.dropped {
                self.dropped = true;
                File::create(self.dir.join(OUT_DROPPED))?;
            }
        }
        while !buf.is_empty() {
            if self.cur_len >= self.segment {
                self.rotate()?;
            }
            let space = usize::try_from(self.segment - self.cur_len).unwrap_or(usize::MAX);
            let n = space.min(buf.len());
            self.cur.write_all(&buf[..n])?;
            self.cur_len += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_tail_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = OutputRing::create(dir.path(), 100).unwrap();
        let all: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for chunk in all.chunks(7) {
            ring.write(chunk).unwrap();
        }
        let (data, truncated) = read_output(dir.path(), usize::MAX).unwrap();
        assert!(truncated);
        assert!(data.len() >= 50 && data.len() <= 100, "{}", data.len());
        assert_eq!(data[..], all[all.len() - data.len()..]);
        let (tail, _) = read_output(dir.path(), 10).unwrap();
        assert_eq!(tail[..], all[all.len() - 10..]);
        // One write bigger than the whole ring.
        ring.write(&all).unwrap();
        let (data, _) = read_output(dir.path(), usize::MAX).unwrap();
        assert_eq!(data[..], all[all.len() - data.len()..]);
        assert!(data.len() <= 100);
    }

    #[test]
    fn small_output_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = OutputRing::create(dir.path(), 100).unwrap();
        ring.write(b"hello").unwrap();
        assert_eq!(
            read_output(dir.path(), 1000).unwrap(),
            (b"hello".to_vec(), false)
        );
    }

    #[test]
    fn json_roundtrip_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        write_json(dir.path(), "x.json", &vec![1u32, 2]).unwrap();
        let back: Option<Vec<u32>> = read_json(&dir.path().join("x.json")).unwrap();
        assert_eq!(back, Some(vec![1, 2]));
        let none: Option<Vec<u32>> = read_json(&dir.path().join("missing.json")).unwrap();
        assert_eq!(none, None);
        let l = try_lock(&dir.path().join("lock")).unwrap();
        assert!(l.is_some());
        assert!(try_lock(&dir.path().join("lock")).unwrap().is_none());
        drop(l);
        assert!(try_lock(&dir.path().join("lock")).unwrap().is_some());
    }
}
