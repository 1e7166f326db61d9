//! W3C Verifiable Credential export and verification of contracts, through
//! `fluidos_contracts::vc` (cargo feature `vc`, on by default). Without the
//! feature both directions answer with a clear error instead of pretending.

use fluidos_contracts::{SecretKey, VerifiedContract};

use crate::control::ApiError;

/// The contract as a VC (JSON), issued and signed by this node's key.
pub async fn export(
    contract: &VerifiedContract,
    issuer: &SecretKey,
) -> Result<serde_json::Value, ApiError> {
    #[cfg(feature = "vc")]
    {
        use fluidos_contracts::vc::VcExportError as E;
        fluidos_contracts::vc::export(contract, issuer)
            .await
            .map_err(|e| match e {
                // The contract's own terms cannot be carried portably: the caller's
                // problem to hear about (share the raw contract), not a daemon fault.
                E::NumberTooLarge { .. } | E::ControlCharacter { .. } => {
                    ApiError::unprocessable("vc_unportable", format!("VC export: {e}"))
                }
                e => ApiError::internal(format!("VC export: {e}")),
            })
    }
    #[cfg(not(feature = "vc"))]
    {
        let _ = (contract, issuer);
        Err(ApiError::not_implemented(
            "this fluidos-node was built without the `vc` feature; export the raw contract instead",
        ))
    }
}

/// Verifies a VC document offline and returns the contract it carries.
pub async fn verify(doc: &str) -> anyhow::Result<VerifiedContract> {
    #[cfg(feature = "vc")]
    {
        fluidos_contracts::vc::verify(doc)
            .await
            .map_err(|e| anyhow::anyhow!("credential does NOT verify: {e}"))
    }
    #[cfg(not(feature = "vc"))]
    {
        let _ = doc;
        anyhow::bail!(
            "this fluidos-node was built without the `vc` feature; verify the raw contract file instead"
        )
    }
}
