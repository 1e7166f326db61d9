//! Why a contract or a replica ended before running its course: the typed cause that
//! the view, `contracts` and `workload` show next to the reason's text.

use fluidos_contracts::{NodeId, Termination, TerminationCause};
use serde::{Deserialize, Serialize};

/// Why a contract or a replica ended. A replica that ran to its own end (exited) has
/// none; one that failed for another reason (a bad image, no room) has none either,
/// and its reason says why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EndCause {
    /// Its owner ended it: the buyer terminated the contract; the workload's owner
    /// undeployed the replica or took it back.
    ByOwner,
    /// The provider ended it: it terminated the contract (and so stopped the replicas
    /// under it).
    ByProvider,
    /// The contract reached the end of its validity.
    Expired,
    /// The owner heard nothing from the provider for longer than its
    /// `provider_lost_after`.
    ProviderLost,
    /// It went past what the contract allows: killed at its memory limit, or refused
    /// for asking more than the contract has left.
    OverQuota,
}

impl EndCause {
    /// Its name (`by_owner`, `by_provider`, `expired`, `provider_lost`, `over_quota`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EndCause::ByOwner => "by_owner",
            EndCause::ByProvider => "by_provider",
            EndCause::Expired => "expired",
            EndCause::ProviderLost => "provider_lost",
            EndCause::OverQuota => "over_quota",
        }
    }

    /// The cause of a contract ended by `t`, a termination signed by one of its
    /// parties (`provider` is the contract's provider). A typed cause in the
    /// termination wins; otherwise who signed it says.
    pub fn of_termination(t: &Termination, provider: &NodeId) -> EndCause {
        match t.cause {
            TerminationCause::ProviderLost => EndCause::ProviderLost,
            TerminationCause::OverQuota => EndCause::OverQuota,
            _ if t.by == *provider => EndCause::ByProvider,
            _ => EndCause::ByOwner,
        }
    }
}

impl std::fmt::Display for EndCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndCause::ByOwner => "by owner",
            EndCause::ByProvider => "by provider",
            EndCause::Expired => "expired",
            EndCause::ProviderLost => "provider lost",
            EndCause::OverQuota => "over quota",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluidos_contracts::{ContractId, Nonce, SecretKey, Timestamp};

    #[test]
    fn a_termination_says_who_and_why() {
        let (p, b) = (
            SecretKey::generate().node_id(),
            SecretKey::generate().node_id(),
        );
        let t = |by, cause| Termination {
            contract: ContractId([1; 16]),
            by,
            reason: String::new(),
            at: Timestamp(1),
            nonce: Nonce([0; 16]),
            cause,
        };
        use TerminationCause as C;
        assert_eq!(
            EndCause::of_termination(&t(b, C::Requested), &p),
            EndCause::ByOwner
        );
        assert_eq!(
            EndCause::of_termination(&t(p, C::Requested), &p),
            EndCause::ByProvider
        );
        assert_eq!(
            EndCause::of_termination(&t(b, C::ProviderLost), &p),
            EndCause::ProviderLost
        );
        assert_eq!(
            EndCause::of_termination(&t(p, C::OverQuota), &p),
            EndCause::OverQuota
        );
        assert_eq!(
            serde_json::to_string(&EndCause::ProviderLost).unwrap(),
            "\"provider_lost\""
        );
    }
}
