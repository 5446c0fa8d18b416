//! The two baseline snapshot modes, carried out by the driver beside
//! Chandy–Lamport so that their cost can be measured on the same runtime:
//!
//! - **Aligned barriers** (as Flink checkpoints a stream job). On its first
//!   marker (or when it initiates) a node forwards a marker on every outgoing
//!   channel and holds its own sends. Each input whose marker has arrived is
//!   blocked: its messages wait, unprocessed. When markers have arrived on
//!   every input the node records its state — every channel is empty in the
//!   snapshot — then processes what it blocked and resumes sending. Markers
//!   go out before alignment, which a graph with cycles needs (a node that
//!   waited for all its markers before forwarding its own would deadlock on
//!   any cycle); holding sends until the state is recorded keeps the cut
//!   consistent.
//! - **Stop the world**: the coordinator first pauses every node's sends,
//!   then runs an aligned snapshot (the channels drain behind the markers),
//!   and resumes every node once the snapshot is durable.
//!
//! An application that sends while handling a message cannot be snapshotted
//! this way without recording channel state: its held sends would be part of
//! the recorded state but of no channel. Such a snapshot is refused (the
//! node logs why and does not report it), never recorded wrong.

use std::collections::VecDeque;
use std::time::Instant;

use cairn_core::trace::Event;
use cairn_core::{ChannelId, LocalSnapshot, Process, RecordedChannel, SnapshotId, StartOutcome};
use tracing::{error, warn};

use crate::driver::Driver;
use crate::metrics::Metrics;
use crate::transport::Out;

/// An aligned snapshot under way at one node.
#[derive(Debug)]
pub(crate) struct Aligning<M> {
    id: SnapshotId,
    /// Per incoming channel (topology order): has its marker arrived?
    marked: Vec<bool>,
    remaining: usize,
    since: Instant,
    /// Messages from inputs already marked, in arrival order, with their
    /// vector clocks when tracing.
    blocked: VecDeque<(ChannelId, M, Option<Vec<u64>>)>,
    /// Sends the application made while the node was aligning.
    held: Vec<(ChannelId, M)>,
}

impl<P: Process> Driver<P> {
    /// Whether the application's sends are held: paused by a stop-the-world
    /// coordinator, or while aligning.
    pub(crate) fn sends_held(&self) -> bool {
        self.paused.is_some() || self.aligning.is_some()
    }

    /// Starts aligned snapshot `id` here (as an initiator).
    pub(crate) fn start_aligned(&mut self, id: SnapshotId) -> Result<StartOutcome, String> {
        self.supersede(id);
        match &self.aligning {
            Some(a) if a.id == id => return Ok(StartOutcome::AlreadyRecorded),
            Some(a) => {
                return Err(format!(
                    "snapshot {} is still aligning here; aligned snapshots run one at a time",
                    a.id
                ));
            }
            None if self.last_aligned.is_some_and(|last| last >= id) => {
                return Ok(StartOutcome::AlreadyRecorded);
            }
            None => {}
        }
        self.begin_aligning(id);
        self.maybe_aligned();
        Ok(StartOutcome::Started)
    }

    fn begin_aligning(&mut self, id: SnapshotId) {
        let inputs = self.topology.incoming(self.me).len();
        self.aligning = Some(Aligning {
            id,
            marked: vec![false; inputs],
            remaining: inputs,
            since: Instant::now(),
            blocked: VecDeque::new(),
            held: Vec::new(),
        });
        let outgoing: Vec<ChannelId> = self.topology.outgoing(self.me).to_vec();
        for channel in outgoing {
            let vc = self.tick_trace(|_| Event::MarkerSend {
                channel,
                snapshot: id,
            });
            Metrics::inc(&self.metrics.markers_sent, 1);
            if let Some(o) = self.outbound.get(channel) {
                o.push(Out::Marker {
                    epoch: self.epoch,
                    snapshot: id.0,
                    vc,
                });
            }
        }
    }

    /// A marker of a newer snapshot means the one still aligning here has
    /// failed (the coordinator starts one only when the last has settled):
    /// give it up, replaying what it blocked and releasing what it held.
    fn supersede(&mut self, id: SnapshotId) {
        if self.aligning.as_ref().is_some_and(|a| a.id < id) {
            if let Some(a) = self.aligning.take() {
                warn!("snapshot {} abandoned here: snapshot {id} began", a.id);
                self.metrics.note_pause(a.since.elapsed());
                self.release(a);
            }
        }
    }

