//! The control API over a test double of the node: routing, error bodies, the
//! NDJSON purchase stream, the unix socket and the request bound.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fluidos_contracts::{ContractId, Flavor, Resources, SecretKey};
use fluidos_node::control::client::{Client, Endpoint, StatusError};
use fluidos_node::control::server::{router, serve};
use fluidos_node::control::token::Token;
use fluidos_node::control::types::{
    BuyEvent, BuyRequest, ContractDetail, ContractExport, ContractInfo, NodeStatus, NodeView,
    PeerView, StatusView, WorkloadView,
};
use fluidos_node::control::{ApiError, NodeApi};
use hyper::{Method, StatusCode};
use libp2p::Multiaddr;
use tokio::sync::{Semaphore, mpsc, oneshot};

#[derive(Clone)]
struct Fake {
    did: String,
    /// Handlers of `flavors` wait here, so a test can hold requests in flight.
    gate: Arc<Semaphore>,
    inside: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl NodeApi for Fake {
    async fn status(&self) -> Result<StatusView, ApiError> {
        Ok(StatusView {
            node: NodeStatus {
                node_id: self.did.parse().unwrap(),
                did_key: self.did.clone(),
                peer_id: "12D3KooWfake".into(),
                listen_addrs: vec![],
                roles: fluidos_core::Roles::default(),
                capacity: Resources {
                    cpu_millis: 1000,
                    ..Resources::ZERO
                },
                committed: Resources::ZERO,
                flavors: vec![],
                reservations: 0,
                contracts_sold: 0,
                contracts_bought: 0,
                candidates: 0,
            },
            version: "test".into(),
            uptime_secs: 0,
            discovery: Default::default(),
            runtime: None,
            fabric: None,
            docker: None,
        })
    }
    async fn flavors(&self) -> Result<Vec<Flavor>, ApiError> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.unwrap();
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![])
    }
    async fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        Ok(vec![])
    }
    async fn add_peer(&self, _addr: Multiaddr) -> Result<(), ApiError> {
        Ok(())
    }
    async fn contracts(&self) -> Result<Vec<ContractInfo>, ApiError> {
        Ok(vec![])
    }
    async fn contract(&self, _id: ContractId) -> Result<Option<ContractDetail>, ApiError> {
        Ok(None)
    }
    async fn terminate(
        &self,
        id: ContractId,
        _reason: String,
        _cause: fluidos_contracts::TerminationCause,
    ) -> Result<(), ApiError> {
        Err(ApiError::conflict(format!(
            "contract {id} has already ended"
        )))
    }
    async fn export(&self, id: ContractId, _vc: bool) -> Result<ContractExport, ApiError> {
        Err(ApiError::not_found(format!("no contract {id}")))
    }
    async fn buy(
        &self,
        req: BuyRequest,
        progress: mpsc::Sender<BuyEvent>,
    ) -> Result<ContractInfo, ApiError> {
        for phase in ["discover", "reserve"] {
            progress
                .send(BuyEvent::Progress {
                    phase: phase.into(),
                    detail: format!("{phase} {}", req.cpu_millis),
                })
                .await
                .unwrap();
        }
        Err(ApiError::unprocessable("buy_failed", "no provider"))
    }
    async fn nodes(&self) -> Result<Vec<NodeView>, ApiError> {
        Ok(vec![])
    }
    async fn workloads(&self) -> Result<Vec<WorkloadView>, ApiError> {
        Ok(vec![])
    }
}

struct Server {
    client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    fake: Fake,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(max_concurrent: usize) -> Server {
    let fake = Fake {
        did: SecretKey::generate().node_id().to_did_key(),
        gate: Arc::new(Semaphore::new(0)),
        inside: Arc::default(),
        peak: Arc::default(),
    };
    let token = Token::generate();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let unix = tokio::net::UnixListener::bind(&socket).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        router(fake.clone(), token.clone(), max_concurrent),
        tcp,
        Some(unix),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        client: Client::new(Endpoint::Tcp(addr), token),
        stop: Some(stop),
        task,
        fake,
        socket,
        _dir: dir,
    }
}

