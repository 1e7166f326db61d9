//! Resource amounts as users write them: `cpu = "500m"`, `memory = "256MiB"`.

use fluidos_contracts::Resources;
use fluidos_contracts::resources::{parse_bytes, parse_cpu_millis};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Quantities of a request or a limit. In TOML/JSON: `cpu` (cores `2`, `0.5` or
/// millicores `"500m"`), `memory` and `storage` (bytes, or a size such as
/// `"256MiB"`), `gpus` and `pods` (integers). Absent means zero.
///
/// Serialized back as `cpu = "<millicores>m"` and byte counts as integers, so a
/// spec survives a round trip exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceAmounts(pub Resources);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "cpu",
        serialize_with = "ser_cpu"
    )]
    cpu: u64,
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "bytes")]
    memory: u64,
    #[serde(default, skip_serializing_if = "is_zero", deserialize_with = "bytes")]
    storage: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    gpus: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pods: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn ser_cpu<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v}m"))
}

impl Serialize for ResourceAmounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        Wire {
            cpu: r.cpu_millis,
            memory: r.memory_bytes,
            storage: r.storage_bytes,
            gpus: r.gpus,
            pods: r.pods,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ResourceAmounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(ResourceAmounts(Resources {
            cpu_millis: w.cpu,
            memory_bytes: w.memory,
            storage_bytes: w.storage,
            pods: w.pods,
            gpus: w.gpus,
        }))
    }
}

/// Accepts a number or a string and hands the text to `parse`.
struct QuantityVisitor {
    what: &'static str,
    /// Multiplier for a bare number (1000 for cores, 1 for bytes).
    unit: u64,
    parse: fn(&str) -> Result<u64, fluidos_contracts::resources::ParseQuantityError>,
}

impl<'de> Visitor<'de> for QuantityVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.what)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        v.checked_mul(self.unit)
            .ok_or_else(|| E::custom(format!("{v} is too large")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        let v = u64::try_from(v).map_err(|_| E::custom("a quantity cannot be negative"))?;
        self.visit_u64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // Go through the text form so `0.5` parses exactly like `"0.5"`.
        self.visit_str(&format!("{v}"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        (self.parse)(v).map_err(E::custom)
    }
    /// serde_json with `arbitrary_precision` (switched on in any build that has
    /// `ssi`) hands a number to `deserialize_any` as a one-entry map holding its
    /// text; that text parses like the number.
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        const NUMBER_TOKEN: &str = "$serde_json::private::Number";
        match map.next_entry::<String, String>()? {
            Some((key, text)) if key == NUMBER_TOKEN => {
                let bare = text.parse::<u64>().ok();
                match bare {
                    Some(v) => self.visit_u64(v),
                    None => self.visit_str(&text),
                }
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }
}

fn cpu<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(QuantityVisitor {
        what: "CPUs as a number of cores (`2`, `0.5`) or millicores (`\"500m\"`)",
        unit: 1000,
        parse: parse_cpu_millis,
    })
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(QuantityVisitor {
        what: "a size in bytes (`1048576`) or with a unit (`\"256MiB\"`, `\"1GiB\"`)",
        unit: 1,
        parse: parse_bytes,
    })
}
