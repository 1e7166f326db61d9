//! Writes the seed corpus of the fuzz targets in `fuzz/` (valid encodings for libFuzzer
//! to mutate, so it gets past CBOR's length prefixes). Ignored in normal runs; refresh
//! the seeds with `cargo test -p fluidos-discovery --test fuzz_seeds -- --ignored`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use fluidos_contracts::rear::{ErrorCode, RearError, Request, Response};
use fluidos_contracts::{SecretKey, Selector, Timestamp, canonical};
use fluidos_discovery::catalog::{advert_key, catalog_key};
use fluidos_discovery::gossip::{MembersQuery, MembersReply, encode_query, encode_reply};
use fluidos_discovery::{Advert, AdvertBody, CatalogName, Role};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn advert(key: &SecretKey, catalog: Option<&str>, now: Timestamp) -> Vec<u8> {
    let body = AdvertBody {
        roles: [Role::Provider].into(),
        labels: [("zone".to_string(), "edge".to_string())].into(),
        ..AdvertBody::default()
    };
    let advert = Advert::new(
        key.node_id(),
        catalog.map(str::to_string),
        vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        body,
        now,
        now.plus_ms(60_000),
        1,
    );
    advert.sign(key).unwrap().1
}

#[test]
#[ignore = "writes fuzz/seeds; run explicitly"]
fn write_fuzz_seeds() {
    let key = SecretKey::from_seed(&[7; 32]);
    let now = Timestamp(1_000_000);
    let clock = now.plus_ms(1).0.to_le_bytes();
    let direct = advert(&key, None, now);
    let member = advert(&key, Some("eu"), now);
    write(
        "advert_verify",
        "direct",
        &[&[0][..], &clock, &direct].concat(),
    );
    write(
        "advert_verify",
        "catalog",
        &[&[1][..], &clock, &member].concat(),
    );

    let eu: CatalogName = "eu".parse().unwrap();
    let record = |key: &[u8], value: &[u8]| {
        let len = u16::try_from(key.len()).unwrap().to_le_bytes();
        [&len[..], key, value].concat()
    };
    let akey = advert_key(&eu, &key.node_id());
    write("catalog_record", "advert", &record(akey.as_ref(), &member));
    let ckey = catalog_key(&eu, 7);
    write("catalog_record", "membership", &record(ckey.as_ref(), &[]));

    let req = canonical::to_vec(&Request::ListFlavors {
        selector: Selector::default(),
    })
    .unwrap();
    write("rear_codec", "request", &[&[0][..], &req].concat());
    let resp = canonical::to_vec(&Response::Error(RearError::new(
        ErrorCode::Malformed,
        "seed",
    )))
    .unwrap();
    write("rear_codec", "response", &[&[1][..], &resp].concat());
    write("rear_codec", "advert_query", &[2, 0xa0]);
    let mut reply = vec![3, 0xa1, 0x66];
    reply.extend_from_slice(b"advert");
    reply.push(0x59); // bytes, two-byte length
    reply.extend_from_slice(&u16::try_from(direct.len()).unwrap().to_be_bytes());
    reply.extend_from_slice(&direct);
    write("rear_codec", "advert_reply", &reply);

    // members_codec: the first byte picks query (even) or reply (odd).
    let query = |news: Vec<Vec<u8>>, known: Vec<[u8; 8]>| {
        let q = encode_query(&MembersQuery {
            catalog: "eu".into(),
            news,
            known,
        })
        .unwrap();
        [&[0][..], &q].concat()
    };
    write("members_codec", "query", &query(vec![], vec![]));
    write(
        "members_codec",
        "query_news",
        &query(vec![member.clone()], vec![]),
    );
    write(
        "members_codec",
        "query_known",
        &query(vec![member.clone()], vec![[1; 8], [2; 8]]),
    );
    let reply = |members: Vec<Vec<u8>>| {
        let r = encode_reply(&MembersReply { members }).unwrap();
        [&[1][..], &r].concat()
    };
    write("members_codec", "empty_reply", &reply(vec![]));
    write(
        "members_codec",
        "reply",
        &reply(vec![member.clone(), member]),
    );
}
