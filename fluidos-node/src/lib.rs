//! # fluidos-node
//!
//! The fluidos daemon and its command line. This crate owns:
//!
//! - [`config`]: `config.toml`, its defaults, flag and environment overrides,
//!   and validation that names the file, the key and the reason;
//! - [`daemon`]: `fluidos-node run` — key, token, control API, the
//!   `fluidos_core::Node`, graceful shutdown on SIGINT/SIGTERM;
//! - [`control`]: the local control API (JSON over HTTP, bearer token), its
//!   server, client and types (`docs/CONTROL-API.md`);
//! - [`adapter`]: the control API over a real `fluidos_core::Node`;
//! - [`cli`]: the subcommands and their tables.
//!
//! The binary (`src/main.rs`) only parses the command line and calls in here;
//! the library exists so that tests can drive each part.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use fluidos_node::config::{self, Globals, Overrides};
//! let cfg = config::load(&Globals::default(), &Overrides::default())?;
//! fluidos_node::daemon::run(cfg, fluidos_node::daemon::signal()).await?;
//! # Ok(()) }
//! ```

pub mod adapter;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod vc;

/// The hidden subcommand that runs a replica's supervisor (see
/// [`fluidos_core::runtime::supervise_main`]).
pub const SUPERVISE_SUBCOMMAND: &str = "__supervise";

/// The process runtime over `<data-dir>/replicas`, whose supervisors are this
/// very executable (`fluidos-node __supervise <dir>`).
pub fn process_runtime(
    data_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn fluidos_core::runtime::Runtime>> {
    use fluidos_core::runtime::{ProcessRuntime, SupervisorCommand};
    let supervisor = SupervisorCommand::current_exe_subcommand(SUPERVISE_SUBCOMMAND)?;
    let runtime = ProcessRuntime::builder(data_dir.join("replicas"))
        .supervisor(supervisor)
        .build()?;
    Ok(std::sync::Arc::new(runtime))
}

/// How long the daemon waits for a Docker engine to answer at start.
pub const DOCKER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The workload runtime for `mode`, and what `status` says about Docker:
/// - `auto`: image workloads on Docker when an engine answers now, command workloads on
///   the process runtime; without an engine, the process runtime only (and the reason);
/// - `docker`: as `auto`, but an engine is required (an error without one);
/// - `process`: the process runtime only.
///
/// Containers are labelled with `node` (this node's did:key), which scopes recovery to
/// this node's containers on a shared engine.
pub async fn workload_runtime(
    mode: config::RuntimeMode,
    data_dir: &std::path::Path,
    node: &str,
) -> anyhow::Result<(
    Option<std::sync::Arc<dyn fluidos_core::runtime::Runtime>>,
    control::types::DockerView,
)> {
    use fluidos_core::runtime::{Runtime, RuntimeSet};
    let mut view = control::types::DockerView {
        mode: mode.as_str().to_string(),
        ..Default::default()
    };
    let process = match process_runtime(data_dir) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(error = %e, "no process runtime: command workloads are refused");
            None
        }
    };
    if mode == config::RuntimeMode::Process {
        view.reason = Some("runtime = \"process\" in the configuration".into());
        return Ok((process, view));
    }
    let docker = match connect_docker(node).await {
        Ok(d) => d,
        Err(reason) => {
            if mode == config::RuntimeMode::Docker {
                anyhow::bail!(
                    "runtime = \"docker\" but no Docker engine answers: {reason} \
                     (start dockerd, or set runtime = \"auto\" or \"process\")"
                );
            }
            tracing::warn!(%reason, "Docker is not available: image workloads are refused; command workloads run as processes");
            view.reason = Some(reason);
            return Ok((process, view));
        }
    };
    let engine = docker.engine().clone();
    tracing::info!(engine = %engine.version, api = %engine.api_version, endpoint = %engine.endpoint, "Docker available: image workloads run as containers");
    view.available = true;
    view.endpoint = Some(engine.endpoint);
    view.engine_version = Some(engine.version);
    view.api_version = Some(engine.api_version);
    let docker: std::sync::Arc<dyn Runtime> = std::sync::Arc::new(docker);
    let set = RuntimeSet::new(Some(docker), process);
    Ok((Some(std::sync::Arc::new(set)), view))
}

/// Connects to the local Docker engine (`DOCKER_HOST` or the default socket) within
/// [`DOCKER_CONNECT_TIMEOUT`], or says why not.
pub async fn connect_docker(node: &str) -> Result<fluidos_core::runtime::DockerRuntime, String> {
    let connect = fluidos_core::runtime::DockerRuntime::builder(node)
        .stop_grace(std::time::Duration::from_secs(3))
        .connect();
    match tokio::time::timeout(DOCKER_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the engine did not answer within {} s",
            DOCKER_CONNECT_TIMEOUT.as_secs()
        )),
    }
}
