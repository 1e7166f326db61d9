//! A market of providers and buyers on a simulated network.
//!
//! Every provider runs the real [`Ledger`], every buyer the real [`Acquisition`];
//! only the clock, the network and the disk are simulated. Messages are delivered
//! after a latency drawn from a seeded generator, or lost; "persisting" is instant.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use fluidos_contracts::rear::{Request, Response};
use fluidos_contracts::{
    Architecture, Characteristics, FabricParams, Flavor, FlavorId, Location, NodeId,
    Partitionability, Price, PriceModel, PricePeriod, Properties, Resources, SecretKey, Timestamp,
    WireGuardKey,
};
use fluidos_core::buyer::{
    Acquisition, AcquisitionEvent, AcquisitionOptions, AcquisitionRequest, Constraints,
};
use fluidos_core::ledger::{FlavorTemplate, Ledger, LedgerConfig};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct MarketConfig {
    /// Seed of everything random: keys, prices, latencies, losses.
    pub seed: u64,
    /// Number of providers.
    pub providers: usize,
    /// Number of buyers, all starting at time zero.
    pub buyers: usize,
    /// CPU each provider sells, in millicores.
    pub provider_cpu_millis: u64,
    /// CPU each buyer wants, in millicores.
    pub buyer_cpu_millis: u64,
    /// One-way latency range of every message, in milliseconds.
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost, in parts per million.
    pub loss_ppm: u32,
    /// Providers that never answer (the first `silent` of them).
    pub silent: usize,
    /// How long a buyer waits for each answer.
    pub request_timeout: Duration,
}

impl Default for MarketConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            providers: 8,
            buyers: 64,
            provider_cpu_millis: 8_000,
            buyer_cpu_millis: 1_000,
            latency_ms: (5, 50),
            loss_ppm: 0,
            silent: 0,
            request_timeout: Duration::from_millis(500),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketReport {
    /// Buyers that got a contract.
    pub bought: usize,
    /// Buyers that gave up.
    pub failed: usize,
    /// CPU sold per provider (millicores), in provider order.
    pub sold_per_provider: Vec<u64>,
    /// Simulated time until each buyer finished, in ms, sorted.
    pub finish_ms: Vec<u64>,
    /// Messages delivered and lost.
    pub messages: (u64, u64),
    /// Whether any provider ever had more committed than its capacity.
    pub oversold: bool,
}

impl MarketReport {
    /// The `p`-th percentile (0–100) of the finishing times.
    pub fn percentile_ms(&self, p: usize) -> u64 {
        if self.finish_ms.is_empty() {
            return 0;
        }
        let i = (self.finish_ms.len() - 1) * p / 100;
        self.finish_ms[i]
    }
}

/// A small deterministic generator (SplitMix64): enough for latencies and choices.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

enum Event {
    /// A request arrives at a provider.
    ToProvider {
        from: NodeId,
        to: usize,
        request: Request,
    },
    /// A response arrives at a buyer.
    ToBuyer {
        from: NodeId,
        to: usize,
        response: Response,
    },
    /// A buyer's timer fires.
    Timer { buyer: usize },
}

fn fabric(rng: &mut Rng) -> FabricParams {
    FabricParams {
        wireguard_key: WireGuardKey(rng.bytes32()),
        endpoints: vec![],
        overlay_address: None,
    }
}

