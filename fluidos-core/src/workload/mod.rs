//! Workloads: what a user asks to run ([`WorkloadSpec`]) and where it may run
//! ([`Intent`]).
//!
//! A spec is written in TOML or JSON (see `docs/WORKLOADS.md` for the format and
//! examples) and parsed with [`WorkloadSpec::from_toml`] / [`WorkloadSpec::from_json`].
//! Parsing checks everything that can be checked without a node: a spec that
//! parses is complete and consistent (parse, don't validate), and every failure is
//! a [`SpecError`] naming the field.

mod end;
mod intent;
mod quantity;
mod restart;
mod spec;

pub use end::EndCause;
pub use intent::{GpuRequirement, Hard, Intent, Preference, PreferenceKind};
pub use quantity::ResourceAmounts;
pub use restart::{Ending, RESTART_BACKOFF_MAX, RESTART_BACKOFF_MIN, backoff, restart_after};
pub use spec::{MAX_REPLICAS, Port, Protocol, RestartPolicy, Run, SpecError, WorkloadSpec};
