//! The daemon's configuration: `config.toml`, overridden by flags and
//! environment variables, validated into a [`Config`].
//!
//! Precedence: flag > environment variable > file > built-in default. Every
//! error names where the bad value came from (the file, or the flag and its
//! variable), the key (`reserve.percent`) and the reason. `docs/CONFIG.md`
//! lists every key.

mod overrides;
mod raw;
mod validate;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fluidos_core::host::{HostReserve, OfferConfig};
use libp2p::Multiaddr;

pub use overrides::{Globals, Origin, Overrides};
pub use raw::{
    DEFAULT_CONTROL_LISTEN, DEFAULT_LISTEN, RawCatalogServer, RawConfig, RawFabric, RawForward,
};
pub use validate::{parse_duration, validate};

/// The name of the config file inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";
/// The name of the key file inside the data directory.
pub const KEY_FILE: &str = "node.key";
/// The name of the control token file inside the data directory.
pub const TOKEN_FILE: &str = "control.token";

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, if any.
    pub file: Option<PathBuf>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// libp2p listen addresses.
    pub listen: Vec<Multiaddr>,
    /// mDNS on or off.
    pub mdns: bool,
    /// Peers to dial at start.
    pub peers: Vec<Multiaddr>,
    /// Catalogs to join.
    pub catalogs: Vec<Catalog>,
    /// When this node serves catalogs to others (Kademlia server mode).
    pub catalog_server: fluidos_discovery::CatalogServer,
    /// How often to re-measure the host.
    pub remeasure_interval: Duration,
    /// Which runtime hosts workloads.
    pub runtime: RuntimeMode,
    /// How often hosted replicas' usage is written into the view.
    pub usage_interval: Duration,
    /// Roles.
    pub roles: Roles,
    /// The control API.
    pub control: ControlConfig,
    /// What the host keeps for itself.
    pub reserve: HostReserve,
    /// How offers are built (location, labels, price, min/step, pods, validity).
    pub offer: OfferConfig,
    /// The fabric: `None` when `fabric.enabled` is false.
    pub fabric: Option<fluidos_core::fabric::FabricOptions>,
    /// This node's own workloads.
    pub workloads: WorkloadsConfig,
}

/// `[workloads]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadsConfig {
    /// Capacity this node's own workloads may use here.
    pub local_capacity: fluidos_contracts::Resources,
    /// Silence after which a provider's replicas count as lost.
    pub provider_lost_after: Duration,
}

/// The `runtime` key: which runtime hosts workloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeMode {
    /// Docker for image workloads when an engine answers at start, and the process
    /// runtime for command workloads (only the process runtime without an engine).
    #[default]
    Auto,
    /// Docker is required: the daemon does not start without an engine. Command
    /// workloads still run on the process runtime.
    Docker,
    /// The process runtime only: image workloads are refused.
    Process,
}

impl RuntimeMode {
    /// The key's value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Docker => "docker",
            Self::Process => "process",
        }
    }
}

impl std::str::FromStr for RuntimeMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "auto" => Ok(Self::Auto),
            "docker" => Ok(Self::Docker),
            "process" => Ok(Self::Process),
            _ => Err(()),
        }
    }
}

impl Config {
    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join(KEY_FILE)
    }

    /// The control token file.
    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join(TOKEN_FILE)
    }
}

/// A catalog: a name and the addresses to bootstrap from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    /// The catalog's name.
    pub name: fluidos_discovery::CatalogName,
    /// Bootstrap addresses, each ending in `/p2p/<peer id>`.
    pub addresses: Vec<Multiaddr>,
}

/// Which roles the node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Roles {
    /// Sells capacity.
    pub provider: bool,
    /// Buys capacity.
    pub consumer: bool,
    /// Aggregates and forwards others' flavors.
    pub supernode: bool,
}

