//! Membership gossip: `/fluidos/members/1`.
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
//! Wire (canonical CBOR, one request per substream as every fluidos protocol):
//! the request is `{"catalog": text}`, the reply `{"members": [bytes, …]}`
//! (each element an advert envelope exactly as stored in the catalog). A node
//! that is not in the catalog answers an empty list. Unknown fields are
//! ignored. The encoding and decoding functions are pure; [`MembersCodec`]
//! only moves their bytes over a stream.

use std::io;

use ciborium::Value;
use fluidos_contracts::canonical;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use crate::advert::MAX_ADVERT_BYTES;

/// The protocol id.
pub const MEMBERS_PROTOCOL: StreamProtocol = StreamProtocol::new("/fluidos/members/1");
/// Members asked at each refresh, per catalog.
pub const GOSSIP_FANOUT: usize = 2;
/// Adverts in one reply, at most.
pub const MAX_MEMBERS_PER_REPLY: usize = 16;
/// The largest request: a catalog name (≤ 64 bytes) in a map.
pub const MAX_MEMBERS_QUERY_BYTES: usize = 256;
/// The largest reply: the adverts, their CBOR heads and the map around them.
pub const MAX_MEMBERS_REPLY_BYTES: usize = MAX_MEMBERS_PER_REPLY * (MAX_ADVERT_BYTES + 8) + 64;

/// "Which members of `catalog` do you know?"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersQuery {
    /// The catalog's name.
    pub catalog: String,
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

/// Encodes a query.
pub fn encode_query(q: &MembersQuery) -> io::Result<Vec<u8>> {
    let doc = Value::Map(vec![(
        Value::Text("catalog".into()),
        Value::Text(q.catalog.clone()),
    )]);
    canonical::to_vec(&doc).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// Decodes a query.
pub fn decode_query(bytes: &[u8]) -> Result<MembersQuery, MembersError> {
    match field(map_of(bytes, MAX_MEMBERS_QUERY_BYTES)?, "catalog") {
        Some(Value::Text(catalog)) => Ok(MembersQuery { catalog }),
        Some(_) => Err(malformed("`catalog` is not text")),
        None => Err(malformed("no `catalog` field")),
    }
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
    if items.len() > MAX_MEMBERS_PER_REPLY {
        return Err(malformed(format!(
            "{} members, more than {MAX_MEMBERS_PER_REPLY}",
            items.len()
        )));
    }
    let members = items
        .into_iter()
        .map(|v| match v {
            Value::Bytes(b) if b.len() <= MAX_ADVERT_BYTES => Ok(b),
            Value::Bytes(b) => Err(MembersError::TooLarge {
                len: b.len(),
                max: MAX_ADVERT_BYTES,
            }),
            _ => Err(malformed("a member is not bytes")),
        })
        .collect::<Result<_, _>>()?;
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
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<MembersQuery> {
        let buf = read_bounded(io, MAX_MEMBERS_QUERY_BYTES).await?;
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
        _: &StreamProtocol,
        io: &mut T,
        q: MembersQuery,
    ) -> io::Result<()> {
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
        };
        assert_eq!(decode_query(&encode_query(&q).unwrap()).unwrap(), q);
        let r = MembersReply {
            members: vec![vec![1, 2, 3], vec![]],
        };
        assert_eq!(decode_reply(&encode_reply(&r).unwrap()).unwrap(), r);
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
            decode_query(&vec![0x40; MAX_MEMBERS_QUERY_BYTES + 1]),
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
}
