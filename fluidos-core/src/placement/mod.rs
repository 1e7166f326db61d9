//! Placement: a pure function from the nodes of the view and a workload's intent
//! to a [`Decision`], with the reasons for every candidate.
//!
//! 1. **Filter** every node (physical and virtual) by the hard constraints and by
//!    free capacity for one replica; each rejected node gets its reasons.
//! 2. **Rank** the rest by the weighted soft preferences (each scored 0…1000,
//!    higher is better) and place the replicas one by one, taking each replica's
//!    requests from the chosen node's free capacity (so `spread` sees the
//!    replicas already placed).
//! 3. When replicas remain, return [`Decision::Acquire`] with exactly what is
//!    missing (rounded up to the partition step of the provider that matched the
//!    constraints but lacked capacity, when known) and the buyer's request; or
//!    [`Decision::Unschedulable`] when the intent forbids buying (or names a node).

use std::collections::BTreeMap;
use std::fmt;

use fluidos_contracts::{NodeId, Resources};

use crate::buyer::{AcquisitionRequest, Constraints};
use crate::view::{NodeInfo, NodeKind};
use crate::workload::{PreferenceKind, WorkloadSpec};

/// Extra facts placement may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// Measured round trip from this node to others, ms (for `lower_latency`).
    pub rtt_ms: BTreeMap<NodeId, u32>,
    /// Duration of a contract bought when capacity is short, ms (default 1 h).
    pub acquire_duration_ms: Option<u64>,
}

/// Why a node was not chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// `require.node` names another node.
    NotTheNamedNode,
    /// Another architecture.
    Architecture(String),
    /// Another country, or none disclosed.
    Country(Option<String>),
    /// Another city, or none disclosed.
    City(Option<String>),
    /// A label is missing or has another value.
    Label(String),
    /// Too expensive per replica.
    Price {
        /// Its price per hour for one replica, micro-units.
        per_replica: u64,
        /// The maximum.
        max: u64,
    },
    /// Another currency.
    Currency(Option<String>),
    /// No GPU, or not the model.
    Gpu,
    /// Carbon intensity above the maximum, or unknown.
    Carbon(Option<u32>),
    /// Not enough free capacity for one replica.
    Capacity {
        /// What one replica needs.
        need: Resources,
        /// What is free.
        free: Resources,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotTheNamedNode => write!(f, "not the node the intent names"),
            Rejection::Architecture(a) => write!(f, "architecture is {a}"),
            Rejection::Country(c) => {
                write!(f, "country is {}", c.as_deref().unwrap_or("undisclosed"))
            }
            Rejection::City(c) => write!(f, "city is {}", c.as_deref().unwrap_or("undisclosed")),
            Rejection::Label(l) => write!(f, "label {l} does not match"),
            Rejection::Price { per_replica, max } => {
                write!(f, "price {per_replica} µ/h per replica exceeds {max}")
            }
            Rejection::Currency(c) => write!(f, "currency is {}", c.as_deref().unwrap_or("none")),
            Rejection::Gpu => write!(f, "no matching GPU"),
            Rejection::Carbon(c) => match c {
                Some(c) => write!(f, "carbon intensity {c} g/kWh is too high"),
                None => write!(f, "carbon intensity unknown"),
            },
            Rejection::Capacity { need, free } => write!(f, "needs {need}, free {free}"),
        }
    }
}

/// What placement concluded about one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Empty when it qualified.
    pub rejected: Vec<Rejection>,
    /// Its score for the first replica (qualified nodes only), 0 … 1000 × weights.
    pub score: u64,
}

/// One replica assigned to one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The replica index.
    pub replica: u32,
    /// Where it goes.
    pub node: NodeId,
}

/// What to buy because nothing fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquirePlan {
    /// Replicas that fit now, and where.
    pub placed: Vec<Assignment>,
    /// The replicas that do not fit.
    pub unplaced: Vec<u32>,
    /// Exactly what is missing (their requests, rounded up to a known step).
    pub missing: Resources,
    /// The request to hand to the buyer.
    pub request: AcquisitionRequest,
}

