//! Command-line flags and environment variables that override the config file.
//!
//! Each flag also reads an environment variable (clap's `env`); a flag given on
//! the command line wins over the variable, and both win over the file.

use std::path::PathBuf;

use clap::Args;

use super::raw::{RawBytes, RawCatalog, RawCatalogServer, RawConfig, RawCpu, RawLocation};

/// Where a value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The config file.
    File(PathBuf),
    /// The built-in default.
    Default,
    /// A flag or its environment variable.
    Flag {
        /// `--listen`.
        flag: &'static str,
        /// `FLUIDOS_LISTEN`.
        env: &'static str,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Default => f.write_str("built-in default"),
            Origin::Flag { flag, env } => write!(f, "{flag} (or {env})"),
        }
    }
}

/// Flags that override config keys (`fluidos-node run --help`).
#[derive(Args, Clone, Debug, Default)]
pub struct Overrides {
    /// libp2p listen multiaddrs (key `listen`), comma-separated in the variable.
    #[arg(
        long = "listen",
        env = "FLUIDOS_LISTEN",
        value_delimiter = ',',
        help_heading = "Config overrides"
    )]
    pub listen: Vec<String>,
    /// Discover LAN peers with mDNS (key `mdns`).
    #[arg(long, env = "FLUIDOS_MDNS", help_heading = "Config overrides")]
    pub mdns: Option<bool>,
    /// Peers to dial at start (key `peers`), comma-separated in the variable.
    #[arg(
        long = "peer",
        env = "FLUIDOS_PEERS",
        value_delimiter = ',',
        help_heading = "Config overrides"
    )]
    pub peers: Vec<String>,
    /// Catalogs as `NAME=ADDR[,ADDR…]` (key `catalogs`); `;`-separated in the variable.
    #[arg(
        long = "catalog",
        env = "FLUIDOS_CATALOGS",
        value_delimiter = ';',
        help_heading = "Config overrides"
    )]
    pub catalogs: Vec<String>,
    /// Serve catalogs to others: `auto`, `true` or `false` (key `catalog_server`).
    #[arg(
        long,
        env = "FLUIDOS_CATALOG_SERVER",
        value_name = "auto|true|false",
        help_heading = "Config overrides"
    )]
    pub catalog_server: Option<String>,
    /// Re-measure the host this often (key `remeasure_interval`).
    #[arg(
        long,
        env = "FLUIDOS_REMEASURE_INTERVAL",
        help_heading = "Config overrides"
    )]
    pub remeasure_interval: Option<String>,
    /// Which runtime hosts workloads: `auto`, `docker` or `process` (key `runtime`).
    #[arg(
        long,
        env = "FLUIDOS_RUNTIME",
        value_name = "auto|docker|process",
        help_heading = "Config overrides"
    )]
    pub runtime: Option<String>,
    /// How often hosted replicas' usage goes into the view (key `usage_interval`).
    #[arg(
        long,
        env = "FLUIDOS_USAGE_INTERVAL",
        help_heading = "Config overrides"
    )]
    pub usage_interval: Option<String>,
    /// Workload slots offered (key `pods`).
    #[arg(long, env = "FLUIDOS_PODS", help_heading = "Config overrides")]
    pub pods: Option<u64>,
    /// Validity of issued flavors (key `flavor_validity`).
    #[arg(
        long,
        env = "FLUIDOS_FLAVOR_VALIDITY",
        help_heading = "Config overrides"
    )]
    pub flavor_validity: Option<String>,
    /// Sell capacity (key `roles.provider`).
    #[arg(long, env = "FLUIDOS_PROVIDER", help_heading = "Config overrides")]
    pub provider: Option<bool>,
    /// Buy capacity (key `roles.consumer`).
    #[arg(long, env = "FLUIDOS_CONSUMER", help_heading = "Config overrides")]
    pub consumer: Option<bool>,
    /// Act as a supernode (key `roles.supernode`).
    #[arg(long, env = "FLUIDOS_SUPERNODE", help_heading = "Config overrides")]
    pub supernode: Option<bool>,
    /// Concurrent control requests (key `control.max_concurrent_requests`).
    #[arg(
        long,
        env = "FLUIDOS_CONTROL_MAX_CONCURRENT",
        help_heading = "Config overrides"
    )]
    pub control_max_concurrent: Option<u32>,
    /// ISO 3166-1 alpha-2 country (key `location.country`).
    #[arg(long, env = "FLUIDOS_COUNTRY", help_heading = "Config overrides")]
    pub country: Option<String>,
    /// City (key `location.city`).
    #[arg(long, env = "FLUIDOS_CITY", help_heading = "Config overrides")]
    pub city: Option<String>,
    /// Latitude in degrees (key `location.lat`).
    #[arg(
        long,
        env = "FLUIDOS_LAT",
        allow_negative_numbers = true,
        help_heading = "Config overrides"
    )]
    pub lat: Option<f64>,
    /// Longitude in degrees (key `location.lon`).
    #[arg(
        long,
        env = "FLUIDOS_LON",
        allow_negative_numbers = true,
        help_heading = "Config overrides"
    )]
    pub lon: Option<f64>,
    /// Labels as `KEY=VALUE` (key `labels`); comma-separated in the variable.
    #[arg(
        long = "label",
        env = "FLUIDOS_LABELS",
        value_delimiter = ',',
        help_heading = "Config overrides"
    )]
    pub labels: Vec<String>,
    /// Grid carbon intensity, gCO2eq/kWh (key `carbon_g_per_kwh`).
    #[arg(long, env = "FLUIDOS_CARBON", help_heading = "Config overrides")]
    pub carbon: Option<u32>,
    /// Price of the whole flavor per period (key `price.amount`).
    #[arg(long, env = "FLUIDOS_PRICE", help_heading = "Config overrides")]
    pub price: Option<f64>,
    /// Price of one GPU per period (key `price.gpu_amount`).
    #[arg(long, env = "FLUIDOS_GPU_PRICE", help_heading = "Config overrides")]
    pub gpu_price: Option<f64>,
    /// ISO 4217 currency (key `price.currency`).
    #[arg(long, env = "FLUIDOS_CURRENCY", help_heading = "Config overrides")]
    pub currency: Option<String>,
    /// `hour`, `day` or `month` (key `price.period`).
    #[arg(long, env = "FLUIDOS_PRICE_PERIOD", help_heading = "Config overrides")]
    pub price_period: Option<String>,
    /// `reserved` or `pay_per_use` (key `price.model`).
    #[arg(long, env = "FLUIDOS_PRICE_MODEL", help_heading = "Config overrides")]
    pub price_model: Option<String>,
    /// Share kept for the host, 0–100 (key `reserve.percent`).
    #[arg(
        long,
        env = "FLUIDOS_RESERVE_PERCENT",
        help_heading = "Config overrides"
    )]
    pub reserve_percent: Option<f64>,
    /// CPU always kept, e.g. `1` or `500m` (key `reserve.min_cpu`).
    #[arg(
        long,
        env = "FLUIDOS_RESERVE_MIN_CPU",
        help_heading = "Config overrides"
    )]
    pub reserve_min_cpu: Option<String>,
    /// Memory always kept, e.g. `512MiB` (key `reserve.min_memory`).
    #[arg(
        long,
        env = "FLUIDOS_RESERVE_MIN_MEMORY",
        help_heading = "Config overrides"
    )]
    pub reserve_min_memory: Option<String>,
    /// Partition minimum CPU (key `partition.min.cpu`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_MIN_CPU",
        help_heading = "Config overrides"
    )]
    pub partition_min_cpu: Option<String>,
    /// Partition minimum memory (key `partition.min.memory`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_MIN_MEMORY",
        help_heading = "Config overrides"
    )]
    pub partition_min_memory: Option<String>,
    /// Partition minimum storage (key `partition.min.storage`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_MIN_STORAGE",
        help_heading = "Config overrides"
    )]
    pub partition_min_storage: Option<String>,
    /// Partition minimum pods (key `partition.min.pods`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_MIN_PODS",
        help_heading = "Config overrides"
    )]
    pub partition_min_pods: Option<u64>,
    /// Partition minimum GPUs (key `partition.min.gpus`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_MIN_GPUS",
        help_heading = "Config overrides"
    )]
    pub partition_min_gpus: Option<u64>,
    /// Partition step CPU (key `partition.step.cpu`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_STEP_CPU",
        help_heading = "Config overrides"
    )]
    pub partition_step_cpu: Option<String>,
    /// Partition step memory (key `partition.step.memory`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_STEP_MEMORY",
        help_heading = "Config overrides"
    )]
    pub partition_step_memory: Option<String>,
    /// Partition step storage (key `partition.step.storage`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_STEP_STORAGE",
        help_heading = "Config overrides"
    )]
    pub partition_step_storage: Option<String>,
    /// Partition step pods (key `partition.step.pods`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_STEP_PODS",
        help_heading = "Config overrides"
    )]
    pub partition_step_pods: Option<u64>,
    /// Partition step GPUs (key `partition.step.gpus`).
    #[arg(
        long,
        env = "FLUIDOS_PARTITION_STEP_GPUS",
        help_heading = "Config overrides"
    )]
    pub partition_step_gpus: Option<u64>,
    /// Run the WireGuard fabric (key `fabric.enabled`).
    #[arg(long, env = "FLUIDOS_FABRIC", help_heading = "Config overrides")]
    pub fabric: Option<bool>,
    /// Fabric backend: `auto`, `tun` or `userspace` (key `fabric.backend`).
    #[arg(
        long,
        env = "FLUIDOS_FABRIC_BACKEND",
        value_name = "auto|tun|userspace",
        help_heading = "Config overrides"
    )]
    pub fabric_backend: Option<String>,
    /// Fabric TUN interface name (key `fabric.interface`).
    #[arg(
        long,
        env = "FLUIDOS_FABRIC_INTERFACE",
        help_heading = "Config overrides"
    )]
    pub fabric_interface: Option<String>,
    /// Fabric UDP port, 0 for any (key `fabric.listen_port`).
    #[arg(long, env = "FLUIDOS_FABRIC_PORT", help_heading = "Config overrides")]
    pub fabric_port: Option<u16>,
}

