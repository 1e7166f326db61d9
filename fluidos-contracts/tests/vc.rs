//! Contracts exported as W3C Verifiable Credentials, and every way a credential is refused.
#![cfg(feature = "vc")]
#![allow(clippy::unwrap_used)]

use fluidos_contracts::vc::{self, VcExportError, VcVerifyError};
use fluidos_contracts::*;
use serde_json::Value;
use ssi::claims::data_integrity::{AnySuite, CryptographicSuite, ProofOptions};
use ssi::claims::vc::v2::JsonCredential;
use ssi::dids::{DIDKey, DIDResolver};
use ssi::jwk::{Base64urlUInt, JWK, OctetParams, Params};
use ssi::security::multibase::{Base, Multibase, MultibaseBuf};
use ssi::verification_methods::{AnyMethod, ReferenceOrOwned, SingleSecretSigner};

#[path = "support/vc_fixture.rs"]
mod fixture;
use fixture::terms;

struct Parties {
    provider: SecretKey,
    buyer: SecretKey,
    contract: VerifiedContract,
}

fn contract() -> Parties {
    let (provider, buyer) = (SecretKey::generate(), SecretKey::generate());
    let via = vec![
        SecretKey::generate().node_id(),
        SecretKey::generate().node_id(),
    ];
    let contract = SignedContract::offer(terms(&provider, &buyer, via), &provider)
        .unwrap()
        .countersign(&buyer)
        .unwrap();
    Parties {
        provider,
        buyer,
        contract,
    }
}

/// Signs any credential document with `key`, as a dishonest or careless issuer could,
/// so the checks after the proof can be exercised. Removes an existing proof first.
async fn sign_raw(mut document: Value, key: &SecretKey, method_of: &SecretKey) -> String {
    document.as_object_mut().unwrap().remove("proof");
    let credential: JsonCredential = serde_json::from_value(document).unwrap();
    let jwk = JWK::from(Params::OKP(OctetParams {
        curve: "Ed25519".into(),
        public_key: Base64urlUInt(key.node_id().as_bytes().to_vec()),
        private_key: Some(Base64urlUInt(key.to_seed().to_vec())),
    }));
    let did = method_of.node_id().to_did_key();
    let method = format!("{did}#{}", &did["did:key:".len()..]);
    let signed = AnySuite::EdDsaRdfc2022
        .sign(
            credential,
            &DIDKey.into_vm_resolver::<AnyMethod>(),
            &SingleSecretSigner::new(jwk).into_local(),
            ProofOptions::from_method(ReferenceOrOwned::Reference(
                ssi::dids::DIDURLBuf::from_string(method)
                    .unwrap()
                    .into_iri(),
            )),
        )
        .await
        .unwrap();
    serde_json::to_string(&signed).unwrap()
}

fn embedded_bytes(document: &Value) -> Vec<u8> {
    let text = document["credentialSubject"]["signedContract"]
        .as_str()
        .unwrap();
    Multibase::new(text).decode().unwrap().1
}

#[tokio::test]
async fn export_then_verify_by_either_party() {
    let p = contract();
    for issuer in [&p.provider, &p.buyer] {
        let document = vc::export(&p.contract, issuer).await.unwrap();
        assert_eq!(document["issuer"], issuer.node_id().to_did_key());
        assert_eq!(document["@context"][0], vc::VC_V2_CONTEXT);
        assert_eq!(document["@context"][1]["@vocab"], vc::VOCABULARY);
        let proof = &document["proof"];
        assert_eq!(proof["type"], "DataIntegrityProof");
        assert_eq!(proof["cryptosuite"], "eddsa-rdfc-2022");
        assert!(proof["proofValue"].as_str().unwrap().starts_with('z'));

        let subject = &document["credentialSubject"];
        assert_eq!(subject["provider"], p.provider.node_id().to_did_key());
        assert_eq!(subject["buyer"], p.buyer.node_id().to_did_key());
        assert_eq!(subject["contractId"], p.contract.id().to_string());
        assert_eq!(subject["partition"]["cpuMillis"], 2000);
        assert_eq!(subject["price"]["period"], "hour");
        assert_eq!(subject["validUntilMs"], 1_767_229_200_000u64);
        assert_eq!(subject["forwardedVia"].as_array().unwrap().len(), 2);
        // The original bilateral proof travels inside: both signatures, verifiable alone.
        let inner = SignedContract::from_bytes(&embedded_bytes(&document)).unwrap();
        assert_eq!(inner.verify().unwrap(), p.contract);

        let back = vc::verify(&document.to_string()).await.unwrap();
        assert_eq!(back, p.contract);
        assert_eq!(back.buyer_signature(), p.contract.buyer_signature());
    }
}

