//! The command line: `init`, `run`, and the subcommands that talk to a running
//! daemon through its control API. Tables for people, `--json` for scripts.
//!
//! The argument types and the dispatch are here; each group of subcommands has
//! its own module (`contract`, `buy`, `workloads`, `fabric`), and `tables` prints
//! for people.

/// `println!` for a command's output: when stdout is closed early
/// (`fluidos-node workloads | head`), the command ends quietly with success, as
/// Unix tools do, instead of panicking on the broken pipe.
macro_rules! out {
    () => {
        $crate::cli::write_out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

mod buy;
mod contract;
mod fabric;
mod tables;
pub mod workloads;

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use fluidos_contracts::Flavor;
use fluidos_contracts::resources::{parse_bytes, parse_cpu_millis};
use serde::de::DeserializeOwned;

use crate::config::{self, Globals, Overrides};
use crate::control::MAX_BUY_WAIT;
use crate::control::client::{Client, Endpoint};
use crate::control::token::Token;
use crate::control::types::{
    AddPeerRequest, BuyRequest, ContractInfo, FabricReport, PeerView, StatusView,
};
use crate::daemon::CONTROL_ADDR_FILE;

use buy::buy;
pub use contract::{VerifyReport, verify_contract_bytes};
use contract::{contract, verify_file};
use tables::{print_contracts, print_flavors, print_peers, print_status, short, table, when};

/// fluidos-node: a liquid-computing node — sells this machine's spare capacity
/// and buys capacity from peers.
#[derive(Parser, Debug)]
#[command(name = "fluidos-node", version, about, long_about = None)]
pub struct Cli {
    /// Where the node lives, and how to reach its control API.
    #[command(flatten)]
    pub globals: Globals,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write DATA_DIR/config.toml (defaults plus any flags) and create the node key.
    Init {
        /// Overwrite an existing config file.
        #[arg(long)]
        force: bool,
        /// Values to write instead of the defaults.
        #[command(flatten)]
        overrides: Box<Overrides>,
    },
    /// Run the node in the foreground until SIGINT or SIGTERM.
    Run {
        /// Values that override the config file.
        #[command(flatten)]
        overrides: Box<Overrides>,
    },
    /// Identity, addresses, capacity and counts of the running node.
    Status,
    /// The flavors this node offers.
    Flavors,
    /// Peering candidates.
    Peers,
    /// Manage peers.
    Peer {
        /// What to do with peers.
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Contracts held, as provider or buyer.
    Contracts,
    /// One contract.
    Contract {
        /// What to do with a contract.
        #[command(subcommand)]
        command: ContractCommand,
    },
    /// Buy capacity from the best peer, showing each phase.
    Buy(BuyArgs),
    /// This node and the virtual nodes made of capacity bought from providers,
    /// with what is free on each.
    Nodes,
    /// Deploy a workload: place it, buy capacity when it does not fit, run it
    /// on the chosen node and wait until it runs.
    Deploy(workloads::DeployArgs),
    /// Workloads: this node's own and the peers' hosted here.
    Workloads,
    /// One workload: placement reasons, replicas, status history, output.
    Workload {
        /// Its id.
        id: String,
    },
    /// A replica's output, from wherever it runs.
    Logs {
        /// The workload id.
        id: String,
        /// The replica.
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// At most this many bytes from the end.
        #[arg(long, default_value_t = 65536)]
        tail: u32,
    },
    /// Stop every replica of a workload and remove it.
    Undeploy {
        /// Its id.
        id: String,
    },
    /// The WireGuard fabric, in the spirit of `wg show`: backend and why, peers,
    /// endpoints, overlay addresses, latest handshake and bytes.
    Fabric,
    /// The replicated view.
    View {
        /// What to do with it.
        #[command(subcommand)]
        command: workloads::ViewCommand,
    },
    /// Run the demo: three nodes on this machine peer through a shared catalog
    /// address, one buys capacity from another, and the contract is verified.
    Demo,
}

/// `fluidos-node peer …`.
#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Dial a peer and keep it as a manual candidate (remembered across restarts
    /// in `<data-dir>/state/peers`).
    Add {
        /// Its multiaddr, e.g. /ip4/192.0.2.7/tcp/7070/p2p/12D3KooW…
        addr: String,
    },
}

/// `fluidos-node contract …`.
#[derive(Subcommand, Debug)]
pub enum ContractCommand {
    /// Show a contract's terms and signatures.
    Show {
        /// Contract id (hex).
        id: String,
    },
    /// Verify a contract file offline: raw CBOR bytes (from `contract export`),
    /// their hex, the export JSON, or a VC JSON document.
    Verify {
        /// The file.
        file: PathBuf,
    },
    /// End a contract early.
    Terminate {
        /// Contract id (hex).
        id: String,
        /// Why; the other party sees it.
        #[arg(long, default_value = "terminated by operator")]
        reason: String,
        /// Why, typed and signed: requested, provider_lost (as a buyer), over_quota
        /// (as a provider). The contract's end shows it on both sides.
        #[arg(long, default_value = "requested", value_parser = contract::termination_cause)]
        cause: fluidos_contracts::TerminationCause,
    },
    /// Write a contract to a file: raw canonical CBOR, or a VC with --vc.
    Export {
        /// Contract id (hex).
        id: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Export as a W3C Verifiable Credential (JSON).
        #[arg(long)]
        vc: bool,
    },
}

/// `fluidos-node buy …`.
#[derive(Args, Debug, Clone)]
pub struct BuyArgs {
    /// CPUs: `2`, `0.5` or `500m`.
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory: `4GiB`, `512MiB`.
    #[arg(long)]
    pub memory: Option<String>,
    /// Storage: `10GiB`.
    #[arg(long)]
    pub storage: Option<String>,
    /// Whole GPUs.
    #[arg(long, default_value_t = 0)]
    pub gpus: u64,
    /// Workload slots (0 with --cpu or --memory buys one, or the seller's minimum).
    #[arg(long, default_value_t = 0)]
    pub pods: u64,
    /// Highest price per hour for the partition, in currency units (e.g. 0.5).
    #[arg(long)]
    pub max_price: Option<f64>,
    /// Currency of the price (ISO 4217).
    #[arg(long)]
    pub currency: Option<String>,
    /// Country the capacity must be in (ISO 3166-1 alpha-2).
    #[arg(long)]
    pub country: Option<String>,
    /// CPU architecture (x86_64, aarch64, …).
    #[arg(long)]
    pub arch: Option<String>,
    /// Contract length: `30m`, `1h`, `2d`.
    #[arg(long, default_value = "1h")]
    pub duration: String,
    /// While no provider is known, wait this long for one (`10s`, `2m`; at most
    /// 10m) instead of failing at once, printing what it waits for.
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

impl BuyArgs {
    /// The API request these flags describe.
    pub fn to_request(&self) -> anyhow::Result<BuyRequest> {
        let cpu_millis = self
            .cpu
            .as_deref()
            .map(parse_cpu_millis)
            .transpose()?
            .unwrap_or(0);
        let memory_bytes = self
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()?
            .unwrap_or(0);
        let storage_bytes = self
            .storage
            .as_deref()
            .map(parse_bytes)
            .transpose()?
            .unwrap_or(0);
        if cpu_millis == 0 && memory_bytes == 0 && storage_bytes == 0 && self.gpus == 0 {
            bail!("say what to buy: --cpu, --memory, --storage or --gpus");
        }
        let max_price_micros = match self.max_price {
            None => None,
            Some(p) if (0.0..1e12).contains(&p) => Some((p * 1e6).round() as u64),
            Some(p) => bail!("--max-price {p} is not a price"),
        };
        let duration = config::parse_duration(&self.duration)
            .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
        if duration.is_zero() {
            bail!("--duration must be positive");
        }
        let wait_ms = match &self.wait {
            None => None,
            Some(w) => {
                let d = config::parse_duration(w).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
                if d > MAX_BUY_WAIT {
                    bail!("--wait {w} is longer than {}m", MAX_BUY_WAIT.as_secs() / 60);
                }
                Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
        };
        Ok(BuyRequest {
            cpu_millis,
            memory_bytes,
            storage_bytes,
            pods: self.pods,
            gpus: self.gpus,
            max_price_micros,
            currency: self.currency.clone(),
            country: self.country.clone(),
            architecture: self.arch.clone(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            wait_ms,
        })
    }
}

/// Runs a client subcommand against the daemon.
pub async fn run_client(cli: &Cli) -> anyhow::Result<()> {
    if let Command::Contract {
        command: ContractCommand::Verify { file },
    } = &cli.command
    {
        // Offline: needs no daemon, no config, no token.
        return verify_file(file, cli.json).await;
    }
    let client = connect(&cli.globals)?;
    let json = cli.json;
    match &cli.command {
        Command::Status => show::<StatusView>(&client, "/v1/status", json, print_status).await,
        Command::Flavors => {
            show::<Vec<Flavor>>(&client, "/v1/flavors", json, |f| print_flavors(f)).await
        }
        Command::Peers => peers(&client, json).await,
        Command::Peer {
            command: PeerCommand::Add { addr },
        } => {
            let v: serde_json::Value = client
                .post("/v1/peers", &AddPeerRequest { addr: addr.clone() })
                .await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("dialling {addr}; it appears in `fluidos-node peers` once it answers");
            }
            Ok(())
        }
        Command::Contracts => {
            show::<Vec<ContractInfo>>(&client, "/v1/contracts", json, |c| print_contracts(c)).await
        }
        Command::Contract { command } => contract(&client, command, json).await,
        Command::Buy(args) => buy(&client, args, json).await,
        Command::Nodes => workloads::nodes(&client, json).await,
        Command::Deploy(args) => workloads::deploy(&client, args, json).await,
        Command::Workloads => workloads::list(&client, json).await,
        Command::Workload { id } => workloads::one(&client, id, json).await,
        Command::Logs { id, replica, tail } => workloads::logs(&client, id, *replica, *tail).await,
        Command::Undeploy { id } => workloads::undeploy(&client, id).await,
        Command::View { command } => workloads::view(&client, command).await,
        Command::Fabric => show::<FabricReport>(&client, "/v1/fabric", json, fabric::print).await,
        Command::Init { .. } | Command::Run { .. } | Command::Demo => {
            bail!("not a client command")
        }
    }
}

/// Builds a client from the config: the token file and the control address.
pub fn connect(globals: &Globals) -> anyhow::Result<Client> {
    let cfg = config::load(globals, &Overrides::default())?;
    let token = Token::load(&cfg.token_path())?;
    let endpoint = match &cfg.control.socket {
        Some(path) => Endpoint::Unix(path.clone()),
        None if cfg.control.listen.port() == 0 => {
            // Port 0 means the daemon chose one; it wrote it down.
            let path = cfg.data_dir.join(CONTROL_ADDR_FILE);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "control.listen has port 0 and {} is missing; is the daemon running?",
                    path.display()
                )
            })?;
            Endpoint::Tcp(
                text.trim()
                    .parse()
                    .with_context(|| format!("{} is not an address", path.display()))?,
            )
        }
        None => Endpoint::Tcp(cfg.control.listen),
    };
    Ok(Client::new(endpoint, token))
}

/// Writes one line of output (see `out!`).
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            std::process::exit(1);
        }
    }
}

