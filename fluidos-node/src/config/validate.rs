//! Semantic validation: a [`RawConfig`] that parsed becomes a [`Config`] only if
//! every value makes sense.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fluidos_contracts::resources::{parse_bytes, parse_cpu_millis};
use fluidos_contracts::{Location, Price, PriceModel, PricePeriod, Resources};
use fluidos_core::host::{HostReserve, OfferConfig};
use fluidos_discovery::{CatalogName, CatalogServer};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use super::overrides::{Origin, Origins};
use super::raw::{RawBytes, RawCatalogServer, RawConfig, RawCpu, RawQuantities};
use super::{Catalog, Config, ConfigError, ControlConfig, Roles, default_data_dir};

/// Validates `raw` as read from `file` (no overrides).
pub fn validate(raw: &RawConfig, file: Option<&Path>) -> Result<Config, ConfigError> {
    validate_with(raw, file, &Origins::new())
}

/// Parses a duration: an integer with a unit `ms`, `s`, `m`, `h` or `d` (`90s`, `5m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30s, 5m or 1h"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}` has no known unit (use ms, s, m, h or d)")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

struct Ctx<'a> {
    file: Option<&'a Path>,
    origins: &'a Origins,
}

impl Ctx<'_> {
    fn origin(&self, key: &str) -> Origin {
        // An override of a whole list or table also covers its items.
        let mut k = key;
        loop {
            if let Some(o) = self.origins.get(k) {
                return o.clone();
            }
            match k.rfind('.') {
                Some(i) => k = &k[..i],
                None => break,
            }
        }
        match self.file {
            Some(f) => Origin::File(f.to_owned()),
            None => Origin::Default,
        }
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.origin(key), key, reason)
    }

    fn multiaddr(&self, key: &str, s: &str) -> Result<Multiaddr, ConfigError> {
        s.parse::<Multiaddr>()
            .map_err(|e| self.err(key, format!("`{s}` is not a multiaddr ({e})")))
    }

    fn cpu(&self, key: &str, v: &RawCpu) -> Result<u64, ConfigError> {
        match v {
            RawCpu::Int(n) => n
                .checked_mul(1000)
                .ok_or_else(|| self.err(key, "too large")),
            RawCpu::Float(f) if f.is_finite() && *f >= 0.0 && *f < 1e12 => {
                Ok((f * 1000.0).round() as u64)
            }
            RawCpu::Float(f) => Err(self.err(key, format!("{f} is not a CPU quantity"))),
            RawCpu::Text(s) => parse_cpu_millis(s).map_err(|e| self.err(key, e.to_string())),
        }
    }

    fn bytes(&self, key: &str, v: &RawBytes) -> Result<u64, ConfigError> {
        match v {
            RawBytes::Int(n) => Ok(*n),
            RawBytes::Text(s) => parse_bytes(s).map_err(|e| self.err(key, e.to_string())),
        }
    }

    fn duration(&self, key: &str, s: &str, min: Duration) -> Result<Duration, ConfigError> {
        let d = parse_duration(s).map_err(|e| self.err(key, e))?;
        if d < min {
            return Err(self.err(key, format!("must be at least {}s", min.as_secs())));
        }
        Ok(d)
    }

    fn money(&self, key: &str, amount: f64) -> Result<u64, ConfigError> {
        if !(0.0..=1e12).contains(&amount) {
            return Err(self.err(key, format!("{amount} is not an amount between 0 and 1e12")));
        }
        Ok((amount * 1e6).round() as u64)
    }

    fn quantities(
        &self,
        key: &str,
        q: &RawQuantities,
        default: &RawQuantities,
    ) -> Result<Resources, ConfigError> {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        let cpu = pick(&q.cpu, &default.cpu).unwrap_or(RawCpu::Int(0));
        let memory = pick(&q.memory, &default.memory).unwrap_or(RawBytes::Int(0));
        let storage = pick(&q.storage, &default.storage).unwrap_or(RawBytes::Int(0));
        Ok(Resources {
            cpu_millis: self.cpu(&format!("{key}.cpu"), &cpu)?,
            memory_bytes: self.bytes(&format!("{key}.memory"), &memory)?,
            storage_bytes: self.bytes(&format!("{key}.storage"), &storage)?,
            pods: q.pods.or(default.pods).unwrap_or(0),
            gpus: q.gpus.or(default.gpus).unwrap_or(0),
        })
    }
}

