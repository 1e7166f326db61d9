//! Resource quantities: what a flavor offers and what a partition takes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Fungible quantities of compute. All arithmetic is checked or saturating; a
/// quantity never wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one logical CPU).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub storage_bytes: u64,
    /// Workload slots (pods in FLUIDOS terms).
    pub pods: u64,
    /// Whole GPUs.
    pub gpus: u64,
}

/// The names of the fields of [`Resources`], in order, for messages and tables.
pub const RESOURCE_NAMES: [&str; 5] = ["cpu", "memory", "storage", "pods", "gpus"];

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
        storage_bytes: 0,
        pods: 0,
        gpus: 0,
    };

    /// The quantities as an array, in the order of [`RESOURCE_NAMES`].
    pub fn as_array(&self) -> [u64; 5] {
        [
            self.cpu_millis,
            self.memory_bytes,
            self.storage_bytes,
            self.pods,
            self.gpus,
        ]
    }

    /// Builds quantities from an array in the order of [`RESOURCE_NAMES`].
    pub fn from_array(a: [u64; 5]) -> Self {
        Self {
            cpu_millis: a[0],
            memory_bytes: a[1],
            storage_bytes: a[2],
            pods: a[3],
            gpus: a[4],
        }
    }

    fn zip(&self, other: &Self, f: impl Fn(u64, u64) -> Option<u64>) -> Option<Self> {
        let (a, b) = (self.as_array(), other.as_array());
        let mut out = [0u64; 5];
        for i in 0..5 {
            out[i] = f(a[i], b[i])?;
        }
        Some(Self::from_array(out))
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        self.zip(other, u64::checked_add)
    }

    /// `self - other`, or `None` if any quantity would go below zero.
    pub fn checked_sub(&self, other: &Self) -> Option<Self> {
        self.zip(other, u64::checked_sub)
    }

    /// `self - other`, each quantity clamped at zero.
    pub fn saturating_sub(&self, other: &Self) -> Self {
        self.zip(other, |a, b| Some(a.saturating_sub(b)))
            .unwrap_or(Self::ZERO)
    }

    /// Whether every quantity of `self` is at most the one of `other`.
    pub fn fits_within(&self, other: &Self) -> bool {
        self.as_array()
            .iter()
            .zip(other.as_array())
            .all(|(a, b)| *a <= b)
    }

    /// Whether every quantity is zero.
    pub fn is_zero(&self) -> bool {
        self.as_array().iter().all(|q| *q == 0)
    }

    /// The largest fraction, in parts per million, that any quantity of `self`
    /// takes of the same quantity of `whole` (the dominant share). Quantities that
    /// `whole` does not have count as a full share when `self` asks for them.
    pub fn dominant_share_ppm(&self, whole: &Self) -> u64 {
        self.as_array()
            .iter()
            .zip(whole.as_array())
            .map(|(part, whole)| match (*part, whole) {
                (0, _) => 0,
                (_, 0) => 1_000_000,
                (p, w) => {
                    ((p as u128 * 1_000_000).div_ceil(w as u128)).min(u64::MAX as u128) as u64
                }
            })
            .max()
            .unwrap_or(0)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={} memory={} storage={} pods={}",
            format_millis(self.cpu_millis),
            format_bytes(self.memory_bytes),
            format_bytes(self.storage_bytes),
            self.pods
        )?;
        if self.gpus > 0 {
            write!(f, " gpus={}", self.gpus)?;
        }
        Ok(())
    }
}

/// Formats millicores as cores, e.g. `1.5` or `2`.
pub fn format_millis(m: u64) -> String {
    if m.is_multiple_of(1000) {
        format!("{}", m / 1000)
    } else {
        format!("{}.{:03}", m / 1000, m % 1000)
            .trim_end_matches('0')
            .to_string()
    }
}

/// Formats bytes with the largest binary unit that fits: whole when exact, else one
/// decimal (`4GiB`, `21.2GiB`, `512B`).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if b >= size {
            return if b.is_multiple_of(size) {
                format!("{}{name}", b / size)
            } else {
                format!("{:.1}{name}", b as f64 / size as f64)
            };
        }
    }
    format!("{b}B")
}

/// A quantity string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity `{input}`: {reason}")]
pub struct ParseQuantityError {
    input: String,
    reason: &'static str,
}

