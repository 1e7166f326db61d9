//! `fluidos-node demo`: three nodes on this machine peer through a shared catalog
//! address, one buys capacity from another, and the contract is checked the way a
//! third party would. Everything runs on loopback with mDNS off.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fluidos_contracts::resources::{format_bytes, format_millis};
use fluidos_contracts::{Location, Price, PriceModel, PricePeriod, Resources, SignedContract};
use fluidos_core::buyer::{AcquisitionRequest, Constraints};
use fluidos_core::host::OfferConfig;
use fluidos_core::view::ReplicaState;
use fluidos_core::workload::WorkloadSpec;
use fluidos_core::{DeployPhase, Node};
use fluidos_discovery::CatalogName;
use tokio::sync::mpsc;

struct Site {
    name: &'static str,
    city: &'static str,
    country: &'static str,
    price_eur_per_hour: f64,
}

const SITES: [Site; 3] = [
    Site {
        name: "turin-edge",
        city: "Turin",
        country: "IT",
        price_eur_per_hour: 0.80,
    },
    Site {
        name: "berlin-dc",
        city: "Berlin",
        country: "DE",
        price_eur_per_hour: 1.20,
    },
    Site {
        name: "lyon-office",
        city: "Lyon",
        country: "FR",
        price_eur_per_hour: 2.00,
    },
];

/// The image step 7 runs when a Docker engine is reachable, built here from Debian's
/// `busybox-static` (no registry needed).
pub const DEMO_IMAGE: &str = "fluidos-demo/busybox:1";
const DEMO_APPLETS: &[&str] = &["sh", "echo", "uname", "cat", "sleep", "true"];

/// Which runtime the demo's nodes use, and why.
enum DemoRuntime {
    Docker { engine: String, api: String },
    Process { why: String },
}

/// Docker when an engine answers and the demo image exists or can be built; else the
/// process runtime, with the reason.
async fn demo_runtime() -> DemoRuntime {
    let docker = match crate::connect_docker("fluidos-demo-setup").await {
        Ok(d) => d,
        Err(why) => return DemoRuntime::Process { why },
    };
    let engine = docker.engine().clone();
    if !docker.has_image(DEMO_IMAGE).await {
        if let Err(why) = build_demo_image(&docker).await {
            return DemoRuntime::Process {
                why: format!("Docker answers, but the demo image cannot be built: {why}"),
            };
        }
        println!("    built {DEMO_IMAGE} from busybox-static (docker import, no registry)");
    }
    DemoRuntime::Docker {
        engine: engine.version,
        api: engine.api_version,
    }
}

