//! Reservations and contracts, signed by both parties.
//!
//! The provider signs the [`ContractTerms`] first ([`SignedContract::offer`]); the
//! buyer checks that signature ([`SignedContract::verify_offer`]) and countersigns
//! ([`VerifiedOffer::countersign`]). Only a contract carrying both valid signatures
//! becomes a [`VerifiedContract`], and only a verified contract is ever active.
//! Both signatures cover the same bytes, the canonical CBOR of the terms, under the
//! domain [`CONTRACT_DOMAIN`]; a third party needs nothing but the contract bytes.

use serde::{Deserialize, Serialize};

use crate::bytes::id_type;
use crate::canonical::{self, DecodeError};
use crate::signed::{SignedPayload, signing_input};
use crate::{Flavor, NodeId, PriceModel, PricePeriod, Resources, SecretKey, Signature, Timestamp};

id_type!(
    /// Identifies a reservation (16 random bytes, chosen by the provider).
    ReservationId,
    16
);
id_type!(
    /// Identifies a contract (16 random bytes, chosen by the provider).
    ContractId,
    16
);
id_type!(
    /// A random value that makes a request or a contract unique.
    Nonce,
    16
);

/// The domain both contract signatures are made under.
pub const CONTRACT_DOMAIN: &str = "fluidos/contract/1";

/// Capacity a provider holds for one buyer until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The reservation's identifier.
    pub id: ReservationId,
    /// The flavor as it was when reserved.
    pub flavor: Flavor,
    /// The quantities held.
    pub partition: Resources,
    /// Who may purchase it.
    pub buyer: NodeId,
    /// The buyer's nonce from the request: the same nonce returns the same reservation.
    pub buyer_nonce: Nonce,
    /// When the hold lapses (wall clock).
    pub expires_at: Timestamp,
}

/// A 32-byte WireGuard (x25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WireGuardKey(pub [u8; 32]);

impl std::fmt::Debug for WireGuardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WireGuardKey({})", hex::encode(&self.0[..6]))
    }
}

impl Serialize for WireGuardKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for WireGuardKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::bytes::deserialize_array(d).map(WireGuardKey)
    }
}

/// What one party needs to tell the other to build the network fabric.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricParams {
    /// The party's WireGuard static public key. Appearing in the signed terms binds
    /// it to the party's node identity.
    pub wireguard_key: WireGuardKey,
    /// UDP endpoints where the party accepts WireGuard, as `host:port` strings.
    pub endpoints: Vec<String>,
    /// The party's overlay address (IPv6), if it already has one.
    pub overlay_address: Option<String>,
}

/// What the buyer brings to a purchase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerTerms {
    /// The buyer's fabric parameters.
    pub fabric: FabricParams,
    /// The most the buyer accepts to pay, in micro-units per period.
    pub max_price_micros: u64,
    /// Currency of `max_price_micros`.
    pub currency: String,
    /// How long the buyer wants the contract, in milliseconds.
    pub duration_ms: u64,
}

/// The agreed price of a contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Amount in millionths of the currency unit, per period.
    pub amount_micros: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// The billing period.
    pub period: PricePeriod,
    /// The billing model.
    pub model: PriceModel,
}

/// What both parties sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTerms {
    /// The contract's identifier.
    pub id: ContractId,
    /// The reservation it was bought from.
    pub reservation: ReservationId,
    /// The seller.
    pub provider: NodeId,
    /// The buyer.
    pub buyer: NodeId,
    /// The flavor as sold.
    pub flavor: Flavor,
    /// The quantities bought.
    pub partition: Resources,
    /// The price.
    pub price: Quote,
    /// Start of validity (wall clock).
    pub valid_from: Timestamp,
    /// End of validity (wall clock); the capacity returns to the provider then.
    pub valid_until: Timestamp,
    /// Makes the terms unique.
    pub nonce: Nonce,
    /// The provider's fabric parameters.
    pub provider_fabric: FabricParams,
    /// The buyer's fabric parameters.
    pub buyer_fabric: FabricParams,
    /// Supernodes this sale was forwarded through, first hop first. Empty when the
    /// provider sells its own capacity.
    pub forwarded_via: Vec<NodeId>,
}

