//! The configuration file as written: strings and numbers, before validation.
//!
//! Every field has a default, so an empty file (or none) is a valid config.
//! Unknown keys are refused, so that a typo never silently falls back to a
//! default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The default libp2p listen addresses: TCP and QUIC on port 7070, all interfaces.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/7070", "/ip4/0.0.0.0/udp/7070/quic-v1"];
/// The default control API address (loopback only).
pub const DEFAULT_CONTROL_LISTEN: &str = "127.0.0.1:7071";

/// The top level of `config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Where the key, token, contracts and state live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// libp2p listen multiaddrs.
    pub listen: Vec<String>,
    /// Discover LAN peers with mDNS.
    pub mdns: bool,
    /// Peers to dial at start (multiaddrs with `/p2p/<peer id>`).
    pub peers: Vec<String>,
    /// How often the host is measured again (`60s`, `5m`).
    pub remeasure_interval: String,
    /// Workload slots offered.
    pub pods: u64,
    /// How long an issued flavor stays valid (`1h`).
    pub flavor_validity: String,
    /// Whether this node serves catalogs to others: `"auto"`, `"true"` or `"false"`.
    pub catalog_server: RawCatalogServer,
    /// Which runtime hosts workloads: `"auto"` (Docker for images when an engine
    /// answers, the process runtime for commands), `"docker"` or `"process"`.
    pub runtime: String,
    /// How often the usage of hosted replicas is written into the view (`5s`).
    pub usage_interval: String,
    /// Which roles the node plays.
    pub roles: RawRoles,
    /// The local control API.
    pub control: RawControl,
    /// Where the node is; optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<RawLocation>,
    /// Labels put on every flavor.
    pub labels: BTreeMap<String, String>,
    /// Grid carbon intensity in gCO2eq/kWh; optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carbon_g_per_kwh: Option<u32>,
    /// Prices of the flavors.
    pub price: RawPrice,
    /// What the host keeps for itself.
    pub reserve: RawReserve,
    /// Partition minimum and step per resource.
    pub partition: RawPartition,
    /// Catalogs (Kademlia DHTs) to join.
    pub catalogs: Vec<RawCatalog>,
    /// The WireGuard fabric between contract parties.
    pub fabric: RawFabric,
    /// This node's own workloads.
    pub workloads: RawWorkloads,
}

/// `[workloads]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawWorkloads {
    /// Capacity this node's own workloads may use here; none by default, so
    /// they run on capacity bought from providers.
    pub local_capacity: RawQuantities,
    /// Silence after which a provider's replicas count as lost (`30s`; at least `6s`).
    pub provider_lost_after: String,
}

impl Default for RawWorkloads {
    fn default() -> Self {
        Self {
            local_capacity: RawQuantities::default(),
            provider_lost_after: "30s".into(),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            listen: DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect(),
            mdns: true,
            peers: Vec::new(),
            remeasure_interval: "60s".into(),
            pods: 110,
            flavor_validity: "1h".into(),
            catalog_server: RawCatalogServer::Text("auto".into()),
            runtime: "auto".into(),
            usage_interval: "5s".into(),
            roles: RawRoles::default(),
            control: RawControl::default(),
            location: None,
            labels: BTreeMap::new(),
            carbon_g_per_kwh: None,
            price: RawPrice::default(),
            reserve: RawReserve::default(),
            partition: RawPartition::default(),
            catalogs: Vec::new(),
            fabric: RawFabric::default(),
            workloads: RawWorkloads::default(),
        }
    }
}

/// `[fabric]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFabric {
    /// Run WireGuard tunnels with the other party of every active contract.
    pub enabled: bool,
    /// `auto`, `tun` or `userspace`.
    pub backend: String,
    /// The TUN interface's name.
    pub interface: String,
    /// UDP port for WireGuard (0: any free port).
    pub listen_port: u16,
    /// `ip:port` endpoints written into contracts; empty: the host's addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// `mesh` or `hub`.
    pub topology: String,
    /// With `topology = "hub"`: the hub's did:key (this node's own to be the hub).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The overlay MTU.
    pub mtu: u16,
    /// IPv4 overlay addresses (100.64.0.0/10) besides the IPv6 ones.
    pub ipv4: bool,
    /// Persistent keepalive in seconds; 0 is off.
    pub persistent_keepalive: u16,
    /// Local ports the userspace backend forwards to remote workloads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<RawForward>,
}

