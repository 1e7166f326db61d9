//! What to run: the runtime-level description of one replica, parsed once.
//!
//! A [`ReplicaSpec`] can only be made through [`ReplicaSpec::builder`], which refuses an
//! empty command, NUL bytes, malformed environment names and zero limits, so a runtime
//! never has to re-check them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted workload or contract id (bytes).
pub const MAX_ID_LEN: usize = 128;
/// Most arguments a command may have.
pub const MAX_ARGS: usize = 4096;
/// Most environment variables a replica may set.
pub const MAX_ENV: usize = 1024;
/// Smallest memory limit accepted: below it no program can even be loaded.
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
/// Smallest memory limit of a container: the Docker engine refuses less than 6 MiB
/// ("Minimum memory limit allowed is 6MB"), so a spec below it is refused up front
/// with a clear error instead of failing at the engine.
pub const MIN_CONTAINER_MEMORY_BYTES: u64 = 6 << 20;
/// Longest accepted image reference or owner id (bytes).
pub const MAX_REF_LEN: usize = 512;

/// Who a replica is: the workload, its replica index and the contract it runs under.
///
/// Chosen by the caller; the runtime uses it as the replica's label (directory and cgroup
/// names, the `FLUIDOS_*` environment variables of the process) and refuses a second
/// replica with the same id while the first one's record exists.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawReplicaId")]
pub struct ReplicaId {
    workload: String,
    index: u32,
    contract: String,
}

/// Why a [`ReplicaId`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaIdError {
    /// The workload or contract id is empty.
    #[error("the {0} id is empty")]
    Empty(&'static str),
    /// The workload or contract id is longer than [`MAX_ID_LEN`].
    #[error("the {0} id is longer than {MAX_ID_LEN} bytes")]
    TooLong(&'static str),
    /// The id has a character outside `A-Z a-z 0-9 - _ .`, or starts with `.`.
    #[error(
        "the {0} id may only contain A-Z, a-z, 0-9, '-', '_' and '.', and may not start with '.'"
    )]
    BadCharacter(&'static str),
}

/// A [`ReplicaId`] as read from a file, before its check.
#[derive(Deserialize)]
struct RawReplicaId {
    workload: String,
    index: u32,
    contract: String,
}

impl TryFrom<RawReplicaId> for ReplicaId {
    type Error = ReplicaIdError;

    fn try_from(r: RawReplicaId) -> Result<Self, Self::Error> {
        Self::new(r.workload, r.index, r.contract)
    }
}

fn check_id_part(what: &'static str, s: &str) -> Result<(), ReplicaIdError> {
    if s.is_empty() {
        return Err(ReplicaIdError::Empty(what));
    }
    if s.len() > MAX_ID_LEN {
        return Err(ReplicaIdError::TooLong(what));
    }
    if s.starts_with('.')
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ReplicaIdError::BadCharacter(what));
    }
    Ok(())
}

impl ReplicaId {
    /// An id from its three labels.
    pub fn new(
        workload: impl Into<String>,
        index: u32,
        contract: impl Into<String>,
    ) -> Result<Self, ReplicaIdError> {
        let (workload, contract) = (workload.into(), contract.into());
        check_id_part("workload", &workload)?;
        check_id_part("contract", &contract)?;
        Ok(Self {
            workload,
            index,
            contract,
        })
    }

    /// The workload this replica belongs to.
    pub fn workload(&self) -> &str {
        &self.workload
    }

    /// The replica's index within its workload.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The contract the replica runs under.
    pub fn contract(&self) -> &str {
        &self.contract
    }

    /// The name of the replica's directory in the runtime's state dir:
    /// `<workload>~<index>~<contract>` (`~` never appears in the parts).
    pub fn dir_name(&self) -> String {
        format!("{}~{}~{}", self.workload, self.index, self.contract)
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.workload, self.index, self.contract)
    }
}

/// Resource limits of one replica. `None` means "no limit of this kind".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU rate, in thousandths of a core (`500` = half a core).
    pub cpu_millicores: Option<u64>,
    /// Memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Most processes (and threads) the replica may have at once.
    pub pids: Option<u64>,
}

/// A validated description of one replica: what to run, with which environment and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawReplicaSpec")]
pub struct ReplicaSpec {
    id: ReplicaId,
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    limits: Limits,
    ports: Vec<u16>,
    image: Option<String>,
    owner: Option<String>,
}