/// The control API's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// Loopback address of the HTTP API.
    pub listen: SocketAddr,
    /// Optional unix socket.
    pub socket: Option<PathBuf>,
    /// Requests served at once.
    pub max_concurrent_requests: usize,
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("config file {path}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The key the error is at, when it could be located.
        key: Option<String>,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{origin}: key `{key}`: {reason}")]
    Invalid {
        /// Where the value came from.
        origin: Origin,
        /// The key, dotted (`reserve.percent`).
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// `init` found a config file already there.
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Writing the file or creating the data directory failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        origin: Origin,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            origin,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The dotted key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Syntax { key, .. } => key.as_deref(),
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The data directory used when none is configured: `/var/lib/fluidos` for
/// root, else `$XDG_DATA_HOME/fluidos` or `~/.local/share/fluidos`.
pub fn default_data_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/fluidos");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("fluidos");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/fluidos"),
        None => PathBuf::from("fluidos-data"),
    }
}

fn is_root() -> bool {
    // `/proc/self` is owned by the process's effective uid; no libc needed.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Reads and parses a config file into its raw form.
pub fn read_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, path)
}

/// Parses config text; `path` is only used in errors.
pub fn parse_str(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let key = e.span().and_then(|span| key_at(text, span.start));
        ConfigError::Syntax {
            path: path.to_owned(),
            key,
            message: e.to_string().trim_end().to_string(),
        }
    })
}

/// The dotted key whose key or value covers byte `pos` of `text`, so that a
/// type error deep in a table names its full key.
fn key_at(text: &str, pos: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    let covers =
        |span: std::ops::Range<usize>| span.start <= pos && pos < span.end.max(span.start + 1);
    // Tables declared with a `[header]` do not span their body, so every table is
    // searched; a scalar matches when its key or its value covers `pos`.
    fn walk(
        table: &DeTable<'_>,
        covers: &dyn Fn(std::ops::Range<usize>) -> bool,
        path: &mut Vec<String>,
    ) -> bool {
        for (k, v) in table.iter() {
            path.push(k.get_ref().to_string());
            let hit = match v.get_ref() {
                DeValue::Table(t) => walk(t, covers, path) || covers(k.span()),
                DeValue::Array(items) => {
                    let mut hit = false;
                    for (i, item) in items.iter().enumerate() {
                        path.push(i.to_string());
                        let inner = match item.get_ref() {
                            DeValue::Table(t) => walk(t, covers, path),
                            _ => false,
                        };
                        if inner {
                            hit = true;
                            break;
                        }
                        path.pop();
                    }
                    hit || covers(k.span()) || covers(v.span())
                }
                _ => covers(k.span()) || covers(v.span()),
            };
            if hit {
                return true;
            }
            path.pop();
        }
        false
    }
    let table = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(table.get_ref(), &covers, &mut path).then(|| path.join("."))
}

/// Loads the configuration: finds the file (`--config`, else
/// `DATA_DIR/config.toml` if it exists), applies `globals` and `overrides`,
/// and validates.
pub fn load(globals: &Globals, overrides: &Overrides) -> Result<Config, ConfigError> {
    let (mut raw, file) = locate_and_read(globals)?;
    let mut origins = overrides::Origins::new();
    globals.apply(&mut raw, &mut origins);
    overrides.apply(&mut raw, &mut origins)?;
    validate::validate_with(&raw, file.as_deref(), &origins)
}

/// Finds and reads the config file for `globals`, returning it raw.
fn locate_and_read(globals: &Globals) -> Result<(RawConfig, Option<PathBuf>), ConfigError> {
    if let Some(path) = &globals.config {
        return Ok((read_file(path)?, Some(path.clone())));
    }
    let data_dir = globals.data_dir.clone().unwrap_or_else(default_data_dir);
    let path = data_dir.join(CONFIG_FILE);
    if path.exists() {
        Ok((read_file(&path)?, Some(path)))
    } else {
        Ok((RawConfig::default(), None))
    }
}

/// What `init` did.
#[derive(Debug)]
pub struct InitOutcome {
    /// The config file written.
    pub config_path: PathBuf,
    /// The validated config.
    pub config: Config,
}