impl Default for RawFabric {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: "auto".into(),
            interface: "fluidos0".into(),
            listen_port: 51820,
            endpoints: Vec::new(),
            topology: "mesh".into(),
            hub: None,
            mtu: 1420,
            ipv4: true,
            persistent_keepalive: 0,
            forwards: Vec::new(),
        }
    }
}

/// One entry of `fabric.forwards`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawForward {
    /// Where to listen on this host, `ip:port`.
    pub local: String,
    /// The remote workload's overlay `ip:port`.
    pub remote: String,
}

/// `[roles]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRoles {
    /// Sell this host's capacity.
    pub provider: bool,
    /// Buy capacity from others.
    pub consumer: bool,
    /// Aggregate and forward other nodes' flavors.
    pub supernode: bool,
}

impl Default for RawRoles {
    fn default() -> Self {
        Self {
            provider: true,
            consumer: true,
            supernode: false,
        }
    }
}

/// `[control]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawControl {
    /// Loopback `ip:port` of the HTTP control API.
    pub listen: String,
    /// Also serve the API on this unix socket; optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Requests served at once; more wait.
    pub max_concurrent_requests: u32,
}

impl Default for RawControl {
    fn default() -> Self {
        Self {
            listen: DEFAULT_CONTROL_LISTEN.into(),
            socket: None,
            max_concurrent_requests: 32,
        }
    }
}

/// `[location]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLocation {
    /// ISO 3166-1 alpha-2 code.
    pub country: String,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Latitude in degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude in degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

/// `[price]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPrice {
    /// Price of the whole CPU/memory/storage flavor per period.
    pub amount: f64,
    /// Price of one GPU per period.
    pub gpu_amount: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// `hour`, `day` or `month`.
    pub period: String,
    /// `reserved` or `pay_per_use`.
    pub model: String,
}

impl Default for RawPrice {
    fn default() -> Self {
        Self {
            amount: 1.0,
            gpu_amount: 2.0,
            currency: "EUR".into(),
            period: "hour".into(),
            model: "reserved".into(),
        }
    }
}

/// A CPU quantity: cores as a number (`2`, `0.5`) or a string (`"500m"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawCpu {
    /// Whole cores.
    Int(u64),
    /// Fractional cores.
    Float(f64),
    /// `"2"`, `"0.5"`, `"500m"`.
    Text(String),
}

/// A byte quantity: bytes as an integer, or a string with a unit (`"512MiB"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawBytes {
    /// Bytes.
    Int(u64),
    /// `"512MiB"`, `"4GiB"`, `"1GB"`.
    Text(String),
}

/// `[reserve]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawReserve {
    /// Share of each resource kept for the host, 0–100.
    pub percent: f64,
    /// At least this much CPU is kept.
    pub min_cpu: RawCpu,
    /// At least this much memory is kept.
    pub min_memory: RawBytes,
}

impl Default for RawReserve {
    fn default() -> Self {
        Self {
            percent: 10.0,
            min_cpu: RawCpu::Int(1),
            min_memory: RawBytes::Text("512MiB".into()),
        }
    }
}

/// `[partition]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPartition {
    /// The smallest partition sold.
    pub min: RawQuantities,
    /// Partitions grow from the minimum in these steps.
    pub step: RawQuantities,
}

impl Default for RawPartition {
    fn default() -> Self {
        Self {
            min: RawQuantities {
                cpu: Some(RawCpu::Text("500m".into())),
                memory: Some(RawBytes::Text("512MiB".into())),
                storage: Some(RawBytes::Int(0)),
                pods: Some(1),
                gpus: Some(1),
            },
            step: RawQuantities {
                cpu: Some(RawCpu::Text("500m".into())),
                memory: Some(RawBytes::Text("256MiB".into())),
                storage: Some(RawBytes::Text("1GiB".into())),
                pods: Some(1),
                gpus: Some(1),
            },
        }
    }
}

/// `[partition.min]` / `[partition.step]`. A missing key takes its default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawQuantities {
    /// CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<RawCpu>,
    /// Memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<RawBytes>,
    /// Storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<RawBytes>,
    /// Workload slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<u64>,
    /// GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u64>,
}

/// `catalog_server`: `"auto"`, `"true"` or `"false"`; a bare TOML boolean is
/// read as its string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawCatalogServer {
    /// `true` or `false` without quotes.
    Bool(bool),
    /// `"auto"`, `"true"`, `"false"`.
    Text(String),
}

/// `[[catalogs]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// The catalog's name; nodes sharing it form one DHT.
    pub name: String,
    /// Bootstrap multiaddrs (`…/p2p/<peer id>`).
    #[serde(default)]
    pub addresses: Vec<String>,
}
