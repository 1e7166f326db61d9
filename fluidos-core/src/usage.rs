//! Usage telemetry per contract (D2.1 §6.4.6) and the cost of a pay-per-use contract.
//!
//! I/O-free, like the ledger:
//! - a provider keeps one [`UsageMeter`] per contract it hosts replicas under, feeds it
//!   the runtime's samples ([`UsageMeter::sample`]) and the ends of replicas
//!   ([`UsageMeter::ended`]), and writes [`UsageMeter::report`] into the view (its node
//!   entry for the buyer, key `usage/<contract hex>`); after a restart it resumes from
//!   the report it wrote last ([`UsageMeter::resume`]), so the counters never go back;
//! - either party computes what a pay-per-use contract costs so far with [`cost`], from a
//!   report and the signed quote alone.

use std::collections::BTreeMap;

use fluidos_contracts::{PriceModel, PricePeriod, Quote, Resources};
use serde::{Deserialize, Serialize};

/// What one replica has used, as the last sample said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaMeter {
    /// CPU time since the replica (last) started, ns.
    pub cpu_time_ns: u64,
    /// Memory in use at the sample, bytes.
    pub memory_bytes: u64,
}

/// One contract's measured usage, as the provider reports it in the view. Counters a
/// consumer can check: `cpu_time_ns`, `memory_byte_seconds` and `samples` never decrease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractUsage {
    /// CPU time used by every replica ever run under the contract, ns.
    pub cpu_time_ns: u64,
    /// Memory in use now by the contract's replicas together, bytes.
    pub memory_bytes: u64,
    /// The most memory the replicas used together at one sample, bytes.
    pub memory_peak_bytes: u64,
    /// Memory integrated over time (bytes × seconds), between samples.
    pub memory_byte_seconds: u64,
    /// Average cpu rate between the last two samples, in thousandths of a core.
    pub cpu_rate_millis: u64,
    /// Replicas measured at the last sample.
    pub running: u32,
    /// Samples taken so far.
    pub samples: u64,
    /// Wall-clock UNIX ms of the first sample.
    pub since_ms: u64,
    /// Wall-clock UNIX ms of the last sample.
    pub sampled_at_ms: u64,
    /// Per live replica (`<workload>/<index>`), what it used at the last sample.
    #[serde(default)]
    pub replicas: BTreeMap<String, ReplicaMeter>,
}

/// Keeps one contract's counters from the runtime's samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageMeter {
    /// CPU of replicas that ended (or restarted), ns.
    ended_cpu_ns: u64,
    report: ContractUsage,
}

impl UsageMeter {
    /// A meter with nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A meter that continues `last`, the report written before a restart. Its replicas'
    /// counters go on growing from where they were (adopted replicas were never
    /// restarted); a smaller counter later means the replica started again.
    pub fn resume(last: ContractUsage) -> Self {
        let live: u64 = last
            .replicas
            .values()
            .fold(0u64, |a, r| a.saturating_add(r.cpu_time_ns));
        Self {
            ended_cpu_ns: last.cpu_time_ns.saturating_sub(live),
            report: last,
        }
    }

    /// The report to write now.
    pub fn report(&self) -> &ContractUsage {
        &self.report
    }

    /// Replica `key` ended: what it used stays in the totals; it is no longer live.
    pub fn ended(&mut self, key: &str) {
        if let Some(r) = self.report.replicas.remove(key) {
            self.ended_cpu_ns = self.ended_cpu_ns.saturating_add(r.cpu_time_ns);
        }
        self.report.memory_bytes = self.live_memory();
        self.report.running = u32::try_from(self.report.replicas.len()).unwrap_or(u32::MAX);
    }

    fn live_memory(&self) -> u64 {
        self.report
            .replicas
            .values()
            .fold(0u64, |a, r| a.saturating_add(r.memory_bytes))
    }