async fn show<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    json: bool,
    print: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        let v: serde_json::Value = client.get(path).await?;
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let v: T = client.get(path).await?;
        print(&v);
    }
    Ok(())
}

/// `fluidos-node peers`: the candidates, or, when there are none, why.
async fn peers(client: &Client, json: bool) -> anyhow::Result<()> {
    if json {
        return show::<Vec<PeerView>>(client, "/v1/peers", true, |_| {}).await;
    }
    let list: Vec<PeerView> = client.get("/v1/peers").await?;
    if list.is_empty() {
        let status: StatusView = client.get("/v1/status").await?;
        out!("no peers yet: {}", status.discovery.why_no_peers());
        return Ok(());
    }
    print_peers(&list);
    Ok(())
}

/// `fluidos-node init`.
pub fn init(
    globals: &Globals,
    overrides: &Overrides,
    force: bool,
    json: bool,
) -> anyhow::Result<()> {
    let outcome = config::init(globals, overrides, force)?;
    let key_path = outcome.config.key_path();
    let (key, created) =
        fluidos_contracts::keyfile::load_or_create(&key_path).context("cannot use the node key")?;
    if json {
        let v = serde_json::json!({
            "config": outcome.config_path,
            "data_dir": outcome.config.data_dir,
            "key": key_path,
            "key_created": created,
            "node_id": key.node_id().to_did_key(),
            "peer_id": fluidos_discovery::peer_id(&key.node_id()).to_string(),
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("wrote {}", outcome.config_path.display());
        out!(
            "{} key {}",
            if created { "created" } else { "kept existing" },
            key_path.display()
        );
        out!("node id: {}", key.node_id());
        out!(
            "start it with: fluidos-node --data-dir {} run",
            outcome.config.data_dir.display()
        );
    }
    Ok(())
}
