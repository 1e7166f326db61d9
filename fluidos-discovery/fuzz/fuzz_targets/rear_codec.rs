//! The stream framing of both request-response protocols, fed any bytes a peer may
//! write: the REAR codec reads a request (always a request or its typed error, never an
//! I/O error or a panic; a request that decodes re-encodes and decodes to itself) and a
//! response, and the advert codec reads a query and a reply.
#![no_main]

use fluidos_contracts::canonical;
use fluidos_discovery::codec::{ADVERT_PROTOCOL, AdvertCodec, Inbound, REAR_PROTOCOL, RearCodec};
use fluidos_discovery::libp2p::request_response::Codec;
use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let mut io = Cursor::new(bytes.to_vec());
    block_on(async {
        match which % 4 {
            0 => {
                let got = RearCodec
                    .read_request(&REAR_PROTOCOL, &mut io)
                    .await
                    .expect("a REAR request is read into a request or its typed error");
                if let Inbound::Ok(req) = got {
                    let again = canonical::to_vec(&req).expect("a decoded request encodes");
                    let back = canonical::from_slice(&again).expect("canonical bytes decode");
                    assert_eq!(req, back);
                }
            }
            1 => {
                let _ = RearCodec.read_response(&REAR_PROTOCOL, &mut io).await;
            }
            2 => {
                let _ = AdvertCodec.read_request(&ADVERT_PROTOCOL, &mut io).await;
            }
            _ => {
                let _ = AdvertCodec.read_response(&ADVERT_PROTOCOL, &mut io).await;
            }
        }
    });
});
