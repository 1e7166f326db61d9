//! `deploy`, `workloads`, `workload`, `logs`, `undeploy`, `nodes`, `view export`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use fluidos_contracts::resources::{format_bytes, format_millis};
use fluidos_core::DeployPhase;
use hyper::Method;

use super::{short, show, table, when};
use crate::control::client::{Client, decode};
use crate::control::types::{
    DeployEvent, DeployRequest, LogsView, NodeView, ReplicaView, WorkloadView,
};

/// `fluidos-node deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The workload spec: a TOML or JSON file (`docs/WORKLOADS.md`).
    pub spec: PathBuf,
    /// Only show where it would go and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for every replica to run or end (`30s`, `2m`).
    #[arg(long, value_parser = parse_wait, default_value = "60s")]
    pub wait: std::time::Duration,
}

/// `fluidos-node view …`.
#[derive(Subcommand, Debug)]
pub enum ViewCommand {
    /// Write the whole view as a standard Automerge file (schema: docs/ARCHITECTURE.md).
    Export {
        /// Where to write it.
        file: PathBuf,
    },
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(s)?;
    if d > crate::control::MAX_BUY_WAIT {
        return Err("at most 10m".into());
    }
    Ok(d)
}

fn phase_line(p: &DeployPhase) -> String {
    match p {
        DeployPhase::Placed { workload, decision } => {
            format!(
                "[     placed] {workload}: {}",
                decision.trim_end().replace('\n', "\n              ")
            )
        }
        DeployPhase::Acquiring { missing } => format!("[  acquiring] buying {missing}"),
        DeployPhase::Bought { contract, provider } => {
            format!(
                "[     bought] contract {contract} from {}: a new virtual node",
                short(provider)
            )
        }
        DeployPhase::Offloading { replica, node } => {
            format!("[ offloading] replica {replica} → {}", short(node))
        }
        DeployPhase::Replica {
            replica,
            state,
            detail,
        } => format!("[    replica] {replica}: {state} {detail}"),
        DeployPhase::Unschedulable { reason } => format!("[unschedulable] {reason}"),
        other => format!("{other:?}"),
    }
}

/// Deploys, printing each phase.
pub async fn deploy(client: &Client, args: &DeployArgs, json: bool) -> anyhow::Result<()> {
    let spec = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("cannot read {}", args.spec.display()))?;
    let req = DeployRequest {
        spec,
        dry_run: args.dry_run,
        wait_ms: Some(u64::try_from(args.wait.as_millis()).unwrap_or(u64::MAX)),
    };
    let mut outcome: Option<DeployEvent> = None;
    let mut out = std::io::stdout();
    client
        .post_stream("/v1/deploy", &req, |line| {
            if line.is_empty() {
                return Ok(());
            }
            let ev: DeployEvent = serde_json::from_slice(line)
                .context("the daemon sent a malformed progress line")?;
            if json {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            } else if let DeployEvent::Progress { phase } = &ev {
                writeln!(out, "{}", phase_line(phase))?;
            }
            out.flush()?;
            outcome = Some(ev);
            Ok(())
        })
        .await?;
    match outcome {
        Some(DeployEvent::DryRun { decision }) => {
            if !json {
                out!("dry run (nothing changed):\n{decision}");
            }
            Ok(())
        }
        Some(DeployEvent::Done { workload }) => {
            if !json {
                print_workload(&workload);
            }
            Ok(())
        }
        Some(DeployEvent::Failed { error }) => {
            bail!("deploy failed ({}): {}", error.code, error.message)
        }
        _ => bail!("the daemon ended the deploy stream without a result"),
    }
}

/// `fluidos-node workloads`.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    show::<Vec<WorkloadView>>(client, "/v1/workloads", json, |all| {
        if all.is_empty() {
            out!("no workloads (deploy one with `fluidos-node deploy <spec>`)");
            return;
        }
        table(
            &["ID", "OWNER", "REPLICA", "NODE", "STATE", "DETAIL"],
            all.iter().flat_map(|w| {
                w.replicas.iter().map(|r| {
                    vec![
                        w.id.clone(),
                        if w.own { "me".into() } else { short(&w.owner) },
                        r.index.to_string(),
                        r.node.as_deref().map(short).unwrap_or_else(|| "-".into()),
                        state_cell(r),
                        r.detail.clone(),
                    ]
                })
            }),
        );
    })
    .await
}

