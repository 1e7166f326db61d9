//! A contract as a W3C Verifiable Credential (VC Data Model 2.0), so that tools outside
//! fluidos can check it.
//!
//! [`export`] wraps a [`VerifiedContract`] in a credential issued by one of its two
//! parties and secured with a Data Integrity proof (`DataIntegrityProof`, cryptosuite
//! `eddsa-rdfc-2022`) made with the party's node key, whose `did:key` is the issuer.
//! [`verify`] checks such a credential and gives the contract back.
//!
//! The credential never replaces the contract: its subject carries the contract's
//! canonical CBOR with **both** ed25519 signatures (`signedContract`, multibase
//! base64url), so the original bilateral proof travels with it. The other subject
//! fields are a readable copy of the terms; [`verify`] insists that they are exactly
//! what the embedded contract says, so a party cannot issue a credential that shows
//! one thing and carries another.
//!
//! # Shape
//!
//! ```json
//! {
//!   "@context": ["https://www.w3.org/ns/credentials/v2", { "@vocab": "https://fluidos.invalid/ns#", … }],
//!   "type": ["VerifiableCredential", "FluidosContractCredential"],
//!   "issuer": "did:key:z6Mk…",
//!   "credentialSubject": {
//!     "id": "urn:fluidos:contract:<32 hex>", "type": "FluidosContract",
//!     "contractId": "<32 hex>", "reservationId": "<32 hex>", "flavorId": "<32 hex>",
//!     "provider": "did:key:z6Mk…", "buyer": "did:key:z6Mk…",
//!     "partition": { "cpuMillis": 2000, "memoryBytes": 4294967296, "storageBytes": 0, "pods": 1, "gpus": 0 },
//!     "price": { "amountMicros": 800000, "currency": "EUR", "period": "hour", "model": "reserved" },
//!     "validFromMs": 1767225600000, "validUntilMs": 1767229200000,
//!     "forwardedVia": [{ "hop": 1, "node": "did:key:z6Mk…" }],
//!     "signedContract": "u…"
//!   },
//!   "proof": { "type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022", "proofPurpose": "assertionMethod",
//!              "verificationMethod": "did:key:z6Mk…#z6Mk…", "proofValue": "z…", … }
//! }
//! ```
//!
//! # Vocabulary
//!
//! The VC 2.0 context defines no catch-all vocabulary, so the credential carries an
//! inline context whose `@vocab` is [`VOCABULARY`] (`https://fluidos.invalid/ns#`):
//! every fluidos term expands to that IRI followed by the term name
//! (`https://fluidos.invalid/ns#contractId`). `.invalid` is reserved (RFC 2606), so the
//! IRI is an identifier that no one can own and that no processor will try to fetch;
//! the inline context is all a JSON-LD processor needs. `provider`, `buyer` and the
//! hops' `node` are typed `@id` (the did:keys are IRIs), and `signedContract` is typed
//! [`MULTIBASE_DATATYPE`]; those four terms name their full IRI.
//!
//! The context uses nothing else, so every conformant JSON-LD processor produces the
//! same RDF and the proof verifies outside ssi too (tested against jsonld.js and
//! `@digitalbazaar/vc` in `tests/vc_interop.rs`). In particular `forwardedVia` is a set
//! of `{hop, node}` objects, not an `@list`: ssi 0.16 turns a JSON-LD list into an RDF
//! list that ends in a fresh blank node instead of `rdf:nil`, so what it signed could
//! not be reproduced by any other processor. Export refuses numbers above
//! [`MAX_JSON_INTEGER`] (JavaScript reads them as doubles) and strings with control
//! characters (ssi escapes only `\n` and `\r` in N-Quads, RDFC-1.0 all of them).
//!
//! Validity times are unix milliseconds (`validFromMs`, `validUntilMs`), the same
//! values the parties signed. The credential itself has no `validFrom`/`validUntil`: it
//! attests that the contract was agreed, which stays true after the contract ends.

