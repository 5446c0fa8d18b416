//! The driver's side of the aligned and stop-the-world baselines (see
//! [`crate::baselines::aligned`]): it sends the markers, holds and releases
//! the application's sends, and records once aligned.

use tokio::time::Instant;

use cairn_core::trace::Event;
use cairn_core::{ChannelId, LocalSnapshot, Process, RecordedChannel, SnapshotId, StartOutcome};
use tracing::{error, warn};

use super::Driver;
use crate::baselines::aligned::Aligning;
use crate::control::ControlError;
use crate::metrics::Metrics;

impl<P: Process> Driver<P> {
    /// Whether the application's sends are held: paused by a stop-the-world
    /// coordinator, or while aligning.
    pub(crate) fn sends_held(&self) -> bool {
        self.paused.is_some() || self.aligning.is_some()
    }

    /// Starts aligned snapshot `id` here (as an initiator).
    pub(crate) fn start_aligned(&mut self, id: SnapshotId) -> Result<StartOutcome, ControlError> {
        self.supersede(id);
        match &self.aligning {
            Some(a) if a.id() == id => return Ok(StartOutcome::AlreadyRecorded),
            Some(a) => {
                return Err(ControlError::Busy(format!(
                    "snapshot {} is still aligning here; aligned snapshots run one at a time",
                    a.id()
                )));
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
        self.aligning = Some(Aligning::new(id, inputs));
        let outgoing: Vec<ChannelId> = self.topology.outgoing(self.me).to_vec();
        for channel in outgoing {
            self.send_marker(channel, id);
        }
    }

    /// A marker of a newer snapshot means the one still aligning here has
    /// failed (the coordinator starts one only when the last has settled):
    /// give it up, replaying what it blocked and releasing what it held.
    fn supersede(&mut self, id: SnapshotId) {
        if self.aligning.as_ref().is_some_and(|a| a.id() < id) {
            if let Some(a) = self.aligning.take() {
                warn!("snapshot {} abandoned here: snapshot {id} began", a.id());
                self.metrics.note_pause(a.since().elapsed());
                self.release(a);
            }
        }
    }

    fn input(&self, channel: ChannelId) -> Option<usize> {
        self.topology
            .incoming(self.me)
            .iter()
            .position(|&c| c == channel)
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
        let input = self.input(channel);
        let Some(a) = self.aligning.as_mut() else {
            return;
        };
        if !a.mark(id, input) {
            let aligning = a.id();
            let name = self.topology.channel_name(channel);
            warn!("ignored a marker of snapshot {id} on channel {name} while aligning {aligning}");
            return;
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
        if self.aligning.is_none() {
            return Some((message, vc));
        }
        let input = self.input(channel);
        self.aligning
            .as_mut()
            .and_then(|a| a.admit(input, channel, message, vc))
    }

    /// Holds the application's sends while aligning (leaving `sends` empty).
    pub(crate) fn hold(&mut self, sends: &mut Vec<(ChannelId, P::Message)>) {
        if let Some(a) = self.aligning.as_mut() {
            a.hold(sends);
        }
    }

    /// Records once markers have arrived on every input, then replays what
    /// was blocked and releases what was held.
    fn maybe_aligned(&mut self) {
        if self.aligning.as_ref().is_none_or(|a| !a.is_aligned()) {
            return;
        }
        let Some(a) = self.aligning.take() else {
            return;
        };
        let id = a.id();
        self.last_aligned = Some(id);
        self.metrics.note_pause(a.since().elapsed());
        self.tick_trace(|_| Event::Record { snapshot: id });
        Metrics::inc(&self.metrics.snapshots_recorded, 1);
        if a.held() == 0 {
            let local = LocalSnapshot {
                snapshot: id,
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
                overtaken: Vec::new(),
            };
            self.send_report(local, a.since());
        } else {
            let why = format!(
                "the application sent {} message(s) while handling messages during alignment, which an aligned \
                 snapshot cannot record; use snapshots.mode = \"chandy-lamport\" for this application",
                a.held()
            );
            error!("snapshot {id} refused: {why}");
            self.send_refusal(id, why);
        }
        self.release(a);
    }

    /// Sends what an alignment held (the application made those sends
    /// first), then processes what it blocked.
    fn release(&mut self, a: Aligning<P::Message>) {
        let (held, blocked) = a.into_parts();
        self.send_all(held);
        for (channel, message, vc) in blocked {
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