    /// A sample at wall-clock `now_ms` of the replicas that could be measured, by key.
    /// Live replicas missing from it keep their last values (a failed measurement is not
    /// an end: call [`ended`](Self::ended) for that).
    pub fn sample(&mut self, now_ms: u64, measured: &BTreeMap<String, ReplicaMeter>) {
        let before = self.report.cpu_time_ns;
        let r = &mut self.report;
        for (key, m) in measured {
            // The counter went back: the replica started again; keep what it used.
            if let Some(old) = r.replicas.get(key)
                && m.cpu_time_ns < old.cpu_time_ns
            {
                self.ended_cpu_ns = self.ended_cpu_ns.saturating_add(old.cpu_time_ns);
            }
            r.replicas.insert(key.clone(), *m);
        }
        let live_cpu = r
            .replicas
            .values()
            .fold(0u64, |a, m| a.saturating_add(m.cpu_time_ns));
        // Never backwards, whatever the samples say.
        let total = self.ended_cpu_ns.saturating_add(live_cpu).max(before);
        let memory = r
            .replicas
            .values()
            .fold(0u64, |a, m| a.saturating_add(m.memory_bytes));
        if r.samples > 0 && now_ms > r.sampled_at_ms {
            let dt_ms = now_ms - r.sampled_at_ms;
            // Memory held since the last sample: the mean of the two readings.
            let mean = (u128::from(r.memory_bytes) + u128::from(memory)) / 2;
            let add = mean * u128::from(dt_ms) / 1000;
            r.memory_byte_seconds = r
                .memory_byte_seconds
                .saturating_add(u64::try_from(add).unwrap_or(u64::MAX));
            // ns per ms = millicores × 1000.
            r.cpu_rate_millis = (total - before) / dt_ms / 1000;
        }
        if r.samples == 0 {
            r.since_ms = now_ms;
        }
        r.cpu_time_ns = total;
        r.memory_bytes = memory;
        r.memory_peak_bytes = r.memory_peak_bytes.max(memory);
        r.running = u32::try_from(measured.len()).unwrap_or(u32::MAX);
        r.samples = r.samples.saturating_add(1);
        r.sampled_at_ms = now_ms.max(r.sampled_at_ms);
    }
}

/// What a contract's usage costs so far, and whether it goes beyond the contract.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCost {
    /// The cost so far, micro-units of the quote's currency: the larger of the cpu and
    /// memory shares (a partition is priced by its dominant share).
    pub micros: u64,
    /// What the cpu time alone costs.
    pub cpu_micros: u64,
    /// What the memory held over time alone costs.
    pub memory_micros: u64,
    /// The quote's currency.
    pub currency: String,
    /// The replicas use more memory now than the contract's partition holds.
    pub over_memory: bool,
    /// The replicas ran faster than the contract's cpu between the last two samples.
    pub over_cpu: bool,
}

/// Seconds in a price period.
pub fn period_seconds(p: PricePeriod) -> u64 {
    match p {
        PricePeriod::Hour => 3_600,
        PricePeriod::Day => 86_400,
        PricePeriod::Month => 30 * 86_400,
    }
}

