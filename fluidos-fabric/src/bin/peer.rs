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
//!
//! `fluidos-fabric-peer --tunnels CONFIG.json` runs the contract-driven service
//! instead (what the daemon runs), steered by lines on standard input, each answered
//! by one line of JSON on standard output:
//!
//! ```text
//! apply {"peers":[{"contract":"<hex>","node":"did:key:…","params":{…}}],"relayed":[],"forwarding":"none"}
//! status          the Status as JSON
//! show            the Status as text, in the spirit of `wg show`, then a line `.`
//! quit            shuts the service down (interface and routes removed)
//! ```
//!
//! with `{ "interface": "fl0", "listen": "198.18.0.1:51820", "key_file": "a.key",
//! "node_id": "did:key:…", "ipv4": true, "backend": "auto",
//! "forwards": [{ "local": "127.0.0.1:8080", "remote": "[fdf0:…]:80" }] }`
//! (`backend`: `auto`, `tun` or `userspace`; `forwards` are used by the userspace one).

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct TunnelsFile {
    interface: String,
    listen: SocketAddr,
    key_file: PathBuf,
    node_id: fluidos_contracts::NodeId,
    #[serde(default = "yes")]
    ipv4: bool,
    #[serde(default = "yes")]
    offload: bool,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    forwards: Vec<fluidos_fabric::userspace::PortForward>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--tunnels" => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            let config: TunnelsFile =
                serde_json::from_str(&text).with_context(|| format!("parsing {path}"))?;
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(run_tunnels(config));
        }
        [path] => path.clone(),
        [flag, key_file] if flag == "--pubkey" => {
            // Creates the key file if needed and prints its public key, as `wg pubkey`.
            let (secret, _) = fluidos_fabric::keyfile::load_or_create(key_file.as_ref())?;
            println!("{}", STANDARD.encode(secret.public().0));
            return Ok(());
        }
        _ => bail!(
            "usage: fluidos-fabric-peer CONFIG.json | --tunnels CONFIG.json | --pubkey KEYFILE"
        ),
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

#[cfg(target_os = "linux")]
async fn run_tunnels(config: TunnelsFile) -> anyhow::Result<()> {
    use fluidos_fabric::service::{self, BackendChoice, ServiceConfig};
    use fluidos_fabric::{Desired, Fabric, FabricConfig, Tunnels, TunnelsConfig, keyfile};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let backend = match config.backend.as_deref() {
        None | Some("auto") => BackendChoice::Auto,
        Some("tun") => BackendChoice::Tun,
        Some("userspace") => BackendChoice::Userspace,
        Some(other) => bail!("backend `{other}` is not one of auto, tun, userspace"),
    };
    let (secret, _) = keyfile::load_or_create(&config.key_file)?;
    let socket = tokio::net::UdpSocket::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let tunnels = Tunnels::new(
        config.node_id,
        Fabric::new(&secret, FabricConfig::default()),
        TunnelsConfig::default().with_ipv4(config.ipv4),
    );
    let (handle, task) = service::spawn(
        tunnels,
        socket,
        ServiceConfig::new(config.interface.clone())
            .with_backend(backend)
            .with_offload(config.offload)
            .with_forwards(config.forwards),
    )?;
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = term.recv() => None,
        };
        let Some(line) = line else { break };
        let (command, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let answer = match command {
            "apply" => match serde_json::from_str::<Desired>(rest) {
                Ok(desired) => match handle.apply(desired).await {
                    Ok(r) => serde_json::json!({
                        "added": r.added.len(),
                        "removed": r.removed.len(),
                        "ended": r.ended.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "refused": r.refused.iter()
                            .map(|x| serde_json::json!({"contract": x.contract.to_string(), "error": x.error.to_string()}))
                            .collect::<Vec<_>>(),
                        "ipv4_conflicts": r.ipv4_conflicts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                    .to_string(),
                    Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
                },
                Err(e) => serde_json::json!({ "error": format!("bad desired set: {e}") }).to_string(),
            },
            "status" => serde_json::to_string(&handle.status().await?)?,
            "show" => format!("{}.", handle.status().await?),
            "quit" => break,
            other => serde_json::json!({ "error": format!("unknown command `{other}`") }).to_string(),
        };
        out.write_all(answer.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    handle.shutdown().await?;
    task.await??;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn run_tunnels(_config: TunnelsFile) -> anyhow::Result<()> {
    bail!("the TUN backend needs Linux")
}

#[cfg(not(target_os = "linux"))]
async fn run(_config: Config) -> anyhow::Result<()> {
    bail!("the TUN backend needs Linux")
}
