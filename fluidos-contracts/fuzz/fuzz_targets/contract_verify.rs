//! Contract and flavor bytes from anyone: decoding and verifying never panic, and a
//! forgery never verifies (random input cannot carry a valid ed25519 signature).
#![no_main]

use fluidos_contracts::{Flavor, Signed, SignedContract, canonical};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(contract) = SignedContract::from_bytes(data) {
        assert!(contract.verify_offer().is_err());
        assert!(contract.verify().is_err());
    }
    if let Ok(flavor) = canonical::from_slice::<Signed<Flavor>>(data) {
        assert!(flavor.verify().is_err());
    }
});