/// Global flags shared by every subcommand (they locate the node).
#[derive(Args, Clone, Debug, Default)]
pub struct Globals {
    /// Data directory (key `data_dir`).
    #[arg(long, env = "FLUIDOS_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Config file [default: DATA_DIR/config.toml].
    #[arg(long, env = "FLUIDOS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Control API address, loopback `ip:port` (key `control.listen`).
    #[arg(long = "control", env = "FLUIDOS_CONTROL_LISTEN", global = true)]
    pub control_listen: Option<String>,
    /// Control API unix socket (key `control.socket`).
    #[arg(long = "control-socket", env = "FLUIDOS_CONTROL_SOCKET", global = true)]
    pub control_socket: Option<PathBuf>,
}

/// Records which keys a flag set, so errors can name the flag instead of the file.
pub(crate) type Origins = std::collections::BTreeMap<&'static str, Origin>;

fn set<T>(
    origins: &mut Origins,
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    value: Option<T>,
    slot: &mut T,
) {
    if let Some(v) = value {
        *slot = v;
        origins.insert(key, Origin::Flag { flag, env });
    }
}

fn set_some<T>(
    origins: &mut Origins,
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    value: Option<T>,
    slot: &mut Option<T>,
) {
    if let Some(v) = value {
        *slot = Some(v);
        origins.insert(key, Origin::Flag { flag, env });
    }
}