use did_method_key::DIDKey;
use serde_json::{Value, json};
use ssi_claims::data_integrity::{AnySuite, CryptographicSuite, DataIntegrity, ProofOptions};
use ssi_claims::vc::v2::JsonCredential;
use ssi_claims::{VerificationParameters, data_integrity};
use ssi_dids_core::DIDResolver;
use ssi_jwk::{Base64urlUInt, JWK, OctetParams, Params};
use ssi_security::multibase::{Base, Multibase, MultibaseBuf};
use ssi_verification_methods::{AnyMethod, ReferenceOrOwned, SingleSecretSigner};

use crate::canonical;
use crate::contract::{ContractError, ContractTerms, SignedContract, VerifiedContract};
use crate::{NodeId, SecretKey};

/// The IRI every fluidos term of the credential expands under (see the module docs).
pub const VOCABULARY: &str = "https://fluidos.invalid/ns#";

/// The W3C VC Data Model 2.0 context, always first.
pub const VC_V2_CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";

/// The RDF datatype of `signedContract` (Data Integrity's multibase string).
pub const MULTIBASE_DATATYPE: &str = "https://w3id.org/security#multibase";

/// The largest integer the credential carries as a JSON number, 2^53 − 1 (I-JSON,
/// RFC 7493): a JavaScript JSON-LD processor reads larger numbers as doubles, which
/// canonicalize differently, so the proof would not verify there.
pub const MAX_JSON_INTEGER: u64 = (1 << 53) - 1;

/// The credential type added to `VerifiableCredential`.
pub const CREDENTIAL_TYPE: &str = "FluidosContractCredential";

/// The type of the credential subject.
pub const SUBJECT_TYPE: &str = "FluidosContract";

/// The Data Integrity cryptosuite of the proof.
pub const CRYPTOSUITE: &str = "eddsa-rdfc-2022";

/// The largest credential [`verify`] reads, in bytes. A contract's credential is a few
/// kilobytes; the limit keeps JSON-LD processing of hostile input bounded.
pub const MAX_VC_BYTES: usize = 64 * 1024;

/// Why a contract could not be exported as a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VcExportError {
    /// The key is neither the provider's nor the buyer's: only a party issues the
    /// credential of its contract.
    #[error(
        "{issuer} is not a party of the contract; export it with the provider's or the buyer's key"
    )]
    IssuerNotParty {
        /// The node of the key that was given.
        issuer: NodeId,
    },
    /// A number of the terms exceeds [`MAX_JSON_INTEGER`], so not every verifier would
    /// read the credential as it was signed. The contract itself is unaffected; share
    /// it as raw bytes instead.
    #[error(
        "`{field}` = {value} is above 2^53 - 1, which JSON-LD processors in JavaScript cannot read exactly; share the raw contract instead of a credential"
    )]
    NumberTooLarge {
        /// The subject field (`partition.memoryBytes`, `validUntilMs`, …).
        field: String,
        /// Its value.
        value: u64,
    },
    /// A string of the terms (in practice the currency) holds a control character.
    /// Canonical N-Quads escape those differently in ssi (only `\n`, `\r`) and in
    /// RDFC-1.0 processors such as jsonld.js (all of them), so the proof would verify
    /// in fluidos only.
    #[error(
        "`{field}` contains a control character, which JSON-LD processors canonicalize differently; share the raw contract instead of a credential"
    )]
    ControlCharacter {
        /// The subject field (`price.currency`).
        field: String,
    },
    /// The contract could not be encoded (canonical CBOR).
    #[error(transparent)]
    Encode(#[from] canonical::EncodeError),
    /// The credential document was refused by the VC library (a bug in this module).
    #[error("building the credential failed: {0}")]
    Credential(String),
    /// The Data Integrity proof could not be made.
    #[error("signing the credential failed: {0}")]
    Sign(String),
}

