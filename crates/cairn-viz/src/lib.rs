//! Pictures of Cairn runs. [`svg()`] draws a trace (from the simulator or a
//! cluster's nodes) as a space-time diagram: one line per process, time to
//! the right, an arrow per message and marker, each process's record point,
//! the snapshot's cut through them, and the messages the snapshot recorded
//! as channel state. It stays readable from 2 to 50 processes, and a long run
//! is drawn through a window of its events.

mod draw;
pub mod layout;

use cairn_core::Topology;
use cairn_core::trace::TraceEvent;
use serde::Serialize;

pub use layout::{Layout, Options};

/// Why a diagram could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// The window or snapshot asked for is not in the trace.
    #[error("{0}")]
    Window(String),
    /// The trace contradicts itself (the same message sent twice).
    #[error("the trace is inconsistent: {0}")]
    Trace(String),
}

/// The space-time diagram of `trace` as SVG text.
///
/// # Errors
/// [`VizError`] naming what does not fit: a window outside the trace, a
/// snapshot never recorded, or a trace that sends one message twice.
pub fn svg<M: Serialize>(
    topology: &Topology,
    trace: &[TraceEvent<M>],
    options: &Options,
) -> Result<String, VizError> {
    let layout = Layout::new(topology, trace, options)?;
    Ok(draw::draw(topology, &layout))
}
