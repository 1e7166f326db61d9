//! Any bytes a peer may send, decoded as each wire type: decoding never panics, every
//! value that decodes re-encodes to canonical bytes (the same bytes as the reference
//! `Value`-tree encoder) that decode strictly to the same value, and the strict
//! decoder accepts the input exactly when it is that encoding.
#![no_main]

use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{ContractTerms, Flavor, Selector, SignedContract, canonical};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(value) = canonical::from_slice_lenient_limited::<T>(data, canonical::MAX_MESSAGE_BYTES)
    else {
        assert!(canonical::from_slice::<T>(data).is_err());
        return;
    };
    let bytes = canonical::to_vec(&value).expect("a decoded value encodes");
    // The direct encoder writes exactly what the `Value`-tree encoder it replaced wrote.
    assert_eq!(
        bytes,
        canonical::to_vec_reference(&value).expect("reference encodes")
    );
    let back: T = canonical::from_slice(&bytes).expect("canonical bytes decode strictly");
    assert_eq!(back, value);
    assert_eq!(canonical::from_slice::<T>(data).is_ok(), bytes == data);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => check::<Request>(data),
        1 => check::<Response>(data),
        2 => check::<ContractTerms>(data),
        3 => check::<SignedContract>(data),
        4 => check::<Flavor>(data),
        _ => check::<Selector>(data),
    }
});
