//! The per-process state machine: the marker-sending and marker-receiving rules.

use std::collections::{BTreeSet, VecDeque};

use crate::error::{Error, Result};
use crate::ids::{ChannelId, ProcessId, SnapshotId};
use crate::snapshot::{LocalSnapshot, RecordedChannel};
use crate::topology::Topology;

/// What the engine asks its caller to do. Drain with [`Engine::poll_output`].
///
/// # Order
/// Outputs come out in the order the caller must carry them out:
/// - Application messages given to [`Engine::send`] and markers come out in
///   one queue, so a marker is always ahead of every application message the
///   process sends on that channel after recording. Carry out sends in the
///   order they are polled.
/// - When a snapshot is recorded, [`Output::RecordState`] comes first. The
///   caller must answer it with [`Engine::record_state`] before it hands the
///   engine anything else; until then the engine refuses other inputs with
///   [`Error::StatePending`]. Then come [`Output::ChannelRecorded`] for the
///   channel the marker came on (recorded empty), then one
///   [`Output::SendMarker`] per outgoing channel, in topology order.
/// - [`Output::LocalSnapshotComplete`] comes after the last
///   [`Output::ChannelRecorded`] of that snapshot and after its state is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<M, S> {
    /// Send this application message on `channel`.
    Send {
        /// The outgoing channel.
        channel: ChannelId,
        /// The message.
        message: M,
    },
    /// Send a marker of `snapshot` on `channel`.
    SendMarker {
        /// The outgoing channel.
        channel: ChannelId,
        /// The snapshot the marker belongs to.
        snapshot: SnapshotId,
    },
    /// Record the local state now, and give it back with [`Engine::record_state`].
    RecordState {
        /// The snapshot being recorded.
        snapshot: SnapshotId,
    },
    /// The recording of `channel` for `snapshot` is finished.
    ChannelRecorded {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The incoming channel whose state is now known.
        channel: ChannelId,
    },
    /// This process's part of a snapshot is complete.
    LocalSnapshotComplete(LocalSnapshot<M, S>),
}

/// What [`Engine::start_snapshot`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// The process recorded its state and sent markers.
    Started,
    /// The process had already recorded this snapshot (another initiator's
    /// marker got here first); nothing happened.
    AlreadyRecorded,
}

/// One snapshot this process has recorded and whose channels are still being recorded.
#[derive(Clone, Debug)]
struct Recording<M, S> {
    snapshot: SnapshotId,
    state: Option<S>,
    /// Per incoming channel (by local index): still recording?
    open: Vec<bool>,
    /// Per incoming channel: messages that arrived after recording began.
    messages: Vec<Vec<M>>,
    remaining: usize,
}

/// The Chandy–Lamport rules for one process, with no I/O.
///
/// Feed it what happens at the process with the `handle_*` methods and
/// [`Engine::send`], then drain [`Engine::poll_output`] until it returns
/// `None` (see [`Output`] for the order). Several snapshots may be in
/// progress at once; each is told apart by its [`SnapshotId`].
///
/// With no snapshot in progress, handling a message allocates nothing.
/// While channels are recorded, memory grows only with the messages recorded.
#[derive(Clone, Debug)]
pub struct Engine<M, S> {
    me: ProcessId,
    name: String,
    /// Incoming channels, ascending, with their printable names.
    incoming: Vec<(ChannelId, String)>,
    /// Outgoing channels, ascending, with their printable names.
    outgoing: Vec<(ChannelId, String)>,
    active: Vec<Recording<M, S>>,
    completed: BTreeSet<SnapshotId>,
    pending_state: Option<SnapshotId>,
    outputs: VecDeque<Output<M, S>>,
}

impl<M: Clone, S> Engine<M, S> {
    /// The engine of process `me` in `topology`.
    ///
    /// # Errors
    /// [`Error::NotInTopology`] if `me` is not a process of `topology`.
    pub fn new(topology: &Topology, me: ProcessId) -> Result<Self> {
        if me.index() >= topology.process_count() {
            return Err(Error::NotInTopology(format!("process #{}", me.0)));
        }
        let named = |ids: &[ChannelId]| -> Vec<(ChannelId, String)> {
            ids.iter().map(|&c| (c, topology.channel_name(c))).collect()
        };
        Ok(Engine {
            me,
            name: topology.name(me).to_string(),
            incoming: named(topology.incoming(me)),
            outgoing: named(topology.outgoing(me)),
            active: Vec::new(),
            completed: BTreeSet::new(),
            pending_state: None,
            outputs: VecDeque::new(),
        })
    }

    /// The process this engine runs for.
    pub fn process(&self) -> ProcessId {
        self.me
    }

    /// The application sends `message` on `channel`. It comes out as
    /// [`Output::Send`], after any marker already queued for that channel.
    ///
    /// # Errors
    /// `channel` is not outgoing here, or a state is pending.
    pub fn send(&mut self, channel: ChannelId, message: M) -> Result<()> {
        self.ready()?;
        self.outgoing_index(channel)?;
        self.outputs.push_back(Output::Send { channel, message });
        Ok(())
    }

    /// An application message arrived on `channel`. The caller delivers it to
    /// the application after this call; the engine keeps a copy only for the
    /// snapshots that are recording `channel`.
    ///
    /// # Errors
    /// `channel` is not incoming here, or a state is pending.
    pub fn handle_message(&mut self, channel: ChannelId, message: &M) -> Result<()> {
        self.ready()?;
        let i = self.incoming_index(channel)?;
        for rec in &mut self.active {
            if rec.open[i] {
                rec.messages[i].push(message.clone());
            }
        }
        Ok(())
    }

