//! The command line: `init`, `run`, and the subcommands that talk to a running
//! daemon through its control API. Tables for people, `--json` for scripts.

use std::io::Write;

mod fabric;
pub mod workloads;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use fluidos_contracts::resources::{format_bytes, format_millis, parse_bytes, parse_cpu_millis};
use fluidos_contracts::{Flavor, Resources, SignedContract, Timestamp};
use serde::de::DeserializeOwned;

use crate::config::{self, Globals, Overrides};
use crate::control::MAX_BUY_WAIT;
use crate::control::client::{Client, Endpoint};
use crate::control::token::Token;
use crate::control::types::{
    AddPeerRequest, BuyEvent, BuyRequest, ContractDetail, ContractExport, ContractInfo,
    FabricReport, PeerView, StatusView, TerminateRequest,
};
use crate::daemon::CONTROL_ADDR_FILE;

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
    /// Dial a peer and keep it as a manual candidate.
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
        #[arg(long, default_value = "requested", value_parser = termination_cause)]
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
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("dialling {addr}; it appears in `fluidos-node peers` once it answers");
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

async fn show<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    json: bool,
    print: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if json {
        let v: serde_json::Value = client.get(path).await?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let v: T = client.get(path).await?;
        print(&v);
    }
    Ok(())
}

async fn contract(client: &Client, command: &ContractCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ContractCommand::Show { id } => {
            show::<ContractDetail>(client, &format!("/v1/contracts/{id}"), json, |d| {
                print_contracts(std::slice::from_ref(&d.contract));
                println!();
                println!("flavor:              {}", d.terms.flavor.id);
                println!("reservation:         {}", d.terms.reservation);
                println!("provider signature:  {}", d.provider_signature);
                println!(
                    "buyer signature:     {}",
                    d.buyer_signature.as_deref().unwrap_or("(none)")
                );
            })
            .await
        }
        ContractCommand::Terminate { id, reason, cause } => {
            let v: serde_json::Value = client
                .post(
                    &format!("/v1/contracts/{id}/terminate"),
                    &TerminateRequest {
                        reason: reason.clone(),
                        cause: *cause,
                    },
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("terminated {id}");
            }
            Ok(())
        }
        ContractCommand::Export { id, out, vc } => {
            let e: ContractExport = client
                .get(&format!("/v1/contracts/{id}/export?vc={vc}"))
                .await?;
            let bytes = if *vc {
                let doc = e.vc.context("the daemon returned no VC")?;
                serde_json::to_vec_pretty(&doc)?
            } else {
                hex::decode(&e.cbor_hex).context("the daemon's export is not hex")?
            };
            std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            if !json {
                println!("wrote {} ({} bytes)", out.display(), bytes.len());
            }
            Ok(())
        }
        ContractCommand::Verify { .. } => unreachable_verify(),
    }
}

fn unreachable_verify() -> anyhow::Result<()> {
    bail!("`contract verify` runs offline")
}

/// What `contract verify` concluded.
#[derive(Debug, serde::Serialize)]
pub struct VerifyReport {
    /// `cbor` or `vc`.
    pub format: &'static str,
    /// Contract id.
    pub id: String,
    /// Provider did:key.
    pub provider: String,
    /// Buyer did:key.
    pub buyer: String,
    /// What was bought.
    pub partition: Resources,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
}

/// Verifies a contract file offline (`fluidos-node contract verify`): both
/// signatures over the canonical terms, using nothing but the file. Accepts the
/// raw CBOR, its hex, the export JSON (`cbor_hex`), or a VC document (whose
/// proof is checked too, and which must carry the same doubly signed contract).
pub async fn verify_contract_bytes(data: &[u8]) -> anyhow::Result<VerifyReport> {
    let text = std::str::from_utf8(data).ok().map(str::trim);
    let (format, verified) = match text {
        Some(t) if t.starts_with('{') => {
            let doc: serde_json::Value =
                serde_json::from_str(t).context("the file is not valid JSON")?;
            match doc.get("cbor_hex").and_then(|v| v.as_str()) {
                Some(h) => (
                    "cbor",
                    verify_cbor(&hex::decode(h).context("cbor_hex is not hex")?)?,
                ),
                None => ("vc", crate::vc::verify(t).await?),
            }
        }
        Some(t)
            if !t.is_empty() && t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            ("cbor", verify_cbor(&hex::decode(t)?)?)
        }
        _ => ("cbor", verify_cbor(data)?),
    };
    let t = verified.terms();
    Ok(VerifyReport {
        format,
        id: t.id.to_string(),
        provider: t.provider.to_did_key(),
        buyer: t.buyer.to_did_key(),
        partition: t.partition,
        valid_from: t.valid_from,
        valid_until: t.valid_until,
    })
}

fn verify_cbor(raw: &[u8]) -> anyhow::Result<fluidos_contracts::VerifiedContract> {
    let signed =
        SignedContract::from_bytes(raw).context("not a fluidos contract (canonical CBOR)")?;
    signed.verify().context("contract does NOT verify")
}

