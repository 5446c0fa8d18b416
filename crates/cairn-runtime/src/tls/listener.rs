//! The admin API's listener: TCP accepted here, TLS handshakes done in
//! their own tasks (a slow or silent client holds up nobody), and each
//! connection handed to axum with who is calling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{BoxIo, Identity, Security};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Who is on the other end of an admin connection.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// Its address.
    pub addr: SocketAddr,
    /// The identity in its client certificate, if it presented one.
    pub identity: Option<Identity>,
}

impl Connected<IncomingStream<'_, AdminListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, AdminListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Connections ready for HTTP, TLS done (or plain, when insecure).
pub(crate) struct AdminListener {
    ready: mpsc::Receiver<(BoxIo, Caller)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AdminListener {
    /// Starts accepting on `tcp`; with `security`, every connection is TLS.
    pub fn new(
        tcp: crate::net::Listener,
        security: Option<Arc<Security>>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel::<(BoxIo, Caller)>(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("admin accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                stream.set_nodelay();
                let Some(sec) = security.clone() else {
                    let caller = Caller {
                        addr,
                        identity: None,
                    };
                    if tx.send((Box::new(stream), caller)).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, sec.accept(stream)).await {
                        Ok(Ok((tls, identity))) => {
                            let _ = tx.send((Box::new(tls), Caller { addr, identity })).await;
                        }
                        Ok(Err(e)) => debug!(%addr, "admin connection refused: {e}"),
                        Err(_) => {
                            debug!(%addr, "admin connection refused: no TLS handshake within 10 s")
                        }
                    }
                });
            }
        });
        Ok(AdminListener { ready, local, task })
    }
}

impl Listener for AdminListener {
    type Io = BoxIo;
    type Addr = Caller;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Caller {
            addr: self.local,
            identity: None,
        })
    }
}
