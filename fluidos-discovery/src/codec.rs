//! The request-response codecs: REAR (`/fluidos/rear/1`) and direct adverts
//! (`/fluidos/advert/1`). One request per substream: the requester writes one CBOR
//! document and closes its write side; the responder writes one CBOR document and
//! closes. Everything is encoded with [`fluidos_contracts::canonical`], so one CBOR
//! implementation defines every byte fluidos sends.
//!
//! Two layers: the framing ([`decode_request`], [`encode_response`]) is pure, bytes
//! in and bytes out; the [`RearCodec`] and [`AdvertCodec`] impls of libp2p's
//! `Codec` do the stream I/O around it (a bounded read to the end of the substream,
//! a write and close), and are the only part that touches a stream.

use std::io;

use ciborium::Value;
use fluidos_contracts::canonical;
use fluidos_contracts::rear::{
    ErrorCode, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, RearError, Request, Response,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use crate::advert::MAX_ADVERT_BYTES;

/// The REAR protocol id.
pub const REAR_PROTOCOL: StreamProtocol = StreamProtocol::new(fluidos_contracts::rear::PROTOCOL);
/// The direct-advert protocol id.
pub const ADVERT_PROTOCOL: StreamProtocol = StreamProtocol::new("/fluidos/advert/1");

/// How much of an oversized request is read and discarded so that the sender can
/// finish writing and read the typed `too_large` answer.
const DRAIN_LIMIT: u64 = 1024 * 1024;
/// The largest direct-advert request (an empty CBOR map today).
const MAX_ADVERT_QUERY_BYTES: usize = 1024;
/// The largest direct-advert reply: the advert plus the reply map around it.
const MAX_ADVERT_REPLY_BYTES: usize = MAX_ADVERT_BYTES + 64;

/// A REAR request as the codec reads it: either a request, or the typed error its
/// bytes deserve. The event loop answers `Bad` ones itself, so a malformed or
/// oversized request gets a `Response::Error` instead of a dropped stream.
// One value per request, moved once into the event loop: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A well-formed request.
    Ok(Request),
    /// The bytes were not a request.
    Bad(RearError),
}

/// The REAR codec on ciborium.
#[derive(Debug, Clone, Copy, Default)]
pub struct RearCodec;

async fn read_limited<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    Ok(buf)
}

async fn write_all_and_close<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Decodes a REAR request, mapping every failure to its typed error.
pub fn decode_request(bytes: &[u8]) -> Inbound {
    match canonical::from_slice_lenient_limited::<Request>(bytes, MAX_REQUEST_BYTES) {
        Ok(r) => Inbound::Ok(r),
        Err(canonical::DecodeError::TooLarge { len, max }) => Inbound::Bad(RearError::new(
            ErrorCode::TooLarge,
            format!("request of {len} bytes exceeds {max} bytes"),
        )),
        Err(e) => Inbound::Bad(RearError::new(ErrorCode::Malformed, e.to_string())),
    }
}

/// Encodes a REAR response, replacing one that is too large by a typed error.
pub fn encode_response(resp: &Response) -> io::Result<Vec<u8>> {
    let bytes = canonical::to_vec(resp).map_err(|e| invalid(e.to_string()))?;
    if bytes.len() <= MAX_RESPONSE_BYTES {
        return Ok(bytes);
    }
    let err = Response::Error(RearError::new(
        ErrorCode::TooLarge,
        format!(
            "response of {} bytes exceeds {MAX_RESPONSE_BYTES} bytes",
            bytes.len()
        ),
    ));
    canonical::to_vec(&err).map_err(|e| invalid(e.to_string()))
}

impl request_response::Codec for RearCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Inbound> {
        let buf = read_limited(io, MAX_REQUEST_BYTES).await?;
        if buf.len() > MAX_REQUEST_BYTES {
            // Let the sender finish its write (up to a bound) so it reads our answer.
            let drained = futures::io::copy(&mut io.take(DRAIN_LIMIT), &mut futures::io::sink())
                .await
                .unwrap_or(0);
            return Ok(Inbound::Bad(RearError::new(
                ErrorCode::TooLarge,
                format!(
                    "request of at least {} bytes exceeds {MAX_REQUEST_BYTES} bytes",
                    buf.len() as u64 + drained
                ),
            )));
        }
        Ok(decode_request(&buf))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Response> {
        let buf = read_limited(io, MAX_RESPONSE_BYTES).await?;
        canonical::from_slice_lenient_limited::<Response>(&buf, MAX_RESPONSE_BYTES)
            .map_err(|e| invalid(format!("REAR response: {e}")))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Inbound,
    ) -> io::Result<()> {
        // Encode before the first await: the future must not hold `&Request`.
        let bytes = match &req {
            Inbound::Ok(r) => canonical::to_vec(r).map_err(|e| invalid(e.to_string()))?,
            Inbound::Bad(_) => return Err(invalid("refusing to send a Bad request")),
        };
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(invalid(format!(
                "request of {} bytes is too large",
                bytes.len()
            )));
        }
        write_all_and_close(io, &bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Response,
    ) -> io::Result<()> {
        let bytes = encode_response(&resp)?;
        write_all_and_close(io, &bytes).await
    }
}

/// A direct-advert query: "send me your advert". An empty CBOR map on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdvertQuery;