/// Parses a byte size: a number with an optional unit `B`, `K`/`KB`, `KiB`, `M`,
/// `MB`, `MiB`, `G`, `GB`, `GiB`, `T`, `TB`, `TiB` (SI units are powers of 1000, `*i*`
/// units powers of 1024; a bare `G` means GiB as in Kubernetes' `Gi`). Decimals are
/// allowed: `1.5GiB`.
pub fn parse_bytes(input: &str) -> Result<u64, ParseQuantityError> {
    let err = |reason| ParseQuantityError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "Ki" | "KiB" => 1 << 10,
        "M" | "Mi" | "MiB" => 1 << 20,
        "G" | "Gi" | "GiB" => 1 << 30,
        "T" | "Ti" | "TiB" => 1 << 40,
        "KB" | "k" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(err(
                "unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)",
            ));
        }
    };
    scale(number, multiplier).ok_or_else(|| err("not a non-negative number that fits in 64 bits"))
}

/// Parses CPUs: `2`, `0.5`, or millicores `500m`.
pub fn parse_cpu_millis(input: &str) -> Result<u64, ParseQuantityError> {
    let s = input.trim();
    let parsed = match s.strip_suffix('m') {
        Some(m) => m.parse::<u64>().ok(),
        None => scale(s, 1000),
    };
    parsed.ok_or_else(|| ParseQuantityError {
        input: input.to_string(),
        reason: "expected cores such as `2` or `0.5`, or millicores such as `500m`",
    })
}

fn scale(number: &str, multiplier: u64) -> Option<u64> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(multiplier)?;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits: u64 = frac.parse().ok()?;
        let denom = 10u64.pow(frac.len() as u32);
        let part = (digits as u128 * multiplier as u128) / denom as u128;
        total = total.checked_add(u64::try_from(part).ok()?)?;
    }
    Some(total)
}

/// A CPU architecture, in the names Rust and Docker use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// x86-64 (`amd64` in Docker).
    X86_64,
    /// 64-bit ARM (`arm64` in Docker).
    Aarch64,
    /// 64-bit RISC-V.
    Riscv64,
    /// Any other architecture, by name.
    Other(String),
}

impl Architecture {
    /// The architecture this program was built for.
    pub fn host() -> Self {
        std::env::consts::ARCH
            .parse()
            .unwrap_or(Architecture::Other(std::env::consts::ARCH.to_string()))
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Aarch64 => "aarch64",
            Architecture::Riscv64 => "riscv64",
            Architecture::Other(s) => s,
        })
    }
}

impl FromStr for Architecture {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "x86_64" | "amd64" => Architecture::X86_64,
            "aarch64" | "arm64" => Architecture::Aarch64,
            "riscv64" => Architecture::Riscv64,
            other => Architecture::Other(other.to_string()),
        })
    }
}

/// What kind of GPU a flavor offers (the count is in [`Resources::gpus`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Model name as the driver reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Memory of one GPU in bytes.
    pub memory_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("1024").unwrap(), 1024);
        assert!(parse_bytes("4XB").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-1G").is_err());
        assert!(parse_bytes("99999999999999TiB").is_err());
    }

    #[test]
    fn parses_cpus() {
        assert_eq!(parse_cpu_millis("2").unwrap(), 2000);
        assert_eq!(parse_cpu_millis("0.5").unwrap(), 500);
        assert_eq!(parse_cpu_millis("250m").unwrap(), 250);
        assert!(parse_cpu_millis("two").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(4 << 30), "4GiB");
        assert_eq!(format_bytes(1536 << 20), "1.5GiB");
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_millis(1500), "1.5");
        assert_eq!(format_millis(2000), "2");
    }

    #[test]
    fn arithmetic_is_checked() {
        let a = Resources {
            cpu_millis: 1000,
            memory_bytes: 10,
            ..Default::default()
        };
        let b = Resources {
            cpu_millis: 2000,
            ..Default::default()
        };
        assert_eq!(a.checked_sub(&b), None);
        assert_eq!(b.checked_sub(&a), None); // memory would go negative
        assert!(a.fits_within(&a.checked_add(&b).unwrap()));
        assert_eq!(
            a.dominant_share_ppm(&Resources {
                cpu_millis: 4000,
                memory_bytes: 20,
                ..Default::default()
            }),
            500_000
        );
    }
}