    /// A marker arrived in aligned or stop-the-world mode.
    pub(crate) fn on_aligned_marker(&mut self, channel: ChannelId, id: SnapshotId) {
        self.supersede(id);
        if self.aligning.is_none() {
            if self.last_aligned.is_some_and(|last| last >= id) {
                let name = self.topology.channel_name(channel);
                warn!("ignored a late marker of snapshot {id} on channel {name}");
                return;
            }
            self.begin_aligning(id);
        }
        let index = self
            .topology
            .incoming(self.me)
            .iter()
            .position(|&c| c == channel);
        let Some(a) = self.aligning.as_mut() else {
            return;
        };
        match index {
            Some(i) if a.id == id && !a.marked[i] => {
                a.marked[i] = true;
                a.remaining -= 1;
            }
            _ => {
                let aligning = a.id;
                let name = self.topology.channel_name(channel);
                warn!(
                    "ignored a marker of snapshot {id} on channel {name} while aligning {aligning}"
                );
                return;
            }
        }
        self.maybe_aligned();
    }

    /// Takes a message in aligned mode: blocked if its input's marker came.
    /// Returns the message when it should be processed now.
    pub(crate) fn admit(
        &mut self,
        channel: ChannelId,
        message: P::Message,
        vc: Option<Vec<u64>>,
    ) -> Option<(P::Message, Option<Vec<u64>>)> {
        let Some(a) = self.aligning.as_mut() else {
            return Some((message, vc));
        };
        let index = self
            .topology
            .incoming(self.me)
            .iter()
            .position(|&c| c == channel);
        if index.is_some_and(|i| a.marked[i]) {
            a.blocked.push_back((channel, message, vc));
            None
        } else {
            Some((message, vc))
        }
    }

    /// Holds the application's sends while aligning (leaving `sends` empty).
    pub(crate) fn hold(&mut self, sends: &mut Vec<(ChannelId, P::Message)>) {
        if let Some(a) = self.aligning.as_mut() {
            a.held.append(sends);
        }
    }

    /// Records once markers have arrived on every input, then replays what
    /// was blocked and releases what was held.
    fn maybe_aligned(&mut self) {
        if self.aligning.as_ref().is_none_or(|a| a.remaining > 0) {
            return;
        }
        let Some(a) = self.aligning.take() else {
            return;
        };
        self.last_aligned = Some(a.id);
        self.metrics.note_pause(a.since.elapsed());
        self.tick_trace(|_| Event::Record { snapshot: a.id });
        Metrics::inc(&self.metrics.snapshots_recorded, 1);
        if a.held.is_empty() {
            let local = LocalSnapshot {
                snapshot: a.id,
                process: self.me,
                state: self.process.state(),
                channels: self
                    .topology
                    .incoming(self.me)
                    .iter()
                    .map(|&channel| RecordedChannel {
                        channel,
                        messages: Vec::new(),
                    })
                    .collect(),
            };
            self.send_report(local);
        } else {
            let why = format!(
                "the application sent {} message(s) while handling messages during alignment, which an aligned \
                 snapshot cannot record; use snapshots.mode = \"chandy-lamport\" for this application",
                a.held.len()
            );
            error!("snapshot {} refused: {why}", a.id);
            self.send_refusal(a.id, why);
        }
        self.release(a);
    }

    /// Sends what an alignment held (the application made those sends
    /// first), then processes what it blocked.
    fn release(&mut self, a: Aligning<P::Message>) {
        self.send_all(a.held);
        for (channel, message, vc) in a.blocked {
            self.process_data(channel, message, vc, 0);
        }
    }

    /// Stop the world: holds spontaneous sends until resumed.
    pub(crate) fn pause(&mut self) {
        self.paused.get_or_insert_with(Instant::now);
    }

    /// Resumes spontaneous sends after a stop-the-world snapshot.
    pub(crate) fn resume(&mut self) {
        if let Some(since) = self.paused.take() {
            self.metrics.note_pause(since.elapsed());
        }
    }

    /// Forgets an alignment in progress (a rollback starts a new epoch).
    pub(crate) fn abandon_alignment(&mut self) {
        self.aligning = None;
        self.last_aligned = None;
        self.paused = None;
    }
}
