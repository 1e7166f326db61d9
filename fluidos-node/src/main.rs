//! `fluidos-node`: the daemon and CLI. See `fluidos-node --help`.

use clap::Parser;
use fluidos_node::cli::{self, Cli, Command};
use fluidos_node::{config, daemon};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // The process runtime starts each replica's supervisor as this executable
    // with a hidden subcommand (before any thread exists).
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(fluidos_node::SUPERVISE_SUBCOMMAND)) {
        return fluidos_core::runtime::supervise_main(args);
    }
    let cli = Cli::parse();
    // Logs go to stderr, so that `--json` output on stdout stays clean.
    let default = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init { force, overrides } => cli::init(&cli.globals, overrides, *force, cli.json),
        Command::Run { overrides } => {
            let cfg = config::load(&cli.globals, overrides)?;
            runtime(true)?.block_on(daemon::run(cfg, daemon::signal()))
        }
        Command::Demo => runtime(true)?.block_on(fluidos_node::demo::run()),
        _ => runtime(false)?.block_on(cli::run_client(&cli)),
    }
}

/// The daemon runs on a small multi-threaded runtime (the machine has few cores
/// and the node is mostly idle); client commands on one thread.
fn runtime(daemon: bool) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if daemon {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    Ok(b.enable_all().build()?)
}