fn is_code(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_alphabetic())
}

pub(crate) fn validate_with(
    raw: &RawConfig,
    file: Option<&Path>,
    origins: &Origins,
) -> Result<Config, ConfigError> {
    let cx = Ctx { file, origins };

    let data_dir = raw.data_dir.clone().unwrap_or_else(default_data_dir);
    if data_dir.as_os_str().is_empty() {
        return Err(cx.err("data_dir", "must not be empty"));
    }

    if raw.listen.is_empty() {
        return Err(cx.err("listen", "needs at least one address"));
    }
    let listen = raw
        .listen
        .iter()
        .enumerate()
        .map(|(i, s)| cx.multiaddr(&format!("listen.{i}"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let peers = raw
        .peers
        .iter()
        .enumerate()
        .map(|(i, s)| cx.multiaddr(&format!("peers.{i}"), s))
        .collect::<Result<Vec<_>, _>>()?;

    let mut catalogs = Vec::new();
    for (i, c) in raw.catalogs.iter().enumerate() {
        let name: CatalogName =
            c.name
                .parse()
                .map_err(|e: <CatalogName as std::str::FromStr>::Err| {
                    cx.err(&format!("catalogs.{i}.name"), e.to_string())
                })?;
        if catalogs.iter().any(|k: &Catalog| k.name == name) {
            return Err(cx.err(
                &format!("catalogs.{i}.name"),
                format!("catalog `{}` is listed twice", c.name),
            ));
        }
        let mut addresses = Vec::new();
        for (j, a) in c.addresses.iter().enumerate() {
            let key = format!("catalogs.{i}.addresses.{j}");
            let addr = cx.multiaddr(&key, a)?;
            // Kademlia needs to know whom it dials.
            if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                return Err(cx.err(&key, format!("`{a}` must end in /p2p/<peer id>")));
            }
            addresses.push(addr);
        }
        catalogs.push(Catalog { name, addresses });
    }

    let catalog_server = match &raw.catalog_server {
        RawCatalogServer::Bool(true) => CatalogServer::Always,
        RawCatalogServer::Bool(false) => CatalogServer::Never,
        RawCatalogServer::Text(s) => s.trim().parse().map_err(|_| {
            cx.err(
                "catalog_server",
                format!("`{s}` is not auto, true or false"),
            )
        })?,
    };

    let remeasure_interval = cx.duration(
        "remeasure_interval",
        &raw.remeasure_interval,
        Duration::from_secs(1),
    )?;
    let runtime = raw
        .runtime
        .trim()
        .parse::<super::RuntimeMode>()
        .map_err(|()| {
            cx.err(
                "runtime",
                format!("`{}` is not auto, docker or process", raw.runtime),
            )
        })?;
    let usage_interval = cx.duration(
        "usage_interval",
        &raw.usage_interval,
        Duration::from_secs(1),
    )?;
    let validity = cx.duration(
        "flavor_validity",
        &raw.flavor_validity,
        Duration::from_secs(10),
    )?;

    let control_listen: SocketAddr = raw.control.listen.parse().map_err(|_| {
        cx.err(
            "control.listen",
            format!("`{}` is not an ip:port address", raw.control.listen),
        )
    })?;
    // The token protects the API, but there is no reason to expose it at all.
    if !control_listen.ip().is_loopback() {
        return Err(cx.err(
            "control.listen",
            format!("{control_listen} is not a loopback address (use 127.0.0.1 or ::1)"),
        ));
    }
    if raw.control.max_concurrent_requests == 0 || raw.control.max_concurrent_requests > 4096 {
        return Err(cx.err(
            "control.max_concurrent_requests",
            "must be between 1 and 4096",
        ));
    }

    let location = match &raw.location {
        None => None,
        Some(l) => {
            if !is_code(&l.country, 2) {
                return Err(cx.err(
                    "location.country",
                    format!(
                        "`{}` is not an ISO 3166-1 alpha-2 code such as IT or DE",
                        l.country
                    ),
                ));
            }
            let micro =
                |key: &str, v: Option<f64>, limit: f64| -> Result<Option<i32>, ConfigError> {
                    match v {
                        None => Ok(None),
                        Some(d) if d.is_finite() && d.abs() <= limit => {
                            Ok(Some((d * 1e6).round() as i32))
                        }
                        Some(d) => {
                            Err(cx.err(key, format!("{d} is outside -{limit}..={limit} degrees")))
                        }
                    }
                };
            Some(Location {
                country: l.country.to_ascii_uppercase(),
                city: l.city.clone().filter(|c| !c.trim().is_empty()),
                lat_e6: micro("location.lat", l.lat, 90.0)?,
                lon_e6: micro("location.lon", l.lon, 180.0)?,
            })
        }
    };

    for (k, v) in &raw.labels {
        if k.is_empty() || k.len() > 63 || v.len() > 253 {
            return Err(cx.err(
                &format!("labels.{k}"),
                "keys must be 1-63 characters and values at most 253",
            ));
        }
    }

    if !is_code(&raw.price.currency, 3) {
        return Err(cx.err(
            "price.currency",
            format!(
                "`{}` is not an ISO 4217 code such as EUR",
                raw.price.currency
            ),
        ));
    }
    let period = match raw.price.period.as_str() {
        "hour" => PricePeriod::Hour,
        "day" => PricePeriod::Day,
        "month" => PricePeriod::Month,
        other => {
            return Err(cx.err(
                "price.period",
                format!("`{other}` is not hour, day or month"),
            ));
        }
    };
    let model = match raw.price.model.as_str() {
        "reserved" => PriceModel::Reserved,
        "pay_per_use" => PriceModel::PayPerUse,
        other => {
            return Err(cx.err(
                "price.model",
                format!("`{other}` is not reserved or pay_per_use"),
            ));
        }
    };
    let price = Price {
        amount_micros: cx.money("price.amount", raw.price.amount)?,
        currency: raw.price.currency.to_ascii_uppercase(),
        period,
        model,
    };
    let gpu_price_micros = cx.money("price.gpu_amount", raw.price.gpu_amount)?;

    let percent = raw.reserve.percent;
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(cx.err(
            "reserve.percent",
            format!("{percent} is not between 0 and 100"),
        ));
    }
    let reserve = HostReserve {
        fraction_ppm: (percent * 10_000.0).round() as u32,
        min_cpu_millis: cx.cpu("reserve.min_cpu", &raw.reserve.min_cpu)?,
        min_memory_bytes: cx.bytes("reserve.min_memory", &raw.reserve.min_memory)?,
    };

    let defaults = super::raw::RawPartition::default();
    let min = cx.quantities("partition.min", &raw.partition.min, &defaults.min)?;
    let step = cx.quantities("partition.step", &raw.partition.step, &defaults.step)?;

    let fabric = fabric(&cx, &raw.fabric)?;

    let roles = Roles {
        provider: raw.roles.provider,
        consumer: raw.roles.consumer,
        supernode: raw.roles.supernode,
    };

    let workloads = super::WorkloadsConfig {
        local_capacity: cx.quantities(
            "workloads.local_capacity",
            &raw.workloads.local_capacity,
            &Default::default(),
        )?,
        provider_lost_after: cx.duration(
            "workloads.provider_lost_after",
            &raw.workloads.provider_lost_after,
            Duration::from_secs(6),
        )?,
    };

    Ok(Config {
        file: file.map(Path::to_owned),
        data_dir,
        listen,
        mdns: raw.mdns,
        peers,
        catalogs,
        catalog_server,
        remeasure_interval,
        runtime,
        usage_interval,
        roles,
        control: ControlConfig {
            listen: control_listen,
            socket: raw.control.socket.clone(),
            max_concurrent_requests: raw.control.max_concurrent_requests as usize,
        },
        reserve,
        offer: OfferConfig {
            location,
            labels: raw.labels.clone(),
            carbon_g_per_kwh: raw.carbon_g_per_kwh,
            price,
            gpu_price_micros,
            min,
            step,
            pods: raw.pods,
            validity,
        },
        workloads,
        fabric,
    })
}

/// Whether `name` is a valid Linux interface name (`dev_valid_name`).
fn interface_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

/// Whether `ip` is an overlay address (IPv6 ULA of a node id, or 100.64.0.0/10).
fn is_overlay(ip: &std::net::IpAddr) -> bool {
    use fluidos_fabric::overlay;
    match ip {
        std::net::IpAddr::V6(a) => overlay::is_overlay(a),
        std::net::IpAddr::V4(a) => overlay::ipv4_prefix().contains(a),
    }
}

/// `[fabric]`.
fn fabric(
    cx: &Ctx<'_>,
    raw: &super::raw::RawFabric,
) -> Result<Option<fluidos_core::fabric::FabricOptions>, ConfigError> {
    use fluidos_core::fabric::{BackendChoice, FabricOptions, PortForward, Topology};
    let backend = match raw.backend.trim() {
        "auto" => BackendChoice::Auto,
        "tun" => BackendChoice::Tun,
        "userspace" => BackendChoice::Userspace,
        other => {
            return Err(cx.err(
                "fabric.backend",
                format!("`{other}` is not auto, tun or userspace"),
            ));
        }
    };
    if !interface_name_ok(&raw.interface) {
        return Err(cx.err(
            "fabric.interface",
            format!(
                "`{}` is not an interface name: 1-15 bytes, no `/`, `:` or spaces",
                raw.interface
            ),
        ));
    }
    if !(1280..=9000).contains(&raw.mtu) {
        return Err(cx.err(
            "fabric.mtu",
            format!("{} is not between 1280 (IPv6's minimum) and 9000", raw.mtu),
        ));
    }
    let mut endpoints = Vec::new();
    for (i, e) in raw.endpoints.iter().enumerate() {
        let key = format!("fabric.endpoints.{i}");
        let addr: SocketAddr = e
            .parse()
            .map_err(|_| cx.err(&key, format!("`{e}` is not an ip:port address")))?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(cx.err(
                &key,
                format!("{addr} cannot be reached: name an address and a port peers can use"),
            ));
        }
        endpoints.push(addr);
    }
    if endpoints.len() > fluidos_fabric::MAX_ENDPOINTS {
        return Err(cx.err(
            "fabric.endpoints",
            format!("at most {} endpoints", fluidos_fabric::MAX_ENDPOINTS),
        ));
    }
    let hub =
        match &raw.hub {
            None => None,
            Some(h) => Some(h.trim().parse::<fluidos_contracts::NodeId>().map_err(|e| {
                cx.err("fabric.hub", format!("`{h}` is not a node's did:key ({e})"))
            })?),
        };
    let topology = match (raw.topology.trim(), hub) {
        ("mesh", None) => Topology::Mesh,
        ("mesh", Some(_)) => {
            return Err(cx.err(
                "fabric.hub",
                "is only used with topology = \"hub\"; remove it or set the topology",
            ));
        }
        ("hub", Some(h)) => Topology::Hub(h),
        ("hub", None) => {
            return Err(cx.err(
                "fabric.hub",
                "topology = \"hub\" needs the hub's did:key (this node's own to be the hub)",
            ));
        }
        (other, _) => {
            return Err(cx.err("fabric.topology", format!("`{other}` is not mesh or hub")));
        }
    };
    let mut forwards = Vec::new();
    for (i, f) in raw.forwards.iter().enumerate() {
        let local: SocketAddr = f.local.parse().map_err(|_| {
            cx.err(
                &format!("fabric.forwards.{i}.local"),
                format!("`{}` is not an ip:port address", f.local),
            )
        })?;
        if local.port() == 0 {
            return Err(cx.err(
                &format!("fabric.forwards.{i}.local"),
                "needs a port other than 0",
            ));
        }
        if forwards.iter().any(|p: &PortForward| p.local == local) {
            return Err(cx.err(
                &format!("fabric.forwards.{i}.local"),
                format!("{local} is forwarded twice"),
            ));
        }
        let remote: SocketAddr = f.remote.parse().map_err(|_| {
            cx.err(
                &format!("fabric.forwards.{i}.remote"),
                format!("`{}` is not an ip:port address", f.remote),
            )
        })?;
        if !is_overlay(&remote.ip()) || remote.port() == 0 {
            return Err(cx.err(
                &format!("fabric.forwards.{i}.remote"),
                format!(
                    "{remote} is not an overlay address and port (fdf0:6a54:bda7::/48 or 100.64.0.0/10)"
                ),
            ));
        }
        forwards.push(PortForward { local, remote });
    }
    if !raw.enabled {
        return Ok(None);
    }
    let options = FabricOptions::default()
        .with_backend(backend)
        .with_interface(raw.interface.clone())
        .with_listen(SocketAddr::from(([0, 0, 0, 0], raw.listen_port)))
        .with_endpoints(endpoints)
        .with_topology(topology)
        .with_mtu(raw.mtu)
        .with_forwards(forwards)
        .with_ipv4(raw.ipv4)
        .with_persistent_keepalive(
            (raw.persistent_keepalive > 0).then_some(raw.persistent_keepalive),
        );
    Ok(Some(options))
}