/// `fluidos-node workload <id>`.
pub async fn one(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    show::<WorkloadView>(client, &format!("/v1/workloads/{id}"), json, print_workload).await
}

/// A replica's state, with why it ended when that is typed: `failed (provider lost)`.
fn state_cell(r: &ReplicaView) -> String {
    match r.cause {
        Some(c) => format!("{} ({c})", r.state),
        None => r.state.clone(),
    }
}

fn print_workload(w: &WorkloadView) {
    out!(
        "workload {} ({}), owner {}",
        w.id,
        w.name,
        if w.own { "this node" } else { &w.owner }
    );
    if let Some(p) = &w.placement {
        out!("placement:\n  {}", p.trim_end().replace('\n', "\n  "));
    }
    table(
        &["REPLICA", "NODE", "STATE", "DETAIL", "SINCE"],
        w.replicas.iter().map(|r| {
            vec![
                r.index.to_string(),
                r.node.as_deref().map(short).unwrap_or_else(|| "-".into()),
                state_cell(r),
                r.detail.clone(),
                r.since.map(when).unwrap_or_default(),
            ]
        }),
    );
    for r in &w.replicas {
        if !r.output_tail.is_empty() {
            out!(
                "replica {} output (tail):\n{}",
                r.index,
                r.output_tail.trim_end()
            );
        }
    }
    if !w.history.is_empty() {
        out!("history:");
        for h in &w.history {
            out!(
                "  {} replica {} {} {} {}",
                when(h.at),
                h.replica,
                h.state,
                h.detail,
                h.node
                    .map(|n| format!("on {}", n.short()))
                    .unwrap_or_default()
            );
        }
    }
}

/// `fluidos-node logs <id>`.
pub async fn logs(client: &Client, id: &str, replica: u32, tail: u32) -> anyhow::Result<()> {
    let v: LogsView = client
        .get(&format!(
            "/v1/workloads/{id}/logs?replica={replica}&tail={tail}"
        ))
        .await?;
    print!("{}", v.data);
    Ok(())
}

/// `fluidos-node undeploy <id>`.
pub async fn undeploy(client: &Client, id: &str) -> anyhow::Result<()> {
    let _: serde_json::Value = client
        .post(
            &format!("/v1/workloads/{id}/undeploy"),
            &serde_json::json!({}),
        )
        .await?;
    out!("undeployed {id}");
    Ok(())
}

/// `fluidos-node nodes`.
pub async fn nodes(client: &Client, json: bool) -> anyhow::Result<()> {
    show::<Vec<NodeView>>(client, "/v1/nodes", json, |nodes| {
        table(
            &[
                "KIND",
                "NODE",
                "CPU",
                "MEMORY",
                "FREE CPU",
                "FREE MEMORY",
                "PODS",
                "CONTRACTS",
            ],
            nodes.iter().map(|n| {
                vec![
                    format!("{:?}", n.kind).to_lowercase(),
                    short(&n.node_id),
                    format_millis(n.capacity.cpu_millis),
                    format_bytes(n.capacity.memory_bytes),
                    format_millis(n.free.cpu_millis),
                    format_bytes(n.free.memory_bytes),
                    n.capacity.pods.to_string(),
                    n.contracts.to_string(),
                ]
            }),
        )
    })
    .await
}

/// `fluidos-node view …`.
pub async fn view(client: &Client, cmd: &ViewCommand) -> anyhow::Result<()> {
    match cmd {
        ViewCommand::Export { file } => {
            let (status, bytes) = client.raw(Method::GET, "/v1/view/export", None).await?;
            if !status.is_success() {
                decode::<serde_json::Value>(status, &bytes)?;
            }
            std::fs::write(file, &bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
            out!(
                "wrote {} ({} bytes, a standard Automerge document)",
                file.display(),
                bytes.len()
            );
            Ok(())
        }
    }
}