async fn verify_file(file: &Path, json: bool) -> anyhow::Result<()> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let report = verify_contract_bytes(&data)
        .await
        .with_context(|| format!("{}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let what = if report.format == "vc" {
            "credential proof, provider and buyer signatures are valid"
        } else {
            "provider and buyer signatures are valid"
        };
        println!("contract {} verifies: {what}", report.id);
        println!("provider:  {}", report.provider);
        println!("buyer:     {}", report.buyer);
        println!("partition: {}", report.partition);
        println!(
            "valid:     {} .. {}",
            when(report.valid_from),
            when(report.valid_until)
        );
    }
    Ok(())
}

async fn buy(client: &Client, args: &BuyArgs, json: bool) -> anyhow::Result<()> {
    let req = args.to_request()?;
    let mut outcome: Option<BuyEvent> = None;
    let mut out = std::io::stdout();
    client
        .post_stream("/v1/buy", &req, |line| {
            if line.is_empty() {
                return Ok(());
            }
            let ev: BuyEvent = serde_json::from_slice(line)
                .context("the daemon sent a malformed progress line")?;
            if json {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            } else if let BuyEvent::Progress { phase, detail } = &ev {
                writeln!(out, "[{phase:>11}] {detail}")?;
            }
            out.flush()?;
            outcome = Some(ev);
            Ok(())
        })
        .await?;
    match outcome {
        Some(BuyEvent::Done { contract }) => {
            if !json {
                println!("bought contract {} from {}", contract.id, contract.provider);
                print_contracts(std::slice::from_ref(&contract));
            }
            Ok(())
        }
        Some(BuyEvent::Failed { error }) => bail!("buy failed ({}): {}", error.code, error.message),
        _ => bail!("the daemon ended the purchase stream without a result"),
    }
}

// ----- tables -----

/// The last 8 characters of an id, for tables.
fn short(id: &str) -> String {
    let n = id.chars().count();
    id.chars().skip(n.saturating_sub(8)).collect()
}

fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn resources_cells(r: &Resources) -> Vec<String> {
    vec![
        format_millis(r.cpu_millis),
        format_bytes(r.memory_bytes),
        format_bytes(r.storage_bytes),
        r.pods.to_string(),
        r.gpus.to_string(),
    ]
}

/// A wall-clock time relative to now, for tables: `in 9m59s`, `3m ago`.
fn when(t: Timestamp) -> String {
    let now = Timestamp::now();
    let span = |ms: u64| {
        let s = ms / 1000;
        match s {
            0..=59 => format!("{s}s"),
            60..=3599 => format!("{}m{}s", s / 60, s % 60),
            3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
            _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        }
    };
    if t >= now {
        format!("in {}", span(now.until(t)))
    } else {
        format!("{} ago", span(t.until(now)))
    }
}

fn money(micros: u64) -> String {
    format!(
        "{}.{:02}",
        micros / 1_000_000,
        (micros % 1_000_000) / 10_000
    )
}

fn print_status(s: &StatusView) {
    let n = &s.node;
    println!("node id:     {}", n.did_key);
    println!("peer id:     {}", n.peer_id);
    println!("version:     {} (up {}s)", s.version, s.uptime_secs);
    match &s.runtime {
        Some(r) => println!("workloads:   {r}"),
        None => println!("workloads:   none (no runtime: this node hosts no workloads)"),
    }
    if let Some(f) = &s.fabric {
        fabric::print_summary(f);
    }
    if let Some(d) = &s.docker {
        if d.available {
            println!(
                "docker:      available (engine {}, API {}, {})",
                d.engine_version.as_deref().unwrap_or("?"),
                d.api_version.as_deref().unwrap_or("?"),
                d.endpoint.as_deref().unwrap_or("?")
            );
        } else {
            println!(
                "docker:      not available: {} (runtime = \"{}\": image workloads are refused)",
                d.reason.as_deref().unwrap_or("not tried"),
                d.mode
            );
        }
    }
    let mut roles = Vec::new();
    if n.roles.provider {
        roles.push("provider");
    }
    if n.roles.consumer {
        roles.push("consumer");
    }
    if n.roles.supernode {
        roles.push("supernode");
    }
    println!("roles:       {}", roles.join(", "));
    for (i, a) in n.listen_addrs.iter().enumerate() {
        println!(
            "{}{a}",
            if i == 0 {
                "listening:   "
            } else {
                "             "
            }
        );
    }
    let d = &s.discovery;
    println!(
        "catalogs:    {} (catalog_server = {})",
        if d.catalog_server {
            "serving: this node answers catalog lookups"
        } else {
            "not serving (Kademlia client)"
        },
        d.catalog_server_mode
    );
    for c in &d.catalogs {
        let state = if c.reached {
            format!("reached, {} other member(s)", c.members)
        } else {
            "not reached yet".to_string()
        };
        println!(
            "  catalog {}: {state}, {} failed dial(s) of its address",
            c.name, c.bootstrap_failures
        );
    }
    println!("capacity:    {}", n.capacity);
    println!("committed:   {}", n.committed);
    println!(
        "flavors: {}  reservations: {}  sold: {}  bought: {}  peers: {}",
        n.flavors.len(),
        n.reservations,
        n.contracts_sold,
        n.contracts_bought,
        n.candidates
    );
}

