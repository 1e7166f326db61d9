//! The REAR messages (`/fluidos/rear/1`): list, reserve, purchase (or both in one
//! request), countersign, terminate. FLUIDOS D2.1 §6.4.3, with signatures from both parties.
//!
//! These are plain data so that the wire (`fluidos-discovery`), the provider ledger
//! and the buyer logic (`fluidos-core`) and any simulator share one definition. Every
//! request is authenticated by the transport: the sender is the libp2p peer whose
//! Noise handshake proved its key, so a request carries no signature of its own
//! unless it must be shown to third parties (a [`Termination`]).

use serde::{Deserialize, Serialize};

use crate::{
    BuyerTerms, ContractId, Flavor, FlavorId, Nonce, Reservation, ReservationId, Resources,
    Selector, Signature, Signed, SignedContract, Termination,
};

/// The libp2p protocol name of REAR.
pub const PROTOCOL: &str = "/fluidos/rear/1";

/// The largest REAR request a node accepts, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The largest REAR response a node accepts, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A request from a buyer (or, for `Terminate`, from either party).
// Messages are built once and moved into the codec; boxing would only complicate construction.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Which of your flavors match this selector?
    ListFlavors {
        /// The filter.
        selector: Selector,
    },
    /// Hold this partition of that flavor for me.
    Reserve {
        /// The flavor.
        flavor: FlavorId,
        /// The quantities to hold; must respect the flavor's min and step.
        partition: Resources,
        /// Chosen by the buyer; repeating a request with the same nonce returns the same reservation.
        nonce: Nonce,
    },
    /// Reserve and purchase in one round trip: hold this partition and answer
    /// with contract terms signed by you, or hold nothing at all. Idempotent per
    /// `nonce`, like `Reserve`: repeating it returns the same offer.
    ReserveAndPurchase {
        /// The flavor.
        flavor: FlavorId,
        /// The quantities to buy; must respect the flavor's min and step.
        partition: Resources,
        /// Chosen by the buyer, as for `Reserve`.
        nonce: Nonce,
        /// The buyer's fabric parameters and price acceptance, as for `Purchase`.
        terms: BuyerTerms,
    },
    /// Turn my reservation into contract terms signed by you.
    Purchase {
        /// The reservation.
        reservation: ReservationId,
        /// The buyer's fabric parameters and price acceptance.
        terms: BuyerTerms,
    },
    /// Here is my countersignature of the terms you signed.
    Countersign {
        /// The contract.
        contract: ContractId,
        /// The buyer's signature over the terms.
        signature: Signature,
    },
    /// End this contract now.
    Terminate {
        /// The termination, signed by the party ending the contract.
        termination: Signed<Termination>,
    },
}

impl Request {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::ListFlavors { .. } => "list_flavors",
            Request::Reserve { .. } => "reserve",
            Request::ReserveAndPurchase { .. } => "reserve_and_purchase",
            Request::Purchase { .. } => "purchase",
            Request::Countersign { .. } => "countersign",
            Request::Terminate { .. } => "terminate",
        }
    }
}

/// A provider's answer. Every failure is a typed [`Response::Error`], never a dropped stream.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The matching flavors, each signed by the provider.
    Flavors {
        /// The flavors.
        flavors: Vec<Signed<Flavor>>,
    },
    /// The capacity is held.
    Reserved {
        /// The reservation.
        reservation: Reservation,
    },
    /// Contract terms signed by the provider, to be countersigned.
    Offer {
        /// The provider-signed contract.
        contract: SignedContract,
    },
    /// The provider stored the contract with both signatures; it is active.
    Countersigned {
        /// The contract.
        contract: ContractId,
    },
    /// The contract is terminated.
    Terminated {
        /// The contract.
        contract: ContractId,
    },
    /// The request failed.
    Error(RearError),
}

/// A typed REAR failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RearError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl RearError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The REAR error codes. Encoded as snake_case strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No flavor with that id.
    UnknownFlavor,
    /// The flavor's validity has ended.
    FlavorExpired,
    /// Not enough capacity is left for the partition.
    InsufficientCapacity,
    /// The partition breaks the flavor's min/step or partitionability rules.
    InvalidPartition,
    /// No reservation with that id (or it was released).
    UnknownReservation,
    /// The reservation's TTL has passed; its capacity was released.
    ReservationExpired,
    /// No contract with that id.
    UnknownContract,
    /// The price exceeds what the buyer accepts, or the currency differs.
    PriceNotAccepted,
    /// A signature does not verify.
    BadSignature,
    /// The request repeats one that already took effect (a purchase of a concluded
    /// reservation, a second countersignature, a reused termination).
    Replay,
    /// The sender may not do this (not the reservation's buyer, not a contract party).
    NotAuthorised,
    /// Too many requests from this peer; try later.
    RateLimited,
    /// The request could not be decoded.
    Malformed,
    /// The request exceeds the size limit.
    TooLarge,
    /// The provider could not make the request durable or is shutting down.
    Unavailable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical;

    #[test]
    fn requests_and_errors_round_trip() {
        let req = Request::Reserve {
            flavor: FlavorId([1; 16]),
            partition: Resources {
                cpu_millis: 1000,
                ..Default::default()
            },
            nonce: Nonce([2; 16]),
        };
        let bytes = canonical::to_vec(&req).unwrap();
        assert_eq!(canonical::from_slice::<Request>(&bytes).unwrap(), req);
        let resp = Response::Error(RearError::new(ErrorCode::InsufficientCapacity, "cpu"));
        let bytes = canonical::to_vec(&resp).unwrap();
        assert_eq!(canonical::from_slice::<Response>(&bytes).unwrap(), resp);
        // The error code travels as a readable string.
        assert!(bytes.windows(21).any(|w| w == b"insufficient_capacity"));
    }
}
