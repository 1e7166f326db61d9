//! What an [`Acquisition`](super::Acquisition)(super::Acquisition) is configured with and reports.

use std::fmt;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Arc;

use fluidos_contracts::rear::RearError;
use fluidos_contracts::{
    ContractError, ContractId, Flavor, NodeId, Timestamp, Verified, VerifiedContract,
};

use super::rank::{Ratings, Unsuitable};

/// Tuning of an [`Acquisition`](super::Acquisition).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AcquisitionOptions {
    /// How long to wait for each answer from each peer (default 5 s).
    pub request_timeout: Duration,
    /// How many offers to try before giving up (default 32). Buyers that rank alike
    /// herd onto the same cheapest providers; the market simulation
    /// (`fluidos-simulations`) showed 8 attempts leaving most of a large market unsold.
    pub max_attempts: usize,
    /// How often to send the countersignature before reporting the contract
    /// unconfirmed (default 3).
    pub countersign_attempts: u32,
    /// The buyer's ratings of providers, for ranking.
    pub ratings: Ratings,
    /// Wall-clock time at `now` of [`Acquisition::with_options`](super::Acquisition::with_options), to skip lapsed
    /// flavors while ranking. Without it the buyer does not check flavor expiry
    /// itself (providers list only valid flavors and refuse lapsed ones).
    pub wall_clock: Option<Timestamp>,
    /// Seed of the reservation nonces; `None` draws one from the operating system.
    pub nonce_seed: Option<[u8; 16]>,
    /// Reserve, then purchase in a second request, as FLUIDOS does. By default
    /// (`false`) one `ReserveAndPurchase` request does both, which saves a round
    /// trip and a commit on the provider.
    pub reserve_first: bool,
    /// Flavors the driver already holds, by provider (from a recent listing):
    /// these candidates are not listed again unless all offers fail.
    pub known_offers: BTreeMap<NodeId, Vec<Verified<Flavor>>>,
}

impl Default for AcquisitionOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            max_attempts: 32,
            countersign_attempts: 3,
            ratings: Ratings::new(),
            wall_clock: None,
            nonce_seed: None,
            reserve_first: false,
            known_offers: BTreeMap::new(),
        }
    }
}

impl AcquisitionOptions {
    /// Sets the ratings used for ranking.
    pub fn with_ratings(mut self, ratings: Ratings) -> Self {
        self.ratings = ratings;
        self
    }

    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the wall-clock time that corresponds to the `now` given at construction.
    pub fn with_wall_clock(mut self, wall_clock: Timestamp) -> Self {
        self.wall_clock = Some(wall_clock);
        self
    }

    /// Sets the nonce seed (for repeatable tests).
    pub fn with_nonce_seed(mut self, seed: [u8; 16]) -> Self {
        self.nonce_seed = Some(seed);
        self
    }

    /// Reserves and purchases in two requests instead of one.
    pub fn with_reserve_first(mut self, reserve_first: bool) -> Self {
        self.reserve_first = reserve_first;
        self
    }

    /// Sets the flavors already known per provider; see
    /// [`AcquisitionOptions::known_offers`].
    pub fn with_known_offers(mut self, known: BTreeMap<NodeId, Vec<Verified<Flavor>>>) -> Self {
        self.known_offers = known;
        self
    }
}

/// Where an acquisition is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Asking candidates for flavors; `pending` have not answered yet.
    Listing {
        /// Candidates still to answer.
        pending: usize,
    },
    /// Offers ranked; `offers` can serve the request.
    Ranked {
        /// Suitable offers.
        offers: usize,
    },
    /// Reserving and purchasing from a provider in one request.
    Buying {
        /// The provider.
        provider: NodeId,
    },
    /// Reserving from a provider (two-step negotiation).
    Reserving {
        /// The provider.
        provider: NodeId,
    },
    /// Asking the provider to sign the terms.
    Purchasing {
        /// The provider.
        provider: NodeId,
    },
    /// Waiting for the driver to persist the countersigned contract.
    Persisting {
        /// The provider.
        provider: NodeId,
    },
    /// Sending the countersignature.
    Countersigning {
        /// The provider.
        provider: NodeId,
    },
}

/// Why one candidate did not end up selling.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CandidateFailure {
    /// The transport failed to reach it.
    Unreachable {
        /// Which request.
        request: &'static str,
        /// The transport's reason.
        reason: String,
    },
    /// No answer within the request timeout.
    TimedOut {
        /// Which request.
        request: &'static str,
    },
    /// It answered with a REAR error.
    Refused {
        /// Which request.
        request: &'static str,
        /// The error.
        error: RearError,
    },
    /// It answered, but not acceptably (wrong message, bad signature, terms that
    /// differ from what was agreed).
    InvalidResponse {
        /// Which request.
        request: &'static str,
        /// What was wrong.
        reason: InvalidAnswer,
    },
    /// None of its flavors can serve the request.
    NoSuitableFlavor {
        /// Why, per flavor (empty when it listed none).
        reasons: Vec<Unsuitable>,
    },
    /// The countersignature was sent but never acknowledged: the contract may or
    /// may not be active at the provider. The driver keeps it as `PendingAck` and
    /// re-sends the countersignature later; a `Replay` answer confirms it.
    Unconfirmed {
        /// The contract.
        contract: ContractId,
    },
}

