//! The public data types of [`Node`](super::Node): status, contract summaries, errors.

use fluidos_contracts::{ContractId, NodeId, Resources, Timestamp, VerifiedContract};
use serde::{Deserialize, Serialize};

/// What this node does in the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Sells its capacity.
    pub provider: bool,
    /// Buys capacity from others.
    pub consumer: bool,
    /// Aggregates other nodes and sells their capacity (the supernode issue).
    pub supernode: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Self {
            provider: true,
            consumer: true,
            supernode: false,
        }
    }
}

/// A snapshot of a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id (did:key).
    pub node_id: NodeId,
    /// The same, as a string, for scripts.
    pub did_key: String,
    /// The libp2p peer id.
    pub peer_id: String,
    /// Listen addresses with `/p2p/…`.
    pub listen_addrs: Vec<String>,
    /// Roles.
    pub roles: Roles,
    /// What the host can sell in total.
    pub capacity: Resources,
    /// What is held by reservations, offers and contracts.
    pub committed: Resources,
    /// The flavors for sale now.
    pub flavors: Vec<fluidos_contracts::Flavor>,
    /// Live reservations (provider side).
    pub reservations: usize,
    /// Active contracts as provider.
    pub contracts_sold: usize,
    /// Active contracts as buyer.
    pub contracts_bought: usize,
    /// Current peering candidates.
    pub candidates: usize,
}

/// Which side of a contract this node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractRole {
    /// This node sold it.
    Provider,
    /// This node bought it.
    Buyer,
}

/// Where a contract stands, from this node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractState {
    /// Both signatures in place and within validity.
    Active,
    /// Countersigned here; the provider has not acknowledged yet.
    PendingAck,
    /// Ended (validity over or terminated).
    Ended,
}

/// A contract that is active now, as the workload side of a node follows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveContract {
    /// The contract.
    pub id: ContractId,
    /// This node's side of it.
    pub role: ContractRole,
    /// The other party.
    pub peer: NodeId,
    /// The quantities bought.
    pub partition: Resources,
    /// End of validity.
    pub valid_until: Timestamp,
    /// The flavor as sold (labels, location, architecture, price).
    pub flavor: fluidos_contracts::Flavor,
    /// The price per hour of the partition, micro-units, and its currency.
    pub price: fluidos_contracts::Quote,
    /// The other party's fabric parameters as signed in the contract (its
    /// WireGuard key, endpoints and overlay address).
    pub peer_fabric: fluidos_contracts::FabricParams,
}

impl ActiveContract {
    pub(crate) fn new(c: &VerifiedContract, role: ContractRole) -> Self {
        let t = c.terms();
        Self {
            id: c.id(),
            role,
            peer: match role {
                ContractRole::Provider => t.buyer,
                ContractRole::Buyer => t.provider,
            },
            partition: t.partition,
            valid_until: t.valid_until,
            flavor: t.flavor.clone(),
            price: t.price.clone(),
            peer_fabric: match role {
                ContractRole::Provider => t.buyer_fabric.clone(),
                ContractRole::Buyer => t.provider_fabric.clone(),
            },
        }
    }
}

/// A contract, summarised for lists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContractInfo {
    /// The contract id (hex).
    pub id: ContractId,
    /// This node's side.
    pub role: ContractRole,
    /// Where it stands.
    pub state: ContractState,
    /// Why it ended, once it has (by owner, by provider, expired, provider lost, over
    /// quota); absent while it runs, and for ends this node did not record a cause for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<crate::workload::EndCause>,
    /// The provider.
    pub provider: NodeId,
    /// The buyer.
    pub buyer: NodeId,
    /// What was bought.
    pub partition: Resources,
    /// Price per period, micro-units.
    pub price_micros: u64,
    /// Currency.
    pub currency: String,
    /// Start of validity.
    pub valid_from: Timestamp,
    /// End of validity.
    pub valid_until: Timestamp,
    /// Supernodes the sale went through.
    pub forwarded_via: Vec<NodeId>,
    /// The price's period.
    #[serde(default = "hour")]
    pub price_period: fluidos_contracts::PricePeriod,
    /// The billing model.
    #[serde(default = "reserved")]
    pub price_model: fluidos_contracts::PriceModel,
    /// The provider's last usage report for it, when replicas ran under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Box<crate::usage::ContractUsage>>,
    /// For a `pay_per_use` contract with a usage report: its cost so far, and whether
    /// the usage goes beyond the contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Box<crate::usage::UsageCost>>,
}