/// The outcome of placement. `Display` shows every reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every replica fits.
    Place {
        /// Where each goes.
        assignments: Vec<Assignment>,
        /// Every node and its verdict.
        candidates: Vec<Candidate>,
    },
    /// Some replicas need capacity bought first.
    Acquire {
        /// What to buy.
        plan: Box<AcquirePlan>,
        /// Every node and its verdict.
        candidates: Vec<Candidate>,
    },
    /// Nothing fits and buying is not allowed.
    Unschedulable {
        /// Why, in a sentence.
        reason: String,
        /// Every node and its verdict.
        candidates: Vec<Candidate>,
    },
}

impl Decision {
    /// The verdict for every node.
    pub fn candidates(&self) -> &[Candidate] {
        match self {
            Decision::Place { candidates, .. }
            | Decision::Acquire { candidates, .. }
            | Decision::Unschedulable { candidates, .. } => candidates,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Place { assignments, .. } => {
                write!(f, "place:")?;
                for a in assignments {
                    write!(f, " replica {} → {}", a.replica, a.node.short())?;
                }
                writeln!(f)?;
            }
            Decision::Acquire { plan, .. } => {
                writeln!(
                    f,
                    "acquire {} for replicas {:?}",
                    plan.missing, plan.unplaced
                )?;
            }
            Decision::Unschedulable { reason, .. } => writeln!(f, "unschedulable: {reason}")?,
        }
        for c in self.candidates() {
            if c.rejected.is_empty() {
                writeln!(f, "  {}: fits (score {})", c.node.short(), c.score)?;
            } else {
                let why: Vec<String> = c.rejected.iter().map(|r| r.to_string()).collect();
                writeln!(f, "  {}: rejected: {}", c.node.short(), why.join("; "))?;
            }
        }
        Ok(())
    }
}

fn eq_ci(want: &Option<String>, have: Option<&str>) -> bool {
    want.as_ref()
        .is_none_or(|w| have.is_some_and(|h| h.eq_ignore_ascii_case(w)))
}

/// The hard-constraint reasons against `n` (capacity not included).
fn hard_rejections(spec: &WorkloadSpec, n: &NodeInfo) -> Vec<Rejection> {
    let h = &spec.intent.require;
    let e = &n.entry;
    let mut out = Vec::new();
    if h.node.is_some_and(|want| want != n.id) {
        out.push(Rejection::NotTheNamedNode);
    }
    if h.architecture
        .as_ref()
        .is_some_and(|a| *a != e.architecture)
    {
        out.push(Rejection::Architecture(e.architecture.to_string()));
    }
    let loc = e.location.as_ref();
    if !eq_ci(&h.country, loc.map(|l| l.country.as_str())) {
        out.push(Rejection::Country(loc.map(|l| l.country.clone())));
    }
    if !eq_ci(&h.city, loc.and_then(|l| l.city.as_deref())) {
        out.push(Rejection::City(loc.and_then(|l| l.city.clone())));
    }
    for (k, v) in &h.labels {
        if e.labels.get(k) != Some(v) {
            out.push(Rejection::Label(format!("{k}={v}")));
        }
    }
    // An image needs a container engine; a node that lists its runtimes without docker
    // has none (one that lists none predates the label and is left to refuse itself).
    if matches!(spec.run, crate::workload::Run::Image { .. })
        && e.labels
            .get(crate::runtime::RUNTIMES_LABEL)
            .is_some_and(|v| !v.split(',').any(|r| r.trim() == "docker"))
    {
        out.push(Rejection::Label(format!(
            "{}=docker (no container engine there)",
            crate::runtime::RUNTIMES_LABEL
        )));
    }
    if let Some(max) = h.max_price_micros_per_hour {
        let per = per_replica_price(spec, n);
        if per > max {
            out.push(Rejection::Price {
                per_replica: per,
                max,
            });
        }
    }
    if h.currency.is_some()
        && e.price_micros_per_hour.is_some()
        && !eq_ci(&h.currency, e.currency.as_deref())
    {
        out.push(Rejection::Currency(e.currency.clone()));
    }
    if let Some(g) = &h.gpu {
        let model_ok = g.model.as_ref().is_none_or(|m| {
            e.gpu_model
                .as_ref()
                .is_some_and(|have| have.to_lowercase().contains(&m.to_lowercase()))
        });
        if e.capacity.gpus == 0 || !model_ok {
            out.push(Rejection::Gpu);
        }
    }
    if let Some(max) = h.max_carbon_g_per_kwh
        && e.carbon_g_per_kwh.is_none_or(|c| c > max)
    {
        out.push(Rejection::Carbon(e.carbon_g_per_kwh));
    }
    out
}