/// Why a credential is not a valid fluidos contract credential. Checks run cheapest
/// first and the first failure is reported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VcVerifyError {
    /// The document is larger than [`MAX_VC_BYTES`].
    #[error("credential of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The document is not JSON, or not shaped like a fluidos contract credential.
    #[error("malformed credential: {0}")]
    Malformed(String),
    /// `signedContract` is not multibase base64url of a canonical [`SignedContract`].
    #[error("embedded contract cannot be decoded: {0}")]
    EmbeddedContractEncoding(String),
    /// The embedded contract does not carry two valid party signatures.
    #[error("embedded contract does not verify: {0}")]
    EmbeddedContractInvalid(#[source] ContractError),
    /// The issuer is neither the provider nor the buyer of the embedded contract.
    #[error("issuer {issuer} is not a party of the contract")]
    IssuerNotParty {
        /// The issuer's did:key.
        issuer: NodeId,
    },
    /// The visible credential fields differ from what the embedded contract says.
    #[error("credential field `{field}` does not match the embedded contract")]
    SubjectMismatch {
        /// The first field found to differ (`credentialSubject.<term>`, `@context`, `type`).
        field: String,
    },
    /// The proof's verification method is not the issuer's own key.
    #[error("proof is made with {method}, not with the issuer's key")]
    ProofNotByIssuer {
        /// The verification method the proof names.
        method: String,
    },
    /// The Data Integrity proof is missing, of another kind, or does not verify.
    #[error("credential proof: {0}")]
    BadProof(String),
}

/// Exports `contract` as a W3C VC 2.0 issued and signed by `issuer`, which must be the
/// provider's or the buyer's key.
pub async fn export(
    contract: &VerifiedContract,
    issuer: &SecretKey,
) -> Result<Value, VcExportError> {
    let issuer_id = issuer.node_id();
    if !contract.is_party(&issuer_id) {
        return Err(VcExportError::IssuerNotParty { issuer: issuer_id });
    }
    let bytes = contract.signed().to_bytes()?;
    let unsigned = credential(contract.terms(), &bytes, &issuer_id);
    if let Some(unportable) = first_unportable(&unsigned["credentialSubject"], "") {
        return Err(unportable);
    }
    let credential: JsonCredential =
        serde_json::from_value(unsigned).map_err(|e| VcExportError::Credential(e.to_string()))?;

    let jwk = jwk(issuer);
    let method = DIDKey::generate_url(&jwk).map_err(|e| VcExportError::Sign(e.to_string()))?;
    let resolver = DIDKey.into_vm_resolver::<AnyMethod>();
    let signer = SingleSecretSigner::new(jwk).into_local();
    // Named explicitly: `AnySuite::pick` would choose Ed25519Signature2018, which
    // current verifiers no longer accept.
    let signed = AnySuite::EdDsaRdfc2022
        .sign(
            credential,
            &resolver,
            &signer,
            ProofOptions::from_method(ReferenceOrOwned::Reference(method.into_iri())),
        )
        .await
        .map_err(|e| VcExportError::Sign(e.to_string()))?;
    serde_json::to_value(&signed).map_err(|e| VcExportError::Credential(e.to_string()))
}

