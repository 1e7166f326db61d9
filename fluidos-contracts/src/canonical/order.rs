//! The order of map keys: exactly the order `ciborium::value::CanonicalValue` gives
//! the keys, computed on their encodings (RFC 8949 §4.2.3 for every text key).

use core::cmp::Ordering;

use ciborium::value::{Integer, Value};

use super::ser::{
    FALSE, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGATIVE, MAJOR_SIMPLE, MAJOR_TAG,
    MAJOR_TEXT, MAJOR_UNSIGNED, NULL, TRUE,
};

/// The major type and argument of the head that starts `item`.
fn read_head(item: &[u8]) -> Option<(u8, u64, &[u8])> {
    let (&first, rest) = item.split_first()?;
    let (major, minor) = (first >> 5, first & 0x1f);
    let n = match minor {
        0..=23 => return Some((major, u64::from(minor), rest)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return None,
    };
    let (arg, rest) = rest.split_at_checked(n)?;
    let arg = arg.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    Some((major, arg, rest))
}

/// The order of two encoded map keys: exactly the order `CanonicalValue` gives the
/// keys they encode (RFC 8949 §4.2.3 in nearly every case).
///
/// `CanonicalValue` compares most pairs by their encodings, shorter first, then
/// bytewise; that is the fast path here (text keys, so every struct). Two pairs it
/// compares otherwise, and so does this function:
/// - two integers, by `Integer::canonical_cmp`, whose length estimate is not the
///   encoded length for some negative numbers (-129 sorts after 1000);
/// - two tags, by tag number, then by the derived `PartialOrd` of the tagged values
///   (bytes lexicographically, whatever their length), then by encoding.
pub(super) fn cmp_keys(a: &[u8], b: &[u8]) -> Ordering {
    let (ma, mb) = (a.first().map(|x| x >> 5), b.first().map(|x| x >> 5));
    match (ma, mb) {
        (Some(MAJOR_UNSIGNED | MAJOR_NEGATIVE), Some(MAJOR_UNSIGNED | MAJOR_NEGATIVE)) => {
            match (integer_key(a), integer_key(b)) {
                (Some(x), Some(y)) => cmp_integers(x, y),
                _ => cmp_encoded(a, b),
            }
        }
        (Some(MAJOR_TAG), Some(MAJOR_TAG)) => cmp_tags(a, b),
        _ => cmp_encoded(a, b),
    }
}

fn cmp_encoded(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn integer_key(key: &[u8]) -> Option<i128> {
    match read_head(key)? {
        (MAJOR_UNSIGNED, n, _) => Some(i128::from(n)),
        (_, n, _) => Some(-1 - i128::from(n)),
    }
}

/// `ciborium::value::Integer::canonical_cmp`, on the integers it would hold.
fn cmp_integers(x: i128, y: i128) -> Ordering {
    fn canonical_len(x: i128) -> usize {
        if let Ok(x) = u8::try_from(x) {
            if x < 24 { 1 } else { 2 }
        } else if let Ok(x) = i8::try_from(x) {
            if x >= -24 { 1 } else { 2 }
        } else if u16::try_from(x).is_ok() || i16::try_from(x).is_ok() {
            3
        } else if u32::try_from(x).is_ok() || i32::try_from(x).is_ok() {
            5
        } else if u64::try_from(x).is_ok() || i64::try_from(x).is_ok() {
            9
        } else {
            x.to_be_bytes().len() + 1
        }
    }
    match canonical_len(x).cmp(&canonical_len(y)) {
        Ordering::Equal => match (x < 0, y < 0) {
            (false, true) => Ordering::Less,
            (true, false) => Ordering::Greater,
            (true, true) => y.cmp(&x),
            (false, false) => x.cmp(&y),
        },
        other => other,
    }
}

/// `cmp_value` of ciborium for two `Value::Tag`s.
fn cmp_tags(a: &[u8], b: &[u8]) -> Ordering {
    let (Some((_, ta, ra)), Some((_, tb, rb))) = (read_head(a), read_head(b)) else {
        return cmp_encoded(a, b);
    };
    match ta.cmp(&tb) {
        Ordering::Equal => {
            let inner = decode(&mut { ra }).zip(decode(&mut { rb }));
            match inner.and_then(|(x, y)| x.partial_cmp(&y)) {
                Some(order) => order,
                None => cmp_encoded(a, b),
            }
        }
        other => other,
    }
}

/// Rebuilds the `Value` of one item this encoder wrote (only to compare tag keys
/// the way `Value`'s derived `PartialOrd` does; floats keep their value, bignum
/// tags stay tags).
fn decode(input: &mut &[u8]) -> Option<Value> {
    let first = *input.first()?;
    let (major, arg, rest) = read_head(input)?;
    *input = rest;
    let len = usize::try_from(arg).ok();
    let mut take = |n: Option<usize>| -> Option<&[u8]> {
        let (bytes, rest) = input.split_at_checked(n?)?;
        *input = rest;
        Some(bytes)
    };
    Some(match major {
        MAJOR_UNSIGNED => Value::Integer(Integer::from(arg)),
        MAJOR_NEGATIVE => Value::Integer(Integer::try_from(-1 - i128::from(arg)).ok()?),
        MAJOR_BYTES => Value::Bytes(take(len)?.to_vec()),
        MAJOR_TEXT => Value::Text(String::from_utf8(take(len)?.to_vec()).ok()?),
        MAJOR_ARRAY => Value::Array((0..arg).map(|_| decode(input)).collect::<Option<_>>()?),
        MAJOR_MAP => Value::Map(
            (0..arg)
                .map(|_| Some((decode(input)?, decode(input)?)))
                .collect::<Option<_>>()?,
        ),
        MAJOR_TAG => Value::Tag(arg, Box::new(decode(input)?)),
        MAJOR_SIMPLE => match first {
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            NULL => Value::Null,
            0xf9 => Value::Float(f16_to_f64(arg as u16)),
            0xfa => Value::Float(f64::from(f32::from_bits(arg as u32))),
            0xfb => Value::Float(f64::from_bits(arg)),
            _ => return None,
        },
        _ => return None,
    })
}

/// The value of an IEEE 754 half-precision float (a NaN stays a NaN, which is all
/// `PartialOrd` looks at).
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let mantissa = f64::from(bits & 0x3ff);
    sign * match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1024.0 + mantissa) * 2f64.powi(e - 25),
    }
}
