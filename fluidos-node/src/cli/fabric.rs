//! `fluidos-node fabric`, and the fabric line of `status`.

use crate::control::types::{FabricReport, FabricState, FabricSummary};

/// Prints the fabric as `wg show` would, with the backend, why, and refusals.
pub(crate) fn print(r: &FabricReport) {
    let state = match r.state {
        FabricState::Off => "off",
        FabricState::Unavailable => "unavailable",
        FabricState::Running => "running",
    };
    out!("fabric: {state} ({})", r.reason);
    out!("  topology: {}", r.topology);
    if !r.endpoints.is_empty() {
        let e: Vec<String> = r.endpoints.iter().map(ToString::to_string).collect();
        out!("  endpoints in contracts: {}", e.join(", "));
    }
    if let Some(e) = &r.last_error {
        out!("  last change failed: {e}");
    }
    for t in &r.refused {
        out!("  refused: contract {}: {}", t.contract, t.reason);
    }
    if let Some(s) = &r.status {
        out!();
        print!("{s}");
        if s.peers.is_empty() {
            out!("\n(no peers: no active contract)");
        }
    }
}

/// The `fabric:` line of `status`.
pub(crate) fn print_summary(f: &FabricSummary) {
    let what = match (f.state, &f.backend) {
        (FabricState::Running, Some(b)) => b.clone(),
        (FabricState::Running, None) => "running".into(),
        (FabricState::Off, _) => "off".into(),
        (FabricState::Unavailable, _) => "unavailable".into(),
    };
    let iface = f
        .interface
        .as_ref()
        .map(|i| format!(" on {i}"))
        .unwrap_or_default();
    out!(
        "fabric:      {what}{iface} ({}), {} peer(s)",
        f.reason,
        f.peers
    );
}