fn template(rng: &mut Rng, i: usize, cpu: u64) -> (FlavorTemplate, Resources) {
    let capacity = Resources {
        cpu_millis: cpu,
        memory_bytes: cpu / 1000 * (2 << 30),
        storage_bytes: 0,
        pods: 1000,
        gpus: 0,
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&rng.bytes32()[..16]);
    let countries = ["IT", "DE", "FR", "ES"];
    let flavor = Flavor {
        id: FlavorId(id),
        owner: SecretKey::from_seed(&[0; 32]).node_id(),
        characteristics: Characteristics {
            resources: capacity,
            architecture: Architecture::X86_64,
            gpu: None,
        },
        properties: Properties {
            location: Some(Location {
                country: countries[i % countries.len()].into(),
                city: None,
                lat_e6: None,
                lon_e6: None,
            }),
            ..Properties::default()
        },
        policy: Partitionability {
            partitionable: true,
            min: Resources {
                cpu_millis: 500,
                memory_bytes: 512 << 20,
                pods: 1,
                ..Resources::ZERO
            },
            step: Resources {
                cpu_millis: 500,
                memory_bytes: 512 << 20,
                pods: 1,
                ..Resources::ZERO
            },
        },
        price: Price {
            amount_micros: rng.range(500_000, 2_000_000),
            currency: "EUR".into(),
            period: PricePeriod::Hour,
            model: PriceModel::Reserved,
        },
        price_basis: capacity,
        valid_until: Timestamp(u64::MAX),
        revision: 1,
    };
    (FlavorTemplate::from_flavor(&flavor), capacity)
}

