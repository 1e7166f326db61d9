//! `fluidos-node run`: the foreground daemon.
//!
//! Start-up order: data directory (0700) → node key (refused if group/others
//! can read it, or corrupt) → control token → control listener (so a port
//! clash fails before libp2p starts) → the node → serving. On SIGINT or
//! SIGTERM the control API stops accepting, requests in flight finish, then
//! `Node::shutdown` withdraws adverts and flushes the store.

use std::future::Future;
use std::path::Path;

use anyhow::Context;
use fluidos_core::Node;
use tokio::net::{TcpListener, UnixListener};

use crate::adapter::{DaemonNode, DiscoverySettings};
use crate::config::{self, Config};
use crate::control::{server, token::Token};

/// The file where the daemon writes the control address it actually bound
/// (useful when `control.listen` has port 0).
pub const CONTROL_ADDR_FILE: &str = "control.addr";

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config::create_private_dir(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let (key, created) = fluidos_contracts::keyfile::load_or_create(&cfg.key_path())
        .context("cannot use the node key")?;
    if created {
        tracing::info!(path = %cfg.key_path().display(), "created a new node key");
    }
    let token = Token::load_or_create(&cfg.token_path()).context("cannot use the control token")?;

    let tcp = TcpListener::bind(cfg.control.listen)
        .await
        .with_context(|| {
            format!(
                "control API: cannot listen on {} (key control.listen)",
                cfg.control.listen
            )
        })?;
    let bound = tcp.local_addr()?;
    let unix = match &cfg.control.socket {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };

    // `discovery_config` replaces the whole discovery config, so it comes first and
    // the calls below fill in listen addresses, mDNS, catalogs and peers.
    let discovery =
        fluidos_discovery::DiscoveryConfig::default().with_catalog_server(cfg.catalog_server);
    let mut builder = Node::builder()
        .discovery_config(discovery)
        .data_dir(&cfg.data_dir)
        .secret_key(key.clone())
        .listen(cfg.listen.clone())
        .mdns(cfg.mdns)
        .offer(cfg.offer.clone())
        .host_reserve(cfg.reserve)
        .remeasure_every(cfg.remeasure_interval)
        .local_capacity(cfg.workloads.local_capacity)
        .provider_lost_after(cfg.workloads.provider_lost_after)
        .roles(fluidos_core::Roles {
            provider: cfg.roles.provider,
            consumer: cfg.roles.consumer,
            supernode: cfg.roles.supernode,
        });
    for c in &cfg.catalogs {
        builder = builder.catalog(c.name.clone(), c.addresses.clone());
    }
    if let Some(fabric) = &cfg.fabric {
        builder = builder.fabric(fabric.clone());
    }
    for p in &cfg.peers {
        builder = builder.manual_peer(p.clone());
    }
    let (runtime, docker) =
        crate::workload_runtime(cfg.runtime, &cfg.data_dir, &key.node_id().to_did_key()).await?;
    builder = builder.usage_interval(cfg.usage_interval);
    match runtime {
        Some(runtime) => {
            tracing::info!(runtime = %runtime.summary(), "workload runtime ready");
            builder = builder.runtime(runtime);
        }
        None => {
            tracing::warn!("no runtime: this node hosts no workloads");
            builder = builder.no_runtime();
        }
    }
    let node = builder.bind().await.context("starting the node")?;
    // Written once the node runs, so its presence means "ready to serve".
    write_private(&cfg.data_dir.join(CONTROL_ADDR_FILE), &bound.to_string())?;
    tracing::info!(
        node_id = %node.node_id(),
        peer_id = %node.peer_id(),
        control = %bound,
        data_dir = %cfg.data_dir.display(),
        "fluidos-node running"
    );

    let api = DaemonNode::new(node.clone(), key)
        .with_settings(DiscoverySettings::from(&cfg))
        .with_docker(docker);
    let router = server::router(api, token, cfg.control.max_concurrent_requests);
    let served = server::serve(router, tcp, unix, shutdown).await;
    tracing::info!("shutting down: withdrawing adverts and flushing state");
    node.shutdown().await;
    if let Some(path) = &cfg.control.socket {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(cfg.data_dir.join(CONTROL_ADDR_FILE));
    served.context("control API")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Without signal handlers only Ctrl-C through tokio remains.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    // A socket file left by a crashed daemon blocks bind; one that still
    // answers belongs to a running daemon and must not be taken over.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control socket {} is in use by another daemon",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        config::create_private_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("control socket {} (key control.socket)", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