impl fmt::Display for CandidateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CandidateFailure::Unreachable { request, reason } => {
                write!(f, "{request}: unreachable ({reason})")
            }
            CandidateFailure::TimedOut { request } => write!(f, "{request}: no answer in time"),
            CandidateFailure::Refused { request, error } => {
                write!(f, "{request}: refused: {error}")
            }
            CandidateFailure::InvalidResponse { request, reason } => {
                write!(f, "{request}: invalid answer: {reason}")
            }
            CandidateFailure::NoSuitableFlavor { reasons } if reasons.is_empty() => {
                write!(f, "no flavor matches")
            }
            CandidateFailure::NoSuitableFlavor { reasons } => {
                let reasons: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
                write!(f, "no suitable flavor: {}", reasons.join("; "))
            }
            CandidateFailure::Unconfirmed { contract } => write!(
                f,
                "countersignature of contract {contract} not acknowledged; it may be active"
            ),
        }
    }
}

/// What was wrong with a provider's answer (the reason of
/// [`CandidateFailure::InvalidResponse`]).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAnswer {
    /// A well-formed REAR message, but not one that answers the request.
    #[error("unexpected answer {got}")]
    Unexpected {
        /// The kind of message that came (`flavors`, `reserved` …).
        got: &'static str,
    },
    /// Some listed flavors carry bad signatures (they were ignored).
    #[error("{count} flavors with bad signatures ignored")]
    BadFlavorSignatures {
        /// How many.
        count: usize,
    },
    /// The reservation differs from what was asked for.
    #[error("reservation {0}")]
    Reservation(Mismatch),
    /// The offered terms differ from what was asked for.
    #[error("terms {0}")]
    Terms(Mismatch),
    /// The provider's price rose above the buyer's ceiling between listing and reserving.
    #[error("price rose to {price} micro-units per {period:?}")]
    PriceRose {
        /// The new quote, micro-units per `period`.
        price: u64,
        /// The flavor's price period.
        period: fluidos_contracts::PricePeriod,
    },
    /// An offer arrived while no purchase was in progress.
    #[error("no purchase in progress")]
    NoPurchase,
    /// The provider's signature on the offer does not verify.
    #[error("offer does not verify: {0}")]
    OfferDoesNotVerify(#[source] Arc<ContractError>),
    /// The buyer could not countersign the offer.
    #[error("cannot countersign: {0}")]
    Countersign(#[source] Arc<ContractError>),
}

/// Which part of a reservation or of offered terms differs from what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// Another provider.
    #[error("name another provider")]
    Provider,
    /// Another buyer.
    #[error("name another buyer")]
    Buyer,
    /// Another reservation.
    #[error("are for another reservation")]
    Reservation,
    /// Another partition.
    #[error("hold another partition")]
    Partition,
    /// Another flavor.
    #[error("are for another flavor")]
    Flavor,
    /// Another nonce.
    #[error("carry another nonce")]
    Nonce,
    /// A price above what was accepted (amount, currency or period).
    #[error("carry a price above what was accepted")]
    Price,
    /// Other buyer fabric parameters.
    #[error("carry other buyer fabric parameters")]
    Fabric,
    /// A forwarding path for a direct sale.
    #[error("claim a forwarding path for a direct sale")]
    Forwarding,
    /// A validity that is empty or longer than requested.
    #[error("last longer than requested")]
    Duration,
}

// The contract errors inside compare by their message: `ContractError` is not
// comparable, and two answers wrong in the same words are the same problem.
impl PartialEq for InvalidAnswer {
    fn eq(&self, other: &Self) -> bool {
        use InvalidAnswer as I;
        match (self, other) {
            (I::Unexpected { got: a }, I::Unexpected { got: b }) => a == b,
            (I::BadFlavorSignatures { count: a }, I::BadFlavorSignatures { count: b }) => a == b,
            (I::Reservation(a), I::Reservation(b)) | (I::Terms(a), I::Terms(b)) => a == b,
            (
                I::PriceRose { price, period },
                I::PriceRose {
                    price: p2,
                    period: q2,
                },
            ) => price == p2 && period == q2,
            (I::NoPurchase, I::NoPurchase) => true,
            (I::OfferDoesNotVerify(a), I::OfferDoesNotVerify(b))
            | (I::Countersign(a), I::Countersign(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for InvalidAnswer {}

/// Why an acquisition failed, per candidate, in the order things went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquisitionFailure {
    /// What happened with each candidate (a candidate may appear more than once,
    /// once per flavor tried).
    pub reasons: Vec<(NodeId, CandidateFailure)>,
}

impl fmt::Display for AcquisitionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return write!(f, "no candidates to ask");
        }
        write!(f, "no provider sold the request:")?;
        for (node, why) in &self.reasons {
            write!(f, "\n  {}: {why}", node.short())?;
        }
        Ok(())
    }
}

/// What the driver must know or do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquisitionEvent {
    /// The acquisition moved on.
    Progress(Phase),
    /// A provider listed these flavors (signatures verified), for the driver to
    /// remember and pass as [`AcquisitionOptions::known_offers`] next time.
    Listed {
        /// The provider.
        provider: NodeId,
        /// What it listed; may be empty.
        flavors: Vec<Verified<Flavor>>,
    },
    /// Persist this countersigned contract (`BuyerContract`, `PendingAck`), then
    /// call [`Acquisition::handle_persisted`](super::Acquisition::handle_persisted); the countersignature is only sent
    /// after that.
    Persist(Box<VerifiedContract>),
    /// A contract handed out in `Persist` will not become active (the provider
    /// refused the countersignature); record it as `BuyerEnded` / `NotConcluded`.
    Discarded {
        /// The contract.
        contract: ContractId,
        /// Its provider.
        provider: NodeId,
    },
    /// The provider acknowledged the countersignature: the contract is active.
    Done(Box<VerifiedContract>),
    /// No contract was made.
    Failed(AcquisitionFailure),
}