#[tokio::test]
async fn tampered_subject_is_refused() {
    let p = contract();
    let document = vc::export(&p.contract, &p.provider).await.unwrap();

    // Edited after signing: the visible terms no longer match the embedded contract.
    let mut edited = document.clone();
    edited["credentialSubject"]["price"]["amountMicros"] = 1.into();
    let err = vc::verify(&edited.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, VcVerifyError::SubjectMismatch { field } if field == "credentialSubject.price"),
        "{err}"
    );

    // An extra claim slipped into the subject.
    let mut extra = document.clone();
    extra["credentialSubject"]["discount"] = "100%".into();
    let err = vc::verify(&extra.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, VcVerifyError::SubjectMismatch { field } if field == "credentialSubject.discount"),
        "{err}"
    );

    // Even a party that re-signs cannot show terms other than the ones both signed.
    let resigned = sign_raw(edited, &p.provider, &p.provider).await;
    let err = vc::verify(&resigned).await.unwrap_err();
    assert!(
        matches!(err, VcVerifyError::SubjectMismatch { .. }),
        "{err}"
    );

    // A change outside the subject is caught by the Data Integrity proof.
    let mut renamed = document.clone();
    renamed["name"] = "a friendlier name".into();
    let err = vc::verify(&renamed.to_string()).await.unwrap_err();
    assert!(matches!(err, VcVerifyError::BadProof(_)), "{err}");

    // As is a damaged proof value.
    let mut bad_proof = document.clone();
    let value = bad_proof["proof"]["proofValue"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if value.ends_with('A') { 'B' } else { 'A' };
    bad_proof["proof"]["proofValue"] = format!("{}{flipped}", &value[..value.len() - 1]).into();
    let err = vc::verify(&bad_proof.to_string()).await.unwrap_err();
    assert!(matches!(err, VcVerifyError::BadProof(_)), "{err}");

    // The untouched credential still verifies.
    vc::verify(&document.to_string()).await.unwrap();
}

#[tokio::test]
async fn issuer_must_be_a_party() {
    let p = contract();
    let mallory = SecretKey::generate();
    let err = vc::export(&p.contract, &mallory).await.unwrap_err();
    assert!(
        matches!(err, VcExportError::IssuerNotParty { issuer } if issuer == mallory.node_id()),
        "{err}"
    );

    // A third party wraps the (genuine) contract in a credential of its own.
    let mut document = vc::export(&p.contract, &p.provider).await.unwrap();
    document["issuer"] = mallory.node_id().to_did_key().into();
    let forged = sign_raw(document.clone(), &mallory, &mallory).await;
    let err = vc::verify(&forged).await.unwrap_err();
    assert!(
        matches!(err, VcVerifyError::IssuerNotParty { issuer } if issuer == mallory.node_id()),
        "{err}"
    );

    // The issuer is named as the provider, but the proof is made with another key.
    document["issuer"] = p.provider.node_id().to_did_key().into();
    let forged = sign_raw(document.clone(), &mallory, &mallory).await;
    let err = vc::verify(&forged).await.unwrap_err();
    assert!(
        matches!(err, VcVerifyError::ProofNotByIssuer { .. }),
        "{err}"
    );

    // … or names the provider's method but is signed by another key.
    let forged = sign_raw(document, &mallory, &p.provider).await;
    let err = vc::verify(&forged).await.unwrap_err();
    assert!(matches!(err, VcVerifyError::BadProof(_)), "{err}");
}

