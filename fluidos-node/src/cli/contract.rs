//! `contract show|terminate|export`, and `contract verify`, which runs offline.

use std::path::Path;

use anyhow::{Context, bail};
use fluidos_contracts::{Resources, SignedContract, Timestamp};

use super::{ContractCommand, print_contracts, show, when};
use crate::control::client::Client;
use crate::control::types::{ContractDetail, ContractExport, TerminateRequest};

pub(super) async fn contract(
    client: &Client,
    command: &ContractCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        ContractCommand::Show { id } => {
            show::<ContractDetail>(client, &format!("/v1/contracts/{id}"), json, |d| {
                print_contracts(std::slice::from_ref(&d.contract));
                out!();
                out!("flavor:              {}", d.terms.flavor.id);
                out!("reservation:         {}", d.terms.reservation);
                out!("provider signature:  {}", d.provider_signature);
                out!(
                    "buyer signature:     {}",
                    d.buyer_signature.as_deref().unwrap_or("(none)")
                );
            })
            .await
        }
        ContractCommand::Terminate { id, reason, cause } => {
            let v: serde_json::Value = client
                .post(
                    &format!("/v1/contracts/{id}/terminate"),
                    &TerminateRequest {
                        reason: reason.clone(),
                        cause: *cause,
                    },
                )
                .await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("terminated {id}");
            }
            Ok(())
        }
        ContractCommand::Export { id, out, vc } => {
            let e: ContractExport = client
                .get(&format!("/v1/contracts/{id}/export?vc={vc}"))
                .await?;
            let bytes = if *vc {
                let doc = e.vc.context("the daemon returned no VC")?;
                serde_json::to_vec_pretty(&doc)?
            } else {
                hex::decode(&e.cbor_hex).context("the daemon's export is not hex")?
            };
            std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            if !json {
                out!("wrote {} ({} bytes)", out.display(), bytes.len());
            }
            Ok(())
        }
        ContractCommand::Verify { .. } => unreachable_verify(),
    }
}

fn unreachable_verify() -> anyhow::Result<()> {
    bail!("`contract verify` runs offline")
}

/// What `contract verify` concluded.
#[derive(Debug, serde::Serialize)]
pub struct VerifyReport {
    /// `cbor` or `vc`.
    pub format: &'static str,
    /// Contract id.
    pub id: String,
    /// Provider did:key.
    pub provider: String,
    /// Buyer did:key.
    pub buyer: String,
    /// What was bought.
    pub partition: Resources,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
}

/// Verifies a contract file offline (`fluidos-node contract verify`): both
/// signatures over the canonical terms, using nothing but the file. Accepts the
/// raw CBOR, its hex, the export JSON (`cbor_hex`), or a VC document (whose
/// proof is checked too, and which must carry the same doubly signed contract).
pub async fn verify_contract_bytes(data: &[u8]) -> anyhow::Result<VerifyReport> {
    let text = std::str::from_utf8(data).ok().map(str::trim);
    let (format, verified) = match text {
        Some(t) if t.starts_with('{') => {
            let doc: serde_json::Value =
                serde_json::from_str(t).context("the file is not valid JSON")?;
            match doc.get("cbor_hex").and_then(|v| v.as_str()) {
                Some(h) => (
                    "cbor",
                    verify_cbor(&hex::decode(h).context("cbor_hex is not hex")?)?,
                ),
                None => ("vc", crate::vc::verify(t).await?),
            }
        }
        Some(t)
            if !t.is_empty() && t.len() % 2 == 0 && t.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            ("cbor", verify_cbor(&hex::decode(t)?)?)
        }
        _ => ("cbor", verify_cbor(data)?),
    };
    let t = verified.terms();
    Ok(VerifyReport {
        format,
        id: t.id.to_string(),
        provider: t.provider.to_did_key(),
        buyer: t.buyer.to_did_key(),
        partition: t.partition,
        valid_from: t.valid_from,
        valid_until: t.valid_until,
    })
}

fn verify_cbor(raw: &[u8]) -> anyhow::Result<fluidos_contracts::VerifiedContract> {
    let signed =
        SignedContract::from_bytes(raw).context("not a fluidos contract (canonical CBOR)")?;
    signed.verify().context("contract does NOT verify")
}

pub(super) async fn verify_file(file: &Path, json: bool) -> anyhow::Result<()> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let report = verify_contract_bytes(&data)
        .await
        .with_context(|| format!("{}", file.display()))?;
    if json {
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let what = if report.format == "vc" {
            "credential proof, provider and buyer signatures are valid"
        } else {
            "provider and buyer signatures are valid"
        };
        out!("contract {} verifies: {what}", report.id);
        out!("provider:  {}", report.provider);
        out!("buyer:     {}", report.buyer);
        out!("partition: {}", report.partition);
        out!(
            "valid:     {} .. {}",
            when(report.valid_from),
            when(report.valid_until)
        );
    }
    Ok(())
}

/// `--cause`: a [`fluidos_contracts::TerminationCause`] by its wire name.
pub(super) fn termination_cause(s: &str) -> Result<fluidos_contracts::TerminationCause, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of requested, provider_lost, over_quota"))
}