/// A [`ReplicaSpec`] as read from a file, before its check.
#[derive(Deserialize)]
struct RawReplicaSpec {
    id: ReplicaId,
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    limits: Limits,
    ports: Vec<u16>,
    // Absent in records written before container images existed.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    owner: Option<String>,
}

impl TryFrom<RawReplicaSpec> for ReplicaSpec {
    type Error = SpecError;

    fn try_from(r: RawReplicaSpec) -> Result<Self, Self::Error> {
        let spec = Self {
            id: r.id,
            program: r.program,
            args: r.args,
            env: r.env,
            limits: r.limits,
            ports: r.ports,
            image: r.image,
            owner: r.owner,
        };
        spec.check()?;
        Ok(spec)
    }
}

/// Why a [`ReplicaSpec`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The program name is empty.
    #[error("the command is empty: give a program to run")]
    EmptyCommand,
    /// The program, an argument or an environment value holds a NUL byte.
    #[error("the {0} contains a NUL byte")]
    Nul(&'static str),
    /// More than [`MAX_ARGS`] arguments.
    #[error("more than {MAX_ARGS} arguments")]
    TooManyArgs,
    /// More than [`MAX_ENV`] environment variables.
    #[error("more than {MAX_ENV} environment variables")]
    TooManyEnv,
    /// An environment variable name is empty or holds `=` or NUL.
    #[error("environment variable name {0:?} is empty or contains '=' or NUL")]
    BadEnvName(String),
    /// The environment sets a `FLUIDOS_` variable, which the runtime reserves for the
    /// replica's labels.
    #[error(
        "environment variable {0:?} is reserved: names starting with FLUIDOS_ are set by the runtime"
    )]
    ReservedEnvName(String),
    /// The memory limit is zero.
    #[error("the memory limit is zero: give at least a few MiB, or no limit")]
    ZeroMemory,
    /// The memory limit is below [`MIN_MEMORY_BYTES`].
    #[error(
        "the memory limit of {0} bytes is below the minimum of {MIN_MEMORY_BYTES} bytes (1 MiB)"
    )]
    MemoryTooSmall(u64),
    /// A container's memory limit is below [`MIN_CONTAINER_MEMORY_BYTES`], the engine's
    /// minimum.
    #[error(
        "the memory limit of {0} bytes is below a container's minimum of \
         {MIN_CONTAINER_MEMORY_BYTES} bytes (6 MiB, the Docker engine's)"
    )]
    ContainerMemoryTooSmall(u64),
    /// The cpu limit is zero.
    #[error("the cpu limit is zero: give at least 1 millicore, or no limit")]
    ZeroCpu,
    /// The pids limit is zero.
    #[error("the pids limit is zero: give at least 1, or no limit")]
    ZeroPids,
    /// The image reference is empty, longer than [`MAX_REF_LEN`], or holds whitespace or
    /// control characters.
    #[error("the image reference {0:?} is empty, too long, or contains whitespace")]
    BadImage(String),
    /// The owner id is empty, longer than [`MAX_REF_LEN`], or holds whitespace or control
    /// characters.
    #[error("the owner id {0:?} is empty, too long, or contains whitespace")]
    BadOwner(String),
    /// Both a program and an image are given.
    #[error("give either a program or a container image, not both")]
    ProgramWithImage,
}