/// Verifies a credential made by [`export`] and returns the contract it carries.
///
/// Checks, in this order: size; JSON shape; the embedded contract and both of its
/// signatures; that the issuer is a party; that `@context`, `type` and every subject
/// field are exactly what the embedded contract gives; that the proof is an
/// `eddsa-rdfc-2022` `DataIntegrityProof` for `assertionMethod` made with the issuer's
/// key; and finally the proof itself, resolving the issuer's `did:key`.
pub async fn verify(vc_json: &str) -> Result<VerifiedContract, VcVerifyError> {
    if vc_json.len() > MAX_VC_BYTES {
        return Err(VcVerifyError::TooLarge {
            len: vc_json.len(),
            max: MAX_VC_BYTES,
        });
    }
    let document: Value = serde_json::from_str(vc_json)
        .map_err(|e| VcVerifyError::Malformed(format!("not JSON: {e}")))?;
    let issuer = document
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("`issuer` must be a did:key string"))?;
    let issuer: NodeId = issuer.parse().map_err(|e| {
        VcVerifyError::Malformed(format!("`issuer` is not an ed25519 did:key: {e}"))
    })?;
    let subject = document
        .get("credentialSubject")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("`credentialSubject` must be one object"))?;
    let embedded = subject
        .get("signedContract")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("`credentialSubject.signedContract` must be a string"))?;

    let bytes = decode_embedded(embedded)?;
    let contract = SignedContract::from_bytes(&bytes)
        .map_err(|e| VcVerifyError::EmbeddedContractEncoding(e.to_string()))?
        .verify()
        .map_err(VcVerifyError::EmbeddedContractInvalid)?;
    if !contract.is_party(&issuer) {
        return Err(VcVerifyError::IssuerNotParty { issuer });
    }
    // Compared with the subject rebuilt from the bytes that were just decoded, and
    // which `from_bytes` has proved canonical, so the string must match exactly.
    let expected = credential(contract.terms(), &bytes, &issuer);
    for key in ["@context", "type"] {
        if document.get(key) != expected.get(key) {
            return Err(VcVerifyError::SubjectMismatch { field: key.into() });
        }
    }
    if let Some(field) = first_difference(subject, &expected["credentialSubject"]) {
        return Err(VcVerifyError::SubjectMismatch {
            field: format!("credentialSubject.{field}"),
        });
    }

    check_proof_shape(&document, &issuer)?;
    verify_proof(vc_json).await?;
    Ok(contract)
}

/// Verifies the Data Integrity proof alone, resolving the verification method's did:key.
async fn verify_proof(vc_json: &str) -> Result<(), VcVerifyError> {
    let secured: DataIntegrity<JsonCredential, AnySuite> =
        data_integrity::from_json_str(vc_json)
            .map_err(|e| VcVerifyError::Malformed(e.to_string()))?;
    let resolver = DIDKey.into_vm_resolver::<AnyMethod>();
    match secured
        .verify(&VerificationParameters::from_resolver(&resolver))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(invalid)) => Err(VcVerifyError::BadProof(invalid.to_string())),
        Err(e) => Err(VcVerifyError::BadProof(e.to_string())),
    }
}

fn malformed(what: &str) -> VcVerifyError {
    VcVerifyError::Malformed(what.to_owned())
}

/// The inline context, second after [`VC_V2_CONTEXT`]. Only plain JSON-LD: a vocabulary
/// for every fluidos term, full IRIs for the terms whose values are IRIs (`@type: @id`)
/// or multibase, no prefixes, no containers.
fn context() -> Value {
    let term = |name: &str| format!("{VOCABULARY}{name}");
    json!({
        "@vocab": VOCABULARY,
        "provider": { "@id": term("provider"), "@type": "@id" },
        "buyer": { "@id": term("buyer"), "@type": "@id" },
        "node": { "@id": term("node"), "@type": "@id" },
        "signedContract": { "@id": term("signedContract"), "@type": MULTIBASE_DATATYPE }
    })
}

/// The unsigned credential for `terms`, whose signed form is `signed_contract`.
fn credential(terms: &ContractTerms, signed_contract: &[u8], issuer: &NodeId) -> Value {
    let p = &terms.partition;
    // The enums' serde names (`hour`, `reserved`) are the contract's own spelling.
    let period = serde_json::to_value(terms.price.period).unwrap_or(Value::Null);
    let model = serde_json::to_value(terms.price.model).unwrap_or(Value::Null);
    // Hop objects rather than a JSON-LD `@list`: ssi 0.16 ends every RDF list with a
    // fresh blank node instead of `rdf:nil`, so no other processor reproduced what it
    // signed. The hop number keeps the order in the signed graph.
    let forwarded: Vec<Value> = terms
        .forwarded_via
        .iter()
        .zip(1u64..)
        .map(|(node, hop)| json!({ "hop": hop, "node": node.to_did_key() }))
        .collect();
    json!({
        "@context": [VC_V2_CONTEXT, context()],
        "type": ["VerifiableCredential", CREDENTIAL_TYPE],
        "issuer": issuer.to_did_key(),
        "credentialSubject": {
            "id": format!("urn:fluidos:contract:{}", terms.id),
            "type": SUBJECT_TYPE,
            "contractId": terms.id.to_string(),
            "reservationId": terms.reservation.to_string(),
            "flavorId": terms.flavor.id.to_string(),
            "provider": terms.provider.to_did_key(),
            "buyer": terms.buyer.to_did_key(),
            "partition": {
                "cpuMillis": p.cpu_millis,
                "memoryBytes": p.memory_bytes,
                "storageBytes": p.storage_bytes,
                "pods": p.pods,
                "gpus": p.gpus
            },
            "price": {
                "amountMicros": terms.price.amount_micros,
                "currency": terms.price.currency,
                "period": period,
                "model": model
            },
            "validFromMs": terms.valid_from.0,
            "validUntilMs": terms.valid_until.0,
            "forwardedVia": forwarded,
            "signedContract": MultibaseBuf::encode(Base::Base64Url, signed_contract).as_str()
        }
    })
}

