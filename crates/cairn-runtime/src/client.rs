//! A small HTTP client for the admin API (hyper), used by the CLI and by
//! nodes reporting to the coordinator. Over TLS when the cluster has
//! certificates: it presents its certificate (a node's or an operator's)
//! and trusts only node certificates of the cluster's CA; or it sends a
//! bearer token.
//!
//! It speaks HTTP/2 and keeps one connection open to each address, which
//! carries every request to it at once (multiplexed): reports, heartbeats
//! and orders between nodes never wait on a connection set-up, whose lost
//! SYN costs the kernel's one-second retry. Keep-alive pings find a dead
//! connection within seconds; a failed or timed-out request drops it, and
//! the next request dials again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::client::conn::http2;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::tls::{BoxIo, Identity, Security};

/// How long one admin request may take, unless its caller says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = http2::SendRequest<Full<Bytes>>;
type Slot = Arc<tokio::sync::Mutex<Option<Sender>>>;

/// One open connection per address, shared by every clone of a client.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<HashMap<SocketAddr, Slot>>>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |m| m.len());
        write!(f, "Pool({n} addresses)")
    }
}

impl Pool {
    fn slot(&self, addr: SocketAddr) -> Slot {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(addr).or_default().clone()
    }
}

/// How a process calls admin APIs: plain HTTP (an insecure cluster), or
/// HTTPS with its certificate and/or a bearer token.
#[derive(Clone, Debug, Default)]
pub struct AdminClient {
    tls: Option<Arc<Security>>,
    token: Option<String>,
    pool: Pool,
    metrics: Option<Arc<Metrics>>,
}

impl AdminClient {
    /// Plain HTTP, no credentials: for clusters that run `insecure`.
    pub fn insecure() -> Self {
        AdminClient::default()
    }

    /// HTTPS with this process's certificate (if it has one).
    pub fn with_security(security: Arc<Security>) -> Self {
        AdminClient {
            tls: Some(security),
            ..AdminClient::default()
        }
    }

    /// Counts the connections it opens in `metrics`
    /// (`cairn_control_connections_total`).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Also sends `token` as a bearer token.
    #[must_use]
    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// The client an operator's command uses for `config`'s cluster: plain
    /// when the cluster is insecure; otherwise the certificate
    /// `client.<user>` in `certs_dir` (default: the config's), or, when
    /// that certificate is missing and `token_file` is given, the token.
    ///
    /// # Errors
    /// No certificates and not insecure, or a file is unreadable.
    pub fn for_operator(
        config: &ClusterConfig,
        certs_dir: Option<&Path>,
        user: &str,
        token_file: Option<&Path>,
    ) -> Result<Self> {
        let dir = match certs_dir {
            Some(d) => d,
            None => match config.certs_dir()? {
                Some(d) => d,
                None => return Ok(AdminClient::insecure()),
            },
        };
        let token = match token_file {
            Some(f) => Some(read_token(f)?),
            None => None,
        };
        let who = Identity::client(user);
        let (crt, _) = crate::tls::certs::paths(dir, &crate::tls::certs::stem(&who));
        let me = (token.is_none() || crt.exists()).then_some(&who);
        let sec = Arc::new(Security::load(dir, me)?);
        let mut client = AdminClient::with_security(sec);
        client.token = token;
        Ok(client)
    }