fn print_flavors(flavors: &[Flavor]) {
    if flavors.is_empty() {
        println!("no flavors offered");
        return;
    }
    table(
        &[
            "ID", "CPU", "MEMORY", "STORAGE", "PODS", "GPUS", "ARCH", "PRICE", "LOCATION",
        ],
        flavors.iter().map(|f| {
            let mut row = vec![short(&f.id.to_string())];
            row.extend(resources_cells(&f.characteristics.resources));
            row.push(f.characteristics.architecture.to_string());
            let period = match f.price.period {
                fluidos_contracts::PricePeriod::Hour => "hour",
                fluidos_contracts::PricePeriod::Day => "day",
                fluidos_contracts::PricePeriod::Month => "month",
            };
            row.push(format!(
                "{} {}/{period}",
                money(f.price.amount_micros),
                f.price.currency
            ));
            row.push(
                f.properties
                    .location
                    .as_ref()
                    .map(|l| match &l.city {
                        Some(c) => format!("{c}, {}", l.country),
                        None => l.country.clone(),
                    })
                    .unwrap_or_else(|| "-".into()),
            );
            row
        }),
    );
}

/// `fluidos-node peers`: the candidates, or, when there are none, why.
async fn peers(client: &Client, json: bool) -> anyhow::Result<()> {
    if json {
        return show::<Vec<PeerView>>(client, "/v1/peers", true, |_| {}).await;
    }
    let list: Vec<PeerView> = client.get("/v1/peers").await?;
    if list.is_empty() {
        let status: StatusView = client.get("/v1/status").await?;
        println!("no peers yet: {}", status.discovery.why_no_peers());
        return Ok(());
    }
    print_peers(&list);
    Ok(())
}

fn print_peers(peers: &[PeerView]) {
    table(
        &[
            "NODE", "PEER ID", "SOURCES", "SEEN", "RATING", "ROLES", "ADDRESS",
        ],
        peers.iter().map(|p| {
            vec![
                short(&p.node_id),
                short(&p.peer_id),
                p.sources.join(","),
                when(p.last_seen),
                p.rating
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".into()),
                p.roles.join(","),
                p.addresses.first().cloned().unwrap_or_default(),
            ]
        }),
    );
}

/// `--cause`: a [`fluidos_contracts::TerminationCause`] by its wire name.
fn termination_cause(s: &str) -> Result<fluidos_contracts::TerminationCause, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of requested, provider_lost, over_quota"))
}

fn print_contracts(contracts: &[ContractInfo]) {
    if contracts.is_empty() {
        println!("no contracts");
        return;
    }
    table(
        &[
            "ID",
            "ROLE",
            "STATE",
            "PROVIDER",
            "BUYER",
            "CPU",
            "MEMORY",
            "STORAGE",
            "PODS",
            "GPUS",
            "PRICE",
            "UNTIL",
            "USED",
            "COST SO FAR",
        ],
        contracts.iter().map(|c| {
            let mut row = vec![
                c.id.to_string(),
                format!("{:?}", c.role).to_lowercase(),
                match c.end {
                    Some(end) => format!("{:?} ({end})", c.state).to_lowercase(),
                    None => format!("{:?}", c.state).to_lowercase(),
                },
                short(&c.provider.to_did_key()),
                short(&c.buyer.to_did_key()),
            ];
            row.extend(resources_cells(&c.partition));
            row.push(format!("{} {}", money(c.price_micros), c.currency));
            row.push(when(c.valid_until));
            row.push(usage_cell(c));
            row.push(cost_cell(c));
            row
        }),
    );
}

/// `USED`: the provider's last usage report (cpu time, memory now).
fn usage_cell(c: &ContractInfo) -> String {
    match &c.usage {
        None => "-".into(),
        Some(u) => format!(
            "{:.1}s cpu, {} mem",
            u.cpu_time_ns as f64 / 1e9,
            format_bytes(u.memory_bytes)
        ),
    }
}

/// `COST SO FAR`: for pay-per-use contracts, with a warning when usage goes beyond it.
fn cost_cell(c: &ContractInfo) -> String {
    let Some(cost) = &c.cost else {
        return match c.price_model {
            fluidos_contracts::PriceModel::PayPerUse => "0.00 (no usage yet)".into(),
            _ => "reserved".into(),
        };
    };
    let mut s = format!("{:.6} {}", cost.micros as f64 / 1e6, cost.currency);
    if cost.over_memory {
        s.push_str(" OVER MEMORY");
    }
    if cost.over_cpu {
        s.push_str(" OVER CPU");
    }
    s
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
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("wrote {}", outcome.config_path.display());
        println!(
            "{} key {}",
            if created { "created" } else { "kept existing" },
            key_path.display()
        );
        println!("node id: {}", key.node_id());
        println!(
            "start it with: fluidos-node --data-dir {} run",
            outcome.config.data_dir.display()
        );
    }
    Ok(())
}
