//! Errors of the runtime.

/// A `Result` whose error is the runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cluster configuration is unusable.
    #[error("{file}: {}{problem}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
    Config {
        /// The file.
        file: String,
        /// The key, e.g. `nodes[1].address` (empty for the whole file).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The core refused an input.
    #[error(transparent)]
    Core(#[from] cairn_core::Error),
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A peer is in another epoch (a rollback is under way): refused for now.
    #[error("epoch mismatch: {0}")]
    Epoch(String),
    /// A peer or this node restarted and lost its state: no messages are
    /// exchanged until a restore.
    #[error("restarted: {0}")]
    Restarted(String),
    /// A certificate, a key or a TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A snapshot could not be started, did not commit, or cannot be read.
    #[error("snapshot {id}: {problem}")]
    Snapshot {
        /// The snapshot.
        id: u64,
        /// What went wrong.
        problem: String,
    },
    /// The node refused an order (a snapshot while a rollback runs, say).
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The process refused outside input, or the node has stopped.
    #[error("input refused: {0}")]
    Input(String),
    /// An admin API request failed.
    #[error("admin API {url}: {problem}")]
    Admin {
        /// The request.
        url: String,
        /// What went wrong.
        problem: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
