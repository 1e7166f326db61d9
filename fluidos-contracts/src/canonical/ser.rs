//! The serde `Serializer` that writes canonical CBOR straight into a `Vec<u8>`.
//!
//! Every case reproduces what `ciborium::Value::serialized`, then sorting each map
//! with `ciborium::value::CanonicalValue`, then `ciborium::into_writer` produce (the
//! oracle `super::to_vec_reference`):
//!
//! | serde                         | CBOR                                            |
//! |-------------------------------|-------------------------------------------------|
//! | bool, unit, `None`            | `f5`/`f4`, `f6`, `f6`                            |
//! | integers                      | major 0 or 1, shortest head                      |
//! | `i128`/`u128` beyond 64 bits  | tag 2 or 3 on the big-endian bytes, no leading 0 |
//! | `f32`/`f64`                   | shortest lossless float (written by ciborium)    |
//! | char, str / bytes             | text / byte string                               |
//! | seq, tuple, tuple struct      | array of the elements actually given             |
//! | map, struct                   | map, entries sorted (see `order::cmp_keys`)           |
//! | unit variant                  | the variant name as text                         |
//! | newtype/tuple/struct variant  | `{ name: value / array / map }`                  |
//! | ciborium `tag` wrappers       | the tag head, then the value                     |
//!
//! Lengths are the counts actually serialised, whatever serde announced. Nothing is
//! allocated per node: map entries are byte ranges on one stack shared by every
//! open map, and sorted entries move through one shared scratch buffer; both are
//! kept per thread for the next call, so a call usually allocates only its output.

use core::cell::Cell;
use core::fmt;

use serde::ser::{self, Impossible, Serialize};

use super::order::cmp_keys;

pub(super) const MAJOR_UNSIGNED: u8 = 0;
pub(super) const MAJOR_NEGATIVE: u8 = 1;
pub(super) const MAJOR_BYTES: u8 = 2;
pub(super) const MAJOR_TEXT: u8 = 3;
pub(super) const MAJOR_ARRAY: u8 = 4;
pub(super) const MAJOR_MAP: u8 = 5;
pub(super) const MAJOR_TAG: u8 = 6;
pub(super) const MAJOR_SIMPLE: u8 = 7;

pub(super) const FALSE: u8 = 0xf4;
pub(super) const TRUE: u8 = 0xf5;
pub(super) const NULL: u8 = 0xf6;
/// The head of a map of one entry: how enum variants other than unit ones start.
const MAP_OF_ONE: u8 = 0xa1;

const TAG_BIGPOS: u64 = 2;
const TAG_BIGNEG: u64 = 3;

/// The names through which `ciborium::tag` asks a serializer for a CBOR tag.
const TAG_ENUM: &str = "@@TAG@@";
const TAG_TAGGED: &str = "@@TAGGED@@";
const TAG_UNTAGGED: &str = "@@UNTAGGED@@";