fn check_ref(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REF_LEN
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl ReplicaSpec {
    /// Starts describing a replica that runs `program` (a path, or a name looked up in the
    /// replica's `PATH`).
    pub fn builder(id: ReplicaId, program: impl Into<String>) -> ReplicaSpecBuilder {
        ReplicaSpecBuilder {
            spec: ReplicaSpec {
                id,
                program: program.into(),
                args: Vec::new(),
                env: BTreeMap::new(),
                limits: Limits::default(),
                ports: Vec::new(),
                image: None,
                owner: None,
            },
        }
    }

    /// Starts describing a replica that runs the container image `image` (a reference such
    /// as `docker.io/library/alpine:3.20` or an image id), for container runtimes. Its
    /// [`args`](ReplicaSpecBuilder::args), when given, replace the image's command (its
    /// entrypoint stays); [`program`](Self::program) is empty.
    pub fn image_builder(id: ReplicaId, image: impl Into<String>) -> ReplicaSpecBuilder {
        let mut b = Self::builder(id, String::new());
        b.spec.image = Some(image.into());
        b
    }

    /// The replica's id.
    pub fn id(&self) -> &ReplicaId {
        &self.id
    }

    /// The container image to run, for specs made with [`image_builder`](Self::image_builder).
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// The node that owns the workload (the consumer that offloaded it), when the caller
    /// said. Container runtimes label what runs with it.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The program to run; empty for an image spec (the image says what runs).
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Its arguments (without the program name).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The environment the replica gets (besides `PATH` when not set, and the `FLUIDOS_*` labels).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The replica's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// TCP ports the replica listens on. Informational for the process runtime, which shares
    /// the host's network and neither opens nor checks them; the Docker runtime publishes them.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    fn check(&self) -> Result<(), SpecError> {
        match &self.image {
            Some(image) if !check_ref(image) => return Err(SpecError::BadImage(image.clone())),
            // An image spec runs what the image says; a program would be ambiguous.
            Some(_) if !self.program.is_empty() => return Err(SpecError::ProgramWithImage),
            Some(_) => {}
            None if self.program.is_empty() => return Err(SpecError::EmptyCommand),
            None => {}
        }
        if let Some(owner) = self.owner.as_ref().filter(|o| !check_ref(o)) {
            return Err(SpecError::BadOwner(owner.clone()));
        }
        if self.program.contains('\0') {
            return Err(SpecError::Nul("program"));
        }
        if self.args.len() > MAX_ARGS {
            return Err(SpecError::TooManyArgs);
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(SpecError::Nul("argument"));
        }
        if self.env.len() > MAX_ENV {
            return Err(SpecError::TooManyEnv);
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(SpecError::BadEnvName(k.clone()));
            }
            if k.starts_with("FLUIDOS_") {
                return Err(SpecError::ReservedEnvName(k.clone()));
            }
            if v.contains('\0') {
                return Err(SpecError::Nul("environment value"));
            }
        }
        if self.limits.memory_bytes == Some(0) {
            return Err(SpecError::ZeroMemory);
        }
        if let Some(m) = self.limits.memory_bytes.filter(|m| *m < MIN_MEMORY_BYTES) {
            return Err(SpecError::MemoryTooSmall(m));
        }
        if let Some(m) = self
            .limits
            .memory_bytes
            .filter(|m| self.image.is_some() && *m < MIN_CONTAINER_MEMORY_BYTES)
        {
            return Err(SpecError::ContainerMemoryTooSmall(m));
        }
        if self.limits.cpu_millicores == Some(0) {
            return Err(SpecError::ZeroCpu);
        }
        if self.limits.pids == Some(0) {
            return Err(SpecError::ZeroPids);
        }
        Ok(())
    }
}

/// Builds a [`ReplicaSpec`]; [`build`](Self::build) checks it.
#[derive(Debug, Clone)]
#[must_use]
pub struct ReplicaSpecBuilder {
    spec: ReplicaSpec,
}