impl Server {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn status_of(e: &anyhow::Error) -> (StatusCode, Option<String>) {
    let s = e.downcast_ref::<StatusError>().unwrap();
    (s.status, s.code.clone())
}

#[tokio::test]
async fn routes_and_typed_error_bodies() {
    let s = start(8).await;
    let st: StatusView = s.client.get("/v1/status").await.unwrap();
    assert_eq!(st.node.did_key, s.fake.did);

    let e = s
        .client
        .get::<ContractDetail>("/v1/contracts/not-hex")
        .await
        .unwrap_err();
    assert_eq!(
        status_of(&e),
        (StatusCode::BAD_REQUEST, Some("bad_request".into()))
    );
    let id = "00".repeat(16);
    let e = s
        .client
        .get::<ContractDetail>(&format!("/v1/contracts/{id}"))
        .await
        .unwrap_err();
    assert_eq!(
        status_of(&e),
        (StatusCode::NOT_FOUND, Some("not_found".into()))
    );
    let e = s
        .client
        .post::<_, serde_json::Value>(
            &format!("/v1/contracts/{id}/terminate"),
            &serde_json::json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::CONFLICT);
    // A termination cause that is not one of the signed causes is refused, not defaulted.
    let e = s
        .client
        .post::<_, serde_json::Value>(
            &format!("/v1/contracts/{id}/terminate"),
            &serde_json::json!({"reason": "x", "cause": "bored"}),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let e = s
        .client
        .get::<serde_json::Value>("/v1/nope")
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::NOT_FOUND);

    let e = s
        .client
        .post::<_, serde_json::Value>("/v1/peers", &serde_json::json!({"addr": "not a multiaddr"}))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::BAD_REQUEST);
    let (code, _) = s
        .client
        .raw(Method::POST, "/v1/peers", Some(b"{".to_vec()))
        .await
        .unwrap();
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // An oversized body is refused before any handler sees it.
    let big = serde_json::to_vec(&serde_json::json!({"addr": "x".repeat(100_000)})).unwrap();
    let (code, _) = s
        .client
        .raw(Method::POST, "/v1/peers", Some(big))
        .await
        .unwrap();
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    s.shutdown().await;
}

#[tokio::test]
async fn workload_routes_refuse_bad_input() {
    let s = start(8).await;
    // An empty spec is refused up front, not streamed.
    let empty = serde_json::json!({"spec": "  "});
    let e = s
        .client
        .post_stream("/v1/deploy", &empty, |_| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::BAD_REQUEST);
    // A body that is not a deploy request.
    let (code, _) = s
        .client
        .raw(Method::POST, "/v1/deploy", Some(b"{\"spec\": 7}".to_vec()))
        .await
        .unwrap();
    assert!(code.is_client_error(), "{code}");
    // A node without workload support says so, typed.
    let e = s
        .client
        .get::<serde_json::Value>("/v1/workloads/w-1")
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::NOT_IMPLEMENTED);
    let (code, _) = s
        .client
        .raw(Method::GET, "/v1/workloads/w-1/logs?replica=x", None)
        .await
        .unwrap();
    assert_eq!(code, StatusCode::BAD_REQUEST);
    s.shutdown().await;
}

#[tokio::test]
async fn buy_streams_progress_then_the_result() {
    let s = start(8).await;
    let req = BuyRequest {
        cpu_millis: 1500,
        duration_ms: 60_000,
        ..BuyRequest::default()
    };
    let mut lines = Vec::new();
    s.client
        .post_stream("/v1/buy", &req, |l| {
            lines.push(serde_json::from_slice::<BuyEvent>(l)?);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        matches!(&lines[0], BuyEvent::Progress { phase, detail } if phase == "discover" && detail == "discover 1500")
    );
    assert!(matches!(&lines[2], BuyEvent::Failed { error } if error.code == "buy_failed"));

    // A request for nothing is refused up front, not streamed.
    let empty = BuyRequest {
        duration_ms: 1,
        ..BuyRequest::default()
    };
    let e = s
        .client
        .post_stream("/v1/buy", &empty, |_| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::BAD_REQUEST);

    // So is a wait beyond the daemon's limit.
    let too_long = BuyRequest {
        wait_ms: Some(600_001),
        ..req.clone()
    };
    let e = s
        .client
        .post_stream("/v1/buy", &too_long, |_| Ok(()))
        .await
        .unwrap_err();
    assert_eq!(status_of(&e).0, StatusCode::BAD_REQUEST);
    assert!(e.to_string().contains("wait_ms"), "{e}");
    s.shutdown().await;
}

#[tokio::test]
async fn the_unix_socket_serves_the_same_api_with_the_same_token() {
    let s = start(8).await;
    let token = Token::generate();
    let wrong = Client::new(Endpoint::Unix(s.socket.clone()), token);
    let e = wrong.get::<StatusView>("/v1/status").await.unwrap_err();
    assert_eq!(
        status_of(&e),
        (StatusCode::UNAUTHORIZED, Some("unauthorized".into()))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_the_bound_wait_for_a_slot() {
    let s = start(2).await;
    let mut calls = Vec::new();
    for _ in 0..5 {
        let c = s.client.clone();
        calls.push(tokio::spawn(async move {
            c.get::<Vec<Flavor>>("/v1/flavors").await
        }));
    }
    // Let two requests in, wait until both are inside, then open the gate fully.
    let mut inside = 0;
    for _ in 0..1000 {
        inside = s.fake.inside.load(Ordering::SeqCst);
        if inside == 2 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        inside, 2,
        "after 10 s, {inside} requests inside, not the bound (2)"
    );
    s.fake.gate.add_permits(5);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        s.fake.peak.load(Ordering::SeqCst),
        2,
        "never more than the bound inside"
    );
    s.shutdown().await;
}
