//! Errors of the core. None of them wraps an I/O error: the core does no I/O.

use crate::ids::SnapshotId;

/// A `Result` whose error is the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the core. Every variant names the thing that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The topology has no processes.
    #[error("the topology has no processes")]
    EmptyTopology,
    /// Two processes have the same name.
    #[error("process {0:?} is declared twice")]
    DuplicateProcess(String),
    /// A process name is empty or contains characters that would make traces ambiguous.
    #[error("process name {0:?} is not allowed: use letters, digits, '_', '-' or '.'")]
    BadProcessName(String),
    /// A channel names a process that does not exist.
    #[error("channel {from}->{to} names unknown process {unknown:?}")]
    UnknownProcess {
        /// The channel's source as written.
        from: String,
        /// The channel's destination as written.
        to: String,
        /// The name that matched no process.
        unknown: String,
    },
    /// A channel from a process to itself.
    #[error("channel {0}->{0} goes from a process to itself, which the model does not allow")]
    SelfChannel(String),
    /// Some processes can never be reached by a marker from the initiators.
    #[error(
        "processes {processes:?} cannot be reached from initiators {initiators:?}, so a snapshot started there can never finish"
    )]
    Unreachable {
        /// The processes no marker can reach.
        processes: Vec<String>,
        /// The initiators that were considered.
        initiators: Vec<String>,
    },
    /// An id that is not part of the topology.
    #[error("{0} is not part of the topology")]
    NotInTopology(String),
    /// A channel used in a direction it does not have at this process.
    #[error("channel {channel} is not an {direction} channel of process {process}")]
    WrongChannel {
        /// The channel's name.
        channel: String,
        /// The process that used it.
        process: String,
        /// "incoming" or "outgoing".
        direction: &'static str,
    },
    /// A second marker of one snapshot on one channel.
    #[error("snapshot {snapshot}: a second marker arrived on channel {channel}")]
    DuplicateMarker {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The channel's name.
        channel: String,
    },
    /// A marker of a snapshot this process already finished or gave up (a
    /// marker that was held up, by a partition say, past the snapshot's end).
    #[error(
        "snapshot {snapshot} is already finished or given up here: a late marker on {channel} is ignored"
    )]
    LateMarker {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The channel's name.
        channel: String,
    },
    /// The engine asked for the local state and the caller did not give it yet.
    #[error(
        "snapshot {0}: the local state must be recorded (Engine::record_state) before anything else happens"
    )]
    StatePending(SnapshotId),
    /// A marker was placed or taken ahead of application messages in a way
    /// the engine's [`Overtaking`](crate::Overtaking) option does not allow,
    /// or for a snapshot or channel that is not waiting for it.
    #[error("snapshot {snapshot}: {problem}")]
    Overtaking {
        /// The snapshot.
        snapshot: SnapshotId,
        /// What was wrong.
        problem: String,
    },
    /// `record_state` was called when no state was asked for.
    #[error("snapshot {0}: no local state was asked for")]
    StateNotRequested(SnapshotId),
    /// A local snapshot that does not belong in this global snapshot.
    #[error("snapshot {snapshot}: bad report from process {process}: {problem}")]
    BadReport {
        /// The snapshot being assembled.
        snapshot: SnapshotId,
        /// The reporting process.
        process: String,
        /// What was wrong.
        problem: String,
    },
    /// The global snapshot is not complete yet.
    #[error(
        "snapshot {snapshot} is incomplete: missing processes {processes:?} and channels {channels:?}"
    )]
    Incomplete {
        /// The snapshot.
        snapshot: SnapshotId,
        /// Processes that have not reported.
        processes: Vec<String>,
        /// Channels whose state has not been recorded.
        channels: Vec<String>,
    },
    /// A document in the shared snapshot JSON shape does not fit the topology.
    #[error("snapshot document does not fit the topology: {0}")]
    BadDocument(String),
}