fn hour() -> fluidos_contracts::PricePeriod {
    fluidos_contracts::PricePeriod::Hour
}

fn reserved() -> fluidos_contracts::PriceModel {
    fluidos_contracts::PriceModel::Reserved
}

impl ContractInfo {
    /// Sets the usage report and the cost computed from it and the signed price.
    pub fn attach_usage(&mut self, usage: Option<crate::usage::ContractUsage>) {
        self.cost = usage.as_ref().and_then(|u| {
            let quote = fluidos_contracts::Quote {
                amount_micros: self.price_micros,
                currency: self.currency.clone(),
                period: self.price_period,
                model: self.price_model,
            };
            crate::usage::cost(u, &quote, &self.partition).map(Box::new)
        });
        self.usage = usage.map(Box::new);
    }

    /// With why it ended.
    pub(crate) fn ended(mut self, end: Option<crate::workload::EndCause>) -> Self {
        self.end = end;
        self
    }

    pub(crate) fn new(c: &VerifiedContract, role: ContractRole, state: ContractState) -> Self {
        let t = c.terms();
        Self {
            id: t.id,
            role,
            state,
            end: None,
            provider: t.provider,
            buyer: t.buyer,
            partition: t.partition,
            price_micros: t.price.amount_micros,
            currency: t.price.currency.clone(),
            valid_from: t.valid_from,
            valid_until: t.valid_until,
            forwarded_via: t.forwarded_via.clone(),
            price_period: t.price.period,
            price_model: t.price.model,
            usage: None,
            cost: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// No data directory was given.
    #[error("no data directory: call NodeBuilder::data_dir")]
    NoDataDir,
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The node key file is unusable.
    #[error(transparent)]
    Key(#[from] fluidos_contracts::keyfile::KeyFileError),
    /// The WireGuard key file is unusable.
    #[error(transparent)]
    WireGuardKey(#[from] fluidos_fabric::keyfile::KeyFileError),
    /// The host could not be measured.
    #[error("measuring the host: {0}")]
    Host(#[from] crate::host::HostError),
    /// The contract store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    /// Measuring the host panicked or was cancelled.
    #[error("measuring the host: the task failed: {0}")]
    HostTask(#[source] tokio::task::JoinError),
    /// The store's writer thread could not be started.
    #[error("starting the store writer thread: {0}")]
    Writer(#[source] std::io::Error),
    /// libp2p could not start (for example a listen address is taken).
    #[error("starting discovery: {0}")]
    Discovery(#[from] fluidos_discovery::StartError),
}

/// A request found the node shut down: its engine or workload task has stopped.
/// The only way the node's read-only queries ([`Node::status`](super::Node::status),
/// [`Node::contracts`](super::Node::contracts), [`Node::export_view`](super::Node::export_view),
/// …) fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the node has shut down")]
pub struct ShutDown;

/// Why [`Node::terminate`](super::Node::terminate) did not end a contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TerminateError {
    /// The node has shut down.
    #[error("the node has shut down")]
    ShutDown,
    /// No contract with that id here.
    #[error("no contract {0} on this node")]
    UnknownContract(ContractId),
    /// The contract has already ended.
    #[error("contract {0} has already ended")]
    AlreadyEnded(ContractId),
    /// The termination could not be signed (a bug: the node signs only as itself).
    #[error("signing the termination: {0}")]
    Sign(#[from] fluidos_contracts::signed::SignError),
    /// The ledger refused the termination.
    #[error("{0}")]
    Ledger(#[from] fluidos_contracts::rear::RearError),
    /// The store could not make the termination durable; the contract stays as it was.
    #[error("storing the termination: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl From<ShutDown> for TerminateError {
    fn from(_: ShutDown) -> Self {
        Self::ShutDown
    }
}