/// An encoding failure: a message from a `Serialize` impl, or a misused tag wrapper.
#[derive(Debug)]
pub(super) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The same text as `ciborium::value::Error`, which the old path reported.
        write!(f, "Custom({:?})", self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Encodes `value` as canonical CBOR into a buffer of initially `capacity` bytes.
pub(super) fn to_vec<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Result<Vec<u8>, Error> {
    // The entry stack and the scratch buffer outlive one call, per thread. A nested
    // call (a `Serialize` impl that encodes something itself) finds them taken and
    // starts with empty ones.
    thread_local! {
        static SPARE: Cell<(Vec<Entry>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
    }
    let (entries, scratch) = SPARE.take();
    let mut encoder = Encoder {
        out: Vec::with_capacity(capacity),
        entries,
        scratch,
    };
    let result = value.serialize(&mut encoder);
    let Encoder {
        out,
        mut entries,
        mut scratch,
    } = encoder;
    if scratch.capacity() <= SPARE_LIMIT && entries.capacity() <= SPARE_LIMIT / 16 {
        entries.clear();
        scratch.clear();
        SPARE.set((entries, scratch));
    }
    result.map(|()| out)
}

/// The largest scratch buffer kept for the next call, in bytes.
const SPARE_LIMIT: usize = 64 * 1024;

/// One map entry already written to the output: key at `key..value`, value at
/// `value..end` (absolute offsets).
#[derive(Clone, Copy)]
struct Entry {
    key: usize,
    value: usize,
    end: usize,
}

struct Encoder {
    out: Vec<u8>,
    /// The entries of every open map, innermost map last.
    entries: Vec<Entry>,
    /// Where the entries of a map are copied while they are put in order.
    scratch: Vec<u8>,
}

/// The shortest head for `major` with argument `arg`, and its length.
fn head(major: u8, arg: u64) -> ([u8; 9], usize) {
    let mut h = [0u8; 9];
    let m = major << 5;
    let len = if arg < 24 {
        h[0] = m | arg as u8;
        1
    } else if arg <= u64::from(u8::MAX) {
        h[0] = m | 24;
        h[1] = arg as u8;
        2
    } else if arg <= u64::from(u16::MAX) {
        h[0] = m | 25;
        h[1..3].copy_from_slice(&(arg as u16).to_be_bytes());
        3
    } else if arg <= u64::from(u32::MAX) {
        h[0] = m | 26;
        h[1..5].copy_from_slice(&(arg as u32).to_be_bytes());
        5
    } else {
        h[0] = m | 27;
        h[1..9].copy_from_slice(&arg.to_be_bytes());
        9
    };
    (h, len)
}

impl Encoder {
    fn head(&mut self, major: u8, arg: u64) {
        let (h, len) = head(major, arg);
        self.out.extend_from_slice(&h[..len]);
    }

    /// Writes the head of a collection whose length serde may not know yet.
    fn open(&mut self, major: u8, len: Option<usize>) -> Open {
        let announced = len.unwrap_or(0) as u64;
        let at = self.out.len();
        self.head(major, announced);
        Open {
            major,
            at,
            announced,
            count: 0,
        }
    }

    /// Rewrites the head written by [`Encoder::open`] if the count differs.
    fn close(&mut self, open: &Open) {
        if open.count != open.announced {
            let old = head(open.major, open.announced).1;
            let (h, len) = head(open.major, open.count);
            self.out
                .splice(open.at..open.at + old, h[..len].iter().copied());
        }
    }

    fn int(&mut self, v: i64) {
        if v < 0 {
            self.head(MAJOR_NEGATIVE, !(v as u64));
        } else {
            self.head(MAJOR_UNSIGNED, v as u64);
        }
    }

    fn bignum(&mut self, tag: u64, raw: u128) {
        let bytes = raw.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        self.head(MAJOR_TAG, tag);
        self.bytes(&bytes[skip..]);
    }

    fn bytes(&mut self, v: &[u8]) {
        self.head(MAJOR_BYTES, v.len() as u64);
        self.out.extend_from_slice(v);
    }

    fn text(&mut self, v: &str) {
        self.head(MAJOR_TEXT, v.len() as u64);
        self.out.extend_from_slice(v.as_bytes());
    }

    fn float(&mut self, v: f64) -> Result<(), Error> {
        // ciborium picks the shortest of f16/f32/f64 that keeps every bit of `v`.
        ciborium::into_writer(&v, &mut self.out).map_err(|e| Error(e.to_string()))
    }

    /// Puts the entries of the map opened with `open` (on the entry stack from
    /// `base`) in canonical order, fixes its head and pops its entries.
    fn close_map(&mut self, mut open: Open, base: usize) {
        let entries = &mut self.entries[base..];
        open.count = entries.len() as u64;
        if let [first, _, ..] = entries {
            // Entries are contiguous, in serde order: the body runs from the first key
            // to the end of the output.
            let mut at = first.key;
            let out = &self.out;
            // The same stable sort as the old path, with the same comparison results:
            // equal keys keep serde order.
            entries.sort_by(|a, b| cmp_keys(&out[a.key..a.value], &out[b.key..b.value]));
            // Entries already in place stay; the rest moves through the scratch buffer.
            let in_place = entries
                .iter()
                .take_while(|e| {
                    let here = e.key == at;
                    if here {
                        at = e.end;
                    }
                    here
                })
                .count();
            if in_place < entries.len() {
                let from = at;
                self.scratch.clear();
                self.scratch.extend_from_slice(&self.out[from..]);
                for e in &entries[in_place..] {
                    let len = e.end - e.key;
                    self.out[at..at + len]
                        .copy_from_slice(&self.scratch[e.key - from..e.end - from]);
                    at += len;
                }
            }
        }
        self.entries.truncate(base);
        self.close(&open);
    }
}

/// A collection whose head is written, with the length serde announced.
struct Open {
    major: u8,
    at: usize,
    announced: u64,
    count: u64,
}

impl<'a> ser::Serializer for &'a mut Encoder {
    type Ok = ();
    type Error = Error;

    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = TupleVariant<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Map<'a>;
    type SerializeStructVariant = Map<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push(if v { TRUE } else { FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.int(v.into());
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.int(v);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        if v >= 0 {
            return self.serialize_u128(v as u128);
        }
        // -1 - v, which is never negative.
        let raw = !(v as u128);
        match u64::try_from(raw) {
            Ok(raw) => self.head(MAJOR_NEGATIVE, raw),
            Err(_) => self.bignum(TAG_BIGNEG, raw),
        }
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.head(MAJOR_UNSIGNED, v.into());
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.head(MAJOR_UNSIGNED, v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.head(MAJOR_UNSIGNED, v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.head(MAJOR_UNSIGNED, v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        match u64::try_from(v) {
            Ok(v) => self.head(MAJOR_UNSIGNED, v),
            Err(_) => self.bignum(TAG_BIGPOS, v),
        }
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.float(v.into())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.float(v)
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.text(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.text(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.bytes(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.out.push(NULL);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push(NULL);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.out.push(NULL);
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.text(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // `ciborium::tag::Captured(None, v)` asks for `v` alone.
        if name != TAG_ENUM || variant != TAG_UNTAGGED {
            self.out.push(MAP_OF_ONE);
            self.text(variant);
        }
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a>, Error> {
        let open = self.open(MAJOR_ARRAY, len);
        Ok(Seq { enc: self, open })
    }

    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<TupleVariant<'a>, Error> {
        if name == TAG_ENUM && variant == TAG_TAGGED {
            return Ok(TupleVariant::Tag {
                enc: self,
                tagged: false,
                value: None,
            });
        }
        self.out.push(MAP_OF_ONE);
        self.text(variant);
        self.serialize_seq(Some(len)).map(TupleVariant::Seq)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Map<'a>, Error> {
        let open = self.open(MAJOR_MAP, len);
        let base = self.entries.len();
        Ok(Map {
            enc: self,
            open,
            base,
            key: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Map<'a>, Error> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Map<'a>, Error> {
        self.out.push(MAP_OF_ONE);
        self.text(variant);
        self.serialize_map(Some(len))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// An array being written: seq, tuple, tuple struct, tuple variant.
struct Seq<'a> {
    enc: &'a mut Encoder,
    open: Open,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.enc)?;
        self.open.count += 1;
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        self.enc.close(&self.open);
        Ok(())
    }
}

/// The sequence-like serde traits: every element goes through [`Seq::element`].
macro_rules! seq_traits {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.element(value)
            }

            fn end(self) -> Result<(), Error> {
                self.finish()
            }
        }
    )*};
}

seq_traits!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

/// A tuple variant: an array under the variant name, or a `ciborium::tag` wrapper
/// (fields: the tag number, then the value; a later field replaces the value).
enum TupleVariant<'a> {
    Seq(Seq<'a>),
    Tag {
        enc: &'a mut Encoder,
        tagged: bool,
        /// Where the tagged value starts, once one is written.
        value: Option<usize>,
    },
}

impl ser::SerializeTupleVariant for TupleVariant<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, field: &T) -> Result<(), Error> {
        match self {
            Self::Seq(seq) => seq.element(field),
            Self::Tag { enc, tagged, value } => {
                if !*tagged {
                    let tag = field
                        .serialize(TagNumber)
                        .map_err(|_| Error("expected tag".into()))?;
                    enc.head(MAJOR_TAG, tag);
                    *tagged = true;
                } else {
                    if let Some(at) = *value {
                        enc.out.truncate(at);
                    }
                    *value = Some(enc.out.len());
                    field.serialize(&mut **enc)?;
                }
                Ok(())
            }
        }
    }

    fn end(self) -> Result<(), Error> {
        match self {
            Self::Seq(seq) => seq.finish(),
            Self::Tag { value: Some(_), .. } => Ok(()),
            Self::Tag { .. } => Err(Error("invalid tag input".into())),
        }
    }
}

/// A map being written: map, struct, struct variant.
struct Map<'a> {
    enc: &'a mut Encoder,
    open: Open,
    /// Where this map's entries start on the entry stack.
    base: usize,
    /// Where the key waiting for its value starts.
    key: Option<usize>,
}

impl Map<'_> {
    fn value<T: Serialize + ?Sized>(&mut self, key: usize, value: &T) -> Result<(), Error> {
        let at = self.enc.out.len();
        value.serialize(&mut *self.enc)?;
        self.enc.entries.push(Entry {
            key,
            value: at,
            end: self.enc.out.len(),
        });
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        if let Some(at) = self.key {
            // A key without a value is dropped, as the old path dropped it.
            self.enc.out.truncate(at);
        }
        self.enc.close_map(self.open, self.base);
        Ok(())
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        let at = self.enc.out.len();
        self.enc.text(key);
        self.value(at, value)
    }
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        if let Some(at) = self.key.take() {
            // A second key replaces the first, as in the old path.
            self.enc.out.truncate(at);
        }
        let at = self.enc.out.len();
        key.serialize(&mut *self.enc)?;
        self.key = Some(at);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("map value without a key".into()))?;
        self.value(key, value)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// The struct-like serde traits: every field goes through [`Map::field`].
macro_rules! struct_traits {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Map<'_> {
            type Ok = ();
            type Error = Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.field(key, value)
            }

            fn end(self) -> Result<(), Error> {
                self.finish()
            }
        }
    )*};
}

