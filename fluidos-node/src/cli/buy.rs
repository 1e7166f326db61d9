//! `fluidos-node buy`: streams the daemon's progress, then prints the contract.

use std::io::Write;

use anyhow::{Context, bail};

use super::{BuyArgs, print_contracts};
use crate::control::client::Client;
use crate::control::types::BuyEvent;

pub(super) async fn buy(client: &Client, args: &BuyArgs, json: bool) -> anyhow::Result<()> {
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
                out!("bought contract {} from {}", contract.id, contract.provider);
                print_contracts(std::slice::from_ref(&contract));
            }
            Ok(())
        }
        Some(BuyEvent::Failed { error }) => bail!("buy failed ({}): {}", error.code, error.message),
        _ => bail!("the daemon ended the purchase stream without a result"),
    }
}
