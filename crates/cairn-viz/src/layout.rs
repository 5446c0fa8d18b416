//! Where everything in a space-time diagram goes, before any drawing: which
//! events the window holds, each event's column, which send each receive
//! belongs to, each process's record point for the snapshot, and which
//! messages the snapshot recorded as channel state.

use std::collections::HashMap;
use std::ops::Range;

use cairn_core::trace::{Event, TraceEvent};
use cairn_core::{ChannelId, SnapshotId, Topology};
use serde::Serialize;

use crate::VizError;

/// What to draw.
#[derive(Clone, Debug)]
pub struct Options {
    /// The snapshot whose cut and channel states are drawn (default: the
    /// first one recorded in the window).
    pub snapshot: Option<SnapshotId>,
    /// The events to draw, as positions in the trace (default: around the
    /// snapshot, or the start of the trace), at most `max_events` of them.
    pub window: Option<Range<usize>>,
    /// The most events one diagram holds; a longer window is cut short.
    pub max_events: usize,
    /// Events drawn on either side of the snapshot by default.
    pub margin: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snapshot: None,
            window: None,
            max_events: 1500,
            margin: 30,
        }
    }
}

/// What an arrow carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Carries {
    /// An application message, its per-channel number and its JSON text.
    Message {
        /// Per-channel number.
        seq: u64,
        /// The message as JSON.
        json: String,
    },
    /// A marker of a snapshot.
    Marker(SnapshotId),
}

/// One message or marker, from its send to its receive (trace positions;
/// `None` where that end is not in the trace: a message restored into the
/// channel when the run began, or one still in flight when it ended).
#[derive(Clone, Debug)]
pub struct Arrow {
    /// The channel.
    pub channel: ChannelId,
    /// The send's position in the trace.
    pub send: Option<usize>,
    /// The receive's position in the trace.
    pub recv: Option<usize>,
    /// What it carries.
    pub carries: Carries,
    /// Whether the snapshot recorded it in the channel's state.
    pub recorded: bool,
}

/// A laid-out diagram.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The trace positions drawn.
    pub window: Range<usize>,
    /// Events in the whole trace.
    pub total: usize,
    /// `column[i - window.start]`: the column of the event at position `i`.
    pub column: Vec<u32>,
    /// Columns in all.
    pub columns: u32,
    /// Every message and marker with at least one end in the window.
    pub arrows: Vec<Arrow>,
    /// The snapshot drawn, if any.
    pub snapshot: Option<SnapshotId>,
    /// Per process, where it recorded its state for that snapshot (a trace
    /// position, possibly outside the window).
    pub records: Vec<Option<usize>>,
    /// Messages the snapshot recorded as channel state that lie wholly
    /// outside the window, so are not drawn.
    pub recorded_outside: usize,
}

impl Layout {
    /// Lays out `trace`.
    ///
    /// # Errors
    /// [`VizError`] if a message or marker is sent twice on a channel, or
    /// the window is empty or out of range.
    pub fn new<M: Serialize>(
        topology: &Topology,
        trace: &[TraceEvent<M>],
        options: &Options,
    ) -> Result<Layout, VizError> {
        let pairs = pair_up(topology, trace)?;
        let snapshot = options.snapshot.or_else(|| {
            let w = options.window.clone().unwrap_or(0..trace.len());
            trace.get(w)?.iter().find_map(|e| match e.event {
                Event::Record { snapshot } => Some(snapshot),
                _ => None,
            })
        });
        let window = match &options.window {
            Some(w) => {
                if w.start >= w.end || w.end > trace.len() {
                    return Err(VizError::Window(format!(
                        "events {}..{} are not within the trace's 0..{}",
                        w.start,
                        w.end,
                        trace.len()
                    )));
                }
                w.clone()
            }
            None => default_window(trace, snapshot, options.margin),
        };
        let window = window.start..window.end.min(window.start + options.max_events.max(1));
        let mut records = vec![None; topology.process_count()];
        if let Some(s) = snapshot {
            for (i, e) in trace.iter().enumerate() {
                if matches!(e.event, Event::Record { snapshot } if snapshot == s) {
                    records[e.process.index()] = Some(i);
                }
            }
            if records.iter().all(Option::is_none) {
                return Err(VizError::Window(format!(
                    "snapshot {s} was never recorded in this trace"
                )));
            }
        }
        let recorded = recorded_receives(topology, trace, snapshot, &records);
        let inside = |i: Option<usize>| i.is_some_and(|i| window.contains(&i));
        let arrows: Vec<Arrow> = pairs
            .into_iter()
            .filter(|a| inside(a.send) || inside(a.recv))
            .map(|mut a| {
                a.recorded = a.recv.is_some_and(|r| recorded.contains(&r));
                a
            })
            .collect();
        // A column per event: after the process's previous event, and after
        // the send of what it receives, so every arrow points right.
        let mut send_of = vec![None; window.len()];
        for a in &arrows {
            if let (Some(s), Some(r)) = (a.send, a.recv)
                && window.contains(&s)
                && window.contains(&r)
            {
                send_of[r - window.start] = Some(s - window.start);
            }
        }
        let mut last = vec![None::<u32>; topology.process_count()];
        let mut column = Vec::with_capacity(window.len());
        for (k, e) in trace[window.clone()].iter().enumerate() {
            let p = e.process.index();
            let mut c = last[p].map_or(0, |c| c + 1);
            if let Some(s) = send_of[k] {
                c = c.max(column[s] + 1);
            }
            column.push(c);
            last[p] = Some(c);
        }
        let columns = column.iter().max().map_or(0, |c| c + 1);
        let recorded_outside = recorded.len() - arrows.iter().filter(|a| a.recorded).count();
        Ok(Layout {
            window,
            total: trace.len(),
            column,
            columns,
            arrows,
            snapshot,
            records,
            recorded_outside,
        })
    }

