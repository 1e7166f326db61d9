//! Canonical CBOR: the one encoding that defines every byte fluidos signs and sends.
//!
//! [`to_vec`] drives a serde `Serializer` (in `ser.rs`; the key order is in
//! `order.rs`) that writes canonical CBOR straight into one output buffer, without
//! building an intermediate value tree:
//!
//! - every head (integer, length, tag) takes its shortest form, and every length is
//!   definite: a collection whose length serde does not announce, or announces
//!   wrongly, gets its head rewritten once the real count is known;
//! - the entries of a map or struct are written in serde order, their byte ranges
//!   noted, then sorted (stably) by the deterministic key order of RFC 8949
//!   §4.2.3, shorter encoded key first, then bytewise (with the exceptions below),
//!   and moved into place through one scratch buffer shared by every map. Ties
//!   keep serde order: a duplicate key is written twice, as before.
//!
//! The bytes are exactly those of the previous path, which serialised into a
//! [`ciborium::Value`] tree, sorted each map with `ciborium::value::CanonicalValue`
//! and wrote the tree with ciborium. That path is kept as the test oracle
//! ([`to_vec_reference`]), and `ser.rs` reproduces even its quirks: integer keys
//! and tag keys compare the way `CanonicalValue` compares them (not always
//! bytewise), `i128`/`u128` outside 64 bits become bignum tags, floats take the
//! shortest lossless width, and ciborium's `tag` wrappers are honoured. The wire
//! types of this crate only have text keys (struct fields, labels), whose order is
//! exactly RFC 8949's.
//!
//! Decoding is strict: bytes that are not exactly the canonical encoding of the
//! value they decode to are refused (the value is re-encoded and compared), so one
//! value has exactly one signed form and signatures cannot be malleated.

mod order;
mod ser;

use ciborium::value::{CanonicalValue, Value};
use serde::{Serialize, de::DeserializeOwned};

/// The largest CBOR document fluidos decodes from a peer, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Why bytes could not be turned into a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the limit the caller allows.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not CBOR of the expected shape.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// The bytes decode, but are not the canonical encoding of what they decode to.
    #[error("CBOR is not in canonical form")]
    NonCanonical,
}

/// Why a value could not be encoded (only values that serde cannot represent in CBOR).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode value as CBOR: {0}")]
pub struct EncodeError(String);

/// Encodes `value` as canonical CBOR.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    ser::to_vec(value, 512).map_err(|e| EncodeError(e.to_string()))
}

/// The previous encoder, kept as the oracle [`to_vec`] is tested against: serialise
/// into a [`ciborium::Value`] tree, sort every map with
/// [`CanonicalValue`], write the tree with ciborium. Slow; not for production use.
#[doc(hidden)]
pub fn to_vec_reference<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let tree = Value::serialized(value).map_err(|e| EncodeError(e.to_string()))?;
    let tree = canonicalize(tree);
    let mut out = Vec::with_capacity(128);
    ciborium::into_writer(&tree, &mut out).map_err(|e| EncodeError(e.to_string()))?;
    Ok(out)
}

/// Decodes canonical CBOR of at most [`MAX_MESSAGE_BYTES`] bytes.
pub fn from_slice<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    from_slice_limited(bytes, MAX_MESSAGE_BYTES)
}

/// Decodes canonical CBOR of at most `max` bytes.
pub fn from_slice_limited<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    let value = from_slice_lenient_limited::<T>(bytes, max)?;
    let again = ser::to_vec(&value, bytes.len()).map_err(|_| DecodeError::NonCanonical)?;
    if again != bytes {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Decodes CBOR of at most `max` bytes without insisting on canonical form: for
/// messages that are never signed, such as requests on the wire.
pub fn from_slice_lenient_limited<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    // A recursion limit far below ciborium's default keeps hostile nesting cheap.
    let mut reader = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, 64)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the document",
            reader.len()
        )));
    }
    Ok(value)
}

fn canonicalize(value: Value) -> Value {
    match value {
        Value::Map(entries) => {
            let mut entries: Vec<(CanonicalValue, Value)> = entries
                .into_iter()
                .map(|(k, v)| (CanonicalValue::from(canonicalize(k)), canonicalize(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonicalize).collect()),
        Value::Tag(tag, inner) => Value::Tag(tag, Box::new(canonicalize(*inner))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Sample {
        zeta: u64,
        a: String,
        mid: BTreeMap<String, u32>,
    }

    fn sample() -> Sample {
        Sample {
            zeta: 7,
            a: "x".into(),
            mid: [("bb".to_string(), 1), ("a".to_string(), 2)].into(),
        }
    }

    #[test]
    fn keys_are_sorted_shortest_first() {
        let bytes = to_vec(&sample()).unwrap();
        // map(3) "a" … "mid" … "zeta": the 1-byte key comes first, the 4-byte key last.
        assert_eq!(bytes[0], 0xa3);
        assert_eq!(&bytes[1..3], &[0x61, b'a']);
        let back: Sample = from_slice(&bytes).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn non_canonical_input_is_refused() {
        let mut plain = Vec::new();
        ciborium::into_writer(&sample(), &mut plain).unwrap(); // declaration order: zeta first
        assert!(matches!(
            from_slice::<Sample>(&plain),
            Err(DecodeError::NonCanonical)
        ));
    }

    #[test]
    fn oversized_and_trailing_and_garbage_are_refused() {
        let bytes = to_vec(&sample()).unwrap();
        assert!(matches!(
            from_slice_limited::<Sample>(&bytes, 4),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            from_slice::<Sample>(&trailing),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            from_slice::<Sample>(&[0xff, 0x00, 0x13]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_cheaply() {
        let bytes: Vec<u8> = std::iter::repeat_n(0x81u8, 10_000).chain([0x00]).collect();
        assert!(from_slice_lenient_limited::<Value>(&bytes, MAX_MESSAGE_BYTES).is_err());
    }
}
