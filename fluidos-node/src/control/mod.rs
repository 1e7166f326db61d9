//! The local control API: JSON over HTTP on loopback (and optionally a unix
//! socket), every request authorised by the bearer token in
//! `DATA_DIR/control.token`.
//!
//! - [`types`]: the request and response bodies (the API's contract);
//! - [`NodeApi`]: what the handlers need from a node — implemented for
//!   `fluidos_core::Node` in [`crate::adapter`] and by test doubles;
//! - [`server`]: the axum router, authentication and the concurrency bound;
//! - [`client`]: the CLI's side;
//! - [`token`]: creating and reading the token file.

pub mod client;
pub mod server;
pub mod token;
pub mod types;

use std::future::Future;

use fluidos_contracts::{ContractId, Flavor};
use libp2p::Multiaddr;
use tokio::sync::mpsc;

use types::{
    BuyEvent, BuyRequest, ContractDetail, ContractExport, ContractInfo, DeployEvent, DeployRequest,
    LogsView, NodeView, PeerView, StatusView, WorkloadView,
};

/// The longest `wait_ms` a purchase may ask for.
pub const MAX_BUY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// An error a handler returns: an HTTP status, a stable code and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable code (`not_found`, `bad_request`, …).
    pub code: &'static str,
    /// What went wrong, for humans.
    pub message: String,
}

impl ApiError {
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "bad_request",
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            code: "not_found",
            message: message.into(),
        }
    }
    /// 409: the request conflicts with the node's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            code: "conflict",
            message: message.into(),
        }
    }
    /// 422: the request is well-formed but cannot be satisfied (no offer fits, …).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 422,
            code,
            message: message.into(),
        }
    }
    /// 501: the daemon was built without the needed feature.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self {
            status: 501,
            code: "not_implemented",
            message: message.into(),
        }
    }
    /// 503: the node is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: 503,
            code: "unavailable",
            message: message.into(),
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            code: "internal",
            message: message.into(),
        }
    }
}

/// What the control API needs from a node. Every method may be called
/// concurrently; long work (`buy`) reports progress through the channel.
pub trait NodeApi: Clone + Send + Sync + 'static {
    /// `GET /v1/status`.
    fn status(&self) -> impl Future<Output = Result<StatusView, ApiError>> + Send;
    /// `GET /v1/flavors`: the flavors this node offers now.
    fn flavors(&self) -> impl Future<Output = Result<Vec<Flavor>, ApiError>> + Send;
    /// `GET /v1/peers`.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerView>, ApiError>> + Send;
    /// `POST /v1/peers`.
    fn add_peer(&self, addr: Multiaddr) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `GET /v1/contracts`.
    fn contracts(&self) -> impl Future<Output = Result<Vec<ContractInfo>, ApiError>> + Send;
    /// `GET /v1/contracts/{id}`; `Ok(None)` when unknown.
    fn contract(
        &self,
        id: ContractId,
    ) -> impl Future<Output = Result<Option<ContractDetail>, ApiError>> + Send;
    /// `POST /v1/contracts/{id}/terminate`.
    fn terminate(
        &self,
        id: ContractId,
        reason: String,
        cause: fluidos_contracts::TerminationCause,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// `GET /v1/contracts/{id}/export`.
    fn export(
        &self,
        id: ContractId,
        vc: bool,
    ) -> impl Future<Output = Result<ContractExport, ApiError>> + Send;
    /// `POST /v1/buy`: runs the acquisition, sending [`BuyEvent::Progress`] as it
    /// goes; the server adds the final `done`/`failed` line itself.
    fn buy(
        &self,
        req: BuyRequest,
        progress: mpsc::Sender<BuyEvent>,
    ) -> impl Future<Output = Result<ContractInfo, ApiError>> + Send;
    /// `GET /v1/nodes`.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeView>, ApiError>> + Send;
    /// `GET /v1/workloads`.
    fn workloads(&self) -> impl Future<Output = Result<Vec<WorkloadView>, ApiError>> + Send;
    /// `GET /v1/workloads/{id}`; `Ok(None)` when unknown.
    fn workload(
        &self,
        _id: String,
    ) -> impl Future<Output = Result<Option<WorkloadView>, ApiError>> + Send {
        async { Err(ApiError::not_implemented("workloads")) }
    }
    /// `POST /v1/deploy`: places, acquires and offloads, sending
    /// [`DeployEvent::Progress`] as it goes; returns the last line.
    fn deploy(
        &self,
        _req: DeployRequest,
        _progress: mpsc::Sender<DeployEvent>,
    ) -> impl Future<Output = Result<DeployEvent, ApiError>> + Send {
        async { Err(ApiError::not_implemented("workloads")) }
    }
    /// `POST /v1/workloads/{id}/undeploy`.
    fn undeploy(&self, _id: String) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { Err(ApiError::not_implemented("workloads")) }
    }
    /// `GET /v1/workloads/{id}/logs?replica=&tail=`.
    fn logs(
        &self,
        _id: String,
        _replica: u32,
        _tail: u32,
    ) -> impl Future<Output = Result<LogsView, ApiError>> + Send {
        async { Err(ApiError::not_implemented("workloads")) }
    }
    /// `GET /v1/fabric`: the tunnels, as `wg show` shows them, with the backend
    /// and why.
    fn fabric(&self) -> impl Future<Output = Result<types::FabricReport, ApiError>> + Send {
        async { Err(ApiError::not_implemented("fabric")) }
    }
    /// `GET /v1/view/export`: the view as a standard Automerge file.
    fn view_export(&self) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send {
        async { Err(ApiError::not_implemented("workloads")) }
    }
}
