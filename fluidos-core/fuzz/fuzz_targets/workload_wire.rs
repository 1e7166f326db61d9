//! `/fluidos/workload/1` bytes from anyone: a request decodes into a request or the
//! typed refusal it deserves (`malformed` or `too_large`, never a panic), and what
//! decodes re-encodes and decodes to itself; the same for a response.
#![no_main]

use fluidos_core::offload::wire::{
    WorkloadErrorCode, WorkloadResponse, decode_request, decode_response, encode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        match decode_request(bytes) {
            Ok(req) => assert_eq!(decode_request(&encode(&req)), Ok(req)),
            Err(WorkloadResponse::Error { code, .. }) => assert!(
                matches!(
                    code,
                    WorkloadErrorCode::Malformed | WorkloadErrorCode::TooLarge
                ),
                "a bad request is refused as malformed or too large, not {code:?}"
            ),
            Err(other) => panic!("a bad request answered with {other:?}"),
        }
    } else if let Ok(resp) = decode_response(bytes) {
        assert_eq!(decode_response(&encode(&resp)).ok(), Some(resp));
    }
});
