//! The simulated world: processes with their engines, FIFO channels holding
//! packets in flight, vector clocks, the trace and the snapshots being
//! assembled. The timed simulator and the exhaustive explorer both move it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use cairn_core::oracle::{AppEvent, Model};
use cairn_core::trace::{Event, TraceEvent, VectorClock};
use cairn_core::{
    Assembler, ChannelId, Engine, GlobalSnapshot, Output, Overtaking, ProcessId, SnapshotId,
    StartOutcome, Topology,
};

use crate::error::{Result, SimError};

/// A fault planted in how the simulator carries out the engine's outputs,
/// to prove that the oracle catches broken implementations. Never use one
/// outside tests of the oracle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A marker is held back and sent after the next application message on
    /// its channel (breaks the marker-sending rule).
    MarkerAfterMessage,
    /// The first application message a process receives while it records is
    /// hidden from its engine: channels are recorded from the wrong point.
    LateChannelRecording,
    /// The recorded local state is the one from before the process's last
    /// application event.
    StaleState,
    /// A marker that overtakes messages (either side) records none of them:
    /// what it jumped is lost from the channel's state.
    LoseOvertaken,
}

/// What travels on a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<M> {
    /// An application message and its per-channel sequence number.
    Message {
        /// Per-channel sequence number, from 0.
        seq: u64,
        /// The message.
        message: M,
    },
    /// A marker.
    Marker(SnapshotId),
}

/// One item in flight.
#[derive(Clone, Debug)]
pub struct Packet<M> {
    /// What it carries.
    pub item: Item<M>,
    /// The sender's vector clock at the send.
    pub vc: Vec<u64>,
    /// The tick at which it may be delivered.
    pub deliver_at: u64,
    /// Global send order, to break ties between channels deterministically.
    pub order: u64,
}

/// The whole simulated system at one moment. Cloning it forks the world,
/// which is how the explorer branches.
#[derive(Clone, Debug)]
pub struct System<D: Model> {
    topology: Arc<Topology>,
    model: D,
    initial: Vec<D::State>,
    states: Vec<D::State>,
    previous: Vec<D::State>,
    engines: Vec<Engine<D::Message, D::State>>,
    channels: Vec<VecDeque<Packet<D::Message>>>,
    next_seq: Vec<u64>,
    clocks: Vec<VectorClock>,
    trace: Vec<TraceEvent<D::Message>>,
    assembling: BTreeMap<SnapshotId, Assembler<D::Message, D::State>>,
    done: BTreeMap<SnapshotId, GlobalSnapshot<D::Message, D::State>>,
    fault: Option<Fault>,
    held_markers: Vec<Vec<Packet<D::Message>>>,
    hidden_once: Vec<Option<SnapshotId>>,
    sent: u64,
    overtaking: Overtaking,
    jump_limit: usize,
}

impl<D: Model> System<D> {
    /// A system in its initial state: `initial[p]` is process `p`'s state.
    ///
    /// # Errors
    /// [`SimError::Setup`] if `initial` does not hold one state per process.
    pub fn new(topology: Arc<Topology>, model: D, initial: Vec<D::State>) -> Result<Self> {
        let n = topology.process_count();
        if initial.len() != n {
            return Err(SimError::Setup(format!(
                "{} initial states for {n} processes",
                initial.len()
            )));
        }
        let engines = topology
            .processes()
            .map(|p| Engine::new(&topology, p))
            .collect::<std::result::Result<_, _>>()?;
        let c = topology.channel_count();
        Ok(System {
            clocks: topology
                .processes()
                .map(|p| VectorClock::new(p, n))
                .collect(),
            states: initial.clone(),
            previous: initial.clone(),
            initial,
            engines,
            channels: vec![VecDeque::new(); c],
            next_seq: vec![0; c],
            trace: Vec::new(),
            assembling: BTreeMap::new(),
            done: BTreeMap::new(),
            fault: None,
            held_markers: vec![Vec::new(); c],
            hidden_once: vec![None; n],
            sent: 0,
            overtaking: Overtaking::default(),
            jump_limit: usize::MAX,
            topology,
            model,
        })
    }

    /// Plants a fault (for testing the oracle only).
    pub fn set_fault(&mut self, fault: Option<Fault>) {
        self.fault = fault;
    }

