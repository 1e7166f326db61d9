//! Serde helpers for byte strings: CBOR byte strings on the wire, lowercase hex in
//! human-readable formats such as JSON.

use serde::{Deserializer, Serializer, de};
use std::fmt;

/// Serialises `bytes` as a byte string (binary formats) or hex (human-readable formats).
pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

/// Deserialises a fixed-size array written by [`serialize`].
pub(crate) fn deserialize_array<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    let bytes = deserialize_vec(d)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| de::Error::invalid_length(bytes.len(), &format!("{N} bytes").as_str()))
}

/// Deserialises a byte vector written by [`serialize`].
pub(crate) fn deserialize_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string or a hex string")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(E::custom)
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(V)
    } else {
        d.deserialize_bytes(V)
    }
}

/// `#[serde(with = "crate::bytes::vec")]` for `Vec<u8>` fields.
pub(crate) mod vec {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        super::serialize(bytes, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        super::deserialize_vec(d)
    }
}

/// Declares a fixed-size random identifier newtype (hex in text, bytes on the wire).
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// A fresh random identifier.
            pub fn random() -> Self {
                let mut bytes = [0u8; $len];
                #[allow(clippy::expect_used)]
                getrandom::fill(&mut bytes).expect("the operating system's random source failed");
                Self(bytes)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let raw = hex::decode(s).map_err(|_| crate::ParseIdError)?;
                Ok(Self(raw.try_into().map_err(|_| crate::ParseIdError)?))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::bytes::serialize(&self.0, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                crate::bytes::deserialize_array(d).map(Self)
            }
        }
    };
}
pub(crate) use id_type;