struct_traits!(SerializeStruct, SerializeStructVariant);

/// Reads the tag number of a `ciborium::tag` wrapper: like `ciborium`'s own, it
/// takes `u8` to `u64` and refuses everything else.
struct TagNumber;

macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, Error> {
            Err(Error("expected tag".into()))
        })*
    };
}

impl ser::Serializer for TagNumber {
    type Ok = u64;
    type Error = Error;

    type SerializeSeq = Impossible<u64, Error>;
    type SerializeTuple = Impossible<u64, Error>;
    type SerializeTupleStruct = Impossible<u64, Error>;
    type SerializeTupleVariant = Impossible<u64, Error>;
    type SerializeMap = Impossible<u64, Error>;
    type SerializeStruct = Impossible<u64, Error>;
    type SerializeStructVariant = Impossible<u64, Error>;

    fn serialize_u8(self, v: u8) -> Result<u64, Error> {
        Ok(v.into())
    }

    fn serialize_u16(self, v: u16) -> Result<u64, Error> {
        Ok(v.into())
    }

    fn serialize_u32(self, v: u32) -> Result<u64, Error> {
        Ok(v.into())
    }

    fn serialize_u64(self, v: u64) -> Result<u64, Error> {
        Ok(v)
    }

    refuse! {
        serialize_bool(bool) -> u64;
        serialize_i8(i8) -> u64;
        serialize_i16(i16) -> u64;
        serialize_i32(i32) -> u64;
        serialize_i64(i64) -> u64;
        serialize_i128(i128) -> u64;
        serialize_u128(u128) -> u64;
        serialize_f32(f32) -> u64;
        serialize_f64(f64) -> u64;
        serialize_char(char) -> u64;
        serialize_str(&str) -> u64;
        serialize_bytes(&[u8]) -> u64;
        serialize_none() -> u64;
        serialize_unit() -> u64;
        serialize_unit_struct(&'static str) -> u64;
        serialize_unit_variant(&'static str, u32, &'static str) -> u64;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<u64, Error> {
        Err(Error("expected tag".into()))
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<u64, Error> {
        Err(Error("expected tag".into()))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<u64, Error> {
        Err(Error("expected tag".into()))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

#[cfg(test)]
#[path = "ser_tests.rs"]
mod tests;
