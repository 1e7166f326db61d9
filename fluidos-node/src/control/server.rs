//! The control API server: an axum router over any [`NodeApi`].
//!
//! Every request passes two layers before its handler: the token check (401
//! with a JSON error when the bearer token is missing or wrong) and a semaphore
//! that bounds how many requests run at once (the others wait their turn, as
//! mini-redis bounds its connections). Bodies are capped at 64 KiB.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fluidos_contracts::ContractId;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};

use super::token::Token;
use super::types::{
    AddPeerRequest, BuyEvent, BuyRequest, ErrorBody, ErrorResponse, TerminateRequest,
};
use super::{ApiError, NodeApi, types};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// Progress events buffered per purchase before the engine waits for the client.
const BUY_EVENTS: usize = 32;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

#[derive(Clone)]
struct Auth {
    token: Token,
    limit: Arc<Semaphore>,
}

/// Builds the router: `/v1/…` routes over `node`, guarded by `token`, running at
/// most `max_concurrent` requests at once.
pub fn router<N: NodeApi>(node: N, token: Token, max_concurrent: usize) -> Router {
    let auth = Auth {
        token,
        limit: Arc::new(Semaphore::new(max_concurrent.max(1))),
    };
    Router::new()
        .route("/v1/status", get(status::<N>))
        .route("/v1/flavors", get(flavors::<N>))
        .route("/v1/peers", get(peers::<N>).post(add_peer::<N>))
        .route("/v1/contracts", get(contracts::<N>))
        .route("/v1/contracts/{id}", get(contract::<N>))
        .route("/v1/contracts/{id}/terminate", post(terminate::<N>))
        .route("/v1/contracts/{id}/export", get(export::<N>))
        .route("/v1/buy", post(buy::<N>))
        .route("/v1/nodes", get(nodes::<N>))
        .route("/v1/workloads", get(workloads::<N>))
        .route("/v1/workloads/{id}", get(workload::<N>))
        .route("/v1/workloads/{id}/logs", get(logs::<N>))
        .route("/v1/workloads/{id}/undeploy", post(undeploy::<N>))
        .route("/v1/deploy", post(deploy::<N>))
        .route("/v1/view/export", get(view_export::<N>))
        .route("/v1/fabric", get(fabric::<N>))
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/CONTROL-API.md") })
        .with_state(node)
        .layer(middleware::from_fn_with_state(auth, guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Checks the bearer token, then waits for a request slot.
async fn guard(State(auth): State<Auth>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if auth.token.matches(t) => {}
        Some(_) => {
            tracing::debug!(path = %req.uri().path(), "control request with a wrong token");
            return unauthorized("wrong bearer token");
        }
        None => return unauthorized("missing `Authorization: Bearer <token>` header"),
    }
    // The semaphore is never closed, so acquiring only fails if it were.
    let Ok(_permit) = auth.limit.acquire().await else {
        return ApiError::internal("request limiter closed").into_response();
    };
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError {
        status: 401,
        code: "unauthorized",
        message: format!("{message}; the token is in DATA_DIR/control.token"),
    }
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

fn contract_id(s: &str) -> Result<ContractId, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!("`{s}` is not a contract id (32 hex characters)"))
    })
}

fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        let status = e.status();
        ApiError {
            status: status.as_u16(),
            code: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "bad_request"
            },
            message: e.body_text(),
        }
    })
}

async fn status<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.status().await?))
}

async fn fabric<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.fabric().await?))
}

async fn flavors<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.flavors().await?))
}

async fn peers<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.peers().await?))
}

async fn add_peer<N: NodeApi>(
    State(n): State<N>,
    body: Result<Json<AddPeerRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let req = json_body(body)?;
    let addr = req
        .addr
        .parse()
        .map_err(|e| ApiError::bad_request(format!("`{}` is not a multiaddr: {e}", req.addr)))?;
    n.add_peer(addr).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"added": req.addr})),
    ))
}

async fn contracts<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.contracts().await?))
}

async fn contract<N: NodeApi>(
    State(n): State<N>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = contract_id(&id)?;
    n.contract(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no contract {id}")))
}

async fn terminate<N: NodeApi>(
    State(n): State<N>,
    Path(id): Path<String>,
    body: Result<Json<TerminateRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = contract_id(&id)?;
    let req = json_body(body)?;
    n.terminate(id, req.reason, req.cause).await?;
    Ok(Json(serde_json::json!({"terminated": id.to_string()})))
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(default)]
    vc: bool,
}

async fn export<N: NodeApi>(
    State(n): State<N>,
    Path(id): Path<String>,
    Query(q): Query<ExportQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let id = contract_id(&id)?;
    Ok(Json(n.export(id, q.vc).await?))
}

