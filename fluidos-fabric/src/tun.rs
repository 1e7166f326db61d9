//! The TUN backend (Linux, needs CAP_NET_ADMIN): the overlay interface, its
//! addresses, and one route per peer network.
//!
//! The device itself is opened by `tun-rs` (the `/dev/net/tun` ioctls are unsafe
//! code, which this workspace denies in its own crates). Addresses and routes are set
//! by running iproute2's `ip`, not over rtnetlink: they change only when a contract
//! starts or ends, `ip` is on every Linux host that has network namespaces, its
//! errors are readable as they are, and it spares an async netlink stack. Every
//! change is undone by [`TunDevice::teardown`] (also on drop, best effort).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use ipnet::IpNet;

/// How the overlay interface is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunConfig {
    /// Interface name (at most 15 bytes), unique on the host, for example `fluidos0`.
    pub name: String,
    /// MTU (default 1420).
    pub mtu: u16,
    /// The node's IPv6 overlay address, assigned as a /128.
    pub address: Ipv6Addr,
    /// The node's optional IPv4 overlay address, assigned as a /32.
    pub ipv4: Option<Ipv4Addr>,
    /// TUN offloads (`IFF_VNET_HDR`, TSO/GSO from the kernel, GRO towards it): the
    /// kernel hands over 64 KiB TCP segments that are split in userspace, and received
    /// packets are coalesced before they are written. Default on.
    pub offload: bool,
}

impl TunConfig {
    /// An interface called `name` carrying `address`, MTU 1420, no IPv4.
    pub fn new(name: impl Into<String>, address: Ipv6Addr) -> Self {
        Self {
            name: name.into(),
            mtu: crate::DEFAULT_MTU,
            address,
            ipv4: None,
            offload: true,
        }
    }

    /// Sets the MTU.
    pub fn with_mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }

    /// Turns TUN offloads on or off.
    pub fn with_offload(mut self, offload: bool) -> Self {
        self.offload = offload;
        self
    }

    /// Adds the IPv4 overlay address.
    pub fn with_ipv4(mut self, ipv4: Option<Ipv4Addr>) -> Self {
        self.ipv4 = ipv4;
        self
    }
}

/// Why the TUN backend failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The interface name is empty, longer than 15 bytes, or has `/`, whitespace or NUL.
    #[error(
        "interface name `{0}` is not a valid Linux interface name (1 to 15 bytes, no `/` or spaces)"
    )]
    BadName(String),
    /// Opening the device failed (typically no CAP_NET_ADMIN, or no `/dev/net/tun`).
    #[error("cannot create TUN interface {name}: {source} (needs CAP_NET_ADMIN and /dev/net/tun)")]
    Open {
        /// The interface name.
        name: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An `ip` command failed or could not run.
    #[error("`ip {args}` failed: {message}")]
    Ip {
        /// Its arguments.
        args: String,
        /// Its standard error, or why it could not start.
        message: String,
    },
}

/// The overlay interface. Reads and writes IP packets without any header.
pub struct TunDevice {
    device: tun_rs::AsyncDevice,
    name: String,
    routes: BTreeSet<IpNet>,
    torn_down: bool,
}

impl TunDevice {
    /// Creates the interface, assigns the addresses and brings it up. Must run inside
    /// a tokio runtime.
    pub fn open(config: &TunConfig) -> Result<Self, TunError> {
        check_name(&config.name)?;
        let device = tun_rs::DeviceBuilder::new()
            .name(config.name.clone())
            .mtu(config.mtu)
            .with(|b| {
                b.offload(config.offload);
            })
            .build_async()
            .map_err(|source| TunError::Open {
                name: config.name.clone(),
                source,
            })?;
        let mut this = Self {
            device,
            name: config.name.clone(),
            routes: BTreeSet::new(),
            torn_down: false,
        };
        let name = this.name.clone();
        ip(&["link", "set", "dev", &name, "mtu", &config.mtu.to_string()])?;
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/128", config.address),
            "dev",
            &name,
            "nodad",
        ])?;
        if let Some(v4) = config.ipv4 {
            ip(&["-4", "addr", "add", &format!("{v4}/32"), "dev", &name])?;
        }
        ip(&["link", "set", "dev", &name, "up"])?;
        this.torn_down = false;
        Ok(this)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device, for reading and writing packets.
    pub fn device(&self) -> &tun_rs::AsyncDevice {
        &self.device
    }

    /// Routes `net` through the interface (idempotent).
    pub fn add_route(&mut self, net: IpNet) -> Result<(), TunError> {
        if self.routes.contains(&net) {
            return Ok(());
        }
        ip(&[
            family(&net),
            "route",
            "replace",
            &net.to_string(),
            "dev",
            &self.name,
        ])?;
        self.routes.insert(net);
        Ok(())
    }

    /// Removes the route to `net` (a route that is already gone is not an error).
    pub fn remove_route(&mut self, net: &IpNet) -> Result<(), TunError> {
        if self.routes.remove(net) {
            ip(&[
                family(net),
                "route",
                "del",
                &net.to_string(),
                "dev",
                &self.name,
            ])?;
        }
        Ok(())
    }

    /// The routes installed, ordered.
    pub fn routes(&self) -> impl Iterator<Item = &IpNet> {
        self.routes.iter()
    }

    /// Removes every route and the interface.
    pub fn teardown(mut self) -> Result<(), TunError> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<(), TunError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_error = None;
        for net in std::mem::take(&mut self.routes) {
            if let Err(e) = ip(&[
                family(&net),
                "route",
                "del",
                &net.to_string(),
                "dev",
                &self.name,
            ]) {
                first_error.get_or_insert(e);
            }
        }
        // The kernel removes a non-persistent TUN interface when its last file
        // descriptor closes; deleting it now makes teardown immediate.
        if let Err(e) = ip(&["link", "del", "dev", &self.name]) {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for TunDevice {
    fn drop(&mut self) {
        let _ = self.teardown_inner();
    }
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

fn family(net: &IpNet) -> &'static str {
    match net.addr() {
        IpAddr::V4(_) => "-4",
        IpAddr::V6(_) => "-6",
    }
}

fn check_name(name: &str) -> Result<(), TunError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(TunError::BadName(name.to_owned()))
    }
}

fn ip(args: &[&str]) -> Result<(), TunError> {
    let joined = args.join(" ");
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TunError::Ip {
            args: joined.clone(),
            message: e.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TunError::Ip {
            args: joined,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        for bad in ["", "a/b", "with space", "sixteen-bytes-xx", "a:b"] {
            assert!(
                matches!(check_name(bad), Err(TunError::BadName(_))),
                "{bad}"
            );
        }
        for good in ["fluidos0", "fl-a1b2c3", "x"] {
            check_name(good).unwrap();
        }
    }
}
