//! Errors of the simulator.

/// A `Result` whose error is [`SimError`].
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// What went wrong in a simulation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The core refused an input.
    #[error(transparent)]
    Core(#[from] cairn_core::Error),
    /// The setup is inconsistent.
    #[error("bad simulation setup: {0}")]
    Setup(String),
    /// The script asks for a step the application cannot take.
    #[error("process {process}: {detail}")]
    NotEnabled {
        /// The process.
        process: String,
        /// What it could not do.
        detail: String,
    },
    /// Some snapshots never completed.
    #[error("the run stopped with snapshots incomplete: {0}")]
    Stalled(String),
    /// A COS418 input file could not be read.
    #[error("{file}:{line}: {problem}")]
    Parse {
        /// The file, as given.
        file: String,
        /// The 1-based line number (0 for the whole file).
        line: usize,
        /// What is wrong there.
        problem: String,
    },
}