/// A rootfs of `/bin/busybox` and a few applets, imported as [`DEMO_IMAGE`].
async fn build_demo_image(docker: &fluidos_core::runtime::DockerRuntime) -> anyhow::Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
        .context("busybox is not installed (apt-get install busybox-static)")?;
    let root = tempfile::tempdir()?;
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["tmp", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.path().join(d))?;
    }
    std::fs::copy(busybox, bin.join("busybox"))?;
    for a in DEMO_APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a))?;
    }
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .output()
        .context("running tar")?;
    if !tar.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&tar.stderr));
    }
    let (repo, tag) = DEMO_IMAGE.split_once(':').unwrap_or((DEMO_IMAGE, "latest"));
    docker
        .import_rootfs(tar.stdout, repo, tag, &["ENV PATH=/bin"])
        .await?;
    Ok(())
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// Runs the demo; returns an error if any step fails.
pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let catalog: CatalogName = "fluidos-demo".parse()?;

    step(
        1,
        "Starting three nodes on 127.0.0.1 (mDNS off); the first one's address is the shared catalog address",
    );
    let runtime = demo_runtime().await;
    let mode = match &runtime {
        DemoRuntime::Docker { engine, api } => {
            println!(
                "    workload runtime: Docker (engine {engine}, API {api}) for the image {DEMO_IMAGE}"
            );
            crate::config::RuntimeMode::Auto
        }
        DemoRuntime::Process { why } => {
            println!("    workload runtime: processes (no Docker: {why})");
            crate::config::RuntimeMode::Process
        }
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut catalog_addrs = Vec::new();
    for site in &SITES {
        let offer = OfferConfig {
            location: Some(Location {
                country: site.country.into(),
                city: Some(site.city.into()),
                lat_e6: None,
                lon_e6: None,
            }),
            labels: [("site".to_string(), site.name.to_string())].into(),
            price: Price {
                amount_micros: (site.price_eur_per_hour * 1e6) as u64,
                currency: "EUR".into(),
                period: PricePeriod::Hour,
                model: PriceModel::Reserved,
            },
            ..OfferConfig::default()
        };
        let site_dir = dir.path().join(site.name);
        crate::config::create_private_dir(&site_dir)?;
        let (key, _) = fluidos_contracts::keyfile::load_or_create(&site_dir.join("node.key"))?;
        let (rt, _) = crate::workload_runtime(mode, &site_dir, &key.node_id().to_did_key()).await?;
        let rt = rt.context("no workload runtime")?;
        let node = Node::builder()
            .data_dir(&site_dir)
            .secret_key(key)
            .listen(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
            .catalog(catalog.clone(), catalog_addrs.clone())
            .offer(offer)
            .fabric_endpoints(vec![([127, 0, 0, 1], 51820).into()])
            .runtime(rt)
            .bind()
            .await
            .with_context(|| format!("starting {}", site.name))?;
        let addrs = node.listen_addrs().await;
        println!(
            "    {:<12} {}  {}",
            site.name,
            node.did_key(),
            addrs.first().map(|a| a.to_string()).unwrap_or_default()
        );
        if catalog_addrs.is_empty() {
            catalog_addrs = addrs;
        }
        nodes.push(node);
    }
    let buyer = nodes[2].clone();

    step(
        2,
        "Discovery: the Lyon node looks up the catalog and verifies each signed advert",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = buyer.peers().await?;
        if peers.len() >= 2 {
            for p in &peers {
                let a = &p.advert;
                let loc = a
                    .location
                    .as_ref()
                    .map(|l| format!("{}/{}", l.country, l.city.clone().unwrap_or_default()))
                    .unwrap_or_default();
                let sources: Vec<String> = p
                    .sources
                    .iter()
                    .map(|s| match s {
                        fluidos_discovery::Source::Catalog(c) => format!("catalog {c}"),
                        fluidos_discovery::Source::Mdns => "mDNS".into(),
                        fluidos_discovery::Source::Manual => "manual".into(),
                    })
                    .collect();
                println!(
                    "    candidate {} via {} at {loc}, {} flavor(s), advert signature verified",
                    p.node.short(),
                    sources.join(", "),
                    a.flavors.len()
                );
            }
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the buyer found only {} of 2 candidates in 20 s",
                peers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    step(
        3,
        "Negotiation (REAR): list flavors from every candidate, rank, reserve, purchase, countersign",
    );
    let request = AcquisitionRequest {
        resources: Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            ..Resources::ZERO
        },
        constraints: Constraints {
            currency: Some("EUR".into()),
            ..Constraints::default()
        },
        duration_ms: 3_600_000,
    };
    println!("    want: cpu=1 memory=1GiB for 1 h, in EUR, cheapest first");
    let (tx, mut rx) = mpsc::channel(32);
    let printer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            println!("    … {p}");
        }
    });
    let contract = buyer
        .buy(request, Some(tx))
        .await
        .context("buying capacity")?;
    let _ = printer.await;
    let t = contract.terms();
    println!(
        "    contract {} with {}: cpu={} memory={} at {:.2} {}/{:?}, valid {} ms",
        t.id,
        t.provider.short(),
        format_millis(t.partition.cpu_millis),
        format_bytes(t.partition.memory_bytes),
        t.price.amount_micros as f64 / 1e6,
        t.price.currency,
        t.price.period,
        t.valid_until.0 - t.valid_from.0
    );

    step(
        4,
        "Both parties hold the same contract with both signatures",
    );
    let provider = nodes
        .iter()
        .find(|n| n.node_id() == t.provider)
        .context("the provider is one of the demo nodes")?;
    let at_provider = provider
        .contract(t.id)
        .await?
        .context("the provider stored the contract")?;
    if at_provider.signed() != contract.signed() {
        bail!("provider and buyer hold different contracts");
    }
    println!("    provider copy == buyer copy: yes");

    step(
        5,
        "A third party verifies the contract from its bytes alone",
    );
    let bytes = contract.signed().to_bytes()?;
    let checked = SignedContract::from_bytes(&bytes)?.verify()?;
    println!(
        "    {} bytes of canonical CBOR; provider and buyer signatures valid; parties {} and {}",
        bytes.len(),
        checked.terms().provider.short(),
        checked.terms().buyer.short()
    );
    #[cfg(feature = "vc")]
    {
        let key =
            fluidos_contracts::keyfile::load(&dir.path().join(SITES[2].name).join("node.key"))?;
        let vc = fluidos_contracts::vc::export(&contract, &key).await?;
        let json = serde_json::to_string(&vc)?;
        let again = fluidos_contracts::vc::verify(&json).await?;
        println!(
            "    as a W3C Verifiable Credential ({} bytes of JSON, eddsa-rdfc-2022): verified, contract {}",
            json.len(),
            again.id()
        );
    }

    step(6, "The provider re-offers what is left");
    let status = provider.status().await?;
    println!(
        "    capacity {}\n    committed {}",
        status.capacity, status.committed
    );
    for f in &status.flavors {
        println!(
            "    flavor {} now offers {}",
            f.id, f.characteristics.resources
        );
    }

    step(
        7,
        "A workload that does not fit: placement buys what is missing, the replica runs on the provider, its output comes back",
    );
    let run = match runtime {
        DemoRuntime::Docker { .. } => format!(
            "image = \"{DEMO_IMAGE}\"\nargs = [\"sh\", \"-c\", \"echo hello from $(uname -sm) in a container on the provider; exit 0\"]"
        ),
        DemoRuntime::Process { .. } => "command = \"/bin/sh\"\nargs = [\"-c\", \"echo hello from $(uname -sm) in a process on the provider; exit 0\"]".to_string(),
    };
    let spec = WorkloadSpec::from_toml(&format!(
        "name = \"hello\"\n[run]\n{run}\n[requests]\ncpu = \"500m\"\nmemory = \"1536MiB\"\n"
    ))?;
    println!(
        "    deploy hello: cpu=0.5 memory=1.5GiB (the virtual node bought in step 3 has 1 GiB; this node sells all of its own)"
    );
    let (tx, mut rx) = mpsc::channel(32);
    let printer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            match p {
                DeployPhase::Placed { decision, .. } => {
                    for line in decision.lines() {
                        println!("    … {line}");
                    }
                }
                DeployPhase::Acquiring { missing } => println!("    … acquiring {missing}"),
                DeployPhase::Bought { contract, provider } => {
                    println!("    … bought contract {contract} from {provider}: a new virtual node")
                }
                DeployPhase::Offloading { replica, node } => {
                    println!("    … replica {replica} → {node}")
                }
                DeployPhase::Replica {
                    replica,
                    state,
                    detail,
                } => println!("    … replica {replica}: {state} {detail}"),
                other => println!("    … {other:?}"),
            }
        }
    });
    let deployed = buyer
        .deploy(spec, Some(tx), Duration::from_secs(30))
        .await
        .context("deploying the workload")?;
    let _ = printer.await;
    let id = deployed.view.id.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, output, host) = loop {
        let w = buyer
            .workload(&id)
            .await?
            .context("the workload is in the view")?;
        let r = w
            .view
            .record
            .replicas
            .get("0")
            .cloned()
            .context("replica 0")?;
        match r.status {
            Some(s) if s.state.is_final() => {
                let ReplicaState::Exited { code } = s.state else {
                    bail!("the replica did not exit cleanly: {:?}", s.state);
                };
                break (code, s.output_tail, r.node);
            }
            _ if Instant::now() > deadline => bail!("the replica did not finish in 20 s"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    println!(
        "    replica 0 ran on {} and exited with code {code}; its output, through the view: {:?}",
        host.map(|h| h.short()).unwrap_or_default(),
        output.trim()
    );
    for n in buyer.nodes().await? {
        println!(
            "    view node {} ({:?}): capacity {}, free {}",
            n.id.short(),
            n.entry.kind,
            n.entry.capacity,
            n.free
        );
    }

    step(
        8,
        "The buyer terminates its contracts; the providers release the capacity",
    );
    for c in buyer.contracts().await? {
        if c.role == fluidos_core::ContractRole::Buyer
            && c.state != fluidos_core::ContractState::Ended
        {
            buyer.terminate(c.id, "demo finished".into()).await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for provider in nodes.iter().filter(|n| n.node_id() != buyer.node_id()) {
        loop {
            let s = provider.status().await?;
            if s.committed.is_zero() {
                println!(
                    "    {} committed capacity back to {}",
                    provider.node_id().short(),
                    s.committed
                );
                break;
            }
            if Instant::now() > deadline {
                bail!("a provider still holds {} after termination", s.committed);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    for node in nodes {
        node.shutdown().await;
    }
    println!("\nDone in {:.1} s.", started.elapsed().as_secs_f64());
    Ok(())
}
