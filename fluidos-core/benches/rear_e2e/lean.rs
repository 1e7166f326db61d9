//! The lean part: the provider's own rate, under load from lean buyers.
//!
//! A lean buyer is as cheap as a load generator can be while still doing a
//! buyer's real work. It has its own ed25519 identity and its own libp2p
//! connection (TCP or QUIC, Noise, yamux) that carries only `/fluidos/rear/1`,
//! and it runs the real I/O-free [`Acquisition`]: it ranks the listing, verifies
//! the provider's signature on the offered terms and countersigns them. Like a
//! node, it reuses a listing for [`DEFAULT_OFFER_CACHE_TTL`].
//!
//! What it leaves out is what a buyer *node* adds around the protocol: discovery
//! (Kademlia, identify, ping and their handlers on every connection), the engine
//! and discovery tasks and the channels between them, and its own store. The
//! countersigned contract is kept in memory, not fsynced, so the only durable
//! writes of this run are the provider's, and the only task hops are the
//! provider's.

use std::collections::HashSet;

use fluidos_contracts::{FabricParams, SecretKey};
use fluidos_core::DEFAULT_OFFER_CACHE_TTL;
use fluidos_core::buyer::{Acquisition, AcquisitionEvent, AcquisitionOptions, OfferCache};
use fluidos_discovery::codec::{Inbound, REAR_PROTOCOL, RearCodec};
use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm, noise, tcp, yamux};

use super::*;
use crate::throughput::{check_nothing_oversold, failure_reason, report_failures, report_rate};

type Rear = request_response::Behaviour<RearCodec>;

/// How long a lean buyer waits for each answer (as a node's default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A lean buyer: its key, its fabric parameters and its own swarm.
struct LeanBuyer {
    key: SecretKey,
    fabric: FabricParams,
    swarm: Swarm<Rear>,
    provider: NodeId,
    peer: PeerId,
    listings: OfferCache,
}

#[derive(Default)]
struct LeanTally {
    won: Vec<ContractId>,
    lost: BTreeMap<String, usize>,
    latencies: Vec<Duration>,
}

impl LeanBuyer {
    fn new(provider: NodeId, addr: libp2p::Multiaddr) -> Self {
        let key = SecretKey::generate();
        let wireguard = fluidos_fabric::WireGuardSecret::generate();
        let fabric = fluidos_fabric::fabric_params(&wireguard, [], &key.node_id());
        let mut swarm =
            libp2p::SwarmBuilder::with_existing_identity(fluidos_discovery::keypair(&key))
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .unwrap()
                .with_quic()
                .with_behaviour(|_| {
                    Rear::new(
                        [(REAR_PROTOCOL, ProtocolSupport::Outbound)],
                        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                    )
                })
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
        let peer = fluidos_discovery::peer_id(&provider);
        swarm.add_peer_address(peer, addr);
        Self {
            key,
            fabric,
            swarm,
            provider,
            peer,
            listings: OfferCache::new(DEFAULT_OFFER_CACHE_TTL),
        }
    }

    /// Buys until `deadline`.
    async fn run(mut self, deadline: Instant) -> (Self, LeanTally) {
        let mut t = LeanTally::default();
        while Instant::now() < deadline {
            let began = Instant::now();
            match self.buy().await {
                Ok(id) => {
                    t.latencies.push(began.elapsed());
                    t.won.push(id);
                }
                Err(why) => *t.lost.entry(why).or_default() += 1,
            }
        }
        (self, t)
    }

    /// One buy of a one-pod partition, driven as `Node::buy` drives it, with the
    /// swarm in place of discovery and no store.
    async fn buy(&mut self) -> Result<ContractId, String> {
        let now = Instant::now();
        let wall = Timestamp::now();
        let known = self.listings.fresh(&[self.provider], now, wall);
        let options = AcquisitionOptions::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_wall_clock(wall)
            .with_known_offers(known);
        let mut acq = Acquisition::with_options(
            self.key.clone(),
            one_pod(600_000),
            vec![self.provider],
            self.fabric.clone(),
            options,
            now,
        );
        // Answers to an earlier buy's requests (a late reply after a timeout) are
        // not this acquisition's.
        let mut mine: HashSet<OutboundRequestId> = HashSet::new();
        loop {
            let mut progressed = true;
            while progressed {
                progressed = false;
                while let Some((_, request)) = acq.poll_transmit() {
                    progressed = true;
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .send_request(&self.peer, Inbound::Ok(request));
                    mine.insert(id);
                }
                while let Some(event) = acq.poll_event() {
                    progressed = true;
                    match event {
                        AcquisitionEvent::Listed { provider, flavors } => {
                            self.listings.record(provider, flavors, Instant::now());
                        }
                        // No store: the countersigned contract stays in memory.
                        AcquisitionEvent::Persist(_) => acq.handle_persisted(Instant::now()),
                        AcquisitionEvent::Done(contract) => return Ok(contract.id()),
                        AcquisitionEvent::Failed(failure) => {
                            self.listings.forget(&self.provider);
                            return Err(failure_reason(&failure));
                        }
                        _ => {}
                    }
                }
            }
            let wait = acq
                .poll_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(REQUEST_TIMEOUT);
            tokio::select! {
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) if mine.remove(&request_id) => {
                        acq.handle_response(self.provider, response, Instant::now());
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }) if mine.remove(&request_id) => {
                        acq.handle_failure(self.provider, error.to_string(), Instant::now());
                    }
                    _ => {}
                },
                () = tokio::time::sleep(wait) => acq.handle_timeout(Instant::now()),
            }
        }
    }
}

/// `lean`: one provider, `BUYERS` lean buyers buying in a loop for `SECS` seconds.
pub(super) async fn lean(s: &Settings) {
    let dir = bench_dir("rear-e2e-lean");
    let mut p = Provider::start(&dir.path().join("p")).await;
    let addr = dial_addr(&p.listen_addrs().await);
    let provider = p.node_id();
    let mut buyers: Vec<LeanBuyer> = (0..s.buyers)
        .map(|_| LeanBuyer::new(provider, addr.clone()))
        .collect();
    // Warm every connection and listing with one buy each.
    let warm = futures::future::join_all(buyers.iter_mut().map(LeanBuyer::buy)).await;
    let mut held = BTreeSet::new();
    for r in warm {
        held.insert(r.expect("warm-up buy"));
    }
    println!(
        "lean: {} lean buyers connected and warmed ({} contracts)",
        s.buyers,
        held.len()
    );
    let cpu0 = cpu_seconds();
    let provider_cpu0 = p.cpu_seconds();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(s.secs);
    let tasks: Vec<_> = buyers
        .into_iter()
        .map(|b| tokio::spawn(b.run(deadline)))
        .collect();
    let mut won = Vec::new();
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut buyers = Vec::new();
    for task in tasks {
        let (b, t) = task.await.unwrap();
        buyers.push(b);
        won.extend(t.won);
        for (k, v) in t.lost {
            *lost.entry(k).or_default() += v;
        }
        latencies.extend(t.latencies);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let provider_cpu = p.cpu_seconds() - provider_cpu0;
    latencies.sort();
    report_rate(&p, won.len(), elapsed, cpu, provider_cpu, &latencies);
    report_failures(&lost);
    let pod = Resources {
        pods: 1,
        ..Resources::ZERO
    };
    let won: Vec<(ContractId, Resources)> = won.into_iter().map(|id| (id, pod)).collect();
    held.extend(won.iter().map(|(id, _)| *id));
    check_nothing_oversold(&mut p, &won, held.len() as u64, &held).await;
    drop(buyers);
    p.shutdown().await;
}