#[tokio::test]
async fn altered_embedded_contract_is_refused() {
    let p = contract();
    let document = vc::export(&p.contract, &p.buyer).await.unwrap();
    let mut signed = SignedContract::from_bytes(&embedded_bytes(&document)).unwrap();

    // Terms changed under both signatures, then the credential re-signed by the issuer.
    let mut t: ContractTerms = canonical::from_slice(&signed.terms).unwrap();
    t.price.amount_micros = 1;
    signed.terms = canonical::to_vec(&t).unwrap();
    let mut altered = document.clone();
    altered["credentialSubject"]["signedContract"] =
        MultibaseBuf::encode(Base::Base64Url, signed.to_bytes().unwrap())
            .as_str()
            .into();
    let resigned = sign_raw(altered.clone(), &p.buyer, &p.buyer).await;
    let err = vc::verify(&resigned).await.unwrap_err();
    assert!(
        matches!(
            err,
            VcVerifyError::EmbeddedContractInvalid(ContractError::BadProviderSignature)
        ),
        "{err}"
    );

    // Countersignature removed: the provider's offer alone is not a contract.
    let mut offer_only = SignedContract::from_bytes(&embedded_bytes(&document)).unwrap();
    offer_only.buyer_signature = None;
    let mut altered = document.clone();
    altered["credentialSubject"]["signedContract"] =
        MultibaseBuf::encode(Base::Base64Url, offer_only.to_bytes().unwrap())
            .as_str()
            .into();
    let err = vc::verify(&altered.to_string()).await.unwrap_err();
    assert!(
        matches!(
            err,
            VcVerifyError::EmbeddedContractInvalid(ContractError::NotCountersigned)
        ),
        "{err}"
    );

    // One byte flipped inside the encoded contract.
    let mut bytes = embedded_bytes(&document);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let mut altered = document.clone();
    altered["credentialSubject"]["signedContract"] = MultibaseBuf::encode(Base::Base64Url, &bytes)
        .as_str()
        .into();
    let err = vc::verify(&altered.to_string()).await.unwrap_err();
    assert!(
        matches!(
            err,
            VcVerifyError::EmbeddedContractInvalid(_) | VcVerifyError::EmbeddedContractEncoding(_)
        ),
        "{err}"
    );

    // Not base64url, or not CBOR at all.
    let mut altered = document.clone();
    altered["credentialSubject"]["signedContract"] =
        MultibaseBuf::encode(Base::Base58Btc, embedded_bytes(&document))
            .as_str()
            .into();
    let err = vc::verify(&altered.to_string()).await.unwrap_err();
    assert!(
        matches!(err, VcVerifyError::EmbeddedContractEncoding(_)),
        "{err}"
    );
    altered["credentialSubject"]["signedContract"] = "u!!!".into();
    let err = vc::verify(&altered.to_string()).await.unwrap_err();
    assert!(
        matches!(err, VcVerifyError::EmbeddedContractEncoding(_)),
        "{err}"
    );
    altered["credentialSubject"]["signedContract"] =
        MultibaseBuf::encode(Base::Base64Url, b"not cbor")
            .as_str()
            .into();
    let err = vc::verify(&altered.to_string()).await.unwrap_err();
    assert!(
        matches!(err, VcVerifyError::EmbeddedContractEncoding(_)),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_and_oversized_documents_are_refused() {
    for bad in [
        "",
        "not json",
        "[]",
        r#"{"issuer": 7}"#,
        r#"{"issuer": "did:web:example.org"}"#,
        r#"{"issuer": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"}"#,
        r#"{"issuer": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "credentialSubject": [{}, {}]}"#,
        r#"{"issuer": "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "credentialSubject": {"signedContract": 1}}"#,
    ] {
        let err = vc::verify(bad).await.unwrap_err();
        assert!(matches!(err, VcVerifyError::Malformed(_)), "{bad}: {err}");
    }

    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(vc::MAX_VC_BYTES));
    let err = vc::verify(&huge).await.unwrap_err();
    assert!(matches!(err, VcVerifyError::TooLarge { .. }), "{err}");

    // A valid credential without its proof, or with two.
    let p = contract();
    let document = vc::export(&p.contract, &p.provider).await.unwrap();
    let mut unproven = document.clone();
    unproven.as_object_mut().unwrap().remove("proof");
    let err = vc::verify(&unproven.to_string()).await.unwrap_err();
    assert!(matches!(err, VcVerifyError::BadProof(_)), "{err}");
    let mut doubled = document.clone();
    doubled["proof"] = Value::Array(vec![document["proof"].clone(), document["proof"].clone()]);
    let err = vc::verify(&doubled.to_string()).await.unwrap_err();
    assert!(matches!(err, VcVerifyError::BadProof(_)), "{err}");

    // The context is part of what is checked: another vocabulary changes the meaning.
    let mut recontexted = document.clone();
    recontexted["@context"][1]["@vocab"] = "https://example.org/other#".into();
    let err = vc::verify(&recontexted.to_string()).await.unwrap_err();
    assert!(
        matches!(&err, VcVerifyError::SubjectMismatch { field } if field == "@context"),
        "{err}"
    );
}

/// Terms that not every JSON-LD processor canonicalizes alike are refused at export,
/// with the field named, rather than exported as a credential only fluidos accepts.
#[tokio::test]
async fn unportable_terms_are_refused_at_export() {
    let (provider, buyer) = (SecretKey::generate(), SecretKey::generate());
    let sign = |t: ContractTerms| {
        SignedContract::offer(t, &provider)
            .unwrap()
            .countersign(&buyer)
            .unwrap()
    };

    let mut t = terms(&provider, &buyer, vec![]);
    t.partition.memory_bytes = vc::MAX_JSON_INTEGER + 1;
    let err = vc::export(&sign(t), &provider).await.unwrap_err();
    assert!(
        matches!(&err, VcExportError::NumberTooLarge { field, value }
            if field == "partition.memoryBytes" && *value == vc::MAX_JSON_INTEGER + 1),
        "{err}"
    );
    let mut t = terms(&provider, &buyer, vec![]);
    t.partition.memory_bytes = vc::MAX_JSON_INTEGER;
    vc::export(&sign(t), &provider).await.unwrap();

    for currency in ["E\tR", "E\u{1}R", "E\u{7f}R", "E\u{85}R"] {
        let mut t = terms(&provider, &buyer, vec![]);
        t.price.currency = currency.into();
        let err = vc::export(&sign(t), &buyer).await.unwrap_err();
        assert!(
            matches!(&err, VcExportError::ControlCharacter { field } if field == "price.currency"),
            "{currency:?}: {err}"
        );
    }
}