fn non_empty<T>(v: &[T]) -> Option<Vec<T>>
where
    T: Clone,
{
    (!v.is_empty()).then(|| v.to_vec())
}

impl Globals {
    /// Applies the global overrides to `raw`.
    pub(crate) fn apply(&self, raw: &mut RawConfig, o: &mut Origins) {
        set_some(
            o,
            "data_dir",
            "--data-dir",
            "FLUIDOS_DATA_DIR",
            self.data_dir.clone(),
            &mut raw.data_dir,
        );
        set(
            o,
            "control.listen",
            "--control",
            "FLUIDOS_CONTROL_LISTEN",
            self.control_listen.clone(),
            &mut raw.control.listen,
        );
        set_some(
            o,
            "control.socket",
            "--control-socket",
            "FLUIDOS_CONTROL_SOCKET",
            self.control_socket.clone(),
            &mut raw.control.socket,
        );
    }
}

impl Overrides {
    /// Applies these overrides to `raw`, recording where each value came from.
    /// Values are parsed later, with the rest of the file, so that one set of
    /// validation rules covers both.
    #[rustfmt::skip]
    pub(crate) fn apply(&self, raw: &mut RawConfig, o: &mut Origins) -> Result<(), super::ConfigError> {
        set(o, "listen", "--listen", "FLUIDOS_LISTEN", non_empty(&self.listen), &mut raw.listen);
        set(o, "mdns", "--mdns", "FLUIDOS_MDNS", self.mdns, &mut raw.mdns);
        set(o, "peers", "--peer", "FLUIDOS_PEERS", non_empty(&self.peers), &mut raw.peers);
        if !self.catalogs.is_empty() {
            let origin = Origin::Flag { flag: "--catalog", env: "FLUIDOS_CATALOGS" };
            let mut catalogs = Vec::new();
            for spec in &self.catalogs {
                let Some((name, addrs)) = spec.split_once('=') else {
                    return Err(super::ConfigError::invalid(origin, "catalogs", format!("`{spec}` is not NAME=ADDR[,ADDR…]")));
                };
                catalogs.push(RawCatalog {
                    name: name.trim().to_string(),
                    addresses: addrs.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
                });
            }
            raw.catalogs = catalogs;
            o.insert("catalogs", origin);
        }
        set(o, "catalog_server", "--catalog-server", "FLUIDOS_CATALOG_SERVER", self.catalog_server.clone().map(RawCatalogServer::Text), &mut raw.catalog_server);
        set(o, "remeasure_interval", "--remeasure-interval", "FLUIDOS_REMEASURE_INTERVAL", self.remeasure_interval.clone(), &mut raw.remeasure_interval);
        set(o, "pods", "--pods", "FLUIDOS_PODS", self.pods, &mut raw.pods);
        set(o, "runtime", "--runtime", "FLUIDOS_RUNTIME", self.runtime.clone(), &mut raw.runtime);
        set(o, "usage_interval", "--usage-interval", "FLUIDOS_USAGE_INTERVAL", self.usage_interval.clone(), &mut raw.usage_interval);
        set(o, "flavor_validity", "--flavor-validity", "FLUIDOS_FLAVOR_VALIDITY", self.flavor_validity.clone(), &mut raw.flavor_validity);
        set(o, "roles.provider", "--provider", "FLUIDOS_PROVIDER", self.provider, &mut raw.roles.provider);
        set(o, "roles.consumer", "--consumer", "FLUIDOS_CONSUMER", self.consumer, &mut raw.roles.consumer);
        set(o, "roles.supernode", "--supernode", "FLUIDOS_SUPERNODE", self.supernode, &mut raw.roles.supernode);
        set(o, "control.max_concurrent_requests", "--control-max-concurrent", "FLUIDOS_CONTROL_MAX_CONCURRENT", self.control_max_concurrent, &mut raw.control.max_concurrent_requests);
        if self.country.is_some() || self.city.is_some() || self.lat.is_some() || self.lon.is_some() {
            let loc = raw.location.get_or_insert_with(RawLocation::default);
            set(o, "location.country", "--country", "FLUIDOS_COUNTRY", self.country.clone(), &mut loc.country);
            set_some(o, "location.city", "--city", "FLUIDOS_CITY", self.city.clone(), &mut loc.city);
            set_some(o, "location.lat", "--lat", "FLUIDOS_LAT", self.lat, &mut loc.lat);
            set_some(o, "location.lon", "--lon", "FLUIDOS_LON", self.lon, &mut loc.lon);
        }
        if !self.labels.is_empty() {
            let origin = Origin::Flag { flag: "--label", env: "FLUIDOS_LABELS" };
            for spec in &self.labels {
                let Some((k, v)) = spec.split_once('=') else {
                    return Err(super::ConfigError::invalid(origin, "labels", format!("`{spec}` is not KEY=VALUE")));
                };
                raw.labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            o.insert("labels", origin);
        }
        set_some(o, "carbon_g_per_kwh", "--carbon", "FLUIDOS_CARBON", self.carbon, &mut raw.carbon_g_per_kwh);
        set(o, "price.amount", "--price", "FLUIDOS_PRICE", self.price, &mut raw.price.amount);
        set(o, "price.gpu_amount", "--gpu-price", "FLUIDOS_GPU_PRICE", self.gpu_price, &mut raw.price.gpu_amount);
        set(o, "price.currency", "--currency", "FLUIDOS_CURRENCY", self.currency.clone(), &mut raw.price.currency);
        set(o, "price.period", "--price-period", "FLUIDOS_PRICE_PERIOD", self.price_period.clone(), &mut raw.price.period);
        set(o, "price.model", "--price-model", "FLUIDOS_PRICE_MODEL", self.price_model.clone(), &mut raw.price.model);
        set(o, "reserve.percent", "--reserve-percent", "FLUIDOS_RESERVE_PERCENT", self.reserve_percent, &mut raw.reserve.percent);
        set(o, "reserve.min_cpu", "--reserve-min-cpu", "FLUIDOS_RESERVE_MIN_CPU", self.reserve_min_cpu.clone().map(RawCpu::Text), &mut raw.reserve.min_cpu);
        set(o, "reserve.min_memory", "--reserve-min-memory", "FLUIDOS_RESERVE_MIN_MEMORY", self.reserve_min_memory.clone().map(RawBytes::Text), &mut raw.reserve.min_memory);
        let (min, step) = (&mut raw.partition.min, &mut raw.partition.step);
        set_some(o, "partition.min.cpu", "--partition-min-cpu", "FLUIDOS_PARTITION_MIN_CPU", self.partition_min_cpu.clone().map(RawCpu::Text), &mut min.cpu);
        set_some(o, "partition.min.memory", "--partition-min-memory", "FLUIDOS_PARTITION_MIN_MEMORY", self.partition_min_memory.clone().map(RawBytes::Text), &mut min.memory);
        set_some(o, "partition.min.storage", "--partition-min-storage", "FLUIDOS_PARTITION_MIN_STORAGE", self.partition_min_storage.clone().map(RawBytes::Text), &mut min.storage);
        set_some(o, "partition.min.pods", "--partition-min-pods", "FLUIDOS_PARTITION_MIN_PODS", self.partition_min_pods, &mut min.pods);
        set_some(o, "partition.min.gpus", "--partition-min-gpus", "FLUIDOS_PARTITION_MIN_GPUS", self.partition_min_gpus, &mut min.gpus);
        set_some(o, "partition.step.cpu", "--partition-step-cpu", "FLUIDOS_PARTITION_STEP_CPU", self.partition_step_cpu.clone().map(RawCpu::Text), &mut step.cpu);
        set_some(o, "partition.step.memory", "--partition-step-memory", "FLUIDOS_PARTITION_STEP_MEMORY", self.partition_step_memory.clone().map(RawBytes::Text), &mut step.memory);
        set_some(o, "partition.step.storage", "--partition-step-storage", "FLUIDOS_PARTITION_STEP_STORAGE", self.partition_step_storage.clone().map(RawBytes::Text), &mut step.storage);
        set_some(o, "partition.step.pods", "--partition-step-pods", "FLUIDOS_PARTITION_STEP_PODS", self.partition_step_pods, &mut step.pods);
        set_some(o, "partition.step.gpus", "--partition-step-gpus", "FLUIDOS_PARTITION_STEP_GPUS", self.partition_step_gpus, &mut step.gpus);
        set(o, "fabric.enabled", "--fabric", "FLUIDOS_FABRIC", self.fabric, &mut raw.fabric.enabled);
        set(o, "fabric.backend", "--fabric-backend", "FLUIDOS_FABRIC_BACKEND", self.fabric_backend.clone(), &mut raw.fabric.backend);
        set(o, "fabric.interface", "--fabric-interface", "FLUIDOS_FABRIC_INTERFACE", self.fabric_interface.clone(), &mut raw.fabric.interface);
        set(o, "fabric.listen_port", "--fabric-port", "FLUIDOS_FABRIC_PORT", self.fabric_port, &mut raw.fabric.listen_port);
        Ok(())
    }
}