/// The first value of `value` (with its dotted path) that JSON-LD processors do not
/// all turn into the same canonical N-Quads: an integer above [`MAX_JSON_INTEGER`], or
/// a string with a control character.
fn first_unportable(value: &Value, path: &str) -> Option<VcExportError> {
    match value {
        Value::Number(n) => n.as_u64().filter(|n| *n > MAX_JSON_INTEGER).map(|value| {
            VcExportError::NumberTooLarge {
                field: path.to_owned(),
                value,
            }
        }),
        Value::String(s) if s.chars().any(char::is_control) => {
            Some(VcExportError::ControlCharacter {
                field: path.to_owned(),
            })
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            first_unportable(v, &path)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_unportable(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Decodes `signedContract`: multibase, and only base64url (`u`), whose decoding is
/// linear in the input (base58 is quadratic).
fn decode_embedded(text: &str) -> Result<Vec<u8>, VcVerifyError> {
    if !text.starts_with('u') {
        return Err(VcVerifyError::EmbeddedContractEncoding(
            "`signedContract` must be multibase base64url (prefix `u`)".into(),
        ));
    }
    let (_, bytes) = Multibase::new(text)
        .decode()
        .map_err(|e| VcVerifyError::EmbeddedContractEncoding(e.to_string()))?;
    Ok(bytes)
}

/// The first key whose value differs between the two subject objects, if any.
fn first_difference(actual: &serde_json::Map<String, Value>, expected: &Value) -> Option<String> {
    let Some(expected) = expected.as_object() else {
        return Some(String::new());
    };
    // Both maps iterate in key order, so the reported field is deterministic.
    expected
        .iter()
        .find(|(k, v)| actual.get(k.as_str()) != Some(v))
        .map(|(k, _)| k.clone())
        .or_else(|| {
            actual
                .keys()
                .find(|k| !expected.contains_key(k.as_str()))
                .cloned()
        })
}

/// Checks what the proof claims before the costly JSON-LD verification: one
/// `eddsa-rdfc-2022` proof for `assertionMethod`, made with the issuer's did:key.
fn check_proof_shape(document: &Value, issuer: &NodeId) -> Result<(), VcVerifyError> {
    let proof = match document.get("proof") {
        Some(Value::Object(proof)) => proof,
        Some(Value::Array(proofs)) if proofs.len() == 1 => proofs[0]
            .as_object()
            .ok_or_else(|| VcVerifyError::BadProof("the proof is not an object".into()))?,
        Some(Value::Array(proofs)) => {
            return Err(VcVerifyError::BadProof(format!(
                "expected exactly one proof, found {}",
                proofs.len()
            )));
        }
        _ => {
            return Err(VcVerifyError::BadProof(
                "the credential has no proof".into(),
            ));
        }
    };
    let field = |name: &str| proof.get(name).and_then(Value::as_str).unwrap_or("");
    if field("type") != "DataIntegrityProof" || field("cryptosuite") != CRYPTOSUITE {
        return Err(VcVerifyError::BadProof(format!(
            "expected a DataIntegrityProof with cryptosuite {CRYPTOSUITE}, found `{}` / `{}`",
            field("type"),
            field("cryptosuite")
        )));
    }
    if field("proofPurpose") != "assertionMethod" {
        return Err(VcVerifyError::BadProof(format!(
            "proof purpose is `{}`, not assertionMethod",
            field("proofPurpose")
        )));
    }
    let did = issuer.to_did_key();
    // A did:key has one verification method, whose fragment is the method-specific id.
    let own_method = format!("{did}#{}", &did["did:key:".len()..]);
    let method = field("verificationMethod");
    if method != own_method {
        return Err(VcVerifyError::ProofNotByIssuer {
            method: method.to_owned(),
        });
    }
    Ok(())
}

/// The node key as an ssi JWK. ssi uses another ed25519-dalek major, so only the raw
/// 32-byte seed and public key cross; ssi zeroizes the private part on drop.
fn jwk(key: &SecretKey) -> JWK {
    let seed = key.to_seed();
    JWK::from(Params::OKP(OctetParams {
        curve: "Ed25519".into(),
        public_key: Base64urlUInt(key.node_id().as_bytes().to_vec()),
        private_key: Some(Base64urlUInt(seed.to_vec())),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::tests::terms;

    /// Every subject field must be covered by the proof. JSON-LD drops terms it cannot
    /// expand, and a dropped term would be unsigned; so change each field in turn and
    /// check that the proof alone (without the subject comparison) then fails.
    #[tokio::test]
    async fn the_proof_covers_every_subject_field() {
        let (p, b) = (SecretKey::generate(), SecretKey::generate());
        let mut t = terms(&p, &b);
        t.forwarded_via = vec![SecretKey::generate().node_id()];
        let contract = SignedContract::offer(t, &p)
            .unwrap()
            .countersign(&b)
            .unwrap();
        let document = export(&contract, &p).await.unwrap();
        verify_proof(&document.to_string()).await.unwrap();

        let subject = document["credentialSubject"].as_object().unwrap();
        let other = SecretKey::generate().node_id().to_did_key();
        for (field, value) in subject {
            let changed = match value {
                Value::String(s) if s.starts_with("did:key:") => Value::from(other.clone()),
                Value::String(s) if s.starts_with("urn:") => Value::from(format!("{s}0")),
                Value::String(s) if s.starts_with('u') && s.len() > 100 => {
                    Value::from(format!("{s}AA"))
                }
                Value::String(s) if field == "type" => Value::from(format!("{s}X")),
                Value::String(s) => Value::from(format!("{s}0")),
                Value::Number(n) => Value::from(n.as_u64().unwrap() + 1),
                Value::Array(_) => Value::Array(vec![Value::from(other.clone())]),
                Value::Object(o) => {
                    let mut o = o.clone();
                    let (k, v) = o
                        .iter()
                        .next()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .unwrap();
                    o.insert(
                        k,
                        match v {
                            Value::Number(n) => Value::from(n.as_u64().unwrap() + 1),
                            _ => Value::from("changed"),
                        },
                    );
                    Value::Object(o)
                }
                _ => panic!("unexpected subject value {value}"),
            };
            let mut tampered = document.clone();
            tampered["credentialSubject"][field] = changed;
            let err = verify_proof(&tampered.to_string()).await.unwrap_err();
            assert!(matches!(err, VcVerifyError::BadProof(_)), "{field}: {err}");
        }
        // The order of `forwardedVia` is signed too: its hop numbers are.
        let mut t = terms(&p, &b);
        t.forwarded_via = vec![
            SecretKey::generate().node_id(),
            SecretKey::generate().node_id(),
        ];
        let contract = SignedContract::offer(t, &p)
            .unwrap()
            .countersign(&b)
            .unwrap();
        let document = export(&contract, &p).await.unwrap();
        let mut swapped = document.clone();
        let via = swapped["credentialSubject"]["forwardedVia"]
            .as_array_mut()
            .unwrap();
        let first = via[0]["node"].clone();
        via[0]["node"] = via[1]["node"].clone();
        via[1]["node"] = first;
        let err = verify_proof(&swapped.to_string()).await.unwrap_err();
        assert!(matches!(err, VcVerifyError::BadProof(_)), "{err}");
    }
}