/// A direct-advert reply: the canonical envelope bytes of the responder's advert, or
/// none when it does not hand adverts out (outgoing policy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdvertReply(pub Option<Vec<u8>>);

/// The direct-advert codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdvertCodec;

/// Encodes a reply as `{"advert": bytes / null}`.
pub(crate) fn encode_reply(reply: &AdvertReply) -> io::Result<Vec<u8>> {
    let advert = reply.0.clone().map(Value::Bytes).unwrap_or(Value::Null);
    let doc = Value::Map(vec![(Value::Text("advert".into()), advert)]);
    canonical::to_vec(&doc).map_err(|e| invalid(e.to_string()))
}

/// Decodes a reply.
pub(crate) fn decode_reply(bytes: &[u8]) -> io::Result<AdvertReply> {
    let doc: Value = canonical::from_slice_lenient_limited(bytes, MAX_ADVERT_REPLY_BYTES)
        .map_err(|e| invalid(format!("advert reply: {e}")))?;
    let Value::Map(entries) = doc else {
        return Err(invalid("advert reply is not a map"));
    };
    for (k, v) in entries {
        if k == Value::Text("advert".into()) {
            return match v {
                Value::Bytes(b) => Ok(AdvertReply(Some(b))),
                Value::Null => Ok(AdvertReply(None)),
                _ => Err(invalid("advert reply: `advert` is neither bytes nor null")),
            };
        }
    }
    Err(invalid("advert reply has no `advert` field"))
}

impl request_response::Codec for AdvertCodec {
    type Protocol = StreamProtocol;
    type Request = AdvertQuery;
    type Response = AdvertReply;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<AdvertQuery> {
        let buf = read_limited(io, MAX_ADVERT_QUERY_BYTES).await?;
        // Unknown fields are ignored, so later versions may add some.
        match canonical::from_slice_lenient_limited::<Value>(&buf, MAX_ADVERT_QUERY_BYTES) {
            Ok(Value::Map(_)) => Ok(AdvertQuery),
            _ => Err(invalid("advert query is not a CBOR map")),
        }
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<AdvertReply> {
        let buf = read_limited(io, MAX_ADVERT_REPLY_BYTES).await?;
        decode_reply(&buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        _: AdvertQuery,
    ) -> io::Result<()> {
        write_all_and_close(io, &[0xa0]).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        reply: AdvertReply,
    ) -> io::Result<()> {
        let bytes = encode_reply(&reply)?;
        write_all_and_close(io, &bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_contracts::Selector;

    #[test]
    fn requests_decode_or_get_typed_errors() {
        let req = Request::ListFlavors {
            selector: Selector::default(),
        };
        let bytes = canonical::to_vec(&req).unwrap();
        assert_eq!(decode_request(&bytes), Inbound::Ok(req));
        let Inbound::Bad(e) = decode_request(&[0xff, 0x00]) else {
            panic!("garbage decoded")
        };
        assert_eq!(e.code, ErrorCode::Malformed);
        let Inbound::Bad(e) = decode_request(&vec![0u8; MAX_REQUEST_BYTES + 1]) else {
            panic!("oversized decoded")
        };
        assert_eq!(e.code, ErrorCode::TooLarge);
    }

    #[test]
    fn oversized_responses_become_typed_errors() {
        let huge = Response::Error(RearError::new(
            ErrorCode::Malformed,
            "x".repeat(MAX_RESPONSE_BYTES),
        ));
        let bytes = encode_response(&huge).unwrap();
        let back: Response = canonical::from_slice(&bytes).unwrap();
        assert!(matches!(
            back,
            Response::Error(RearError {
                code: ErrorCode::TooLarge,
                ..
            })
        ));
    }

    #[test]
    fn advert_replies_round_trip_and_garbage_is_refused() {
        for r in [AdvertReply(None), AdvertReply(Some(vec![1, 2, 3]))] {
            assert_eq!(decode_reply(&encode_reply(&r).unwrap()).unwrap(), r);
        }
        assert!(decode_reply(&[0xa0]).is_err());
        assert!(decode_reply(&[0x01]).is_err());
        assert!(decode_reply(&vec![0x40; MAX_ADVERT_REPLY_BYTES + 1]).is_err());
    }

    #[tokio::test]
    async fn rear_codec_over_a_pipe() {
        use request_response::Codec;
        let req = Request::ListFlavors {
            selector: Selector::default(),
        };
        let mut wire = futures::io::Cursor::new(Vec::new());
        RearCodec
            .write_request(&REAR_PROTOCOL, &mut wire, Inbound::Ok(req.clone()))
            .await
            .unwrap();
        let mut read = futures::io::Cursor::new(wire.into_inner());
        let got = RearCodec
            .read_request(&REAR_PROTOCOL, &mut read)
            .await
            .unwrap();
        assert_eq!(got, Inbound::Ok(req));
        // Oversized input is read, drained and answered, not an I/O error.
        let mut big = futures::io::Cursor::new(vec![0u8; MAX_REQUEST_BYTES + 10]);
        let got = RearCodec
            .read_request(&REAR_PROTOCOL, &mut big)
            .await
            .unwrap();
        assert!(matches!(
            got,
            Inbound::Bad(RearError {
                code: ErrorCode::TooLarge,
                ..
            })
        ));
    }
}