/// One replica's share of the node's hourly price (0 for own capacity).
fn per_replica_price(spec: &WorkloadSpec, n: &NodeInfo) -> u64 {
    let Some(price) = n.entry.price_micros_per_hour else {
        return 0;
    };
    let share = spec.requests().dominant_share_ppm(&n.entry.capacity) as u128;
    ((price as u128 * share).div_ceil(1_000_000)).min(u64::MAX as u128) as u64
}

/// Haversine-free distance proxy in micro-degrees (enough to rank).
fn distance(a: &NodeInfo, b: Option<&NodeInfo>) -> Option<u64> {
    let la = a.entry.location.as_ref()?;
    let lb = b?.entry.location.as_ref()?;
    let d = |x: Option<i32>, y: Option<i32>| Some((x? as i64 - y? as i64).unsigned_abs());
    Some(d(la.lat_e6, lb.lat_e6)? + d(la.lon_e6, lb.lon_e6)?)
}

/// Scores `n` for the next replica; `placed_here` counts replicas already on it.
fn score(
    spec: &WorkloadSpec,
    n: &NodeInfo,
    all: &[NodeInfo],
    hints: &Hints,
    placed_here: u32,
    max_price: u64,
) -> u64 {
    let mut total = 0u64;
    for p in &spec.intent.prefer {
        let s: u64 = match &p.kind {
            PreferenceKind::LowerPrice => {
                let price = per_replica_price(spec, n);
                (price.min(max_price) * 1000)
                    .checked_div(max_price)
                    .map_or(1000, |used| 1000 - used)
            }
            PreferenceKind::LowerLatency { to } => {
                let ms = match to {
                    None => hints.rtt_ms.get(&n.id).copied().map(u64::from),
                    Some(peer) => {
                        distance(n, all.iter().find(|x| x.id == *peer)).map(|d| d / 10_000)
                    }
                };
                ms.map(|ms| 1000 * 100 / (100 + ms)).unwrap_or(500)
            }
            PreferenceKind::LowerCarbon => n
                .entry
                .carbon_g_per_kwh
                .map(|c| 1000 * 100 / (100 + c as u64))
                .unwrap_or(300),
            PreferenceKind::Spread => 1000 / (1 + placed_here as u64),
        };
        total += s * p.weight as u64;
    }
    total
}

