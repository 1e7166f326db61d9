//! Selectors: what a buyer asks `ListFlavors` for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Architecture, Flavor, PriceModel, Timestamp};

/// An inclusive range; an absent bound is open. `min == max` is an exact match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// Smallest accepted value.
    pub min: Option<u64>,
    /// Largest accepted value.
    pub max: Option<u64>,
}

impl Range {
    /// At least `min`.
    pub fn at_least(min: u64) -> Self {
        Self {
            min: Some(min),
            max: None,
        }
    }

    /// Exactly `v`.
    pub fn exactly(v: u64) -> Self {
        Self {
            min: Some(v),
            max: Some(v),
        }
    }

    /// Whether `v` lies in the range.
    pub fn contains(&self, v: u64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// A filter over flavors. Every field that is set must match; an empty selector
/// matches every valid flavor.
///
/// Quantity ranges apply to what the flavor offers *now*. A buyer asking for a
/// partition of at least N sets `min: N` and checks the flavor's min/step itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Required architecture.
    pub architecture: Option<Architecture>,
    /// Range over CPU millicores.
    pub cpu_millis: Option<Range>,
    /// Range over memory bytes.
    pub memory_bytes: Option<Range>,
    /// Range over storage bytes.
    pub storage_bytes: Option<Range>,
    /// Range over workload slots.
    pub pods: Option<Range>,
    /// Range over GPU count.
    pub gpus: Option<Range>,
    /// Range over the memory of one GPU.
    pub gpu_memory_bytes: Option<Range>,
    /// GPU model must contain this text (case-insensitive).
    pub gpu_model: Option<String>,
    /// Country code (ISO 3166-1 alpha-2), compared case-insensitively.
    pub country: Option<String>,
    /// City, compared case-insensitively.
    pub city: Option<String>,
    /// Labels the flavor must carry with exactly these values.
    pub labels: BTreeMap<String, String>,
    /// Highest acceptable price of the whole flavor, in micro-units per period.
    pub max_price_micros: Option<u64>,
    /// Currency the price must be in.
    pub currency: Option<String>,
    /// Required billing model.
    pub price_model: Option<PriceModel>,
    /// Highest acceptable carbon intensity (gCO2eq/kWh); flavors that do not say are refused.
    pub max_carbon_g_per_kwh: Option<u32>,
}

impl Selector {
    /// Whether `flavor` matches, at wall-clock time `now` (expired flavors never match).
    pub fn matches(&self, flavor: &Flavor, now: Timestamp) -> bool {
        if !flavor.is_valid_at(now) {
            return false;
        }
        let c = &flavor.characteristics;
        let r = &c.resources;
        let range = |sel: &Option<Range>, v: u64| sel.as_ref().is_none_or(|s| s.contains(v));
        let eq_ci = |want: &Option<String>, have: Option<&str>| {
            want.as_ref()
                .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
        };
        let location = flavor.properties.location.as_ref();
        self.architecture
            .as_ref()
            .is_none_or(|a| *a == c.architecture)
            && range(&self.cpu_millis, r.cpu_millis)
            && range(&self.memory_bytes, r.memory_bytes)
            && range(&self.storage_bytes, r.storage_bytes)
            && range(&self.pods, r.pods)
            && range(&self.gpus, r.gpus)
            && self
                .gpu_memory_bytes
                .as_ref()
                .is_none_or(|s| c.gpu.as_ref().is_some_and(|g| s.contains(g.memory_bytes)))
            && self.gpu_model.as_ref().is_none_or(|m| {
                c.gpu
                    .as_ref()
                    .is_some_and(|g| g.model.to_lowercase().contains(&m.to_lowercase()))
            })
            && eq_ci(&self.country, location.map(|l| l.country.as_str()))
            && eq_ci(&self.city, location.and_then(|l| l.city.as_deref()))
            && self
                .labels
                .iter()
                .all(|(k, v)| flavor.properties.labels.get(k) == Some(v))
            && self
                .max_price_micros
                .is_none_or(|p| flavor.whole_price() <= p)
            && eq_ci(&self.currency, Some(flavor.price.currency.as_str()))
            && self.price_model.is_none_or(|m| m == flavor.price.model)
            && self
                .max_carbon_g_per_kwh
                .is_none_or(|max| flavor.properties.carbon_g_per_kwh.is_some_and(|c| c <= max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GpuInfo, SecretKey, flavor::tests::sample};

    #[test]
    fn every_characteristic_is_checked() {
        let f = sample(SecretKey::generate().node_id());
        let now = Timestamp(1);
        assert!(Selector::default().matches(&f, now));
        assert!(
            !Selector::default().matches(&f, Timestamp(10_000)),
            "expired"
        );

        let cases: Vec<(Selector, bool)> = vec![
            (
                Selector {
                    architecture: Some(Architecture::Aarch64),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    architecture: Some(Architecture::X86_64),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    cpu_millis: Some(Range::at_least(9000)),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    cpu_millis: Some(Range::at_least(8000)),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    memory_bytes: Some(Range {
                        min: None,
                        max: Some(1 << 30),
                    }),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    storage_bytes: Some(Range::at_least(200 << 30)),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    pods: Some(Range::exactly(110)),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    gpus: Some(Range::at_least(1)),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    gpu_model: Some("h100".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    gpu_memory_bytes: Some(Range::at_least(1)),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    country: Some("it".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    country: Some("DE".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    city: Some("turin".into()),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    city: Some("Milan".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    labels: [("zone".into(), "edge".into())].into(),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    labels: [("zone".into(), "core".into())].into(),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    max_price_micros: Some(799_999),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    max_price_micros: Some(800_000),
                    ..Default::default()
                },
                true,
            ),
            (
                Selector {
                    currency: Some("USD".into()),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    price_model: Some(PriceModel::PayPerUse),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    max_carbon_g_per_kwh: Some(100),
                    ..Default::default()
                },
                false,
            ),
            (
                Selector {
                    max_carbon_g_per_kwh: Some(300),
                    ..Default::default()
                },
                true,
            ),
        ];
        for (i, (sel, want)) in cases.iter().enumerate() {
            assert_eq!(sel.matches(&f, now), *want, "case {i}: {sel:?}");
        }
    }

    #[test]
    fn gpu_filters() {
        let mut f = sample(SecretKey::generate().node_id());
        f.characteristics.resources.gpus = 2;
        f.characteristics.gpu = Some(GpuInfo {
            model: "NVIDIA H100 80GB HBM3".into(),
            memory_bytes: 80 << 30,
        });
        let sel = Selector {
            gpus: Some(Range::at_least(1)),
            gpu_model: Some("h100".into()),
            gpu_memory_bytes: Some(Range::at_least(40 << 30)),
            ..Default::default()
        };
        assert!(sel.matches(&f, Timestamp(1)));
    }
}
