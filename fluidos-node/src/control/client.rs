//! The CLI's side of the control API: one HTTP/1.1 request per connection over
//! TCP (loopback) or a unix socket, with the bearer token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::token::Token;
use super::types::ErrorResponse;

/// Largest response body read (the stream of `buy` is read line by line).
const MAX_RESPONSE: usize = 16 << 20;
/// Connecting and each ordinary request give up after this long.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the daemon listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// Loopback TCP.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

/// A control API client.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    token: Token,
}

/// The daemon answered with an error status.
#[derive(Debug, thiserror::Error)]
#[error("the daemon answered {status}: {message}")]
pub struct StatusError {
    /// HTTP status.
    pub status: StatusCode,
    /// The error code from the body, if any.
    pub code: Option<String>,
    /// The message from the body (or the raw body).
    pub message: String,
}

impl Client {
    /// A client for `endpoint` using `token`.
    pub fn new(endpoint: Endpoint, token: Token) -> Self {
        Self { endpoint, token }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Response<Incoming>> {
        let has_body = body.is_some();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.as_str()),
            );
        if has_body {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let connect = async {
            match &self.endpoint {
                Endpoint::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr)
                        .await
                        .with_context(|| format!("cannot reach the daemon's control API at {addr}; is `fluidos-node run` running?"))?;
                    request_on(s, req).await
                }
                Endpoint::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path).await.with_context(|| {
                        format!("cannot reach the daemon's control socket {}; is `fluidos-node run` running?", path.display())
                    })?;
                    request_on(s, req).await
                }
            }
        };
        tokio::time::timeout(TIMEOUT, connect)
            .await
            .map_err(|_| anyhow!("the daemon did not answer within {}s", TIMEOUT.as_secs()))?
    }

    /// Sends a request and returns the status and body, whatever the status.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the daemon's answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// `GET path`, decoding a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (status, body) = self.raw(Method::GET, path, None).await?;
        decode(status, &body)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let (status, resp) = self
            .raw(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await?;
        decode(status, &resp)
    }

    /// `POST path`, then calls `on_line` with each NDJSON line of the answer as
    /// it arrives (used by `buy`). No overall timeout: a purchase takes as long
    /// as the engine's own per-peer timeouts allow.
    pub async fn post_stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut on_line: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let resp = self
            .send(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = http_body_util::Limited::new(body, MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| anyhow!("reading the daemon's answer: {e}"))?
                .to_bytes();
            return decode::<serde_json::Value>(status, &bytes).map(|_| ());
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading the daemon's progress stream")?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                on_line(&line[..line.len() - 1])?;
            }
            if pending.len() > MAX_RESPONSE {
                bail!("the daemon sent an over-long progress line");
            }
        }
        if !pending.is_empty() {
            on_line(&pending)?;
        }
        Ok(())
    }
}

async fn request_on<S>(stream: S, req: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the daemon")?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "control connection closed");
        }
    });
    sender
        .send_request(req)
        .await
        .context("sending the request to the daemon")
}

/// Decodes a JSON body, turning error statuses into [`StatusError`].
pub fn decode<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> anyhow::Result<T> {
    if !status.is_success() {
        let (code, message) = match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(e) => (Some(e.error.code), e.error.message),
            Err(_) => (None, String::from_utf8_lossy(body).into_owned()),
        };
        return Err(StatusError {
            status,
            code,
            message,
        }
        .into());
    }
    serde_json::from_slice(body).context("the daemon's answer is not the expected JSON")
}
