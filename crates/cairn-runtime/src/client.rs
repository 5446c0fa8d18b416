//! A small HTTP client for the admin API (hyper), used by the CLI and by
//! nodes reporting to the coordinator.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// How long one admin request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request to `addr` and returns the status and body.
///
/// # Errors
/// [`Error::Admin`] naming the URL and what failed.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes)> {
    let url = format!("http://{addr}{path}");
    let fail = |problem: String| Error::Admin {
        url: url.clone(),
        problem,
    };
    let work = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
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
    addr: SocketAddr,
    path: &str,
) -> Result<(StatusCode, T)> {
    let (status, body) = request(addr, Method::GET, path, None).await?;
    decode(addr, path, status, &body)
}

/// POSTs `body` as JSON to `path` and decodes the JSON answer.
///
/// # Errors
/// The request failed or the answer is not the expected JSON.
pub async fn post_json<B: Serialize, T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    body: &B,
) -> Result<(StatusCode, T)> {
    let bytes = serde_json::to_vec(body).map_err(|e| Error::Admin {
        url: format!("http://{addr}{path}"),
        problem: e.to_string(),
    })?;
    let (status, body) = request(addr, Method::POST, path, Some(bytes)).await?;
    decode(addr, path, status, &body)
}

fn decode<T: DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<(StatusCode, T)> {
    serde_json::from_slice(body)
        .map(|t| (status, t))
        .map_err(|e| Error::Admin {
            url: format!("http://{addr}{path}"),
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
pub async fn get_text(addr: SocketAddr, path: &str) -> Result<(StatusCode, String)> {
    let (status, body) = request(addr, Method::GET, path, None).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
