//! The catalog side of the event loop: publishing and withdrawing adverts, searching
//! catalogs with bounded concurrency, checking what the DHT stores, and direct
//! adverts for mDNS and manual peers.

use std::time::Duration;

use fluidos_contracts::{NodeId, Timestamp, Verified};
use futures::StreamExt;
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, InboundRequest, QueryResult, Quorum, Record};
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};
use std::time::Instant;

use libp2p::kad::store::RecordStore;

use crate::advert::{
    Advert, AdvertError, Expected, MAX_ADVERT_ADDRESSES, PublishError, verify_advert_cached,
    verify_signature,
};
use crate::candidates::{Offer, OfferError};
use crate::catalog::{
    CATALOG_SHARDS, CatalogName, advert_key, catalog_key, parse_advert_key, parse_catalog_key,
    shard_of,
};
use crate::codec::{AdvertQuery, AdvertReply};
use crate::event_loop::{EventLoop, Lookup, MAX_DIRECT_PEERS, Query};
use crate::identity::node_id;
use crate::policy::Source;

/// Delay before asking a direct peer again after a failed advert request.
const DIRECT_RETRY: Duration = Duration::from_secs(1);

/// How long the larger of two peers that found each other waits before dialling.
const DIRECT_TIE_BREAK: Duration = Duration::from_millis(500);

/// Queued advert lookups at most; beyond it the next refresh catches up.
const MAX_FETCH_QUEUE: usize = 4096;

/// The wall-clock expiry of an advert as a Kademlia (monotonic) deadline.
fn kad_expiry(expires_at: Timestamp, now: Timestamp) -> Instant {
    Instant::now() + Duration::from_millis(now.until(expires_at))
}

