//! The I/O half of the resource manager: reading the machine through `sysinfo`.

use std::path::{Path, PathBuf};

use fluidos_contracts::Architecture;
use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, System};

use super::{Gpu, HostMeasurement, gpu};

/// The host could not be measured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// `sysinfo` cannot read this platform's system information.
    #[error("cannot read system information: {0}")]
    System(String),
    /// The data directory does not exist or cannot be resolved.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The operating system reports no CPUs or no memory, so nothing sensible
    /// could be offered.
    #[error("the operating system reports {what}; refusing to offer an empty host")]
    Implausible {
        /// What was missing.
        what: &'static str,
    },
}

/// Measures the host, again and again: it keeps `sysinfo`'s handles between
/// calls so that periodic re-measurement is cheap.
///
/// `measure` blocks (it reads `/proc` and may run `nvidia-smi` for up to 5 s);
/// async callers run it on a blocking thread.
pub struct HostProbe {
    data_dir: PathBuf,
    system: System,
    disks: Disks,
    detect_gpus: bool,
}

impl std::fmt::Debug for HostProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProbe")
            .field("data_dir", &self.data_dir)
            .field("detect_gpus", &self.detect_gpus)
            .finish_non_exhaustive()
    }
}

impl HostProbe {
    /// A probe whose storage figure is the free space of the filesystem
    /// holding `data_dir` (which must exist when measuring).
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, HostError> {
        let system = System::new().map_err(|e| HostError::System(e.to_string()))?;
        let disks = Disks::new().map_err(|e| HostError::System(e.to_string()))?;
        Ok(Self {
            data_dir: data_dir.into(),
            system,
            disks,
            detect_gpus: true,
        })
    }

    /// Whether to look for GPUs (on by default). Tests and hosts that must not
    /// run `nvidia-smi` switch it off.
    pub fn detect_gpus(mut self, on: bool) -> Self {
        self.detect_gpus = on;
        self
    }

    /// Measures the host now.
    pub fn measure(&mut self) -> Result<HostMeasurement, HostError> {
        self.system.refresh_cpu_list(CpuRefreshKind::nothing());
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let logical_cpus = u32::try_from(self.system.cpus().len()).unwrap_or(u32::MAX);
        if logical_cpus == 0 {
            return Err(HostError::Implausible { what: "no CPUs" });
        }
        let total_memory_bytes = self.system.total_memory();
        if total_memory_bytes == 0 {
            return Err(HostError::Implausible { what: "no memory" });
        }

        let dir = self
            .data_dir
            .canonicalize()
            .map_err(|source| HostError::DataDir {
                path: self.data_dir.clone(),
                source,
            })?;
        // `true`: forget filesystems unmounted since the last measurement.
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        let mounts = self
            .disks
            .iter()
            .map(|d| (d.mount_point(), d.available_space()));
        let (disk_mount_point, disk_available_bytes) = match filesystem_of(&dir, mounts) {
            Some((mount, free)) => (Some(mount.to_path_buf()), free),
            None => {
                tracing::warn!(
                    data_dir = %dir.display(),
                    "no listed filesystem holds the data directory; offering no storage"
                );
                (None, 0)
            }
        };

        let gpus: Vec<Gpu> = if self.detect_gpus {
            gpu::detect_nvidia()
        } else {
            Vec::new()
        };
        Ok(HostMeasurement {
            logical_cpus,
            total_memory_bytes,
            available_memory_bytes: self.system.available_memory(),
            disk_available_bytes,
            disk_mount_point,
            architecture: Architecture::host(),
            gpus,
        })
    }
}

/// The mount whose mount point is the longest path prefix of `dir` (component
/// wise, so `/data` does not hold `/database`), with its free space.
pub(super) fn filesystem_of<'a>(
    dir: &Path,
    mounts: impl IntoIterator<Item = (&'a Path, u64)>,
) -> Option<(&'a Path, u64)> {
    mounts
        .into_iter()
        .filter(|(mount, _)| dir.starts_with(mount))
        .max_by_key(|(mount, _)| mount.components().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_mount_prefix_wins_by_component() {
        let mounts = [
            (Path::new("/"), 1),
            (Path::new("/data"), 2),
            (Path::new("/data/fast"), 3),
            (Path::new("/database"), 4),
        ];
        let pick = |d: &str| filesystem_of(Path::new(d), mounts).map(|(_, f)| f);
        assert_eq!(pick("/data/fast/fluidos"), Some(3));
        assert_eq!(pick("/data/slow"), Some(2));
        assert_eq!(pick("/databases/x"), Some(1));
        assert_eq!(pick("/var/lib/fluidos"), Some(1));
        assert_eq!(filesystem_of(Path::new("/x"), [(Path::new("/y"), 1)]), None);
    }

    #[test]
    fn measures_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = HostProbe::new(dir.path()).unwrap().detect_gpus(false);
        let m = probe.measure().unwrap();
        assert!(m.logical_cpus >= 1);
        assert!(m.total_memory_bytes >= m.available_memory_bytes);
        assert_eq!(m.architecture, Architecture::host());
        assert!(m.gpus.is_empty());
        // Measuring again works on the same handles.
        let again = probe.measure().unwrap();
        assert_eq!(again.logical_cpus, m.logical_cpus);
    }

    #[test]
    fn a_missing_data_dir_is_a_typed_error() {
        let mut probe = HostProbe::new("/nonexistent/fluidos/data").unwrap();
        assert!(matches!(probe.measure(), Err(HostError::DataDir { .. })));
    }
}
