//! `fluidos-supervise <replica-dir>`: the per-replica supervisor of the process runtime.
//! Started by `fluidos_core::runtime::ProcessRuntime`, not by hand.

fn main() -> std::process::ExitCode {
    fluidos_core::runtime::supervise_main(std::env::args_os().skip(1))
}
