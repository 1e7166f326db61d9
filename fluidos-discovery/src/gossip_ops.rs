//! The event loop's side of membership gossip (see [`crate::gossip`]): asking
//! members at each refresh, pushing news (see [`crate::rumor`]), answering, and
//! taking in what comes back.

use std::collections::{BTreeSet, HashSet};

use fluidos_contracts::{NodeId, Timestamp, Verified};
use libp2p::request_response;

use crate::advert::{Advert, AdvertError, Expected, verify_advert_cached};
use crate::catalog::CatalogName;
use crate::event_loop::{EventLoop, Pull};
use crate::gossip::{
    GOSSIP_FANOUT, KNOWN_PREFIX_BYTES, MAX_KNOWN, MAX_MEMBERS_PER_REPLY, MembersQuery,
    MembersReply, known_entry,
};
use crate::identity::{node_id, peer_id};
use crate::policy::Source;
use libp2p::PeerId;

impl EventLoop {
    /// Asks [`GOSSIP_FANOUT`] members of each catalog, in turn, for the members
    /// they know. At most one request per catalog and member is in flight.
    pub(crate) fn gossip(&mut self) {
        self.gossip_round = self.gossip_round.wrapping_add(1);
        let catalogs: Vec<CatalogName> = self.cfg.catalogs.iter().map(|c| c.name.clone()).collect();
        for catalog in catalogs {
            if self.gossip_requests.values().any(|p| p.catalog == catalog) {
                continue;
            }
            let source = Source::Catalog(catalog.clone());
            let asked = self.candidates.adverts_from(
                &source,
                Timestamp(0),
                self.gossip_round.wrapping_mul(GOSSIP_FANOUT),
                GOSSIP_FANOUT,
            );
            for advert in asked {
                if advert.node != self.node {
                    self.pull(peer_id(&advert.node), &catalog, false, 0);
                }
            }
        }
    }

    /// Asks `peer` for the members of `catalog` this node lacks (its digest says
    /// which it holds). `page` counts the full answers from `peer` that led here.
    pub(crate) fn pull(&mut self, peer: PeerId, catalog: &CatalogName, joining: bool, page: usize) {
        let known = self.known_digest(catalog);
        // A joiner's first pull carries its own advert: the catalog address learns
        // of it in the same round trip, and spreads the news.
        let news = match self.own_adverts.get(catalog) {
            Some(own) if joining && page == 0 => vec![own.clone()],
            _ => Vec::new(),
        };
        let addrs = node_id(&peer)
            .map(|n| self.known_addresses(&n))
            .unwrap_or_default();
        let id = self
            .swarm
            .behaviour_mut()
            .members
            .send_request_with_addresses(
                &peer,
                MembersQuery {
                    catalog: catalog.as_str().to_string(),
                    news,
                    known,
                },
                addrs,
            );
        self.gossip_requests.insert(
            id,
            Pull {
                catalog: catalog.clone(),
                joining,
                page,
            },
        );
    }

    /// A pull's answer was taken in (`news` of its adverts were new here) or
    /// failed (`None`). A full answer that brought news is continued from the
    /// same peer, whose next answer then holds the members still lacking; a
    /// pull to a catalog address that brought nobody falls back on the
    /// catalog's shard searches.
    fn pulled(&mut self, peer: PeerId, pull: Pull, answer: Option<(usize, usize)>) {
        let (len, news) = answer.unwrap_or((0, 0));
        if len >= MAX_MEMBERS_PER_REPLY && news > 0 && pull.page < MAX_PULL_PAGES {
            self.pull(peer, &pull.catalog, pull.joining, pull.page + 1);
            return;
        }
        if pull.joining && pull.page == 0 && news == 0 {
            tracing::debug!(catalog = %pull.catalog, %peer, "the catalog address named no member: searching the catalog");
            self.search_catalog(&pull.catalog);
        }
    }