impl ReplicaSpecBuilder {
    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.spec.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.env.insert(key.into(), value.into());
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.spec.limits = limits;
        self
    }

    /// Names the node that owns the workload (labels only; nothing is enforced by it).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.spec.owner = Some(owner.into());
        self
    }

    /// Sets the TCP ports (informational for the process runtime, published by Docker).
    pub fn ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.spec.ports = ports.into_iter().collect();
        self
    }

    /// Checks the description and returns it.
    pub fn build(self) -> Result<ReplicaSpec, SpecError> {
        self.spec.check()?;
        Ok(self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ReplicaId {
        ReplicaId::new("w1", 0, "c1").unwrap()
    }

    #[test]
    fn a_container_needs_the_engines_minimum_memory_and_a_process_does_not() {
        let four = Limits {
            memory_bytes: Some(4 << 20),
            ..Limits::default()
        };
        assert_eq!(
            ReplicaSpec::image_builder(id(), "busybox")
                .limits(four)
                .build(),
            Err(SpecError::ContainerMemoryTooSmall(4 << 20))
        );
        assert!(
            ReplicaSpec::builder(id(), "/bin/true")
                .limits(four)
                .build()
                .is_ok()
        );
        let six = Limits {
            memory_bytes: Some(MIN_CONTAINER_MEMORY_BYTES),
            ..Limits::default()
        };
        assert!(
            ReplicaSpec::image_builder(id(), "busybox")
                .limits(six)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(
            ReplicaId::new("", 0, "c"),
            Err(ReplicaIdError::Empty("workload"))
        );
        assert_eq!(
            ReplicaId::new("w", 0, ""),
            Err(ReplicaIdError::Empty("contract"))
        );
        assert_eq!(
            ReplicaId::new("../x", 0, "c"),
            Err(ReplicaIdError::BadCharacter("workload"))
        );
        assert_eq!(
            ReplicaId::new("a/b", 0, "c"),
            Err(ReplicaIdError::BadCharacter("workload"))
        );
        assert_eq!(
            ReplicaId::new("w", 0, "c~d"),
            Err(ReplicaIdError::BadCharacter("contract"))
        );
        assert_eq!(
            ReplicaId::new("x".repeat(MAX_ID_LEN + 1), 0, "c"),
            Err(ReplicaIdError::TooLong("workload"))
        );
        let ok = ReplicaId::new("web-1.a", 7, "c_9").unwrap();
        assert_eq!(ok.dir_name(), "web-1.a~7~c_9");
        assert_eq!(ok.to_string(), "web-1.a/7@c_9");
    }

    #[test]
    fn specs_are_checked() {
        let b = || ReplicaSpec::builder(id(), "/bin/true");
        assert_eq!(
            ReplicaSpec::builder(id(), "").build(),
            Err(SpecError::EmptyCommand)
        );
        assert_eq!(b().arg("a\0b").build(), Err(SpecError::Nul("argument")));
        assert_eq!(
            b().env("A=B", "x").build(),
            Err(SpecError::BadEnvName("A=B".into()))
        );
        assert_eq!(
            b().env("", "x").build(),
            Err(SpecError::BadEnvName(String::new()))
        );
        assert_eq!(
            b().env("FLUIDOS_CONTRACT", "x").build(),
            Err(SpecError::ReservedEnvName("FLUIDOS_CONTRACT".into()))
        );
        let zero_mem = Limits {
            memory_bytes: Some(0),
            ..Limits::default()
        };
        assert_eq!(b().limits(zero_mem).build(), Err(SpecError::ZeroMemory));
        let tiny = Limits {
            memory_bytes: Some(4096),
            ..Limits::default()
        };
        assert_eq!(
            b().limits(tiny).build(),
            Err(SpecError::MemoryTooSmall(4096))
        );
        let zero_cpu = Limits {
            cpu_millicores: Some(0),
            ..Limits::default()
        };
        assert_eq!(b().limits(zero_cpu).build(), Err(SpecError::ZeroCpu));
        let zero_pids = Limits {
            pids: Some(0),
            ..Limits::default()
        };
        assert_eq!(b().limits(zero_pids).build(), Err(SpecError::ZeroPids));
        let spec = b().arg("x").env("K", "v").ports([80]).build().unwrap();
        assert_eq!(spec.args(), ["x"]);
        assert_eq!(spec.ports(), [80]);
        // Read back from JSON through the same checks.
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ReplicaSpec>(&json).unwrap(), spec);
        let forged = json.replace("\"/bin/true\"", "\"\"");
        assert!(serde_json::from_str::<ReplicaSpec>(&forged).is_err());
        let bad_id = json.replace("\"w1\"", "\"../w1\"");
        assert!(serde_json::from_str::<ReplicaSpec>(&bad_id).is_err());
        // Records written before images existed still read.
        let old = json.replace(",\"image\":null,\"owner\":null", "");
        assert_ne!(old, json);
        assert_eq!(serde_json::from_str::<ReplicaSpec>(&old).unwrap(), spec);
    }

    #[test]
    fn image_specs_are_checked() {
        let spec = ReplicaSpec::image_builder(id(), "fluidos-test/busybox:1")
            .args(["sh", "-c", "echo hi"])
            .owner("did:key:z6Mkabc")
            .build()
            .unwrap();
        assert_eq!(spec.image(), Some("fluidos-test/busybox:1"));
        assert_eq!(spec.owner(), Some("did:key:z6Mkabc"));
        assert_eq!(spec.program(), "");
        assert_eq!(
            ReplicaSpec::image_builder(id(), "").build(),
            Err(SpecError::BadImage(String::new()))
        );
        assert_eq!(
            ReplicaSpec::image_builder(id(), "a b").build(),
            Err(SpecError::BadImage("a b".into()))
        );
        assert_eq!(
            ReplicaSpec::builder(id(), "/bin/true").owner("").build(),
            Err(SpecError::BadOwner(String::new()))
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ReplicaSpec>(&json).unwrap(), spec);
    }
}
