//! Where a node's sockets come from: the operating system's (tokio), or,
//! with the `turmoil` feature and inside a turmoil simulation, turmoil's
//! simulated network, so the real driver, links and admin API run under a
//! deterministic network with delays, partitions and crashes. The choice is
//! made per call: a build with the feature still uses real sockets outside
//! a simulation.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tls::{BoxRead, BoxWrite};

/// Whether this task runs inside a turmoil simulation.
#[cfg(feature = "turmoil")]
fn simulated() -> bool {
    turmoil::in_simulation()
}

/// A TCP connection, real or simulated.
#[derive(Debug)]
pub(crate) enum Stream {
    Real(tokio::net::TcpStream),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::TcpStream),
}

/// Dials `addr` (`host:port`).
pub(crate) async fn connect(addr: &str) -> io::Result<Stream> {
    #[cfg(feature = "turmoil")]
    if simulated() {
        return turmoil::net::TcpStream::connect(addr)
            .await
            .map(Stream::Sim);
    }
    tokio::net::TcpStream::connect(addr).await.map(Stream::Real)
}

impl Stream {
    /// Sends small writes at once (a no-op in a simulation).
    pub fn set_nodelay(&self) {
        match self {
            Stream::Real(s) => {
                let _ = s.set_nodelay(true);
            }
            #[cfg(feature = "turmoil")]
            Stream::Sim(_) => {}
        }
    }

    /// Splits the connection into halves that need no lock between them.
    pub fn into_split(self) -> (BoxRead, BoxWrite) {
        match self {
            Stream::Real(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            #[cfg(feature = "turmoil")]
            Stream::Sim(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Real(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "turmoil")]
            Stream::Sim(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Real(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "turmoil")]
            Stream::Sim(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Real(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "turmoil")]
            Stream::Sim(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Real(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "turmoil")]
            Stream::Sim(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A listening socket, real or simulated.
pub(crate) enum Listener {
    Real(tokio::net::TcpListener),
    #[cfg(feature = "turmoil")]
    Sim(turmoil::net::TcpListener),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.local_addr() {
            Ok(a) => write!(f, "Listener({a})"),
            Err(_) => write!(f, "Listener"),
        }
    }
}

impl Listener {
    /// Listens on `addr` (`host:port`).
    pub async fn bind(addr: &str) -> io::Result<Self> {
        #[cfg(feature = "turmoil")]
        if simulated() {
            // A simulated host has one address, and turmoil binds only the
            // unspecified one: the same thing there.
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, addr.to_string()))?;
            return turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
                .await
                .map(Listener::Sim);
        }
        tokio::net::TcpListener::bind(addr)
            .await
            .map(Listener::Real)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Real(l) => l.local_addr(),
            #[cfg(feature = "turmoil")]
            Listener::Sim(l) => l.local_addr(),
        }
    }

    /// The next connection, and who made it.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Real(l) => l.accept().await.map(|(s, a)| (Stream::Real(s), a)),
            #[cfg(feature = "turmoil")]
            Listener::Sim(l) => l.accept().await.map(|(s, a)| (Stream::Sim(s), a)),
        }
    }
}