    /// Lets markers overtake messages (see [`Overtaking`]). Sender side: a
    /// marker goes onto its channel ahead of the messages after the last
    /// marker still in flight there (as if the link had written none of
    /// them; see [`System::set_jump_limit`]), and they become the tail of
    /// the channel's state. Receiver
    /// side: [`System::take_marker_early`] is enabled. Set it before the run.
    pub fn set_overtaking(&mut self, overtaking: Overtaking) {
        self.overtaking = overtaking;
        for e in &mut self.engines {
            e.set_overtaking(overtaking);
        }
    }

    /// With sender-side overtaking, a marker jumps at most the last
    /// `limit` messages after the last marker in flight on its channel (the
    /// ones before them count as written out already). Default: no limit.
    pub fn set_jump_limit(&mut self, limit: usize) {
        self.jump_limit = limit;
    }

    /// The overtaking in force.
    pub fn overtaking(&self) -> Overtaking {
        self.overtaking
    }

    /// The topology.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The application model.
    pub fn model(&self) -> &D {
        &self.model
    }

    /// Each process's state now.
    pub fn states(&self) -> &[D::State] {
        &self.states
    }

    /// Each process's state before the run.
    pub fn initial_states(&self) -> &[D::State] {
        &self.initial
    }

    /// Every event so far, in execution order.
    pub fn trace(&self) -> &[TraceEvent<D::Message>] {
        &self.trace
    }

    /// What is in flight on `channel`, oldest first.
    pub fn in_flight(&self, channel: ChannelId) -> &VecDeque<Packet<D::Message>> {
        &self.channels[channel.index()]
    }

