//! A small HTTP client for the admin API (hyper), used by the CLI and by
//! nodes reporting to the coordinator. Over TLS when the cluster has
//! certificates: it presents its certificate (a node's or an operator's)
//! and trusts only node certificates of the cluster's CA; or it sends a
//! bearer token.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::config::ClusterConfig;
use crate::error::{Error, Result};
use crate::tls::{BoxIo, Identity, Security};

/// How long one admin request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How a process calls admin APIs: plain HTTP (an insecure cluster), or
/// HTTPS with its certificate and/or a bearer token.
#[derive(Clone, Debug, Default)]
pub struct AdminClient {
    tls: Option<Arc<Security>>,
    token: Option<String>,
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
            token: None,
        }
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

    /// Sends one request to `addr` and returns the status and body.
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
        let url = self.url(addr, path);
        let fail = |problem: String| Error::Admin {
            url: url.clone(),
            problem,
        };
        let work = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| fail(format!("cannot connect: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let stream: BoxIo = match &self.tls {
                Some(sec) => Box::new(
                    sec.connect(tcp, None)
                        .await
                        .map_err(|e| fail(e.to_string()))?,
                ),
                None => Box::new(tcp),
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| fail(e.to_string()))?;
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, addr.to_string())
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(t) = &self.token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| fail(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| fail(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| fail("no answer within 5 s".into()))?
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
        let (status, body) = self.request(addr, Method::GET, path, None).await?;
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
