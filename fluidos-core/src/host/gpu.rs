//! GPU discovery: parsers for what the NVIDIA driver prints, and the one place
//! that runs `nvidia-smi`.
//!
//! The parsers are pure and tested on real captures (`tests/fixtures/`); the
//! probe degrades to "no GPU" quietly on machines without the driver.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The `nvidia-smi` arguments whose output [`parse_nvidia_smi_csv`] reads.
pub const NVIDIA_SMI_QUERY: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.total,memory.used,driver_version,pci.bus_id,compute_cap,mig.mode.current",
    "--format=csv",
];

/// How long `nvidia-smi` may take before it is killed; a wedged driver must not
/// stall re-measurement.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(5);

/// One GPU as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// The driver's index (`nvidia-smi -i`).
    pub index: u32,
    /// Stable identifier (`GPU-…`).
    pub uuid: String,
    /// Model name, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Total memory in bytes; 0 when unknown.
    pub memory_total_bytes: u64,
    /// Memory in use in bytes, when known.
    pub memory_used_bytes: Option<u64>,
    /// Driver version, when known.
    pub driver_version: Option<String>,
    /// PCI bus id, e.g. `00000000:00:06.0`.
    pub pci_bus_id: Option<String>,
    /// CUDA compute capability, e.g. `9.0`.
    pub compute_capability: Option<String>,
    /// Whether MIG is enabled (`None` when the GPU does not support MIG).
    pub mig_enabled: Option<bool>,
}

/// A line of GPU output could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuParseError {
    /// A CSV row has the wrong number of columns.
    #[error("line {line}: expected {expected} columns, found {found}")]
    Columns {
        /// 1-based line number.
        line: usize,
        /// Columns expected.
        expected: usize,
        /// Columns found.
        found: usize,
    },
    /// A field does not hold what it should.
    #[error("line {line}: field `{field}` has unexpected value `{value}`")]
    Field {
        /// 1-based line number.
        line: usize,
        /// The column name.
        field: &'static str,
        /// The value found.
        value: String,
    },
}

/// Parses the output of `nvidia-smi` with [`NVIDIA_SMI_QUERY`].
///
/// Accepts `--format=csv` (header line, `MiB` units) as well as
/// `csv,noheader,nounits`. `[N/A]` and `[Not Supported]` become `None`.
pub fn parse_nvidia_smi_csv(text: &str) -> Result<Vec<Gpu>, GpuParseError> {
    const COLUMNS: usize = 9;
    let mut gpus = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let row = raw.trim();
        if row.is_empty() || row.starts_with("index") {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != COLUMNS {
            return Err(GpuParseError::Columns {
                line,
                expected: COLUMNS,
                found: fields.len(),
            });
        }
        let bad = |field: &'static str, value: &str| GpuParseError::Field {
            line,
            field,
            value: value.to_string(),
        };
        let index = fields[0].parse().map_err(|_| bad("index", fields[0]))?;
        let uuid = fields[1].to_string();
        if uuid.is_empty() {
            return Err(bad("uuid", fields[1]));
        }
        let model = fields[2].to_string();
        if model.is_empty() {
            return Err(bad("name", fields[2]));
        }
        let memory_total_bytes = match mib(fields[3]) {
            Some(Some(b)) => b,
            Some(None) => 0,
            None => return Err(bad("memory.total", fields[3])),
        };
        let memory_used_bytes = mib(fields[4]).ok_or_else(|| bad("memory.used", fields[4]))?;
        let mig_enabled = match not_available(fields[8]) {
            None => None,
            Some("Enabled") => Some(true),
            Some("Disabled") => Some(false),
            Some(other) => return Err(bad("mig.mode.current", other)),
        };
        gpus.push(Gpu {
            index,
            uuid,
            model,
            memory_total_bytes,
            memory_used_bytes,
            driver_version: not_available(fields[5]).map(str::to_string),
            pci_bus_id: not_available(fields[6]).map(str::to_string),
            compute_capability: not_available(fields[7]).map(str::to_string),
            mig_enabled,
        });
    }
    Ok(gpus)
}

/// `None` for the driver's "no value" markers.
fn not_available(field: &str) -> Option<&str> {
    match field {
        "" | "[N/A]" | "N/A" | "[Not Supported]" | "[Unknown Error]" => None,
        v => Some(v),
    }
}

/// A MiB quantity (`81559 MiB` or `81559`) in bytes: `Some(None)` when the
/// driver gives no value, `None` when the text is not a quantity.
fn mib(field: &str) -> Option<Option<u64>> {
    let Some(v) = not_available(field) else {
        return Some(None);
    };
    let number = v.strip_suffix("MiB").unwrap_or(v).trim();
    number.parse::<u64>().ok()?.checked_mul(1 << 20).map(Some)
}

/// What `/proc/driver/nvidia/gpus/<bus id>/information` says about one GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcGpuInfo {
    /// `Model:`.
    pub model: Option<String>,
    /// `GPU UUID:`.
    pub uuid: Option<String>,
    /// `Bus Location:`.
    pub bus_location: Option<String>,
    /// `Device Minor:` (the N of `/dev/nvidiaN`).
    pub device_minor: Option<u32>,
    /// `GPU Excluded:` is `Yes`.
    pub excluded: bool,
}