    /// The true global state now: every process's state and the application
    /// messages in every channel (the ground truth a snapshot approximates).
    pub fn current_state(&self) -> GlobalSnapshot<D::Message, D::State> {
        GlobalSnapshot {
            id: SnapshotId(u64::MAX),
            states: self.states.clone(),
            channels: self
                .channels
                .iter()
                .map(|q| {
                    q.iter()
                        .filter_map(|p| match &p.item {
                            Item::Message { message, .. } => Some(message.clone()),
                            Item::Marker(_) => None,
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// Completed global snapshots, by id.
    pub fn completed(&self) -> &BTreeMap<SnapshotId, GlobalSnapshot<D::Message, D::State>> {
        &self.done
    }

    /// Snapshots started but not complete, with the processes and channels
    /// each still lacks.
    pub fn incomplete(&self) -> Vec<(SnapshotId, Vec<String>, Vec<String>)> {
        self.assembling
            .iter()
            .map(|(id, a)| {
                let (p, c) = a.missing();
                (*id, p, c)
            })
            .collect()
    }

    /// Whether `process` has recorded `snapshot`.
    pub fn has_recorded(&self, process: ProcessId, snapshot: SnapshotId) -> bool {
        self.engines[process.index()].has_recorded(snapshot)
    }

    /// Whether every channel is empty (markers a fault holds back are not
    /// on any channel yet).
    pub fn is_quiet(&self) -> bool {
        self.channels.iter().all(VecDeque::is_empty)
    }

    /// The application at `from` sends `message` on `channel`, which leaves
    /// at tick `now` and arrives after `delay` ticks (FIFO is kept).
    ///
    /// # Errors
    /// The channel is not outgoing at `from`, or the model does not allow the send.
    pub fn send(
        &mut self,
        from: ProcessId,
        channel: ChannelId,
        message: D::Message,
        now: u64,
        delay: &mut dyn FnMut() -> u64,
    ) -> Result<()> {
        let p = from.index();
        let event = AppEvent::Send {
            channel,
            message: &message,
        };
        let next = self
            .model
            .apply(from, &self.states[p], event)
            .ok_or_else(|| SimError::NotEnabled {
                process: self.topology.name(from).to_string(),
                detail: format!(
                    "cannot send {message:?} on {} from state {:?}",
                    self.topology.channel_name(channel),
                    self.states[p]
                ),
            })?;
        self.engines[p].send(channel, message)?;
        self.previous[p] = std::mem::replace(&mut self.states[p], next);
        self.pump(from, now, delay)
    }

    /// Starts snapshot `id` at `process`.
    ///
    /// # Errors
    /// A core error from the engine.
    pub fn start_snapshot(
        &mut self,
        process: ProcessId,
        id: SnapshotId,
        now: u64,
        delay: &mut dyn FnMut() -> u64,
    ) -> Result<StartOutcome> {
        if !self.done.contains_key(&id) && !self.assembling.contains_key(&id) {
            self.assembling
                .insert(id, Assembler::new(self.topology.clone(), id));
        }
        let outcome = self.engines[process.index()].start_snapshot(id)?;
        self.pump(process, now, delay)?;
        Ok(outcome)
    }

    /// Whether the packet at the head of `channel` can be received now: a
    /// marker always can; a message when the model allows its receipt.
    pub fn can_deliver(&self, channel: ChannelId) -> bool {
        let Some(head) = self.channels[channel.index()].front() else {
            return false;
        };
        match &head.item {
            Item::Marker(_) => true,
            Item::Message { message, .. } => {
                let to = self.topology.channel(channel).to;
                let event = AppEvent::Receive { channel, message };
                self.model
                    .apply(to, &self.states[to.index()], event)
                    .is_some()
            }
        }
    }

    /// Delivers the packet at the head of `channel`. Returns false if there
    /// was none or it cannot be received yet.
    ///
    /// # Errors
    /// A core error from the receiving engine.
    pub fn deliver(
        &mut self,
        channel: ChannelId,
        now: u64,
        delay: &mut dyn FnMut() -> u64,
    ) -> Result<bool> {
        if !self.can_deliver(channel) {
            return Ok(false);
        }
        let Some(packet) = self.channels[channel.index()].pop_front() else {
            return Ok(false);
        };
        let to = self.topology.channel(channel).to;
        let q = to.index();
        let vc = self.clocks[q].receive(&packet.vc).to_vec();
        match packet.item {
            Item::Marker(snapshot) => {
                self.trace.push(TraceEvent {
                    process: to,
                    event: Event::MarkerReceive { channel, snapshot },
                    vc,
                });
                self.engines[q].handle_marker(channel, snapshot)?;
            }
            Item::Message { seq, message } => {
                let hide = self.fault == Some(Fault::LateChannelRecording)
                    && self.engines[q]
                        .in_progress()
                        .next()
                        .is_some_and(|s| self.hidden_once[q] != Some(s));
                if hide {
                    self.hidden_once[q] = self.engines[q].in_progress().next();
                } else {
                    self.engines[q].handle_message(channel, &message)?;
                }
                let event = AppEvent::Receive {
                    channel,
                    message: &message,
                };
                if let Some(next) = self.model.apply(to, &self.states[q], event) {
                    self.previous[q] = std::mem::replace(&mut self.states[q], next);
                }
                self.trace.push(TraceEvent {
                    process: to,
                    event: Event::Receive {
                        channel,
                        seq,
                        message,
                    },
                    vc,
                });
            }
        }
        self.pump(to, now, delay)?;
        Ok(true)
    }

    /// With receiver-side overtaking, the position of the first marker in
    /// flight on `channel` when messages are ahead of it (a marker in the
    /// receiver's buffer behind messages it has not handled).
    pub fn early_marker(&self, channel: ChannelId) -> Option<usize> {
        if !self.overtaking.receiver {
            return None;
        }
        let queue = &self.channels[channel.index()];
        let at = queue
            .iter()
            .position(|p| matches!(p.item, Item::Marker(_)))?;
        (at > 0).then_some(at)
    }

    /// Takes the first marker on `channel` ahead of the messages before it
    /// (receiver-side overtaking); they stay in flight and are delivered
    /// afterwards, in order. Returns false if there is no such marker.
    ///
    /// # Errors
    /// A core error from the receiving engine.
    pub fn take_marker_early(
        &mut self,
        channel: ChannelId,
        now: u64,
        delay: &mut dyn FnMut() -> u64,
    ) -> Result<bool> {
        let Some(at) = self.early_marker(channel) else {
            return Ok(false);
        };
        let queue = &mut self.channels[channel.index()];
        let Some(Packet {
            item: Item::Marker(snapshot),
            vc,
            ..
        }) = queue.remove(at)
        else {
            return Ok(false);
        };
        let lose = self.fault == Some(Fault::LoseOvertaken);
        let ahead: Vec<D::Message> = queue
            .iter()
            .take(if lose { 0 } else { at })
            .filter_map(|p| match &p.item {
                Item::Message { message, .. } => Some(message.clone()),
                Item::Marker(_) => None,
            })
            .collect();
        let to = self.topology.channel(channel).to;
        let q = to.index();
        let vc = self.clocks[q].receive(&vc).to_vec();
        self.trace.push(TraceEvent {
            process: to,
            event: Event::MarkerReceive { channel, snapshot },
            vc,
        });
        self.engines[q].handle_marker_ahead(channel, snapshot, &ahead)?;
        self.pump(to, now, delay)?;
        Ok(true)
    }

    /// Releases markers a [`Fault::MarkerAfterMessage`] held back, when no
    /// message came to push them out. Returns whether any was released.
    pub fn release_held_markers(&mut self) -> bool {
        let mut any = false;
        for c in 0..self.held_markers.len() {
            for p in std::mem::take(&mut self.held_markers[c]) {
                self.channels[c].push_back(p);
                any = true;
            }
        }
        any
    }

    /// Carries out everything the engine of `p` asks for, in order.
    fn pump(&mut self, p: ProcessId, now: u64, delay: &mut dyn FnMut() -> u64) -> Result<()> {
        let i = p.index();
        while let Some(out) = self.engines[i].poll_output() {
            match out {
                Output::Send { channel, message } => {
                    let seq = self.next_seq[channel.index()];
                    self.next_seq[channel.index()] += 1;
                    let vc = self.clocks[i].tick().to_vec();
                    self.trace.push(TraceEvent {
                        process: p,
                        event: Event::Send {
                            channel,
                            seq,
                            message: message.clone(),
                        },
                        vc: vc.clone(),
                    });
                    self.enqueue(channel, Item::Message { seq, message }, vc, now, delay);
                    let held = std::mem::take(&mut self.held_markers[channel.index()]);
                    self.channels[channel.index()].extend(held);
                }
                Output::SendMarker { channel, snapshot } => {
                    let vc = self.clocks[i].tick().to_vec();
                    self.trace.push(TraceEvent {
                        process: p,
                        event: Event::MarkerSend { channel, snapshot },
                        vc: vc.clone(),
                    });
                    self.enqueue(channel, Item::Marker(snapshot), vc, now, delay);
                    if self.overtaking.sender {
                        let mut overtaken = self.jump_queue(channel);
                        if self.fault == Some(Fault::LoseOvertaken) {
                            overtaken.clear();
                        }
                        self.engines[i].marker_placed(channel, snapshot, overtaken)?;
                    } else if self.fault == Some(Fault::MarkerAfterMessage) {
                        let marker = self.channels[channel.index()].pop_back();
                        self.held_markers[channel.index()].extend(marker);
                    }
                }
                Output::RecordState { snapshot } => {
                    let vc = self.clocks[i].tick().to_vec();
                    self.trace.push(TraceEvent {
                        process: p,
                        event: Event::Record { snapshot },
                        vc,
                    });
                    let state = if self.fault == Some(Fault::StaleState) {
                        self.previous[i].clone()
                    } else {
                        self.states[i].clone()
                    };
                    self.engines[i].record_state(snapshot, state)?;
                }
                Output::ChannelRecorded { .. } => {}
                // The simulator sets no recording limit.
                Output::RecordingAbandoned { .. } => {}
                Output::LocalSnapshotComplete(local) => {
                    let id = local.snapshot;
                    let assembler = self.assembling.get_mut(&id).ok_or_else(|| {
                        SimError::Setup(format!("snapshot {id} completed but was never started"))
                    })?;
                    assembler.add(local)?;
                    if assembler.is_complete() {
                        let global = assembler.finish()?;
                        self.assembling.remove(&id);
                        self.done.insert(id, global);
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves the marker just enqueued on `channel` ahead of the messages
    /// after the last marker before it (at most the jump limit); returns
    /// those messages.
    fn jump_queue(&mut self, channel: ChannelId) -> Vec<D::Message> {
        let queue = &mut self.channels[channel.index()];
        let Some(mut marker) = queue.pop_back() else {
            return Vec::new();
        };
        let after_marker = queue
            .iter()
            .rposition(|p| matches!(p.item, Item::Marker(_)))
            .map_or(0, |m| m + 1);
        let from = after_marker.max(queue.len().saturating_sub(self.jump_limit));
        let overtaken = queue
            .iter()
            .skip(from)
            .filter_map(|p| match &p.item {
                Item::Message { message, .. } => Some(message.clone()),
                Item::Marker(_) => None,
            })
            .collect();
        // It arrives no later than the first message it overtook.
        if let Some(first) = queue.get(from) {
            marker.deliver_at = marker.deliver_at.min(first.deliver_at);
        }
        queue.insert(from, marker);
        overtaken
    }

    fn enqueue(
        &mut self,
        channel: ChannelId,
        item: Item<D::Message>,
        vc: Vec<u64>,
        now: u64,
        delay: &mut dyn FnMut() -> u64,
    ) {
        let queue = &mut self.channels[channel.index()];
        let fifo_floor = queue.back().map_or(0, |p| p.deliver_at);
        let deliver_at = now.saturating_add(delay()).max(fifo_floor);
        self.sent += 1;
        queue.push_back(Packet {
            item,
            vc,
            deliver_at,
            order: self.sent,
        });
    }
}
