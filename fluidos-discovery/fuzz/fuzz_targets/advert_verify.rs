//! Advert bytes from anyone (a direct advert reply, an mDNS-found peer's answer): checking
//! them never panics, and whatever passes names the catalog that was expected and has not
//! expired at `now`.
#![no_main]

use fluidos_contracts::Timestamp;
use fluidos_discovery::advert::{Expected, verify_advert};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the expectation, the next eight the clock.
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Some((clock, bytes)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let now = Timestamp(u64::from_le_bytes(*clock));
    let catalog = (which & 1 == 1).then_some("eu");
    let expected = Expected {
        node: None,
        catalog,
    };
    if let Ok(advert) = verify_advert(bytes, &expected, now) {
        assert_eq!(advert.catalog.as_deref(), catalog);
        assert!(advert.expires_at > now);
        assert!(!advert.is_withdrawal());
    }
});