/// Writes a config file holding the defaults plus `overrides` to
/// `DATA_DIR/config.toml` (or `--config`), creating the data directory with
/// mode 0700. Refuses to overwrite an existing file unless `force`.
pub fn init(
    globals: &Globals,
    overrides: &Overrides,
    force: bool,
) -> Result<InitOutcome, ConfigError> {
    let mut raw = RawConfig::default();
    let mut origins = overrides::Origins::new();
    globals.apply(&mut raw, &mut origins);
    overrides.apply(&mut raw, &mut origins)?;
    let data_dir = raw.data_dir.clone().unwrap_or_else(default_data_dir);
    raw.data_dir = Some(data_dir.clone());
    let config_path = globals
        .config
        .clone()
        .unwrap_or_else(|| data_dir.join(CONFIG_FILE));
    // Validate before writing: init never leaves a file that `run` refuses.
    let config = validate::validate_with(&raw, None, &origins)?;
    if config_path.exists() && !force {
        return Err(ConfigError::Exists { path: config_path });
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ConfigError::Write { path, source }
    };
    create_private_dir(&data_dir).map_err(write_err(&data_dir))?;
    let text = render(&raw);
    if let Some(parent) = config_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(write_err(parent))?;
    }
    fs::write(&config_path, text).map_err(write_err(&config_path))?;
    Ok(InitOutcome {
        config_path: config_path.clone(),
        config: Config {
            file: Some(config_path),
            ..config
        },
    })
}

/// Creates `dir` (and parents) with mode 0700 for the last component.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Renders `raw` as TOML with a comment in front of each section.
pub fn render(raw: &RawConfig) -> String {
    const SECTIONS: [(&str, &str); 9] = [
        (
            "[roles]",
            "# What this node does. A supernode aggregates and forwards other nodes' flavors.",
        ),
        (
            "[control]",
            "# The local control API (loopback only), protected by DATA_DIR/control.token.",
        ),
        (
            "[location]",
            "# Where this node is: ISO 3166-1 alpha-2 country, optional city and coordinates.",
        ),
        ("[labels]", "# Labels copied onto every flavor."),
        (
            "[price]",
            "# Price of the whole CPU/memory flavor, and of one GPU, per period.\n# period: hour | day | month; model: reserved | pay_per_use.",
        ),
        (
            "[reserve]",
            "# What the host keeps for itself: percent of everything, but at least min_cpu and min_memory.",
        ),
        (
            "[partition.min]",
            "# The smallest partition a buyer may take (cpu in cores or \"500m\"; sizes like \"512MiB\").",
        ),
        (
            "[partition.step]",
            "# Partitions grow from the minimum in these steps (0 = any amount).",
        ),
        (
            "[fabric]",
            "# WireGuard tunnels with the other party of every active contract.\n# backend: auto (TUN when allowed, else userspace) | tun | userspace; topology: mesh | hub\n# (with hub = \"did:key:...\"); listen_port 0 = any free port; persistent_keepalive 0 = off.",
        ),
    ];
    let body = toml::to_string_pretty(raw).unwrap_or_default();
    let mut out = String::from(
        "# fluidos-node configuration, written by `fluidos-node init`.\n\
         # Every key can be overridden by a flag or an environment variable; see docs/CONFIG.md.\n\
         # listen: libp2p multiaddrs. peers: multiaddrs dialled at start. remeasure_interval and\n\
         # flavor_validity: durations such as 30s, 5m, 1h. catalog_server: \"auto\" serves catalogs\n\
         # once this node joins one or a catalog member dials it, \"true\" always, \"false\" never.\n\
         # runtime: \"auto\" runs image workloads on Docker when an engine answers (commands as\n\
         # processes), \"docker\" requires an engine, \"process\" never uses one. usage_interval: how\n\
         # often hosted replicas' usage is written into the view.\n\n",
    );
    for line in body.lines() {
        if let Some((_, comment)) = SECTIONS.iter().find(|(h, _)| *h == line.trim()) {
            out.push_str(comment);
            out.push('\n');
        }
        if line.trim() == "[[catalogs]]" {
            out.push_str(
                "# A catalog to join: a name and bootstrap addresses ending in /p2p/<peer id>.\n",
            );
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