    /// The column of the event at trace position `i`, if it is drawn.
    pub fn column_of(&self, i: usize) -> Option<u32> {
        self.window
            .contains(&i)
            .then(|| self.column[i - self.window.start])
    }
}

/// Around the snapshot: from its first record or marker to its last marker
/// receive, with `margin` events either side; else the trace's start.
fn default_window<M>(
    trace: &[TraceEvent<M>],
    snapshot: Option<SnapshotId>,
    margin: usize,
) -> Range<usize> {
    let of = |e: &Event<M>| match e {
        Event::Record { snapshot }
        | Event::MarkerSend { snapshot, .. }
        | Event::MarkerReceive { snapshot, .. } => Some(*snapshot),
        _ => None,
    };
    let mine: Vec<usize> = trace
        .iter()
        .enumerate()
        .filter(|(_, e)| snapshot.is_some() && of(&e.event) == snapshot)
        .map(|(i, _)| i)
        .collect();
    match (mine.first(), mine.last()) {
        (Some(&a), Some(&b)) => a.saturating_sub(margin)..(b + 1 + margin).min(trace.len()),
        _ => 0..trace.len(),
    }
}

/// Every send matched with its receive: a message by its channel and
/// number, a marker by its channel and snapshot. Keys, not queue order, so a
/// slice of a trace pairs up too: a receive whose send lies before the slice
/// (or before the run, for a restored message) has no send, and a send
/// whose receive lies after it has no receive.
fn pair_up<M: Serialize>(
    topology: &Topology,
    trace: &[TraceEvent<M>],
) -> Result<Vec<Arrow>, VizError> {
    #[derive(Clone, Copy, Hash, PartialEq, Eq)]
    enum Key {
        Message(u64),
        Marker(SnapshotId),
    }
    let mut arrows: Vec<Arrow> = Vec::new();
    let mut open: HashMap<(ChannelId, Key), usize> = HashMap::new();
    for (i, e) in trace.iter().enumerate() {
        let (channel, carries, key, is_send) = match &e.event {
            Event::Send {
                channel,
                seq,
                message,
            }
            | Event::Receive {
                channel,
                seq,
                message,
            } => (
                *channel,
                Carries::Message {
                    seq: *seq,
                    json: serde_json::to_string(message).unwrap_or_default(),
                },
                Key::Message(*seq),
                matches!(e.event, Event::Send { .. }),
            ),
            Event::MarkerSend { channel, snapshot }
            | Event::MarkerReceive { channel, snapshot } => (
                *channel,
                Carries::Marker(*snapshot),
                Key::Marker(*snapshot),
                matches!(e.event, Event::MarkerSend { .. }),
            ),
            Event::Record { .. } => continue,
        };
        if is_send {
            if open.insert((channel, key), arrows.len()).is_some() {
                return Err(VizError::Trace(format!(
                    "event {i}: {} sent {carries:?} twice",
                    topology.channel_name(channel)
                )));
            }
            arrows.push(Arrow {
                channel,
                send: Some(i),
                recv: None,
                carries,
                recorded: false,
            });
            continue;
        }
        match open.remove(&(channel, key)) {
            Some(a) => arrows[a].recv = Some(i),
            None => arrows.push(Arrow {
                channel,
                send: None,
                recv: Some(i),
                carries,
                recorded: false,
            }),
        }
    }
    Ok(arrows)
}

/// Trace positions of the receives the snapshot recorded as channel state:
/// on each channel, those after the receiver recorded and before the
/// snapshot's marker arrived on it.
fn recorded_receives<M>(
    topology: &Topology,
    trace: &[TraceEvent<M>],
    snapshot: Option<SnapshotId>,
    records: &[Option<usize>],
) -> Vec<usize> {
    let Some(s) = snapshot else {
        return Vec::new();
    };
    let mut pending: Vec<Vec<usize>> = vec![Vec::new(); topology.channel_count()];
    let mut closed = vec![false; topology.channel_count()];
    let mut out = Vec::new();
    for (i, e) in trace.iter().enumerate() {
        let Some(r) = records[e.process.index()] else {
            continue;
        };
        match &e.event {
            Event::Receive { channel, .. } if i > r && !closed[channel.index()] => {
                pending[channel.index()].push(i);
            }
            Event::MarkerReceive { channel, snapshot } if *snapshot == s => {
                closed[channel.index()] = true;
                out.append(&mut pending[channel.index()]);
            }
            _ => {}
        }
    }
    out
}