impl EventLoop {
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.cfg.advert_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn announced_catalogs(&self) -> Vec<CatalogName> {
        self.cfg
            .catalogs
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| self.cfg.outgoing.announces_in(n) && !self.raw_catalogs.contains_key(n))
            .collect()
    }

    /// The addresses put in adverts: listen addresses that are concrete, then
    /// confirmed external ones.
    fn advertised_addresses(&self) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        let concrete = |a: &Multiaddr| {
            !a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        };
        for a in self
            .swarm
            .external_addresses()
            .chain(self.listen_addrs.iter())
        {
            if concrete(a) && !out.contains(a) && out.len() < MAX_ADVERT_ADDRESSES {
                out.push(a.clone());
            }
        }
        out
    }

    fn sign(
        &self,
        catalog: Option<&CatalogName>,
        now: Timestamp,
        ttl_ms: u64,
        seq: u64,
    ) -> Result<Vec<u8>, PublishError> {
        let advert = Advert::new(
            self.node,
            catalog.map(|c| c.to_string()),
            self.advertised_addresses(),
            self.body.clone(),
            now,
            now.plus_ms(ttl_ms),
            seq,
        );
        advert.sign(&self.key).map(|(_, bytes)| bytes)
    }

    /// Whether the current body makes a publishable advert.
    pub(crate) fn check_advert(&self) -> Result<(), PublishError> {
        let longest = self
            .cfg
            .catalogs
            .iter()
            .map(|c| c.name.clone())
            .max_by_key(|n| n.as_str().len());
        self.sign(longest.as_ref(), Timestamp::now(), self.ttl_ms(), self.seq)
            .map(|_| ())
    }

    fn next_seq(&mut self, now: Timestamp) -> u64 {
        // Wall-clock milliseconds keep the sequence growing across restarts too.
        self.seq = (self.seq + 1).max(now.0);
        self.seq
    }

    /// Signs fresh adverts and publishes them in every announced catalog.
    pub(crate) fn publish(&mut self) {
        self.addresses_dirty = false;
        for (catalog, bytes) in self.raw_catalogs.clone() {
            self.store_raw(&catalog, bytes);
        }
        let now = Timestamp::now();
        let seq = self.next_seq(now);
        let ttl = self.ttl_ms();
        self.direct_advert = if self.cfg.outgoing.direct_adverts {
            match self.sign(None, now, ttl, seq) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, "direct advert not built");
                    None
                }
            }
        } else {
            None
        };
        for catalog in self.announced_catalogs() {
            let bytes = match self.sign(Some(&catalog), now, ttl, seq) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%catalog, error = %e, "advert not published");
                    continue;
                }
            };
            self.own_adverts.insert(catalog.clone(), bytes.clone());
            if self.awaits_catalog(&catalog) {
                // Stored once the catalog address is reached (`catalog_peer_identified`).
                continue;
            }
            let mut record = Record::new(advert_key(&catalog, &self.node), bytes);
            record.expires = Some(kad_expiry(now.plus_ms(ttl), now));
            self.put(record, &catalog);
            match self
                .swarm
                .behaviour_mut()
                .kad
                .start_providing(catalog_key(&catalog, shard_of(&self.node)))
            {
                Ok(id) => {
                    self.queries.insert(id, Query::Publish);
                }
                Err(e) => tracing::warn!(%catalog, error = ?e, "membership not stored"),
            }
        }
        tracing::debug!(node = %self.node.short(), seq, "adverts published");
    }

    /// Whether `catalog` has an address to reach that was not reached yet: the
    /// DHT then holds nobody to store records with, and publishing waits.
    pub(crate) fn awaits_catalog(&self, catalog: &CatalogName) -> bool {
        self.cfg.catch_up
            && !self
                .catalog_progress
                .get(catalog)
                .is_some_and(|p| p.reached)
            && self
                .bootstrap
                .values()
                .any(|b| b.catalogs.contains(catalog))
    }

    fn put(&mut self, record: Record, catalog: &CatalogName) {
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)
        {
            Ok(id) => {
                self.queries.insert(id, Query::Publish);
            }
            Err(e) => tracing::warn!(%catalog, error = ?e, "advert not stored"),
        }
    }

    pub(crate) fn danger_raw_advert(&mut self, catalog: CatalogName, bytes: Vec<u8>) {
        self.raw_catalogs.insert(catalog.clone(), bytes.clone());
        self.store_raw(&catalog, bytes);
        if let Ok(id) = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(catalog_key(&catalog, shard_of(&self.node)))
        {
            self.queries.insert(id, Query::Publish);
        }
    }

    /// Keeps a raw advert in the local store with a fresh expiry, as a node
    /// re-publishing its advert would (else it would vanish after one TTL).
    fn store_raw(&mut self, catalog: &CatalogName, bytes: Vec<u8>) {
        let mut record = Record::new(advert_key(catalog, &self.node), bytes);
        record.expires = Some(Instant::now() + self.cfg.advert_ttl);
        record.publisher = Some(*self.swarm.local_peer_id());
        // Straight into the local store, past every check: peers find it when they ask us.
        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
            tracing::warn!(error = ?e, "raw advert not stored");
        }
    }

    /// Publishes signed withdrawals and waits (bounded) for them to be stored.
    pub(crate) async fn withdraw(&mut self) {
        let now = Timestamp::now();
        let seq = self.next_seq(now);
        let mut waiting = Vec::new();
        for catalog in self.announced_catalogs() {
            let Ok(bytes) = self.sign(Some(&catalog), now, 0, seq) else {
                continue;
            };
            let mut record = Record::new(advert_key(&catalog, &self.node), bytes);
            record.expires = Some(Instant::now() + self.cfg.advert_ttl);
            if let Ok(id) = self
                .swarm
                .behaviour_mut()
                .kad
                .put_record(record, Quorum::One)
            {
                waiting.push(id);
            }
            self.swarm
                .behaviour_mut()
                .kad
                .stop_providing(&catalog_key(&catalog, shard_of(&self.node)));
        }
        let deadline = Instant::now() + crate::event_loop::WITHDRAW_TIMEOUT;
        while waiting
            .iter()
            .any(|id| self.swarm.behaviour().kad.query(id).is_some())
        {
            match tokio::time::timeout_at(deadline.into(), self.swarm.select_next_some()).await {
                Ok(ev) => self.on_swarm_event(ev),
                Err(_) => break,
            }
        }
        tracing::debug!(node = %self.node.short(), "adverts withdrawn");
    }

    /// Searches every catalog, asks every direct peer again and gossips.
    pub(crate) fn refresh(&mut self) {
        let catalogs: Vec<CatalogName> = self.cfg.catalogs.iter().map(|c| c.name.clone()).collect();
        for catalog in catalogs {
            self.search_catalog(&catalog);
        }
        self.refresh_direct();
        self.gossip();
    }

    /// Searches each shard of `catalog` for its members.
    pub(crate) fn search_catalog(&mut self, catalog: &CatalogName) {
        for shard in 0..CATALOG_SHARDS {
            self.enqueue(Lookup::Members(catalog.clone(), shard));
        }
    }

    /// Asks every direct peer for its advert again.
    pub(crate) fn refresh_direct(&mut self) {
        let peers: Vec<(PeerId, Vec<Multiaddr>)> = self
            .direct_peers
            .iter()
            .map(|(p, d)| (*p, d.addrs.clone()))
            .collect();
        for (peer, addrs) in peers {
            self.reach_direct_peer(peer, addrs);
        }
    }

    /// Asks a connected direct peer for its advert, or dials it first.
    fn reach_direct_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) {
            self.ask_advert(peer);
        } else if let Err(e) = self
            .swarm
            .dial(DialOpts::peer_id(peer).addresses(addrs).build())
        {
            tracing::debug!(%peer, error = %e, "direct peer dial failed");
        }
    }

    pub(crate) fn enqueue_fetch(&mut self, catalog: CatalogName, node: NodeId) {
        let recently = self
            .fetched
            .get(&(catalog.clone(), node))
            .is_some_and(|t| t.elapsed() < self.cfg.republish_interval);
        if node == self.node || recently || self.candidates.policy().admits_node(&node).is_err() {
            return;
        }
        self.enqueue(Lookup::Advert(catalog, node));
    }

    /// Queues a lookup unless the same one is queued or running. Lookups run at most
    /// `max_concurrent_fetches` at a time: Kademlia allows 32 streams per connection,
    /// and a burst of parallel queries to the same few peers would exceed it.
    fn enqueue(&mut self, lookup: Lookup) {
        if self.queued.contains(&lookup) || self.fetch_queue.len() >= MAX_FETCH_QUEUE {
            return;
        }
        self.queued.insert(lookup.clone());
        self.fetch_queue.push_back(lookup);
        self.pump_fetches();
    }

    fn pump_fetches(&mut self) {
        while self.fetches_in_flight < self.cfg.max_concurrent_fetches {
            let Some(lookup) = self.fetch_queue.pop_front() else {
                break;
            };
            let kad = &mut self.swarm.behaviour_mut().kad;
            let id = match &lookup {
                Lookup::Members(catalog, shard) => {
                    self.stats.member_searches += 1;
                    kad.get_providers(catalog_key(catalog, *shard))
                }
                Lookup::Advert(catalog, node) => {
                    self.stats.advert_lookups += 1;
                    kad.get_record(advert_key(catalog, node))
                }
            };
            self.fetches_in_flight += 1;
            self.queries
                .insert(id, Query::Lookup { lookup, slot: true });
        }
    }

    fn release_slot(&mut self, id: &kad::QueryId) {
        if let Some(Query::Lookup { lookup, slot }) = self.queries.get_mut(id)
            && *slot
        {
            *slot = false;
            let lookup = lookup.clone();
            self.queued.remove(&lookup);
            self.fetches_in_flight = self.fetches_in_flight.saturating_sub(1);
            self.pump_fetches();
        }
    }

    pub(crate) fn reject(&mut self, err: &AdvertError, source: &Source) {
        *self
            .stats
            .adverts_rejected
            .entry(err.reason().to_string())
            .or_default() += 1;
        match err {
            AdvertError::Expired { .. } | AdvertError::Withdrawn { .. } => {
                tracing::debug!(reason = err.reason(), ?source, error = %err, "advert dropped")
            }
            _ => tracing::warn!(reason = err.reason(), ?source, error = %err, "advert dropped"),
        }
    }

    /// Takes a verified advert as a candidate. Returns whether it was usable.
    pub(crate) fn accept(&mut self, source: Source, advert: Verified<Advert>) -> bool {
        match self
            .candidates
            .offer(source.clone(), advert, Timestamp::now())
        {
            Ok(offer) => {
                self.stats.adverts_accepted += 1;
                if offer == Offer::New {
                    tracing::debug!(?source, "new candidate");
                }
                true
            }
            Err(OfferError::Refused(r)) => {
                self.stats.refused_by_policy += 1;
                tracing::debug!(?source, refusal = %r, "candidate refused by policy");
                false
            }
            Err(OfferError::Full) => false,
        }
    }

    /// Handles advert bytes that arrived from a catalog. Returns when the advert
    /// was signed if it was usable.
    fn catalog_advert(
        &mut self,
        catalog: &CatalogName,
        node: NodeId,
        bytes: &[u8],
    ) -> Option<Timestamp> {
        let source = Source::Catalog(catalog.clone());
        let expected = Expected {
            node: Some(node),
            catalog: Some(catalog.as_str()),
        };
        match verify_advert_cached(bytes, &expected, Timestamp::now(), &mut self.verify_cache) {
            Ok(advert) => {
                self.saw_member(catalog, node);
                // Adverts change only when re-published: a member fetched successfully
                // is not fetched again before the next re-publication, which keeps a
                // refresh of an n-member catalog from costing n lookups every time.
                self.mark_fetched(catalog, &advert);
                let issued_at = advert.issued_at;
                let new_member = self.candidates.advert_from(&node, &source).is_none();
                let news = self.is_news(&source, &advert);
                let ok = self.accept(source, advert.clone());
                if ok && news {
                    self.spread(catalog, &advert, bytes, new_member, None);
                }
                ok.then_some(issued_at)
            }
            Err(AdvertError::Withdrawn { node, seq }) => {
                self.spread_withdrawal(catalog, node, seq, bytes, None);
                self.note_withdrawal(node, seq);
                self.candidates.remove_source(&node, &source);
                self.reject(&AdvertError::Withdrawn { node, seq }, &source);
                None
            }
            Err(e) => {
                self.reject(&e, &source);
                None
            }
        }
    }

    /// Records that this node holds `advert` of a catalog member, as of the moment
    /// it was *signed*: the next fetch is due one re-publication after that, when
    /// the member has signed a newer one. Counting from the moment of the read
    /// instead would let a stale-but-valid copy (from a catalog peer that missed
    /// the last re-publication, or from gossip) suppress fetches until after it
    /// expired, and the member would drop out of the candidates for a while.
    pub(crate) fn mark_fetched(&mut self, catalog: &CatalogName, advert: &Advert) {
        let age_ms = Timestamp::now().0.saturating_sub(advert.issued_at.0);
        let now = Instant::now();
        let signed = now
            .checked_sub(Duration::from_millis(age_ms))
            .unwrap_or(now);
        let key = (catalog.clone(), advert.node);
        let room = self.fetched.len() < MAX_FETCH_QUEUE;
        match self.fetched.get_mut(&key) {
            Some(t) => *t = (*t).max(signed),
            None if room => {
                self.fetched.insert(key, signed);
            }
            None => {}
        }
    }

    /// Whether an advert signed at `issued_at` is within the last re-publication
    /// interval, i.e. the member's current one (or at most one behind).
    fn is_fresh(&self, issued_at: Timestamp) -> bool {
        let window = u64::try_from(self.cfg.republish_interval.as_millis()).unwrap_or(u64::MAX);
        issued_at.plus_ms(window) >= Timestamp::now()
    }

    pub(crate) fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                match result {
                    QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                        key,
                        providers,
                    })) => {
                        if let Some((catalog, _)) = parse_catalog_key(&key) {
                            tracing::trace!(n = providers.len(), ?id, "providers found");
                            for p in providers {
                                if let Some(node) = node_id(&p) {
                                    self.stats.members_listed += 1;
                                    self.saw_member(&catalog, node);
                                    self.enqueue_fetch(catalog.clone(), node);
                                }
                            }
                        }
                    }
                    QueryResult::GetProviders(Err(e)) => {
                        tracing::debug!(error = ?e, "catalog search failed")
                    }
                    QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                        if let Some(Query::Lookup {
                            lookup: Lookup::Advert(catalog, node),
                            ..
                        }) = self.queries.get(&id).cloned()
                        {
                            let ok = self.catalog_advert(&catalog, node, &found.record.value);
                            // A current copy from a remote peer is enough; a local copy
                            // or an old one (a peer that missed the last re-publication)
                            // may be stale, so the lookup goes on after one.
                            if found.peer.is_some() && ok.is_some_and(|t| self.is_fresh(t)) {
                                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                                    q.finish();
                                }
                                self.release_slot(&id);
                            }
                        }
                    }
                    QueryResult::GetRecord(Err(e)) => {
                        self.stats.lookups_not_found += 1;
                        tracing::trace!(error = ?e, "advert lookup found nothing")
                    }
                    QueryResult::PutRecord(Err(e)) => {
                        tracing::debug!(error = ?e, "advert publication incomplete")
                    }
                    QueryResult::StartProviding(Err(e)) => {
                        tracing::debug!(error = ?e, "membership publication incomplete")
                    }
                    _ => {}
                }
                if step.last {
                    self.release_slot(&id);
                    self.queries.remove(&id);
                }
            }
            kad::Event::InboundRequest { request } => {
                self.stats.kad_requests_served += 1;
                self.on_kad_inbound(request)
            }
            _ => {}
        }
    }

    /// Stores what peers push only if it is a valid fluidos record (FilterBoth).
    fn on_kad_inbound(&mut self, request: InboundRequest) {
        match request {
            InboundRequest::PutRecord {
                source,
                record: Some(mut record),
                ..
            } => {
                let Some((catalog, node)) = parse_advert_key(&record.key) else {
                    self.stats.records_refused += 1;
                    tracing::debug!(%source, "refused a record that is not a fluidos advert");
                    return;
                };
                let advert = match verify_signature(&record.value, Some(&mut self.verify_cache)) {
                    Ok(a) if a.node == node && a.catalog.as_deref() == Some(catalog.as_str()) => a,
                    Ok(_) => {
                        self.stats.records_refused += 1;
                        self.reject(
                            &AdvertError::WrongNode {
                                expected: node,
                                found: node,
                            },
                            &Source::Catalog(catalog),
                        );
                        return;
                    }
                    Err(e) => {
                        self.stats.records_refused += 1;
                        self.reject(&e, &Source::Catalog(catalog));
                        return;
                    }
                };
                let now = Timestamp::now();
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let held_seq = RecordStore::get(store, &record.key)
                    .and_then(|r| verify_signature(&r.value, Some(&mut self.verify_cache)).ok())
                    .map(|a| a.seq);
                if held_seq.is_some_and(|s| s >= advert.seq) {
                    return; // a replay or an older version
                }
                if !advert.is_withdrawal() {
                    if advert.expires_at <= now {
                        self.stats.records_refused += 1;
                        return;
                    }
                    let exp = kad_expiry(advert.expires_at, now);
                    record.expires = Some(record.expires.map_or(exp, |e| e.min(exp)));
                }
                if let Err(e) = RecordStore::put(store, record.clone()) {
                    tracing::debug!(error = ?e, "record not stored");
                }
                if self.cfg.catalogs.iter().any(|c| c.name == catalog) {
                    self.catalog_advert(&catalog, node, &record.value);
                }
            }
            InboundRequest::AddProvider {
                record: Some(record),
            } => {
                let member = node_id(&record.provider);
                match (parse_catalog_key(&record.key), member) {
                    // A member provides only its own shard, so it cannot crowd others out.
                    (Some((catalog, shard)), Some(node)) if shard == shard_of(&node) => {
                        let store = self.swarm.behaviour_mut().kad.store_mut();
                        if let Err(e) = RecordStore::add_provider(store, record) {
                            tracing::debug!(error = ?e, "catalog member not stored");
                        }
                        if self.cfg.catalogs.iter().any(|c| c.name == catalog) {
                            self.saw_member(&catalog, node);
                            self.enqueue_fetch(catalog, node);
                        }
                    }
                    _ => {
                        self.stats.records_refused += 1;
                        tracing::debug!("refused a provider record outside fluidos catalogs");
                    }
                }
            }
            _ => {}
        }
    }

    /// Asks a direct peer for its advert.
    pub(crate) fn ask_advert(&mut self, peer: PeerId) {
        if let Some(d) = self.direct_peers.get_mut(&peer) {
            if d.asking {
                return;
            }
            d.asking = true;
        }
        let id = self
            .swarm
            .behaviour_mut()
            .advert
            .send_request(&peer, AdvertQuery);
        self.advert_requests.insert(id, peer);
    }

    pub(crate) fn on_advert(&mut self, ev: request_response::Event<AdvertQuery, AdvertReply>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { channel, .. } => {
                    let reply = AdvertReply(self.direct_advert.clone());
                    if self
                        .swarm
                        .behaviour_mut()
                        .advert
                        .send_response(channel, reply)
                        .is_err()
                    {
                        tracing::debug!(%peer, "advert reply not sent");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.advert_requests.remove(&request_id);
                    let sources = match self.direct_peers.get_mut(&peer) {
                        Some(d) => {
                            d.asking = false;
                            d.sources.clone()
                        }
                        None => return,
                    };
                    if let Some(d) = self.direct_peers.get_mut(&peer) {
                        d.retry.succeeded();
                    }
                    let (Some(bytes), Some(node)) = (response.0, node_id(&peer)) else {
                        tracing::debug!(%peer, "direct peer has no advert for us");
                        return;
                    };
                    let expected = Expected {
                        node: Some(node),
                        catalog: None,
                    };
                    match verify_advert_cached(
                        &bytes,
                        &expected,
                        Timestamp::now(),
                        &mut self.verify_cache,
                    ) {
                        Ok(advert) => {
                            for s in sources {
                                self.accept(s, advert.clone());
                            }
                            let addrs = self
                                .direct_peers
                                .get(&peer)
                                .map(|d| d.addrs.clone())
                                .unwrap_or_default();
                            for a in addrs {
                                self.candidates.observe_address(&node, a);
                            }
                        }
                        Err(e) => {
                            if let Some(s) = sources.first() {
                                self.reject(&e, s);
                            }
                        }
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.advert_requests.remove(&request_id);
                if let Some(d) = self.direct_peers.get_mut(&peer) {
                    d.asking = false;
                    // Simultaneous dials and early stream resets happen on a LAN; ask
                    // again soon rather than at the next refresh.
                    d.retry_at = Some(std::time::Instant::now() + DIRECT_RETRY);
                }
                tracing::debug!(%peer, %error, "direct advert request failed");
            }
            _ => {}
        }
    }

    /// Asks again the direct peers whose advert request failed.
    pub(crate) fn retry_direct(&mut self) {
        let now = std::time::Instant::now();
        let due: Vec<(PeerId, Vec<Multiaddr>)> = self
            .direct_peers
            .iter_mut()
            .filter(|(_, d)| d.retry_at.is_some_and(|t| t <= now))
            .map(|(p, d)| {
                d.retry_at = None;
                (*p, d.addrs.clone())
            })
            .collect();
        for (peer, addrs) in due {
            self.reach_direct_peer(peer, addrs);
        }
    }

    pub(crate) fn on_mdns(&mut self, ev: libp2p::mdns::Event) {
        match ev {
            libp2p::mdns::Event::Discovered(found) => {
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id()
                        || (!self.direct_peers.contains_key(&peer)
                            && self.direct_peers.len() >= MAX_DIRECT_PEERS)
                    {
                        continue;
                    }
                    tracing::debug!(%peer, %addr, "mDNS peer");
                    let d = self.direct_peers.entry(peer).or_default();
                    d.sources.insert(Source::Mdns);
                    if !d.addrs.contains(&addr) && d.addrs.len() < 8 {
                        d.addrs.push(addr);
                    }
                    let addrs = d.addrs.clone();
                    if self.swarm.is_connected(&peer) {
                        self.ask_advert(peer);
                    } else if *self.swarm.local_peer_id() > peer {
                        // Both sides hear each other at the same moment; if both dial,
                        // TCP simultaneous open can merge the two dials into one
                        // connection that Noise then rejects. The larger id waits and
                        // dials only if the smaller one has not connected by then.
                        d.retry_at = Some(std::time::Instant::now() + DIRECT_TIE_BREAK);
                    } else if let Err(e) = self
                        .swarm
                        .dial(DialOpts::peer_id(peer).addresses(addrs).build())
                    {
                        tracing::debug!(%peer, error = %e, "mDNS peer dial failed");
                    }
                }
            }
            libp2p::mdns::Event::Expired(gone) => {
                for (peer, _) in gone {
                    let still_there = self
                        .swarm
                        .behaviour()
                        .mdns
                        .as_ref()
                        .is_some_and(|m| m.discovered_nodes().any(|p| *p == peer));
                    if still_there {
                        continue;
                    }
                    if let Some(d) = self.direct_peers.get_mut(&peer) {
                        d.sources.remove(&Source::Mdns);
                        if d.sources.is_empty() {
                            self.direct_peers.remove(&peer);
                        }
                    }
                    if let Some(node) = node_id(&peer) {
                        self.candidates.remove_source(&node, &Source::Mdns);
                    }
                }
            }
        }
    }
}
