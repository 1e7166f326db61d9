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
