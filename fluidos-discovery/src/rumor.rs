//! The push half of membership gossip (see [`crate::gossip`]): which catalog
//! adverts to push, to whom and when. I/O-free: time and randomness come in,
//! pushes go out.
//!
//! A node that learns of a member it did not know (or of a withdrawal, or of a
//! member whose addresses or body changed) hands the advert to [`Rumors::news`].
//! News is coalesced for [`COALESCE`], then [`Rumors::take`] makes one batch
//! (at most [`MAX_NEWS_PER_PUSH`] adverts) and sends it to [`PUSH_FANOUT`]
//! members chosen at random, other than the nodes the news came from or is
//! about. Each `(node, seq)` is pushed at most once by each node
//! (infect-and-die), so a change costs about `PUSH_FANOUT` messages per node.
//!
//! Introductions make the spread of a joiner certain in small catalogs: the
//! first time a node learns of a member, it pushes its own advert to that
//! member ([`Rumors::introduce`]), once per member in its lifetime (bounded
//! memory). A joiner's first search lists the catalog, so every member it found
//! hears of it directly in one round trip; members it did not find hear of it
//! from those that did, in `O(log n)` hops.
//!
//! Every memory is bounded: queued news and introductions per catalog, the
//! "already pushed" memory (oldest sequence numbers forgotten first, like the
//! withdrawal memory) and the members introduced to.
//!
//! Call order: [`Rumors::news`] / [`Rumors::introduce`] as things are learned;
//! when [`Rumors::poll_timeout`] is due, [`Rumors::due`] then [`Rumors::take`]
//! for each catalog it names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fluidos_contracts::NodeId;

use crate::catalog::CatalogName;
use crate::gossip::MAX_NEWS_PER_PUSH;

/// Members each batch of news is pushed to.
pub(crate) const PUSH_FANOUT: usize = 3;
/// How long news waits for more news before it is pushed.
pub(crate) const COALESCE: Duration = Duration::from_millis(20);
/// News queued per catalog at most; beyond it news is dropped (the periodic
/// pull still carries it).
pub(crate) const MAX_QUEUED_NEWS: usize = 256;
/// Introductions waiting per catalog at most.
pub(crate) const MAX_QUEUED_INTROS: usize = 256;
/// Nodes whose pushed sequence number is remembered.
pub(crate) const MAX_PUSHED: usize = 4096;
/// Members remembered as introduced to, per node.
pub(crate) const MAX_INTRODUCED: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    node: NodeId,
    seq: u64,
    bytes: Vec<u8>,
    from: Option<NodeId>,
}

#[derive(Debug, Default)]
struct Queue {
    items: Vec<Item>,
    intros: BTreeSet<NodeId>,
    due: Option<Instant>,
}

/// Who a batch can go to: the members known (that a push can reach), those
/// with a push in flight (skipped now, tried at the next batch), and how many
/// pushes may start now (the rest waits for the next batch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room<'a> {
    /// The members known.
    pub(crate) members: &'a [NodeId],
    /// Members with a push in flight.
    pub(crate) busy: &'a BTreeSet<NodeId>,
    /// Pushes that may start now.
    pub(crate) max: usize,
}

/// One request to send: `news` (advert envelopes) to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Push {
    /// The member to push to.
    pub(crate) to: NodeId,
    /// Advert envelopes, at most [`MAX_NEWS_PER_PUSH`].
    pub(crate) news: Vec<Vec<u8>>,
}

/// The news to push, per catalog, and what was pushed already.
#[derive(Debug, Default)]
pub(crate) struct Rumors {
    queues: BTreeMap<CatalogName, Queue>,
    /// The highest sequence number pushed (or queued) per node.
    pushed: BTreeMap<NodeId, u64>,
    introduced: BTreeSet<(CatalogName, NodeId)>,
}

impl Rumors {
    fn arm(q: &mut Queue, now: Instant) {
        if q.due.is_none() {
            q.due = Some(now + COALESCE);
        }
    }

