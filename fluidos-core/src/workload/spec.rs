//! The workload spec and its parser.

use std::collections::BTreeMap;

use fluidos_contracts::Resources;
use serde::{Deserialize, Serialize};

use super::{Intent, ResourceAmounts};

/// The most replicas one workload may ask for.
pub const MAX_REPLICAS: u32 = 1024;
/// The longest accepted name.
const MAX_NAME: usize = 63;

/// What to run, how much it needs, how it restarts, and where it may go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// A short name: 1–63 characters of `a-z`, `0-9` and `-`, starting with a letter or digit.
    pub name: String,
    /// A command or a container image.
    pub run: Run,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What one replica needs (placement counts these).
    #[serde(default)]
    pub requests: ResourceAmounts,
    /// What one replica may use at most; absent means "the requests".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceAmounts>,
    /// Ports the replica listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// What happens when a replica ends.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How many copies run (1 … [`MAX_REPLICAS`]).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Where it may and should run.
    #[serde(default)]
    pub intent: Intent,
}

fn one() -> u32 {
    1
}

/// What a replica executes: `command` (with `args`) or `image` (with optional
/// `args`), never both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RunWire", into = "RunWire")]
pub enum Run {
    /// A program and its arguments, started as a child process.
    Command {
        /// The program (a path, or a name looked up in `PATH`).
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A container image, for container runtimes.
    Image {
        /// The image reference (`docker.io/library/alpine:3.20`).
        image: String,
        /// Overrides the image's command, if given.
        args: Vec<String>,
        /// A `docker save` tarball on the owner's machine holding the image: the owner
        /// sends it to each provider over `/fluidos/workload/1` before starting a
        /// replica there (`docs/PROTOCOL.md` §8). Without it the image must already be
        /// on the provider (or be pullable by its engine).
        file: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

impl TryFrom<RunWire> for Run {
    type Error = String;
    fn try_from(w: RunWire) -> Result<Self, String> {
        match (w.command, w.image) {
            (Some(_), None) if w.file.is_some() => {
                Err("`file` (a docker save tarball) goes with `image`, not `command`".into())
            }
            (Some(command), None) => Ok(Run::Command {
                command,
                args: w.args,
            }),
            (None, Some(image)) => Ok(Run::Image {
                image,
                args: w.args,
                file: w.file,
            }),
            (Some(_), Some(_)) => Err("give either `command` or `image`, not both".into()),
            (None, None) => Err("give `command` (a program) or `image` (a container)".into()),
        }
    }
}

impl From<Run> for RunWire {
    fn from(r: Run) -> Self {
        match r {
            Run::Command { command, args } => RunWire {
                command: Some(command),
                image: None,
                args,
                file: None,
            },
            Run::Image { image, args, file } => RunWire {
                command: None,
                image: Some(image),
                args,
                file,
            },
        }
    }
}

/// A port a replica listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The port number (1–65535).
    pub port: u16,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
    /// An optional name (`http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// When a replica that ended is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RestartPolicy {
    /// Never: the replica's end is final.
    #[default]
    Never,
    /// After a non-zero exit or a failure, at most `max_restarts` times.
    OnFailure {
        /// How many restarts are allowed.
        max_restarts: u32,
    },
    /// Always, whatever the exit code.
    Always,
}

/// A spec could not be parsed or is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The TOML is not well formed or does not have the spec's shape.
    #[error("workload spec (TOML): {0}")]
    Toml(String),
    /// The JSON is not well formed or does not have the spec's shape.
    #[error("workload spec (JSON): {0}")]
    Json(String),
    /// The name is empty, too long, or has characters other than `a-z0-9-`.
    #[error("name `{0}`: use 1–63 characters of a-z, 0-9 and `-`, starting with a letter or digit")]
    BadName(String),
    /// The command or image is empty.
    #[error("run: the command or image is empty")]
    EmptyRun,
    /// `replicas` is 0 or above [`MAX_REPLICAS`].
    #[error("replicas = {0}: must be between 1 and {MAX_REPLICAS}")]
    Replicas(u32),
    /// The requests ask for nothing at all.
    #[error("requests: ask for at least some cpu or memory")]
    EmptyRequests,
    /// A limit is below the request for the same resource.
    #[error("limits.{resource} ({limit}) is below requests.{resource} ({request})")]
    LimitBelowRequest {
        /// Which resource.
        resource: &'static str,
        /// The request.
        request: u64,
        /// The limit.
        limit: u64,
    },
    /// Port 0, or the same port and protocol twice.
    #[error("ports: {0}")]
    BadPort(String),
    /// An environment variable name is empty or contains `=` or NUL.
    #[error("env: `{0}` is not a valid variable name")]
    BadEnv(String),
    /// The intent is inconsistent.
    #[error("intent: {0}")]
    Intent(String),
}

impl WorkloadSpec {
    /// Parses a spec from TOML.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: Self = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.checked()
    }

    /// Parses a spec from JSON.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let spec: Self = serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
        spec.checked()
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Toml(e.to_string()))
    }

    /// The spec as JSON.
    pub fn to_json(&self) -> String {
        // A spec is plain strings, numbers, maps and lists: it always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What one replica asks for.
    pub fn requests(&self) -> Resources {
        self.requests.0
    }

    /// What one replica may use (the limits, or the requests when none are set).
    pub fn limits(&self) -> Resources {
        self.limits.map(|l| l.0).unwrap_or(self.requests.0)
    }

    /// Checks what serde cannot; every parser ends here.
    pub fn checked(self) -> Result<Self, SpecError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.name.starts_with('-');
        if !name_ok {
            return Err(SpecError::BadName(self.name));
        }
        let target = match &self.run {
            Run::Command { command, .. } => command,
            Run::Image { image, .. } => image,
        };
        if target.trim().is_empty() {
            return Err(SpecError::EmptyRun);
        }
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(SpecError::Replicas(self.replicas));
        }
        let req = self.requests.0;
        if req.cpu_millis == 0 && req.memory_bytes == 0 {
            return Err(SpecError::EmptyRequests);
        }
        if let Some(limits) = self.limits {
            let names = fluidos_contracts::resources::RESOURCE_NAMES;
            let (r, l) = (req.as_array(), limits.0.as_array());
            for i in 0..names.len() {
                // A limit of 0 means "not limited here", as in the request.
                if l[i] != 0 && l[i] < r[i] {
                    return Err(SpecError::LimitBelowRequest {
                        resource: names[i],
                        request: r[i],
                        limit: l[i],
                    });
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.ports {
            if p.port == 0 {
                return Err(SpecError::BadPort("port 0 is not a port".into()));
            }
            if !seen.insert((p.port, p.protocol == Protocol::Udp)) {
                return Err(SpecError::BadPort(format!("port {} appears twice", p.port)));
            }
        }
        if let Some(bad) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(SpecError::BadEnv(bad.clone()));
        }
        self.intent.check().map_err(SpecError::Intent)?;
        Ok(self)
    }
}