/// Streams the purchase as NDJSON: `progress` lines, then one `done` or `failed`.
/// The status is 200 once the stream starts; clients read the last line.
async fn buy<N: NodeApi>(
    State(n): State<N>,
    body: Result<Json<BuyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    if req.cpu_millis == 0 && req.memory_bytes == 0 && req.gpus == 0 && req.storage_bytes == 0 {
        return Err(ApiError::bad_request(
            "ask for some cpu, memory, storage or gpus",
        ));
    }
    if req.duration_ms == 0 {
        return Err(ApiError::bad_request("duration_ms must be positive"));
    }
    if req
        .wait_ms
        .is_some_and(|w| u128::from(w) > super::MAX_BUY_WAIT.as_millis())
    {
        return Err(ApiError::bad_request(format!(
            "wait_ms must be at most {}",
            super::MAX_BUY_WAIT.as_millis()
        )));
    }
    let (tx, rx) = mpsc::channel::<BuyEvent>(BUY_EVENTS);
    let done_tx = tx.clone();
    // The purchase runs in its own task so that a client that disconnects
    // does not abort a negotiation half-way (the engine finishes or times out).
    tokio::spawn(async move {
        let last = match n.buy(req, tx).await {
            Ok(contract) => BuyEvent::Done { contract },
            Err(e) => BuyEvent::Failed {
                error: ErrorBody {
                    code: e.code.to_string(),
                    message: e.message,
                },
            },
        };
        let _ = done_tx.send(last).await;
    });
    Ok(ndjson(rx))
}

/// A response streaming each event of `rx` as one line of JSON, until it closes.
fn ndjson<E: serde::Serialize + Send + 'static>(rx: mpsc::Receiver<E>) -> Response {
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| ApiError::internal("response").into_response())
}

async fn nodes<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.nodes().await?))
}

async fn workloads<N: NodeApi>(State(n): State<N>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.workloads().await?))
}

async fn workload<N: NodeApi>(
    State(n): State<N>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    match n.workload(id.clone()).await? {
        Some(w) => Ok(Json(w)),
        None => Err(ApiError::not_found(format!("no workload {id}"))),
    }
}

async fn undeploy<N: NodeApi>(
    State(n): State<N>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    n.undeploy(id).await?;
    Ok(Json(serde_json::json!({})))
}

/// `?replica=0&tail=65536`.
#[derive(serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    replica: u32,
    #[serde(default = "default_tail")]
    tail: u32,
}

fn default_tail() -> u32 {
    64 * 1024
}

async fn logs<N: NodeApi>(
    State(n): State<N>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(n.logs(id, q.replica, q.tail).await?))
}

async fn view_export<N: NodeApi>(State(n): State<N>) -> Result<Response, ApiError> {
    let bytes = n.view_export().await?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap_or_else(|_| ApiError::internal("response").into_response()))
}

/// Streams a deploy as NDJSON, like a purchase: `progress` lines, then one
/// `dry_run`, `done` or `failed`.
async fn deploy<N: NodeApi>(
    State(n): State<N>,
    body: Result<Json<types::DeployRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    if req.spec.trim().is_empty() {
        return Err(ApiError::bad_request("the spec is empty"));
    }
    let (tx, rx) = mpsc::channel::<types::DeployEvent>(BUY_EVENTS);
    let done_tx = tx.clone();
    tokio::spawn(async move {
        let last = match n.deploy(req, tx).await {
            Ok(ev) => ev,
            Err(e) => types::DeployEvent::Failed {
                error: ErrorBody {
                    code: e.code.to_string(),
                    message: e.message,
                },
            },
        };
        let _ = done_tx.send(last).await;
    });
    Ok(ndjson(rx))
}

/// Serves `router` on `tcp` and, if given, `unix`, until `shutdown` resolves;
/// then stops accepting and waits for the requests in flight to finish.
pub async fn serve(
    router: Router,
    tcp: tokio::net::TcpListener,
    unix: Option<tokio::net::UnixListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // Err means the sender is gone, which also means stop.
        let _ = rx.wait_for(|s| *s).await;
    };
    let tcp_task = axum::serve(tcp, router.clone())
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future();
    let unix_rx = stop_rx.clone();
    let unix_task = async move {
        match unix {
            Some(l) => {
                axum::serve(l, router)
                    .with_graceful_shutdown(stopped(unix_rx))
                    .await
            }
            None => Ok(()),
        }
    };
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let (a, b, ()) = tokio::join!(tcp_task, unix_task, signal);
    a.and(b)
}
