//! Intent: hard constraints a node must meet, and weighted soft preferences.

use std::collections::BTreeMap;

use fluidos_contracts::{Architecture, NodeId};
use serde::{Deserialize, Serialize};

/// Where a workload may run (`require`) and where it should (`prefer`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Hard constraints: a node that misses one is never chosen.
    #[serde(default)]
    pub require: Hard,
    /// Soft preferences, each with a weight; they rank the nodes that qualify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<Preference>,
    /// Whether the node may buy capacity when none of its nodes fits (default true).
    #[serde(default = "yes")]
    pub acquire: bool,
}

impl Default for Intent {
    fn default() -> Self {
        Self {
            require: Hard::default(),
            prefer: Vec::new(),
            acquire: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Hard constraints. Absent fields mean "any".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hard {
    /// CPU architecture (`x86_64`, `aarch64`; `amd64`/`arm64` accepted).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "arch"
    )]
    pub architecture: Option<Architecture>,
    /// ISO 3166-1 alpha-2 country code, compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// City, compared case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Labels the node must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The most one replica may cost per hour, in micro-units of the node's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_micros_per_hour: Option<u64>,
    /// Required currency of the price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Run only on this node (this node's own did:key, or a provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// A GPU is needed; `model` (if set) must appear in the GPU's model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequirement>,
    /// Highest acceptable carbon intensity in gCO2eq/kWh (nodes that do not say are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_carbon_g_per_kwh: Option<u32>,
}

fn arch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Architecture>, D::Error> {
    let name = String::deserialize(d)?;
    Ok(Some(name.parse().unwrap_or_else(|e| match e {})))
}

/// A GPU requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRequirement {
    /// Text the GPU model must contain, case-insensitively (`H100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// One soft preference and its weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preference {
    /// What is preferred.
    #[serde(flatten)]
    pub kind: PreferenceKind,
    /// How much it counts relative to the others (1 … 100, default 1).
    #[serde(default = "weight_one")]
    pub weight: u32,
}

fn weight_one() -> u32 {
    1
}

/// The kinds of soft preference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PreferenceKind {
    /// Cheaper nodes first.
    LowerPrice,
    /// Nodes closer to `to` first (by measured round trip from this node when
    /// `to` is absent; by the distance between the nodes' locations otherwise).
    LowerLatency {
        /// The peer to be close to; absent means this node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<NodeId>,
    },
    /// Nodes with lower grid carbon intensity first.
    LowerCarbon,
    /// Replicas spread over distinct nodes (providers) rather than packed.
    Spread,
}

impl Intent {
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(c) = &self.require.country
            && (c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err(format!(
                "require.country `{c}` is not a two-letter ISO 3166-1 code"
            ));
        }
        for p in &self.prefer {
            if p.weight == 0 || p.weight > 100 {
                return Err(format!(
                    "prefer: weight {} of `{}` must be between 1 and 100",
                    p.weight,
                    p.kind.name()
                ));
            }
        }
        Ok(())
    }
}

impl PreferenceKind {
    /// The kind's name as written in a spec.
    pub fn name(&self) -> &'static str {
        match self {
            PreferenceKind::LowerPrice => "lower_price",
            PreferenceKind::LowerLatency { .. } => "lower_latency",
            PreferenceKind::LowerCarbon => "lower_carbon",
            PreferenceKind::Spread => "spread",
        }
    }
}