/// Why a contract could not be made or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// The bytes are not a canonical contract.
    #[error("contract encoding: {0}")]
    Decode(#[from] DecodeError),
    /// The terms could not be encoded.
    #[error(transparent)]
    Encode(#[from] canonical::EncodeError),
    /// The provider's signature does not verify.
    #[error("provider signature does not verify")]
    BadProviderSignature,
    /// The buyer's signature does not verify.
    #[error("buyer countersignature does not verify")]
    BadBuyerSignature,
    /// The contract carries no buyer countersignature yet.
    #[error("contract is not countersigned by the buyer")]
    NotCountersigned,
    /// The key used is not the key of the party that must sign.
    #[error("the key is not the {role}'s key")]
    WrongKey {
        /// `provider` or `buyer`.
        role: &'static str,
    },
    /// Provider and buyer are the same node.
    #[error("provider and buyer are the same node")]
    SelfDealing,
    /// `valid_until` is not after `valid_from`.
    #[error("validity period is empty")]
    EmptyValidity,
}

/// A contract as it travels and as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedContract {
    /// Canonical CBOR of the [`ContractTerms`].
    #[serde(with = "crate::bytes::vec")]
    pub terms: Vec<u8>,
    /// The provider's signature over the terms.
    pub provider_signature: Signature,
    /// The buyer's countersignature, once given.
    pub buyer_signature: Option<Signature>,
}

impl SignedContract {
    /// The provider signs `terms`, producing an offer for the buyer to countersign.
    pub fn offer(
        terms: ContractTerms,
        provider: &SecretKey,
    ) -> Result<VerifiedOffer, ContractError> {
        if provider.node_id() != terms.provider {
            return Err(ContractError::WrongKey { role: "provider" });
        }
        check_shape(&terms)?;
        let bytes = canonical::to_vec(&terms)?;
        let provider_signature = provider.sign(&signing_input(CONTRACT_DOMAIN, &bytes));
        Ok(VerifiedOffer {
            terms,
            signed: SignedContract {
                terms: bytes,
                provider_signature,
                buyer_signature: None,
            },
        })
    }

    /// Decodes the terms and checks the provider's signature only.
    pub fn verify_offer(&self) -> Result<VerifiedOffer, ContractError> {
        let terms: ContractTerms = canonical::from_slice(&self.terms)?;
        check_shape(&terms)?;
        terms
            .provider
            .verify(
                &signing_input(CONTRACT_DOMAIN, &self.terms),
                &self.provider_signature,
            )
            .map_err(|_| ContractError::BadProviderSignature)?;
        Ok(VerifiedOffer {
            terms,
            signed: SignedContract {
                buyer_signature: None,
                ..self.clone()
            },
        })
    }

    /// Checks both signatures. Anyone can do this with the contract bytes alone.
    pub fn verify(&self) -> Result<VerifiedContract, ContractError> {
        let offer = self.verify_offer()?;
        let buyer_signature = self
            .buyer_signature
            .ok_or(ContractError::NotCountersigned)?;
        offer.accept_countersignature(buyer_signature)
    }

    /// The canonical CBOR of this contract (what `contract verify <file>` reads).
    pub fn to_bytes(&self) -> Result<Vec<u8>, canonical::EncodeError> {
        canonical::to_vec(self)
    }

    /// Decodes a contract from its canonical CBOR; verify it before use.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        canonical::from_slice(bytes)
    }
}

fn check_shape(terms: &ContractTerms) -> Result<(), ContractError> {
    if terms.provider == terms.buyer {
        return Err(ContractError::SelfDealing);
    }
    if terms.valid_until <= terms.valid_from {
        return Err(ContractError::EmptyValidity);
    }
    Ok(())
}

/// Terms carrying a valid provider signature, waiting for the buyer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedOffer {
    terms: ContractTerms,
    signed: SignedContract,
}

impl VerifiedOffer {
    /// The terms.
    pub fn terms(&self) -> &ContractTerms {
        &self.terms
    }

    /// The provider-signed form.
    pub fn signed(&self) -> &SignedContract {
        &self.signed
    }

    /// The buyer countersigns, completing the contract.
    pub fn countersign(self, buyer: &SecretKey) -> Result<VerifiedContract, ContractError> {
        if buyer.node_id() != self.terms.buyer {
            return Err(ContractError::WrongKey { role: "buyer" });
        }
        let signature = buyer.sign(&signing_input(CONTRACT_DOMAIN, &self.signed.terms));
        Ok(VerifiedContract {
            signed: SignedContract {
                buyer_signature: Some(signature),
                ..self.signed
            },
            terms: self.terms,
        })
    }

    /// The provider attaches the buyer's countersignature after checking it.
    pub fn accept_countersignature(
        self,
        signature: Signature,
    ) -> Result<VerifiedContract, ContractError> {
        self.terms
            .buyer
            .verify(
                &signing_input(CONTRACT_DOMAIN, &self.signed.terms),
                &signature,
            )
            .map_err(|_| ContractError::BadBuyerSignature)?;
        Ok(VerifiedContract {
            signed: SignedContract {
                buyer_signature: Some(signature),
                ..self.signed
            },
            terms: self.terms,
        })
    }
}

