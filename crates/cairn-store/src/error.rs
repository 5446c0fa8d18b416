//! Errors of the store. Backend errors stay private: callers see what
//! happened (not found, already there, corrupt), not which library said so.

/// A `Result` whose error is the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store. Every variant names the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object under this key.
    #[error("{key}: not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// No committed snapshot with this id: never committed, or retention
    /// (or an operator) removed it.
    #[error("snapshot {id} is not in the store (never committed, or retention removed it); {}", holds_text(.holds))]
    NoSnapshot {
        /// The snapshot asked for.
        id: u64,
        /// The committed snapshots the store holds, oldest first.
        holds: Vec<u64>,
    },
    /// A create-if-absent write found the object already there.
    #[error("{key}: already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// A create-if-absent write found other bytes under the key. Objects a
    /// manifest may name are never replaced, so the write fails instead.
    #[error("{key}: conflict: {problem}")]
    Conflict {
        /// The key.
        key: String,
        /// What is there, and why it was not replaced.
        problem: String,
    },
    /// The object is there but unreadable: a bad checksum, a truncated or
    /// foreign file, or a snapshot that does not add up.
    #[error("{key}: corrupt: {problem}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The store URL cannot be used.
    #[error("store URL {url:?}: {problem}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why not.
        problem: String,
    },
    /// The backend failed (I/O, network, permissions).
    #[error("{key}: {problem}")]
    Backend {
        /// The key, or what was being done.
        key: String,
        /// The backend's message.
        problem: String,
    },
    /// A deletion the store refuses, such as the newest complete snapshot.
    #[error("{0}")]
    Refused(String),
}

fn holds_text(holds: &[u64]) -> String {
    match holds {
        [] => "it holds no committed snapshot".into(),
        [one] => format!("it holds snapshot {one} only"),
        [first, .., last] if holds.len() > 8 => {
            format!("it holds {} snapshots, {first} to {last}", holds.len())
        }
        _ => format!(
            "it holds {}",
            holds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