    /// A marker of `snapshot` arrived on `channel` (the marker-receiving rule).
    ///
    /// # Errors
    /// `channel` is not incoming here, a state is pending, or a marker of this
    /// snapshot already came on this channel.
    pub fn handle_marker(&mut self, channel: ChannelId, snapshot: SnapshotId) -> Result<()> {
        self.ready()?;
        let i = self.incoming_index(channel)?;
        let duplicate = || Error::DuplicateMarker {
            snapshot,
            channel: self.incoming[i].1.clone(),
        };
        if self.completed.contains(&snapshot) {
            return Err(duplicate());
        }
        match self.active.iter().position(|r| r.snapshot == snapshot) {
            Some(r) => {
                let rec = &mut self.active[r];
                if !rec.open[i] {
                    return Err(duplicate());
                }
                rec.open[i] = false;
                rec.remaining -= 1;
                self.outputs
                    .push_back(Output::ChannelRecorded { snapshot, channel });
                self.complete_if_done(r);
            }
            None => self.begin(snapshot, Some(i)),
        }
        Ok(())
    }

    /// The application or an operator starts `snapshot` here. Several
    /// processes may start the same snapshot; each records it once.
    ///
    /// # Errors
    /// A state is pending.
    pub fn start_snapshot(&mut self, snapshot: SnapshotId) -> Result<StartOutcome> {
        self.ready()?;
        if self.completed.contains(&snapshot) || self.active.iter().any(|r| r.snapshot == snapshot)
        {
            return Ok(StartOutcome::AlreadyRecorded);
        }
        self.begin(snapshot, None);
        Ok(StartOutcome::Started)
    }

    /// Gives the engine the local state it asked for with [`Output::RecordState`].
    ///
    /// # Errors
    /// [`Error::StateNotRequested`] if no state of `snapshot` was asked for.
    pub fn record_state(&mut self, snapshot: SnapshotId, state: S) -> Result<()> {
        if self.pending_state != Some(snapshot) {
            return Err(Error::StateNotRequested(snapshot));
        }
        self.pending_state = None;
        // The pending snapshot is always active: `begin` pushed it and only
        // `complete_if_done` removes it, which needs the state.
        if let Some(r) = self.active.iter().position(|r| r.snapshot == snapshot) {
            self.active[r].state = Some(state);
            self.complete_if_done(r);
        }
        Ok(())
    }

    /// The next thing to do, in order; `None` when there is nothing.
    pub fn poll_output(&mut self) -> Option<Output<M, S>> {
        self.outputs.pop_front()
    }

    /// Snapshots recorded here whose channels are still being recorded.
    pub fn in_progress(&self) -> impl Iterator<Item = SnapshotId> + '_ {
        self.active.iter().map(|r| r.snapshot)
    }

    /// Whether this process has recorded `snapshot` (in progress or complete).
    pub fn has_recorded(&self, snapshot: SnapshotId) -> bool {
        self.completed.contains(&snapshot) || self.active.iter().any(|r| r.snapshot == snapshot)
    }

    /// The marker-sending rule, for a snapshot this process records now.
    fn begin(&mut self, snapshot: SnapshotId, marker_on: Option<usize>) {
        let n = self.incoming.len();
        let mut rec = Recording {
            snapshot,
            state: None,
            open: vec![true; n],
            messages: (0..n).map(|_| Vec::new()).collect(),
            remaining: n,
        };
        self.outputs.push_back(Output::RecordState { snapshot });
        self.pending_state = Some(snapshot);
        if let Some(i) = marker_on {
            rec.open[i] = false;
            rec.remaining -= 1;
            self.outputs.push_back(Output::ChannelRecorded {
                snapshot,
                channel: self.incoming[i].0,
            });
        }
        for &(channel, _) in &self.outgoing {
            self.outputs
                .push_back(Output::SendMarker { channel, snapshot });
        }
        self.active.push(rec);
    }

    fn complete_if_done(&mut self, r: usize) {
        let rec = &self.active[r];
        if rec.remaining > 0 || rec.state.is_none() {
            return;
        }
        let rec = self.active.swap_remove(r);
        self.completed.insert(rec.snapshot);
        let channels = self
            .incoming
            .iter()
            .zip(rec.messages)
            .map(|(&(channel, _), messages)| RecordedChannel { channel, messages })
            .collect();
        if let Some(state) = rec.state {
            self.outputs
                .push_back(Output::LocalSnapshotComplete(LocalSnapshot {
                    snapshot: rec.snapshot,
                    process: self.me,
                    state,
                    channels,
                }));
        }
    }

    fn ready(&self) -> Result<()> {
        match self.pending_state {
            Some(s) => Err(Error::StatePending(s)),
            None => Ok(()),
        }
    }

    fn incoming_index(&self, channel: ChannelId) -> Result<usize> {
        self.incoming
            .binary_search_by_key(&channel, |(c, _)| *c)
            .map_err(|_| self.wrong(channel, "incoming"))
    }

    fn outgoing_index(&self, channel: ChannelId) -> Result<usize> {
        self.outgoing
            .binary_search_by_key(&channel, |(c, _)| *c)
            .map_err(|_| self.wrong(channel, "outgoing"))
    }

    fn wrong(&self, channel: ChannelId, direction: &'static str) -> Error {
        Error::WrongChannel {
            channel: format!("#{}", channel.0),
            process: self.name.clone(),
            direction,
        }
    }
}