/// A contract with both signatures checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedContract {
    terms: ContractTerms,
    signed: SignedContract,
}

impl VerifiedContract {
    /// The terms.
    pub fn terms(&self) -> &ContractTerms {
        &self.terms
    }

    /// The contract's id.
    pub fn id(&self) -> ContractId {
        self.terms.id
    }

    /// The signed form, to send or store.
    pub fn signed(&self) -> &SignedContract {
        &self.signed
    }

    /// The buyer's countersignature.
    pub fn buyer_signature(&self) -> Signature {
        // Invariant: a VerifiedContract is only built with a buyer signature.
        self.signed.buyer_signature.unwrap_or(Signature([0; 64]))
    }

    /// Whether the contract is in force at `now`.
    pub fn is_active_at(&self, now: Timestamp) -> bool {
        self.terms.valid_from <= now && now < self.terms.valid_until
    }

    /// Whether `node` is one of the two parties.
    pub fn is_party(&self, node: &NodeId) -> bool {
        self.terms.provider == *node || self.terms.buyer == *node
    }
}

/// Why a contract is being ended early.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// The contract.
    pub contract: ContractId,
    /// The party ending it; it signs the termination.
    pub by: NodeId,
    /// Free-text reason.
    pub reason: String,
    /// When it was requested (wall clock).
    pub at: Timestamp,
    /// Makes each request unique.
    pub nonce: Nonce,
    /// Why, typed. Absent on the wire when [`TerminationCause::Requested`], so a
    /// termination without a cause encodes (and is signed) as before the field existed.
    #[serde(default, skip_serializing_if = "TerminationCause::is_requested")]
    pub cause: TerminationCause,
}

/// Why a party ends a contract early, as it signs it in a [`Termination`]. Who ended it
/// is the termination's `by`; this says why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TerminationCause {
    /// The party decided to (an operator, an undeploy): the default.
    #[default]
    Requested,
    /// The buyer heard nothing from the provider for longer than it waits before it
    /// declares a provider lost.
    ProviderLost,
    /// The provider ends it because the buyer used more than the contract allows.
    OverQuota,
}

impl TerminationCause {
    /// Whether this is the default, [`TerminationCause::Requested`].
    pub fn is_requested(&self) -> bool {
        *self == TerminationCause::Requested
    }

    /// Its name on the wire (`requested`, `provider_lost`, `over_quota`).
    pub fn as_str(&self) -> &'static str {
        match self {
            TerminationCause::Requested => "requested",
            TerminationCause::ProviderLost => "provider_lost",
            TerminationCause::OverQuota => "over_quota",
        }
    }
}

