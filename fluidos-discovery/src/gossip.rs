//! Membership gossip: `/fluidos/members/1` and `/2`.
//!
//! A catalog's membership is otherwise only pulled from the DHT: each node
//! searches the catalog's shard keys and fetches each unknown member's advert,
//! and a member's provider record lives only at the 20 nodes closest to its
//! shard key. In a catalog of more than a few dozen nodes the last members are
//! found only by later periodic searches. Gossip closes that gap: at every
//! refresh each node asks [`GOSSIP_FANOUT`] members of each of its catalogs,
//! in turn, for the catalog adverts they hold ([`MAX_MEMBERS_PER_REPLY`] at
//! most, a different slice each time), so a new member spreads epidemically,
//! in a few refreshes whatever the catalog's size.
//!
//! Nothing is taken on trust: every advert in a reply is signed by its own node
//! and bound to the catalog, and is verified (signature, catalog, validity) and
//! filtered by the incoming policy exactly as one read from the DHT. Withdrawals
//! seen are remembered, so a node that left is not brought back by peers that
//! still remember it; a responder only hands out members the catalog confirmed
//! lately. A gossiping peer can withhold members or relay stale-but-valid
//! adverts; it cannot forge one.
//!
//! The pull alone takes a refresh per hop; membership changes are also pushed
//! (see [`crate::rumor`]): a request may carry news, adverts the asker just
//! learned, which the responder takes exactly as reply elements and forwards
//! in turn if they were new to it.
//!
//! Wire (canonical CBOR, one request per substream as every fluidos protocol):
//! the request is `{"catalog": text}` or, on `/fluidos/members/2` only,
//! `{"catalog": text, "news": [bytes, …]}`; the reply `{"members": [bytes, …]}`
//! (each element an advert envelope exactly as stored in the catalog). A node
//! that is not in the catalog answers an empty list and ignores the news.
//! Unknown fields are ignored. Both versions are offered, `/2` first: a peer
//! that speaks only `/1` (whose requests are bounded to 256 bytes, too small
//! for news) gets the request without its news. The encoding and decoding
//! functions are pure; [`MembersCodec`] only moves their bytes over a stream.

use std::io;

use ciborium::Value;
use fluidos_contracts::canonical;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use crate::advert::MAX_ADVERT_BYTES;

/// The protocol id.
pub const MEMBERS_PROTOCOL: StreamProtocol = StreamProtocol::new("/fluidos/members/1");
/// The protocol id of requests that may carry news.
pub const MEMBERS_PUSH_PROTOCOL: StreamProtocol = StreamProtocol::new("/fluidos/members/2");
/// Members asked at each refresh, per catalog.
pub const GOSSIP_FANOUT: usize = 2;
/// Adverts in one reply, at most.
pub const MAX_MEMBERS_PER_REPLY: usize = 16;
/// The largest `/1` request: a catalog name (≤ 64 bytes) in a map.
pub const MAX_MEMBERS_QUERY_BYTES: usize = 256;
/// News (adverts) in one request, at most.
pub const MAX_NEWS_PER_PUSH: usize = 16;
/// Bytes a digest of known members carries per member (and version).
pub const KNOWN_PREFIX_BYTES: usize = 8;
/// Members a digest names at most (an asker that knows more sends this many).
pub const MAX_KNOWN: usize = 1024;
/// The largest `/2` request: a catalog name, the news and the digest.
pub const MAX_MEMBERS_PUSH_BYTES: usize = MAX_MEMBERS_QUERY_BYTES
    + MAX_NEWS_PER_PUSH * (MAX_ADVERT_BYTES + 8)
    + MAX_KNOWN * KNOWN_PREFIX_BYTES
    + 16;
/// The largest reply: the adverts, their CBOR heads and the map around them.
pub const MAX_MEMBERS_REPLY_BYTES: usize = MAX_MEMBERS_PER_REPLY * (MAX_ADVERT_BYTES + 8) + 64;

