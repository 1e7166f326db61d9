//! Contract credentials checked by an implementation that shares no code with ssi:
//! jsonld.js, `@digitalbazaar/vc` and its eddsa-rdfc-2022 cryptosuite with did:key
//! resolution (`tests/interop/verify.mjs`, offline), and libp2p's PeerId derivation
//! from `@libp2p/peer-id`.
//!
//! Needs `node` and `npm ci` in `fluidos-contracts/tests/interop` (done by `.ci/run`).
//! Without them each test skips with a message, or fails when `CI` is set.
#![cfg(feature = "vc")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fluidos_contracts::*;
use serde_json::Value;

#[path = "support/vc_fixture.rs"]
mod fixture;

/// The interop folder, or `None` (after a message, or a panic under CI) when node or
/// its modules are missing.
fn interop() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let problem = match Command::new("node").arg("--version").output() {
        Err(e) => Some(format!("`node` cannot be run ({e})")),
        Ok(out) if !out.status.success() => Some("`node --version` failed".to_owned()),
        Ok(_) if !dir.join("node_modules/@digitalbazaar/vc").is_dir() => Some(format!(
            "no node_modules in {} (run `npm ci` there)",
            dir.display()
        )),
        Ok(_) => None,
    };
    match problem {
        None => Some(dir),
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the VC interop test cannot run: {why}")
        }
        Some(why) => {
            eprintln!("skipping the JavaScript VC interop test: {why}");
            None
        }
    }
}

fn node(dir: &Path, args: &[&str]) -> Output {
    Command::new("node")
        .arg(dir.join("verify.mjs"))
        .args(args)
        .output()
        .expect("node runs")
}

/// Runs the JS verifier on `files`; one parsed result line per file.
fn js_verify(dir: &Path, files: &[PathBuf]) -> (bool, Vec<Value>) {
    let args: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let out = node(dir, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.stderr.is_empty(),
        "verify.mjs wrote to stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per file"))
        .collect();
    assert_eq!(lines.len(), files.len(), "{stdout}");
    (out.status.success(), lines)
}

fn contract(via: usize, currency: &str) -> (SecretKey, SecretKey, VerifiedContract) {
    let (p, b) = (SecretKey::generate(), SecretKey::generate());
    let via = (0..via).map(|_| SecretKey::generate().node_id()).collect();
    let mut terms = fixture::terms(&p, &b, via);
    terms.price.currency = currency.into();
    let c = SignedContract::offer(terms, &p)
        .unwrap()
        .countersign(&b)
        .unwrap();
    (p, b, c)
}

fn write(dir: &Path, name: &str, document: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(document).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn javascript_verifier_accepts_exported_credentials_and_rejects_tampered_ones() {
    let Some(interop) = interop() else { return };
    let tmp = tempfile::tempdir().unwrap();

    // Empty and non-empty `forwardedVia`, issued by either party, and a currency with
    // characters that N-Quads escape (`"`, `\`) or that are not ASCII.
    let (p0, _, direct) = contract(0, "EUR");
    let (_, b2, forwarded) = contract(2, "EUR");
    let (p1, _, odd) = contract(1, "E\"U\\R é😀");
    let mut good = Vec::new();
    let mut documents = Vec::new();
    for (name, c, key) in [
        ("direct.json", &direct, &p0),
        ("forwarded.json", &forwarded, &b2),
        ("escaped.json", &odd, &p1),
    ] {
        let document = vc::export(c, key).await.unwrap();
        // fluidos' own verifier agrees before the other one is asked.
        assert_eq!(&vc::verify(&document.to_string()).await.unwrap(), c);
        good.push(write(tmp.path(), name, &document));
        documents.push(document);
    }
    let (all, lines) = js_verify(&interop, &good);
    for line in &lines {
        assert_eq!(
            line["verified"], true,
            "rejected by the JS verifier: {line}"
        );
    }
    assert!(all);

    // Tampered after signing: each must be refused by the JS verifier (and by fluidos).
    let forwarded_doc = &documents[1];
    let mut price = forwarded_doc.clone();
    price["credentialSubject"]["price"]["amountMicros"] = 1.into();
    let mut hops = forwarded_doc.clone();
    let via = hops["credentialSubject"]["forwardedVia"]
        .as_array_mut()
        .unwrap();
    let first = via[0]["node"].clone();
    via[0]["node"] = via[1]["node"].clone();
    via[1]["node"] = first;
    let mut embedded = forwarded_doc.clone();
    let text = embedded["credentialSubject"]["signedContract"]
        .as_str()
        .unwrap()
        .to_owned();
    embedded["credentialSubject"]["signedContract"] = format!("{text}AA").into();
    let mut issuer = documents[0].clone();
    issuer["issuer"] = SecretKey::generate().node_id().to_did_key().into();
    let tampered: Vec<(PathBuf, Value)> = [
        ("price.json", price),
        ("hops.json", hops),
        ("embedded.json", embedded),
        ("issuer.json", issuer),
    ]
    .into_iter()
    .map(|(name, d)| (write(tmp.path(), name, &d), d))
    .collect();
    for (path, document) in &tampered {
        assert!(vc::verify(&document.to_string()).await.is_err());
        let (all, lines) = js_verify(&interop, std::slice::from_ref(path));
        assert!(!all, "{}: {}", path.display(), lines[0]);
        assert_eq!(lines[0]["verified"], false, "{}", lines[0]);
    }
    // The verdicts are per file: a batch with one bad credential fails as a whole.
    let (all, lines) = js_verify(&interop, &[good[0].clone(), tampered[0].0.clone()]);
    assert!(!all);
    assert_eq!(lines[0]["verified"], true);
    assert_eq!(lines[1]["verified"], false);
}

#[test]
fn did_key_to_peer_id_agrees_with_libp2p_js() {
    let Some(interop) = interop() else { return };
    let mut keys: Vec<NodeId> = (0..4).map(|_| SecretKey::generate().node_id()).collect();
    // Fixed keys too, so a failure is reproducible: all-zero and all-one seeds.
    keys.push(SecretKey::from_seed(&[0; 32]).node_id());
    keys.push(SecretKey::from_seed(&[0xff; 32]).node_id());
    let dids: Vec<String> = keys.iter().map(NodeId::to_did_key).collect();
    let args: Vec<&str> = std::iter::once("--peer-id")
        .chain(dids.iter().map(String::as_str))
        .collect();
    let out = node(&interop, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), keys.len(), "{stdout}");
    for (key, line) in keys.iter().zip(lines) {
        let [did, peer, back] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("unexpected line {line}");
        };
        assert_eq!(did, key.to_did_key());
        // did:key -> PeerId, both ways round.
        let ours = fluidos_discovery::peer_id(key);
        assert_eq!(peer, ours.to_string(), "PeerId of {did}");
        assert_eq!(
            fluidos_discovery::node_id(&peer.parse().unwrap()),
            Some(*key)
        );
        // PeerId -> did:key as the JS library reads the key out of the PeerId.
        assert_eq!(back, did);
    }
}
