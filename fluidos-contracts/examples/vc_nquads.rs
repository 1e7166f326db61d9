//! Prints the RDFC-1.0 canonical N-Quads that ssi hashes for a credential's Data
//! Integrity proof: first the proof options, then the document without its proof.
//! Same layout as `node tests/interop/verify.mjs --nquads <file>` (jsonld.js), so the
//! two can be compared with `diff`.
//!
//! `cargo run -p fluidos-contracts --example vc_nquads -- c.json`

use ssi::claims::VerificationParameters;
use ssi::claims::data_integrity::{self, AnySuite, DataIntegrity};
use ssi::claims::vc::v2::JsonCredential;
use ssi::json_ld::{ContextLoader, Expandable};
use ssi::rdf::{AnyLdEnvironment, LdEnvironment};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: vc_nquads <credential.json>")?;
    let text = std::fs::read_to_string(path)?;
    let secured: DataIntegrity<JsonCredential, AnySuite> = data_integrity::from_json_str(&text)?;
    let proof = secured
        .proofs
        .first()
        .ok_or("the credential has no proof")?;
    let options = proof
        .configuration()
        .expand(&VerificationParameters::from_resolver(()), &secured.claims)
        .await?
        .nquads_lines();
    let mut ld = LdEnvironment::default();
    let expanded = secured
        .claims
        .expand_with(&mut ld, &ContextLoader::default())
        .await?;
    let document = ld.canonical_form_of(&expanded)?;
    print!(
        "# proof options\n{}# document\n{}",
        options.concat(),
        document.concat()
    );
    Ok(())
}
