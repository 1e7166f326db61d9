//! # fluidos-contracts
//!
//! The vocabulary of the fluidos market and its trust. This crate owns:
//!
//! - **identity**: [`SecretKey`] and [`NodeId`] (an ed25519 key, shown as a `did:key`),
//!   and the node's key file ([`keyfile`]);
//! - **quantities and offers**: [`Resources`], [`Flavor`], [`Selector`];
//! - **agreements**: [`Reservation`], [`ContractTerms`] signed by both parties
//!   ([`SignedContract`] → [`VerifiedContract`]), [`Termination`];
//! - **encoding**: [`canonical`] CBOR, the one encoding of every signed byte;
//! - **envelopes**: [`Signed<T>`] from the wire becomes [`Verified<T>`] only through
//!   verification — the rest of fluidos takes only verified values;
//! - **W3C Verifiable Credentials** (feature `vc`, on by default): export and verify a
//!   contract as a VC through the `ssi` crate.
//!
//! It does no networking and starts no runtime; everything here is plain data and
//! pure functions, so any transport or simulator can use it.
//!
//! ```no_run
//! use fluidos_contracts::{SecretKey, Signed, Flavor};
//! # fn flavor(owner: fluidos_contracts::NodeId) -> Flavor { unimplemented!() }
//! let key = SecretKey::generate();
//! println!("I am {}", key.node_id()); // did:key:z6Mk…
//! let signed = Signed::sign(flavor(key.node_id()), &key).unwrap();
//! let wire = fluidos_contracts::canonical::to_vec(signed.signed()).unwrap();
//! let back: Signed<Flavor> = fluidos_contracts::signed::decode_envelope(&wire).unwrap();
//! assert_eq!(*back.verify().unwrap(), *signed);
//! ```

mod bytes;
pub mod canonical;
pub mod contract;
pub mod flavor;
mod identity;
pub mod keyfile;
pub mod private_file;
pub mod rear;
pub mod resources;
pub mod selector;
pub mod signed;
mod time;
#[cfg(feature = "vc")]
pub mod vc;

pub use contract::{
    BuyerTerms, ContractError, ContractId, ContractTerms, FabricParams, Nonce, Quote, Reservation,
    ReservationId, SignedContract, Termination, TerminationCause, VerifiedContract, VerifiedOffer,
    WireGuardKey,
};
pub use flavor::{
    Characteristics, Flavor, FlavorId, Location, PartitionError, Partitionability, Price,
    PriceModel, PricePeriod, Properties,
};
pub use identity::{NodeId, ParseNodeIdError, SecretKey, Signature, SignatureError};
pub use resources::{Architecture, GpuInfo, Resources};
pub use selector::{Range, Selector};
pub use signed::{Signed, SignedPayload, Verified, VerifyCache};
pub use time::Timestamp;

/// A string is not a hex identifier of the right length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a hex identifier of the expected length")]
pub struct ParseIdError;
