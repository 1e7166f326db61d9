//! `fluidos-fabric-peer`: one fabric endpoint with a TUN interface, configured by a
//! JSON file, for namespace tests, interop with wireguard-go and benchmarks. The
//! daemon drives the same library code from contracts instead.
//!
//! ```json
//! { "interface": "fla0", "listen": "198.18.0.1:51820", "key_file": "a.key",
//!   "address": "fdf0:6a54:bda7::1", "ipv4": "100.64.0.1", "mtu": 1420,
//!   "peers": [ { "public_key": "<base64>", "endpoint": "198.18.0.2:51820",
//!                "allowed_ips": ["fdf0:6a54:bda7::2/128", "100.64.0.2/32"] } ] }
//! ```
//!
//! It prints `ready <interface>` once the interface is up and the peers are added,
//! then runs until SIGTERM or SIGINT, removing its routes and interface on the way out.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fluidos_contracts::WireGuardKey;
use ipnet::IpNet;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    interface: String,
    listen: SocketAddr,
    key_file: PathBuf,
    address: Ipv6Addr,
    #[serde(default)]
    ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    mtu: Option<u16>,
    #[serde(default)]
    persistent_keepalive: Option<u16>,
    #[serde(default = "yes")]
    offload: bool,
    #[serde(default)]
    peers: Vec<Peer>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Peer {
    public_key: String,
    #[serde(default)]
    endpoint: Option<SocketAddr>,
    allowed_ips: Vec<IpNet>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [path] => path.clone(),
        [flag, key_file] if flag == "--pubkey" => {
            // Creates the key file if needed and prints its public key, as `wg pubkey`.
            let (secret, _) = fluidos_fabric::keyfile::load_or_create(key_file.as_ref())?;
            println!("{}", STANDARD.encode(secret.public().0));
            return Ok(());
        }
        _ => bail!("usage: fluidos-fabric-peer CONFIG.json | fluidos-fabric-peer --pubkey KEYFILE"),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let config: Config = serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(config))
}

#[cfg(target_os = "linux")]
async fn run(config: Config) -> anyhow::Result<()> {
    use fluidos_fabric::driver::{self, Command};
    use fluidos_fabric::tun::{TunConfig, TunDevice};
    use fluidos_fabric::{Fabric, FabricConfig, PeerConfig, keyfile};
    use tokio::sync::{mpsc, oneshot};

    // Peers are checked before anything is created.
    let mut peers = Vec::new();
    for peer in config.peers {
        let key = STANDARD
            .decode(peer.public_key.trim())
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .with_context(|| format!("peer key `{}` is not 32 bytes of base64", peer.public_key))?;
        peers.push(PeerConfig {
            public_key: WireGuardKey(key),
            allowed_ips: peer.allowed_ips,
            endpoint: peer.endpoint,
        });
    }
    let (secret, _) = keyfile::load_or_create(&config.key_file)?;
    let mut fabric_config =
        FabricConfig::default().with_persistent_keepalive(config.persistent_keepalive);
    if let Some(mtu) = config.mtu {
        fabric_config = fabric_config.with_mtu(mtu);
    }
    let mtu = fabric_config.mtu;
    let fabric = Fabric::new(&secret, fabric_config);
    let socket = tokio::net::UdpSocket::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let tun = TunDevice::open(
        &TunConfig::new(config.interface.clone(), config.address)
            .with_mtu(mtu)
            .with_ipv4(config.ipv4)
            .with_offload(config.offload),
    )?;
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(driver::run(fabric, tun, socket, rx));
    for peer in peers {
        let (done, answer) = oneshot::channel();
        tx.send(Command::AddPeer(peer, done)).await?;
        answer.await??;
    }
    println!("ready {}", config.interface);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let (done, answer) = oneshot::channel();
    tx.send(Command::Shutdown(done)).await?;
    answer.await??;
    task.await??;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn run(_config: Config) -> anyhow::Result<()> {
    bail!("the TUN backend needs Linux")
}
