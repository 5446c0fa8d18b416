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
///   [`Output::ChannelRecorded`] of that snapshot and after its state is in
///   (and, with sender-side [`Overtaking`], after every marker of it is
///   placed with [`Engine::marker_placed`]).
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
    /// The snapshot's recorded channel state passed the recording limit
    /// (see [`Engine::set_recording_limit`]) on `channel`: its recording is
    /// dropped and it will never complete here. Report it as failed.
    RecordingAbandoned {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The incoming channel whose message took it over the limit.
        channel: ChannelId,
        /// The bytes recorded for the snapshot, that message included.
        bytes: u64,
    },
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

/// Where a marker may overtake application messages that were sent before
/// it but not yet handled. Off on both sides by default: markers keep their
/// FIFO place, as in the paper.
///
/// - **Sender side.** When this process records, each marker goes onto its
///   channel ahead of the messages the application already sent there but
///   the caller has not yet written out. The caller tells the engine which
///   messages it overtook with [`Engine::marker_placed`]; they become the
///   tail of that channel's recorded state, reported in
///   [`LocalSnapshot::overtaken`]. A snapshot completes here only once every
///   marker of it is placed.
/// - **Receiver side.** When a marker is in a channel's inbound buffer
///   behind messages this process has not handled yet, the caller may take
///   the marker first with [`Engine::handle_marker_ahead`]: the process
///   records (if it has not) and those messages become the channel's state.
///   The caller still hands them to the application afterwards, in order.
///
/// The cut stays consistent either way: every overtaken message was sent
/// before its sender recorded and is handled after its receiver recorded,
/// so it is exactly in flight at the cut. A channel's state is what its
/// receiver recorded followed by what its sender recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overtaking {
    /// Markers jump the sender's unwritten messages.
    pub sender: bool,
    /// Markers are taken ahead of the receiver's unhandled messages.
    pub receiver: bool,
}

impl Overtaking {
    /// Both sides.
    pub const BOTH: Overtaking = Overtaking {
        sender: true,
        receiver: true,
    };

    /// The sides named `none`, `sender`, `receiver` or `both`.
    pub fn from_name(name: &str) -> Option<Overtaking> {
        let (sender, receiver) = match name {
            "none" => (false, false),
            "sender" => (true, false),
            "receiver" => (false, true),
            "both" => (true, true),
            _ => return None,
        };
        Some(Overtaking { sender, receiver })
    }

    /// The name [`from_name`](Self::from_name) reads back.
    pub fn name(self) -> &'static str {
        match (self.sender, self.receiver) {
            (false, false) => "none",
            (true, false) => "sender",
            (false, true) => "receiver",
            (true, true) => "both",
        }
    }

    /// Whether markers overtake on either side.
    pub fn any(self) -> bool {
        self.sender || self.receiver
    }
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
    /// Bytes recorded so far, as the caller sized them.
    bytes: u64,
    /// Sender-side overtaking: per outgoing channel, the messages this
    /// snapshot's marker overtook, once the marker is placed (`None` until).
    overtaken: Vec<Option<Vec<M>>>,
    /// Markers not yet placed (always 0 without sender-side overtaking).
    unplaced: usize,
}

