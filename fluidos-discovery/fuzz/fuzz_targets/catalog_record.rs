//! A Kademlia record a catalog peer may store or return: its key is parsed as a
//! membership or advert key (never panics; what parses is exactly the canonical key of
//! what it names), and its value is checked as the advert that key names.
#![no_main]

use fluidos_contracts::Timestamp;
use fluidos_discovery::advert::{Expected, verify_advert};
use fluidos_discovery::catalog::{advert_key, catalog_key, parse_advert_key, parse_catalog_key};
use fluidos_discovery::libp2p::kad::RecordKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Two bytes of key length, the key, then the value.
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (key, value) = rest.split_at(len);
    let key = RecordKey::new(&key);
    if let Some((catalog, shard)) = parse_catalog_key(&key) {
        assert_eq!(catalog_key(&catalog, shard), key);
    }
    if let Some((catalog, node)) = parse_advert_key(&key) {
        assert_eq!(advert_key(&catalog, &node), key);
        let expected = Expected {
            node: Some(node),
            catalog: Some(catalog.as_str()),
        };
        if let Ok(advert) = verify_advert(value, &expected, Timestamp(1_000_000)) {
            assert_eq!(advert.node, node);
            assert_eq!(advert.catalog.as_deref(), Some(catalog.as_str()));
        }
    }
});