/// "Which members of `catalog` do you know?", with news of members the asker
/// just learned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembersQuery {
    /// The catalog's name.
    pub catalog: String,
    /// Advert envelopes, each at most [`MAX_ADVERT_BYTES`], at most
    /// [`MAX_NEWS_PER_PUSH`]; sent on `/fluidos/members/2` only.
    pub news: Vec<Vec<u8>>,
    /// The adverts the asker holds already, one [`known_entry`] each (at most
    /// [`MAX_KNOWN`]), so that the reply brings the members it lacks and the
    /// adverts it holds in another version; sent on `/fluidos/members/2` only.
    pub known: Vec<[u8; KNOWN_PREFIX_BYTES]>,
}

/// The digest entry of the advert of `node` numbered `seq`: the first
/// [`KNOWN_PREFIX_BYTES`] bytes of SHA-256(`"fluidos-members-known-v1"` ‖ the
/// 32-byte node id ‖ `seq` as 8 bytes big-endian).
pub fn known_entry(node: &fluidos_contracts::NodeId, seq: u64) -> [u8; KNOWN_PREFIX_BYTES] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"fluidos-members-known-v1");
    h.update(node.as_bytes());
    h.update(seq.to_be_bytes());
    let d: [u8; 32] = h.finalize().into();
    let mut p = [0u8; KNOWN_PREFIX_BYTES];
    p.copy_from_slice(&d[..KNOWN_PREFIX_BYTES]);
    p
}

/// Signed catalog adverts of members, as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembersReply {
    /// Advert envelopes, each at most [`MAX_ADVERT_BYTES`].
    pub members: Vec<Vec<u8>>,
}

/// Why gossip bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembersError {
    /// Larger than the protocol allows.
    #[error("members message of {len} bytes exceeds {max} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not the message's shape.
    #[error("members message: {0}")]
    Malformed(String),
}

fn malformed(msg: impl Into<String>) -> MembersError {
    MembersError::Malformed(msg.into())
}

