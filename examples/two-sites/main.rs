//! Two "sites" peer through one shared catalog address, then trade a REAR request.
//!
//! ```text
//! cargo run -p fluidos-examples --example two-sites
//! ```
//!
//! Three nodes on loopback TCP, mDNS off: a tiny catalog node (the address both sites
//! are given), site A (a provider answering `ListFlavors`) and site B (a consumer).
//! Each site lists the other as a candidate; B then asks A for its flavors.
//! It prints every step and stops by itself within a few seconds.

use std::time::Duration;

use anyhow::{Context, bail};
use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{
    Architecture, Characteristics, Flavor, FlavorId, Location, Partitionability, Price, PriceModel,
    PricePeriod, Properties, Resources, SecretKey, Selector, Signed, Timestamp,
};
use fluidos_discovery::libp2p::multiaddr::Protocol;
use fluidos_discovery::{
    AdvertBody, CatalogConfig, Discovery, DiscoveryConfig, DiscoveryHandle, FlavorSummary, Role,
};

fn site_config(catalog: CatalogConfig, body: AdvertBody) -> DiscoveryConfig {
    DiscoveryConfig::default() // loopback TCP on a free port, mDNS off
        .with_catalog(catalog)
        .with_advert(body)
        .with_refresh_interval(Duration::from_millis(250))
}

fn flavor(owner: &SecretKey) -> Flavor {
    Flavor {
        id: FlavorId::random(),
        owner: owner.node_id(),
        characteristics: Characteristics {
            resources: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                ..Default::default()
            },
            architecture: Architecture::host(),
            gpu: None,
        },
        properties: Properties {
            location: Some(Location {
                country: "IT".into(),
                city: Some("Turin".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        policy: Partitionability {
            partitionable: true,
            min: Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                ..Default::default()
            },
            step: Resources {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                ..Default::default()
            },
        },
        price: Price {
            amount_micros: 40_000,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        price_basis: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ..Default::default()
        },
        valid_until: Timestamp::now().plus_ms(3_600_000),
        revision: 1,
    }
}

/// Waits (at most 10 s) until `site` lists `want`.
async fn wait_for(site: &DiscoveryHandle, want: fluidos_contracts::NodeId) -> anyhow::Result<()> {
    let mut updates = site.candidate_updates();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if site.candidates().await?.iter().any(|c| c.node == want) {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, updates.changed())
            .await
            .is_err()
        {
            bail!(
                "{} did not find {} within 10 s",
                site.node_id().short(),
                want.short()
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. The catalog node: a fluidos node whose address both sites are given.
    let (catalog_node, _) = Discovery::spawn(
        &SecretKey::generate(),
        DiscoveryConfig::default().with_catalog(CatalogConfig::new("two-sites".parse()?, vec![])),
    )
    .await?;
    let addr = catalog_node.listen_addrs().await?[0]
        .clone()
        .with(Protocol::P2p(catalog_node.peer_id()));
    println!("1. catalog \"two-sites\" at {addr}");
    let catalog = CatalogConfig::new("two-sites".parse()?, vec![addr]);

    // 2. Site A sells one flavor; its advert summarises it. Site B buys.
    let key_a = SecretKey::generate();
    let offer = Signed::sign(flavor(&key_a), &key_a)?;
    let body_a = AdvertBody {
        roles: [Role::Provider].into(),
        location: offer.properties.location.clone(),
        architecture: Some(Architecture::host()),
        flavors: vec![FlavorSummary::from(&*offer)],
        ..Default::default()
    };
    let (site_a, mut inbound_a) =
        Discovery::spawn(&key_a, site_config(catalog.clone(), body_a)).await?;
    let body_b = AdvertBody {
        roles: [Role::Consumer].into(),
        ..Default::default()
    };
    let (site_b, _) =
        Discovery::spawn(&SecretKey::generate(), site_config(catalog, body_b)).await?;
    println!(
        "2. site A {} at {:?}",
        site_a.node_id().short(),
        site_a.listen_addrs().await?
    );
    println!(
        "   site B {} at {:?}",
        site_b.node_id().short(),
        site_b.listen_addrs().await?
    );

    // Site A's REAR responder: answers ListFlavors with its signed flavor.
    let served = offer.clone();
    let responder = tokio::spawn(async move {
        while let Some(req) = inbound_a.recv().await {
            println!("   A <- {} from {}", req.request.kind(), req.from.short());
            let answer = match req.request {
                Request::ListFlavors { selector }
                    if selector.matches(&served, Timestamp::now()) =>
                {
                    Response::Flavors {
                        flavors: vec![served.signed().clone()],
                    }
                }
                Request::ListFlavors { .. } => Response::Flavors { flavors: vec![] },
                _ => Response::Error(fluidos_contracts::rear::RearError::new(
                    fluidos_contracts::rear::ErrorCode::NotAuthorised,
                    "this example only lists flavors",
                )),
            };
            let _ = req.reply.send(answer);
        }
        anyhow::Ok(())
    });

    // 3. Each site finds the other through the catalog.
    wait_for(&site_a, site_b.node_id()).await?;
    wait_for(&site_b, site_a.node_id()).await?;
    for (name, site) in [("A", &site_a), ("B", &site_b)] {
        for c in site.candidates().await? {
            let roles: Vec<String> = c.advert.roles.iter().map(|r| r.to_string()).collect();
            println!(
                "3. site {name} lists {} (sources {:?}, roles {roles:?}, {} flavor(s) advertised)",
                c.node.short(),
                c.sources,
                c.advert.flavors.len()
            );
        }
    }

    // 4. Site B asks site A for its flavors over REAR.
    let answer = site_b
        .request(
            site_a.node_id(),
            Request::ListFlavors {
                selector: Selector::default(),
            },
            Duration::from_secs(5),
        )
        .await
        .context("ListFlavors")?;
    match answer {
        Response::Flavors { flavors } => {
            for f in flavors {
                let f = f.verify()?; // signed by the provider: checked, not trusted
                println!(
                    "4. B got flavor {} from {}: {} mCPU, {} bytes, {} {}/{:?}",
                    f.id,
                    f.owner.short(),
                    f.characteristics.resources.cpu_millis,
                    f.characteristics.resources.memory_bytes,
                    f.price.amount_micros as f64 / 1e6,
                    f.price.currency,
                    f.price.period
                );
            }
        }
        other => bail!("unexpected answer {other:?}"),
    }

    // 5. Clean shutdown withdraws the adverts.
    site_b.shutdown().await?;
    site_a.shutdown().await?;
    catalog_node.shutdown().await?;
    responder.await??;
    println!("5. all nodes stopped");
    Ok(())
}
