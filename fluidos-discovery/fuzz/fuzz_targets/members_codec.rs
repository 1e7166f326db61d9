//! `/fluidos/members/1` and `/2`, fed any bytes a peer may write: a query (with
//! or without news) or a reply decodes or is a typed error (never a panic);
//! what decodes re-encodes and decodes to itself, and neither the news of a
//! query nor a reply ever holds more than the protocol allows.
#![no_main]

use fluidos_discovery::advert::MAX_ADVERT_BYTES;
use fluidos_discovery::gossip::{
    MAX_KNOWN, MAX_MEMBERS_PER_REPLY, MAX_NEWS_PER_PUSH, decode_query, decode_reply, encode_query,
    encode_reply,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(q) = decode_query(bytes) {
            assert!(q.news.len() <= MAX_NEWS_PER_PUSH);
            assert!(q.news.iter().all(|m| m.len() <= MAX_ADVERT_BYTES));
            assert!(q.known.len() <= MAX_KNOWN);
            let again = encode_query(&q).expect("a decoded query encodes");
            assert_eq!(decode_query(&again).expect("and decodes"), q);
        }
    } else if let Ok(r) = decode_reply(bytes) {
        assert!(r.members.len() <= MAX_MEMBERS_PER_REPLY);
        assert!(r.members.iter().all(|m| m.len() <= MAX_ADVERT_BYTES));
        let again = encode_reply(&r).expect("a decoded reply encodes");
        assert_eq!(decode_reply(&again).expect("and decodes"), r);
    }
});