/// Decides where the replicas `replicas` of `spec` go, over `nodes` (from
/// [`crate::view::View::nodes`]). Pure: the same inputs give the same decision.
pub fn place(spec: &WorkloadSpec, replicas: &[u32], nodes: &[NodeInfo], hints: &Hints) -> Decision {
    let need = spec.requests();
    // Under a contract a replica takes at least one pod (the provider's admission charges
    // it), so on a virtual node, and in what is bought, it needs one.
    let contracted = Resources {
        pods: need.pods.max(1),
        ..need
    };
    let need_on = |n: &NodeInfo| match n.entry.kind {
        NodeKind::Virtual => contracted,
        _ => need,
    };
    let mut free: BTreeMap<NodeId, Resources> = nodes.iter().map(|n| (n.id, n.free)).collect();
    let mut candidates: Vec<Candidate> = nodes
        .iter()
        .map(|n| {
            let mut rejected = hard_rejections(spec, n);
            let need = need_on(n);
            if !need.fits_within(&n.free) {
                rejected.push(Rejection::Capacity { need, free: n.free });
            }
            Candidate {
                node: n.id,
                rejected,
                score: 0,
            }
        })
        .collect();
    let qualified: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| hard_rejections(spec, n).is_empty())
        .collect();
    let max_price = qualified
        .iter()
        .map(|n| per_replica_price(spec, n))
        .max()
        .unwrap_or(0);
    for c in candidates.iter_mut().filter(|c| c.rejected.is_empty()) {
        if let Some(n) = nodes.iter().find(|n| n.id == c.node) {
            c.score = score(spec, n, nodes, hints, 0, max_price);
        }
    }
    let mut placed_count: BTreeMap<NodeId, u32> = BTreeMap::new();
    let mut assignments = Vec::new();
    let mut unplaced = Vec::new();
    for &r in replicas {
        let best = qualified
            .iter()
            .filter(|n| free.get(&n.id).is_some_and(|f| need_on(n).fits_within(f)))
            .map(|n| {
                (
                    score(
                        spec,
                        n,
                        nodes,
                        hints,
                        placed_count.get(&n.id).copied().unwrap_or(0),
                        max_price,
                    ),
                    n.id,
                )
            })
            // Highest score; ties to the smaller id, so the choice is deterministic.
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        match best {
            Some((_, id)) => {
                let taken = qualified
                    .iter()
                    .find(|n| n.id == id)
                    .map_or(need, |n| need_on(n));
                if let Some(f) = free.get_mut(&id) {
                    *f = f.saturating_sub(&taken);
                }
                *placed_count.entry(id).or_default() += 1;
                assignments.push(Assignment {
                    replica: r,
                    node: id,
                });
            }
            None => unplaced.push(r),
        }
    }
    if unplaced.is_empty() {
        return Decision::Place {
            assignments,
            candidates,
        };
    }
    let h = &spec.intent.require;
    if !spec.intent.acquire || h.node.is_some() {
        let why = if h.node.is_some() {
            "the intent names a node that cannot take it"
        } else {
            "the intent does not allow buying capacity"
        };
        let rejected: Vec<String> = candidates
            .iter()
            .filter(|c| !c.rejected.is_empty())
            .map(|c| {
                format!(
                    "{} ({})",
                    c.node.short(),
                    c.rejected
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
            .collect();
        let reason = format!(
            "{} of {} replicas do not fit and {why}; rejected: {}",
            unplaced.len(),
            replicas.len(),
            if rejected.is_empty() {
                "no nodes".to_string()
            } else {
                rejected.join(", ")
            }
        );
        return Decision::Unschedulable { reason, candidates };
    }
    let count = unplaced.len() as u64;
    let raw = Resources::from_array(contracted.as_array().map(|q| q.saturating_mul(count)));
    // The step of a provider that met every constraint but capacity.
    let step = qualified.iter().find_map(|n| n.entry.step);
    let missing = match step {
        Some(step) => {
            let (m, s) = (raw.as_array(), step.as_array());
            Resources::from_array(std::array::from_fn(|i| {
                if s[i] == 0 || m[i] == 0 {
                    m[i]
                } else {
                    m[i].div_ceil(s[i]).saturating_mul(s[i])
                }
            }))
        }
        None => raw,
    };
    let request = AcquisitionRequest {
        resources: missing,
        constraints: Constraints {
            architecture: h.architecture.clone(),
            country: h.country.as_ref().map(|c| c.to_ascii_uppercase()),
            labels: h.labels.clone(),
            max_price_micros_per_hour: h.max_price_micros_per_hour.map(|p| p.saturating_mul(count)),
            currency: h.currency.clone(),
            max_carbon_g_per_kwh: h.max_carbon_g_per_kwh,
            gpu_model: h.gpu.as_ref().and_then(|g| g.model.clone()),
            ..Constraints::default()
        },
        duration_ms: hints.acquire_duration_ms.unwrap_or(3_600_000),
    };
    Decision::Acquire {
        plan: Box::new(AcquirePlan {
            placed: assignments,
            unplaced,
            missing,
            request,
        }),
        candidates,
    }
}

/// The decision after the buyer failed: every replica that needed capacity stays
/// pending with this reason.
pub fn unschedulable_after(decision: Decision, buy_error: &str) -> Decision {
    match decision {
        Decision::Acquire { plan, candidates } => {
            let rejected: Vec<String> = candidates
                .iter()
                .filter(|c| !c.rejected.is_empty())
                .map(|c| {
                    format!(
                        "{} ({})",
                        c.node.short(),
                        c.rejected
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })
                .collect();
            Decision::Unschedulable {
                reason: format!(
                    "replicas {:?} need {} and buying failed: {buy_error}; rejected: {}",
                    plan.unplaced,
                    plan.missing,
                    if rejected.is_empty() {
                        "no nodes".to_string()
                    } else {
                        rejected.join(", ")
                    }
                ),
                candidates,
            }
        }
        other => other,
    }
}