/// Parses one `/proc/driver/nvidia/gpus/*/information` file. Unknown lines are
/// ignored; the format is informal and grows between driver versions.
pub fn parse_proc_gpu_information(text: &str) -> ProcGpuInfo {
    let mut info = ProcGpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Model" => info.model = Some(value.to_string()),
            "GPU UUID" => info.uuid = Some(value.to_string()),
            "Bus Location" => info.bus_location = Some(value.to_string()),
            "Device Minor" => info.device_minor = value.parse().ok(),
            "GPU Excluded" => info.excluded = value.eq_ignore_ascii_case("yes"),
            _ => {}
        }
    }
    info
}

/// Runs `nvidia-smi` and parses its output. Returns no GPUs, quietly, when the
/// tool is missing, fails, times out or prints something unparsable (logged at
/// DEBUG/WARN): a host without a usable driver simply sells no GPUs.
pub fn detect_nvidia() -> Vec<Gpu> {
    let Some(text) = run_nvidia_smi() else {
        let visible = proc_gpus(Path::new("/proc/driver/nvidia/gpus"));
        if !visible.is_empty() {
            tracing::warn!(
                count = visible.len(),
                "the NVIDIA driver lists GPUs but nvidia-smi is not usable; not offering them"
            );
        }
        return Vec::new();
    };
    match parse_nvidia_smi_csv(&text) {
        Ok(gpus) => gpus,
        Err(error) => {
            tracing::warn!(%error, "could not parse nvidia-smi output; offering no GPUs");
            Vec::new()
        }
    }
}

/// The GPUs the kernel driver lists under `dir` (`/proc/driver/nvidia/gpus`).
pub fn proc_gpus(dir: &Path) -> Vec<ProcGpuInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<ProcGpuInfo> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .map(|t| parse_proc_gpu_information(&t))
        .collect();
    out.sort_by(|a, b| a.bus_location.cmp(&b.bus_location));
    out
}

fn run_nvidia_smi() -> Option<String> {
    let mut child = match Command::new("nvidia-smi")
        .args(NVIDIA_SMI_QUERY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            tracing::debug!(%error, "nvidia-smi not available; no GPUs");
            return None;
        }
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(status)) => {
                tracing::debug!(%status, "nvidia-smi failed; no GPUs");
                return None;
            }
            Ok(None) if started.elapsed() < NVIDIA_SMI_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => {
                tracing::warn!("nvidia-smi did not answer in time; offering no GPUs");
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    let mut stdout = child.stdout.take()?;
    // The query prints one short line per GPU; a bound keeps a confused tool
    // from filling memory.
    use std::io::Read;
    (&mut stdout).take(1 << 20).read_to_string(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noheader_nounits_and_na_values() {
        let text = "0, GPU-a, Tesla T4, 15360, [N/A], 535.1, 00000000:01:00.0, 7.5, [N/A]\n\
                    1, GPU-b, Tesla T4, 15360, 10, 535.1, 00000000:02:00.0, 7.5, Enabled\n";
        let gpus = parse_nvidia_smi_csv(text).unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].memory_total_bytes, 15360 << 20);
        assert_eq!(gpus[0].memory_used_bytes, None);
        assert_eq!(gpus[0].mig_enabled, None);
        assert_eq!(gpus[1].memory_used_bytes, Some(10 << 20));
        assert_eq!(gpus[1].mig_enabled, Some(true));
    }

    #[test]
    fn malformed_rows_are_typed_errors() {
        assert!(matches!(
            parse_nvidia_smi_csv("0, GPU-a, T4\n"),
            Err(GpuParseError::Columns {
                line: 1,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            parse_nvidia_smi_csv("x, GPU-a, T4, 1 MiB, 0 MiB, 1, b, 7.5, Disabled\n"),
            Err(GpuParseError::Field { field: "index", .. })
        ));
        assert!(matches!(
            parse_nvidia_smi_csv("0, GPU-a, T4, lots, 0 MiB, 1, b, 7.5, Disabled\n"),
            Err(GpuParseError::Field {
                field: "memory.total",
                ..
            })
        ));
        assert!(matches!(
            parse_nvidia_smi_csv("0, GPU-a, T4, 1 MiB, 0 MiB, 1, b, 7.5, Maybe\n"),
            Err(GpuParseError::Field {
                field: "mig.mode.current",
                ..
            })
        ));
    }

    #[test]
    fn empty_output_means_no_gpus() {
        assert_eq!(parse_nvidia_smi_csv("").unwrap(), Vec::new());
        assert_eq!(parse_proc_gpu_information(""), ProcGpuInfo::default());
    }

    #[test]
    fn missing_proc_dir_is_quiet() {
        assert!(proc_gpus(Path::new("/nonexistent/fluidos/gpus")).is_empty());
    }
}