    /// The URL of `path` at `addr`: https when this client speaks TLS.
    pub fn url(&self, addr: SocketAddr, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// Sends one request to `addr` and returns the status and body, within
    /// [`REQUEST_TIMEOUT`].
    ///
    /// # Errors
    /// [`Error::Admin`] naming the URL and what failed.
    pub async fn request(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        self.request_within(REQUEST_TIMEOUT, addr, method, path, body)
            .await
    }

    /// Sends one request to `addr` and returns the status and body, giving
    /// up after `limit` (connecting included).
    ///
    /// # Errors
    /// [`Error::Admin`] naming the URL and what failed.
    pub async fn request_within(
        &self,
        limit: Duration,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        let url = self.url(addr, path);
        let fail = |problem: String| Error::Admin {
            url: url.clone(),
            problem,
        };
        let slot = self.pool.slot(addr);
        let body = Bytes::from(body.unwrap_or_default());
        // A GET may be sent again; anything else only if it never left.
        let idempotent = method == Method::GET;
        let work = async {
            let mut reuse = true;
            let resp = loop {
                let (mut sender, reused) = {
                    let mut open = slot.lock().await;
                    match open.as_ref().filter(|s| reuse && !s.is_closed()) {
                        Some(s) => (s.clone(), true),
                        None => {
                            let s = self.connect(addr).await.map_err(&fail)?;
                            *open = Some(s.clone());
                            (s, false)
                        }
                    }
                };
                let mut req = Request::builder()
                    .method(method.clone())
                    .uri(&url)
                    .header(header::CONTENT_TYPE, "application/json");
                if let Some(t) = &self.token {
                    req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let req = req
                    .body(Full::new(body.clone()))
                    .map_err(|e| fail(e.to_string()))?;
                match sender.send_request(req).await {
                    Ok(resp) => break resp,
                    // A kept connection that died since its last use (a
                    // partition healed, the peer restarted): once more on a
                    // fresh one.
                    Err(e) if reused && (idempotent || e.is_canceled()) => reuse = false,
                    Err(e) => return Err(fail(e.to_string())),
                }
            };
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        let result = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(fail(format!("no answer within {limit:?}"))),
        };
        if result.is_err() {
            // The connection may be dead (a partition, a restarted peer):
            // the next request dials afresh.
            if let Ok(mut open) = slot.try_lock() {
                *open = None;
            }
        }
        result
    }

    /// Dials `addr` and opens an HTTP/2 connection, over TLS when this
    /// client speaks it.
    async fn connect(&self, addr: SocketAddr) -> std::result::Result<Sender, String> {
        let tcp = crate::net::connect(&addr.to_string())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        tcp.set_nodelay();
        let stream: BoxIo = match &self.tls {
            Some(sec) => Box::new(sec.connect(tcp, None).await.map_err(|e| e.to_string())?),
            None => Box::new(tcp),
        };
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            // Ends when the connection closes or every sender is dropped.
            let _ = conn.await;
        });
        if let Some(m) = &self.metrics {
            Metrics::inc(&m.control_connections, 1);
        }
        Ok(sender)
    }

    /// GETs `path` and decodes the JSON answer, whatever the status.
    ///
    /// # Errors
    /// The request failed or the answer is not the expected JSON.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(StatusCode, T)> {
        self.get_json_within(REQUEST_TIMEOUT, addr, path).await
    }

    /// As [`get_json`](Self::get_json), giving up after `limit`.
    ///
    /// # Errors
    /// The request failed or timed out, or the answer is not the expected JSON.
    pub async fn get_json_within<T: DeserializeOwned>(
        &self,
        limit: Duration,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(StatusCode, T)> {
        let (status, body) = self
            .request_within(limit, addr, Method::GET, path, None)
            .await?;
        self.decode(addr, path, status, &body)
    }

    /// POSTs `body` as JSON to `path` and decodes the JSON answer.
    ///
    /// # Errors
    /// The request failed or the answer is not the expected JSON.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &B,
    ) -> Result<(StatusCode, T)> {
        let bytes = serde_json::to_vec(body).map_err(|e| Error::Admin {
            url: self.url(addr, path),
            problem: e.to_string(),
        })?;
        let (status, body) = self.request(addr, Method::POST, path, Some(bytes)).await?;
        self.decode(addr, path, status, &body)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Result<(StatusCode, T)> {
        serde_json::from_slice(body)
            .map(|t| (status, t))
            .map_err(|e| Error::Admin {
                url: self.url(addr, path),
                problem: format!(
                    "{status}: unexpected answer ({e}): {}",
                    String::from_utf8_lossy(body)
                ),
            })
    }

    /// GETs `path` and returns the status and the body as text.
    ///
    /// # Errors
    /// The request failed.
    pub async fn get_text(&self, addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
        let (status, body) = self.request(addr, Method::GET, path, None).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Reads a bearer token from a file: its first line, trimmed.
///
/// # Errors
/// The file is unreadable or holds no token.
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(Error::Tls(format!("{}: holds no token", path.display())));
    }
    Ok(token)
}

/// Why a failed snapshot failed, from its summary as `GET /snapshots/{id}`
/// answers it: the coordinator's reason, or else what it never got.
pub fn failure_reason(summary: &serde_json::Value) -> String {
    summary["reason"].as_str().map_or_else(
        || {
            format!(
                "it never got processes {} and channels {}",
                summary["missing_processes"], summary["missing_channels"]
            )
        },
        str::to_string,
    )
}
