//! Writers for runs: the JSON Lines trace, the ShiViz log and the snapshot
//! array in Cairn's shared JSON shape.

use std::io::{self, Write};

use cairn_core::trace::{Event, TraceEvent};
use cairn_core::{GlobalSnapshot, Topology};
use serde::Serialize;

/// The header ShiViz needs: how to split each event into host, clock and text.
pub const SHIVIZ_REGEX: &str = r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)";

/// Writes `trace` as JSON Lines, one event per line in execution order.
///
/// # Errors
/// An I/O error from `w`.
pub fn write_trace<M: Serialize>(
    w: &mut impl Write,
    topology: &Topology,
    trace: &[TraceEvent<M>],
) -> io::Result<()> {
    for ev in trace {
        serde_json::to_writer(&mut *w, &ev.to_record(topology))?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes `trace` as a ShiViz log: the regex header, an empty line (one
/// execution), then for each event its host and vector clock on one line and
/// what happened on the next.
///
/// # Errors
/// An I/O error from `w`.
pub fn write_shiviz<M: Serialize>(
    w: &mut impl Write,
    topology: &Topology,
    trace: &[TraceEvent<M>],
) -> io::Result<()> {
    writeln!(w, "{SHIVIZ_REGEX}")?;
    writeln!(w)?;
    for ev in trace {
        let rec = ev.to_record(topology);
        let clock = serde_json::to_string(&rec.vc)?;
        let name = |c| topology.channel_name(c);
        let text = match &ev.event {
            Event::Send {
                channel,
                seq,
                message,
            } => {
                format!(
                    "send {} on {} (#{seq})",
                    serde_json::to_string(message)?,
                    name(*channel)
                )
            }
            Event::Receive {
                channel,
                seq,
                message,
            } => {
                format!(
                    "receive {} on {} (#{seq})",
                    serde_json::to_string(message)?,
                    name(*channel)
                )
            }
            Event::Record { snapshot } => format!("record state for snapshot {snapshot}"),
            Event::MarkerSend { channel, snapshot } => {
                format!("send marker({snapshot}) on {}", name(*channel))
            }
            Event::MarkerReceive { channel, snapshot } => {
                format!("receive marker({snapshot}) on {}", name(*channel))
            }
        };
        writeln!(w, "{} {clock}\n{text}", rec.process)?;
    }
    Ok(())
}

/// The snapshots as one JSON array in the shared shape, in id order.
///
/// # Errors
/// A serialisation error from an application's state or message.
pub fn snapshots_json<M: Serialize, S: Serialize>(
    topology: &Topology,
    snapshots: &[GlobalSnapshot<M, S>],
) -> serde_json::Result<String> {
    let docs: Vec<_> = snapshots.iter().map(|s| s.to_doc(topology)).collect();
    serde_json::to_string_pretty(&docs)
}
