//! The driver: the one task per node that feeds cairn-core's engine and the
//! user's process, and carries out the engine's outputs. The application is
//! never paused for a snapshot; recording happens as messages flow.

use crate::batch_queue::BatchReceiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use cairn_core::trace::{Event, VectorClock};
use cairn_core::{
    ChannelId, Context, Engine, Output, Pace, Process, ProcessId, SnapshotId, Topology,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{error, warn};

mod alignment;
mod commands;
mod lookahead;
pub(crate) mod quiet;
mod report;
mod rollback;
mod trace;

use crate::baselines::aligned::Aligning;
use crate::config::SnapshotMode;
use crate::coordinator::LocalReport;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::peers::PeerBook;
use crate::tracefile::TraceWriter;
use crate::transport::{In, Out, Outbound, Outbounds};
pub(crate) use commands::Control;
use report::encode_report;
pub(crate) use report::{ChannelCounts, Encoded, PendingReport};
pub(crate) use rollback::Chunks;

/// Outside input for the process, from an embedding program, with where
/// to say whether the process took it.
pub(crate) type Input<M> = (M, oneshot::Sender<std::result::Result<(), String>>);

/// Everything the driver owns.
pub(crate) struct Driver<P: Process> {
    pub me: ProcessId,
    pub topology: Arc<Topology>,
    pub engine: Engine<P::Message, P::State>,
    pub process: P,
    pub outbound: Outbounds<P::Message>,
    pub inbound: BatchReceiver<In<P::Message>>,
    /// Inbound frames read ahead but not yet handled (receiver-side overtaking).
    pub(crate) backlog: lookahead::Backlog<P::Message>,
    /// Markers in `inbound` not yet taken out, as the receiving side counts them.
    pub(crate) markers_queued: Arc<std::sync::atomic::AtomicUsize>,
    pub control: mpsc::Receiver<Control>,
    /// Outside input, when a program embeds this node.
    pub inputs: Option<mpsc::Receiver<Input<P::Message>>>,
    pub reports: mpsc::Sender<PendingReport>,
    pub room: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub trace: Option<TraceWriter>,
    pub clock: VectorClock,
    pub seq_out: HashMap<ChannelId, u64>,
    pub seq_in: HashMap<ChannelId, u64>,
    pub rng: ChaCha8Rng,
    /// The epoch this node is in; frames of other epochs are discarded.
    pub epoch: u64,
    pub epoch_tx: watch::Sender<u64>,
    /// Where traces and per-epoch states go, when tracing.
    pub trace_dir: Option<std::path::PathBuf>,
    /// The size at which tracing an epoch stops.
    pub trace_limit: Option<u64>,
    pub name: String,
    /// The state this epoch began in, and the channel states it began with.
    pub epoch_initial: Option<P::State>,
    pub epoch_channels: Vec<(String, Vec<serde_json::Value>)>,
    /// The tails this node's markers overtook in the snapshot this epoch began from.
    pub epoch_tails: Vec<(String, Vec<serde_json::Value>)>,
    /// How snapshots are taken.
    pub mode: SnapshotMode,
    /// An aligned snapshot under way here.
    pub(crate) aligning: Option<Aligning<P::Message>>,
    /// The last aligned snapshot this node recorded.
    pub(crate) last_aligned: Option<SnapshotId>,
    /// Since when a stop-the-world coordinator has held this node's sends.
    pub(crate) paused: Option<Instant>,
    /// This node's incarnation and its peers'.
    pub(crate) peers: Option<Arc<PeerBook>>,
    /// `snapshots.max_recorded_bytes`, applied to every new engine.
    pub(crate) engine_limit: Option<u64>,
    /// `snapshots.overtake`, applied to every new engine.
    pub(crate) overtaking: cairn_core::Overtaking,
    /// Messages sent and received per channel in this epoch.
    pub(crate) counts: Arc<ChannelCounts>,
    /// When each snapshot still recording here began: one older than twice
    /// the snapshot timeout is given up even if no abort came.
    recording_since: std::collections::BTreeMap<SnapshotId, Instant>,
    pub(crate) snapshot_timeout: Duration,
    /// Reused buffers: the channels with room, and the application's sends.
    open: Vec<ChannelId>,
    sends: Vec<(ChannelId, P::Message)>,
    /// Whether a continuous process has nothing to send for now.
    quiet: quiet::Quiet,
}

/// Local snapshots waiting for the reporter. When it is this far behind, a
/// further snapshot is given up here instead of queued.
pub(crate) const REPORT_QUEUE: usize = 64;

/// How many ticks a continuous process gets in one step of the driver's
/// loop, between looks at its other inputs. What they send is handed to
/// the channels' senders together at the end of the step, and each sender
/// writes up to 256 frames with one system call: the step is what fills a
/// write (and wakes the receiving process once for many messages), as a
/// network buffer does in a stream processor. 32 moved 2.2 M messages/s on
/// the 4-node complete graph, 128 moved 5.0 M and 512 moved 6.3–6.7 M
/// (BENCHMARKS.md, "Fuller writes"); a step of 512 ticks takes about
/// 0.15 ms, so a marker waits at most that long for the driver to look.
pub(crate) const TICKS_PER_STEP: usize = 512;

/// The outbound queue length at which the driver stops taking inbound
/// messages, per channel, as a multiple of the send window.
///
/// Why no cycle of full queues deadlocks: spontaneous sends (`on_tick`)
/// wait for room below the window, so only sends made while handling a
/// message can push a queue past it. The driver stops taking inbound
/// messages only while some outbound queue holds more than `HARD_LIMIT`
/// windows, and the link tasks drain outbound queues without the driver.
/// A deadlock would need every node of a cycle above the hard limit at
/// once, i.e. more than `HARD_LIMIT` windows of messages in flight on each
/// channel of the cycle. Messages enter the system only through
/// spontaneous sends (at most one window per channel) and through handlers
/// that send more than they receive; with `HARD_LIMIT` at least the number
/// of channels, the first alone can never fill a cycle, so only an
/// application whose handlers multiply messages without end reaches the
/// limit, and there the pause holds memory bounded instead of growing it.
pub(crate) fn hard_limit(channels: usize) -> usize {
    crate::transport::HIGH_WATER * channels.max(16)
}

impl<P: Process> Driver<P> {
    /// A driver for process `me`, seeded from `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: ProcessId,
        topology: Arc<Topology>,
        process: P,
        outbound: Outbounds<P::Message>,
        inbound: BatchReceiver<In<P::Message>>,
        control: mpsc::Receiver<Control>,
        reports: mpsc::Sender<PendingReport>,
        room: Arc<Notify>,
        metrics: Arc<Metrics>,
        trace: Option<TraceWriter>,
        seed: u64,
        epoch_tx: watch::Sender<u64>,
    ) -> Result<Self> {
        let epoch = *epoch_tx.borrow();
        let topology_channels = topology.channel_count();
        Ok(Driver {
            engine: Engine::new(&topology, me)?,
            clock: VectorClock::new(me, topology.process_count()),
            me,
            topology,
            process,
            outbound,
            inbound,
            backlog: lookahead::Backlog::default(),
            markers_queued: Arc::default(),
            control,
            inputs: None,
            reports,
            room,
            metrics,
            trace,
            seq_out: HashMap::new(),
            seq_in: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            epoch,
            epoch_tx,
            trace_dir: None,
            trace_limit: None,
            name: String::new(),
            epoch_initial: None,
            epoch_channels: Vec::new(),
            epoch_tails: Vec::new(),
            mode: SnapshotMode::ChandyLamport,
            aligning: None,
            last_aligned: None,
            paused: None,
            peers: None,
            engine_limit: None,
            overtaking: cairn_core::Overtaking::default(),
            counts: Arc::new(ChannelCounts::new(topology_channels)),
            recording_since: std::collections::BTreeMap::new(),
            snapshot_timeout: Duration::from_secs(5),
            open: Vec::new(),
            sends: Vec::new(),
            quiet: quiet::Quiet::default(),
        })
    }

    /// Runs until `shutdown` turns true, then writes the epoch's states when tracing.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let pace = self.process.pace();
        let mut timer = match pace {
            Pace::PerSecond(r) => Some(tokio::time::interval(Duration::from_secs_f64(1.0 / r))),
            _ => None,
        };
        let mut expiry = tokio::time::interval(Duration::from_millis(250));
        let hard = hard_limit(self.topology.channel_count());
        loop {
            // What the last step sent goes to the channels' queues at once.
            self.outbound.flush_all();
            let restarted = self.peers.as_ref().is_some_and(|p| p.needs_restore());
            let continuous = pace == Pace::Continuous && !self.sends_held() && !restarted;
            let quiet = continuous && self.quiet.is_quiet();
            let room = continuous && !quiet && self.outbound.any_room();
            let full = continuous && !quiet && !room;
            let taking = !self.outbound.any_over(hard);
            let ahead = self.reads_ahead();
            let reading = if ahead {
                self.backlog.len() < lookahead::LOOKAHEAD
            } else {
                taking
            };
            let room_freed = self.room.clone();
            // Each step is timed: while it runs, no message is processed.
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(c) = self.control.recv() => {
                    let step = Instant::now();
                    self.quiet.wake();
                    self.on_control(c);
                    self.metrics.note_pause(step.elapsed());
                }
                // With receiver-side overtaking, markers are looked for even
                // while full outbound queues hold the messages back.
                Some(first) = self.inbound.recv(), if reading => {
                    let step = Instant::now();
                    self.quiet.wake();
                    self.taken_out(&first);
                    if ahead {
                        self.backlog.push(first);
                        self.look_ahead(taking);
                    } else {
                        self.on_inbound(first);
                        for _ in 1..lookahead::STEP {
                            match self.inbound.try_recv() {
                                Some(i) => {
                                    self.taken_out(&i);
                                    self.on_inbound(i);
                                }
                                None => break,
                            }
                        }
                    }
                    self.metrics.note_pause(step.elapsed());
                }
                _ = std::future::ready(()), if ahead && taking && !self.backlog.is_empty() => {
                    let step = Instant::now();
                    self.quiet.wake();
                    self.look_ahead(taking);
                    self.metrics.note_pause(step.elapsed());
                }
                Some((input, reply)) = input_or_never(&mut self.inputs) => {
                    let step = Instant::now();
                    self.quiet.wake();
                    let r = self.on_input(input, restarted);
                    let _ = reply.send(r);
                    self.metrics.note_pause(step.elapsed());
                }
                _ = tick_or_never(&mut timer) => {
                    if !self.sends_held() && !restarted {
                        self.on_tick();
                    }
                }
                _ = expiry.tick() => self.expire_recordings(),
                _ = room_freed.notified(), if !taking => {}
                _ = tokio::task::yield_now(), if room => {
                    let step = Instant::now();
                    for _ in 0..TICKS_PER_STEP {
                        let tick = self.on_tick();
                        if self.quiet.after(tick) {
                            break;
                        }
                    }
                    self.metrics.note_pause(step.elapsed());
                }
                _ = room_freed.notified(), if full => {}
                _ = tokio::time::sleep(Duration::from_millis(5)), if full => {}
                _ = tokio::time::sleep_until(self.quiet.retry_at()), if quiet => self.quiet.wake(),
            }
        }
        self.end_epoch()
    }

    fn on_inbound(&mut self, i: In<P::Message>) {
        match i {
            In::Data { epoch, .. } | In::Marker { epoch, .. } if epoch != self.epoch => {
                // Sent before a rollback: never applied to the restored state.
            }
            In::Data {
                channel,
                message,
                vc,
                bytes,
                ..
            } => {
                if let Some((message, vc)) = self.admit(channel, message, vc) {
                    self.process_data(channel, message, vc, bytes);
                }
            }
            In::Marker {
                channel,
                snapshot,
                vc,
                ..
            } => self.on_marker(channel, SnapshotId(snapshot), vc, &[]),
        }
    }

    /// Hands one application message to the engine and the process.
    pub(crate) fn process_data(
        &mut self,
        channel: ChannelId,
        message: P::Message,
        vc: Option<Vec<u64>>,
        bytes: u64,
    ) {
        {
            {
                if let Err(e) = self.engine.handle_sized_message(channel, &message, bytes) {
                    error!("engine refused a message: {e}");
                    return;
                }
                Metrics::inc(&self.metrics.messages_received, 1);
                ChannelCounts::add(&self.counts.received[channel.index()]);
                if self.trace.is_some() {
                    let seq = self.seq_in.entry(channel).or_insert(0);
                    let event = Event::Receive {
                        channel,
                        seq: *seq,
                        message: message.clone(),
                    };
                    *seq += 1;
                    let vc = self.clock.receive(vc.as_deref().unwrap_or(&[])).to_vec();
                    self.write_trace(event, vc);
                }
                let mut sends = std::mem::take(&mut self.sends);
                let topology = self.topology.clone();
                let rng = &mut self.rng;
                let mut random = || rng.random::<u64>();
                self.process.on_message(
                    channel,
                    message,
                    &mut Context::new(topology.outgoing(self.me), &mut random, &mut sends),
                );
                self.send_all(sends);
            }
        }
    }

    /// Gives the process a tick, open on the channels with room.
    fn on_tick(&mut self) -> quiet::Tick {
        let ((), sends) = self.in_context(true, |p, cx| p.on_tick(cx));
        let tick = quiet::Tick::of(!sends.is_empty(), !self.open.is_empty());
        self.send_all(sends);
        tick
    }

    /// Hands outside input to the process, as a local event. Refused while
    /// this node awaits a restore: the restore would wipe its effect.
    fn on_input(&mut self, input: P::Message, restarted: bool) -> std::result::Result<(), String> {
        if restarted {
            return Err(
                "this node restarted and lost its state; it takes no input until a restore".into(),
            );
        }
        let (r, mut sends) = self.in_context(false, |p, cx| p.on_input(input, cx));
        if r.is_err() {
            sends.clear(); // refused: the state is unchanged, and nothing is sent
        }
        self.send_all(sends);
        r
    }

    /// Runs `act` on the process with a context open on the outgoing
    /// channels (only those with room, when `need_room`); returns its result
    /// and what it asked to send. The buffers are reused: this allocates
    /// nothing.
    fn in_context<R>(
        &mut self,
        need_room: bool,
        act: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R,
    ) -> (R, Vec<(ChannelId, P::Message)>) {
        let mut open = std::mem::take(&mut self.open);
        open.clear();
        let outbound = &self.outbound;
        open.extend(
            self.topology
                .outgoing(self.me)
                .iter()
                .copied()
                .filter(|&c| !need_room || outbound.get(c).is_some_and(Outbound::has_room)),
        );
        let mut sends = std::mem::take(&mut self.sends);
        let rng = &mut self.rng;
        let mut random = || rng.random::<u64>();
        let r = act(
            &mut self.process,
            &mut Context::new(&open, &mut random, &mut sends),
        );
        self.open = open;
        (r, sends)
    }

    /// Sends what the application asked to (held while aligning), then
    /// keeps the emptied buffer for the next turn.
    pub(crate) fn send_all(&mut self, mut sends: Vec<(ChannelId, P::Message)>) {
        self.hold(&mut sends);
        for (channel, message) in sends.drain(..) {
            if let Err(e) = self.engine.send(channel, message) {
                error!("the application sent on a channel it does not have: {e}");
            }
        }
        self.sends = sends;
        self.pump();
    }

    /// Carries out the engine's outputs, in order.
    fn pump(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Send { channel, message } => {
                    let vc = self.tick_trace(|seq_out| {
                        let seq = seq_out.entry(channel).or_insert(0);
                        *seq += 1;
                        Event::Send {
                            channel,
                            seq: *seq - 1,
                            message: message.clone(),
                        }
                    });
                    Metrics::inc(&self.metrics.messages_sent, 1);
                    ChannelCounts::add(&self.counts.sent[channel.index()]);
                    if let Some(o) = self.outbound.get_mut(channel) {
                        o.push(Out::Data {
                            epoch: self.epoch,
                            message,
                            vc,
                        });
                    }
                }
                Output::SendMarker { channel, snapshot } => self.send_marker(channel, snapshot),
                Output::RecordState { snapshot } => {
                    tracing::debug!(%snapshot, "recording");
                    self.tick_trace(|_| Event::Record { snapshot });
                    Metrics::inc(&self.metrics.snapshots_recorded, 1);
                    self.recording_since.insert(snapshot, Instant::now());
                    let state = self.process.state();
                    if let Err(e) = self.engine.record_state(snapshot, state) {
                        error!("{e}");
                    }
                }
                Output::ChannelRecorded { .. } => {}
                Output::LocalSnapshotComplete(local) => {
                    tracing::debug!(snapshot = %local.snapshot, "local snapshot complete");
                    // The trace holds this part's record and markers before
                    // the report leaves, so a committed snapshot can be drawn
                    // from the traces at once, however calm the application.
                    self.flush_trace();
                    let since = self.recording_since.remove(&local.snapshot);
                    self.send_report(local, since.unwrap_or_else(Instant::now))
                }
                Output::RecordingAbandoned {
                    snapshot,
                    channel,
                    bytes,
                } => {
                    self.recording_since.remove(&snapshot);
                    Metrics::inc(&self.metrics.snapshots_aborted, 1);
                    let why = format!(
                        "its recorded channel state reached {bytes} bytes on channel {}, over snapshots.max_recorded_bytes",
                        self.topology.channel_name(channel)
                    );
                    warn!(%snapshot, "snapshot given up here: {why}");
                    self.send_refusal(snapshot, why);
                }
            }
        }
    }

    /// Sends a marker of `snapshot` on `channel`, traced and counted. With
    /// sender-side overtaking it goes ahead of the messages the channel's
    /// link has not yet taken, and those are recorded as the channel's tail.
    pub(crate) fn send_marker(&mut self, channel: ChannelId, snapshot: SnapshotId) {
        let vc = self.tick_trace(|_| Event::MarkerSend { channel, snapshot });
        Metrics::inc(&self.metrics.markers_sent, 1);
        let marker = Out::Marker {
            epoch: self.epoch,
            snapshot: snapshot.0,
            vc,
        };
        if !self.overtaking.sender {
            if let Some(o) = self.outbound.get_mut(channel) {
                o.push(marker);
            }
            return;
        }
        let overtaken = match self.outbound.get_mut(channel) {
            Some(o) => o.place_marker(marker),
            None => Vec::new(),
        };
        Metrics::inc(&self.metrics.messages_overtaken, overtaken.len() as u64);
        if let Err(e) = self.engine.marker_placed(channel, snapshot, overtaken) {
            error!("{e}");
        }
    }

    /// Hands a local snapshot to the reporter. Encoding it (the state may be
    /// large) is left to the reporter, off this task.
    pub(crate) fn send_report(
        &mut self,
        local: cairn_core::LocalSnapshot<P::Message, P::State>,
        since: Instant,
    ) {
        let topology = self.topology.clone();
        let metrics = self.metrics.clone();
        let (id, epoch) = (local.snapshot, self.epoch);
        let pending = PendingReport {
            since,
            encode: Box::new(move || {
                encode_report(&topology, &metrics, epoch, local, P::split_state)
            }),
        };
        if self.reports.try_send(pending).is_err() {
            // The reporter is far behind (a slow store): give this one up
            // rather than queue without bound; the coordinator times it out.
            Metrics::inc(&self.metrics.snapshots_aborted, 1);
            warn!(snapshot = %id, "snapshot given up here: {REPORT_QUEUE} local snapshots are already waiting for the store");
        }
    }

    /// Tells the coordinator this node gave snapshot `id` up, and why.
    pub(crate) fn send_refusal(&mut self, id: SnapshotId, why: String) {
        let report = LocalReport {
            snapshot: id,
            process: self.topology.name(self.me).to_string(),
            epoch: self.epoch,
            state: serde_json::Value::Null,
            channels: Vec::new(),
            overtaken: Vec::new(),
            part: None,
            refused: Some(why),
            state_in_store: false,
        };
        let _ = self.reports.try_send(PendingReport {
            since: Instant::now(),
            encode: Box::new(move || Ok(Encoded::report_only(report))),
        });
    }
}

async fn input_or_never<M>(inputs: &mut Option<mpsc::Receiver<Input<M>>>) -> Option<Input<M>> {
    match inputs {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick_or_never(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
