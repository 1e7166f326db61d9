//! Usage telemetry of the replicas run here under contracts, sampled every few seconds
//! and written into each buyer's view.

use super::*;

impl Workloads {
    /// Takes a usage sample of the replicas run here under contracts (one at a time).
    pub(in crate::node::workloads) fn sample_usage(&mut self) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        if self.hosted.sampling || !self.hosted.any_contracted() {
            return;
        }
        self.hosted.sampling = true;
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let sample = runtime.usage().await;
            let at_ms = fluidos_contracts::Timestamp::now().0;
            let _ = done
                .send(Done::Host(HostDone::Usage { at_ms, sample }))
                .await;
        });
    }

    /// A usage sample arrived: into each contract's meter, and its report into the
    /// entry this node shows the contract's buyer.
    pub(super) fn usage_sampled(&mut self, at_ms: u64, sample: Vec<ReplicaUsage>) {
        self.hosted.sampling = false;
        let mut per: BTreeMap<ContractId, BTreeMap<String, ReplicaMeter>> = BTreeMap::new();
        for u in sample {
            let Some(key) = self.hosted.key_of(&u.id).cloned() else {
                continue;
            };
            let Some(c) = self.hosted.replicas.get(&key).and_then(|r| r.contract) else {
                continue;
            };
            per.entry(c).or_default().insert(
                meter_key(&key),
                ReplicaMeter {
                    cpu_time_ns: u.cpu_time_ns,
                    memory_bytes: u.memory_bytes,
                },
            );
        }
        // Contracts with live replicas that were not measured still get a sample (their
        // counters hold), so a consumer sees the report is fresh.
        let live: Vec<ContractId> = self
            .hosted
            .replicas
            .values()
            .filter_map(|r| r.contract)
            .collect();
        for c in live {
            per.entry(c).or_default();
        }
        let mut peers = std::collections::BTreeSet::new();
        for (c, measured) in per {
            let Some(peer) = self.active(&c).map(|a| a.peer) else {
                continue;
            };
            self.hosted
                .meters
                .entry(c)
                .or_default()
                .sample(at_ms, &measured);
            peers.insert(peer);
        }
        for peer in peers {
            self.refresh_entry(&peer);
        }
        self.touch();
    }
}
