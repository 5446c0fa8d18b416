//! Writers for runs: the JSON Lines trace, the ShiViz log and the snapshot
//! array in Cairn's shared JSON shape.

use std::io::{self, Write};

use cairn_core::trace::{Event, TraceEvent};
use cairn_core::{GlobalSnapshot, Topology};
use serde::Serialize;

/// The header line: ShiViz's own default parser, so the file reads the same
/// whether it is uploaded ("select a file" takes this line as the parser) or
/// pasted whole into ShiViz's text box under the default parser (the header
/// and the empty line after it match no event).
pub const SHIVIZ_REGEX: &str = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})";

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

/// The text of one event in a ShiViz log. ShiViz's default parser would
/// take a line that starts `word {` for a clock line, so no text does: the
/// second word is never a JSON object.
pub fn shiviz_text<M: Serialize>(
    topology: &Topology,
    event: &Event<M>,
) -> serde_json::Result<String> {
    let name = |c| topology.channel_name(c);
    Ok(match event {
        Event::Send {
            channel,
            seq,
            message,
        } => format!(
            "send on {} #{seq}: {}",
            name(*channel),
            serde_json::to_string(message)?
        ),
        Event::Receive {
            channel,
            seq,
            message,
        } => format!(
            "receive on {} #{seq}: {}",
            name(*channel),
            serde_json::to_string(message)?
        ),
        Event::Record { snapshot } => format!("record state for snapshot {snapshot}"),
        Event::MarkerSend { channel, snapshot } => {
            format!("send marker of snapshot {snapshot} on {}", name(*channel))
        }
        Event::MarkerReceive { channel, snapshot } => {
            format!(
                "receive marker of snapshot {snapshot} on {}",
                name(*channel)
            )
        }
    })
}

/// Writes `trace` as a ShiViz log: the parser line, an empty line (one
/// execution), then for each event what happened on one line and its host
/// and vector clock on the next, which is the layout ShiViz expects by
/// default.
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
        let text = shiviz_text(topology, &ev.event)?;
        writeln!(w, "{text}\n{} {clock}", rec.process)?;
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