/// How many finished snapshot ids an engine remembers one by one. Older ones
/// are remembered only as "at or below the floor": ids are handed out in
/// increasing order, so a marker that old belongs to a snapshot long over.
pub const REMEMBERED_SNAPSHOTS: usize = 1024;

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
    /// Snapshots finished here (complete or aborted), at most
    /// [`REMEMBERED_SNAPSHOTS`]; every id at or below `floor` is finished too.
    completed: BTreeSet<SnapshotId>,
    floor: Option<SnapshotId>,
    limit: Option<u64>,
    overtaking: Overtaking,
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
            floor: None,
            limit: None,
            overtaking: Overtaking::default(),
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
        self.handle_sized_message(channel, message, 0)
    }

    /// As [`handle_message`](Self::handle_message), for a message of `size`
    /// bytes (as the caller measures them, e.g. on the wire). A snapshot
    /// whose recorded messages pass the recording limit is abandoned here
    /// with [`Output::RecordingAbandoned`].
    ///
    /// # Errors
    /// `channel` is not incoming here, or a state is pending.
    pub fn handle_sized_message(
        &mut self,
        channel: ChannelId,
        message: &M,
        size: u64,
    ) -> Result<()> {
        self.ready()?;
        let i = self.incoming_index(channel)?;
        let mut over = Vec::new();
        for rec in &mut self.active {
            if rec.open[i] {
                rec.messages[i].push(message.clone());
                rec.bytes = rec.bytes.saturating_add(size);
                if self.limit.is_some_and(|l| rec.bytes > l) {
                    over.push((rec.snapshot, rec.bytes));
                }
            }
        }
        for (snapshot, bytes) in over {
            self.abort(snapshot);
            self.outputs.push_back(Output::RecordingAbandoned {
                snapshot,
                channel,
                bytes,
            });
        }
        Ok(())
    }

    /// Caps the bytes of messages one snapshot may record here (over every
    /// channel); `None` lifts the cap. Sizes come from
    /// [`handle_sized_message`](Self::handle_sized_message).
    pub fn set_recording_limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
    }

    /// Lets markers overtake application messages (see [`Overtaking`]).
    /// Change it only while no snapshot is in progress here.
    pub fn set_overtaking(&mut self, overtaking: Overtaking) {
        self.overtaking = overtaking;
    }

    /// Gives up snapshot `snapshot` here (it failed or timed out elsewhere):
    /// its recording is dropped, and its late markers are ignored. Returns
    /// whether it was being recorded.
    pub fn abort(&mut self, snapshot: SnapshotId) -> bool {
        if self.pending_state == Some(snapshot) {
            self.pending_state = None;
        }
        let before = self.active.len();
        self.active.retain(|r| r.snapshot != snapshot);
        self.finish(snapshot);
        before != self.active.len()
    }

    fn is_finished(&self, snapshot: SnapshotId) -> bool {
        self.completed.contains(&snapshot) || self.floor.is_some_and(|f| snapshot <= f)
    }

    /// Remembers `snapshot` as finished, forgetting the oldest beyond the bound.
    fn finish(&mut self, snapshot: SnapshotId) {
        if self.is_finished(snapshot) {
            return;
        }
        self.completed.insert(snapshot);
        while self.completed.len() > REMEMBERED_SNAPSHOTS {
            if let Some(oldest) = self.completed.pop_first() {
                self.floor = Some(self.floor.map_or(oldest, |f| f.max(oldest)));
            }
        }
    }

    /// A marker of `snapshot` arrived on `channel` (the marker-receiving rule).
    ///
    /// # Errors
    /// `channel` is not incoming here, a state is pending, a marker of this
    /// snapshot already came on this channel, or the snapshot is finished
    /// or given up here ([`Error::LateMarker`]).
    pub fn handle_marker(&mut self, channel: ChannelId, snapshot: SnapshotId) -> Result<()> {
        self.handle_marker_ahead(channel, snapshot, &[])
    }

    /// A marker of `snapshot` on `channel` is taken ahead of `ahead`, the
    /// messages before it on the channel that the process has not handled
    /// yet (receiver-side [`Overtaking`]). They become the end of the
    /// channel's recorded state for this snapshot; the caller hands them to
    /// [`handle_message`](Self::handle_message) and the application
    /// afterwards, in order, as usual. With `ahead` empty this is
    /// [`handle_marker`](Self::handle_marker). Overtaken messages do not
    /// count toward the recording limit.
    ///
    /// # Errors
    /// As [`handle_marker`](Self::handle_marker), and [`Error::Overtaking`]
    /// if `ahead` is not empty and receiver-side overtaking is off.
    pub fn handle_marker_ahead(
        &mut self,
        channel: ChannelId,
        snapshot: SnapshotId,
        ahead: &[M],
    ) -> Result<()> {
        self.ready()?;
        if !ahead.is_empty() && !self.overtaking.receiver {
            return Err(Error::Overtaking {
                snapshot,
                problem:
                    "a marker was taken ahead of messages, but receiver-side overtaking is off"
                        .into(),
            });
        }
        let i = self.incoming_index(channel)?;
        let duplicate = || Error::DuplicateMarker {
            snapshot,
            channel: self.incoming[i].1.clone(),
        };
        if self.is_finished(snapshot) {
            return Err(Error::LateMarker {
                snapshot,
                channel: self.incoming[i].1.clone(),
            });
        }
        match self.active.iter().position(|r| r.snapshot == snapshot) {
            Some(r) => {
                let rec = &mut self.active[r];
                if !rec.open[i] {
                    return Err(duplicate());
                }
                rec.open[i] = false;
                rec.remaining -= 1;
                rec.messages[i].extend_from_slice(ahead);
                self.outputs
                    .push_back(Output::ChannelRecorded { snapshot, channel });
                self.complete_if_done(r);
            }
            None => {
                self.begin(snapshot, Some(i));
                if let Some(rec) = self.active.last_mut() {
                    rec.messages[i].extend_from_slice(ahead);
                }
            }
        }
        Ok(())
    }

    /// The caller put this snapshot's marker on `channel` ahead of
    /// `overtaken`, the messages the application sent there earlier that
    /// were not yet written out, in send order (sender-side
    /// [`Overtaking`]; answer every [`Output::SendMarker`] this way, with
    /// an empty list when it overtook nothing). They become the tail of the
    /// channel's recorded state. A snapshot given up here meanwhile ignores
    /// it.
    ///
    /// # Errors
    /// [`Error::Overtaking`] if sender-side overtaking is off, or the
    /// marker of `snapshot` on `channel` is not waiting to be placed;
    /// [`Error::WrongChannel`] if `channel` is not outgoing here.
    pub fn marker_placed(
        &mut self,
        channel: ChannelId,
        snapshot: SnapshotId,
        overtaken: Vec<M>,
    ) -> Result<()> {
        let o = self.outgoing_index(channel)?;
        let problem = |problem: String| Error::Overtaking { snapshot, problem };
        if !self.overtaking.sender {
            return Err(problem(
                "a marker was placed ahead of messages, but sender-side overtaking is off".into(),
            ));
        }
        let Some(r) = self.active.iter().position(|r| r.snapshot == snapshot) else {
            if self.is_finished(snapshot) {
                return Ok(()); // given up here meanwhile
            }
            return Err(problem("this process has not recorded it".into()));
        };
        let rec = &mut self.active[r];
        if rec.overtaken[o].is_some() {
            return Err(problem(format!(
                "its marker on {} was already placed",
                self.outgoing[o].1
            )));
        }
        rec.overtaken[o] = Some(overtaken);
        // Saturating: the option may have been turned on mid-snapshot.
        rec.unplaced = rec.unplaced.saturating_sub(1);
        self.complete_if_done(r);
        Ok(())
    }

    /// The application or an operator starts `snapshot` here. Several
    /// processes may start the same snapshot; each records it once.
    ///
    /// # Errors
    /// A state is pending.
    pub fn start_snapshot(&mut self, snapshot: SnapshotId) -> Result<StartOutcome> {
        self.ready()?;
        if self.is_finished(snapshot) || self.active.iter().any(|r| r.snapshot == snapshot) {
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
        self.is_finished(snapshot) || self.active.iter().any(|r| r.snapshot == snapshot)
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
            bytes: 0,
            overtaken: (0..self.outgoing.len()).map(|_| None).collect(),
            unplaced: if self.overtaking.sender {
                self.outgoing.len()
            } else {
                0
            },
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
        if rec.remaining > 0 || rec.unplaced > 0 || rec.state.is_none() {
            return;
        }
        let rec = self.active.swap_remove(r);
        self.finish(rec.snapshot);
        let channels = self
            .incoming
            .iter()
            .zip(rec.messages)
            .map(|(&(channel, _), messages)| RecordedChannel { channel, messages })
            .collect();
        let overtaken = self
            .outgoing
            .iter()
            .zip(rec.overtaken)
            .filter_map(|(&(channel, _), m)| {
                m.filter(|m| !m.is_empty())
                    .map(|messages| RecordedChannel { channel, messages })
            })
            .collect();
        if let Some(state) = rec.state {
            self.outputs
                .push_back(Output::LocalSnapshotComplete(LocalSnapshot {
                    snapshot: rec.snapshot,
                    process: self.me,
                    state,
                    channels,
                    overtaken,
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