/// Runs one market to completion (every buyer done or failed) and reports.
pub fn run(cfg: &MarketConfig) -> MarketReport {
    let mut rng = Rng(cfg.seed);
    // Simulated time: `start` plus an offset; the wall clock moves with it.
    let start = Instant::now();
    let wall0 = Timestamp(1_800_000_000_000);
    let mut now_ms: u64 = 0;
    let at = |ms: u64| start + Duration::from_millis(ms);
    let wall = |ms: u64| wall0.plus_ms(ms);

    let mut providers: Vec<(NodeId, Ledger)> = (0..cfg.providers)
        .map(|i| {
            let key = SecretKey::from_seed(&rng.bytes32());
            let (t, capacity) = template(&mut rng, i, cfg.provider_cpu_millis);
            let mut config = LedgerConfig::new(capacity, vec![t], fabric(&mut rng));
            config.id_seed = Some(rng.next());
            (key.node_id(), Ledger::new(key, config, wall(0)))
        })
        .collect();
    let index: BTreeMap<NodeId, usize> = providers
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let candidates: Vec<NodeId> = providers.iter().map(|(id, _)| *id).collect();

    let mut buyers: Vec<(NodeId, Acquisition, Option<u64>)> = (0..cfg.buyers)
        .map(|_| {
            let key = SecretKey::from_seed(&rng.bytes32());
            let id = key.node_id();
            let request = AcquisitionRequest {
                resources: Resources {
                    cpu_millis: cfg.buyer_cpu_millis,
                    memory_bytes: 1 << 30,
                    ..Resources::ZERO
                },
                constraints: Constraints::default(),
                duration_ms: 3_600_000,
            };
            let mut seed = [0u8; 16];
            seed.copy_from_slice(&rng.bytes32()[..16]);
            let options = AcquisitionOptions::default()
                .with_request_timeout(cfg.request_timeout)
                .with_wall_clock(wall(0))
                .with_nonce_seed(seed);
            let acq = Acquisition::with_options(
                key,
                request,
                candidates.clone(),
                fabric(&mut rng),
                options,
                at(0),
            );
            (id, acq, None)
        })
        .collect();

    let mut queue: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut events: BTreeMap<usize, Event> = BTreeMap::new();
    let mut seq: u64 = 0;
    let mut report = MarketReport::default();
    let mut bought = 0;
    let mut failed = 0;
    let mut schedule = |queue: &mut BinaryHeap<Reverse<(u64, u64, usize)>>,
                        events: &mut BTreeMap<usize, Event>,
                        when: u64,
                        ev: Event| {
        seq += 1;
        let key = seq as usize;
        events.insert(key, ev);
        queue.push(Reverse((when, seq, key)));
    };

    // Buyers whose state machine may have something to say; all of them at first.
    let mut dirty: Vec<usize> = (0..buyers.len()).collect();
    let mut armed: Vec<Option<u64>> = vec![None; buyers.len()];
    // Bounded: every buyer finishes within its attempts and timeouts.
    let mut steps = 0u64;
    loop {
        for b in dirty.drain(..) {
            let (me, acq, done) = &mut buyers[b];
            if done.is_some() {
                continue;
            }
            let mut again = true;
            while again {
                again = false;
                while let Some((to, request)) = acq.poll_transmit() {
                    let Some(&p) = index.get(&to) else { continue };
                    if p < cfg.silent || rng.range(0, 999_999) < u64::from(cfg.loss_ppm) {
                        report.messages.1 += 1;
                        continue;
                    }
                    let lat = rng.range(cfg.latency_ms.0, cfg.latency_ms.1);
                    schedule(
                        &mut queue,
                        &mut events,
                        now_ms + lat,
                        Event::ToProvider {
                            from: *me,
                            to: p,
                            request,
                        },
                    );
                }
                while let Some(event) = acq.poll_event() {
                    match event {
                        AcquisitionEvent::Persist(_) => {
                            acq.handle_persisted(at(now_ms));
                            again = true;
                        }
                        AcquisitionEvent::Done(_) => {
                            *done = Some(now_ms);
                            bought += 1;
                        }
                        AcquisitionEvent::Failed(_) => {
                            *done = Some(now_ms);
                            failed += 1;
                        }
                        _ => {}
                    }
                }
            }
            if done.is_none() {
                let next = acq
                    .poll_timeout()
                    .map(|t| (t.saturating_duration_since(start).as_millis() as u64).max(now_ms));
                // Arm a timer only when the deadline moves, so the queue stays bounded.
                if next.is_some() && next != armed[b] {
                    armed[b] = next;
                    if let Some(when) = next {
                        schedule(&mut queue, &mut events, when, Event::Timer { buyer: b });
                    }
                }
            }
        }
        if buyers.iter().all(|b| b.2.is_some()) {
            break;
        }
        let Some(Reverse((when, _, key))) = queue.pop() else {
            break;
        };
        steps += 1;
        if steps > 10_000_000 {
            break;
        }
        now_ms = now_ms.max(when);
        let Some(event) = events.remove(&key) else {
            continue;
        };
        match event {
            Event::ToProvider { from, to, request } => {
                report.messages.0 += 1;
                let (pid, ledger) = &mut providers[to];
                let (response, _records) = ledger.handle(from, request, wall(now_ms));
                if !ledger.committed().fits_within(&ledger.capacity()) {
                    report.oversold = true;
                }
                let Some(b) = buyers.iter().position(|(id, _, _)| *id == from) else {
                    continue;
                };
                if rng.range(0, 999_999) < u64::from(cfg.loss_ppm) {
                    report.messages.1 += 1;
                    continue;
                }
                let lat = rng.range(cfg.latency_ms.0, cfg.latency_ms.1);
                let pid = *pid;
                schedule(
                    &mut queue,
                    &mut events,
                    now_ms + lat,
                    Event::ToBuyer {
                        from: pid,
                        to: b,
                        response,
                    },
                );
            }
            Event::ToBuyer { from, to, response } => {
                report.messages.0 += 1;
                let (_, acq, done) = &mut buyers[to];
                if done.is_none() {
                    acq.handle_response(from, response, at(now_ms));
                    dirty.push(to);
                }
            }
            Event::Timer { buyer } => {
                if armed[buyer] == Some(when) {
                    armed[buyer] = None;
                }
                let (_, acq, done) = &mut buyers[buyer];
                if done.is_none() {
                    acq.handle_timeout(at(now_ms));
                    dirty.push(buyer);
                }
            }
        }
    }
    report.bought = bought;
    report.failed = failed;
    report.sold_per_provider = providers
        .iter()
        .map(|(_, l)| l.contracts().map(|c| c.terms().partition.cpu_millis).sum())
        .collect();
    let mut finish: Vec<u64> = buyers.iter().filter_map(|b| b.2).collect();
    finish.sort_unstable();
    report.finish_ms = finish;
    report
}
