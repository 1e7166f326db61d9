//! The event loop's side of membership gossip (see [`crate::gossip`]): asking
//! members at each refresh, answering, and taking in what comes back.

use fluidos_contracts::Timestamp;
use libp2p::request_response;

use crate::advert::{AdvertError, Expected, verify_advert};
use crate::catalog::CatalogName;
use crate::event_loop::EventLoop;
use crate::gossip::{GOSSIP_FANOUT, MAX_MEMBERS_PER_REPLY, MembersQuery, MembersReply};
use crate::identity::peer_id;
use crate::policy::Source;

impl EventLoop {
    /// Asks [`GOSSIP_FANOUT`] members of each catalog, in turn, for the members
    /// they know. At most one request per catalog and member is in flight.
    pub(crate) fn gossip(&mut self) {
        self.gossip_round = self.gossip_round.wrapping_add(1);
        let catalogs: Vec<CatalogName> = self.cfg.catalogs.iter().map(|c| c.name.clone()).collect();
        for catalog in catalogs {
            if self.gossip_requests.values().any(|c| *c == catalog) {
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
                let node = advert.node;
                if node == self.node {
                    continue;
                }
                let addrs = self.known_addresses(&node);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .members
                    .send_request_with_addresses(
                        &peer_id(&node),
                        MembersQuery {
                            catalog: catalog.as_str().to_string(),
                        },
                        addrs,
                    );
                self.gossip_requests.insert(id, catalog.clone());
            }
        }
    }

    pub(crate) fn on_members(&mut self, ev: request_response::Event<MembersQuery, MembersReply>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let reply = self.members_of(&request.catalog);
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
                    if let Some(catalog) = self.gossip_requests.remove(&request_id) {
                        self.take_members(&catalog, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                self.gossip_requests.remove(&request_id);
                tracing::debug!(%error, "members request failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "members request from a peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// What this node answers about `catalog`: the members' catalog adverts it
    /// holds (a different slice each time), or none if it is not in the catalog.
    fn members_of(&mut self, catalog: &str) -> MembersReply {
        let Some(name) = self
            .cfg
            .catalogs
            .iter()
            .map(|c| c.name.clone())
            .find(|n| n.as_str() == catalog)
        else {
            return MembersReply::default();
        };
        self.gossip_round = self.gossip_round.wrapping_add(1);
        // Only members the catalog confirmed lately: a member that left stops
        // being confirmed and is not spread further.
        let window = u64::try_from((self.cfg.refresh_interval * 2).as_millis()).unwrap_or(u64::MAX);
        let since = Timestamp(Timestamp::now().0.saturating_sub(window.max(2_000)));
        let members = self
            .candidates
            .adverts_from(
                &Source::Catalog(name),
                since,
                self.gossip_round.wrapping_mul(MAX_MEMBERS_PER_REPLY),
                MAX_MEMBERS_PER_REPLY,
            )
            .iter()
            .filter_map(|a| fluidos_contracts::canonical::to_vec(a.signed()).ok())
            .collect();
        MembersReply { members }
    }

    /// Takes each gossiped advert as one read from the catalog: verified
    /// (signature, catalog, validity) and filtered by the incoming policy. A
    /// member confirmed this way is not fetched from the catalog again before
    /// its next re-publication, which is what keeps a large catalog's lookups
    /// down. An advert older than a withdrawal this node has seen of the same
    /// node is dropped, so gossip never brings back a node that left; one that
    /// crashed lingers at most until its advert expires, as its catalog record
    /// would.
    fn take_members(&mut self, catalog: &CatalogName, reply: MembersReply) {
        let source = Source::Catalog(catalog.clone());
        let expected = Expected {
            node: None,
            catalog: Some(catalog.as_str()),
        };
        let now = Timestamp::now();
        for bytes in reply.members {
            match verify_advert(&bytes, &expected, now) {
                Ok(advert) if advert.node == self.node => {}
                Ok(advert)
                    if self
                        .withdrawn
                        .get(&advert.node)
                        .is_some_and(|w| advert.seq <= *w) => {}
                Ok(advert) => {
                    let node = advert.node;
                    // As of its signing (see `mark_fetched`): an old gossiped copy
                    // does not hold back the catalog read of the current one.
                    self.mark_fetched(catalog, &advert);
                    if self.accept(source.clone(), advert) {
                        self.saw_member(catalog, node);
                    }
                }
                Err(AdvertError::Withdrawn { node, seq }) => {
                    self.note_withdrawal(node, seq);
                    self.candidates.remove_source(&node, &source);
                    self.reject(&AdvertError::Withdrawn { node, seq }, &source);
                }
                Err(e) => self.reject(&e, &source),
            }
        }
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