    /// Queues `bytes`, an advert (or withdrawal) of `node` numbered `seq`, as
    /// news of `catalog` that came from `from`. Returns whether it was queued:
    /// not when this node already pushed that `seq` or a newer one of `node`,
    /// nor when the queue is full.
    pub(crate) fn news(
        &mut self,
        catalog: &CatalogName,
        node: NodeId,
        seq: u64,
        bytes: Vec<u8>,
        from: Option<NodeId>,
        now: Instant,
    ) -> bool {
        if self.pushed.get(&node).is_some_and(|s| *s >= seq) {
            return false;
        }
        let q = self.queues.entry(catalog.clone()).or_default();
        let item = Item {
            node,
            seq,
            bytes,
            from,
        };
        if let Some(held) = q.items.iter_mut().find(|i| i.node == node) {
            *held = item; // a newer one replaces the queued one
        } else if q.items.len() < MAX_QUEUED_NEWS {
            q.items.push(item);
        } else {
            return false;
        }
        Self::arm(q, now);
        self.pushed.insert(node, seq);
        if self.pushed.len() > MAX_PUSHED
            && let Some(oldest) = self.pushed.iter().min_by_key(|(_, s)| **s).map(|(n, _)| *n)
        {
            self.pushed.remove(&oldest);
        }
        true
    }

    /// Queues an introduction: this node's own advert of `catalog` to `to`,
    /// once per member. Returns whether it was queued.
    pub(crate) fn introduce(&mut self, catalog: &CatalogName, to: NodeId, now: Instant) -> bool {
        let key = (catalog.clone(), to);
        if self.introduced.contains(&key) || self.introduced.len() >= MAX_INTRODUCED {
            return false;
        }
        let q = self.queues.entry(catalog.clone()).or_default();
        if q.intros.len() >= MAX_QUEUED_INTROS {
            return false;
        }
        q.intros.insert(to);
        self.introduced.insert(key);
        Self::arm(q, now);
        true
    }

    /// Notes that `node` knows this node in `catalog` already (it introduced
    /// itself to this node: it listed this node), so no introduction is sent.
    pub(crate) fn known_by(&mut self, catalog: &CatalogName, node: NodeId) {
        if self.introduced.len() < MAX_INTRODUCED {
            self.introduced.insert((catalog.clone(), node));
        }
        if let Some(q) = self.queues.get_mut(catalog) {
            q.intros.remove(&node);
        }
    }

    /// Forgets `node` as introduced to in `catalog` (it left, or the push to it
    /// failed), so that it is introduced to again when next learned.
    pub(crate) fn forget(&mut self, catalog: &CatalogName, node: &NodeId) {
        self.introduced.remove(&(catalog.clone(), *node));
    }