    pub(crate) fn on_members(&mut self, ev: request_response::Event<MembersQuery, MembersReply>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if !request.news.is_empty()
                        && let Some(name) = self.joined(&request.catalog)
                    {
                        self.take_members(&name, request.news, node_id(&peer), true);
                    }
                    let reply = self.members_of(&request.catalog, &request.known);
                    if self
                        .swarm
                        .behaviour_mut()
                        .members
                        .send_response(channel, reply)
                        .is_err()
                    {
                        tracing::debug!(%peer, "members reply not sent");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(pull) = self.gossip_requests.remove(&request_id) {
                        let len = response.members.len();
                        let news = self.take_members(
                            &pull.catalog,
                            response.members,
                            node_id(&peer),
                            false,
                        );
                        self.pulled(peer, pull, Some((len, news)));
                    } else if let Some((catalog, _)) = self.push_requests.remove(&request_id) {
                        self.take_members(&catalog, response.members, node_id(&peer), false);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(pull) = self.gossip_requests.remove(&request_id) {
                    self.pulled(peer, pull, None);
                }
                if let Some((catalog, to)) = self.push_requests.remove(&request_id) {
                    // An introduction may have been lost: again when next learned.
                    self.rumors.forget(&catalog, &to);
                }
                tracing::debug!(%peer, %error, "members request failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "members request from a peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// The catalog of that name, if this node joined it.
    fn joined(&self, catalog: &str) -> Option<CatalogName> {
        self.cfg
            .catalogs
            .iter()
            .map(|c| c.name.clone())
            .find(|n| n.as_str() == catalog)
    }

    /// Pushes the news that is due: one batch per catalog, to [`PUSH_FANOUT`]
    /// members at random and to the members to be introduced to; at most one
    /// push in flight per member and [`MAX_PUSHES_IN_FLIGHT`] in all.
    ///
    /// [`PUSH_FANOUT`]: crate::rumor::PUSH_FANOUT
    pub(crate) fn push_news(&mut self) {
        let now = std::time::Instant::now();
        for catalog in self.rumors.due(now) {
            let mut members = self
                .candidates
                .nodes_from(&Source::Catalog(catalog.clone()));
            members.retain(|n| *n != self.node);
            let busy: BTreeSet<NodeId> = self.push_requests.values().map(|(_, n)| *n).collect();
            let room = MAX_PUSHES_IN_FLIGHT.saturating_sub(self.push_requests.len());
            let jitter = &mut self.jitter;
            let pushes = self.rumors.take(
                &catalog,
                now,
                crate::rumor::Room {
                    members: &members,
                    busy: &busy,
                    max: room,
                },
                self.own_adverts.get(&catalog).map(Vec::as_slice),
                || jitter.next(),
            );
            let known = if pushes.is_empty() {
                Vec::new()
            } else {
                self.known_digest(&catalog)
            };
            for push in pushes {
                tracing::debug!(to = %push.to.short(), news = push.news.len(), "news pushed");
                let addrs = self.known_addresses(&push.to);
                self.stats.news_sent += push.news.len() as u64;
                let id = self
                    .swarm
                    .behaviour_mut()
                    .members
                    .send_request_with_addresses(
                        &peer_id(&push.to),
                        MembersQuery {
                            catalog: catalog.as_str().to_string(),
                            news: push.news,
                            known: known.clone(),
                        },
                        addrs,
                    );
                self.push_requests.insert(id, (catalog.clone(), push.to));
            }
        }
    }

    /// Whether `advert` is news in `source`: a member not held from it, or one
    /// whose addresses or body changed (a re-publication alone is not news: the
    /// periodic pull and fetches carry it).
    pub(crate) fn is_news(&self, source: &Source, advert: &Advert) -> bool {
        match self.candidates.advert_from(&advert.node, source) {
            None => true,
            Some(held) => {
                held.seq < advert.seq
                    && (held.addresses != advert.addresses
                        || held.labels != advert.labels
                        || held.roles != advert.roles
                        || held.location != advert.location
                        || held.architecture != advert.architecture
                        || held.flavors != advert.flavors)
            }
        }
    }

    /// Spreads a catalog advert this node just took and found news (see
    /// `is_news`): queued for the push, and, the first time the member is
    /// seen, an introduction of this node to it (see `introduce`).
    pub(crate) fn spread(
        &mut self,
        catalog: &CatalogName,
        advert: &Verified<Advert>,
        bytes: &[u8],
        new_member: bool,
        from: Option<NodeId>,
    ) {
        let now = std::time::Instant::now();
        self.rumors
            .news(catalog, advert.node, advert.seq, bytes.to_vec(), from, now);
        if new_member {
            self.introduce(catalog, advert.node);
        }
    }

    /// Introduces this node to a member of `catalog` it has just seen (listed
    /// by a search or a provider record, or its advert taken), once: pushes its
    /// own advert there, unless it announces nothing in the catalog or the
    /// member introduced itself first. Sent at first sight, before the member's
    /// advert is fetched, so that a joiner reaches every member its search
    /// lists within a round trip (the address comes from Kademlia then).
    pub(crate) fn introduce(&mut self, catalog: &CatalogName, node: NodeId) {
        if node != self.node && self.own_adverts.contains_key(catalog) {
            self.rumors
                .introduce(catalog, node, std::time::Instant::now());
        }
    }

    /// Spreads a withdrawal of `node` that is newer than any seen.
    pub(crate) fn spread_withdrawal(
        &mut self,
        catalog: &CatalogName,
        node: NodeId,
        seq: u64,
        bytes: &[u8],
        from: Option<NodeId>,
    ) {
        if self.withdrawn.get(&node).is_some_and(|w| *w >= seq) {
            return;
        }
        let now = std::time::Instant::now();
        self.rumors
            .news(catalog, node, seq, bytes.to_vec(), from, now);
        self.rumors.forget(catalog, &node);
    }

    /// What this node answers about `catalog`: its own catalog advert first (if
    /// it announces there: the asker may know it only by a provider record),
    /// then the members' catalog adverts it holds (a different slice each
    /// time), or none if it is not in the catalog.
    fn members_of(&mut self, catalog: &str, known: &[[u8; KNOWN_PREFIX_BYTES]]) -> MembersReply {
        let Some(name) = self.joined(catalog) else {
            return MembersReply::default();
        };
        let known: HashSet<[u8; KNOWN_PREFIX_BYTES]> = known.iter().copied().collect();
        let lacks = |node: &NodeId, seq: u64| !known.contains(&known_entry(node, seq));
        self.gossip_round = self.gossip_round.wrapping_add(1);
        // Only members the catalog confirmed lately: a member that left stops
        // being confirmed and is not spread further.
        let window = u64::try_from((self.cfg.refresh_interval * 2).as_millis()).unwrap_or(u64::MAX);
        let since = Timestamp(Timestamp::now().0.saturating_sub(window.max(2_000)));
        let mut members: Vec<Vec<u8>> = match self.own_adverts.get(&name) {
            Some(own) if lacks(&self.node, self.seq) => vec![own.clone()],
            _ => Vec::new(),
        };
        let room = MAX_MEMBERS_PER_REPLY - members.len();
        members.extend(
            self.candidates
                .adverts_from_except(
                    &Source::Catalog(name),
                    since,
                    self.gossip_round.wrapping_mul(room),
                    room,
                    |advert| !lacks(&advert.node, advert.seq),
                )
                .iter()
                .filter_map(|a| fluidos_contracts::canonical::to_vec(a.signed()).ok()),
        );
        MembersReply { members }
    }

    /// The digest of the adverts of `catalog` this node holds (its own
    /// included), for the `known` field of its requests: at most [`MAX_KNOWN`].
    fn known_digest(&self, catalog: &CatalogName) -> Vec<[u8; KNOWN_PREFIX_BYTES]> {
        let held = self.candidates.adverts_from(
            &Source::Catalog(catalog.clone()),
            Timestamp(0),
            0,
            MAX_KNOWN - 1,
        );
        std::iter::once(known_entry(&self.node, self.seq))
            .chain(held.iter().map(|a| known_entry(&a.node, a.seq)))
            .collect()
    }

    /// Takes each gossiped advert as one read from the catalog: verified
    /// (signature, catalog, validity) and filtered by the incoming policy. A
    /// member confirmed this way is not fetched from the catalog again before
    /// its next re-publication, which is what keeps a large catalog's lookups
    /// down. An advert older than a withdrawal this node has seen of the same
    /// node is dropped, so gossip never brings back a node that left; one that
    /// crashed lingers at most until its advert expires, as its catalog record
    /// would.
    ///
    /// The adverts are a reply's members or, `pushed`, a request's news; `from`
    /// is the peer they came from. What is news to this node is spread further.
    fn take_members(
        &mut self,
        catalog: &CatalogName,
        adverts: Vec<Vec<u8>>,
        from: Option<NodeId>,
        pushed: bool,
    ) -> usize {
        let mut fresh = 0;
        let source = Source::Catalog(catalog.clone());
        let expected = Expected {
            node: None,
            catalog: Some(catalog.as_str()),
        };
        let now = Timestamp::now();
        for bytes in adverts {
            match verify_advert_cached(&bytes, &expected, now, &mut self.verify_cache) {
                Ok(advert) if advert.node == self.node => {}
                Ok(advert)
                    if self
                        .withdrawn
                        .get(&advert.node)
                        .is_some_and(|w| advert.seq <= *w) => {}
                Ok(advert) => {
                    let node = advert.node;
                    if pushed && from == Some(node) {
                        // It introduced itself: it listed this node, so it knows it.
                        self.rumors.known_by(catalog, node);
                    }
                    // As of its signing (see `mark_fetched`): an old gossiped copy
                    // does not hold back the catalog read of the current one.
                    self.mark_fetched(catalog, &advert);
                    let new_member = self.candidates.advert_from(&node, &source).is_none();
                    let news = self.is_news(&source, &advert);
                    if self.accept(source.clone(), advert.clone()) {
                        self.saw_member(catalog, node);
                        if news {
                            fresh += 1;
                            if pushed {
                                self.stats.news_taken += 1;
                            }
                            self.spread(catalog, &advert, &bytes, new_member, from);
                        }
                    }
                }
                Err(AdvertError::Withdrawn { node, seq }) => {
                    self.spread_withdrawal(catalog, node, seq, &bytes, from);
                    self.note_withdrawal(node, seq);
                    self.candidates.remove_source(&node, &source);
                    self.reject(&AdvertError::Withdrawn { node, seq }, &source);
                }
                Err(e) => self.reject(&e, &source),
            }
        }
        fresh
    }

    /// Remembers the newest withdrawal of `node` (at most [`MAX_WITHDRAWN`]
    /// nodes; beyond that the oldest-numbered are forgotten).
    pub(crate) fn note_withdrawal(&mut self, node: fluidos_contracts::NodeId, seq: u64) {
        let w = self.withdrawn.entry(node).or_insert(seq);
        *w = (*w).max(seq);
        if self.withdrawn.len() > MAX_WITHDRAWN
            && let Some(oldest) = self
                .withdrawn
                .iter()
                .min_by_key(|(_, s)| **s)
                .map(|(n, _)| *n)
        {
            self.withdrawn.remove(&oldest);
        }
    }
}

/// Withdrawals remembered.
const MAX_WITHDRAWN: usize = 4096;
/// Full answers from one peer that a pull continues after: with
/// [`MAX_MEMBERS_PER_REPLY`] adverts each, the members a digest can name.
const MAX_PULL_PAGES: usize = crate::gossip::MAX_KNOWN / MAX_MEMBERS_PER_REPLY;
/// Pushes in flight at most (all catalogs and members).
const MAX_PUSHES_IN_FLIGHT: usize = 64;