impl SignedPayload for Termination {
    const DOMAIN: &'static str = "fluidos/terminate/1";
    fn signer(&self) -> &NodeId {
        &self.by
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flavor::tests::sample;

    pub(crate) fn fabric(b: u8) -> FabricParams {
        FabricParams {
            wireguard_key: WireGuardKey([b; 32]),
            endpoints: vec![format!("127.0.0.1:{}", 51820 + b as u16)],
            overlay_address: None,
        }
    }

    pub(crate) fn terms(provider: &SecretKey, buyer: &SecretKey) -> ContractTerms {
        let flavor = sample(provider.node_id());
        ContractTerms {
            id: ContractId([9; 16]),
            reservation: ReservationId([8; 16]),
            provider: provider.node_id(),
            buyer: buyer.node_id(),
            partition: flavor.characteristics.resources,
            price: Quote {
                amount_micros: 800_000,
                currency: "EUR".into(),
                period: PricePeriod::Hour,
                model: PriceModel::Reserved,
            },
            flavor,
            valid_from: Timestamp(1_000),
            valid_until: Timestamp(3_601_000),
            nonce: Nonce([7; 16]),
            provider_fabric: fabric(1),
            buyer_fabric: fabric(2),
            forwarded_via: vec![],
        }
    }

    #[test]
    fn both_parties_sign_and_a_third_party_verifies_the_bytes() {
        let (p, b) = (SecretKey::generate(), SecretKey::generate());
        let offer = SignedContract::offer(terms(&p, &b), &p).unwrap();
        let wire = offer.signed().to_bytes().unwrap();
        let at_buyer = SignedContract::from_bytes(&wire)
            .unwrap()
            .verify_offer()
            .unwrap();
        let contract = at_buyer.countersign(&b).unwrap();
        let at_provider = offer
            .accept_countersignature(contract.buyer_signature())
            .unwrap();
        assert_eq!(at_provider, contract);

        let bytes = contract.signed().to_bytes().unwrap();
        let third_party = SignedContract::from_bytes(&bytes)
            .unwrap()
            .verify()
            .unwrap();
        assert_eq!(third_party.terms(), contract.terms());
        assert!(third_party.is_active_at(Timestamp(2_000)));
        assert!(!third_party.is_active_at(Timestamp(3_601_000)));
    }

    #[test]
    fn forged_signatures_are_rejected() {
        let (p, b, mallory) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        // Provider signature by someone else.
        let mut forged = SignedContract::offer(terms(&p, &b), &p)
            .unwrap()
            .signed()
            .clone();
        forged.provider_signature = mallory.sign(&signing_input(CONTRACT_DOMAIN, &forged.terms));
        assert!(matches!(
            forged.verify_offer(),
            Err(ContractError::BadProviderSignature)
        ));

        // Buyer countersignature by someone else.
        let offer = SignedContract::offer(terms(&p, &b), &p).unwrap();
        let bad = mallory.sign(&signing_input(CONTRACT_DOMAIN, &offer.signed().terms));
        assert!(matches!(
            offer.clone().accept_countersignature(bad),
            Err(ContractError::BadBuyerSignature)
        ));

        // A countersignature under another domain (e.g. a termination) does not count.
        let other_domain = b.sign(&signing_input("fluidos/terminate/1", &offer.signed().terms));
        assert!(matches!(
            offer.clone().accept_countersignature(other_domain),
            Err(ContractError::BadBuyerSignature)
        ));

        // Not countersigned at all.
        assert!(matches!(
            offer.signed().verify(),
            Err(ContractError::NotCountersigned)
        ));

        // Tampered terms.
        let mut contract = offer.countersign(&b).unwrap().signed().clone();
        let mut t: ContractTerms = canonical::from_slice(&contract.terms).unwrap();
        t.partition.cpu_millis += 1;
        contract.terms = canonical::to_vec(&t).unwrap();
        assert!(matches!(
            contract.verify(),
            Err(ContractError::BadProviderSignature)
        ));

        // Wrong keys.
        assert!(matches!(
            SignedContract::offer(terms(&p, &b), &b),
            Err(ContractError::WrongKey { role: "provider" })
        ));
        let offer = SignedContract::offer(terms(&p, &b), &p).unwrap();
        assert!(matches!(
            offer.countersign(&mallory),
            Err(ContractError::WrongKey { role: "buyer" })
        ));
    }

    #[test]
    fn malformed_terms_are_rejected() {
        let (p, b) = (SecretKey::generate(), SecretKey::generate());
        let mut t = terms(&p, &b);
        t.buyer = p.node_id();
        assert!(matches!(
            SignedContract::offer(t, &p),
            Err(ContractError::SelfDealing)
        ));
        let mut t = terms(&p, &b);
        t.valid_until = t.valid_from;
        assert!(matches!(
            SignedContract::offer(t, &p),
            Err(ContractError::EmptyValidity)
        ));
        assert!(SignedContract::from_bytes(&[0xa1, 0x00]).is_err());
    }

    /// A termination without a cause is the same bytes (and signature) as one made
    /// before `cause` existed; one with a cause carries it, and it is signed.
    #[test]
    fn termination_cause_is_optional_on_the_wire_and_signed() {
        #[derive(Serialize)]
        struct Before {
            contract: ContractId,
            by: NodeId,
            reason: String,
            at: Timestamp,
            nonce: Nonce,
        }
        let k = SecretKey::generate();
        let t = Termination {
            contract: ContractId([1; 16]),
            by: k.node_id(),
            reason: "done".into(),
            at: Timestamp(5),
            nonce: Nonce([2; 16]),
            cause: TerminationCause::Requested,
        };
        let before = Before {
            contract: t.contract,
            by: t.by,
            reason: t.reason.clone(),
            at: t.at,
            nonce: t.nonce,
        };
        assert_eq!(
            crate::canonical::to_vec(&t).unwrap(),
            crate::canonical::to_vec(&before).unwrap()
        );
        let lost = Termination {
            cause: TerminationCause::ProviderLost,
            ..t.clone()
        };
        let bytes = crate::canonical::to_vec(&lost).unwrap();
        let back: Termination = crate::canonical::from_slice(&bytes).unwrap();
        assert_eq!(back.cause, TerminationCause::ProviderLost);
        // The cause is covered by the signature: changing it breaks verification.
        let signed = crate::Signed::sign(lost.clone(), &k)
            .unwrap()
            .signed()
            .clone();
        assert_eq!(
            signed.verify().unwrap().cause,
            TerminationCause::ProviderLost
        );
        let forged = Termination {
            cause: TerminationCause::OverQuota,
            ..lost
        };
        let forged = crate::Signed::<Termination>::from_parts(
            crate::canonical::to_vec(&forged).unwrap(),
            *signed.signature(),
        );
        assert!(forged.verify().is_err());
    }
}