/// The cost so far of a `pay_per_use` contract with `quote` for `partition`, from the
/// provider's `usage` report: using the whole partition for one period costs the quoted
/// amount, so cpu time costs `amount × cpu_s / (cores × period_s)` and memory
/// `amount × byte_s / (bytes × period_s)`; the cost is the larger (the dominant share).
/// `None` for a `reserved` contract (billed whole, whatever it used).
pub fn cost(usage: &ContractUsage, quote: &Quote, partition: &Resources) -> Option<UsageCost> {
    if quote.model != PriceModel::PayPerUse {
        return None;
    }
    let period = u128::from(period_seconds(quote.period));
    let amount = u128::from(quote.amount_micros);
    let share = |used: u128, whole: u128| -> u64 {
        if whole == 0 {
            return 0;
        }
        u64::try_from(amount.saturating_mul(used) / whole).unwrap_or(u64::MAX)
    };
    // cores × period in ns: cpu_millis × 1e6 × period_s.
    let cpu_whole = u128::from(partition.cpu_millis) * 1_000_000 * period;
    let mem_whole = u128::from(partition.memory_bytes) * period;
    let cpu_micros = share(u128::from(usage.cpu_time_ns), cpu_whole);
    let memory_micros = share(u128::from(usage.memory_byte_seconds), mem_whole);
    Some(UsageCost {
        micros: cpu_micros.max(memory_micros),
        cpu_micros,
        memory_micros,
        currency: quote.currency.clone(),
        over_memory: partition.memory_bytes > 0 && usage.memory_bytes > partition.memory_bytes,
        over_cpu: partition.cpu_millis > 0 && usage.cpu_rate_millis > partition.cpu_millis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(model: PriceModel, amount: u64) -> Quote {
        Quote {
            amount_micros: amount,
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model,
        }
    }

    fn part(cpu_millis: u64, memory_bytes: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes,
            ..Resources::ZERO
        }
    }

    fn m(cpu: u64, mem: u64) -> ReplicaMeter {
        ReplicaMeter {
            cpu_time_ns: cpu,
            memory_bytes: mem,
        }
    }

    fn one(key: &str, cpu: u64, mem: u64) -> BTreeMap<String, ReplicaMeter> {
        [(key.to_string(), m(cpu, mem))].into()
    }

    #[test]
    fn a_full_partition_for_a_full_period_costs_the_quote() {
        let u = ContractUsage {
            // 1 core for 1 hour.
            cpu_time_ns: 3_600 * 1_000_000_000,
            memory_byte_seconds: 0,
            ..ContractUsage::default()
        };
        let c = cost(
            &u,
            &quote(PriceModel::PayPerUse, 2_000_000),
            &part(1000, 1 << 30),
        )
        .unwrap();
        assert_eq!(c.micros, 2_000_000);
        assert_eq!(c.cpu_micros, 2_000_000);
        assert_eq!(c.memory_micros, 0);
        assert_eq!(c.currency, "EUR");
        // Half the memory for the hour costs half; the cost is the dominant share.
        let u = ContractUsage {
            cpu_time_ns: 360 * 1_000_000_000,
            memory_byte_seconds: (1u64 << 29) * 3_600,
            ..ContractUsage::default()
        };
        let c = cost(
            &u,
            &quote(PriceModel::PayPerUse, 2_000_000),
            &part(1000, 1 << 30),
        )
        .unwrap();
        assert_eq!(
            (c.cpu_micros, c.memory_micros, c.micros),
            (200_000, 1_000_000, 1_000_000)
        );
    }

    #[test]
    fn reserved_contracts_have_no_usage_cost_and_zero_partitions_cost_nothing() {
        let u = ContractUsage {
            cpu_time_ns: 1 << 40,
            ..ContractUsage::default()
        };
        assert_eq!(
            cost(&u, &quote(PriceModel::Reserved, 5), &part(1000, 1)),
            None
        );
        let c = cost(&u, &quote(PriceModel::PayPerUse, 5), &part(0, 0)).unwrap();
        assert_eq!(c.micros, 0);
        // Huge counters saturate instead of overflowing.
        let u = ContractUsage {
            cpu_time_ns: u64::MAX,
            memory_byte_seconds: u64::MAX,
            ..ContractUsage::default()
        };
        let c = cost(&u, &quote(PriceModel::PayPerUse, u64::MAX), &part(1, 1)).unwrap();
        assert_eq!(c.micros, u64::MAX);
    }

    #[test]
    fn overuse_is_flagged() {
        let u = ContractUsage {
            memory_bytes: 600,
            cpu_rate_millis: 1500,
            ..ContractUsage::default()
        };
        let c = cost(&u, &quote(PriceModel::PayPerUse, 1), &part(1000, 512)).unwrap();
        assert!(c.over_memory && c.over_cpu);
        let c = cost(&u, &quote(PriceModel::PayPerUse, 1), &part(2000, 1024)).unwrap();
        assert!(!c.over_memory && !c.over_cpu);
    }

    #[test]
    fn counters_grow_across_ends_restarts_and_missed_samples() {
        let mut meter = UsageMeter::new();
        meter.sample(1_000, &one("w/0", 1_000_000_000, 100));
        assert_eq!(meter.report().cpu_time_ns, 1_000_000_000);
        assert_eq!(meter.report().since_ms, 1_000);
        // 1 s later it used 0.5 s more: 500 millicores; 100 bytes held for 1 s.
        meter.sample(2_000, &one("w/0", 1_500_000_000, 100));
        assert_eq!(meter.report().cpu_rate_millis, 500);
        assert_eq!(meter.report().memory_byte_seconds, 100);
        // A sample that missed it keeps its last values.
        meter.sample(3_000, &BTreeMap::new());
        assert_eq!(meter.report().cpu_time_ns, 1_500_000_000);
        // It restarted: its counter is smaller; what it used before stays.
        meter.sample(4_000, &one("w/0", 200_000_000, 50));
        assert_eq!(meter.report().cpu_time_ns, 1_700_000_000);
        // It ended; a second replica runs.
        meter.ended("w/0");
        assert_eq!(meter.report().memory_bytes, 0);
        meter.sample(5_000, &one("w/1", 100_000_000, 10));
        let r = meter.report().clone();
        assert_eq!(r.cpu_time_ns, 1_800_000_000);
        assert_eq!(r.memory_peak_bytes, 100);
        assert_eq!(r.samples, 5);
        // After a restart the meter resumes: adopted replicas go on from their counters.
        let mut again = UsageMeter::resume(r);
        again.sample(6_000, &one("w/1", 300_000_000, 10));
        assert_eq!(again.report().cpu_time_ns, 2_000_000_000);
        assert_eq!(again.report().samples, 6);
    }
}