fn map_of(bytes: &[u8], max: usize) -> Result<Vec<(Value, Value)>, MembersError> {
    if bytes.len() > max {
        return Err(MembersError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    match canonical::from_slice_lenient_limited::<Value>(bytes, max) {
        Ok(Value::Map(entries)) => Ok(entries),
        Ok(_) => Err(malformed("not a CBOR map")),
        Err(e) => Err(malformed(e.to_string())),
    }
}

fn field(entries: Vec<(Value, Value)>, name: &str) -> Option<Value> {
    entries
        .into_iter()
        .find(|(k, _)| *k == Value::Text(name.into()))
        .map(|(_, v)| v)
}

/// Encodes a query (at most [`MAX_NEWS_PER_PUSH`] news are sent; none, the
/// field left out, when there is none: then the bytes are a `/1` request).
pub fn encode_query(q: &MembersQuery) -> io::Result<Vec<u8>> {
    let mut entries = vec![(
        Value::Text("catalog".into()),
        Value::Text(q.catalog.clone()),
    )];
    if !q.news.is_empty() {
        let news = q
            .news
            .iter()
            .take(MAX_NEWS_PER_PUSH)
            .map(|b| Value::Bytes(b.clone()))
            .collect();
        entries.push((Value::Text("news".into()), Value::Array(news)));
    }
    if !q.known.is_empty() {
        let known: Vec<u8> = q.known.iter().take(MAX_KNOWN).flatten().copied().collect();
        entries.push((Value::Text("known".into()), Value::Bytes(known)));
    }
    canonical::to_vec(&Value::Map(entries))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Decodes a query: bounded in size ([`MAX_MEMBERS_PUSH_BYTES`]; the codec
/// bounds a `/1` request to [`MAX_MEMBERS_QUERY_BYTES`] before), the news
/// optional and checked as reply elements (verifying them is the caller's).
pub fn decode_query(bytes: &[u8]) -> Result<MembersQuery, MembersError> {
    let entries = map_of(bytes, MAX_MEMBERS_PUSH_BYTES)?;
    let catalog = match field(entries.clone(), "catalog") {
        Some(Value::Text(catalog)) => catalog,
        Some(_) => return Err(malformed("`catalog` is not text")),
        None => return Err(malformed("no `catalog` field")),
    };
    let news = match field(entries.clone(), "news") {
        None => Vec::new(),
        Some(Value::Array(items)) => adverts(items, MAX_NEWS_PER_PUSH, "news")?,
        Some(_) => return Err(malformed("`news` is not an array")),
    };
    let known = match field(entries, "known") {
        None => Vec::new(),
        Some(Value::Bytes(b)) if b.len() % KNOWN_PREFIX_BYTES != 0 => {
            return Err(malformed(format!(
                "`known` is {} bytes, not a multiple of {KNOWN_PREFIX_BYTES}",
                b.len()
            )));
        }
        Some(Value::Bytes(b)) if b.len() > MAX_KNOWN * KNOWN_PREFIX_BYTES => {
            return Err(malformed(format!(
                "`known` names {} members, more than {MAX_KNOWN}",
                b.len() / KNOWN_PREFIX_BYTES
            )));
        }
        Some(Value::Bytes(b)) => b
            .chunks_exact(KNOWN_PREFIX_BYTES)
            .map(|c| {
                let mut p = [0u8; KNOWN_PREFIX_BYTES];
                p.copy_from_slice(c);
                p
            })
            .collect(),
        Some(_) => return Err(malformed("`known` is not bytes")),
    };
    Ok(MembersQuery {
        catalog,
        news,
        known,
    })
}

/// Checks an array of advert envelopes: at most `max`, each bytes of at most
/// [`MAX_ADVERT_BYTES`].
fn adverts(items: Vec<Value>, max: usize, what: &str) -> Result<Vec<Vec<u8>>, MembersError> {
    if items.len() > max {
        return Err(malformed(format!(
            "{} {what}, more than {max}",
            items.len()
        )));
    }
    items
        .into_iter()
        .map(|v| match v {
            Value::Bytes(b) if b.len() <= MAX_ADVERT_BYTES => Ok(b),
            Value::Bytes(b) => Err(MembersError::TooLarge {
                len: b.len(),
                max: MAX_ADVERT_BYTES,
            }),
            _ => Err(malformed(format!("an element of `{what}` is not bytes"))),
        })
        .collect()
}

/// Encodes a reply (at most [`MAX_MEMBERS_PER_REPLY`] adverts are sent).
pub fn encode_reply(r: &MembersReply) -> io::Result<Vec<u8>> {
    let members = r
        .members
        .iter()
        .take(MAX_MEMBERS_PER_REPLY)
        .map(|b| Value::Bytes(b.clone()))
        .collect();
    let doc = Value::Map(vec![(Value::Text("members".into()), Value::Array(members))]);
    canonical::to_vec(&doc).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Decodes a reply: bounded in size and count, every element bytes of at most
/// [`MAX_ADVERT_BYTES`] (verifying them is the caller's).
pub fn decode_reply(bytes: &[u8]) -> Result<MembersReply, MembersError> {
    let items = match field(map_of(bytes, MAX_MEMBERS_REPLY_BYTES)?, "members") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(malformed("`members` is not an array")),
        None => return Err(malformed("no `members` field")),
    };
    let members = adverts(items, MAX_MEMBERS_PER_REPLY, "members")?;
    Ok(MembersReply { members })
}

async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    Ok(buf)
}

fn io_err(e: MembersError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn write_and_close<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.close().await
}

/// The codec of `/fluidos/members/1`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MembersCodec;

impl request_response::Codec for MembersCodec {
    type Protocol = StreamProtocol;
    type Request = MembersQuery;
    type Response = MembersReply;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<MembersQuery> {
        let max = if *protocol == MEMBERS_PUSH_PROTOCOL {
            MAX_MEMBERS_PUSH_BYTES
        } else {
            MAX_MEMBERS_QUERY_BYTES
        };
        let buf = read_bounded(io, max).await?;
        decode_query(&buf).map_err(io_err)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<MembersReply> {
        let buf = read_bounded(io, MAX_MEMBERS_REPLY_BYTES).await?;
        decode_reply(&buf).map_err(io_err)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
        mut q: MembersQuery,
    ) -> io::Result<()> {
        if *protocol != MEMBERS_PUSH_PROTOCOL {
            // A `/1` peer: the pull only.
            q.news.clear();
            q.known.clear();
        }
        write_and_close(io, &encode_query(&q)?).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: MembersReply,
    ) -> io::Result<()> {
        write_and_close(io, &encode_reply(&r)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_reply_round_trip() {
        let q = MembersQuery {
            catalog: "sites".into(),
            news: Vec::new(),
            ..Default::default()
        };
        let bytes = encode_query(&q).unwrap();
        assert_eq!(decode_query(&bytes).unwrap(), q);
        // Without news, exactly a `/1` request.
        let v1 = canonical::to_vec(&Value::Map(vec![(
            Value::Text("catalog".into()),
            Value::Text("sites".into()),
        )]))
        .unwrap();
        assert_eq!(bytes, v1);
        let q = MembersQuery {
            catalog: "sites".into(),
            news: vec![vec![1; MAX_ADVERT_BYTES], vec![2]],
            ..Default::default()
        };
        assert_eq!(decode_query(&encode_query(&q).unwrap()).unwrap(), q);
        let r = MembersReply {
            members: vec![vec![1, 2, 3], vec![]],
        };
        assert_eq!(decode_reply(&encode_reply(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn the_digest_of_known_members_round_trips_and_is_bounded() {
        let q = MembersQuery {
            catalog: "sites".into(),
            news: Vec::new(),
            known: vec![[1; KNOWN_PREFIX_BYTES], [2; KNOWN_PREFIX_BYTES]],
        };
        assert_eq!(decode_query(&encode_query(&q).unwrap()).unwrap(), q);
        // Never more than MAX_KNOWN sent.
        let many = MembersQuery {
            known: vec![[3; KNOWN_PREFIX_BYTES]; MAX_KNOWN + 5],
            ..q.clone()
        };
        let back = decode_query(&encode_query(&many).unwrap()).unwrap();
        assert_eq!(back.known.len(), MAX_KNOWN);
        assert!(encode_query(&many).unwrap().len() <= MAX_MEMBERS_PUSH_BYTES);
        // A digest that is not whole prefixes, too long, or not bytes.
        let query = |known: Value| {
            canonical::to_vec(&Value::Map(vec![
                (Value::Text("catalog".into()), Value::Text("sites".into())),
                (Value::Text("known".into()), known),
            ]))
            .unwrap()
        };
        for bad in [
            Value::Bytes(vec![0; KNOWN_PREFIX_BYTES + 1]),
            Value::Bytes(vec![0; (MAX_KNOWN + 1) * KNOWN_PREFIX_BYTES]),
            Value::Text("x".into()),
        ] {
            assert!(
                matches!(
                    decode_query(&query(bad.clone())),
                    Err(MembersError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        assert!(matches!(
            decode_query(&[0x01]),
            Err(MembersError::Malformed(_))
        ));
        assert!(matches!(
            decode_query(&[0xa0]),
            Err(MembersError::Malformed(_))
        ));
        assert!(matches!(
            decode_query(&vec![0x40; MAX_MEMBERS_PUSH_BYTES + 1]),
            Err(MembersError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_reply(&vec![0x40; MAX_MEMBERS_REPLY_BYTES + 1]),
            Err(MembersError::TooLarge { .. })
        ));
        // More members than allowed.
        let many = Value::Map(vec![(
            Value::Text("members".into()),
            Value::Array(vec![Value::Bytes(vec![0]); MAX_MEMBERS_PER_REPLY + 1]),
        )]);
        let bytes = canonical::to_vec(&many).unwrap();
        assert!(matches!(
            decode_reply(&bytes),
            Err(MembersError::Malformed(_))
        ));
        // A member that is not bytes, or too large to be an advert.
        let text = Value::Map(vec![(
            Value::Text("members".into()),
            Value::Array(vec![Value::Text("x".into())]),
        )]);
        assert!(decode_reply(&canonical::to_vec(&text).unwrap()).is_err());
        let big = Value::Map(vec![(
            Value::Text("members".into()),
            Value::Array(vec![Value::Bytes(vec![0; MAX_ADVERT_BYTES + 1])]),
        )]);
        assert!(matches!(
            decode_reply(&canonical::to_vec(&big).unwrap()),
            Err(MembersError::TooLarge { .. })
        ));
        // encode_reply never sends more than the bound.
        let r = MembersReply {
            members: vec![vec![7]; MAX_MEMBERS_PER_REPLY + 5],
        };
        assert_eq!(
            decode_reply(&encode_reply(&r).unwrap())
                .unwrap()
                .members
                .len(),
            MAX_MEMBERS_PER_REPLY
        );
    }

    fn query_with(news: Value) -> Vec<u8> {
        canonical::to_vec(&Value::Map(vec![
            (Value::Text("catalog".into()), Value::Text("lab".into())),
            (Value::Text("news".into()), news),
        ]))
        .unwrap()
    }

    #[test]
    fn news_is_bounded_like_reply_elements() {
        // An old request (no news) and unknown fields still decode.
        let old = canonical::to_vec(&Value::Map(vec![
            (Value::Text("catalog".into()), Value::Text("lab".into())),
            (Value::Text("later".into()), Value::Integer(1.into())),
        ]))
        .unwrap();
        assert_eq!(
            decode_query(&old).unwrap(),
            MembersQuery {
                catalog: "lab".into(),
                news: vec![],
                ..Default::default()
            }
        );
        // The most news allowed, each the largest advert: within the bound.
        let full = query_with(Value::Array(vec![
            Value::Bytes(vec![0; MAX_ADVERT_BYTES]);
            MAX_NEWS_PER_PUSH
        ]));
        assert!(full.len() <= MAX_MEMBERS_PUSH_BYTES);
        assert_eq!(decode_query(&full).unwrap().news.len(), MAX_NEWS_PER_PUSH);
        // One more element, an oversized one, or one that is not bytes: refused.
        let many = query_with(Value::Array(vec![
            Value::Bytes(vec![0]);
            MAX_NEWS_PER_PUSH + 1
        ]));
        assert!(matches!(
            decode_query(&many),
            Err(MembersError::Malformed(_))
        ));
        let big = query_with(Value::Array(vec![Value::Bytes(vec![
            0;
            MAX_ADVERT_BYTES + 1
        ])]));
        assert!(matches!(
            decode_query(&big),
            Err(MembersError::TooLarge { .. })
        ));
        let text = query_with(Value::Array(vec![Value::Text("x".into())]));
        assert!(matches!(
            decode_query(&text),
            Err(MembersError::Malformed(_))
        ));
        let not_array = query_with(Value::Bytes(vec![1]));
        assert!(matches!(
            decode_query(&not_array),
            Err(MembersError::Malformed(_))
        ));
        // encode_query never sends more than the bound.
        let q = MembersQuery {
            catalog: "lab".into(),
            news: vec![vec![7]; MAX_NEWS_PER_PUSH + 3],
            ..Default::default()
        };
        assert_eq!(
            decode_query(&encode_query(&q).unwrap()).unwrap().news.len(),
            MAX_NEWS_PER_PUSH
        );
    }
}