    /// When the next push is due.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.queues.values().filter_map(|q| q.due).min()
    }

    /// The catalogs whose push is due at `now`.
    #[must_use]
    pub(crate) fn due(&self, now: Instant) -> Vec<CatalogName> {
        self.queues
            .iter()
            .filter(|(_, q)| q.due.is_some_and(|d| d <= now))
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Takes one batch of `catalog`'s news and its introductions.
    ///
    /// `room` says who it can go to, `own` is this node's advert of the
    /// catalog (for introductions; none: they are dropped), and `rand` a
    /// source of random numbers. News goes to
    /// [`PUSH_FANOUT`] members at random, never to the nodes it came from or is
    /// about. If nobody can take the batch now it stays queued; if no member at
    /// all can, it is dropped. An introduction carries the own advert only, or
    /// leads a batch of news going to the same member anyway.
    #[must_use]
    pub(crate) fn take(
        &mut self,
        catalog: &CatalogName,
        now: Instant,
        room: Room<'_>,
        own: Option<&[u8]>,
        mut rand: impl FnMut() -> u64,
    ) -> Vec<Push> {
        let Room { members, busy, max } = room;
        let Some(q) = self.queues.get_mut(catalog) else {
            return Vec::new();
        };
        q.due = None;
        let n = q.items.len().min(MAX_NEWS_PER_PUSH);
        let batch: Vec<Item> = q.items.drain(..n).collect();
        let excluded: BTreeSet<NodeId> = batch
            .iter()
            .flat_map(|i| [Some(i.node), i.from])
            .flatten()
            .collect();
        let eligible: Vec<NodeId> = members
            .iter()
            .filter(|m| !excluded.contains(m))
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut free: Vec<NodeId> = eligible
            .iter()
            .filter(|m| !busy.contains(m))
            .copied()
            .collect();
        let mut targets: BTreeSet<NodeId> = BTreeSet::new();
        if !batch.is_empty() {
            // A partial Fisher-Yates shuffle picks the fanout.
            let k = PUSH_FANOUT.min(free.len()).min(max);
            for i in 0..k {
                let span = (free.len() - i) as u64;
                let j = i + usize::try_from(rand() % span).unwrap_or(0);
                free.swap(i, j);
                targets.insert(free[i]);
            }
        }
        let news: Vec<Vec<u8>> = batch.iter().map(|i| i.bytes.clone()).collect();
        let mut pushes: Vec<Push> = targets
            .iter()
            .map(|to| Push {
                to: *to,
                news: news.clone(),
            })
            .collect();
        if own.is_none() {
            // Not announced in this catalog (any more): nothing to introduce.
            q.intros.clear();
        }
        if let Some(own) = own {
            let ready: Vec<NodeId> = q
                .intros
                .iter()
                .filter(|m| !busy.contains(m))
                .copied()
                .collect();
            for to in ready {
                if let Some(p) = pushes.iter_mut().find(|p| p.to == to) {
                    p.news.truncate(MAX_NEWS_PER_PUSH - 1);
                    p.news.insert(0, own.to_vec());
                } else if pushes.len() >= max {
                    continue; // waits for the next batch
                } else {
                    pushes.push(Push {
                        to,
                        news: vec![own.to_vec()],
                    });
                }
                q.intros.remove(&to);
            }
        }
        if !batch.is_empty() && targets.is_empty() && !eligible.is_empty() {
            // Every eligible member is busy: the batch waits for the next round.
            q.items.splice(0..0, batch);
        }
        if !q.items.is_empty() || !q.intros.is_empty() {
            q.due = Some(now + COALESCE);
        }
        pushes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_contracts::SecretKey;

    fn nodes(n: usize) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = (0..n).map(|_| SecretKey::generate().node_id()).collect();
        v.sort();
        v
    }

    fn cat() -> CatalogName {
        "lab".parse().unwrap()
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut x = 0u64;
        move || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x >> 7
        }
    }

    #[test]
    fn news_is_coalesced_then_pushed_to_the_fanout_never_back_to_its_source() {
        let t0 = Instant::now();
        let m = nodes(10);
        let mut r = Rumors::default();
        assert_eq!(r.poll_timeout(), None);
        assert!(r.news(&cat(), m[0], 5, vec![0], Some(m[1]), t0));
        assert!(r.news(&cat(), m[2], 7, vec![2], None, t0 + COALESCE / 2));
        // Due one window after the first news, not pushed off by the second.
        assert_eq!(r.poll_timeout(), Some(t0 + COALESCE));
        assert!(r.due(t0).is_empty());
        assert_eq!(r.due(t0 + COALESCE), vec![cat()]);
        let pushes = r.take(
            &cat(),
            t0 + COALESCE,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: usize::MAX,
            },
            None,
            counter(),
        );
        assert_eq!(pushes.len(), PUSH_FANOUT);
        for p in &pushes {
            assert_eq!(p.news, vec![vec![0], vec![2]]);
            assert!(
                ![m[0], m[1], m[2]].contains(&p.to),
                "not to a source or subject"
            );
        }
        let tos: BTreeSet<_> = pushes.iter().map(|p| p.to).collect();
        assert_eq!(tos.len(), PUSH_FANOUT, "distinct members");
        assert_eq!(r.poll_timeout(), None, "nothing left");
    }

    #[test]
    fn each_seq_is_pushed_once_and_only_newer_ones_again() {
        let t0 = Instant::now();
        let m = nodes(6);
        let mut r = Rumors::default();
        assert!(r.news(&cat(), m[0], 5, vec![5], None, t0));
        assert!(!r.news(&cat(), m[0], 5, vec![5], None, t0), "same seq");
        assert!(!r.news(&cat(), m[0], 4, vec![4], None, t0), "older seq");
        assert!(r.news(&cat(), m[0], 6, vec![6], None, t0), "newer seq");
        let pushes = r.take(
            &cat(),
            t0,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: usize::MAX,
            },
            None,
            counter(),
        );
        assert!(!pushes.is_empty());
        // The newer one replaced the queued one: one element.
        assert!(pushes.iter().all(|p| p.news == vec![vec![6]]));
        assert!(
            !r.news(&cat(), m[0], 6, vec![6], None, t0),
            "pushed already"
        );
        assert!(
            r.take(
                &cat(),
                t0,
                Room {
                    members: &m,
                    busy: &BTreeSet::new(),
                    max: usize::MAX
                },
                None,
                counter()
            )
            .is_empty()
        );
    }

    #[test]
    fn batches_are_bounded_and_the_rest_follows() {
        let t0 = Instant::now();
        let m = nodes(MAX_NEWS_PER_PUSH + 8);
        let mut r = Rumors::default();
        for (i, n) in m.iter().enumerate() {
            assert!(r.news(&cat(), *n, 1, vec![i as u8], None, t0));
        }
        // Everyone is a subject of the first batch except the last 8.
        let first = r.take(
            &cat(),
            t0,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: usize::MAX,
            },
            None,
            counter(),
        );
        assert!(!first.is_empty());
        assert!(first.iter().all(|p| p.news.len() == MAX_NEWS_PER_PUSH));
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + COALESCE),
            "the rest is due next"
        );
        let second = r.take(
            &cat(),
            t0 + COALESCE,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: usize::MAX,
            },
            None,
            counter(),
        );
        assert!(!second.is_empty());
        assert!(second.iter().all(|p| p.news.len() == 8));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn busy_members_are_skipped_and_a_fully_busy_catalog_waits() {
        let t0 = Instant::now();
        let m = nodes(5);
        let mut r = Rumors::default();
        assert!(r.news(&cat(), m[0], 1, vec![1], None, t0));
        let busy: BTreeSet<NodeId> = m[1..].iter().copied().collect();
        assert!(
            r.take(
                &cat(),
                t0,
                Room {
                    members: &m,
                    busy: &busy,
                    max: usize::MAX
                },
                None,
                counter()
            )
            .is_empty()
        );
        assert_eq!(r.poll_timeout(), Some(t0 + COALESCE), "kept for later");
        let busy: BTreeSet<NodeId> = m[1..4].iter().copied().collect();
        let pushes = r.take(
            &cat(),
            t0 + COALESCE,
            Room {
                members: &m,
                busy: &busy,
                max: usize::MAX,
            },
            None,
            counter(),
        );
        assert_eq!(pushes.iter().map(|p| p.to).collect::<Vec<_>>(), vec![m[4]]);
        // With no member at all but the subject, the news is dropped.
        assert!(r.news(&cat(), m[1], 1, vec![1], None, t0));
        assert!(
            r.take(
                &cat(),
                t0,
                Room {
                    members: &m[1..2],
                    busy: &BTreeSet::new(),
                    max: usize::MAX
                },
                None,
                counter()
            )
            .is_empty()
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn introductions_go_once_per_member_with_the_own_advert_first() {
        let t0 = Instant::now();
        let m = nodes(6);
        let mut r = Rumors::default();
        assert!(r.introduce(&cat(), m[0], t0));
        assert!(!r.introduce(&cat(), m[0], t0), "once");
        // A busy member's introduction waits for the next batch.
        let busy: BTreeSet<NodeId> = [m[0]].into();
        assert!(
            r.take(
                &cat(),
                t0,
                Room {
                    members: &m,
                    busy: &busy,
                    max: usize::MAX
                },
                Some(&[9]),
                counter()
            )
            .is_empty()
        );
        assert_eq!(r.poll_timeout(), Some(t0 + COALESCE));
        assert!(r.news(&cat(), m[1], 3, vec![3], None, t0));
        let pushes = r.take(
            &cat(),
            t0,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: usize::MAX,
            },
            Some(&[9]),
            counter(),
        );
        let intro = pushes.iter().find(|p| p.to == m[0]).unwrap();
        assert_eq!(intro.news[0], vec![9], "own advert first");
        let tos: Vec<NodeId> = pushes.iter().map(|p| p.to).collect();
        assert!(
            tos.len() == PUSH_FANOUT + 1 || tos.len() == PUSH_FANOUT,
            "the fanout plus the introduction (merged when it is one of them): {tos:?}"
        );
        if tos.len() == PUSH_FANOUT + 1 {
            assert_eq!(intro.news, vec![vec![9]], "the own advert only");
        } else {
            assert_eq!(intro.news, vec![vec![9], vec![3]]);
        }
        assert!(pushes.iter().all(|p| p.to != m[1]));
        assert!(!r.introduce(&cat(), m[0], t0), "still remembered");
        r.forget(&cat(), &m[0]);
        assert!(r.introduce(&cat(), m[0], t0), "again after it left");
        // A member that introduced itself knows this node: no introduction back.
        r.known_by(&cat(), m[0]);
        assert!(!r.introduce(&cat(), m[0], t0));
        assert!(!r.introduce(&cat(), m[0], t0));
        // Without an own advert (not announced there), introductions are dropped.
        assert!(
            r.take(
                &cat(),
                t0,
                Room {
                    members: &m,
                    busy: &BTreeSet::new(),
                    max: usize::MAX
                },
                None,
                counter()
            )
            .is_empty()
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn memories_are_bounded() {
        let t0 = Instant::now();
        let mut r = Rumors::default();
        let m = nodes(MAX_QUEUED_NEWS + 1);
        for (i, n) in m.iter().enumerate() {
            let queued = r.news(&cat(), *n, i as u64 + 1, vec![], None, t0);
            assert_eq!(queued, i < MAX_QUEUED_NEWS);
        }
        for n in nodes(MAX_QUEUED_INTROS + 1) {
            r.introduce(&cat(), n, t0);
        }
        let q = &r.queues[&cat()];
        assert_eq!(q.items.len(), MAX_QUEUED_NEWS);
        assert_eq!(q.intros.len(), MAX_QUEUED_INTROS);
        assert!(r.pushed.len() <= MAX_PUSHED);
        // The pushed memory forgets the oldest sequence numbers first.
        let mut r = Rumors::default();
        let many = nodes(MAX_PUSHED + 1);
        for (i, n) in many.iter().take(MAX_PUSHED).enumerate() {
            r.pushed.insert(*n, i as u64 + 10);
        }
        let fresh = many[MAX_PUSHED];
        assert!(r.news(&cat(), fresh, 1_000_000, vec![], None, t0));
        assert_eq!(r.pushed.len(), MAX_PUSHED);
        assert!(!r.pushed.contains_key(&many[0]), "the oldest went");
        assert_eq!(r.pushed.get(&fresh), Some(&1_000_000));
    }

    #[test]
    fn no_more_pushes_start_than_allowed() {
        let t0 = Instant::now();
        let m = nodes(10);
        let mut r = Rumors::default();
        for n in &m[..6] {
            assert!(r.introduce(&cat(), *n, t0));
        }
        assert!(r.news(&cat(), m[9], 1, vec![1], None, t0));
        let pushes = r.take(
            &cat(),
            t0,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: 4,
            },
            Some(&[9]),
            counter(),
        );
        assert_eq!(pushes.len(), 4, "{pushes:?}");
        // The introductions left over follow with the next batch.
        assert_eq!(r.poll_timeout(), Some(t0 + COALESCE));
        let later = r.take(
            &cat(),
            t0 + COALESCE,
            Room {
                members: &m,
                busy: &BTreeSet::new(),
                max: 64,
            },
            Some(&[9]),
            counter(),
        );
        let introduced: BTreeSet<NodeId> = pushes
            .iter()
            .chain(&later)
            .filter(|p| p.news[0] == vec![9])
            .map(|p| p.to)
            .collect();
        assert_eq!(introduced, m[..6].iter().copied().collect());
        assert_eq!(
            r.take(
                &cat(),
                t0,
                Room {
                    members: &m,
                    busy: &BTreeSet::new(),
                    max: 0
                },
                None,
                counter()
            ),
            vec![]
        );
    }
}
