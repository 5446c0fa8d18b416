//! The control plane: what a coordinator and its nodes do besides moving
//! messages. Each concern has a module of its own, and every one of them
//! returns the typed [`ControlError`]; the admin API turns it into an HTTP
//! status at the edge.
//!
//! | module | what |
//! |---|---|
//! | `initiation` | snapshot ids (leased from the store) and starting a snapshot at a node |
//! | `commit` | committing manifests, fenced by epoch, then retention |
//! | `recovery` | rollbacks: a new epoch recorded in the store, every node restoring its part |
//! | `failure` | the coordinator's timers: heartbeats, failure detection, scheduled snapshots, aborts |
//! | `role` | who coordinates: terms claimed in the store, the watch on the coordinator, failover |

pub(crate) mod commit;
pub(crate) mod failure;
pub(crate) mod health;
pub(crate) mod initiation;
pub(crate) mod recovery;
pub(crate) mod role;

/// Why a control operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Only the coordinator does this.
    #[error("this node is not the coordinator; {0} is")]
    NotCoordinator(String),
    /// The coordinator has not established its epoch yet.
    #[error("the coordinator is still establishing its epoch from the store; try again shortly")]
    NotReady,
    /// No snapshot starts while a rollback is under way.
    #[error("a rollback is under way; no snapshot starts until it is done")]
    RollbackUnderway,
    /// Too much is in progress to start more.
    #[error("{0}")]
    Busy(String),
    /// The order is stale or was never issued (an epoch that is not the
    /// coordinator's, say).
    #[error("refused: {0}")]
    Stale(String),
    /// The driver or engine refused the request.
    #[error("{0}")]
    Refused(String),
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed or holds something unusable.
    #[error(transparent)]
    Store(#[from] cairn_store::Error),
    /// A node's part (or a chunk of it) of this snapshot is corrupt or
    /// missing: the snapshot cannot be restored.
    #[error("snapshot {snapshot} cannot be restored: {problem}")]
    Unusable {
        /// The snapshot.
        snapshot: u64,
        /// What the node found.
        problem: String,
    },
    /// Another node failed or refused.
    #[error("node {node}: {problem}")]
    Peer {
        /// The node.
        node: String,
        /// What happened.
        problem: String,
    },
}
